//! `thaw snapshot create|restore|ls|rm`: CRIU snapshots of warmed processes, stored as manifests
//! tagged `snapshot/NAME`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use thaw_core::store::Store;
use thaw_core::tier::TieredStore;
use thaw_indexer::extract::{copy_file_to, extract, ExtractOptions};
use thaw_indexer::{index_tree, IndexOptions, SourceKind};
use thaw_snapshot::cuda::{self, CudaCheckpoint};
use thaw_snapshot::{host, Criu, DumpRequest, RestoreRequest, SnapshotInfo, INFO_FILE};

use super::daemon_mount::DaemonMount;
use super::progress::Bar;
use super::GlobalOptions;

/// Tags of snapshots live under this prefix.
pub const SNAPSHOT_TAG_PREFIX: &str = "snapshot/";

/// `thaw snapshot ...`.
#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Dump a running process tree with CRIU and store it, tagged `snapshot/NAME`.
    Create(CreateArgs),
    /// Restore a stored snapshot, detached; prints the restored pid and the time it took.
    Restore(RestoreArgs),
    /// List the stored snapshots.
    Ls(LsArgs),
    /// Remove a snapshot's tag (its chunks stay while other tags use them).
    Rm(RmArgs),
}

/// `thaw snapshot create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The root of the process tree to dump.
    #[arg(long)]
    pid: u32,
    /// The snapshot's name (stored as tag `snapshot/NAME`).
    #[arg(long)]
    tag: String,
    /// Keep the process running after the dump (else CRIU stops it).
    #[arg(long)]
    leave_running: bool,
    /// Dump established TCP connections too (a restore then needs the same addresses).
    #[arg(long)]
    tcp_established: bool,
    /// Dump the file locks (flock, POSIX) the tree holds; a restore takes them again. Only safe
    /// when no process outside the tree uses the locked files.
    #[arg(long)]
    file_locks: bool,
    /// Where the images are written before they are stored [default: the system temp dir].
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

/// `thaw snapshot restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The snapshot's name.
    name: String,
    /// Read the images through a lazy mount instead of fetching them all first.
    #[arg(long)]
    lazy: bool,
    /// Where images (when not lazy) and CRIU's log go [default: the system temp dir].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `thaw snapshot ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `thaw snapshot rm`.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// The snapshot's name.
    name: String,
}

/// Runs a `thaw snapshot` command.
pub fn run(
    global: &GlobalOptions,
    runtime: &tokio::runtime::Runtime,
    cmd: SnapshotCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        SnapshotCommand::Create(args) => create(global, runtime, args),
        SnapshotCommand::Restore(args) => runtime.block_on(restore(global, args)),
        SnapshotCommand::Ls(args) => runtime.block_on(ls(global, args)),
        SnapshotCommand::Rm(args) => runtime.block_on(async {
            let store = global.open_store()?;
            store
                .delete_tag(&tag_of(&args.name))
                .await
                .with_context(|| format!("removing snapshot {}", args.name))?;
            eprintln!("thaw: removed snapshot {}", args.name);
            Ok(ExitCode::SUCCESS)
        }),
    }
}

fn tag_of(name: &str) -> String {
    format!("{SNAPSHOT_TAG_PREFIX}{name}")
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(parent: Option<&Path>, what: &str) -> anyhow::Result<Self> {
        let parent = parent
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = parent.join(format!("thaw-{what}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn create(
    global: &GlobalOptions,
    runtime: &tokio::runtime::Runtime,
    args: CreateArgs,
) -> anyhow::Result<ExitCode> {
    let tag = tag_of(&args.tag);
    thaw_core::store::validate_tag(&tag)?;
    let store = global.open_store()?;
    let criu = Criu::locate()?;
    let cuda_pids = cuda::cuda_processes(args.pid)?;
    let gpu = match cuda_pids.is_empty() {
        true => None,
        false => Some(
            CudaCheckpoint::load()
                .with_context(|| format!("process {} uses CUDA (pids {cuda_pids:?})", args.pid))?,
        ),
    };
    let info = SnapshotInfo::capture(
        args.pid,
        &criu,
        args.leave_running,
        args.tcp_established,
        args.file_locks,
        cuda_pids.clone(),
    )?;
    let scratch = Scratch::new(args.work_dir.as_deref(), "snapshot")?;
    let images = scratch.0.join("images");
    let started = Instant::now();
    if let Some(gpu) = &gpu {
        gpu.suspend(&cuda_pids)
            .context("checkpointing the GPU state into host memory")?;
    }
    let dumped = criu
        .dump(&DumpRequest {
            pid: args.pid,
            images: images.clone(),
            work_dir: scratch.0.join("criu"),
            leave_running: args.leave_running,
            tcp_established: args.tcp_established,
            shell_job: info.shell_job,
            file_locks: args.file_locks,
        })
        .with_context(|| format!("dumping process {}", args.pid));
    // A process left running (or not dumped at all) gets its GPU back.
    if let (Some(gpu), true) = (&gpu, args.leave_running || dumped.is_err()) {
        gpu.resume(&cuda_pids)
            .context("giving the process its GPU state back")?;
    }
    dumped?;
    let dumped = started.elapsed().as_secs_f64();
    info.write(&images)?;
    let stored_at = Instant::now();
    let bar = Bar::new(global.quiet);
    let report = index_tree(
        &store,
        runtime.handle(),
        &images,
        SourceKind::Directory,
        Some(&tag),
        &IndexOptions::default(),
        &bar,
    )
    .with_context(|| format!("storing the images of process {}", args.pid))?;
    eprintln!(
        "thaw: snapshot {} of pid {}: {} of images, {} new chunks; dump {dumped:.2}s, store {:.2}s",
        args.tag,
        args.pid,
        bytesize::ByteSize(report.bytes_read),
        report.writes.new_chunks,
        stored_at.elapsed().as_secs_f64()
    );
    println!("{}", report.manifest.to_hex());
    Ok(ExitCode::SUCCESS)
}

/// The snapshot record inside the manifest `tag` names.
async fn read_info(
    tiers: &TieredStore,
    store: &Store,
    name: &str,
) -> anyhow::Result<(
    thaw_core::manifest::Manifest,
    thaw_core::chunk_map::ChunkMap,
    SnapshotInfo,
)> {
    let (manifest, map) = store
        .open_manifest(&tag_of(name))
        .await
        .with_context(|| format!("no snapshot named {name}"))?;
    let Some(inode) = manifest.lookup(INFO_FILE)? else {
        bail!("{name} is not a thaw snapshot: it has no {INFO_FILE}");
    };
    let mut bytes = Vec::new();
    copy_file_to(tiers, &manifest, &map, &inode, &mut bytes)
        .await
        .with_context(|| format!("reading {INFO_FILE} of snapshot {name}"))?;
    let info = SnapshotInfo::parse(&bytes, &format!("{name}/{INFO_FILE}"))?;
    Ok((manifest, map, info))
}

/// Uncompressed bytes of the chunks a restore fetched from the object store and from peers.
#[derive(Clone, Copy, Debug, Default)]
struct FetchedBytes {
    store: u64,
    peers: u64,
}

impl FetchedBytes {
    fn of(tiers: &TieredStore) -> Self {
        let counters = tiers.counters();
        FetchedBytes {
            store: counters
                .origin_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
            peers: counters
                .peer_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

async fn restore(global: &GlobalOptions, args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let criu = Criu::locate()?;
    let store = global.open_store()?;
    let tiers = global.tiers(&store, true).await?;
    let (manifest, map, info) = read_info(&tiers, &store, &args.name).await?;
    info.check_host(&args.name, &criu, &host::cpu_flags()?)?;
    let gpu = match info.cuda_pids.is_empty() {
        true => None,
        false => Some(
            CudaCheckpoint::load()
                .with_context(|| format!("snapshot {} holds CUDA processes", args.name))?,
        ),
    };
    let scratch = Scratch::new(args.work_dir.as_deref(), "restore")?;
    let images = scratch.0.join("images");
    let mut lazy_mount = None;
    let mut fetched_bytes = FetchedBytes::of(&tiers);
    if args.lazy {
        // The mount daemon opens the disk cache itself: let go of it first.
        drop(tiers);
        // The mount records what CRIU reads; the next lazy restore prefetches it.
        lazy_mount = Some(DaemonMount::start(global, &tag_of(&args.name), &images)?);
    } else {
        let options = ExtractOptions {
            restore_owners: false,
            ..ExtractOptions::default()
        };
        extract(&tiers, &manifest, &map, &images, &options, Arc::new(()))
            .await
            .with_context(|| format!("fetching the images of snapshot {}", args.name))?;
        fetched_bytes = FetchedBytes::of(&tiers);
    }
    let fetched = started.elapsed().as_secs_f64();
    let pid = criu
        .restore(&RestoreRequest {
            images: images.clone(),
            work_dir: scratch.0.join("criu"),
            tcp_established: info.tcp_established,
            shell_job: info.shell_job,
            file_locks: info.file_locks,
        })
        .with_context(|| format!("restoring snapshot {}", args.name));
    if let Some(status) = match &lazy_mount {
        Some(mount) => mount.status().await.ok(),
        None => None,
    } {
        fetched_bytes.store += status.store_bytes;
        fetched_bytes.peers += status.peer_bytes;
    }
    drop(lazy_mount);
    let pid = pid?;
    if let Some(gpu) = &gpu {
        gpu.resume(&info.cuda_pids)
            .context("restoring the GPU state of the restored processes")?;
    }
    let total = started.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "snapshot": args.name,
                "pid": pid,
                "seconds": total,
                "fetch_seconds": fetched,
                "restore_seconds": total - fetched,
                "lazy": args.lazy,
                "store_bytes": fetched_bytes.store,
                "peer_bytes": fetched_bytes.peers,
            })
        );
    } else {
        println!("{pid}");
        eprintln!(
            "thaw: restored {} as pid {pid} in {total:.2}s (images {fetched:.2}s{}, criu {:.2}s)",
            args.name,
            if args.lazy { ", lazy mount" } else { "" },
            total - fetched
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn ls(global: &GlobalOptions, args: LsArgs) -> anyhow::Result<ExitCode> {
    let store = global.open_store()?;
    let tiers = global.tiers(&store, true).await?;
    let mut rows = Vec::new();
    for (tag, manifest_id) in store.list_tags().await? {
        let Some(name) = tag.strip_prefix(SNAPSHOT_TAG_PREFIX) else {
            continue;
        };
        let (manifest, _, info) = read_info(&tiers, &store, name).await?;
        rows.push(serde_json::json!({
            "name": name,
            "manifest": manifest_id.to_hex(),
            "pid": info.pid,
            "created_unix": info.created_unix,
            "exe": info.exe,
            "cmdline": info.cmdline.join(" "),
            "bytes": manifest.chunks()?.iter().map(|c| u64::from(c.raw_len)).sum::<u64>(),
            "criu": info.criu_version,
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{:<24} {:>8} {:>10} {:>6}  COMMAND",
            "NAME", "PID", "SIZE", "CRIU"
        );
        for r in &rows {
            println!(
                "{:<24} {:>8} {:>10} {:>6}  {}",
                r["name"].as_str().unwrap_or_default(),
                r["pid"],
                bytesize::ByteSize(r["bytes"].as_u64().unwrap_or_default()).to_string(),
                r["criu"].as_str().unwrap_or_default(),
                r["cmdline"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
