//! `thaw snapshot create|restore|ls|rm`: CRIU snapshots of warmed processes, stored as manifests
//! tagged `snapshot/NAME`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use thaw_core::store::Store;
use thaw_core::tier::TieredStore;
use thaw_fs::daemon::DaemonMount;
use thaw_indexer::extract::{copy_file_to, extract, ExtractOptions};
use thaw_indexer::{index_tree, IndexOptions, SourceKind};
use thaw_replica::record::{ContainerRecord, RECORD_FILE};
use thaw_replica::SNAPSHOT_TAG_PREFIX;
use thaw_snapshot::lifecycle::{self, CreateOptions, StoreError, Stored};
use thaw_snapshot::{
    Criu, FetchedBytes, FetchedImages, ImageStore, SnapshotInfo, SnapshotSummary, INFO_FILE,
};

use super::progress::Bar;
use super::GlobalOptions;

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
        SnapshotCommand::Create(args) => runtime.block_on(create(global, args)),
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
    thaw_replica::snapshot_tag(name)
}

/// A scratch directory (removed on drop) in `parent`, else the system temp dir.
fn scratch(parent: Option<&Path>, what: &str) -> anyhow::Result<tempfile::TempDir> {
    let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
    tempfile::Builder::new()
        .prefix(&format!("thaw-{what}-"))
        .tempdir_in(&parent)
        .with_context(|| format!("creating a scratch directory in {}", parent.display()))
}

/// Snapshot image folders kept in thaw's store as manifests tagged `snapshot/NAME`.
struct StoreFolders<'a> {
    global: &'a GlobalOptions,
    store: Store,
}

/// A snapshot's images for one restore: extracted (the tiers' counters say what that fetched)
/// or lazily mounted (the mount's counters, asked before it goes).
enum Images {
    Extracted(FetchedBytes),
    Mounted(DaemonMount),
}

impl FetchedImages for Images {
    async fn fetched(&self) -> FetchedBytes {
        match self {
            Images::Extracted(bytes) => *bytes,
            Images::Mounted(mount) => match mount.status().await {
                Ok(status) => FetchedBytes {
                    store: status.store_bytes,
                    peers: status.peer_bytes,
                },
                Err(_) => FetchedBytes::default(),
            },
        }
    }
}

fn fetched_by(tiers: &TieredStore) -> FetchedBytes {
    let counters = tiers.counters();
    let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
    FetchedBytes {
        store: load(&counters.origin_bytes),
        peers: load(&counters.peer_bytes),
    }
}

impl ImageStore for StoreFolders<'_> {
    type Images = Images;

    async fn put(&self, name: &str, images: &Path) -> Result<Stored, StoreError> {
        let tag = tag_of(name);
        let (store, images) = (self.store.clone(), images.to_path_buf());
        let bar = Bar::new(self.global.quiet);
        let handle = tokio::runtime::Handle::current();
        let report = tokio::task::spawn_blocking(move || {
            let options = IndexOptions::default();
            index_tree(
                &store,
                &handle,
                &images,
                SourceKind::Directory,
                Some(&tag),
                &options,
                &bar,
            )
        })
        .await??;
        Ok(Stored {
            id: report.manifest.to_hex(),
            bytes: report.bytes_read,
            new_chunks: report.writes.new_chunks,
        })
    }

    async fn info(&self, name: &str) -> Result<SnapshotInfo, StoreError> {
        let tiers = self.global.tiers(&self.store, true).await?;
        Ok(read_info(&tiers, &self.store, name).await?.2)
    }

    async fn get(&self, name: &str, dir: &Path, lazy: bool) -> Result<Images, StoreError> {
        if lazy {
            // The mount records what CRIU reads; the next lazy restore prefetches it.
            return Ok(Images::Mounted(self.global.start_mount(
                &tag_of(name),
                dir,
                &[],
            )?));
        }
        let tiers = self.global.tiers(&self.store, true).await?;
        let (manifest, map) = self.store.open_manifest(&tag_of(name)).await?;
        let options = ExtractOptions {
            restore_owners: false,
            ..ExtractOptions::default()
        };
        extract(&tiers, &manifest, &map, dir, &options, Arc::new(()))
            .await
            .with_context(|| format!("fetching the images of snapshot {name}"))?;
        Ok(Images::Extracted(fetched_by(&tiers)))
    }
}

async fn create(global: &GlobalOptions, args: CreateArgs) -> anyhow::Result<ExitCode> {
    thaw_core::store::validate_tag(&tag_of(&args.tag))?;
    let folders = StoreFolders {
        global,
        store: global.open_store()?,
    };
    let criu = Criu::locate()?;
    let scratch = scratch(args.work_dir.as_deref(), "snapshot")?;
    let options = CreateOptions {
        pid: args.pid,
        leave_running: args.leave_running,
        tcp_established: args.tcp_established,
        file_locks: args.file_locks,
        work_dir: scratch.path().to_path_buf(),
    };
    let created = lifecycle::create(&folders, &criu, &args.tag, &options).await?;
    eprintln!(
        "thaw: snapshot {} of pid {}: {} of images, {} new chunks; dump {:.2}s, store {:.2}s",
        args.tag,
        args.pid,
        bytesize::ByteSize(created.stored.bytes),
        created.stored.new_chunks,
        created.dump_seconds,
        created.store_seconds
    );
    println!("{}", created.stored.id);
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
        if manifest.lookup(RECORD_FILE)?.is_some() {
            bail!("it is a container snapshot: `thaw run --from-snapshot {name}`");
        }
        bail!("{name} is not a thaw snapshot: it has no {INFO_FILE}");
    };
    let mut bytes = Vec::new();
    copy_file_to(tiers, &manifest, &map, &inode, &mut bytes)
        .await
        .with_context(|| format!("reading {INFO_FILE} of snapshot {name}"))?;
    let info = SnapshotInfo::parse(&bytes, &format!("{name}/{INFO_FILE}"))?;
    Ok((manifest, map, info))
}

async fn restore(global: &GlobalOptions, args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let criu = Criu::locate()?;
    let folders = StoreFolders {
        global,
        store: global.open_store()?,
    };
    let scratch = scratch(args.work_dir.as_deref(), "restore")?;
    let report = lifecycle::restore(&folders, &criu, &args.name, args.lazy, scratch.path()).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.pid);
        eprintln!(
            "thaw: restored {} as pid {} in {:.2}s (images {:.2}s{}, criu {:.2}s)",
            args.name,
            report.pid,
            report.seconds,
            report.fetch_seconds,
            if args.lazy { ", lazy mount" } else { "" },
            report.restore_seconds
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
        let (manifest, map) = store.open_manifest(&tag).await?;
        let bytes = manifest
            .chunks()?
            .iter()
            .map(|c| u64::from(c.raw_len))
            .sum();
        let id = manifest_id.to_hex();
        rows.push(match manifest.lookup(RECORD_FILE)? {
            Some(inode) => {
                let mut text = Vec::new();
                copy_file_to(&tiers, &manifest, &map, &inode, &mut text).await?;
                let record = ContainerRecord::parse(&text, &format!("{tag}/{RECORD_FILE}"))?;
                record.summary(name, id, bytes)
            }
            None => {
                SnapshotSummary::new(name, id, bytes, &read_info(&tiers, &store, name).await?.2)
            }
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:>8} {:>10} {:>6}  COMMAND",
        "NAME", "PID", "SIZE", "CRIU"
    );
    for r in &rows {
        let size = bytesize::ByteSize(r.bytes).to_string();
        let (pid, command) = match &r.image {
            Some(image) => (
                "-".to_string(),
                format!("container of {image}: {}", r.cmdline),
            ),
            None => (r.pid.to_string(), r.cmdline.clone()),
        };
        println!(
            "{:<24} {pid:>8} {size:>10} {:>6}  {command}",
            r.name, r.criu
        );
    }
    Ok(ExitCode::SUCCESS)
}
