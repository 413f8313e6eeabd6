//! A container from an indexed image on this node: its private directory, the image mounted
//! lazily with a writable overlay on top, the runtime bundle from the image's config and the
//! caller's overrides, and running it in the foreground with SIGTERM and SIGINT passed on to it.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use thaw_container::checkpoint::Started;
use thaw_container::image::{resolve_user, ImageRuntime};
use thaw_container::logs::RunLogs;
use thaw_container::rootfs::Overlay;
use thaw_container::runtime::{ContainerDir, Runtime};
use thaw_container::spec;
use thaw_fs::daemon::DaemonMount;

use crate::{Node, ReplicaError};

/// How to start a container from an image.
#[derive(Clone, Debug, Default)]
pub struct LaunchOptions {
    /// Tag or manifest id of the image.
    pub image: String,
    /// Replaces the image's Cmd (its Entrypoint stays).
    pub command: Vec<String>,
    /// Replaces the image's Entrypoint.
    pub entrypoint: Option<String>,
    /// More environment (`KEY=VALUE`), over the image's.
    pub env: Vec<String>,
    /// Working directory [default: the image's].
    pub workdir: Option<String>,
    /// User (uid[:gid] or names) [default: the image's].
    pub user: Option<String>,
    /// OCI runtime name or path [default: crun, else runc].
    pub runtime: Option<String>,
    /// Keep the container's directory (bundle, upper layer) after it ends.
    pub keep: bool,
    /// More `thaw mount` options for the image.
    pub mount_options: Vec<String>,
    /// Where the container's output goes [default: our standard streams].
    pub logs: Option<RunLogs>,
}

/// A container ready to start: the image mounted, the overlay on top, the bundle written.
/// Fields drop in order: the overlay, then the image mount, then the directory.
pub struct Prepared {
    /// Its id on this node.
    pub id: String,
    /// The runtime that runs it.
    pub runtime: Runtime,
    /// The image as named, and the manifest it resolved to (hex).
    pub image: (String, String),
    /// The runtime spec in the bundle.
    pub spec: serde_json::Value,
    /// The bundle directory.
    pub bundle: PathBuf,
    logs: Option<RunLogs>,
    overlay: Overlay,
    mount: DaemonMount,
    dir: ContainerDir,
}

/// A container id unique on this node for an image manifest.
pub fn container_id(manifest_hex: &str) -> String {
    let short = &manifest_hex[..manifest_hex.len().min(12)];
    format!("thaw-{}-{short}", std::process::id())
}

/// Mounts the image at `dir/image` and a writable overlay at `dir/rootfs` over `dir/upper`.
pub(crate) fn mount_root(
    node: &Node,
    manifest_hex: &str,
    dir: &Path,
    mount_options: &[&str],
) -> Result<(DaemonMount, Overlay), ReplicaError> {
    let mount = node.mount(manifest_hex, &dir.join("image"), mount_options)?;
    let overlay = Overlay::in_dir(mount.dir(), dir)?;
    Ok((mount, overlay))
}

/// Prepares a container from `options.image`; `stage` hears each step as it is done.
pub async fn prepare(
    node: &Node,
    options: &LaunchOptions,
    stage: &dyn Fn(&str),
) -> Result<Prepared, ReplicaError> {
    let runtime = Runtime::find(options.runtime.as_deref())?;
    let (manifest, _) = node.store().open_manifest(&options.image).await?;
    let manifest_hex = manifest.id().to_hex();
    let image = ImageRuntime::of_manifest(&options.image, &manifest)?;
    let entrypoint = options.entrypoint.as_ref().map(|e| vec![e.clone()]);
    let process_args = image.args(&options.command, entrypoint.as_deref());
    if process_args.is_empty() {
        return Err(ReplicaError::Refused {
            what: options.image.clone(),
            reason: "the image has no Entrypoint or Cmd: give a command after --".into(),
        });
    }
    let id = container_id(&manifest_hex);
    let dir = ContainerDir::create(node.containers_dir().join(&id), options.keep)?;
    let mount_options: Vec<&str> = options.mount_options.iter().map(String::as_str).collect();
    let (mount, overlay) = mount_root(node, &manifest_hex, dir.path(), &mount_options)?;
    stage("image mounted");
    let user = resolve_user(
        options.user.as_deref().unwrap_or(&image.user),
        overlay.dir(),
    )?;
    let cwd = options.workdir.as_deref().unwrap_or(&image.working_dir);
    let spec = spec::runtime_spec(
        &process_args,
        &image.environment(&options.env),
        cwd,
        user,
        overlay.dir(),
        "thaw",
    );
    let bundle = spec::write_bundle(&dir.path().join("bundle"), &spec)?;
    stage("bundle written");
    Ok(Prepared {
        id,
        runtime,
        image: (options.image.clone(), manifest_hex),
        spec,
        bundle,
        logs: options.logs.clone(),
        overlay,
        mount,
        dir,
    })
}

impl Prepared {
    /// The container's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The overlay's writable upper directory: everything the container wrote.
    pub fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }

    /// The merged root.
    pub fn rootfs(&self) -> &Path {
        self.overlay.dir()
    }

    /// The image mount (its counters).
    pub fn image_mount(&self) -> &DaemonMount {
        &self.mount
    }

    /// Starts the container in the foreground.
    pub fn start(&self) -> Result<Started, ReplicaError> {
        Ok(self
            .runtime
            .start(&self.bundle, &self.id, self.logs.as_ref())?)
    }
}

/// How long a container has to exit after a forwarded SIGTERM or SIGINT before it is killed
/// (a container's first process ignores signals it has no handler for, as `docker stop`
/// knows).
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// How often [`wait_passing_signals`] calls its watcher.
const WATCH_EVERY: Duration = Duration::from_millis(50);

/// SIGTERM and SIGINT taken over from their default (ending this process), to be passed on
/// to a container. Install it first thing: a signal that arrives before the container runs is
/// kept and passed on once it does.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Takes SIGTERM and SIGINT over.
    pub fn install() -> Result<Self, ReplicaError> {
        use tokio::signal::unix::{signal, SignalKind};
        let io = |e| ReplicaError::io(Path::new("signal handler"), e);
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(io)?,
            int: signal(SignalKind::interrupt()).map_err(io)?,
        })
    }
}

/// Waits for the container to exit, passing SIGTERM and SIGINT on to it (and SIGKILL
/// [`STOP_GRACE`] later), and calling `watch` every 50 ms: an error from it kills the
/// container and is returned.
pub async fn wait_passing_signals(
    started: &mut Started,
    signals: &mut Signals,
    mut watch: impl FnMut() -> Result<(), ReplicaError>,
) -> Result<ExitStatus, ReplicaError> {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    let mut kill_at: Option<std::time::Instant> = None;
    loop {
        let forward = tokio::select! {
            status = started.wait() => return Ok(status?),
            _ = signals.term.recv() => "TERM",
            _ = signals.int.recv() => "INT",
            _ = tick.tick() => {
                let failed = watch().err();
                let overdue = kill_at.is_some_and(|at| std::time::Instant::now() > at);
                if failed.is_none() && !overdue {
                    continue;
                }
                started.signal("KILL").await;
                let status = started.wait().await?;
                return match failed {
                    Some(e) => Err(e),
                    None => Ok(status),
                };
            }
        };
        started.signal(forward).await;
        kill_at.get_or_insert_with(|| std::time::Instant::now() + STOP_GRACE);
    }
}
