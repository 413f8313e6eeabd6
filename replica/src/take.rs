//! Snapshotting a container once it is ready: the container started from its image, readiness
//! awaited (a file in its root, or a URL), its CUDA processes locked and checkpointed through the
//! driver, the runtime's checkpoint (CRIU inside the container's namespaces), and the CRIU
//! images, the overlay's upper directory and the [`ContainerRecord`] indexed into the store as
//! one manifest tagged `snapshot/NAME` (page images are chunked like any file, so two snapshots
//! of the same server share most of their chunks).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thaw_container::checkpoint::{Checkpoint, Started};
use thaw_container::readiness::{Liveness, Probe, Readiness};
use thaw_indexer::{index_tree, IndexOptions, Progress, SourceKind};
use thaw_snapshot::cuda::{self, CudaCheckpoint};
use thaw_snapshot::{host, Criu, HostFacts};

use crate::launch::Prepared;
use crate::record::{ContainerRecord, IMAGES_DIR, RECORD_FORMAT, UPPER_DIR};
use crate::{snapshot_tag, Node, ReplicaError};

/// What to snapshot when.
#[derive(Clone, Debug)]
pub struct TakeOptions {
    /// The snapshot's name (tag `snapshot/NAME`).
    pub name: String,
    /// When the container is ready: a file inside it or a URL.
    pub readiness: Readiness,
    /// How long it may take to be ready.
    pub timeout: Duration,
    /// Keep the container running after the dump.
    pub leave_running: bool,
    /// Dump established TCP connections too.
    pub tcp_established: bool,
    /// Dump the file locks its processes hold.
    pub file_locks: bool,
}

/// A snapshot taken.
#[derive(Clone, Debug)]
pub struct Taken {
    /// The manifest it is stored as (hex).
    pub manifest: String,
    /// Bytes stored (images, upper layer, record).
    pub bytes: u64,
    /// Chunks the store did not hold before.
    pub new_chunks: u64,
    /// Start → ready.
    pub ready_seconds: f64,
    /// The checkpoint (and GPU state) took.
    pub dump_seconds: f64,
    /// Storing it took.
    pub store_seconds: f64,
}

/// Why `options` cannot be snapshotted with `prepared`'s runtime, checked before it starts.
fn refuse_early(prepared: &Prepared, options: &TakeOptions) -> Result<Criu, ReplicaError> {
    let refuse = |reason: String| ReplicaError::Refused {
        what: format!("snapshot {}", options.name),
        reason,
    };
    thaw_core::store::validate_tag(&snapshot_tag(&options.name))?;
    if options.readiness == Readiness::Exit {
        return Err(refuse(
            "a container is snapshotted when ready: give --ready-file or --ready-url".into(),
        ));
    }
    if let Some(reason) = prepared.runtime.checkpoint_unsupported() {
        return Err(refuse(reason));
    }
    Ok(Criu::locate()?)
}

/// Waits until the container's first process exists; its host pid.
async fn first_process(started: &mut Started, deadline: Instant) -> Result<u32, ReplicaError> {
    loop {
        if let Some(pid) = started.pid() {
            return Ok(pid);
        }
        if let Some(status) = started
            .try_wait()
            .map_err(|e| ReplicaError::io(Path::new("runtime"), e))?
        {
            return Err(ReplicaError::Refused {
                what: format!("container {}", started.id()),
                reason: format!("the runtime exited ({status}) before the container ran"),
            });
        }
        if Instant::now() > deadline {
            return Err(ReplicaError::Refused {
                what: format!("container {}", started.id()),
                reason: "the runtime did not start it in time".into(),
            });
        }
        tokio::time::sleep(thaw_container::readiness::POLL).await;
    }
}

/// Starts `prepared`, waits until it is ready, checkpoints it and stores the snapshot. Returns
/// the container (still running with `leave_running`, else ended) and what was stored.
pub async fn take(
    node: &Node,
    prepared: &Prepared,
    options: &TakeOptions,
    progress: Arc<dyn Progress>,
) -> Result<(Started, Taken), ReplicaError> {
    let criu = refuse_early(prepared, options)?;
    let probe = Probe::new(options.readiness.clone())?;
    let started_at = Instant::now();
    let mut started = prepared.start()?;
    let pid = first_process(&mut started, started_at + options.timeout).await?;
    // Files are looked up in the container's own root (its /tmp is its own tmpfs).
    let root = std::path::PathBuf::from(format!("/proc/{pid}/root"));
    let left = options.timeout.saturating_sub(started_at.elapsed());
    let watch = || {
        Ok(match started.try_wait()? {
            Some(status) => Liveness::Exited(status),
            None => Liveness::Running,
        })
    };
    probe
        .wait("the container", &root, left, watch, || {
            "(its output is above)".into()
        })
        .await?;
    let ready_seconds = started_at.elapsed().as_secs_f64();
    tracing::info!(ready_seconds, "container ready, checkpointing");

    let tree = prepared.dir().join("snapshot");
    let _ = std::fs::remove_dir_all(&tree);
    let dumped_at = Instant::now();
    let record = dump(prepared, &started, &criu, options, pid, &tree).await?;
    if !options.leave_running {
        started.wait().await?;
    }
    let dump_seconds = dumped_at.elapsed().as_secs_f64();
    let upper = tree.join(UPPER_DIR);
    thaw_sys::tree::copy_tree(&prepared.upper(), &upper)
        .await
        .map_err(|e| ReplicaError::io(&upper, e))?;
    record.write(&tree)?;

    let stored_at = Instant::now();
    let store = node.store().clone();
    let tag = snapshot_tag(&options.name);
    let handle = tokio::runtime::Handle::current();
    let report = tokio::task::spawn_blocking(move || {
        index_tree(
            &store,
            &handle,
            &tree,
            SourceKind::Directory,
            Some(&tag),
            &IndexOptions::default(),
            progress.as_ref(),
        )
    })
    .await
    .map_err(|e| ReplicaError::io(Path::new("index task"), std::io::Error::other(e)))??;
    Ok((
        started,
        Taken {
            manifest: report.manifest.to_hex(),
            bytes: report.bytes_read,
            new_chunks: report.writes.new_chunks,
            ready_seconds,
            dump_seconds,
            store_seconds: stored_at.elapsed().as_secs_f64(),
        },
    ))
}

/// The checkpoint itself, with the container's CUDA processes (if any) suspended around it;
/// the images go to `tree/criu`. Returns the record.
async fn dump(
    prepared: &Prepared,
    started: &Started,
    criu: &Criu,
    options: &TakeOptions,
    pid: u32,
    tree: &Path,
) -> Result<ContainerRecord, ReplicaError> {
    let cuda_pids = cuda::cuda_processes(pid)?;
    let gpu = match cuda_pids.is_empty() {
        true => None,
        false => Some(CudaCheckpoint::load()?),
    };
    let cuda_processes = cuda_pids
        .iter()
        .map(|p| host::namespace_pid(*p))
        .collect::<Result<Vec<_>, _>>()?;
    let record = ContainerRecord {
        format: RECORD_FORMAT.into(),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
        image: prepared.image.0.clone(),
        image_manifest: prepared.image.1.clone(),
        spec: prepared.spec.clone(),
        runtime: prepared.runtime.version(),
        host: HostFacts::capture(criu)?,
        leave_running: options.leave_running,
        tcp_established: options.tcp_established,
        file_locks: options.file_locks,
        cuda_processes,
    };
    if let Some(gpu) = &gpu {
        gpu.suspend(&cuda_pids)?;
    }
    let request = Checkpoint {
        images: &tree.join(IMAGES_DIR),
        work: &prepared.dir().join("checkpoint"),
        leave_running: options.leave_running,
        tcp_established: options.tcp_established,
        file_locks: options.file_locks,
    };
    let dumped = prepared.runtime.checkpoint(started.id(), &request).await;
    // A container left running (or not dumped at all) gets its GPU back.
    if let (Some(gpu), true) = (&gpu, options.leave_running || dumped.is_err()) {
        gpu.resume(&cuda_pids)?;
    }
    dumped?;
    Ok(record)
}
