//! One conformance suite for every chunk tier, as object_store runs one integration suite
//! against every backend: each tier's tests build it through a [`TierFixture`] and call [`run`].
//!
//! What every tier must do, alone and behind a [`TieredStore`]:
//! - **get**: each chunk it holds comes back byte for byte;
//! - **get_many**: its planned runs cover every request once, and each comes back;
//! - **missing chunk**: a chunk it does not hold is `None` or an error, never bytes, and a
//!   reader's error names the chunk;
//! - **corrupt bytes**: a copy that does not hash to its id never reaches a reader;
//! - **concurrent readers**: many readers at once each get their own chunk.
//!
//! Compiled for this crate's tests and, with the `conformance` feature, for other crates' (the
//! peer tier's suite runs in thaw-cache-server).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ChunkSource, TieredStore};
use crate::pack::{pack_key, ChunkRef, EncodedChunk, PackBuilder, FRAME_HEADER_BYTES};
use crate::store::Store;
use crate::{ChunkId, VerifiedChunk};

/// Readers started at once by the concurrency check.
const CONCURRENT_READERS: usize = 16;

/// A tier made for one check: the source and the request for each chunk it was given.
pub struct Held {
    /// The tier.
    pub source: Arc<dyn ChunkSource>,
    /// One request per chunk, in the order given.
    pub requests: Vec<ChunkRef>,
}

/// Builds the tier under test.
#[async_trait]
pub trait TierFixture: Send + Sync {
    /// A tier that holds exactly `chunks`.
    async fn holding(&self, chunks: &[VerifiedChunk]) -> Held;

    /// A request for `absent`, a chunk a tier made by [`TierFixture::holding`] with
    /// `held` does not hold. By default, its id and length with no location.
    fn missing(&self, held: &Held, absent: &VerifiedChunk) -> ChunkRef {
        let _ = held;
        ChunkRef {
            id: absent.id(),
            raw_len: absent.bytes().len() as u32,
            location: None,
        }
    }

    /// A tier whose copy of `chunk` is corrupt (bytes that do not hash to its id), or `None`
    /// where a tier cannot hold one (memory keeps only verified chunks).
    async fn holding_corrupt(&self, chunk: &VerifiedChunk) -> Option<Held>;
}

/// Chunks of several sizes (1 byte to 1 MiB + 1) with distinct contents.
pub fn sample_chunks() -> Vec<VerifiedChunk> {
    [1usize, 100, 4096, 65_537, (1 << 20) + 1]
        .iter()
        .enumerate()
        .map(|(n, &len)| {
            let bytes: Vec<u8> = (0..len)
                .map(|i| (i as u64 * 31 + n as u64 * 7 + (i as u64 >> 9)) as u8)
                .collect();
            let bytes = Bytes::from(bytes);
            ChunkId::of(&bytes)
                .verified(bytes, "conformance sample")
                .expect("hashes to its own id")
        })
        .collect()
}

/// A chunk none of [`sample_chunks`] is.
pub fn absent_chunk() -> VerifiedChunk {
    let bytes = Bytes::from_static(b"a chunk no tier under test holds");
    ChunkId::of(&bytes)
        .verified(bytes, "conformance sample")
        .expect("hashes to its own id")
}

/// `bytes` with one byte flipped (a rotten copy).
pub fn corrupted(bytes: &[u8]) -> Bytes {
    let mut bad = bytes.to_vec();
    let middle = bad.len() / 2;
    bad[middle] ^= 0x5a;
    Bytes::from(bad)
}

/// Writes `chunks` into `store` as one pack (with one byte of the frame of the chunk at index
/// `corrupt` flipped, when given) and returns the located request for each: what a pack source,
/// or a peer in front of one, is tested with.
pub async fn write_pack(
    store: &Store,
    chunks: &[VerifiedChunk],
    corrupt: Option<usize>,
) -> Vec<ChunkRef> {
    let mut builder = PackBuilder::new();
    let entries: Vec<_> = chunks
        .iter()
        .map(|c| builder.append(&EncodedChunk::encode(c.bytes(), 3)))
        .collect();
    let pack = builder.seal();
    store.put_pack(&pack).await.expect("writing the pack");
    if let Some(n) = corrupt {
        let mut bytes = pack.bytes.to_vec();
        let at =
            (entries[n].offset + FRAME_HEADER_BYTES) as usize + entries[n].stored_len as usize / 2;
        bytes[at] ^= 0x5a;
        store
            .put(&pack_key(&pack.id), Bytes::from(bytes))
            .await
            .expect("writing the corrupt pack");
    }
    chunks
        .iter()
        .zip(&entries)
        .map(|(c, e)| ChunkRef {
            id: c.id(),
            raw_len: c.bytes().len() as u32,
            location: Some(e.location(pack.id)),
        })
        .collect()
}

/// A request whose location is in a pack `store` never had (the store holds nothing there).
pub fn in_a_missing_pack(located: &ChunkRef, absent: &VerifiedChunk) -> ChunkRef {
    let mut location = located.location.expect("a located request");
    location.pack = ChunkId::of(b"a pack that was never written");
    ChunkRef {
        id: absent.id(),
        raw_len: absent.bytes().len() as u32,
        location: Some(location),
    }
}

/// Runs every check against the tier `fixture` builds; a failure panics naming the tier and
/// the check.
pub async fn run(fixture: &dyn TierFixture) {
    get_returns_each_chunk(fixture).await;
    get_many_returns_every_chunk(fixture).await;
    a_missing_chunk_is_never_bytes(fixture).await;
    corrupt_bytes_never_reach_a_reader(fixture).await;
    concurrent_readers_each_get_their_chunk(fixture).await;
}

async fn get_returns_each_chunk(fixture: &dyn TierFixture) {
    let chunks = sample_chunks();
    let held = fixture.holding(&chunks).await;
    let name = held.source.name().to_string();
    for (chunk, request) in chunks.iter().zip(&held.requests) {
        let got = held.source.fetch(request).await;
        match got {
            Ok(Some(bytes)) => {
                assert_eq!(&bytes, chunk.bytes(), "{name}: get returned other bytes")
            }
            other => panic!("{name}: get of a held chunk gave {other:?}"),
        }
    }
    let tiers = TieredStore::new(Vec::new(), held.source.clone());
    for (chunk, request) in chunks.iter().zip(&held.requests) {
        let got = tiers
            .get(request)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&got, chunk.bytes(), "{name}: a reader got other bytes");
    }
}

async fn get_many_returns_every_chunk(fixture: &dyn TierFixture) {
    let chunks = sample_chunks();
    let held = fixture.holding(&chunks).await;
    let name = held.source.name().to_string();
    let runs = held.source.plan_runs(held.requests.clone());
    let mut planned: Vec<ChunkId> = runs.iter().flatten().map(|c| c.id).collect();
    planned.sort();
    let mut asked: Vec<ChunkId> = held.requests.iter().map(|c| c.id).collect();
    asked.sort();
    assert_eq!(
        planned, asked,
        "{name}: runs do not cover each request once"
    );
    for run in &runs {
        let results = held.source.fetch_run(run).await;
        assert_eq!(
            results.len(),
            run.len(),
            "{name}: a run's results miscounted"
        );
        for (request, result) in run.iter().zip(results) {
            let chunk = chunks.iter().find(|c| c.id() == request.id).expect("asked");
            match result {
                Ok(Some(bytes)) => assert_eq!(&bytes, chunk.bytes(), "{name}: run bytes"),
                other => panic!("{name}: a run gave {other:?} for a held chunk"),
            }
        }
    }
    let tiers = TieredStore::new(Vec::new(), held.source.clone());
    for (chunk, got) in chunks.iter().zip(tiers.get_many(&held.requests).await) {
        let got = got.unwrap_or_else(|e| panic!("{name}: get_many: {e}"));
        assert_eq!(&got, chunk.bytes(), "{name}: get_many returned other bytes");
    }
}

async fn a_missing_chunk_is_never_bytes(fixture: &dyn TierFixture) {
    let held = fixture.holding(&sample_chunks()).await;
    let name = held.source.name().to_string();
    let absent = absent_chunk();
    let request = fixture.missing(&held, &absent);
    if let Ok(Some(bytes)) = held.source.fetch(&request).await {
        panic!(
            "{name}: a chunk it does not hold came back as {} bytes",
            bytes.len()
        );
    }
    let tiers = TieredStore::new(Vec::new(), held.source.clone());
    let err = tiers
        .get(&request)
        .await
        .expect_err("a reader got bytes for a missing chunk")
        .to_string();
    assert!(
        err.contains(&absent.id().to_hex()),
        "{name}: the error does not name the chunk: {err}"
    );
}

async fn corrupt_bytes_never_reach_a_reader(fixture: &dyn TierFixture) {
    let chunk = sample_chunks().remove(3);
    let Some(held) = fixture.holding_corrupt(&chunk).await else {
        return;
    };
    let name = held.source.name().to_string();
    let tiers = TieredStore::new(Vec::new(), held.source.clone());
    match tiers.get(&held.requests[0]).await {
        Ok(bytes) => assert_eq!(&bytes, chunk.bytes(), "{name}: a reader got corrupt bytes"),
        Err(e) => assert!(
            e.to_string().contains(&chunk.id().to_hex()),
            "{name}: the error does not name the chunk: {e}"
        ),
    }
    let many = tiers.get_many(&held.requests).await;
    if let Ok(bytes) = &many[0] {
        assert_eq!(bytes, chunk.bytes(), "{name}: get_many gave corrupt bytes");
    }
}

async fn concurrent_readers_each_get_their_chunk(fixture: &dyn TierFixture) {
    let chunks = sample_chunks();
    let held = fixture.holding(&chunks).await;
    let name = held.source.name().to_string();
    let tiers = TieredStore::new(Vec::new(), held.source.clone());
    let readers = (0..CONCURRENT_READERS).map(|n| {
        let (tiers, source) = (tiers.clone(), held.source.clone());
        let which = n % chunks.len();
        let (request, expected) = (held.requests[which], chunks[which].bytes().clone());
        async move {
            let direct = source.fetch(&request).await;
            let through = tiers.get(&request).await;
            (direct, through, expected)
        }
    });
    for (direct, through, expected) in futures::future::join_all(readers).await {
        match direct {
            Ok(Some(bytes)) => assert_eq!(bytes, expected, "{name}: concurrent get"),
            other => panic!("{name}: a concurrent get gave {other:?}"),
        }
        let through = through.unwrap_or_else(|e| panic!("{name}: concurrent reader: {e}"));
        assert_eq!(
            through, expected,
            "{name}: a concurrent reader got other bytes"
        );
    }
}

#[cfg(test)]
mod tests {
    //! The suite against the tiers of this crate: memory, the disk cache, the read-only disk
    //! cache and the pack source (the object store).

    use std::sync::Mutex;

    use super::*;
    use crate::store::{Store, StoreConfig};
    use crate::tier::{ChunkCache, DiskCache, MemoryCache, PackSource, ReadOnlyCache};

    /// Keeps each tier's scratch directory as long as the fixture.
    #[derive(Default)]
    struct Dirs(Mutex<Vec<tempfile::TempDir>>);

    impl Dirs {
        fn new_dir(&self) -> std::path::PathBuf {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().to_path_buf();
            self.0.lock().unwrap().push(dir);
            path
        }
    }

    fn requests(chunks: &[VerifiedChunk]) -> Vec<ChunkRef> {
        chunks
            .iter()
            .map(|c| ChunkRef {
                id: c.id(),
                raw_len: c.bytes().len() as u32,
                location: None,
            })
            .collect()
    }

    struct Memory;

    #[async_trait]
    impl TierFixture for Memory {
        async fn holding(&self, chunks: &[VerifiedChunk]) -> Held {
            let cache = MemoryCache::new(64 << 20);
            for chunk in chunks {
                cache.insert(chunk.clone()).await.unwrap();
            }
            Held {
                source: Arc::new(cache),
                requests: requests(chunks),
            }
        }

        async fn holding_corrupt(&self, _chunk: &VerifiedChunk) -> Option<Held> {
            None
        }
    }

    #[derive(Default)]
    struct Disk {
        dirs: Dirs,
        read_only: bool,
    }

    impl Disk {
        fn wrap(&self, cache: DiskCache) -> Arc<dyn ChunkSource> {
            match self.read_only {
                true => Arc::new(ReadOnlyCache(cache)),
                false => Arc::new(cache),
            }
        }
    }

    #[async_trait]
    impl TierFixture for Disk {
        async fn holding(&self, chunks: &[VerifiedChunk]) -> Held {
            let cache = DiskCache::open(&self.dirs.new_dir(), 64 << 20).unwrap();
            for chunk in chunks {
                cache.insert(chunk.clone()).await.unwrap();
            }
            Held {
                source: self.wrap(cache),
                requests: requests(chunks),
            }
        }

        async fn holding_corrupt(&self, chunk: &VerifiedChunk) -> Option<Held> {
            let cache = DiskCache::open(&self.dirs.new_dir(), 64 << 20).unwrap();
            cache
                .insert_rotten(chunk.id(), corrupted(chunk.bytes()))
                .await
                .unwrap();
            Some(Held {
                source: self.wrap(cache),
                requests: requests(std::slice::from_ref(chunk)),
            })
        }
    }

    #[derive(Default)]
    struct Packs(Dirs);

    impl Packs {
        async fn store(&self, chunks: &[VerifiedChunk], corrupt: Option<usize>) -> Held {
            let store = Store::open(&StoreConfig::local(self.0.new_dir())).unwrap();
            let requests = write_pack(&store, chunks, corrupt).await;
            Held {
                source: Arc::new(PackSource::new(store)),
                requests,
            }
        }
    }

    #[async_trait]
    impl TierFixture for Packs {
        async fn holding(&self, chunks: &[VerifiedChunk]) -> Held {
            self.store(chunks, None).await
        }

        fn missing(&self, held: &Held, absent: &VerifiedChunk) -> ChunkRef {
            in_a_missing_pack(&held.requests[0], absent)
        }

        async fn holding_corrupt(&self, chunk: &VerifiedChunk) -> Option<Held> {
            Some(self.store(std::slice::from_ref(chunk), Some(0)).await)
        }
    }

    #[tokio::test]
    async fn the_memory_tier_conforms() {
        run(&Memory).await;
    }

    #[tokio::test]
    async fn the_disk_cache_conforms() {
        run(&Disk::default()).await;
    }

    #[tokio::test]
    async fn the_read_only_disk_cache_conforms() {
        run(&Disk {
            read_only: true,
            ..Disk::default()
        })
        .await;
    }

    #[tokio::test]
    async fn the_pack_source_conforms() {
        run(&Packs::default()).await;
    }
}
