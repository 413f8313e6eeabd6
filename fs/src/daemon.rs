//! Mounts that run in the background: the `--daemon` readiness protocol (the parent starts
//! itself again as a detached child and exits only once the child reports that the mount
//! answers) and [`DaemonMount`], a background mount another command starts and unmounts when it
//! is done (a lazy snapshot restore, `thaw run`, the benchmarks).

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::control::{self, ControlRequest, MountStatus};
use crate::FsError;

/// Set in the environment of the background process `--daemon` starts.
const DAEMON_CHILD_ENV: &str = "THAW_MOUNT_DAEMON_CHILD";
/// The descriptor a daemon child reports readiness on.
const READY_FD: i32 = 3;
/// The lowest descriptor number above those a child is handed (READY_FD, CONNECTION_FD).
const HANDED_FDS_END: i32 = 10;
/// How long a stopping daemon has to exit.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// Whether this process is the background child of a `--daemon` mount.
pub fn is_daemon_child() -> bool {
    std::env::var_os(DAEMON_CHILD_ENV).is_some()
}

/// In a daemon child, tells the waiting parent the mount answers (and closes the pipe). Does
/// nothing in any other process.
pub fn report_ready(line: &str) {
    // SAFETY: fcntl(F_GETFD) only asks whether the descriptor is open.
    let open = unsafe { libc::fcntl(READY_FD, libc::F_GETFD) } >= 0;
    if !is_daemon_child() || !open {
        return;
    }
    // SAFETY: the parent passed READY_FD open for this process alone; it is taken once.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(READY_FD) };
    let _ = writeln!(pipe, "ready {line}");
}

/// A daemon that reported its mount ready.
#[derive(Debug)]
pub struct Started {
    /// What the daemon said when the mount answered.
    pub line: String,
    /// Its process id.
    pub pid: u32,
}

/// Starts this program again with `args` as a detached daemon child (its own session, output
/// to `log_path`) and waits until it reports the mount ready. A child that exits first is an
/// error carrying its log.
pub fn start_detached(
    args: impl IntoIterator<Item = OsString>,
    log_path: &Path,
) -> Result<Started, FsError> {
    let fail = |reason: String| {
        FsError::Daemon(format!(
            "starting the mount daemon (log {}): {reason}",
            log_path.display()
        ))
    };
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
    }
    let log =
        std::fs::File::create(log_path).map_err(|e| fail(format!("creating the log file: {e}")))?;
    let (started, _child) = start_reporting(args, log, None, log_path)?;
    Ok(started)
}

/// A connection a supervisor hands to the worker it starts.
pub(crate) struct Handed<'a> {
    /// The connection's descriptor (placed at the worker's `takeover::CONNECTION_FD`).
    pub(crate) fd: BorrowedFd<'a>,
    /// What the kernel offered, in the environment form.
    pub(crate) offered: String,
    /// Workers before this one.
    pub(crate) generation: u32,
    /// The canonical mount point (a worker must not look it up: nothing answers yet).
    pub(crate) mountpoint: PathBuf,
    /// Which program the worker runs.
    pub(crate) program: Program,
}

/// The program a supervisor starts a worker from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Program {
    /// The file this program was started from, as it is on disk now (an upgrade replaces it).
    OnDisk,
    /// The image this process runs, even if its file was replaced or deleted since.
    Running,
}

impl Program {
    /// The path to execute.
    fn path(self) -> std::io::Result<PathBuf> {
        match self {
            Program::Running => Ok(PathBuf::from("/proc/self/exe")),
            Program::OnDisk => {
                let exe = std::env::current_exe()?;
                // A file replaced since (rename over it, as installers do) reads "(deleted)".
                let path = exe.to_string_lossy();
                Ok(match path.strip_suffix(" (deleted)") {
                    Some(on_disk) => PathBuf::from(on_disk),
                    None => exe,
                })
            }
        }
    }
}

/// Starts this program with `args` in its own session, output to `log`, the descriptor of
/// `handed` passed when given, and waits until it reports the mount ready (`log_path` is quoted
/// in errors). Returns the child, still running.
pub(crate) fn start_reporting(
    args: impl IntoIterator<Item = OsString>,
    log: std::fs::File,
    handed: Option<Handed<'_>>,
    log_path: &Path,
) -> Result<(Started, std::process::Child), FsError> {
    let fail = |reason: String| {
        FsError::Daemon(format!(
            "starting the mount daemon (log {}): {reason}",
            log_path.display()
        ))
    };
    let log_err = log.try_clone().map_err(|e| fail(e.to_string()))?;
    let (ready_read, ready_write) = pipe().map_err(|e| fail(format!("the readiness pipe: {e}")))?;
    let program = handed.as_ref().map_or(Program::OnDisk, |h| h.program);
    let exe = program
        .path()
        .map_err(|e| fail(format!("finding this program: {e}")))?;
    let write_fd = ready_write.as_raw_fd();
    let mut command = std::process::Command::new(exe);
    command
        .args(args)
        .env(DAEMON_CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    let connection_fd = handed.as_ref().map(|h| h.fd.as_raw_fd());
    if let Some(handed) = &handed {
        command
            .env(crate::takeover::CONNECTION_ENV, &handed.offered)
            .env(
                crate::supervisor::GENERATION_ENV,
                handed.generation.to_string(),
            )
            .env(crate::supervisor::MOUNTPOINT_ENV, &handed.mountpoint);
    }
    // SAFETY: only async-signal-safe calls (setsid, fcntl, dup2) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Both descriptors first move above the slots they go to, so placing one never
            // replaces the other (the connection may well sit at READY_FD, or the pipe at
            // CONNECTION_FD); the copies close on exec, the placed ones (dup2) do not.
            let ready = lift(write_fd)?;
            let connection = connection_fd.map(lift).transpose()?;
            if libc::dup2(ready, READY_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(fd) = connection {
                if libc::dup2(fd, crate::takeover::CONNECTION_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| fail(e.to_string()))?;
    drop(ready_write);
    let mut answer = String::new();
    let _ = std::fs::File::from(ready_read).read_to_string(&mut answer);
    if let Some(line) = answer.strip_prefix("ready ") {
        let started = Started {
            line: line.trim().to_string(),
            pid: child.id(),
        };
        return Ok((started, child));
    }
    let status = child
        .wait()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "unknown status".into());
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    Err(FsError::Daemon(format!(
        "the mount daemon exited ({status}) before the mount answered; its log ({}):\n{}",
        log_path.display(),
        log.trim_end()
    )))
}

/// A close-on-exec copy of `fd` numbered above every descriptor a child is handed.
///
/// Called between fork and exec: fcntl is async-signal-safe.
fn lift(fd: std::os::fd::RawFd) -> std::io::Result<std::os::fd::RawFd> {
    // SAFETY: F_DUPFD_CLOEXEC duplicates an open descriptor; no memory is involved.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, HANDED_FDS_END) };
    match copy < 0 {
        true => Err(std::io::Error::last_os_error()),
        false => Ok(copy),
    }
}

/// A pipe whose ends close on exec (the child's copy is made by dup2, which clears that flag).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors that this function then owns.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Unmounts the mount at `mountpoint`: asks its daemon (which saves its trace first) and, when
/// no daemon answers (one that died leaves a mount answering "Transport endpoint is not
/// connected"), unmounts it directly and removes its stale socket. Unless `lazy` (files may
/// stay open there), it then waits for the daemon to exit, so its disk cache is closed and the
/// next mount of the same cache can open it. Returns what happened.
pub async fn unmount(runtime_dir: &Path, mountpoint: &Path, lazy: bool) -> Result<String, FsError> {
    let pid = status(runtime_dir, mountpoint).await.ok().map(|s| s.pid);
    let request = ControlRequest::Unmount { lazy };
    match control::request(runtime_dir, mountpoint, &request).await {
        Ok(answer) if answer.ok => {
            if let (Some(pid), false) = (pid, lazy) {
                if !thaw_sys::process::wait_gone(pid, STOP_WAIT).await {
                    tracing::warn!(pid, "the mount daemon has not exited yet");
                }
            }
            Ok(answer.message)
        }
        Ok(answer) => Err(FsError::mount(mountpoint, answer.message)),
        Err(e) => {
            tracing::info!(error = %e, "no daemon answered; unmounting directly");
            crate::session::unmount(&control::canonical_mountpoint(mountpoint), lazy)?;
            let _ = std::fs::remove_file(control::socket_path(runtime_dir, mountpoint));
            Ok(format!(
                "no daemon answered; unmounted {}",
                mountpoint.display()
            ))
        }
    }
}

/// Asks the daemon of the mount at `mountpoint` to merge what it recorded into the stored
/// trace now; returns its answer.
pub async fn save_trace(runtime_dir: &Path, mountpoint: &Path) -> Result<String, FsError> {
    let answer = control::request(runtime_dir, mountpoint, &ControlRequest::SaveTrace).await?;
    match answer.ok {
        true => Ok(answer.message),
        false => Err(FsError::mount(mountpoint, answer.message)),
    }
}

/// Replaces the worker of the supervised mount at `mountpoint` by a new one (this program as
/// it is on disk now: an upgrade), which takes the connection over with no request lost; waits
/// until the new worker answers and returns its status.
pub async fn handoff(runtime_dir: &Path, mountpoint: &Path) -> Result<MountStatus, FsError> {
    let before = status(runtime_dir, mountpoint).await?;
    let Some(supervisor) = before.supervisor_pid else {
        return Err(FsError::mount(
            mountpoint,
            "this mount is not supervised (mount it with --supervise to hand it over)",
        ));
    };
    // SAFETY: kill sends a signal to a process id; no memory is involved.
    if unsafe { libc::kill(supervisor as i32, libc::SIGHUP) } != 0 {
        return Err(FsError::Daemon(format!(
            "signalling the supervisor {supervisor}: {}",
            std::io::Error::last_os_error()
        )));
    }
    let deadline = std::time::Instant::now() + STOP_WAIT;
    while std::time::Instant::now() < deadline {
        if let Ok(now) = status(runtime_dir, mountpoint).await {
            if now.worker_generation > before.worker_generation && now.pid != before.pid {
                return Ok(now);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(FsError::Daemon(format!(
        "the supervisor {supervisor} of {} did not hand the mount to a new worker within {:?}",
        mountpoint.display(),
        STOP_WAIT
    )))
}

/// A `thaw mount --daemon` started by another command, unmounted (its trace saved) on drop.
#[derive(Debug)]
pub struct DaemonMount {
    dir: PathBuf,
    runtime_dir: PathBuf,
    mounted: bool,
}

impl DaemonMount {
    /// Runs `thaw` (a command for the thaw program, its environment already carrying the
    /// configuration) as `thaw mount TAG DIR --daemon OPTIONS...`, with `dir` created, and
    /// returns once the mount answers. `runtime_dir` is where its control socket is.
    pub fn start(
        mut thaw: std::process::Command,
        runtime_dir: &Path,
        tag: &str,
        dir: &Path,
        options: &[&str],
    ) -> Result<Self, FsError> {
        std::fs::create_dir_all(dir).map_err(|e| FsError::mount(dir, e))?;
        // A command run by a daemon child (the snapshotter) must not pass for one itself.
        let out = thaw
            .env_remove(DAEMON_CHILD_ENV)
            .args(["mount", tag])
            .arg(dir)
            .arg("--daemon")
            .args(options)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| FsError::mount(dir, format!("starting the mount: {e}")))?;
        if !out.status.success() {
            return Err(FsError::mount(
                dir,
                format!(
                    "mounting {tag}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        Ok(DaemonMount {
            dir: dir.to_path_buf(),
            runtime_dir: runtime_dir.to_path_buf(),
            mounted: true,
        })
    }

    /// Leaves the mount running after this handle is gone, for a mount that outlives the
    /// command that started it (the containerd snapshotter's lazy layers); [`unmount`] ends it.
    pub fn detach(mut self) -> PathBuf {
        self.mounted = false;
        self.dir.clone()
    }

    /// The mount point.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The daemon's counters (chunks and bytes from the store and from peers so far).
    pub async fn status(&self) -> Result<MountStatus, FsError> {
        status(&self.runtime_dir, &self.dir).await
    }

    /// Unmounts and waits for the daemon to exit (its trace saved, its disk cache closed), so
    /// the next mount of the same cache starts from a settled state.
    pub async fn stop(mut self) -> Result<(), FsError> {
        let pid = self.status().await?.pid;
        let request = ControlRequest::Unmount { lazy: false };
        let answer = control::request(&self.runtime_dir, &self.dir, &request).await?;
        if !answer.ok {
            return Err(FsError::mount(
                &self.dir,
                format!("unmounting: {}", answer.message),
            ));
        }
        self.mounted = false;
        if !thaw_sys::process::wait_gone(pid, STOP_WAIT).await {
            return Err(FsError::Daemon(format!(
                "the mount daemon {pid} of {} did not exit",
                self.dir.display()
            )));
        }
        Ok(())
    }

    /// Asks the daemon to unmount without an async runtime (for `Drop`); unmounts directly when
    /// no daemon answers.
    fn unmount_now(&self) {
        let socket = control::socket_path(&self.runtime_dir, &self.dir);
        let asked = std::os::unix::net::UnixStream::connect(&socket).and_then(|mut stream| {
            let mut line = serde_json::to_vec(&ControlRequest::Unmount { lazy: false })
                .expect("a request always serializes");
            line.push(b'\n');
            stream.write_all(&line)?;
            let mut answer = String::new();
            BufReader::new(stream).read_line(&mut answer)?;
            Ok(answer)
        });
        let unmounted = asked
            .ok()
            .and_then(|answer| serde_json::from_str::<control::ControlResponse>(&answer).ok())
            .is_some_and(|answer| answer.ok);
        if !unmounted {
            let _ = thaw_sys::mount::unmount(&self.dir, true);
        }
    }
}

impl Drop for DaemonMount {
    fn drop(&mut self) {
        if self.mounted {
            self.unmount_now();
        }
    }
}

/// The counters of the mount at `dir`, asked of its daemon through the control socket.
pub async fn status(runtime_dir: &Path, dir: &Path) -> Result<MountStatus, FsError> {
    let answer = control::request(runtime_dir, dir, &ControlRequest::Status).await?;
    match answer.status {
        Some(status) if answer.ok => Ok(status),
        _ => Err(FsError::mount(
            dir,
            format!("no status: {}", answer.message),
        )),
    }
}
