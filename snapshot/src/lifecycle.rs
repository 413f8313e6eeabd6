//! A snapshot from start to end: taking one (CUDA lock and checkpoint, the CRIU dump, the GPU
//! state given back when the process stays or the dump fails, the record written, the images
//! stored) and restoring one (the host checked against the record, the images fetched or
//! mounted, the CRIU restore, the GPU state restored).
//!
//! Where image folders are kept is the caller's: it implements [`ImageStore`] (the `thaw`
//! binary does so over its content-addressed store), so this crate needs no store.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::criu::{Criu, DumpRequest, RestoreRequest};
use crate::cuda::{self, CudaCheckpoint};
use crate::info::SnapshotInfo;
use crate::{host, Result, SnapshotError};

/// A boxed error from an [`ImageStore`].
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// Bytes a restore fetched for its images (uncompressed, from the object store and from peers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchedBytes {
    /// From the object store.
    pub store: u64,
    /// From peer caches.
    pub peers: u64,
}

/// Images made readable at a directory for one restore; dropping them lets go (unmounts).
pub trait FetchedImages {
    /// What getting them has fetched so far (a lazy mount keeps fetching while CRIU reads).
    fn fetched(&self) -> impl std::future::Future<Output = FetchedBytes>;
}

/// Where snapshot image folders are kept.
pub trait ImageStore {
    /// The handle [`ImageStore::get`] returns.
    type Images: FetchedImages;

    /// Keeps the folder `images` (the CRIU images and [`crate::INFO_FILE`]) as snapshot `name`;
    /// returns how the store names it (a manifest id) and its size in bytes.
    fn put(
        &self,
        name: &str,
        images: &Path,
    ) -> impl std::future::Future<Output = std::result::Result<Stored, StoreError>>;

    /// The record stored with snapshot `name`.
    fn info(
        &self,
        name: &str,
    ) -> impl std::future::Future<Output = std::result::Result<SnapshotInfo, StoreError>>;

    /// Makes the images of snapshot `name` readable at `dir`: all fetched first, or (`lazy`)
    /// mounted so CRIU reads them on demand.
    fn get(
        &self,
        name: &str,
        dir: &Path,
        lazy: bool,
    ) -> impl std::future::Future<Output = std::result::Result<Self::Images, StoreError>>;
}

/// How [`ImageStore::put`] stored a snapshot.
#[derive(Clone, Debug)]
pub struct Stored {
    /// The store's name for it (a manifest id).
    pub id: String,
    /// Bytes of images read.
    pub bytes: u64,
    /// Chunks the store did not hold yet.
    pub new_chunks: u64,
}

/// What to dump and how.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// The root of the process tree.
    pub pid: u32,
    /// Keep the process running after the dump (else CRIU stops it).
    pub leave_running: bool,
    /// Dump established TCP connections (a restore then needs the same addresses).
    pub tcp_established: bool,
    /// Dump the file locks the tree holds.
    pub file_locks: bool,
    /// Where the images are written before they are stored.
    pub work_dir: PathBuf,
}

/// A snapshot taken.
#[derive(Clone, Debug)]
pub struct Created {
    /// How the store keeps it.
    pub stored: Stored,
    /// Seconds the dump took (GPU checkpoint included).
    pub dump_seconds: f64,
    /// Seconds storing the images took.
    pub store_seconds: f64,
}

/// What `thaw snapshot restore --json` prints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RestoreReport {
    /// The snapshot's name.
    pub snapshot: String,
    /// The restored tree's root pid.
    pub pid: u32,
    /// Demand → restored.
    pub seconds: f64,
    /// Getting the images (or mounting them, when lazy).
    pub fetch_seconds: f64,
    /// The CRIU restore (and the GPU state).
    pub restore_seconds: f64,
    /// Whether the images were read through a lazy mount.
    pub lazy: bool,
    /// Uncompressed bytes fetched from the object store.
    pub store_bytes: u64,
    /// Uncompressed bytes fetched from peers.
    pub peer_bytes: u64,
}

fn store_error(name: &str) -> impl FnOnce(StoreError) -> SnapshotError + '_ {
    move |source| SnapshotError::Images {
        name: name.to_string(),
        source,
    }
}

/// The CUDA checkpoint API, when any of `pids` uses CUDA; `what` says whose they are.
fn gpu_for(pids: &[u32], what: impl FnOnce() -> String) -> Result<Option<CudaCheckpoint>> {
    if pids.is_empty() {
        return Ok(None);
    }
    CudaCheckpoint::load().map(Some).map_err(|e| match e {
        SnapshotError::CudaUnavailable(reason) => {
            SnapshotError::CudaUnavailable(format!("{} (pids {pids:?}): {reason}", what()))
        }
        other => other,
    })
}

/// Dumps the process tree `options.pid` with `criu` and keeps its images in `store` as `name`.
pub async fn create<S: ImageStore>(
    store: &S,
    criu: &Criu,
    name: &str,
    options: &CreateOptions,
) -> Result<Created> {
    let pid = options.pid;
    let cuda_pids = cuda::cuda_processes(pid)?;
    let gpu = gpu_for(&cuda_pids, || format!("process {pid} uses CUDA"))?;
    let info = SnapshotInfo::capture(
        pid,
        criu,
        options.leave_running,
        options.tcp_established,
        options.file_locks,
        cuda_pids.clone(),
    )?;
    let images = options.work_dir.join("images");
    let started = Instant::now();
    if let Some(gpu) = &gpu {
        gpu.suspend(&cuda_pids)?;
    }
    let dumped = criu.dump(&DumpRequest {
        pid,
        images: images.clone(),
        work_dir: options.work_dir.join("criu"),
        leave_running: options.leave_running,
        tcp_established: options.tcp_established,
        shell_job: info.shell_job,
        file_locks: options.file_locks,
    });
    // A process left running (or not dumped at all) gets its GPU back.
    if let (Some(gpu), true) = (&gpu, options.leave_running || dumped.is_err()) {
        gpu.resume(&cuda_pids)?;
    }
    dumped?;
    let dump_seconds = started.elapsed().as_secs_f64();
    info.write(&images)?;
    let stored_at = Instant::now();
    let stored = store.put(name, &images).await.map_err(store_error(name))?;
    Ok(Created {
        stored,
        dump_seconds,
        store_seconds: stored_at.elapsed().as_secs_f64(),
    })
}

/// Restores snapshot `name` from `store`, detached, with its images at `work_dir/images` and
/// CRIU's files in `work_dir/criu`.
pub async fn restore<S: ImageStore>(
    store: &S,
    criu: &Criu,
    name: &str,
    lazy: bool,
    work_dir: &Path,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let info = store.info(name).await.map_err(store_error(name))?;
    info.check_host(name, criu, &host::cpu_flags()?)?;
    let gpu = gpu_for(&info.cuda_pids, || {
        format!("snapshot {name} holds CUDA processes")
    })?;
    let images_dir = work_dir.join("images");
    let images = store
        .get(name, &images_dir, lazy)
        .await
        .map_err(store_error(name))?;
    let fetch_seconds = started.elapsed().as_secs_f64();
    let pid = criu.restore(&RestoreRequest {
        images: images_dir,
        work_dir: work_dir.join("criu"),
        tcp_established: info.tcp_established,
        shell_job: info.shell_job,
        file_locks: info.file_locks,
    });
    let fetched = images.fetched().await;
    drop(images);
    let pid = pid?;
    if let Some(gpu) = &gpu {
        gpu.resume(&info.cuda_pids)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(RestoreReport {
        snapshot: name.to_string(),
        pid,
        seconds,
        fetch_seconds,
        restore_seconds: seconds - fetch_seconds,
        lazy,
        store_bytes: fetched.store,
        peer_bytes: fetched.peers,
    })
}
