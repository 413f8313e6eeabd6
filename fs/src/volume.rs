//! [`Volume`]: one mounted manifest with everything its reads share (chunk map, tiers, the
//! per-chunk first-read and prefetch state, the trace recorder and metrics).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use thaw_core::chunk_map::ChunkMap;
use thaw_core::manifest::{FileKind, InodeNo, Manifest};
use thaw_core::pack::ChunkRef;
use thaw_core::tier::TieredStore;

use thaw_core::store::Store;

use crate::access::ChunkAccess;
use crate::lookahead::Lookahead;
use crate::metrics::FsMetrics;
use crate::prefetch::{self, FirstRead, PrefetchReport, PrefetchState};
use crate::read::FileReader;
use crate::trace::{self, Trace, TraceRecorder};
use crate::{FsError, ReadError};

/// A mounted manifest: shared by the FUSE handlers, the read workers and the prefetcher.
pub struct Volume {
    pub(crate) manifest: Manifest,
    pub(crate) map: ChunkMap,
    pub(crate) tiers: TieredStore,
    pub(crate) prefetch: Arc<PrefetchState>,
    pub(crate) recorder: TraceRecorder,
    pub(crate) metrics: Arc<FsMetrics>,
    paths: OnceLock<HashMap<InodeNo, String>>,
    logical_bytes: OnceLock<u64>,
    readers: Mutex<lru::LruCache<InodeNo, Arc<FileReader>>>,
    lookahead: Lookahead,
    trace_profile: Option<String>,
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
            prefetch: Arc::new(PrefetchState::new(chunks)),
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
        }
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
    pub(crate) fn logical_bytes(&self) -> u64 {
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

    /// What this mount has recorded so far, as a one-run trace.
    pub fn recorded_trace(&self) -> Trace {
        self.recorder
            .to_trace(&self.manifest, |ino| self.path_of(ino))
    }

    /// Merges what this mount recorded into the stored trace; returns the key and the merged
    /// entry count, or `None` when nothing was recorded.
    pub async fn save_trace(&self, store: &Store) -> Result<Option<(String, usize)>, FsError> {
        if self.recorder.len() == 0 {
            return Ok(None);
        }
        let recorded = self.recorded_trace();
        let id = self.manifest.id();
        trace::save_merged(store, &id, self.trace_profile(), recorded)
            .await
            .map(Some)
    }

    /// Prefetches `chunks` (chunk table indexes, in trace order), `concurrency` windows at a
    /// time; reads meanwhile count as prefetch hits, late or missed.
    pub async fn prefetch(self: Arc<Self>, chunks: Vec<u32>, concurrency: usize) -> PrefetchReport {
        let (state, metrics) = (self.prefetch.clone(), self.metrics.clone());
        prefetch::prefetch(self, state, metrics, chunks, concurrency).await
    }

    /// Chunk table entry `index` for an application read of file `ino`: notes the first read
    /// (trace, prefetch accounting) and fetches the verified bytes through the tiers.
    async fn read_chunk_noted(&self, index: u32, ino: InodeNo) -> Result<Bytes, ReadError> {
        if self.recorder.note_read(index, ino) {
            match self.prefetch.on_first_read(index) {
                FirstRead::Prefetched => self.metrics.prefetch_hits.inc(),
                FirstRead::InFlight => self.metrics.prefetch_late.inc(),
                FirstRead::Queued => self.metrics.prefetch_missed.inc(),
                FirstRead::NotPredicted => self.metrics.unpredicted_reads.inc(),
            };
            self.look_ahead(index);
        }
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
    async fn read_chunk(&self, index: u32, ino: InodeNo) -> Result<Bytes, ReadError> {
        self.read_chunk_noted(index, ino).await
    }

    fn was_read(&self, index: u32) -> bool {
        self.recorder.was_read(index)
    }

    fn chunk_ref(&self, index: u32) -> thaw_core::Result<ChunkRef> {
        self.map.chunk_ref(&self.manifest, index)
    }

    async fn fetch_many(&self, chunks: &[ChunkRef]) -> Vec<thaw_core::Result<Bytes>> {
        self.tiers.get_many(chunks).await
    }
}
