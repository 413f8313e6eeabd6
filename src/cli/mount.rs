//! `thaw mount`, `thaw umount` and `thaw trace save|show`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use thaw_fs::background::Limits;
use thaw_fs::control;
use thaw_fs::daemon;
use thaw_fs::metrics::{ExtraMetrics, FsMetrics};
use thaw_fs::session::{self, FetchAll, SessionOptions};
use thaw_fs::supervisor::{self, SupervisorOptions};
use thaw_fs::trace::{carry, Trace, TraceLog, DEFAULT_TRACE_WINDOW};
use thaw_fs::{OpenAhead, Volume};

use super::GlobalOptions;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct MountArgs {
    #[command(subcommand)]
    action: Option<MountAction>,
    /// Tag or manifest id (`thaw mount -- status DIR` mounts a tag named "status").
    #[arg(required = true)]
    name: Option<String>,
    /// Mount point (an existing directory).
    #[arg(required = true)]
    mountpoint: Option<PathBuf>,
    /// Run in the background; exit 0 once the mount answers (its log goes to --log-file).
    #[arg(long, short = 'd')]
    daemon: bool,
    /// Log file of a --daemon mount [default: <runtime dir>/mount-<hash>.log].
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9101) at /metrics.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Fetch nothing in the background: no trace prefetch, nothing fetched on open, no full
    /// fetch (every chunk comes on its first read).
    #[arg(long)]
    no_prefetch: bool,
    /// Batches of background fetching (up to 32 chunks or 8 MiB each) in flight at once.
    #[arg(long, default_value_t = thaw_fs::prefetch::DEFAULT_PREFETCH_CONCURRENCY)]
    prefetch_concurrency: usize,
    /// Do not fetch opened files whole (up to 1 GiB) or the small files of listed
    /// directories in the background.
    #[arg(long)]
    no_fetch_on_open: bool,
    /// Fetch the whole tree into the local cache in the background, behind the reads.
    #[arg(long, conflicts_with = "fetch_all_below")]
    fetch_all: bool,
    /// Fetch the whole tree in the background when no trace applies and it is at most this big
    /// (and fits the disk cache budget); 0 never.
    #[arg(long, default_value = "8GiB")]
    fetch_all_below: bytesize::ByteSize,
    /// Record first reads for this many seconds after mount.
    #[arg(long, default_value_t = DEFAULT_TRACE_WINDOW.as_secs())]
    trace_window: u64,
    /// Do not save the recorded access trace when the mount ends.
    #[arg(long)]
    no_trace: bool,
    /// Record and replay the trace of this profile instead of the default one: for mounts whose
    /// reads differ from a fresh start (e.g. `restore`: the image under a restored snapshot).
    #[arg(long, value_parser = parse_profile)]
    trace_profile: Option<String>,
    /// Threads reading FUSE requests.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Read every file through thaw, even those whole in the disk cache that the kernel could
    /// read directly (FUSE passthrough, used by default when running as root).
    #[arg(long)]
    no_passthrough: bool,
    /// Keep the mount's FUSE connection in a small supervisor process: a worker that dies is
    /// replaced under the running readers, and `thaw mount handoff` upgrades it in place.
    #[arg(long)]
    supervise: bool,
}

#[derive(Subcommand, Debug)]
enum MountAction {
    /// What a running mount has done: fetches, prefetch hits, and how its files were opened
    /// (passthrough to the disk cache, or read through thaw).
    Status {
        /// Mount point of a running `thaw mount`.
        mountpoint: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Hand a supervised mount (`--supervise`) to a new worker started from the program on disk
    /// now (an upgrade): readers see no error, only a pause.
    Handoff {
        /// Mount point of a running `thaw mount --supervise`.
        mountpoint: PathBuf,
    },
}

impl MountArgs {
    /// The tag and mount point (clap requires both unless a subcommand is given).
    fn target(&self) -> (&str, &Path) {
        let name = self.name.as_deref().expect("clap requires a name");
        let dir = self
            .mountpoint
            .as_deref()
            .expect("clap requires a mount point");
        (name, dir)
    }
}

#[derive(Args, Debug)]
pub struct UmountArgs {
    /// Mount point.
    mountpoint: PathBuf,
    /// Detach even while files are open there.
    #[arg(long, short = 'l')]
    lazy: bool,
}

#[derive(Subcommand, Debug)]
pub enum TraceCommand {
    /// Merge what a running mount recorded so far into the store now.
    Save {
        /// Mount point of a running `thaw mount`.
        mountpoint: PathBuf,
    },
    /// Print the stored access trace of a tag, in prefetch order.
    Show {
        /// Tag or manifest id.
        name: String,
        /// The trace of this profile (`thaw mount --trace-profile`) instead of the default one.
        #[arg(long, value_parser = parse_profile)]
        profile: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A trace profile name, checked (`a-z`, `0-9`, `-`; at most 32).
fn parse_profile(name: &str) -> Result<String, String> {
    match thaw_fs::trace::valid_profile(name) {
        true => Ok(name.to_string()),
        false => Err(format!(
            "{name:?}: a trace profile is 1-32 of a-z, 0-9 and '-', not starting with '-'"
        )),
    }
}

/// `thaw mount`: in the foreground, or through a background child when `--daemon`.
pub fn mount(
    global: &GlobalOptions,
    runtime: &tokio::runtime::Runtime,
    args: MountArgs,
) -> anyhow::Result<ExitCode> {
    match &args.action {
        Some(MountAction::Status { mountpoint, json }) => {
            return runtime.block_on(mount_status(global, mountpoint, *json));
        }
        Some(MountAction::Handoff { mountpoint }) => {
            return runtime.block_on(handoff(global, mountpoint));
        }
        None => {}
    }
    if args.daemon && !daemon::is_daemon_child() {
        return start_daemon(&global.runtime_dir(), &args);
    }
    if args.supervise && !supervisor::is_worker() {
        return runtime.block_on(supervise(global, &args));
    }
    runtime.block_on(mount_here(global, args))
}

/// `thaw mount --supervise`: the process holding the connection, with workers serving it.
async fn supervise(global: &GlobalOptions, args: &MountArgs) -> anyhow::Result<ExitCode> {
    let (name, dir) = args.target();
    let options = SupervisorOptions {
        session: SessionOptions {
            fs_name: format!("thaw:{name}"),
            dispatch_threads: args.threads,
            passthrough: !args.no_passthrough,
            runtime_dir: global.runtime_dir(),
            ..SessionOptions::new(dir)
        },
        worker_args: std::env::args_os().skip(1).collect(),
        log_path: log_path(&global.runtime_dir(), args),
    };
    let supervised = supervisor::run(options, daemon::report_ready)
        .await
        .with_context(|| format!("supervising the mount of {name} at {}", dir.display()))?;
    eprintln!(
        "thaw: the supervised mount ended ({} handoffs, {} workers restarted)",
        supervised.handoffs, supervised.restarts
    );
    Ok(ExitCode::SUCCESS)
}

/// `thaw mount handoff DIR`.
async fn handoff(global: &GlobalOptions, dir: &Path) -> anyhow::Result<ExitCode> {
    let status = daemon::handoff(&global.runtime_dir(), dir).await?;
    eprintln!(
        "thaw: {} is served by worker {} (pid {})",
        dir.display(),
        status.worker_generation,
        status.pid
    );
    Ok(ExitCode::SUCCESS)
}

/// `thaw mount status DIR`.
async fn mount_status(global: &GlobalOptions, dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let status = daemon::status(&global.runtime_dir(), dir).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "manifest:     {} (daemon pid {})",
        status.manifest, status.pid
    );
    if let Some(supervisor) = status.supervisor_pid {
        println!(
            "supervised:   by pid {supervisor}; worker {} of the connection",
            status.worker_generation
        );
    }
    println!(
        "fetched:      {} chunks from the store, {} from peers; {} prefetch hits",
        status.store_fetches, status.peer_fetches, status.prefetch_hits
    );
    println!("passthrough:  {}", status.passthrough);
    println!(
        "opens:        {} passthrough (the kernel reads the cache file), {} through thaw",
        status.passthrough_opens, status.fuse_opens
    );
    println!("trace:        {} chunks recorded", status.trace_entries);
    let hits = match status.first_reads {
        0 => 0.0,
        n => 100.0 * status.prefetch_hits as f64 / n as f64,
    };
    println!(
        "first reads:  {} chunks, {} of them prefetched ({hits:.0}%)",
        status.first_reads, status.prefetch_hits
    );
    match status.prefetch_sources.as_slice() {
        [] => println!("prefetch:     no trace applied"),
        sources => {
            for source in sources {
                println!("prefetch:     {source}");
            }
        }
    }
    println!("background:   {}", status.background_summary());
    Ok(ExitCode::SUCCESS)
}

async fn mount_here(global: &GlobalOptions, args: MountArgs) -> anyhow::Result<ExitCode> {
    let (name, dir) = args.target();
    let store = global.open_store()?;
    let (manifest, map) = store.open_manifest(name).await?;
    let peers = global.peer_tier().await?;
    let mut extra_metrics = ExtraMetrics::default();
    if let Some(peers) = &peers {
        let client_metrics = peers.metrics().clone();
        extra_metrics.add(move |registry| client_metrics.register(registry));
    }
    let tiers = thaw_client::connect::tiers_with(&global.config, &store, true, peers);
    let volume = Arc::new(
        Volume::new(
            manifest,
            map,
            tiers,
            Duration::from_secs(args.trace_window),
            Arc::new(FsMetrics::default()),
        )
        .with_trace_profile(args.trace_profile.clone())
        .with_background(
            Limits {
                workers: args.prefetch_concurrency.max(1),
                ..Limits::default()
            },
            OpenAhead::default(),
        ),
    );
    let fetch_all = match (args.fetch_all, args.fetch_all_below.as_u64()) {
        (true, _) => FetchAll::Always,
        (false, 0) => FetchAll::Never,
        (false, below) => FetchAll::NoTraceBelow(below),
    };
    let options = SessionOptions {
        fs_name: format!("thaw:{name}"),
        prefetch: !args.no_prefetch,
        tag: carry::tag_named(name).map(str::to_string),
        fetch_on_open: !args.no_fetch_on_open,
        fetch_all,
        save_trace: !args.no_trace,
        metrics_addr: args.metrics,
        extra_metrics,
        dispatch_threads: args.threads,
        runtime_dir: global.runtime_dir(),
        passthrough: !args.no_passthrough,
        ..SessionOptions::new(dir)
    };
    let summary = session::run(volume, store, options, |ready| {
        let mut line = format!("mounted {name} at {}", ready.mountpoint.display());
        if ready.prefetch_chunks > 0 {
            let from: Vec<&str> = ready
                .prefetch_sources
                .iter()
                .map(|s| s.relation.as_str())
                .filter(|relation| *relation != "own")
                .collect();
            line.push_str(&format!(" (prefetching {} chunks", ready.prefetch_chunks));
            if !from.is_empty() {
                line.push_str(&format!(" from the traces of: {}", from.join(", ")));
            }
            line.push(')');
        }
        if ready.fetch_all {
            line.push_str("; fetching the whole tree in the background");
        }
        if let Some(addr) = ready.metrics_addr {
            line.push_str(&format!("; metrics on http://{addr}/metrics"));
        }
        eprintln!("thaw: {line}");
        daemon::report_ready(&line);
    })
    .await
    .with_context(|| format!("mounting {name} at {}", dir.display()))?;
    match summary.trace_saved {
        Some((key, entries)) => eprintln!("thaw: unmounted; trace of {entries} chunks in {key}"),
        None => eprintln!("thaw: unmounted"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Starts this command again as a detached daemon, waits for it to report the mount ready.
fn start_daemon(runtime_dir: &Path, args: &MountArgs) -> anyhow::Result<ExitCode> {
    let log_path = log_path(runtime_dir, args);
    let started = daemon::start_detached(std::env::args_os().skip(1), &log_path)?;
    eprintln!(
        "thaw: {} (pid {}, log {})",
        started.line,
        started.pid,
        log_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The log file of a `--daemon` mount.
fn log_path(runtime_dir: &Path, args: &MountArgs) -> PathBuf {
    args.log_file
        .clone()
        .unwrap_or_else(|| control::runtime_file(runtime_dir, args.target().1, "log"))
}

/// `thaw umount`: asks the daemon (which saves its trace), else unmounts directly (a daemon
/// that died leaves a mount answering "Transport endpoint is not connected").
pub async fn umount(global: &GlobalOptions, args: UmountArgs) -> anyhow::Result<ExitCode> {
    let said = daemon::unmount(&global.runtime_dir(), &args.mountpoint, args.lazy).await?;
    eprintln!("thaw: {said}");
    Ok(ExitCode::SUCCESS)
}

/// `thaw trace save|show`.
pub async fn trace(global: &GlobalOptions, command: TraceCommand) -> anyhow::Result<ExitCode> {
    match command {
        TraceCommand::Save { mountpoint } => {
            let said = daemon::save_trace(&global.runtime_dir(), &mountpoint).await?;
            eprintln!("thaw: {said}");
        }
        TraceCommand::Show {
            name,
            profile,
            json,
        } => {
            let store = global.open_store()?;
            let id = store.resolve(&name).await?;
            let profile = profile.as_deref();
            let Some(trace) = TraceLog::new(&store, id, profile).load().await? else {
                return show_carried(&store, &name, &id, profile, json).await;
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&trace)?);
            } else {
                print_trace(&trace);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `thaw trace show` of a manifest with no trace of its own: the related traces a mount of it
/// would prefetch from, or an error when there are none.
async fn show_carried(
    store: &thaw_core::store::Store,
    name: &str,
    id: &thaw_core::ChunkId,
    profile: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let manifest = store.get_manifest(id).await?;
    let plan = carry::plan(store, &manifest, carry::tag_named(name), profile).await;
    if plan.sources.is_empty() {
        bail!("{name}: no access trace stored yet, and none of a related manifest (mount it and run the program once)");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&plan.sources)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "manifest {id}: no trace of its own; a mount prefetches {} chunks carried over from:",
        plan.chunks.len()
    );
    for source in &plan.sources {
        println!("  {}", source);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_trace(trace: &Trace) {
    println!(
        "manifest {}  runs {}  chunks {}",
        trace.manifest,
        trace.runs,
        trace.entries.len()
    );
    for (order, entry) in trace.entries.iter().enumerate() {
        println!(
            "{order:>6} {:>9.3}s {} {}",
            entry.at_ms as f64 / 1000.0,
            &entry.id[..16.min(entry.id.len())],
            entry.path
        );
    }
    if trace.history.is_empty() {
        return;
    }
    println!("runs (oldest first): first reads, prefetch hits, what they prefetched from");
    for run in &trace.history {
        println!("  {run}");
    }
}
