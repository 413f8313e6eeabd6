//! `thaw run`: start a container from an indexed image without pulling or unpacking it (a lazy
//! mount, a writable overlay, crun or runc); snapshot it once it is ready (`--snapshot`); or
//! restore one from a snapshot on any node (`--from-snapshot`). The work is thaw-replica's.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use thaw_container::exit_code;
use thaw_container::readiness::Readiness;
use thaw_replica::launch::{self, LaunchOptions};
use thaw_replica::restore::{self, RestoreOptions};
use thaw_replica::take::{self, TakeOptions};
use thaw_replica::Node;

use super::progress::Bar;
use super::GlobalOptions;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Tag or manifest id of an image (`thaw index image`).
    #[arg(
        required_unless_present = "from_snapshot",
        conflicts_with = "from_snapshot"
    )]
    name: Option<String>,
    /// Command and arguments, after `--` (replace the image's Cmd; its Entrypoint stays).
    #[arg(last = true)]
    command: Vec<String>,
    /// Replace the image's Entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Set an environment variable (KEY=VALUE), repeatable.
    #[arg(long, short)]
    env: Vec<String>,
    /// Working directory inside the container [default: the image's].
    #[arg(long, short)]
    workdir: Option<String>,
    /// User (uid[:gid] or name[:group]) [default: the image's].
    #[arg(long, short)]
    user: Option<String>,
    /// OCI runtime: crun, runc or a path [default: crun, else runc; runc first where cgroup v1
    /// and v2 are mounted side by side; runc for snapshots and restores].
    #[arg(long)]
    runtime: Option<String>,
    /// Keep the bundle and the overlay's upper directory after the container exits.
    #[arg(long)]
    keep: bool,
    /// Mount the image without FUSE passthrough (implied by --snapshot: CRIU cannot dump a
    /// process whose files the kernel reads from disk cache files).
    #[arg(long)]
    no_passthrough: bool,
    /// Checkpoint the container once it is ready and store it as snapshot NAME (tag
    /// `snapshot/NAME`): the runtime's CRIU images, what the container wrote, and a record.
    #[arg(long, value_name = "NAME", requires = "snapshot_when_ready")]
    snapshot: Option<String>,
    /// Take the --snapshot when the container is ready (--ready-file or --ready-url).
    #[arg(long, requires = "snapshot")]
    snapshot_when_ready: bool,
    /// Ready once this path exists inside the container.
    #[arg(long, value_name = "PATH")]
    ready_file: Option<std::path::PathBuf>,
    /// Ready once a GET of this URL answers 2xx (the container shares the host's network).
    #[arg(long, value_name = "URL")]
    ready_url: Option<String>,
    /// Seconds the container may take to be ready.
    #[arg(long, default_value_t = 600)]
    ready_timeout: u64,
    /// Keep the container running after the snapshot (else it ends with the dump).
    #[arg(long, requires = "snapshot")]
    leave_running: bool,
    /// Dump established TCP connections too (a restore then needs the same addresses).
    #[arg(long, requires = "snapshot")]
    tcp_established: bool,
    /// Dump the file locks the container's processes hold (restored with them).
    #[arg(long, requires = "snapshot")]
    file_locks: bool,
    /// Restore the container of snapshot NAME instead of starting one: its image mounted
    /// lazily, what it wrote put back, its processes restored by runc from the stored images.
    #[arg(long, value_name = "NAME")]
    from_snapshot: Option<String>,
    /// With --from-snapshot: read all memory before the container runs (default: page it in
    /// lazily through userfaultfd where the host and the snapshot allow).
    #[arg(long, requires = "from_snapshot")]
    no_lazy_pages: bool,
    /// With --from-snapshot: which daemon pages memory in: thaw (a window of pages per fault,
    /// the rest in 4 MiB steps) or criu (CRIU's `criu lazy-pages`, a page per fault).
    #[arg(long, requires = "from_snapshot", default_value = "thaw")]
    lazy_pages_daemon: thaw_snapshot::PagesDaemon,
    /// Print how long each stage took (stderr).
    #[arg(long)]
    timing: bool,
}

/// Runs `thaw run`: returns the container's exit status.
pub async fn run(global: &GlobalOptions, args: RunArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut signals = launch::Signals::install()?;
    let timing = args.timing;
    let stage = move |what: &str| {
        if timing {
            let seconds = started.elapsed().as_secs_f64();
            eprintln!("thaw run: {what} at {seconds:.3}s");
        }
    };
    let node = Node::new(
        global.config.clone(),
        global.open_store()?,
        Arc::new(global.thaw_command()?),
    );
    if let Some(name) = &args.from_snapshot {
        return from_snapshot(&node, &args, name, &mut signals, &stage).await;
    }
    let Some(image) = args.name.clone() else {
        bail!("name an image, or --from-snapshot NAME");
    };
    let snapshot = args.snapshot.as_ref().map(|name| TakeOptions {
        name: name.clone(),
        readiness: Readiness::from_options(args.ready_file.as_deref(), args.ready_url.as_deref()),
        timeout: Duration::from_secs(args.ready_timeout),
        leave_running: args.leave_running,
        tcp_established: args.tcp_established,
        file_locks: args.file_locks,
    });
    let runtime = match (&args.runtime, &snapshot) {
        (None, Some(_)) => Some("runc".to_string()),
        (asked, _) => asked.clone(),
    };
    let mut mount_options = Vec::new();
    if args.no_passthrough || snapshot.is_some() {
        mount_options.push("--no-passthrough".to_string());
    }
    let options = LaunchOptions {
        image,
        command: args.command.clone(),
        entrypoint: args.entrypoint.clone(),
        env: args.env.clone(),
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        runtime,
        keep: args.keep,
        mount_options,
        logs: None,
    };
    let prepared = launch::prepare(&node, &options, &stage).await?;
    let mut container = match &snapshot {
        None => prepared.start()?,
        Some(take_options) => {
            let bar = Arc::new(Bar::new(global.quiet));
            let (container, taken) = take::take(&node, &prepared, take_options, bar).await?;
            eprintln!(
                "thaw: snapshot {} of {}: ready after {:.2}s, {} stored ({} new chunks); \
                 checkpoint {:.2}s, store {:.2}s",
                take_options.name,
                options.image,
                taken.ready_seconds,
                bytesize::ByteSize(taken.bytes),
                taken.new_chunks,
                taken.dump_seconds,
                taken.store_seconds
            );
            println!("{}", taken.manifest);
            if !take_options.leave_running {
                return Ok(ExitCode::SUCCESS);
            }
            container
        }
    };
    stage("container started");
    let status = launch::wait_passing_signals(&mut container, &mut signals, || Ok(())).await?;
    stage("container exited");
    drop(container);
    drop(prepared);
    Ok(ExitCode::from(exit_code(&status)))
}

/// `thaw run --from-snapshot NAME`.
async fn from_snapshot(
    node: &Node,
    args: &RunArgs,
    name: &str,
    signals: &mut launch::Signals,
    stage: &dyn Fn(&str),
) -> anyhow::Result<ExitCode> {
    let options = RestoreOptions {
        name: name.to_string(),
        lazy_pages: !args.no_lazy_pages,
        pages_daemon: args.lazy_pages_daemon,
        runtime: args.runtime.clone(),
        keep: args.keep,
        logs: None,
    };
    let mut restored = restore::restore(node, &options, stage).await?;
    let report = &restored.report;
    if let Some(reason) = &report.lazy_pages_refused {
        eprintln!("thaw: restoring {name} without lazy pages: {reason}");
    }
    if args.timing {
        eprintln!(
            "thaw run: restored {name} as pid {} (checks {:.3}s, mounts {:.3}s, restore {:.3}s, {})",
            report.pid,
            report.check_seconds,
            report.mount_seconds,
            report.restore_seconds,
            match report.lazy_pages {
                true => "memory paged in lazily",
                false => "memory restored whole",
            }
        );
    }
    let status = restored.wait(signals).await?;
    stage("container exited");
    drop(restored);
    Ok(ExitCode::from(exit_code(&status)))
}
