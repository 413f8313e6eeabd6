//! The streaming pipeline: chunks fetched concurrently through the tiers (each verified there),
//! handed to copy lanes over a bounded channel, copied into the destination allocation.
//!
//! ```text
//! tiers.get (N concurrent tasks) ──► channel (2 per lane) ──► lane threads ──► allocation
//!   memory / disk / peer / store        bounded                 pinned staging, async copies
//! disk cache file (offset)       ──►                            pread straight into place
//! ```
//!
//! A chunk held in a disk cache file goes to a lane as (file, offset) and the lane reads it
//! into the destination itself (host: into the allocation; GPU: into its staging buffer), so
//! its bytes are copied once; a copy whose bytes prove wrong is dropped from the cache and
//! the chunk fetched through the tiers.
//!
//! Memory stays bounded: at most `fetch_concurrency` chunks in flight, two per lane queued and
//! two staging buffers per lane. The first error stops the fetches and is returned once every
//! lane has stopped; a partly filled allocation is dropped with it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use thaw_core::chunk_map::ChunkMap;
use thaw_core::manifest::Manifest;
use thaw_core::tier::{ChunkInFile, TierCounters, TieredStore};
use tokio::sync::mpsc;

use crate::backend::{Allocation, Backend, DeviceKind, Lane};
use crate::model::model_files;
use crate::plan::{ChunkJob, PlacedTensor, Plan, DEFAULT_ALIGNMENT};
use crate::{Result, WeightsError};

/// Called with the number of bytes each finished copy moved (a progress bar's `inc`).
pub type OnBytes = Arc<dyn Fn(u64) + Send + Sync>;

/// How to stream.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Chunks fetched at once.
    pub fetch_concurrency: usize,
    /// Copy lanes (threads; CUDA streams on a GPU).
    pub lanes: usize,
    /// Alignment of every tensor in the allocation (a power of two).
    pub alignment: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        LoadOptions {
            fetch_concurrency: (cores * 2).clamp(4, 32),
            lanes: cores.clamp(2, 4),
            alignment: DEFAULT_ALIGNMENT,
        }
    }
}

/// Where the chunks of one load came from.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Sources {
    /// Hits per cache tier, by tier name ("memory", "disk").
    pub cache_hits: Vec<(String, u64)>,
    /// Chunks fetched from peers.
    pub peer_chunks: u64,
    /// Bytes fetched from peers.
    pub peer_bytes: u64,
    /// Chunks fetched from the object store.
    pub store_chunks: u64,
    /// Bytes fetched from the object store.
    pub store_bytes: u64,
}

impl Sources {
    fn snapshot(tiers: &TieredStore) -> Sources {
        let c: &TierCounters = tiers.counters();
        Sources {
            cache_hits: tiers
                .cache_names()
                .into_iter()
                .zip(&c.cache_hits)
                .map(|(name, hits)| (name, hits.load(Ordering::Relaxed)))
                .collect(),
            peer_chunks: c.peer_fetches.load(Ordering::Relaxed),
            peer_bytes: c.peer_bytes.load(Ordering::Relaxed),
            store_chunks: c.origin_fetches.load(Ordering::Relaxed),
            store_bytes: c.origin_bytes.load(Ordering::Relaxed),
        }
    }

    fn since(&self, before: &Sources) -> Sources {
        Sources {
            cache_hits: self
                .cache_hits
                .iter()
                .zip(&before.cache_hits)
                .map(|((name, now), (_, then))| (name.clone(), now - then))
                .collect(),
            peer_chunks: self.peer_chunks - before.peer_chunks,
            peer_bytes: self.peer_bytes - before.peer_bytes,
            store_chunks: self.store_chunks - before.store_chunks,
            store_bytes: self.store_bytes - before.store_bytes,
        }
    }
}

/// What one load did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LoadReport {
    /// The destination device.
    pub device: DeviceKind,
    /// Files loaded.
    pub files: usize,
    /// Tensors loaded.
    pub tensors: usize,
    /// Bytes of tensor data now in the allocation.
    pub tensor_bytes: u64,
    /// Size of the allocation (tensor bytes plus alignment padding).
    pub allocation_bytes: u64,
    /// Distinct chunks fetched.
    pub chunks: usize,
    /// Seconds from the first fetch to the last copy complete (allocation excluded).
    pub seconds: f64,
    /// Seconds spent allocating (and clearing holes in) the destination.
    pub allocate_seconds: f64,
    /// Copy lanes used.
    pub lanes: usize,
    /// Chunks fetched at once.
    pub fetch_concurrency: usize,
    /// Where the chunks came from.
    pub sources: Sources,
}

impl LoadReport {
    /// Tensor bytes per second of streaming.
    pub fn bytes_per_second(&self) -> f64 {
        self.tensor_bytes as f64 / self.seconds.max(1e-9)
    }
}

/// A model in device (or host) memory: the allocation, where each tensor is, and the report.
pub struct LoadedModel {
    /// The placement (files and tensors with their offsets).
    pub plan: Plan,
    /// The memory holding every tensor.
    pub allocation: Arc<dyn Allocation>,
    /// How the load went.
    pub report: LoadReport,
}

impl LoadedModel {
    /// The tensor named `name` (in the first file that has one).
    pub fn tensor(&self, name: &str) -> Option<&PlacedTensor> {
        self.plan.tensors.iter().find(|t| t.name == name)
    }

    /// A tensor's address: a device pointer on a GPU, a host address on the CPU.
    pub fn address(&self, tensor: &PlacedTensor) -> u64 {
        self.allocation.address() + tensor.offset
    }

    /// Copies a tensor's bytes back to host memory.
    pub fn read(&self, tensor: &PlacedTensor) -> Result<Vec<u8>> {
        self.allocation
            .read(tensor.offset..tensor.offset + tensor.len)
    }
}

/// Reads the headers of `manifest`'s safetensors files and plans their placement at
/// `alignment`. `name` names the manifest in errors.
pub async fn plan_model(
    tiers: &TieredStore,
    manifest: &Manifest,
    map: &ChunkMap,
    name: &str,
    alignment: u64,
) -> Result<Plan> {
    let files = model_files(tiers, manifest, map, name).await?;
    Plan::build(manifest, map, &files, alignment)
}

/// [`plan_model`] then [`load_plan`]: the whole load in one call.
pub async fn load_model(
    tiers: &TieredStore,
    manifest: &Manifest,
    map: &ChunkMap,
    name: &str,
    backend: Arc<dyn Backend>,
    options: &LoadOptions,
    on_bytes: Option<OnBytes>,
) -> Result<LoadedModel> {
    let plan = plan_model(tiers, manifest, map, name, options.alignment).await?;
    load_plan(tiers, plan, backend, options, on_bytes).await
}

/// Allocates `plan.total_bytes` on `backend` and streams every tensor of `plan` into it.
pub async fn load_plan(
    tiers: &TieredStore,
    plan: Plan,
    backend: Arc<dyn Backend>,
    options: &LoadOptions,
    on_bytes: Option<OnBytes>,
) -> Result<LoadedModel> {
    let started = Instant::now();
    let allocation: Arc<dyn Allocation> = Arc::from(backend.allocate(plan.total_bytes)?);
    for range in &plan.zeroed {
        allocation.zero(range.clone())?;
    }
    let allocate_seconds = started.elapsed().as_secs_f64();
    let plan = Arc::new(plan);
    let before = Sources::snapshot(tiers);
    let started = Instant::now();
    stream_chunks(tiers, &plan, &*backend, &allocation, options, on_bytes).await?;
    let seconds = started.elapsed().as_secs_f64();
    let plan = Arc::try_unwrap(plan).unwrap_or_else(|shared| (*shared).clone());
    let report = LoadReport {
        device: backend.device(),
        files: plan.files.len(),
        tensors: plan.tensors.len(),
        tensor_bytes: plan.tensor_bytes(),
        allocation_bytes: plan.total_bytes,
        chunks: plan.jobs.len(),
        seconds,
        allocate_seconds,
        lanes: options.lanes.max(1),
        fetch_concurrency: options.fetch_concurrency.max(1),
        sources: Sources::snapshot(tiers).since(&before),
    };
    Ok(LoadedModel {
        plan,
        allocation,
        report,
    })
}

/// Checks that a fetched chunk has the manifest's length and holds every byte `job` copies,
/// then that each copy lands inside `allocation`, so lanes can copy without bounds checks.
fn check_job(job: &ChunkJob, chunk: &Bytes, allocation: &dyn Allocation) -> Result<()> {
    // Staging buffers are sized by the manifest's lengths: a chunk must have its own.
    if chunk.len() as u64 != job.chunk.raw_len as u64 {
        return Err(WeightsError::ChunkLength {
            chunk: job.chunk.id.to_hex(),
            len: chunk.len(),
            expected: job.chunk.raw_len,
        });
    }
    let needed = job.chunk_bytes_needed();
    if (chunk.len() as u64) < needed {
        return Err(WeightsError::ShortChunk {
            chunk: job.chunk.id.to_hex(),
            len: chunk.len(),
            needed,
        });
    }
    check_segments(job, allocation)
}

/// Checks that every segment of `job` lies inside its chunk (by the manifest's length) and
/// inside `allocation`.
fn check_segments(job: &ChunkJob, allocation: &dyn Allocation) -> Result<()> {
    let needed = job.chunk_bytes_needed();
    if needed > job.chunk.raw_len as u64 {
        return Err(WeightsError::ShortChunk {
            chunk: job.chunk.id.to_hex(),
            len: job.chunk.raw_len as usize,
            needed,
        });
    }
    for segment in &job.segments {
        let end = segment.dst + segment.len as u64;
        if end > allocation.len() {
            return Err(WeightsError::OutOfBounds {
                range: segment.dst..end,
                len: allocation.len(),
            });
        }
    }
    Ok(())
}

/// What a lane gets for one job: the chunk's verified bytes, or its place in a disk cache file
/// to read it from straight into the destination.
enum Work {
    Fetched(usize, Bytes),
    InFile(usize, ChunkInFile),
}

type Receiver = Arc<Mutex<mpsc::Receiver<Work>>>;

/// How a lane gets a chunk whose disk cache file did not hold the right bytes: from the tiers
/// (the disk cache's copy dropped first), on the runtime, from the lane's own thread.
#[derive(Clone)]
struct Refetch {
    tiers: TieredStore,
    runtime: tokio::runtime::Handle,
}

impl Refetch {
    fn get(&self, job: &ChunkJob) -> Result<Bytes> {
        if let Some(disk) = self.tiers.local_files() {
            disk.forget(&job.chunk.id)?;
        }
        Ok(self.runtime.block_on(self.tiers.get(&job.chunk))?)
    }
}

/// One lane's loop: take work until the channel closes, copy or read it into place, then wait
/// for the copies. Sets `failed` on error so the fetches stop early.
fn run_lane(
    mut lane: Box<dyn Lane>,
    receiver: Receiver,
    plan: Arc<Plan>,
    allocation: Arc<dyn Allocation>,
    refetch: Refetch,
    failed: Arc<AtomicBool>,
    on_bytes: Option<OnBytes>,
) -> Result<()> {
    let result = (|| {
        loop {
            let next = receiver.lock().expect("lane receiver").blocking_recv();
            let Some(work) = next else { break };
            if failed.load(Ordering::Relaxed) {
                break;
            }
            let index = match work {
                Work::Fetched(index, chunk) => {
                    let job = &plan.jobs[index];
                    check_job(job, &chunk, &*allocation)?;
                    lane.upload(&chunk, &*allocation, &job.segments)?;
                    index
                }
                Work::InFile(index, source) => {
                    let job = &plan.jobs[index];
                    check_segments(job, &*allocation)?;
                    if !lane.read_into(&source, job, &*allocation)? {
                        let chunk = refetch.get(job)?;
                        check_job(job, &chunk, &*allocation)?;
                        lane.upload(&chunk, &*allocation, &job.segments)?;
                    }
                    index
                }
            };
            if let Some(on_bytes) = &on_bytes {
                on_bytes(plan.jobs[index].copy_bytes());
            }
        }
        lane.finish()
    })();
    if result.is_err() {
        failed.store(true, Ordering::Relaxed);
    }
    result
}

/// Fetches every job's chunk through `tiers` and copies it into `allocation` on `backend`'s
/// lanes; returns when every copy is complete.
pub async fn stream_chunks(
    tiers: &TieredStore,
    plan: &Arc<Plan>,
    backend: &dyn Backend,
    allocation: &Arc<dyn Allocation>,
    options: &LoadOptions,
    on_bytes: Option<OnBytes>,
) -> Result<()> {
    let lanes = options.lanes.max(1);
    let staging = usize::try_from(plan.largest_chunk()).unwrap_or(usize::MAX);
    let (sender, receiver) = mpsc::channel::<Work>(lanes * 2);
    let receiver: Receiver = Arc::new(Mutex::new(receiver));
    let failed = Arc::new(AtomicBool::new(false));
    let refetch = Refetch {
        tiers: tiers.clone(),
        runtime: tokio::runtime::Handle::current(),
    };
    let mut workers = Vec::with_capacity(lanes);
    for i in 0..lanes {
        let lane = backend.lane(staging)?;
        let (receiver, plan, allocation, refetch, failed, on_bytes) = (
            receiver.clone(),
            plan.clone(),
            allocation.clone(),
            refetch.clone(),
            failed.clone(),
            on_bytes.clone(),
        );
        let worker = std::thread::Builder::new()
            .name(format!("thaw-weights-lane-{i}"))
            .spawn(move || run_lane(lane, receiver, plan, allocation, refetch, failed, on_bytes))
            .map_err(|e| WeightsError::Worker(e.to_string()))?;
        workers.push(worker);
    }
    drop(receiver);

    // Chunks read from disk cache files count as that tier's hits.
    let disk_hits = tiers.cache_names().iter().position(|name| name == "disk");
    let fetches = futures::stream::iter(plan.jobs.iter().enumerate().map(|(index, job)| {
        let tiers = tiers.clone();
        let chunk = job.chunk;
        async move {
            // A chunk in a disk cache file is read by a lane straight into place.
            if let Some(source) = tiers.local_files().and_then(|d| d.chunk_file(&chunk.id)) {
                if let Some(hits) = disk_hits {
                    tiers.counters().cache_hits[hits].fetch_add(1, Ordering::Relaxed);
                }
                return Ok::<_, WeightsError>(Work::InFile(index, source));
            }
            // A task per chunk: decompression and verification run on every runtime thread.
            let bytes = tokio::spawn(async move { tiers.get(&chunk).await })
                .await
                .map_err(|e| WeightsError::Worker(e.to_string()))??;
            Ok(Work::Fetched(index, bytes))
        }
    }))
    .buffer_unordered(options.fetch_concurrency.max(1));
    let mut fetches = std::pin::pin!(fetches);
    let mut fetch_error = None;
    while let Some(result) = fetches.next().await {
        if failed.load(Ordering::Relaxed) {
            break;
        }
        match result {
            Ok(item) => {
                if sender.send(item).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failed.store(true, Ordering::Relaxed);
                fetch_error = Some(e);
                break;
            }
        }
    }
    drop(sender);
    let lane_results = tokio::task::spawn_blocking(move || {
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(WeightsError::Worker("a copy lane panicked".into())))
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| WeightsError::Worker(e.to_string()))?;
    if let Some(e) = fetch_error {
        return Err(e);
    }
    for result in lane_results {
        result?;
    }
    tracing::debug!(chunks = plan.jobs.len(), "weights streamed");
    Ok(())
}
