//! Restoring a container snapshot on any node, from an empty cache: every check first (the
//! record, CRIU and its version, the CPU's features, the runtime, the image still in the
//! store), then the image mounted lazily, the writable layer extracted, the snapshot's images
//! mounted lazily, and the runtime's restore. With lazy pages (the default where the kernel has
//! non-cooperative userfaultfd, and the snapshot holds no CUDA state) the container runs before
//! its memory has arrived: CRIU's lazy-pages daemon pages it in from the mounted images, on
//! fault first and then the rest, and the images mount prefetches in the order the previous
//! restore read them (its access trace).

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thaw_container::checkpoint::{Restore, Started};
use thaw_container::logs::RunLogs;
use thaw_container::rootfs::Overlay;
use thaw_container::runtime::{ContainerDir, Runtime};
use thaw_container::spec;
use thaw_core::manifest::Manifest;
use thaw_core::tier::TieredStore;
use thaw_fs::daemon::DaemonMount;
use thaw_indexer::extract::{copy_file_to, extract, ExtractOptions};
use thaw_snapshot::cuda::CudaCheckpoint;
use thaw_snapshot::lazy_pages::ServeOptions;
use thaw_snapshot::{host, Criu, LazyPages, PagesDaemon, INFO_FILE};

use crate::launch::{container_id, mount_root};
use crate::record::{ContainerRecord, IMAGES_DIR, RECORD_FILE, UPPER_DIR};
use crate::{snapshot_tag, Node, ReplicaError};

/// The trace profile of an image mounted under a restored container: it reads the pages of
/// the files its processes had mapped, not what a fresh start reads.
pub const RESTORE_TRACE_PROFILE: &str = "restore";

/// How long the runtime has to bring a restored container up.
const RESTORE_WAIT: Duration = Duration::from_secs(300);

/// What to restore and how.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// The snapshot's name.
    pub name: String,
    /// Page memory in lazily (when this host and the snapshot allow it).
    pub lazy_pages: bool,
    /// Which daemon pages it in [default: thaw's server].
    pub pages_daemon: PagesDaemon,
    /// OCI runtime name or path [default: runc, which restores with CRIU].
    pub runtime: Option<String>,
    /// Keep the container's directory after it ends.
    pub keep: bool,
    /// Where the restored container's output goes [default: our standard streams].
    pub logs: Option<RunLogs>,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            name: String::new(),
            lazy_pages: true,
            pages_daemon: PagesDaemon::Thaw,
            runtime: None,
            keep: false,
            logs: None,
        }
    }
}

/// Seconds each stage of a restore took, and how it ran.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RestoreReport {
    /// The snapshot.
    pub snapshot: String,
    /// Reading the record and checking this host.
    pub check_seconds: f64,
    /// Mounting the image and the snapshot's images, extracting the writable layer.
    pub mount_seconds: f64,
    /// The runtime's restore, until the container's process exists again.
    pub restore_seconds: f64,
    /// Whether memory is paged in lazily.
    pub lazy_pages: bool,
    /// Why not, when it was asked for and could not be.
    pub lazy_pages_refused: Option<String>,
    /// The restored container's first process (host pid).
    pub pid: u32,
}

/// A restored, running container. Fields drop in order: the container, the lazy-pages daemon,
/// the images mount, the overlay, the image mount, the directory.
pub struct Restored {
    container: Started,
    lazy: Option<LazyPages>,
    images: Option<DaemonMount>,
    /// What the images mount read, once it is gone.
    images_read: Sources,
    overlay: Overlay,
    image: DaemonMount,
    dir: ContainerDir,
    /// How the restore went.
    pub report: RestoreReport,
}

/// Bytes the mounts under a restored container fetched, by source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sources {
    /// From the object store.
    pub store: u64,
    /// From peer caches.
    pub peers: u64,
}

impl Sources {
    /// What `mount` has fetched so far (nothing known when its daemon does not answer).
    async fn of(mount: &DaemonMount) -> Sources {
        match mount.status().await {
            Ok(status) => Sources {
                store: status.store_bytes,
                peers: status.peer_bytes,
            },
            Err(e) => {
                tracing::debug!(error = %e, "mount status");
                Sources::default()
            }
        }
    }

    fn add(self, other: Sources) -> Sources {
        Sources {
            store: self.store + other.store,
            peers: self.peers + other.peers,
        }
    }
}

/// What the checks before a restore found.
struct Checked {
    record: ContainerRecord,
    runtime: Runtime,
    gpu: Option<CudaCheckpoint>,
    lazy_refused: Option<String>,
}

/// Reads snapshot `name`'s record; an error names what is not a container snapshot.
async fn read_record(
    node: &Node,
    tiers: &TieredStore,
    name: &str,
) -> Result<ContainerRecord, ReplicaError> {
    let refuse = |reason: String| ReplicaError::Refused {
        what: format!("snapshot {name}"),
        reason,
    };
    let (manifest, map) = node
        .store()
        .open_manifest(&snapshot_tag(name))
        .await
        .map_err(|e| refuse(format!("not in the store ({e})")))?;
    let Some(inode) = manifest.lookup(RECORD_FILE)? else {
        return Err(refuse(match manifest.lookup(INFO_FILE)? {
            Some(_) => format!(
                "it is a process snapshot, not a container's: `thaw snapshot restore {name}`"
            ),
            None => format!("it has no {RECORD_FILE}: not a thaw container snapshot"),
        }));
    };
    let mut bytes = Vec::new();
    copy_file_to(tiers, &manifest, &map, &inode, &mut bytes).await?;
    ContainerRecord::parse(&bytes, &format!("snapshot/{name}/{RECORD_FILE}"))
}

/// Everything that can refuse a restore, before anything runs.
async fn check(
    node: &Node,
    tiers: &TieredStore,
    options: &RestoreOptions,
) -> Result<(Checked, Criu), ReplicaError> {
    let name = &options.name;
    let record = read_record(node, tiers, name).await?;
    let criu = Criu::locate()?;
    record.host.check(name, &criu, &host::cpu_flags()?)?;
    let runtime = Runtime::find(Some(options.runtime.as_deref().unwrap_or("runc")))?;
    let refuse = |reason: String| ReplicaError::Refused {
        what: format!("snapshot {name}"),
        reason,
    };
    if let Some(reason) = runtime.checkpoint_unsupported() {
        return Err(refuse(reason));
    }
    if let Err(e) = node.store().get_manifest(&parse_id(&record)?).await {
        return Err(refuse(format!(
            "its image {} (manifest {}) is not in the store: index the image again ({e})",
            record.image, record.image_manifest
        )));
    }
    let gpu = match record.cuda_processes.is_empty() {
        true => None,
        false => Some(CudaCheckpoint::load()?),
    };
    let lazy_refused = match (options.lazy_pages, &gpu) {
        (false, _) => None,
        (true, Some(_)) => Some(
            "it holds CUDA state, which the driver restores from host memory all at once"
                .to_string(),
        ),
        (true, None) => criu.lazy_pages_unsupported(),
    };
    Ok((
        Checked {
            record,
            runtime,
            gpu,
            lazy_refused,
        },
        criu,
    ))
}

fn parse_id(record: &ContainerRecord) -> Result<thaw_core::ChunkId, ReplicaError> {
    record
        .image_manifest
        .parse()
        .map_err(|_| ReplicaError::BadRecord {
            origin: RECORD_FILE.into(),
            reason: format!("image_manifest {:?}", record.image_manifest),
        })
}

/// Restores snapshot `options.name` on this node; `stage` hears each step as it is done.
pub async fn restore(
    node: &Node,
    options: &RestoreOptions,
    stage: &dyn Fn(&str),
) -> Result<Restored, ReplicaError> {
    let started = Instant::now();
    let tiers = node.tiers().await?;
    let (checked, criu) = check(node, &tiers, options).await?;
    let Checked {
        record,
        runtime,
        gpu,
        lazy_refused,
    } = checked;
    let lazy_pages = options.lazy_pages && lazy_refused.is_none();
    if let Some(reason) = &lazy_refused {
        tracing::warn!(snapshot = %options.name, %reason, "restoring without lazy pages");
    }
    let check_seconds = started.elapsed().as_secs_f64();
    stage("checked");

    let id = container_id(&record.image_manifest);
    let dir = ContainerDir::create(node.containers_dir().join(&id), options.keep)?;
    let upper = extract_upper(node, &tiers, &options.name, dir.path());
    let images_dir = dir.path().join("snapshot");
    let images = node.mount(&snapshot_tag(&options.name), &images_dir, &[]);
    upper.await?;
    let images = images?;
    let (image, overlay) = mount_root(
        node,
        &record.image_manifest,
        dir.path(),
        &["--trace-profile", RESTORE_TRACE_PROFILE],
    )?;
    let bundle = spec::write_bundle(
        &dir.path().join("bundle"),
        &record.spec_with_root(overlay.dir()),
    )?;
    let mount_seconds = started.elapsed().as_secs_f64() - check_seconds;
    stage("mounted");

    let criu_images = images_dir.join(IMAGES_DIR);
    let work = dir.path().join("restore");
    let lazy = match lazy_pages {
        true => Some(match options.pages_daemon {
            PagesDaemon::Thaw => LazyPages::serve(&criu_images, &work, ServeOptions::from_env())?,
            PagesDaemon::Criu => criu.lazy_pages(&criu_images, &work)?,
        }),
        false => None,
    };
    let mut container = runtime.restore(&Restore {
        bundle: &bundle,
        id: &id,
        images: &criu_images,
        work: &work,
        lazy_pages,
        tcp_established: record.tcp_established,
        file_locks: record.file_locks,
        logs: options.logs.as_ref(),
    })?;
    let pid = restored_pid(&mut container, &work).await?;
    if let Some(gpu) = &gpu {
        gpu.resume(&host::host_pids(pid, &record.cuda_processes)?)?;
    }
    let restore_seconds = started.elapsed().as_secs_f64() - check_seconds - mount_seconds;
    stage("restored");
    // A full restore has read every image: the images mount can go now, its counters kept.
    let (images, images_read) = match lazy {
        Some(_) => (Some(images), Sources::default()),
        None => (None, Sources::of(&images).await),
    };
    Ok(Restored {
        container,
        images,
        images_read,
        lazy,
        overlay,
        image,
        dir,
        report: RestoreReport {
            snapshot: options.name.clone(),
            check_seconds,
            mount_seconds,
            restore_seconds,
            lazy_pages,
            lazy_pages_refused: lazy_refused,
            pid,
        },
    })
}

/// Extracts the snapshot's writable layer into `dir/upper`.
async fn extract_upper(
    node: &Node,
    tiers: &TieredStore,
    name: &str,
    dir: &Path,
) -> Result<(), ReplicaError> {
    let (manifest, map): (Manifest, _) = node.store().open_manifest(&snapshot_tag(name)).await?;
    let options = ExtractOptions {
        subtree: Some(UPPER_DIR.into()),
        ..ExtractOptions::default()
    };
    extract(
        tiers,
        &manifest,
        &map,
        &dir.join("upper"),
        &options,
        Arc::new(()),
    )
    .await?;
    Ok(())
}

/// Waits for the runtime to write the restored container's pid; an error with CRIU's log when
/// the restore fails.
async fn restored_pid(container: &mut Started, work: &Path) -> Result<u32, ReplicaError> {
    let deadline = Instant::now() + RESTORE_WAIT;
    loop {
        if let Some(pid) = container.pid() {
            return Ok(pid);
        }
        let exited = container
            .try_wait()
            .map_err(|e| ReplicaError::io(Path::new("runtime"), e))?;
        if exited.is_some() || Instant::now() > deadline {
            let log_path: PathBuf = work.join("restore.log");
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(thaw_container::ContainerError::Checkpoint {
                action: "restore",
                id: container.id().to_string(),
                output: format!(
                    "{} (CRIU's log {}):\n{}",
                    match exited {
                        Some(status) => format!("the runtime exited ({status})"),
                        None => format!("no container after {RESTORE_WAIT:?}"),
                    },
                    log_path.display(),
                    thaw_sys::process::log_errors(&log, 15)
                ),
            }
            .into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

impl Restored {
    /// The container's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The merged root it runs in.
    pub fn rootfs(&self) -> &Path {
        self.overlay.dir()
    }

    /// The image mount under it (its counters).
    pub fn image_mount(&self) -> &DaemonMount {
        &self.image
    }

    /// What the image and the snapshot's images have fetched so far, by source (the images'
    /// lazy mount counts until [`Restored::wait`] lets it go with the last page in).
    pub async fn fetched(&self) -> Sources {
        let images = match &self.images {
            Some(images) => Sources::of(images).await,
            None => self.images_read,
        };
        Sources::of(&self.image).await.add(images)
    }

    /// Waits for the container to exit, passing SIGTERM and SIGINT on to it. While memory
    /// pages in, the lazy-pages daemon is watched: once it has copied everything the images
    /// mount goes; if it fails the container is killed (it would be missing memory) and the
    /// error names the daemon's log.
    pub async fn wait(
        &mut self,
        signals: &mut crate::launch::Signals,
    ) -> Result<ExitStatus, ReplicaError> {
        let Restored {
            container,
            lazy,
            images,
            ..
        } = self;
        crate::launch::wait_passing_signals(container, signals, || {
            let Some(daemon) = lazy.as_mut() else {
                return Ok(());
            };
            if daemon.finished()? {
                tracing::info!("every page of the restored container is in");
                *lazy = None;
                *images = None;
            }
            Ok(())
        })
        .await
    }
}
