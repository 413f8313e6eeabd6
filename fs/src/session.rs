//! One mount from start to end: mount and wait until it answers, start the background fetching
//! (the stored or carried-over trace as prefetch, fetching on open, the full fetch), serve
//! metrics and the control socket, unmount on SIGTERM/SIGINT or on request, and save the
//! recorded trace when the mount ends.

use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, SessionACL};
use thaw_core::store::Store;
use tokio::io::BufReader;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::control::{self, ControlRequest, ControlResponse, MountStatus};
use crate::passthrough::Passthrough;
use crate::prefetch::Class;
use crate::takeover;
use crate::trace::{carry, TraceSource};
use crate::{FsError, ThawFs, Volume};

/// How long a control client has to send its request line.
const CONTROL_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an ending mount waits for the whole files it is preparing in the disk cache.
const PREPARE_SETTLE: Duration = Duration::from_secs(30);

/// `f_type` of a FUSE file system in `statfs`.
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// How a mount runs.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// Source name shown in /proc/mounts (`thaw:<tag>`).
    pub fs_name: String,
    /// Let users other than the mounting one read the tree.
    pub allow_other: bool,
    /// Threads reading FUSE requests (reads themselves run on the async runtime).
    pub dispatch_threads: usize,
    /// Fetch in the background at all: the stored (or carried-over) access trace, files as
    /// they are opened, the full fetch.
    pub prefetch: bool,
    /// The tag the manifest was mounted by (its history names earlier versions whose traces
    /// apply).
    pub tag: Option<String>,
    /// Fetch opened files whole and listed directories' small files.
    pub fetch_on_open: bool,
    /// When to fetch the whole manifest in the background.
    pub fetch_all: FetchAll,
    /// Save the recorded trace into the store when the mount ends.
    pub save_trace: bool,
    /// Serve Prometheus metrics here.
    pub metrics_addr: Option<SocketAddr>,
    /// Metrics registered beside the mount's own (the peer tier's).
    pub extra_metrics: crate::metrics::ExtraMetrics,
    /// How long to wait for the mount to answer.
    pub ready_timeout: Duration,
    /// Where the control socket goes (the configuration's runtime dir).
    pub runtime_dir: PathBuf,
    /// Hand files complete in the local disk cache to the kernel (FUSE passthrough; needs
    /// root and a kernel that offers it, else reads go through thaw).
    pub passthrough: bool,
}

/// When a mount fetches its whole manifest into the local cache in the background, behind
/// everything else: the floor that keeps a start without a trace from being slower than a pull.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchAll {
    /// Never.
    Never,
    /// Always.
    Always,
    /// When no trace applies, the disk cache is on and its budget holds the manifest's bytes,
    /// and they are at most this many.
    NoTraceBelow(u64),
}

/// The default of [`FetchAll`]: manifests up to 8 GiB with no trace are fetched whole.
pub const DEFAULT_FETCH_ALL_BELOW: u64 = 8 << 30;

impl SessionOptions {
    /// Defaults for a mount at `mountpoint`.
    pub fn new(mountpoint: impl Into<PathBuf>) -> Self {
        SessionOptions {
            mountpoint: mountpoint.into(),
            fs_name: "thaw".into(),
            // SAFETY: geteuid has no preconditions.
            allow_other: unsafe { libc::geteuid() } == 0,
            dispatch_threads: 2,
            prefetch: true,
            tag: None,
            fetch_on_open: true,
            fetch_all: FetchAll::NoTraceBelow(DEFAULT_FETCH_ALL_BELOW),
            save_trace: true,
            metrics_addr: None,
            extra_metrics: Default::default(),
            ready_timeout: Duration::from_secs(10),
            runtime_dir: thaw_core::dirs::default_runtime_dir(),
            passthrough: true,
        }
    }
}

/// What a running mount tells its starter once it answers.
#[derive(Clone, Debug)]
pub struct Ready {
    /// The canonical mount point.
    pub mountpoint: PathBuf,
    /// The control socket.
    pub control_socket: PathBuf,
    /// The bound metrics address, if serving.
    pub metrics_addr: Option<SocketAddr>,
    /// Trace entries queued for prefetch.
    pub prefetch_chunks: usize,
    /// The traces they came from.
    pub prefetch_sources: Vec<TraceSource>,
    /// Whether the whole manifest is being fetched in the background.
    pub fetch_all: bool,
}

/// How a mount ended.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Store key and entry count of the saved trace, if one was saved.
    pub trace_saved: Option<(String, usize)>,
}

/// Unmounts `mountpoint`: `lazy` detaches it even while files are open. Works on a mount whose
/// daemon died (the recovery for "Transport endpoint is not connected").
pub fn unmount(mountpoint: &Path, lazy: bool) -> Result<(), FsError> {
    thaw_sys::mount::unmount(mountpoint, lazy)
        .map_err(|e| FsError::mount(mountpoint, format!("unmount failed: {e}")))
}

/// The device of `path`, or `None` if it cannot be stat'ed.
fn device_of(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.dev())
}

fn is_fuse(path: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct; the path is NUL-terminated.
    unsafe {
        let mut fs: libc::statfs = std::mem::zeroed();
        libc::statfs(c_path.as_ptr(), &mut fs) == 0 && fs.f_type as i64 == FUSE_SUPER_MAGIC
    }
}

/// Waits until `mountpoint` is a FUSE file system on a new device that answers `stat`.
async fn wait_until_mounted(mountpoint: &Path, before: Option<u64>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let path = mountpoint.to_path_buf();
        let answered = tokio::task::spawn_blocking(move || {
            is_fuse(&path) && device_of(&path).is_some_and(|dev| Some(dev) != before)
        })
        .await
        .unwrap_or(false);
        if answered {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

/// Lets the kernel read ahead further on this mount than its 128 KiB default (best effort).
fn widen_kernel_readahead(mountpoint: &Path) {
    let Some(dev) = device_of(mountpoint) else {
        return;
    };
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    if let Err(e) = std::fs::write(&knob, "4096") {
        tracing::debug!(%knob, error = %e, "kernel readahead left at its default");
    }
}

/// Binds the control socket, replacing a stale one left by a daemon that died.
async fn bind_control(
    runtime_dir: &Path,
    mountpoint: &Path,
    takes_over: bool,
) -> Result<(UnixListener, PathBuf), FsError> {
    let socket = control::socket_path(runtime_dir, mountpoint);
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| FsError::Control {
            socket: socket.display().to_string(),
            reason: format!("creating {}: {e}", dir.display()),
        })?;
    }
    if socket.exists()
        && !takes_over
        && control::request(runtime_dir, mountpoint, &ControlRequest::Status)
            .await
            .is_ok()
    {
        return Err(FsError::mount(
            mountpoint,
            "a thaw mount is already running there (thaw umount it first)",
        ));
    }
    // A worker taking over replaces its predecessor's socket (which stops answering when it
    // exits); anyone else replaces only a stale one.
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(|e| FsError::Control {
        socket: socket.display().to_string(),
        reason: format!("bind: {e}"),
    })?;
    Ok((listener, socket))
}

/// The background fetching of a running mount: its workers (stopped when dropped) and what the
/// starter is told.
#[derive(Default)]
struct BackgroundStarted {
    _workers: Vec<AbortOnDrop>,
    queued: usize,
    sources: Vec<TraceSource>,
    fetch_all: bool,
}

/// Starts the background fetching of a mount: the trace (its own or carried over) queued
/// first, fetching on open (unless turned off), the full fetch when asked or when no trace
/// applies.
async fn start_background(
    volume: &Arc<Volume>,
    store: &Store,
    options: &SessionOptions,
) -> BackgroundStarted {
    if !options.prefetch {
        return BackgroundStarted::default();
    }
    let workers = volume
        .start_background(&tokio::runtime::Handle::current())
        .into_iter()
        .map(AbortOnDrop)
        .collect();
    let plan = carry::plan(
        store,
        volume.manifest(),
        options.tag.as_deref(),
        volume.trace_profile(),
    )
    .await;
    let no_trace = plan.sources.is_empty();
    let sources = plan.sources.clone();
    let queued = volume.prefetch(plan);
    // With a trace too: loaders read what they open whole, and fetching it at open beat the
    // trace's order alone (docs/benchmarks.md, first starts).
    volume.fetch_on_open(options.fetch_on_open);
    let fits_the_cache = |bytes: u64| {
        volume
            .tiers()
            .local_files()
            .is_some_and(|disk| disk.budget() >= bytes)
    };
    let fetch_all = match options.fetch_all {
        FetchAll::Never => false,
        FetchAll::Always => true,
        FetchAll::NoTraceBelow(max) => {
            let bytes = volume.logical_bytes();
            no_trace && bytes <= max && fits_the_cache(bytes)
        }
    };
    if fetch_all {
        volume.fetch_all();
    }
    BackgroundStarted {
        _workers: workers,
        queued,
        sources,
        fetch_all,
    }
}

/// The FUSE session configuration of a mount (the supervisor mounts with the same).
pub(crate) fn fuse_config(options: &SessionOptions) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName(options.fs_name.clone()),
        MountOption::Subtype("thaw".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
    ];
    config.acl = if options.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(options.dispatch_threads.max(1));
    config.clone_fd = options.dispatch_threads > 1;
    config
}

/// Mounts `volume` at `mountpoint` (or serves the connection a supervisor passed in), runs its
/// FUSE session on a thread and waits until the mount answers; the receiver says when the
/// session has ended.
async fn mount_fuse(
    volume: Arc<Volume>,
    passthrough: Arc<Passthrough>,
    mountpoint: &Path,
    options: &SessionOptions,
    worker: Option<Worker>,
) -> Result<tokio::sync::oneshot::Receiver<std::io::Result<()>>, FsError> {
    let supervised = worker.is_some();
    // (A worker's mount answers only once it serves.)
    let device_before = (!supervised).then(|| device_of(mountpoint)).flatten();
    let fs = ThawFs::new(volume, tokio::runtime::Handle::current(), passthrough);
    let mut config = fuse_config(options);
    let target = mountpoint.to_path_buf();
    let session = tokio::task::spawn_blocking(move || match worker {
        Some(worker) => {
            // Every thread reads the supervisor's descriptor: a clone would be this process's
            // own, and the kernel fails the requests of a clone closed by a crash.
            config.clone_fd = false;
            takeover::worker_session(fs, worker.connection, &worker.offered, config)
        }
        None => fuser::Session::new(fs, &target, &config),
    })
    .await
    .map_err(|e| FsError::mount(mountpoint, e))?
    .map_err(|e| FsError::mount(mountpoint, e))?;
    let (finished_tx, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("fuse-session".into())
        .spawn(move || {
            let _ = finished_tx.send(session.run());
        })
        .map_err(|e| FsError::mount(mountpoint, e))?;
    if !supervised && !wait_until_mounted(mountpoint, device_before, options.ready_timeout).await {
        let _ = unmount(mountpoint, true);
        return Err(FsError::mount(
            mountpoint,
            format!(
                "the mount did not answer within {:?}",
                options.ready_timeout
            ),
        ));
    }
    Ok(finished)
}

/// A worker of a supervised mount: the connection it serves and what it knows of it.
struct Worker {
    connection: std::os::fd::OwnedFd,
    offered: takeover::Offered,
    /// Workers before this one on the connection.
    generation: u32,
    supervisor: u32,
}

impl Worker {
    /// This process's worker role, if a supervisor started it.
    fn inherited() -> Option<Worker> {
        let (connection, offered) = takeover::inherited()?;
        let generation = std::env::var(crate::supervisor::GENERATION_ENV)
            .ok()
            .and_then(|g| g.parse().ok())
            .unwrap_or(0);
        Some(Worker {
            connection,
            offered,
            generation,
            // SAFETY: getppid has no preconditions.
            supervisor: unsafe { libc::getppid() } as u32,
        })
    }
}

/// Answers one control connection. An unmount request that succeeded returns the connection:
/// it is answered once the trace is saved.
async fn handle_control(
    stream: tokio::net::UnixStream,
    volume: &Volume,
    passthrough: &Passthrough,
    store: &Store,
    mountpoint: &Path,
    identity: Option<(u32, u32)>,
) -> Option<tokio::net::unix::OwnedWriteHalf> {
    let (read, write) = stream.into_split();
    // A client that connects and says nothing must not stall the mount's loop.
    let request = tokio::time::timeout(
        CONTROL_READ_TIMEOUT,
        control::read_request(&mut BufReader::new(read)),
    )
    .await
    .ok()?;
    let answer = match request {
        Err(answer) => answer,
        Ok(ControlRequest::Status) => ControlResponse {
            ok: true,
            message: "mounted".into(),
            status: Some(status(volume, passthrough, identity)),
        },
        Ok(ControlRequest::SaveTrace) => save_answer(&volume.save_trace(store).await),
        Ok(ControlRequest::Unmount { lazy }) => match unmount(mountpoint, lazy) {
            Ok(()) => return Some(write),
            Err(e) => ControlResponse {
                ok: false,
                message: e.to_string(),
                status: None,
            },
        },
    };
    control::write_response(write, &answer).await;
    None
}

/// Runs a mount of `volume` until it is unmounted (by a signal, `thaw umount` or `umount`).
/// `on_ready` is called once the mount answers.
pub async fn run(
    volume: Arc<Volume>,
    store: Store,
    options: SessionOptions,
    on_ready: impl FnOnce(&Ready),
) -> Result<Summary, FsError> {
    // A worker must not look its mount point up: nothing answers there until it serves.
    let mountpoint = match crate::supervisor::worker_mountpoint() {
        Some(path) => path,
        None => {
            let mountpoint = control::canonical_mountpoint(&options.mountpoint);
            if !mountpoint.is_dir() {
                return Err(FsError::mount(&mountpoint, "not a directory"));
            }
            mountpoint
        }
    };
    // Handlers first: a SIGTERM at any moment once the mount exists must unmount it.
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| FsError::mount(&mountpoint, e))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| FsError::mount(&mountpoint, e))?;
    let mut retire =
        signal(SignalKind::user_defined1()).map_err(|e| FsError::mount(&mountpoint, e))?;
    let worker = Worker::inherited();
    let (listener, socket) =
        bind_control(&options.runtime_dir, &mountpoint, worker.is_some()).await?;
    let _remove_socket = RemoveOnDrop(socket.clone());

    let background = start_background(&volume, &store, &options).await;
    // Between bursts of reads the daemon gives back the buffers the allocator kept.
    let reads = volume.clone();
    let _release = AbortOnDrop(tokio::spawn(thaw_sys::host::release_memory_when_idle(
        move || reads.metrics.reads.get(),
    )));

    let metrics = match options.metrics_addr {
        Some(addr) => {
            let mut registry = volume
                .metrics
                .registry(volume.tiers().clone(), store.clone());
            options.extra_metrics.register_into(&mut registry);
            let (bound, task) = crate::metrics::serve(registry, addr)
                .await
                .map_err(|e| FsError::mount(&mountpoint, format!("metrics on {addr}: {e}")))?;
            Some((bound, AbortOnDrop(task)))
        }
        None => None,
    };

    let mut passthrough = Passthrough::new(
        options.passthrough,
        options.save_trace.then(|| volume.recorder.window_end()),
        tokio::runtime::Handle::current(),
    );
    let identity = worker.as_ref().map(|w| (w.supervisor, w.generation));
    if let Some(worker) = &worker {
        let ledger = control::runtime_file(&options.runtime_dir, &mountpoint, "ledger");
        passthrough = passthrough.with_ledger(&ledger, worker.generation > 0);
    }
    let passthrough = Arc::new(passthrough);
    let mut finished = mount_fuse(
        volume.clone(),
        passthrough.clone(),
        &mountpoint,
        &options,
        worker,
    )
    .await?;
    widen_kernel_readahead(&mountpoint);
    on_ready(&Ready {
        mountpoint: mountpoint.clone(),
        control_socket: socket.clone(),
        metrics_addr: metrics.as_ref().map(|(addr, _)| *addr),
        prefetch_chunks: background.queued,
        prefetch_sources: background.sources.clone(),
        fetch_all: background.fetch_all,
    });

    let mut summary = Summary::default();
    let mut waiting_for_unmount: Option<tokio::net::unix::OwnedWriteHalf> = None;
    loop {
        tokio::select! {
            ended = &mut finished => {
                if let Ok(Err(e)) = ended {
                    tracing::warn!(error = %e, "the FUSE session ended with an error");
                }
                break;
            }
            _ = terminate.recv() => stop(&mountpoint, "SIGTERM"),
            _ = interrupt.recv() => stop(&mountpoint, "SIGINT"),
            // A supervisor's next worker serves the connection now: leave at once, mounted.
            // Requests read and not answered are queued again for it (`takeover`).
            _ = retire.recv(), if identity.is_some() => {
                tracing::info!("handing the mount over to the next worker");
                // What the disk cache learnt is kept for the next worker (it reconciles the
                // rest: files written since, as after a crash).
                if let Some(disk) = volume.tiers().local_files() {
                    if let Err(e) = disk.flush().await {
                        tracing::warn!(error = %e, "could not flush the disk cache");
                    }
                }
                std::process::exit(0);
            }
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    if let Some(write) = handle_control(stream, &volume, &passthrough, &store, &mountpoint, identity).await {
                        waiting_for_unmount = Some(write);
                    }
                }
            }
        }
    }
    // Whole files being prepared are finished, so the next mount finds them ready.
    passthrough.settle(PREPARE_SETTLE).await;
    let saved = if options.save_trace {
        let saved = volume.save_trace(&store).await;
        if let Err(e) = &saved {
            tracing::error!(error = %e, "could not save the access trace");
        }
        Some(saved)
    } else {
        None
    };
    if let Some(write) = waiting_for_unmount.take() {
        let answer = match &saved {
            Some(saved) => {
                let answer = save_answer(saved);
                ControlResponse {
                    message: format!("unmounted; {}", answer.message),
                    ..answer
                }
            }
            None => ControlResponse {
                ok: true,
                message: "unmounted".into(),
                status: None,
            },
        };
        control::write_response(write, &answer).await;
    }
    summary.trace_saved = saved.and_then(|s| s.ok()).flatten();
    drop(metrics);
    Ok(summary)
}

/// Unmounts on a signal: normally if possible, else detached (the daemon is going away).
fn stop(mountpoint: &Path, why: &str) {
    tracing::info!(signal = why, "unmounting");
    if let Err(e) = unmount(mountpoint, false) {
        tracing::warn!(error = %e, "busy; detaching instead");
        if let Err(e) = unmount(mountpoint, true) {
            tracing::error!(error = %e, "could not unmount");
        }
    }
}

/// The mount's status; `identity` is the supervisor's pid and this worker's generation.
fn status(volume: &Volume, passthrough: &Passthrough, identity: Option<(u32, u32)>) -> MountStatus {
    let counters = volume.tiers().counters();
    let load =
        |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    MountStatus {
        manifest: volume.manifest().id().to_hex(),
        pid: std::process::id(),
        trace_entries: volume.recorder.len() as u64,
        store_fetches: load(&counters.origin_fetches),
        store_bytes: load(&counters.origin_bytes),
        peer_fetches: load(&counters.peer_fetches),
        peer_bytes: load(&counters.peer_bytes),
        prefetch_hits: volume.metrics.prefetch_hits.get(),
        passthrough: passthrough.describe(),
        passthrough_opens: volume.metrics.passthrough_opens.get(),
        fuse_opens: volume.metrics.fuse_opens.get(),
        first_reads: volume.recorder.chunks_read(),
        prefetch_sources: volume.trace_sources(),
        fetch_on_open: volume.fetches_on_open(),
        fetching_all: volume.fetching_all(),
        background: Class::ALL
            .iter()
            .map(|class| (class.name().to_string(), volume.background_report(*class)))
            .collect(),
        supervisor_pid: identity.map(|(pid, _)| pid),
        worker_generation: identity.map_or(0, |(_, generation)| generation),
    }
}

fn save_answer(saved: &Result<Option<(String, usize)>, FsError>) -> ControlResponse {
    match saved {
        Ok(Some((key, entries))) => ControlResponse {
            ok: true,
            message: format!("trace saved: {entries} chunks in {key}"),
            status: None,
        },
        Ok(None) => ControlResponse {
            ok: true,
            message: "no reads recorded; trace unchanged".into(),
            status: None,
        },
        Err(e) => ControlResponse {
            ok: false,
            message: e.to_string(),
            status: None,
        },
    }
}

/// Removes a file when dropped (the control socket, however the session ends).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Stops a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
