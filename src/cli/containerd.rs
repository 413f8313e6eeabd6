//! `thaw snapshotter` (containerd's remote snapshotter daemon) and `thaw containerd pull` (an
//! indexed image into containerd without its layers): parsing and wiring; thaw-snapshotter does
//! the work.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};
use thaw_fs::daemon;
use thaw_snapshotter::layout::Layout;
use thaw_snapshotter::lazy::LazyMounts;
use thaw_snapshotter::pull::{pull, PullTarget};
use thaw_snapshotter::service::Snapshotter;

use super::index::RegistryArgs;
use super::GlobalOptions;

#[derive(Args, Debug)]
pub struct SnapshotterArgs {
    /// The unix socket containerd's `proxy_plugins` entry names.
    #[arg(long, default_value = "/run/thaw/snapshotter.sock")]
    address: PathBuf,
    /// Where snapshots, their metadata and the lazy mounts live.
    #[arg(long, default_value = "/var/lib/thaw/snapshotter")]
    root: PathBuf,
    /// Run in the background; return once the socket answers.
    #[arg(long)]
    daemon: bool,
    /// Log file of the background daemon [default: RUNTIME_DIR/snapshotter.log].
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// More options for each lazy layer's `thaw mount` (repeatable), e.g. `--mount-option=--no-passthrough`.
    #[arg(long = "mount-option", allow_hyphen_values = true)]
    mount_options: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum ContainerdCommand {
    /// Put an image into containerd with its layers prepared by the thaw snapshotter: its
    /// manifest and config are pulled, no layer is (index the image into thaw first).
    Pull(PullArgs),
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// REGISTRY/REPO[:TAG|@DIGEST].
    image: String,
    /// containerd's socket.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    address: PathBuf,
    /// containerd namespace (Kubernetes uses k8s.io).
    #[arg(long, short, default_value = "default")]
    namespace: String,
    /// The snapshotter's name in containerd's proxy_plugins.
    #[arg(long, default_value = "thaw")]
    snapshotter: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// Runs `thaw snapshotter`.
pub fn snapshotter(
    global: &GlobalOptions,
    runtime: &tokio::runtime::Runtime,
    args: SnapshotterArgs,
) -> anyhow::Result<ExitCode> {
    if args.daemon && !daemon::is_daemon_child() {
        let log = args
            .log_file
            .clone()
            .unwrap_or_else(|| global.runtime_dir().join("snapshotter.log"));
        let started = daemon::start_detached(std::env::args_os().skip(1), &log)?;
        eprintln!(
            "thaw: {} (pid {}, log {})",
            started.line,
            started.pid,
            log.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    runtime.block_on(serve(global, args))
}

async fn serve(global: &GlobalOptions, args: SnapshotterArgs) -> anyhow::Result<ExitCode> {
    let store = global.open_store()?;
    let thaw = Arc::new(global.thaw_command()?);
    let mounts = LazyMounts::new(thaw, &global.runtime_dir(), args.mount_options.clone());
    let layout = Layout::create(&args.root)?;
    let snapshotter = Arc::new(Snapshotter::open(layout, store, mounts)?);
    let counts = snapshotter.counts().await;
    let address = args.address.display().to_string();
    let ready = move || {
        let line = format!(
            "snapshotter on {address} ({} snapshots, {} remote)",
            counts.snapshots, counts.remote
        );
        eprintln!("thaw: {line}");
        daemon::report_ready(&line);
    };
    thaw_snapshotter::server::serve(
        snapshotter,
        &args.address,
        ready,
        thaw_sys::process::termination(),
    )
    .await?;
    eprintln!("thaw: snapshotter stopped (lazy mounts keep serving)");
    Ok(ExitCode::SUCCESS)
}

/// Runs `thaw containerd ...`.
pub fn run(
    _global: &GlobalOptions,
    runtime: &tokio::runtime::Runtime,
    command: ContainerdCommand,
) -> anyhow::Result<ExitCode> {
    let ContainerdCommand::Pull(args) = command;
    let options = args.registry.options()?;
    let image = thaw_indexer::image::source::fetch_image_metadata(
        &args.image,
        &options.registry,
        &options.platform,
        runtime.handle(),
    )?;
    let target = PullTarget {
        namespace: args.namespace.clone(),
        snapshotter: args.snapshotter.clone(),
    };
    let report = runtime.block_on(async {
        let channel = thaw_snapshotter::server::connect(&args.address).await?;
        pull(channel, &target, &image).await
    })?;
    println!(
        "{} {} ({} layers from thaw's store, nothing downloaded)",
        report.name, report.digest, report.layers
    );
    Ok(ExitCode::SUCCESS)
}
