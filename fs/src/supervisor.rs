//! `thaw mount --supervise`: a small process that holds a mount's FUSE connection while worker
//! processes serve it, so the mount outlives any one of them.
//!
//! The supervisor mounts ([`Connection::mount`]), starts a worker (this program again, handed
//! the connection: [`crate::takeover`]) and waits. When the worker is killed or crashes, the
//! mount stays (the supervisor's descriptor keeps the connection), the requests it had read
//! are queued again and a new worker serves them and everything after. On SIGHUP (`thaw mount
//! handoff`) it retires the worker (which leaves at once, mounted, releasing the disk cache),
//! has its unanswered requests queued again and starts a new worker from the program on disk
//! (an upgrade), or from its own image when that one does not start: readers see no error
//! either way, only a pause. Workers that keep dying as they start end the mount (detached,
//! so readers get errors instead of waiting for ever). It ends when the mount does (`thaw
//! umount`, `umount`, SIGTERM forwarded to the worker).

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};

use crate::daemon::{start_reporting, Handed, Program};
use crate::session::SessionOptions;
use crate::takeover::Connection;
use crate::FsError;

/// Set in a worker's environment: how many workers served the connection before it.
pub(crate) const GENERATION_ENV: &str = "THAW_MOUNT_GENERATION";
/// Set in a worker's environment: the canonical mount point.
pub(crate) const MOUNTPOINT_ENV: &str = "THAW_MOUNT_POINT";
/// Workers in a row that may fail to start before the supervisor gives the mount up.
const START_ATTEMPTS: u32 = 3;
/// The pause between a failed start and the next, and after the first quick death (doubled
/// after each further one, up to [`LONGEST_PAUSE`]).
const RESTART_PAUSE: Duration = Duration::from_millis(200);
/// The longest pause before restarting after quick deaths.
const LONGEST_PAUSE: Duration = Duration::from_secs(5);
/// A worker that served this long before dying was not killed by its own start.
const STABLE: Duration = Duration::from_secs(10);
/// Workers in a row that may die within [`STABLE`] before the supervisor gives the mount up
/// (about half a minute of trying, with the pauses).
const QUICK_DEATHS: u32 = 10;

/// Whether this process is a supervised mount's worker (it serves, it does not supervise).
pub fn is_worker() -> bool {
    std::env::var_os(crate::takeover::CONNECTION_ENV).is_some()
}

/// A worker's canonical mount point, as its supervisor gave it.
pub(crate) fn worker_mountpoint() -> Option<PathBuf> {
    std::env::var_os(MOUNTPOINT_ENV)
        .filter(|_| is_worker())
        .map(PathBuf::from)
}

/// How a supervised mount runs.
#[derive(Clone, Debug)]
pub struct SupervisorOptions {
    /// The mount as its workers will serve it (mount point, name, access, passthrough).
    pub session: SessionOptions,
    /// The arguments a worker is started with (this program's own).
    pub worker_args: Vec<OsString>,
    /// The log the workers write to (this process's standard error), named in errors.
    pub log_path: PathBuf,
}

/// What a supervised mount went through.
#[derive(Clone, Debug, Default)]
pub struct Supervised {
    /// Workers that replaced a killed or crashed one.
    pub restarts: u32,
    /// Workers that took over from a running one (`thaw mount handoff`).
    pub handoffs: u32,
}

/// The worker serving now.
struct Running {
    pid: u32,
    started: Instant,
    exited: tokio::task::JoinHandle<std::io::Result<std::process::ExitStatus>>,
}

/// Mounts and supervises until the mount ends; `on_ready` gets the first worker's ready line.
pub async fn run(
    options: SupervisorOptions,
    on_ready: impl FnOnce(&str),
) -> Result<Supervised, FsError> {
    let mut options = options;
    let mountpoint = crate::control::canonical_mountpoint(&options.session.mountpoint);
    // Looked up once, before the mount: a lookup there waits for a worker.
    options.session.mountpoint = mountpoint.clone();
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| FsError::mount(&mountpoint, e))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| FsError::mount(&mountpoint, e))?;
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| FsError::mount(&mountpoint, e))?;
    let config = crate::session::fuse_config(&options.session);
    // SAFETY: geteuid has no preconditions.
    let passthrough = options.session.passthrough && unsafe { libc::geteuid() } == 0;
    let target = mountpoint.clone();
    let connection =
        tokio::task::spawn_blocking(move || Connection::mount(&target, &config, passthrough))
            .await
            .map_err(|e| FsError::mount(&mountpoint, e))?
            .map_err(|e| FsError::mount(&mountpoint, e))?;
    tracing::info!(offered = ?connection.offered(), "mounted; starting the first worker");

    let mut generation = 0;
    let (line, mut worker) = match start_worker(&connection, &options, generation).await {
        Ok(started) => started,
        Err(e) => {
            give_up(&mountpoint);
            return Err(e);
        }
    };
    on_ready(&line);
    let mut summary = Supervised::default();
    let mut crashes = Crashes::default();
    loop {
        tokio::select! {
            exited = &mut worker.exited => {
                let status = exited.map_err(std::io::Error::other).and_then(|s| s);
                if !connected(&connection) {
                    tracing::info!(?status, "the mount has ended");
                    break;
                }
                tracing::warn!(pid = worker.pid, ?status, "the worker died; the mount stays, a new worker takes it over");
                let Some(pause) = crashes.record(worker.started.elapsed()) else {
                    give_up(&mountpoint);
                    return Err(FsError::Daemon(format!(
                        "{QUICK_DEATHS} workers in a row died within {STABLE:?} of starting (log {})",
                        options.log_path.display()
                    )));
                };
                tokio::time::sleep(pause).await;
                // Its requests read and not answered go back in the queue for the next one.
                resend(&connection);
                generation += 1;
                worker = restart(&connection, &options, &mut generation, &mountpoint).await?;
                summary.restarts += 1;
            }
            _ = hangup.recv() => {
                // The old worker leaves first (it holds the disk cache's lock); requests wait
                // in the kernel's queue meanwhile, its unanswered ones go back there, and the
                // new one serves them all.
                retire(&worker).await;
                resend(&connection);
                generation += 1;
                worker = restart(&connection, &options, &mut generation, &mountpoint).await?;
                summary.handoffs += 1;
                tracing::info!(pid = worker.pid, generation, "handed the mount over");
            }
            _ = terminate.recv() => signal_worker(&worker, libc::SIGTERM),
            _ = interrupt.recv() => signal_worker(&worker, libc::SIGINT),
        }
    }
    Ok(summary)
}

/// Workers that died soon after starting, in a row.
#[derive(Debug, Default)]
struct Crashes {
    quick: u32,
}

impl Crashes {
    /// Counts a death after `lived`; returns the pause before the next start, or `None` once
    /// [`QUICK_DEATHS`] in a row died within [`STABLE`] (a worker that cannot serve this mount).
    fn record(&mut self, lived: Duration) -> Option<Duration> {
        if lived >= STABLE {
            self.quick = 0;
            return Some(Duration::ZERO);
        }
        self.quick += 1;
        let pause = RESTART_PAUSE.saturating_mul(1 << (self.quick - 1).min(16));
        (self.quick < QUICK_DEATHS).then(|| pause.min(LONGEST_PAUSE))
    }
}

/// Starts worker `generation` on the connection from the program on disk, or, when that does
/// not start (a broken upgrade), from the supervisor's own image; waits until it answers.
async fn start_worker(
    connection: &Connection,
    options: &SupervisorOptions,
    generation: u32,
) -> Result<(String, Running), FsError> {
    match start_program(connection, options, generation, Program::OnDisk).await {
        Ok(started) => Ok(started),
        Err(e) => {
            tracing::error!(error = %e, "the program on disk did not start a worker; starting the supervisor's own");
            start_program(connection, options, generation, Program::Running).await
        }
    }
}

/// Starts worker `generation` from `program` and waits until it answers.
async fn start_program(
    connection: &Connection,
    options: &SupervisorOptions,
    generation: u32,
    program: Program,
) -> Result<(String, Running), FsError> {
    let fd = connection
        .fd()
        .try_clone_to_owned()
        .map_err(|e| FsError::Daemon(format!("copying the FUSE connection: {e}")))?;
    let log = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| FsError::Daemon(format!("the worker's log: {e}")))?;
    let offered = connection.offered().encode();
    let args = options.worker_args.clone();
    let mountpoint = options.session.mountpoint.clone();
    let log_path = options.log_path.clone();
    let (started, mut child) = tokio::task::spawn_blocking(move || {
        let handed = Handed {
            fd: fd.as_fd(),
            offered,
            generation,
            mountpoint,
            program,
        };
        start_reporting(args, std::fs::File::from(log), Some(handed), &log_path)
    })
    .await
    .map_err(|e| FsError::Daemon(e.to_string()))??;
    tracing::info!(
        pid = started.pid,
        generation,
        ?program,
        "a worker serves the mount"
    );
    let exited = tokio::task::spawn_blocking(move || child.wait());
    Ok((
        started.line,
        Running {
            pid: started.pid,
            started: Instant::now(),
            exited,
        },
    ))
}

/// Starts the next worker, trying [`START_ATTEMPTS`] times; gives the mount up (detached) when
/// none starts.
async fn restart(
    connection: &Connection,
    options: &SupervisorOptions,
    generation: &mut u32,
    mountpoint: &Path,
) -> Result<Running, FsError> {
    let mut last = None;
    for _ in 0..START_ATTEMPTS {
        match start_worker(connection, options, *generation).await {
            Ok((_, worker)) => return Ok(worker),
            Err(e) => {
                tracing::error!(error = %e, "a new worker did not start");
                last = Some(e);
                *generation += 1;
                tokio::time::sleep(RESTART_PAUSE).await;
            }
        }
    }
    give_up(mountpoint);
    Err(last.expect("at least one attempt"))
}

/// Tells the old worker to leave (it exits at once, the mount left in place) and waits for it.
async fn retire(worker: &Running) {
    signal_worker(worker, libc::SIGUSR1);
    if !thaw_sys::process::wait_gone(worker.pid, Duration::from_secs(10)).await {
        tracing::warn!(pid = worker.pid, "the old worker did not leave; killing it");
        signal_worker(worker, libc::SIGKILL);
        thaw_sys::process::wait_gone(worker.pid, Duration::from_secs(5)).await;
    }
}

fn signal_worker(worker: &Running, signal: i32) {
    // SAFETY: kill sends a signal to a process id; no memory is involved.
    unsafe { libc::kill(worker.pid as i32, signal) };
}

fn resend(connection: &Connection) {
    if let Err(e) = connection.resend() {
        tracing::error!(error = %e, "could not have the kernel resend unanswered requests (Linux 6.9+ can)");
    }
}

/// Whether the kernel still has the connection (an unmounted one polls as an error).
fn connected(connection: &Connection) -> bool {
    let mut poll = libc::pollfd {
        fd: connection.fd().as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: one pollfd of an open descriptor, no waiting.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready >= 0 && poll.revents & libc::POLLERR == 0
}

/// Detaches a mount no worker can serve, so its readers fail instead of waiting for ever.
fn give_up(mountpoint: &Path) {
    tracing::error!(mountpoint = %mountpoint.display(), "no worker can serve the mount; detaching it");
    let _ = crate::session::unmount(mountpoint, true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_deaths_back_off_and_then_give_up_while_a_stable_worker_resets_the_count() {
        let mut crashes = Crashes::default();
        let quick = Duration::from_millis(10);
        let pauses: Vec<_> = (1..QUICK_DEATHS)
            .map(|_| crashes.record(quick).unwrap())
            .collect();
        assert_eq!(pauses[0], RESTART_PAUSE);
        assert_eq!(pauses[1], RESTART_PAUSE * 2);
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]), "{pauses:?}");
        assert_eq!(*pauses.last().unwrap(), LONGEST_PAUSE);
        assert_eq!(crashes.record(quick), None, "one quick death too many");

        let mut crashes = Crashes::default();
        for _ in 1..QUICK_DEATHS {
            crashes.record(quick).unwrap();
        }
        assert_eq!(crashes.record(STABLE), Some(Duration::ZERO));
        assert_eq!(
            crashes.record(quick),
            Some(RESTART_PAUSE),
            "counting starts again"
        );
    }
}
