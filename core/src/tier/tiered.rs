//! [`TieredStore`]: caches in order, then peers, then the origin, with verification and
//! single-flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};

use super::{ChunkCache, ChunkSource};
use crate::pack::ChunkRef;
use crate::{ChunkId, Error, Result, VerifiedChunk};

type Flight = Shared<BoxFuture<'static, Result<(Bytes, Served), Arc<Error>>>>;

/// Which tier answered a [`TieredStore::fetch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// The cache tier at this position ([`TieredStore::cache_names`]).
    Cache(usize),
    /// The peer tier.
    Peer,
    /// The origin (object store).
    Origin,
}

/// A chunk's verified bytes and how they were obtained.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// The verified bytes.
    pub bytes: Bytes,
    /// The tier that produced them.
    pub served: Served,
    /// True when this request joined a fetch another request had started (single-flight).
    pub joined: bool,
}

/// Counters of where chunks came from (for stats, tests and metrics).
#[derive(Debug, Default)]
pub struct TierCounters {
    /// Hits per cache tier, in tier order.
    pub cache_hits: Vec<AtomicU64>,
    /// Chunks fetched from peers.
    pub peer_fetches: AtomicU64,
    /// Raw bytes fetched from peers.
    pub peer_bytes: AtomicU64,
    /// Chunks fetched from the origin.
    pub origin_fetches: AtomicU64,
    /// Raw bytes fetched from the origin.
    pub origin_bytes: AtomicU64,
    /// Chunks a tier returned that failed verification (dropped, next tier tried).
    pub verify_failures: AtomicU64,
    /// Requests that joined a fetch already in flight.
    pub single_flight_joins: AtomicU64,
    /// Chunks a cache tier could not keep (a full disk); each read still succeeded.
    pub fill_failures: AtomicU64,
}

struct Inner {
    caches: Vec<Arc<dyn ChunkCache>>,
    peers: Option<Arc<dyn ChunkSource>>,
    origin: Arc<dyn ChunkSource>,
    in_flight: Mutex<HashMap<ChunkId, Flight>>,
    counters: TierCounters,
    /// Cache tiers whose failed fill was logged (a full disk fails every fill: one warning).
    fill_failures_logged: Mutex<std::collections::HashSet<String>>,
}

/// Reads chunks through cache tiers, an optional peer tier and an origin; cheap to clone.
#[derive(Clone)]
pub struct TieredStore {
    inner: Arc<Inner>,
    local_files: Option<super::DiskCache>,
}

impl TieredStore {
    /// Caches are asked in the order given (fastest first), then `origin`.
    pub fn new(caches: Vec<Arc<dyn ChunkCache>>, origin: Arc<dyn ChunkSource>) -> Self {
        Self::with_peers(caches, None, origin)
    }

    /// Caches in order, then `peers` (when given; a miss or failure there is not an error),
    /// then `origin`. Chunks from peers are verified and fill the caches like origin chunks.
    pub fn with_peers(
        caches: Vec<Arc<dyn ChunkCache>>,
        peers: Option<Arc<dyn ChunkSource>>,
        origin: Arc<dyn ChunkSource>,
    ) -> Self {
        let counters = TierCounters {
            cache_hits: caches.iter().map(|_| AtomicU64::new(0)).collect(),
            ..TierCounters::default()
        };
        TieredStore {
            inner: Arc::new(Inner {
                caches,
                peers,
                origin,
                in_flight: Mutex::new(HashMap::new()),
                counters,
                fill_failures_logged: Mutex::new(std::collections::HashSet::new()),
            }),
            local_files: None,
        }
    }

    /// These tiers, naming `disk` (one of the cache tiers) as the local cache whose files
    /// readers may use directly: whole files for FUSE passthrough, chunks read into place.
    pub fn with_local_files(mut self, disk: super::DiskCache) -> Self {
        self.local_files = Some(disk);
        self
    }

    /// The local disk cache, when its files may be read directly.
    pub fn local_files(&self) -> Option<&super::DiskCache> {
        self.local_files.as_ref()
    }

    /// Where chunks came from so far.
    pub fn counters(&self) -> &TierCounters {
        &self.inner.counters
    }

    /// The names of the cache tiers, in order (matching [`TierCounters::cache_hits`]).
    pub fn cache_names(&self) -> Vec<String> {
        self.inner
            .caches
            .iter()
            .map(|c| c.name().to_string())
            .collect()
    }

    /// The name of the origin tier (where a read's error comes from once every cache missed).
    pub fn origin_name(&self) -> &str {
        self.inner.origin.name()
    }

    /// True when a peer tier is configured.
    pub fn has_peers(&self) -> bool {
        self.inner.peers.is_some()
    }

    /// The verified bytes of a chunk.
    pub async fn get(&self, chunk: &ChunkRef) -> Result<Bytes> {
        self.fetch(chunk).await.map(|f| f.bytes)
    }

    /// The verified bytes of a chunk from the cache tiers only (no peer or origin request), or
    /// `None` when no cache holds a good copy.
    pub async fn get_cached(&self, chunk: &ChunkRef) -> Option<Fetched> {
        self.inner
            .read_caches(chunk)
            .await
            .map(|(bytes, tier)| Fetched {
                bytes,
                served: Served::Cache(tier),
                joined: false,
            })
    }

    /// [`TieredStore::get`], also saying which tier answered.
    ///
    /// Cache reads are single-flight too: readers of one chunk at once (the kernel sends several
    /// reads of a file together, each a slice of one chunk) share one disk read and one buffer
    /// instead of each reading the whole chunk.
    pub async fn fetch(&self, chunk: &ChunkRef) -> Result<Fetched> {
        let (flight, joined) = {
            let mut in_flight = self.inner.in_flight.lock().expect("single-flight lock");
            match in_flight.get(&chunk.id) {
                Some(flight) => (flight.clone(), true),
                None => {
                    let inner = self.inner.clone();
                    let chunk = *chunk;
                    let flight = async move {
                        let result = inner.fetch_remote(&chunk).await.map_err(Arc::new);
                        inner
                            .in_flight
                            .lock()
                            .expect("single-flight lock")
                            .remove(&chunk.id);
                        result
                    }
                    .boxed()
                    .shared();
                    in_flight.insert(chunk.id, flight.clone());
                    (flight, false)
                }
            }
        };
        let (bytes, served) = flight.await.map_err(Error::Shared)?;
        if joined && !matches!(served, Served::Cache(_)) {
            // (A join of a cache read saved a disk read, not a fetch.)
            self.inner
                .counters
                .single_flight_joins
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(Fetched {
            bytes,
            served,
            joined,
        })
    }

    /// The verified bytes of several chunks, in order: [`TieredStore::get`] for many at once.
    /// Chunks no cache holds and no fetch is already bringing are asked of the peers one by one,
    /// and what they do not deliver is fetched from the origin in runs
    /// ([`ChunkSource::plan_runs`]: adjacent frames of one pack come with one request); each
    /// chunk still joins, or is joined by, single-flight fetches of the same id.
    pub async fn get_many(&self, chunks: &[ChunkRef]) -> Vec<Result<Bytes>> {
        let mut cached: Vec<Option<Bytes>> = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            cached.push(self.inner.read_caches(chunk).await.map(|(bytes, _)| bytes));
        }
        let flights: Vec<Option<Flight>> = {
            let mut in_flight = self.inner.in_flight.lock().expect("single-flight lock");
            let mut to_fetch: Vec<ChunkRef> = Vec::new();
            for (chunk, hit) in chunks.iter().zip(&cached) {
                if hit.is_none()
                    && !in_flight.contains_key(&chunk.id)
                    && !to_fetch.iter().any(|c| c.id == chunk.id)
                {
                    to_fetch.push(*chunk);
                }
            }
            for run in self.inner.origin.plan_runs(to_fetch) {
                self.inner.start_run(run, &mut in_flight);
            }
            chunks
                .iter()
                .zip(&cached)
                .map(|(chunk, hit)| match hit {
                    Some(_) => None,
                    None => in_flight.get(&chunk.id).cloned(),
                })
                .collect()
        };
        let fetched = futures::future::join_all(flights.into_iter().map(|flight| async move {
            match flight {
                Some(flight) => Some(flight.await.map(|(bytes, _)| bytes).map_err(Error::Shared)),
                None => None,
            }
        }))
        .await;
        cached
            .into_iter()
            .zip(fetched)
            .map(|(hit, fetched)| match (hit, fetched) {
                (Some(data), _) => Ok(data),
                (None, Some(result)) => result,
                (None, None) => unreachable!("every miss has a flight"),
            })
            .collect()
    }
}

impl Inner {
    /// Checks bytes from `source` unless the source only ever returns verified bytes.
    fn check(
        &self,
        chunk: &ChunkRef,
        data: Bytes,
        source: &dyn ChunkSource,
    ) -> Result<VerifiedChunk> {
        let checked = if source.returns_verified() {
            Ok(VerifiedChunk::already_verified(chunk.id, data))
        } else {
            chunk.id.verified(data, source.name())
        };
        checked.inspect_err(|_| {
            self.counters
                .verify_failures
                .fetch_add(1, Ordering::Relaxed);
        })
    }

    async fn read_caches(&self, chunk: &ChunkRef) -> Option<(Bytes, usize)> {
        for (tier, cache) in self.caches.iter().enumerate() {
            let data = match cache.fetch(chunk).await {
                Ok(Some(data)) => data,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(chunk = %chunk.id, tier = cache.name(), error = %e, "cache tier failed; trying the next");
                    continue;
                }
            };
            let verified = match self.check(chunk, data, cache.as_ref()) {
                Ok(verified) => verified,
                Err(e) => {
                    tracing::warn!(error = %e, "dropping a bad cached copy");
                    let _ = cache.remove(&chunk.id).await;
                    continue;
                }
            };
            self.counters.cache_hits[tier].fetch_add(1, Ordering::Relaxed);
            self.fill(&self.caches[..tier], &verified).await;
            return Some((verified.into_bytes(), tier));
        }
        None
    }

    /// Registers a flight per chunk of `run`, all driven by one task: the peers are asked for
    /// each chunk, and the rest come from one [`ChunkSource::fetch_run`] of the origin.
    fn start_run(self: &Arc<Self>, run: Vec<ChunkRef>, in_flight: &mut HashMap<ChunkId, Flight>) {
        type RunResults = Arc<Vec<Result<(Bytes, Served), Arc<Error>>>>;
        let inner = self.clone();
        let ids: Vec<ChunkId> = run.iter().map(|c| c.id).collect();
        let whole: Shared<BoxFuture<'static, RunResults>> = async move {
            let from_peers =
                futures::future::join_all(run.iter().map(|chunk| inner.recheck_then_peers(chunk)))
                    .await;
            let rest: Vec<ChunkRef> = run
                .iter()
                .zip(&from_peers)
                .filter(|(_, got)| got.is_none())
                .map(|(chunk, _)| *chunk)
                .collect();
            let mut from_origin = if rest.is_empty() {
                Vec::new()
            } else {
                inner.origin.fetch_run(&rest).await
            }
            .into_iter();
            let mut out = Vec::with_capacity(run.len());
            for (chunk, got) in run.iter().zip(from_peers) {
                let result = match got {
                    Some(found) => Ok(found),
                    None => {
                        let fetched = from_origin.next().unwrap_or_else(|| {
                            Err(Error::ChunkUnavailable {
                                id: chunk.id,
                                tried: format!("{}: no answer for this chunk", inner.origin.name()),
                            })
                        });
                        inner
                            .finish_origin(chunk, fetched)
                            .await
                            .map(|bytes| (bytes, Served::Origin))
                    }
                };
                out.push(result.map_err(Arc::new));
            }
            let mut in_flight = inner.in_flight.lock().expect("single-flight lock");
            for chunk in &run {
                in_flight.remove(&chunk.id);
            }
            Arc::new(out)
        }
        .boxed()
        .shared();
        for (position, id) in ids.into_iter().enumerate() {
            let flight = whole
                .clone()
                .map(move |all| all[position].clone())
                .boxed()
                .shared();
            in_flight.insert(id, flight);
        }
    }

    /// The peers first (when configured), then the origin.
    async fn fetch_remote(&self, chunk: &ChunkRef) -> Result<(Bytes, Served)> {
        if let Some(found) = self.recheck_then_peers(chunk).await {
            return Ok(found);
        }
        let fetched = self.origin.fetch(chunk).await;
        self.finish_origin(chunk, fetched)
            .await
            .map(|bytes| (bytes, Served::Origin))
    }

    /// Inside a new flight: the caches, then the peers. (For [`TieredStore::get_many`], which
    /// reads the caches before it registers flights, this is a second look: a flight for the
    /// same chunk may have ended in between, filling the caches, and its bytes are found here
    /// instead of fetched again.)
    async fn recheck_then_peers(&self, chunk: &ChunkRef) -> Option<(Bytes, Served)> {
        if let Some((bytes, tier)) = self.read_caches(chunk).await {
            return Some((bytes, Served::Cache(tier)));
        }
        self.try_peers(chunk)
            .await
            .map(|bytes| (bytes, Served::Peer))
    }

    /// The chunk from the peer tier, verified and kept in the caches; `None` when there is no
    /// peer tier or it has no good copy (its failures are never the reader's error).
    async fn try_peers(&self, chunk: &ChunkRef) -> Option<Bytes> {
        let peers = self.peers.as_ref()?;
        let data = match peers.fetch(chunk).await {
            Ok(Some(data)) => data,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(chunk = %chunk.id, error = %e, "peer tier failed; using the origin");
                return None;
            }
        };
        let verified = match self.check(chunk, data, peers.as_ref()) {
            Ok(verified) => verified,
            Err(e) => {
                tracing::warn!(error = %e, "dropping bad bytes from the peer tier");
                return None;
            }
        };
        self.counters.peer_fetches.fetch_add(1, Ordering::Relaxed);
        self.counters
            .peer_bytes
            .fetch_add(verified.bytes().len() as u64, Ordering::Relaxed);
        self.fill(&self.caches, &verified).await;
        Some(verified.into_bytes())
    }

    /// Checks what the origin returned for `chunk`, counts it and fills the caches.
    async fn finish_origin(
        &self,
        chunk: &ChunkRef,
        fetched: Result<Option<Bytes>>,
    ) -> Result<Bytes> {
        if let Err(Error::ChunkMismatch { .. }) = &fetched {
            // A source that verifies itself reports bad bytes as this error.
            self.counters
                .verify_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        let data = fetched?.ok_or_else(|| Error::ChunkUnavailable {
            id: chunk.id,
            tried: format!("{}: not found", self.origin.name()),
        })?;
        let verified = self.check(chunk, data, self.origin.as_ref())?;
        self.counters.origin_fetches.fetch_add(1, Ordering::Relaxed);
        self.counters
            .origin_bytes
            .fetch_add(verified.bytes().len() as u64, Ordering::Relaxed);
        self.fill(&self.caches, &verified).await;
        Ok(verified.into_bytes())
    }

    /// Keeps `chunk` in each of `caches`. A fill that fails (a full cache disk) only costs the
    /// next read of the chunk: it is logged once per tier, then counted.
    async fn fill(&self, caches: &[Arc<dyn ChunkCache>], chunk: &VerifiedChunk) {
        for cache in caches {
            if let Err(e) = cache.insert(chunk.clone()).await {
                self.counters.fill_failures.fetch_add(1, Ordering::Relaxed);
                let first = self
                    .fill_failures_logged
                    .lock()
                    .expect("fill log lock")
                    .insert(cache.name().to_string());
                if first {
                    tracing::warn!(chunk = %chunk.id(), tier = cache.name(), error = %e, "could not keep a chunk in the cache; reads go on from the next tier (further failures are counted, not logged)");
                } else {
                    tracing::debug!(chunk = %chunk.id(), tier = cache.name(), error = %e, "could not keep a chunk in the cache");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier::MemoryCache;
    use async_trait::async_trait;

    /// An origin that counts calls and answers slowly, so concurrent readers overlap.
    struct CountingOrigin {
        calls: AtomicU64,
        data: Bytes,
    }

    #[async_trait]
    impl ChunkSource for CountingOrigin {
        fn name(&self) -> &str {
            "counting"
        }
        async fn fetch(&self, _chunk: &ChunkRef) -> Result<Option<Bytes>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            Ok(Some(self.data.clone()))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_readers_cause_one_origin_fetch_and_later_reads_hit_memory() {
        let data = Bytes::from(vec![9u8; 4096]);
        let origin = Arc::new(CountingOrigin {
            calls: AtomicU64::new(0),
            data: data.clone(),
        });
        let memory = Arc::new(MemoryCache::new(1 << 20));
        let store = TieredStore::new(vec![memory], origin.clone());
        let chunk = ChunkRef {
            id: ChunkId::of(&data),
            raw_len: 4096,
            location: None,
        };
        let readers: Vec<_> = (0..16)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move { s.get(&chunk).await.unwrap() })
            })
            .collect();
        for r in readers {
            assert_eq!(r.await.unwrap(), data);
        }
        assert_eq!(origin.calls.load(Ordering::SeqCst), 1);
        store.get(&chunk).await.unwrap();
        assert_eq!(origin.calls.load(Ordering::SeqCst), 1);
        assert_eq!(store.counters().cache_hits[0].load(Ordering::SeqCst), 1);
    }

    /// An origin that fetches any set of chunks as one run and counts its requests.
    struct RunOrigin {
        requests: AtomicU64,
        chunks: HashMap<ChunkId, Bytes>,
    }

    #[async_trait]
    impl ChunkSource for RunOrigin {
        fn name(&self) -> &str {
            "runs"
        }
        async fn fetch(&self, chunk: &ChunkRef) -> Result<Option<Bytes>> {
            self.requests.fetch_add(1, Ordering::SeqCst);
            Ok(self.chunks.get(&chunk.id).cloned())
        }
        fn plan_runs(&self, chunks: Vec<ChunkRef>) -> Vec<Vec<ChunkRef>> {
            vec![chunks]
        }
        async fn fetch_run(&self, run: &[ChunkRef]) -> Vec<Result<Option<Bytes>>> {
            self.requests.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            run.iter()
                .map(|c| Ok(self.chunks.get(&c.id).cloned()))
                .collect()
        }
    }

    /// `n` distinct chunks of `len` bytes, their requests, and a [`RunOrigin`] holding them.
    fn chunks_and_origin(n: u8, len: usize) -> (Vec<Bytes>, Vec<ChunkRef>, Arc<RunOrigin>) {
        let data: Vec<Bytes> = (0..n).map(|i| Bytes::from(vec![i; len])).collect();
        let refs: Vec<ChunkRef> = data
            .iter()
            .map(|d| ChunkRef {
                id: ChunkId::of(d),
                raw_len: len as u32,
                location: None,
            })
            .collect();
        let origin = Arc::new(RunOrigin {
            requests: AtomicU64::new(0),
            chunks: refs
                .iter()
                .map(|r| r.id)
                .zip(data.iter().cloned())
                .collect(),
        });
        (data, refs, origin)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn get_many_fetches_the_misses_as_one_run_that_single_reads_join() {
        let (data, refs, origin) = chunks_and_origin(5, 1000);
        let memory = Arc::new(MemoryCache::new(1 << 20));
        let store = TieredStore::new(vec![memory], origin.clone());
        // One chunk is cached already; it is not fetched again.
        store.get(&refs[0]).await.unwrap();
        assert_eq!(origin.requests.load(Ordering::SeqCst), 1);

        let many = {
            let (store, refs) = (store.clone(), refs.clone());
            tokio::spawn(async move { store.get_many(&refs).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        // A single read of a chunk in the run joins it instead of asking the origin again.
        assert_eq!(store.get(&refs[3]).await.unwrap(), data[3]);
        let got: Vec<Bytes> = many
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(got, data, "results in request order");
        assert_eq!(
            origin.requests.load(Ordering::SeqCst),
            2,
            "one request for the run"
        );
        assert_eq!(store.counters().origin_fetches.load(Ordering::SeqCst), 5);
    }

    /// A cache whose stored bytes can rot (like a disk); it does not vouch for what it returns.
    #[derive(Default)]
    struct RottingCache {
        held: std::sync::Mutex<HashMap<ChunkId, Bytes>>,
    }

    #[async_trait]
    impl ChunkSource for RottingCache {
        fn name(&self) -> &str {
            "rotting"
        }
        async fn fetch(&self, chunk: &ChunkRef) -> Result<Option<Bytes>> {
            Ok(self.held.lock().unwrap().get(&chunk.id).cloned())
        }
    }

    #[async_trait]
    impl ChunkCache for RottingCache {
        async fn insert(&self, chunk: VerifiedChunk) -> Result<()> {
            self.held
                .lock()
                .unwrap()
                .insert(chunk.id(), chunk.into_bytes());
            Ok(())
        }
        async fn remove(&self, id: &ChunkId) -> Result<()> {
            self.held.lock().unwrap().remove(id);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_bad_cached_copy_is_dropped_and_the_origin_used() {
        let data = Bytes::from_static(b"good bytes");
        let id = ChunkId::of(&data);
        let cache = Arc::new(RottingCache::default());
        cache
            .held
            .lock()
            .unwrap()
            .insert(id, Bytes::from_static(b"evil bytes"));
        let origin = Arc::new(CountingOrigin {
            calls: AtomicU64::new(0),
            data: data.clone(),
        });
        let store = TieredStore::new(vec![cache.clone()], origin);
        let chunk = ChunkRef {
            id,
            raw_len: 10,
            location: None,
        };
        assert_eq!(store.get(&chunk).await.unwrap(), data);
        assert_eq!(store.counters().verify_failures.load(Ordering::SeqCst), 1);
        assert_eq!(
            cache.fetch(&chunk).await.unwrap().unwrap(),
            data,
            "refilled with the good copy"
        );
    }

    /// A cache on a full disk: it holds nothing and every insert fails.
    struct FullCache;

    #[async_trait]
    impl ChunkSource for FullCache {
        fn name(&self) -> &str {
            "full"
        }
        async fn fetch(&self, _chunk: &ChunkRef) -> Result<Option<Bytes>> {
            Ok(None)
        }
    }

    #[async_trait]
    impl ChunkCache for FullCache {
        async fn insert(&self, chunk: VerifiedChunk) -> Result<()> {
            Err(Error::io(
                "/cache",
                std::io::Error::from_raw_os_error(libc::ENOSPC),
            ))
            .map(|()| drop(chunk))
        }
        async fn remove(&self, _id: &ChunkId) -> Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_cache_that_cannot_keep_chunks_fails_no_read() {
        let data = Bytes::from_static(b"served however full the cache disk is");
        let origin = Arc::new(CountingOrigin {
            calls: AtomicU64::new(0),
            data: data.clone(),
        });
        let memory: Arc<dyn ChunkCache> = Arc::new(MemoryCache::new(1 << 20));
        let tiers = TieredStore::new(vec![Arc::new(FullCache), memory], origin.clone());
        let chunk = ChunkRef {
            id: ChunkId::of(&data),
            raw_len: data.len() as u32,
            location: None,
        };
        for _ in 0..3 {
            assert_eq!(tiers.get(&chunk).await.unwrap(), data);
        }
        // Every read tried to fill the full tier (and was counted); the memory tier behind it
        // kept the chunk, so the origin was asked once.
        assert_eq!(tiers.counters().fill_failures.load(Ordering::Relaxed), 3);
        assert_eq!(origin.calls.load(Ordering::Relaxed), 1);
        assert_eq!(tiers.counters().cache_hits[1].load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn an_origin_serving_bad_bytes_is_an_error_naming_the_chunk() {
        let origin = Arc::new(CountingOrigin {
            calls: AtomicU64::new(0),
            data: Bytes::from_static(b"wrong"),
        });
        let store = TieredStore::new(vec![], origin);
        let id = ChunkId::of(b"right");
        let err = store
            .get(&ChunkRef {
                id,
                raw_len: 5,
                location: None,
            })
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&id.to_hex()) && err.contains("counting"),
            "{err}"
        );
    }

    /// A peer tier holding some chunks, some of them with wrong bytes.
    struct FakePeers {
        held: HashMap<ChunkId, Bytes>,
        asked: AtomicU64,
    }

    #[async_trait]
    impl ChunkSource for FakePeers {
        fn name(&self) -> &str {
            "peer"
        }
        async fn fetch(&self, chunk: &ChunkRef) -> Result<Option<Bytes>> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            Ok(self.held.get(&chunk.id).cloned())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn peers_come_before_the_origin_and_their_bad_bytes_never_reach_a_reader() {
        let (data, refs, origin) = chunks_and_origin(4, 500);
        // The peers hold chunk 0 intact and chunk 1 rotten; 2 and 3 not at all.
        let peers = Arc::new(FakePeers {
            held: [
                (refs[0].id, data[0].clone()),
                (refs[1].id, Bytes::from_static(b"rotten")),
            ]
            .into_iter()
            .collect(),
            asked: AtomicU64::new(0),
        });
        let memory = Arc::new(MemoryCache::new(1 << 20));
        let store = TieredStore::with_peers(vec![memory], Some(peers.clone()), origin.clone());

        let first = store.fetch(&refs[0]).await.unwrap();
        assert_eq!((first.bytes, first.served), (data[0].clone(), Served::Peer));
        let second = store.fetch(&refs[1]).await.unwrap();
        assert_eq!(
            (second.bytes, second.served),
            (data[1].clone(), Served::Origin)
        );
        assert_eq!(store.counters().verify_failures.load(Ordering::SeqCst), 1);

        // A run: the peers are asked for each chunk, the origin fetches the rest in one request.
        let got = store.get_many(&refs[2..]).await;
        assert_eq!(
            got.into_iter().map(|r| r.unwrap()).collect::<Vec<_>>(),
            data[2..]
        );
        assert_eq!(peers.asked.load(Ordering::SeqCst), 4);
        assert_eq!(
            origin.requests.load(Ordering::SeqCst),
            2,
            "one single fetch, one run"
        );
        let c = store.counters();
        assert_eq!(c.peer_fetches.load(Ordering::SeqCst), 1);
        assert_eq!(c.origin_fetches.load(Ordering::SeqCst), 3);
        // Everything is cached now: no tier below memory is asked again.
        let again = store.fetch(&refs[0]).await.unwrap();
        assert_eq!(again.served, Served::Cache(0));
        assert_eq!(peers.asked.load(Ordering::SeqCst), 4);
    }
}
