//! The local disk tier: verified chunks in ordinary files the kernel can read directly, under a
//! byte budget with least-recently-used eviction, surviving restarts.
//!
//! Layout ([`layout`]): one file per chunk (`chunks/`), and one file per whole file content
//! (`files/`) assembled from a file's chunks once all of them are cached, so that a mount can hand
//! the file to the kernel (FUSE passthrough) and a reader can `pread` a chunk straight into place.
//! Objects are written under `tmp/` and renamed into place, so none is ever seen torn; a RocksDB
//! index ([`index`]) records them and their last use. Evicting an object deletes its file, so the
//! budget holds on disk, not only in the index.
//!
//! Trust: every chunk read through [`ChunkSource::fetch`] is verified against its id by
//! [`super::TieredStore`], as before. Whole-file objects handed to the kernel are not re-hashed
//! per read: they were built from verified chunks by this process or one that closed cleanly;
//! after an unclean shutdown (the `in-use` marker was left behind) the index is reconciled with
//! the files and each object is verified again before it is handed out. `thaw cache check`
//! re-verifies everything.

mod index;
mod layout;
mod recovery;
mod report;
mod whole;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use rocksdb::{Options, WriteBatch, WriteOptions, DB};

use super::{ChunkCache, ChunkSource};
use crate::pack::ChunkRef;
use crate::{ChunkId, Error, Result, VerifiedChunk};
pub use index::PlacedChunk;
use index::{Index, Location, Object};
use layout::Layout;
pub use layout::ObjectKind;
use recovery::{discard_old_format, load_records};
pub use report::{BadObject, CacheStatus, CheckReport, PruneReport};
pub use whole::{FileContent, FileSlice, WholeFile};

/// Default disk budget.
pub const DEFAULT_DISK_CACHE_BYTES: u64 = 20 * 1024 * 1024 * 1024;

struct Inner {
    db: DB,
    layout: Layout,
    budget: u64,
    index: Mutex<Index>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Lifetime counts loaded at open.
    past: (u64, u64),
    /// Whole files being prepared, so one file is assembled once at a time.
    preparing: Mutex<std::collections::HashSet<ChunkId>>,
}

/// A chunk's bytes in one of the cache's files: `len` bytes (the chunk's) at `offset` of `file`.
#[derive(Debug)]
pub struct ChunkInFile {
    /// The object file, open for reading.
    pub file: std::fs::File,
    /// Where the chunk starts in it.
    pub offset: u64,
    /// The object was written by this process, or one that closed cleanly, or verified since:
    /// its bytes are the ones verified when it was written.
    pub trusted: bool,
}

/// The file-backed chunk cache with a byte budget; survives restarts. One process opens a cache
/// directory at a time (the index is locked); [`CacheStatus::read`] looks without opening it.
#[derive(Clone)]
pub struct DiskCache {
    inner: Arc<Inner>,
}

fn db_error(dir: &Path, e: rocksdb::Error) -> Error {
    Error::DiskCache {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Writes without the write-ahead log: the index may forget its newest records in a crash
/// (reconciled with the files at the next open), and fills write half the bytes.
fn no_wal() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.disable_wal(true);
    options
}

impl DiskCache {
    /// Opens (or creates) the cache in `dir` with a byte budget. A cache left by an older thaw
    /// (RocksDB values in `dir` itself) is discarded.
    pub fn open(dir: &Path, budget: u64) -> Result<Self> {
        discard_old_format(dir)?;
        let layout = Layout::create(dir).map_err(|e| Error::io(dir, e))?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_compression_type(rocksdb::DBCompressionType::None);
        let db = DB::open(&options, layout.index_dir()).map_err(|e| db_error(dir, e))?;
        // The index is locked now: this process is the cache's only holder.
        let marker = layout.open_marker();
        let unclean = marker.exists();
        std::fs::write(&marker, std::process::id().to_string())
            .map_err(|e| Error::io(&marker, e))?;
        let (objects, past) = load_records(&db, dir)?;
        let inner = Inner {
            db,
            layout,
            budget,
            index: Mutex::new(Index::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            past,
            preparing: Mutex::new(Default::default()),
        };
        let objects = if unclean {
            tracing::warn!(path = %dir.display(), "the disk cache was not closed cleanly; checking its files against its index");
            inner.reconcile(objects)?
        } else {
            inner.layout.clear_tmp().map_err(|e| Error::io(dir, e))?;
            objects
        };
        {
            let mut index = inner.index();
            let mut objects = objects;
            objects.sort_by_key(|(_, o)| o.seq);
            for (key, mut object) in objects {
                object.trusted = !unclean;
                index.add(key, object);
            }
        }
        let cache = DiskCache {
            inner: Arc::new(inner),
        };
        cache.inner.evict_to_budget(0)?;
        Ok(cache)
    }

    /// Bytes held (the size of every object file).
    pub fn used_bytes(&self) -> u64 {
        self.inner.index().used()
    }

    /// Distinct chunks held.
    pub fn len(&self) -> usize {
        self.inner.index().chunk_count()
    }

    /// True when the cache holds `id` (from the in-memory index; no disk read).
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.inner.index().locate(id).is_some()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The byte budget.
    pub fn budget(&self) -> u64 {
        self.inner.budget
    }

    /// What the cache holds now, lifetime hits included.
    pub fn status(&self) -> CacheStatus {
        let index = self.inner.index();
        CacheStatus {
            dir: self.path().to_path_buf(),
            bytes: index.used(),
            chunk_files: index.count_of(ObjectKind::Chunk) as u64,
            whole_files: index.count_of(ObjectKind::File) as u64,
            hits: self.inner.past.0 + self.inner.hits.load(Ordering::Relaxed),
            misses: self.inner.past.1 + self.inner.misses.load(Ordering::Relaxed),
            in_use: false,
        }
    }

    /// Writes the index's records still in memory to disk. Records skip the write-ahead log,
    /// so until a flush a crash forgets them (the next open finds their files and reconciles);
    /// long-running holders (the cache server) call this periodically, and closing does too.
    pub async fn flush(&self) -> Result<()> {
        self.blocking(|inner| inner.flush()).await
    }

    /// The directory of the cache.
    pub fn path(&self) -> &Path {
        self.inner.layout.root()
    }

    /// Re-reads every object and checks it against its hash; drops and reports each bad one.
    /// `on_bytes` is told the bytes of each object checked.
    pub fn check(&self, on_bytes: impl Fn(u64)) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        let keys = self.inner.index().keys_by_age();
        for key in keys {
            let Some(object) = self.inner.index().object(&key).cloned() else {
                continue;
            };
            let path = self.inner.layout.path(object.kind, &key);
            report.objects += 1;
            report.bytes += object.size;
            match self.inner.verify_object(&key, &object) {
                Ok(()) => self.inner.index().trust(&key),
                Err(reason) => {
                    self.inner.drop_object(&key)?;
                    report.bad.push(BadObject {
                        kind: object.kind,
                        path,
                        reason,
                    });
                }
            }
            on_bytes(object.size);
        }
        Ok(report)
    }

    /// Deletes least recently used objects until at most `to` bytes are held.
    pub fn prune(&self, to: u64) -> Result<PruneReport> {
        self.inner.evict_until(to)
    }

    /// What the cache can do for a file about to be opened: hand over its whole content
    /// (touching it as used), prepare it, or nothing.
    pub fn whole_file(&self, content: &FileContent<'_>) -> WholeFile {
        let (kind, key) = whole_key(content);
        if !self.whole_is_ready(content) {
            return self.whole_state(content);
        }
        self.inner.index().touch(&key);
        match std::fs::File::open(self.inner.layout.path(kind, &key)) {
            Ok(file) => {
                self.inner.hits.fetch_add(1, Ordering::Relaxed);
                WholeFile::Ready(file)
            }
            Err(_) => {
                let _ = self.inner.drop_object(&key);
                WholeFile::Missing
            }
        }
    }

    /// Whether `content` could be made ready ([`WholeFile::Preparable`]), without opening or
    /// touching anything: for a caller that only wants to start the preparation.
    pub fn whole_is_preparable(&self, content: &FileContent<'_>) -> bool {
        matches!(self.whole_state(content), WholeFile::Preparable)
    }

    /// True when `content` is one trusted object.
    fn whole_is_ready(&self, content: &FileContent<'_>) -> bool {
        let (kind, key) = whole_key(content);
        self.inner
            .index()
            .object(&key)
            .is_some_and(|o| o.kind == kind && o.trusted)
    }

    /// [`WholeFile::Preparable`] or [`WholeFile::Missing`] for content that is not ready.
    fn whole_state(&self, content: &FileContent<'_>) -> WholeFile {
        let (kind, key) = whole_key(content);
        let index = self.inner.index();
        match index.object(&key) {
            Some(object) if object.kind == kind && !object.trusted => WholeFile::Preparable,
            Some(object) if object.kind == kind => WholeFile::Missing,
            _ => {
                let all_cached = content
                    .slices
                    .iter()
                    .all(|s| index.locate(&s.chunk.id).is_some());
                let worth = content.size > 0 && content.size <= self.inner.budget / 2;
                match all_cached && worth {
                    true => WholeFile::Preparable,
                    false => WholeFile::Missing,
                }
            }
        }
    }

    /// Where chunk `id`'s bytes are in the cache's files, for a reader that reads them into
    /// place itself (weights into their destination); counts a hit and touches the object.
    /// `None` when the chunk is not held. Bytes of an untrusted object (see the module
    /// documentation) must be checked against the id before use, and a bad copy reported
    /// with [`DiskCache::forget`].
    pub fn chunk_file(&self, id: &ChunkId) -> Option<ChunkInFile> {
        let (loc, trusted) = {
            let index = self.inner.index();
            let loc = index.locate(id)?;
            (loc, index.object(&loc.key)?.trusted)
        };
        let file = std::fs::File::open(self.inner.layout.path(loc.kind, &loc.key)).ok()?;
        self.inner.note_use(&loc.key);
        self.inner.hits.fetch_add(1, Ordering::Relaxed);
        Some(ChunkInFile {
            file,
            offset: loc.offset,
            trusted,
        })
    }

    /// Evicts the object holding chunk `id` (the store no longer references it: `thaw gc`
    /// freed it); nothing happens when it is not cached. Blocking.
    pub fn evict(&self, id: &ChunkId) -> Result<()> {
        let Some(loc) = self.inner.index().locate(id) else {
            return Ok(());
        };
        self.inner.drop_object(&loc.key)
    }

    /// Drops the object holding chunk `id` (its bytes failed verification). Blocking.
    pub fn forget(&self, id: &ChunkId) -> Result<()> {
        self.inner.drop_bad_chunk(id)
    }

    /// Makes `content` ready for [`DiskCache::whole_file`]: verifies its object when it is not
    /// trusted yet, or assembles it from its cached chunks (each verified on the way). Returns
    /// whether the file is now ready. Blocking; one caller per file at a time does the work.
    pub fn prepare_whole(&self, content: &FileContent<'_>) -> Result<bool> {
        let (kind, key) = whole_key(content);
        if !self.inner.preparing.lock().expect("lock").insert(key) {
            return Ok(false);
        }
        let result = self.inner.prepare(kind, key, content);
        self.inner.preparing.lock().expect("lock").remove(&key);
        result
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::DiskCache {
                path: self.path().to_path_buf(),
                reason: e.to_string(),
            })?
    }

    /// Writes bytes that need not match `id`: a copy rotted on disk, for the tier conformance
    /// suite (a reader must notice, drop it and ask the next tier).
    #[cfg(any(test, feature = "conformance"))]
    pub async fn insert_rotten(&self, id: ChunkId, data: Bytes) -> Result<()> {
        self.blocking(move |inner| inner.keep_chunk(id, &data))
            .await
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        match self.flush() {
            Ok(()) => {
                let _ = std::fs::remove_file(self.layout.open_marker());
            }
            Err(e) => {
                tracing::warn!(path = %self.layout.root().display(), error = %e, "could not flush the disk cache on close")
            }
        }
    }
}

impl Inner {
    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().expect("disk cache index lock")
    }

    fn db_error(&self, e: rocksdb::Error) -> Error {
        db_error(self.layout.root(), e)
    }

    fn flush(&self) -> Result<()> {
        let stats = index::encode_pair(
            self.past.0 + self.hits.load(Ordering::Relaxed),
            self.past.1 + self.misses.load(Ordering::Relaxed),
        );
        self.db
            .put_opt(index::STATS_KEY, stats, &no_wal())
            .map_err(|e| self.db_error(e))?;
        self.db.flush().map_err(|e| self.db_error(e))
    }

    /// Reads `loc`'s bytes from its object file; `None` when the file is gone.
    fn read_at(&self, loc: &Location) -> Result<Option<Vec<u8>>> {
        let path = self.layout.path(loc.kind, &loc.key);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let mut buf = vec![0u8; loc.len as usize];
        match file.read_exact_at(&mut buf, loc.offset) {
            Ok(()) => Ok(Some(buf)),
            // Shorter than its record: not what was written; the caller's verify drops it.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(Some(Vec::new())),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// A cached chunk's bytes, touching its object; `None` when not held.
    fn read_chunk(&self, id: &ChunkId) -> Result<Option<Vec<u8>>> {
        // One retry: the chunk may have moved into a whole-file object between lookup and read.
        for _ in 0..2 {
            let Some(loc) = self.index().locate(id) else {
                return Ok(None);
            };
            if let Some(bytes) = self.read_at(&loc)? {
                self.note_use(&loc.key);
                return Ok(Some(bytes));
            }
            self.index().remove(&loc.key);
        }
        Ok(None)
    }

    /// Records a use of `key`. Last-use order is a hint: written without the WAL, and a write
    /// that fails (a full disk) does not fail the read.
    fn note_use(&self, key: &ChunkId) {
        let Some(seq) = self.index().touch(key) else {
            return;
        };
        if let Err(e) = self
            .db
            .put_opt(index::age_key(key), seq.to_le_bytes(), &no_wal())
        {
            tracing::debug!(object = %key, error = %e, "could not note a disk cache object's last use");
        }
    }

    /// Records a new object (its file is in place) and evicts down to the budget.
    fn record(&self, key: ChunkId, object: Object) -> Result<u64> {
        let mut batch = WriteBatch::default();
        batch.put(index::object_key(&key), index::encode_object(&object));
        let seq = self.index().add(key, object);
        batch.put(index::age_key(&key), seq.to_le_bytes());
        self.db
            .write_opt(batch, &no_wal())
            .map_err(|e| self.db_error(e))?;
        // Fills running side by side each made room for their own object: settle the total.
        self.evict_to_budget(0)?;
        Ok(seq)
    }

    /// Keeps one chunk as its own object (callers pass verified bytes).
    fn keep_chunk(&self, id: ChunkId, data: &[u8]) -> Result<()> {
        let size = data.len() as u64;
        if size > self.budget {
            return Ok(());
        }
        if self.index().object(&id).is_some() {
            self.note_use(&id);
            return Ok(());
        }
        self.evict_to_budget(size)?;
        self.ensure_room(size)?;
        let path = self.layout.path(ObjectKind::Chunk, &id);
        self.layout
            .write_object(ObjectKind::Chunk, &id, |file| file.write_all_at(data, 0))
            .map_err(|e| Error::io(&path, e))?;
        self.record(id, Object::chunk(size, true))?;
        Ok(())
    }

    /// Refuses a write of `bytes` that would leave the cache's file system with less than a
    /// small reserve free: the index (RocksDB) must always be able to write, and on a full disk
    /// its error paths abort the process instead of failing one write.
    fn ensure_room(&self, bytes: u64) -> Result<()> {
        let root = self.layout.root();
        let Some((free, total)) = free_space(root) else {
            return Ok(());
        };
        let reserve = (total / 20).clamp(1 << 20, 256 << 20);
        if free >= bytes.saturating_add(reserve) {
            return Ok(());
        }
        Err(Error::io(
            root,
            std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!(
                    "no room for {bytes} more bytes: {free} bytes free, {reserve} kept free for the cache index"
                ),
            ),
        ))
    }

    /// Drops the object holding chunk `id`, whose bytes failed verification, naming its file.
    fn drop_bad_chunk(&self, id: &ChunkId) -> Result<()> {
        let Some(loc) = self.index().locate(id) else {
            return Ok(());
        };
        tracing::warn!(chunk = %id, path = %self.layout.path(loc.kind, &loc.key).display(), "dropping a disk cache object holding bad bytes");
        self.drop_object(&loc.key)
    }

    /// Forgets object `key` and deletes its file.
    fn drop_object(&self, key: &ChunkId) -> Result<()> {
        let Some(object) = self.index().remove(key) else {
            return Ok(());
        };
        let mut batch = WriteBatch::default();
        batch.delete(index::object_key(key));
        batch.delete(index::age_key(key));
        self.db
            .write_opt(batch, &no_wal())
            .map_err(|e| self.db_error(e))?;
        let path = self.layout.path(object.kind, key);
        self.layout
            .remove(object.kind, key)
            .map_err(|e| Error::io(&path, e))
    }

    /// Evicts least recently used objects until `incoming` more bytes fit in the budget.
    fn evict_to_budget(&self, incoming: u64) -> Result<()> {
        self.evict_until(self.budget.saturating_sub(incoming))
            .map(|_| ())
    }

    /// Evicts least recently used objects until at most `limit` bytes are held. Records go
    /// first, then files: a crash in between leaves files the next open deletes or adopts.
    fn evict_until(&self, limit: u64) -> Result<PruneReport> {
        let mut gone = Vec::new();
        let mut report = PruneReport::default();
        let mut batch = WriteBatch::default();
        {
            let mut index = self.index();
            while index.used() > limit {
                let Some(key) = index.oldest() else { break };
                let object = index.remove(&key).expect("the oldest object is indexed");
                batch.delete(index::object_key(&key));
                batch.delete(index::age_key(&key));
                report.objects += 1;
                report.bytes += object.size;
                gone.push((object.kind, key));
            }
        }
        if gone.is_empty() {
            return Ok(report);
        }
        self.db
            .write_opt(batch, &no_wal())
            .map_err(|e| self.db_error(e))?;
        for (kind, key) in gone {
            if let Err(e) = self.layout.remove(kind, &key) {
                tracing::warn!(object = %key, error = %e, "could not delete an evicted disk cache object");
            }
        }
        Ok(report)
    }
}

/// The object that holds `content` whole: its chunk object when it is one whole chunk, else
/// its file object.
fn whole_key(content: &FileContent<'_>) -> (ObjectKind, ChunkId) {
    match content.single_chunk() {
        Some(chunk) => (ObjectKind::Chunk, chunk.id),
        None => (ObjectKind::File, content.key()),
    }
}

/// Bytes available to unprivileged writers and the total size of the file system holding
/// `path`, `None` when it cannot say.
fn free_space(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let unit = stat.f_frsize as u64;
    Some((stat.f_bavail as u64 * unit, stat.f_blocks as u64 * unit))
}

#[async_trait]
impl ChunkSource for DiskCache {
    fn name(&self) -> &str {
        "disk"
    }

    async fn fetch(&self, chunk: &ChunkRef) -> Result<Option<Bytes>> {
        let id = chunk.id;
        let found = self.blocking(move |inner| inner.read_chunk(&id)).await?;
        let counter = if found.is_some() {
            &self.inner.hits
        } else {
            &self.inner.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(found.map(Bytes::from))
    }
}

#[async_trait]
impl ChunkCache for DiskCache {
    async fn insert(&self, chunk: VerifiedChunk) -> Result<()> {
        self.blocking(move |inner| inner.keep_chunk(chunk.id(), chunk.bytes()))
            .await
    }

    async fn remove(&self, id: &ChunkId) -> Result<()> {
        let id = *id;
        self.blocking(move |inner| inner.drop_bad_chunk(&id)).await
    }
}

#[cfg(test)]
mod tests;
