//! [`Volume`]: one mounted manifest with everything its reads share (chunk map, tiers, the
//! per-chunk first-read and prefetch state, the background fetch queues, the trace recorder and
//! metrics).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use thaw_core::chunk_map::ChunkMap;
use thaw_core::manifest::{Extent, FileKind, InodeNo, Manifest};
use thaw_core::pack::ChunkRef;
use thaw_core::tier::TieredStore;

use thaw_core::store::Store;

use crate::access::ChunkAccess;
use crate::background::{Background, ClassReport, Limits};
use crate::lookahead::Lookahead;
use crate::metrics::FsMetrics;
use crate::prefetch::{Class, FirstRead};
use crate::read::FileReader;
use crate::trace::carry::PrefetchPlan;
use crate::trace::recorder::TraceRecorder;
use crate::trace::{RunSummary, Trace, TraceLog, TraceSource};
use crate::{FsError, ReadError};

/// What is fetched ahead of the application by what it opens and lists.
#[derive(Clone, Copy, Debug)]
pub struct OpenAhead {
    /// A regular file opened through thaw is fetched whole, in the background, when it is at
    /// most this big (larger ones are left to readahead and the full fetch).
    pub whole_file_max: u64,
    /// A listed directory queues its regular files of at most this size...
    pub listed_file_max: u64,
    /// ...at most this many of them.
    pub listed_files: usize,
}

impl Default for OpenAhead {
    fn default() -> Self {
        OpenAhead {
            whole_file_max: 1 << 30,
            listed_file_max: 256 << 10,
            listed_files: 256,
        }
    }
}

/// A mounted manifest: shared by the FUSE handlers, the read workers and the prefetcher.
pub struct Volume {
    pub(crate) manifest: Manifest,
    pub(crate) map: ChunkMap,
    pub(crate) tiers: TieredStore,
    pub(crate) background: Arc<Background>,
    pub(crate) recorder: TraceRecorder,
    pub(crate) metrics: Arc<FsMetrics>,
    paths: OnceLock<HashMap<InodeNo, String>>,
    logical_bytes: OnceLock<u64>,
    readers: Mutex<lru::LruCache<InodeNo, Arc<FileReader>>>,
    lookahead: Lookahead,
    trace_profile: Option<String>,
    open_ahead: OpenAhead,
    opening_fetches: AtomicBool,
    trace_sources: Mutex<Vec<TraceSource>>,
    readahead_budget: Arc<tokio::sync::Semaphore>,
}

/// Files whose parsed extents and readahead state are kept.
const READERS_KEPT: NonZeroUsize = NonZeroUsize::new(4096).expect("non-zero");

impl Volume {
    /// A volume over `manifest` whose chunks (located by `map`) come through `tiers`; the
    /// trace recorder keeps the first read of each chunk during `trace_window` after now.
    pub fn new(
        manifest: Manifest,
        map: ChunkMap,
        tiers: TieredStore,
        trace_window: std::time::Duration,
        metrics: Arc<FsMetrics>,
    ) -> Self {
        let chunks = manifest.chunk_count() as usize;
        Volume {
            background: Arc::new(Background::new(chunks, Limits::default())),
            recorder: TraceRecorder::new(chunks, Instant::now(), trace_window),
            manifest,
            map,
            tiers,
            metrics,
            paths: OnceLock::new(),
            logical_bytes: OnceLock::new(),
            readers: Mutex::new(lru::LruCache::new(READERS_KEPT)),
            lookahead: Lookahead::default(),
            trace_profile: None,
            open_ahead: OpenAhead::default(),
            opening_fetches: AtomicBool::new(false),
            trace_sources: Mutex::new(Vec::new()),
            readahead_budget: crate::read::readahead_budget(),
        }
    }

    /// This volume with background fetching kept to `limits`, and `open_ahead` for what an
    /// open or a listing fetches ahead (when [`Volume::fetch_on_open`] turns it on).
    pub fn with_background(mut self, limits: Limits, open_ahead: OpenAhead) -> Self {
        self.background = Arc::new(Background::new(
            self.manifest.chunk_count() as usize,
            limits,
        ));
        self.open_ahead = open_ahead;
        self
    }

    /// This volume recording and replaying the trace of `profile` instead of the default one
    /// (see [`crate::trace`]).
    pub fn with_trace_profile(mut self, profile: Option<String>) -> Self {
        self.trace_profile = profile;
        self
    }

    /// The trace profile, if not the default trace.
    pub fn trace_profile(&self) -> Option<&str> {
        self.trace_profile.as_deref()
    }

    /// The mounted manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The tiers reads go through.
    pub fn tiers(&self) -> &TieredStore {
        &self.tiers
    }

    /// The reader of regular file `ino` (kept for the next read of the same file), or `None`
    /// when `ino` is not a regular file.
    pub(crate) fn reader(&self, ino: InodeNo) -> thaw_core::Result<Option<Arc<FileReader>>> {
        if let Some(reader) = self.readers.lock().expect("readers lock").get(&ino) {
            return Ok(Some(reader.clone()));
        }
        let inode = self.manifest.inode(ino)?;
        if inode.kind != FileKind::Regular {
            return Ok(None);
        }
        let extents = self.manifest.extents(&inode)?;
        let reader = Arc::new(FileReader::new(inode.ino, inode.size, extents));
        self.readers
            .lock()
            .expect("readers lock")
            .put(ino, reader.clone());
        Ok(Some(reader))
    }

    /// Bytes of all distinct chunks (what `statfs` reports as used).
    pub fn logical_bytes(&self) -> u64 {
        *self.logical_bytes.get_or_init(|| {
            self.manifest
                .chunks()
                .map(|chunks| chunks.iter().map(|c| c.raw_len as u64).sum())
                .unwrap_or(0)
        })
    }

    /// The path of `ino` inside the tree (for logs and traces). Built on first use: errors and
    /// trace saves are rare, and most mounts never need it.
    pub(crate) fn path_of(&self, ino: InodeNo) -> String {
        let paths = self.paths.get_or_init(|| match self.manifest.walk() {
            Ok(walk) => walk
                .into_iter()
                .map(|(path, inode)| (inode.ino, format!("/{}", String::from_utf8_lossy(&path))))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the manifest's paths");
                HashMap::new()
            }
        });
        paths
            .get(&ino)
            .cloned()
            .unwrap_or_else(|| format!("<inode {ino}>"))
    }

    /// What this mount has recorded so far, as a one-run trace (with what it prefetched from
    /// and how many of its first reads that predicted).
    pub fn recorded_trace(&self) -> Trace {
        let mut trace = self
            .recorder
            .to_trace(&self.manifest, |ino| self.path_of(ino));
        trace.history.push(RunSummary {
            saved_unix_ms: crate::trace::unix_ms_now(),
            first_reads: self.recorder.chunks_read(),
            prefetch_hits: self.metrics.prefetch_hits.get(),
            sources: self.trace_sources(),
        });
        trace
    }

    /// Merges what this mount recorded into the stored trace; returns the key and the merged
    /// entry count, or `None` when nothing was recorded.
    pub async fn save_trace(&self, store: &Store) -> Result<Option<(String, usize)>, FsError> {
        if self.recorder.len() == 0 {
            return Ok(None);
        }
        let recorded = self.recorded_trace();
        TraceLog::new(store, self.manifest.id(), self.trace_profile())
            .save_run(&recorded)
            .await
            .map(Some)
    }

    /// Starts the background workers on `runtime` (stopped when the handles are aborted).
    pub fn start_background(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        self.background
            .start(self.clone(), self.metrics.clone(), runtime)
    }

    /// Queues the chunks of `plan` for prefetch (first in the background) and remembers which
    /// traces they came from; returns how many were queued.
    pub fn prefetch(&self, plan: PrefetchPlan) -> usize {
        *self.trace_sources.lock().expect("sources lock") = plan.sources;
        self.background.queue(Class::Trace, plan.chunks)
    }

    /// The traces this mount prefetched from.
    pub fn trace_sources(&self) -> Vec<TraceSource> {
        self.trace_sources.lock().expect("sources lock").clone()
    }

    /// Turns fetching ahead by what is opened and listed on or off.
    pub fn fetch_on_open(&self, on: bool) {
        self.opening_fetches.store(on, Ordering::Relaxed);
    }

    /// Whether opens and listings fetch ahead.
    pub fn fetches_on_open(&self) -> bool {
        self.opening_fetches.load(Ordering::Relaxed)
    }

    /// Fetches every chunk in the background, behind everything else: the chunks of small
    /// files first (at most [`OpenAhead::listed_file_max`]: the modules an interpreter imports
    /// one after another), then the chunk table in order.
    pub fn fetch_all(&self) {
        let count = self.manifest.chunk_count();
        let mut taken = vec![false; count as usize];
        let mut first = Vec::new();
        for ino in 0..self.manifest.inode_count() {
            let Ok(inode) = self.manifest.inode(ino) else {
                continue;
            };
            if inode.kind != FileKind::Regular || inode.size > self.open_ahead.listed_file_max {
                continue;
            }
            for extent in self.manifest.extents(&inode).unwrap_or_default() {
                if let Some(seen) = taken.get_mut(extent.chunk as usize) {
                    if !std::mem::replace(seen, true) {
                        first.push(extent.chunk);
                    }
                }
            }
        }
        self.background.fetch_all(first, count);
    }

    /// What the background class `class` did so far.
    pub fn background_report(&self, class: Class) -> ClassReport {
        self.background.report(class)
    }

    /// Whether the full fetch is still going.
    pub fn fetching_all(&self) -> bool {
        self.background.fetching_all()
    }

    /// An application opened regular file `ino`: queue its chunks whole (if on and small
    /// enough).
    pub(crate) fn opened(&self, ino: InodeNo) {
        if !self.fetches_on_open() {
            return;
        }
        let Ok(Some(reader)) = self.reader(ino) else {
            return;
        };
        if reader.size() > self.open_ahead.whole_file_max {
            return;
        }
        let mut chunks: Vec<u32> = reader.extents().iter().map(|e| e.chunk).collect();
        chunks.dedup();
        let queued = self.background.queue(Class::Opened, chunks);
        self.metrics.opened_prefetch_chunks.inc_by(queued as u64);
    }

    /// An application listed directory `dir`: queue its small regular files (if on).
    pub(crate) fn listed(&self, dir: &thaw_core::manifest::Inode) {
        if !self.fetches_on_open() {
            return;
        }
        let Ok(entries) = self.manifest.read_dir(dir) else {
            return;
        };
        let mut chunks = Vec::new();
        let mut files = 0;
        for entry in entries {
            let Ok(inode) = self.manifest.inode(entry.ino) else {
                continue;
            };
            if inode.kind != FileKind::Regular
                || inode.size == 0
                || inode.size > self.open_ahead.listed_file_max
            {
                continue;
            }
            if let Ok(extents) = self.manifest.extents(&inode) {
                chunks.extend(extents.iter().map(|e| e.chunk));
            }
            files += 1;
            if files == self.open_ahead.listed_files {
                break;
            }
        }
        chunks.dedup();
        let queued = self.background.queue(Class::Listed, chunks);
        self.metrics.listed_prefetch_chunks.inc_by(queued as u64);
    }

    /// The chunk of `extent` for an application read of file `ino`: notes the first read
    /// (trace, prefetch accounting) and fetches the verified bytes through the tiers, counted
    /// as a demand read meanwhile (the lowest background work steps back).
    async fn read_chunk_noted(&self, extent: &Extent, ino: InodeNo) -> Result<Bytes, ReadError> {
        let index = extent.chunk;
        if self.recorder.note_read(extent, ino) {
            match self.background.state().on_first_read(index) {
                FirstRead::Prefetched => self.metrics.prefetch_hits.inc(),
                FirstRead::InFlight => self.metrics.prefetch_late.inc(),
                FirstRead::Queued => self.metrics.prefetch_missed.inc(),
                FirstRead::NotPredicted => self.metrics.unpredicted_reads.inc(),
            };
            self.look_ahead(index);
        }
        let _reading = self.background.demand();
        self.fetch_timed(index).await
    }

    /// Starts fetching the chunks after `index` when first reads have become sequential.
    fn look_ahead(&self, index: u32) {
        let Some(ahead) = self
            .lookahead
            .on_first_read(index, self.manifest.chunk_count())
        else {
            return;
        };
        let refs: Vec<_> = ahead
            .filter(|&i| !self.recorder.was_read(i))
            .filter_map(|i| self.chunk_ref(i).ok())
            .collect();
        if refs.is_empty() {
            return;
        }
        let tiers = self.tiers.clone();
        tokio::spawn(async move {
            tiers.get_many(&refs).await;
        });
    }

    /// Fetches chunk table entry `index` through the tiers, timing it.
    async fn fetch_timed(&self, index: u32) -> Result<Bytes, ReadError> {
        let started = Instant::now();
        let chunk = self.chunk_ref(index).map_err(|source| ReadError {
            chunk_index: index,
            chunk: None,
            source,
        })?;
        let result = self.tiers.get(&chunk).await;
        self.metrics
            .chunk_fetch_seconds
            .observe(started.elapsed().as_secs_f64());
        result.map_err(|source| ReadError {
            chunk_index: index,
            chunk: Some(chunk.id),
            source,
        })
    }
}

impl ChunkAccess for Volume {
    async fn read_chunk(&self, extent: &Extent, ino: InodeNo) -> Result<Bytes, ReadError> {
        self.read_chunk_noted(extent, ino).await
    }

    fn was_read(&self, index: u32) -> bool {
        self.recorder.was_read(index)
    }

    fn chunk_ref(&self, index: u32) -> thaw_core::Result<ChunkRef> {
        self.map.chunk_ref(&self.manifest, index)
    }

    fn is_cached(&self, chunk: &ChunkRef) -> bool {
        self.tiers
            .local_files()
            .is_some_and(|disk| disk.contains(&chunk.id))
    }

    fn readahead_budget(&self) -> Arc<tokio::sync::Semaphore> {
        self.readahead_budget.clone()
    }

    async fn fetch_many(&self, chunks: &[ChunkRef]) -> Vec<thaw_core::Result<Bytes>> {
        self.tiers.get_many(chunks).await
    }
}
