//! The local disk tier: RocksDB holding uncompressed chunks under a byte budget.
//!
//! Each chunk is stored as `c<id>` (the bytes, in blob files when large) and `a<id>` (its size
//! and last-use sequence number), written together in one atomic batch. On open the `a` records
//! rebuild the LRU order; when the budget is exceeded the least recently used chunks go. Values
//! are verified against their ids by [`super::TieredStore`] on every read, so a torn or bit-rotted
//! value after a crash is dropped, never served.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use rocksdb::{IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions, DB};

use super::{ChunkCache, ChunkSource};
use crate::pack::ChunkRef;
use crate::{ChunkId, Error, Result, VerifiedChunk};

/// Default disk budget.
pub const DEFAULT_DISK_CACHE_BYTES: u64 = 20 * 1024 * 1024 * 1024;
/// Values at least this large go to RocksDB blob files instead of the LSM tree.
const BLOB_MIN_BYTES: u64 = 64 * 1024;

#[derive(Default)]
struct Lru {
    entries: HashMap<ChunkId, (u64, u64)>,
    by_age: BTreeMap<u64, ChunkId>,
    used: u64,
    next_seq: u64,
}

impl Lru {
    fn touch(&mut self, id: ChunkId, size: u64) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some((old_seq, old_size)) = self.entries.insert(id, (seq, size)) {
            self.by_age.remove(&old_seq);
            self.used -= old_size;
        }
        self.by_age.insert(seq, id);
        self.used += size;
        seq
    }

    fn forget(&mut self, id: &ChunkId) {
        if let Some((seq, size)) = self.entries.remove(id) {
            self.by_age.remove(&seq);
            self.used -= size;
        }
    }
}

struct Inner {
    db: DB,
    path: PathBuf,
    budget: u64,
    lru: Mutex<Lru>,
    blob_gc_on: AtomicBool,
}

/// A RocksDB-backed chunk cache with a byte budget; survives restarts.
#[derive(Clone)]
pub struct DiskCache {
    inner: Arc<Inner>,
}

fn value_key(id: &ChunkId) -> [u8; 33] {
    let mut k = [b'c'; 33];
    k[1..].copy_from_slice(&id.0);
    k
}

fn meta_key(id: &ChunkId) -> [u8; 33] {
    let mut k = [b'a'; 33];
    k[1..].copy_from_slice(&id.0);
    k
}

fn meta_value(seq: u64, size: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&seq.to_le_bytes());
    v[8..].copy_from_slice(&size.to_le_bytes());
    v
}

impl DiskCache {
    /// Opens (or creates) the cache in `dir` with a byte budget.
    pub fn open(dir: &Path, budget: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_enable_blob_files(true);
        options.set_min_blob_size(BLOB_MIN_BYTES);
        // Blob garbage collection rewrites live blobs during compactions: pure cost while the
        // cache only grows (it doubled the CPU of a cold read). It is switched on at the first
        // eviction, when there is garbage to collect.
        options.set_enable_blob_gc(false);
        options.set_compression_type(rocksdb::DBCompressionType::None);
        let db = DB::open(&options, dir).map_err(|e| Error::DiskCache {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut lru = Lru::default();
        let mut ages: Vec<(u64, ChunkId, u64)> = Vec::new();
        for item in db.iterator(IteratorMode::From(b"a", rocksdb::Direction::Forward)) {
            let (key, value) = item.map_err(|e| Error::DiskCache {
                path: dir.to_path_buf(),
                reason: e.to_string(),
            })?;
            if key.first() != Some(&b'a') {
                break;
            }
            if key.len() != 33 || value.len() != 16 {
                continue;
            }
            let seq = u64::from_le_bytes(value[..8].try_into().expect("8 bytes"));
            let size = u64::from_le_bytes(value[8..].try_into().expect("8 bytes"));
            ages.push((seq, ChunkId::from_slice(&key[1..]), size));
        }
        ages.sort();
        for (_, id, size) in ages {
            lru.touch(id, size);
        }
        let cache = DiskCache {
            inner: Arc::new(Inner {
                db,
                path: dir.to_path_buf(),
                budget,
                lru: Mutex::new(lru),
                blob_gc_on: AtomicBool::new(false),
            }),
        };
        cache.inner.evict_to_budget(0)?;
        Ok(cache)
    }

    /// Bytes of chunk data held.
    pub fn used_bytes(&self) -> u64 {
        self.inner.lru.lock().expect("disk cache lock").used
    }

    /// Number of chunks held.
    pub fn len(&self) -> usize {
        self.inner
            .lru
            .lock()
            .expect("disk cache lock")
            .entries
            .len()
    }

    /// True when the cache holds `id` (from the in-memory index; no disk read).
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.inner
            .lru
            .lock()
            .expect("disk cache lock")
            .entries
            .contains_key(id)
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes chunks still held in RocksDB's memtable to disk. Inserts skip the write-ahead log,
    /// so until a flush a crash forgets them (never tears them); long-running holders (the cache
    /// server) call this periodically and on shutdown, and dropping the cache does it too.
    pub async fn flush(&self) -> Result<()> {
        self.blocking(|inner| inner.db.flush().map_err(|e| inner.db_error(e)))
            .await
    }

    /// The directory of the cache.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::DiskCache {
                path: self.inner.path.clone(),
                reason: e.to_string(),
            })?
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.db.flush() {
            tracing::warn!(path = %self.path.display(), error = %e, "could not flush the disk cache on close");
        }
    }
}

impl Inner {
    fn db_error(&self, e: rocksdb::Error) -> Error {
        Error::DiskCache {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// Evicts least recently used chunks until `incoming` more bytes fit in the budget.
    fn evict_to_budget(&self, incoming: u64) -> Result<()> {
        let mut batch = WriteBatch::default();
        {
            let mut lru = self.lru.lock().expect("disk cache lock");
            while lru.used + incoming > self.budget {
                let Some((_, id)) = lru.by_age.iter().next().map(|(s, id)| (*s, *id)) else {
                    break;
                };
                lru.forget(&id);
                batch.delete(value_key(&id));
                batch.delete(meta_key(&id));
            }
        }
        if !batch.is_empty() {
            self.db.write(batch).map_err(|e| self.db_error(e))?;
            if !self.blob_gc_on.swap(true, Ordering::Relaxed) {
                self.db
                    .set_options(&[("enable_blob_garbage_collection", "true")])
                    .map_err(|e| self.db_error(e))?;
            }
        }
        Ok(())
    }
}

impl DiskCache {
    /// Writes `data` under `id` (callers pass verified bytes).
    async fn keep(&self, id: ChunkId, data: Bytes) -> Result<()> {
        let size = data.len() as u64;
        if size > self.inner.budget {
            return Ok(());
        }
        self.blocking(move |inner| {
            inner.evict_to_budget(size)?;
            let seq = inner.lru.lock().expect("disk cache lock").touch(id, size);
            let mut batch = WriteBatch::default();
            batch.put(value_key(&id), &data);
            batch.put(meta_key(&id), meta_value(seq, size));
            // No WAL: a crash may lose the newest entries (a cache may forget), never tear one
            // (a batch is applied whole or not at all), and every read is verified anyway.
            // Skipping the WAL halves the bytes written when a cold read fills the cache.
            let mut no_wal = WriteOptions::default();
            no_wal.disable_wal(true);
            inner
                .db
                .write_opt(batch, &no_wal)
                .map_err(|e| inner.db_error(e))
        })
        .await
    }

    /// Writes bytes that need not match `id`: a copy rotted on disk, for the tier conformance
    /// suite (a reader must notice, drop it and ask the next tier).
    #[cfg(any(test, feature = "conformance"))]
    pub async fn insert_rotten(&self, id: ChunkId, data: Bytes) -> Result<()> {
        self.keep(id, data).await
    }
}

#[async_trait]
impl ChunkSource for DiskCache {
    fn name(&self) -> &str {
        "disk"
    }

    async fn fetch(&self, chunk: &ChunkRef) -> Result<Option<Bytes>> {
        let id = chunk.id;
        self.blocking(move |inner| {
            // RocksDB's own blob checksums would hash every byte a second time (a third of a
            // warm read's CPU): the tiers verify each chunk against its blake3 id anyway.
            let mut unchecked = ReadOptions::default();
            unchecked.set_verify_checksums(false);
            let Some(value) = inner
                .db
                .get_opt(value_key(&id), &unchecked)
                .map_err(|e| inner.db_error(e))?
            else {
                return Ok(None);
            };
            let size = value.len() as u64;
            let seq = inner.lru.lock().expect("disk cache lock").touch(id, size);
            // Last-use order is a hint: written without the WAL, it costs little on the read path,
            // and a write that fails (a full disk) does not fail the read.
            let mut quiet = WriteOptions::default();
            quiet.disable_wal(true);
            if let Err(e) = inner.db.put_opt(meta_key(&id), meta_value(seq, size), &quiet) {
                tracing::debug!(chunk = %id, error = %e, "could not note a disk cache chunk's last use");
            }
            Ok(Some(Bytes::from(value)))
        })
        .await
    }
}

#[async_trait]
impl ChunkCache for DiskCache {
    async fn insert(&self, chunk: VerifiedChunk) -> Result<()> {
        self.keep(chunk.id(), chunk.into_bytes()).await
    }

    async fn remove(&self, id: &ChunkId) -> Result<()> {
        let id = *id;
        self.blocking(move |inner| {
            inner.lru.lock().expect("disk cache lock").forget(&id);
            let mut batch = WriteBatch::default();
            batch.delete(value_key(&id));
            batch.delete(meta_key(&id));
            inner.db.write(batch).map_err(|e| inner.db_error(e))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier::test_support::chunk;

    #[tokio::test]
    async fn survives_restart_and_evicts_oldest_over_budget() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (chunk(1, 100_000), chunk(2, 100_000), chunk(3, 100_000));
        {
            let cache = DiskCache::open(dir.path(), 250_000).unwrap();
            cache.insert(a.0.clone()).await.unwrap();
            cache.insert(b.0.clone()).await.unwrap();
            assert_eq!(&cache.fetch(&a.1).await.unwrap().unwrap(), a.0.bytes());
        }
        let cache = DiskCache::open(dir.path(), 250_000).unwrap();
        assert_eq!(cache.used_bytes(), 200_000, "accounting survives restart");
        assert_eq!(&cache.fetch(&b.1).await.unwrap().unwrap(), b.0.bytes());
        // a was used after b before the restart... but b was just read, so a is now the oldest.
        cache.insert(c.0.clone()).await.unwrap();
        assert!(cache.fetch(&a.1).await.unwrap().is_none());
        assert!(cache.fetch(&b.1).await.unwrap().is_some());
        assert!(cache.fetch(&c.1).await.unwrap().is_some());
        assert_eq!(cache.len(), 2);
        drop(cache);
        let smaller = DiskCache::open(dir.path(), 150_000).unwrap();
        assert_eq!(
            smaller.len(),
            1,
            "a smaller budget on reopen evicts down to it"
        );
    }
}
