//! Chunk tiers: one [`ChunkSource`] trait; memory, local disk and the object store implement it,
//! and [`TieredStore`] asks them in order, verifying every chunk, filling faster tiers on the way
//! back and collapsing concurrent fetches of one chunk into one (single-flight).

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod disk;
mod memory;
mod origin;
mod tiered;

use async_trait::async_trait;
use bytes::Bytes;

pub use disk::{
    BadObject, CacheStatus, CheckReport, ChunkInFile, DiskCache, FileContent, FileSlice,
    ObjectKind, PlacedChunk, PruneReport, WholeFile, DEFAULT_DISK_CACHE_BYTES,
};
pub use memory::{MemoryCache, DEFAULT_MEMORY_CACHE_BYTES};
pub use origin::PackSource;
pub use tiered::{Fetched, Served, TierCounters, TieredStore};

use crate::pack::ChunkRef;
use crate::{ChunkId, Result, VerifiedChunk};

/// Anything that can produce a chunk's bytes. Results are verified by the caller
/// ([`TieredStore`]), so a source may return whatever it holds.
#[async_trait]
pub trait ChunkSource: Send + Sync {
    /// A short name for logs, errors and metrics ("memory", "disk", "store").
    fn name(&self) -> &str;

    /// The chunk's bytes, `Ok(None)` when this source does not hold it.
    async fn fetch(&self, chunk: &ChunkRef) -> Result<Option<Bytes>>;

    /// True when everything this source returns was verified when it was kept and cannot have
    /// changed since (process memory holding [`VerifiedChunk`]s); such hits skip re-hashing.
    fn returns_verified(&self) -> bool {
        false
    }

    /// Splits `chunks` into runs this source can fetch with one request each (see
    /// [`ChunkSource::fetch_run`]); by default every chunk is its own run.
    fn plan_runs(&self, chunks: Vec<ChunkRef>) -> Vec<Vec<ChunkRef>> {
        chunks.into_iter().map(|c| vec![c]).collect()
    }

    /// Fetches one run planned by [`ChunkSource::plan_runs`], results in the run's order; by
    /// default one [`ChunkSource::fetch`] per chunk.
    async fn fetch_run(&self, run: &[ChunkRef]) -> Vec<Result<Option<Bytes>>> {
        let mut out = Vec::with_capacity(run.len());
        for chunk in run {
            out.push(self.fetch(chunk).await);
        }
        out
    }
}

/// A tier that can also keep chunks: memory and disk caches.
#[async_trait]
pub trait ChunkCache: ChunkSource {
    /// Keeps a verified chunk.
    async fn insert(&self, chunk: VerifiedChunk) -> Result<()>;

    /// Forgets `id` (after its bytes failed verification).
    async fn remove(&self, id: &ChunkId) -> Result<()>;
}

/// A cache tier that is read but never filled: for one-off reads whose output is itself the
/// local copy (`thaw extract`), where filling the cache would write every byte twice.
pub struct ReadOnlyCache<C>(pub C);

#[async_trait]
impl<C: ChunkCache> ChunkSource for ReadOnlyCache<C> {
    fn name(&self) -> &str {
        self.0.name()
    }

    async fn fetch(&self, chunk: &ChunkRef) -> Result<Option<Bytes>> {
        self.0.fetch(chunk).await
    }

    fn returns_verified(&self) -> bool {
        self.0.returns_verified()
    }
}

#[async_trait]
impl<C: ChunkCache> ChunkCache for ReadOnlyCache<C> {
    async fn insert(&self, _chunk: VerifiedChunk) -> Result<()> {
        Ok(())
    }

    async fn remove(&self, id: &ChunkId) -> Result<()> {
        self.0.remove(id).await
    }
}

/// Where and how big the local caches are.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Directory of the disk cache; `None` disables the disk tier.
    pub disk_dir: Option<std::path::PathBuf>,
    /// Disk budget in bytes.
    pub disk_bytes: u64,
    /// Memory budget in bytes (0 disables the memory tier).
    pub memory_bytes: u64,
    /// Keep chunks fetched from the store in the disk cache (else the disk cache is read only).
    pub fill_disk: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            disk_dir: Some(crate::dirs::default_cache()),
            disk_bytes: DEFAULT_DISK_CACHE_BYTES,
            memory_bytes: DEFAULT_MEMORY_CACHE_BYTES,
            fill_disk: true,
        }
    }
}

/// Builds memory -> disk -> `peers` (when given) -> `store` tiers. A disk cache that cannot be
/// opened (for instance because another thaw process holds its lock) is skipped with a warning.
pub fn tiers_for(
    store: &crate::store::Store,
    config: &CacheConfig,
    peers: Option<std::sync::Arc<dyn ChunkSource>>,
) -> TieredStore {
    let mut caches: Vec<std::sync::Arc<dyn ChunkCache>> = Vec::new();
    if config.memory_bytes > 0 {
        caches.push(std::sync::Arc::new(MemoryCache::new(config.memory_bytes)));
    }
    let mut local_files = None;
    if let Some(dir) = &config.disk_dir {
        match DiskCache::open(dir, config.disk_bytes) {
            Ok(disk) => {
                local_files = Some(disk.clone());
                if config.fill_disk {
                    caches.push(std::sync::Arc::new(disk));
                } else {
                    caches.push(std::sync::Arc::new(ReadOnlyCache(disk)));
                }
            }
            Err(e) => tracing::warn!(error = %e, "running without the local disk cache"),
        }
    }
    let tiers = TieredStore::with_peers(
        caches,
        peers,
        std::sync::Arc::new(PackSource::new(store.clone())),
    );
    match local_files {
        Some(disk) => tiers.with_local_files(disk),
        None => tiers,
    }
}

/// Helpers for the tier tests.
#[cfg(test)]
pub(crate) mod test_support {
    use crate::pack::ChunkRef;
    use crate::{ChunkId, VerifiedChunk};

    /// A verified chunk of `len` bytes of `fill`, and the request for it.
    pub(crate) fn chunk(fill: u8, len: usize) -> (VerifiedChunk, ChunkRef) {
        let data = bytes::Bytes::from(vec![fill; len]);
        let id = ChunkId::of(&data);
        let request = ChunkRef {
            id,
            raw_len: len as u32,
            location: None,
        };
        (
            id.verified(data, "test").expect("hashes to its id"),
            request,
        )
    }
}
