//! What `thaw cache status|check|prune` report.

use std::path::{Path, PathBuf};

use rocksdb::{IteratorMode, Options, DB};

use super::db_error;
use super::index;
use super::layout::ObjectKind;
use crate::Result;

/// What one object of the cache failed: [`DiskCache::check`] reports and drops each.
#[derive(Clone, Debug)]
pub struct BadObject {
    /// Chunk or whole file.
    pub kind: ObjectKind,
    /// Its file.
    pub path: PathBuf,
    /// What was wrong.
    pub reason: String,
}

/// The result of [`DiskCache::check`].
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    /// Objects read and hashed.
    pub objects: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Objects that failed, now dropped.
    pub bad: Vec<BadObject>,
}

/// The result of [`DiskCache::prune`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Objects deleted.
    pub objects: u64,
    /// Bytes freed.
    pub bytes: u64,
}

/// What a cache holds, as `thaw cache status` prints it.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CacheStatus {
    /// The cache directory.
    pub dir: PathBuf,
    /// Bytes held in objects.
    pub bytes: u64,
    /// Chunk objects.
    pub chunk_files: u64,
    /// Whole-file objects.
    pub whole_files: u64,
    /// Chunk reads and whole-file opens served (lifetime, as of the last flush).
    pub hits: u64,
    /// Reads asked of the cache that it did not hold.
    pub misses: u64,
    /// Another process has the cache open (the status is as of its last flush).
    pub in_use: bool,
}

impl CacheStatus {
    /// The share of reads the cache served, `None` before any.
    pub fn hit_ratio(&self) -> Option<f64> {
        let asked = self.hits + self.misses;
        (asked > 0).then(|| self.hits as f64 / asked as f64)
    }

    /// Reads the status of the cache in `dir` without opening it for writing, so it works while
    /// a mount or cache server holds it.
    pub fn read(dir: &Path) -> Result<CacheStatus> {
        let index_dir = dir.join("index");
        let mut status = CacheStatus {
            dir: dir.to_path_buf(),
            in_use: dir.join("in-use").exists(),
            ..CacheStatus::default()
        };
        if !index_dir.join("CURRENT").exists() {
            return Ok(status);
        }
        let db = DB::open_for_read_only(&Options::default(), &index_dir, false)
            .map_err(|e| db_error(dir, e))?;
        for item in db.iterator(IteratorMode::From(b"o", rocksdb::Direction::Forward)) {
            let (key, value) = item.map_err(|e| db_error(dir, e))?;
            if key.first() != Some(&b'o') {
                break;
            }
            if let Some((kind, size, _, _)) = index::decode_object(&value) {
                status.bytes += size;
                match kind {
                    ObjectKind::Chunk => status.chunk_files += 1,
                    ObjectKind::File => status.whole_files += 1,
                }
            }
        }
        if let Some(stats) = db.get(index::STATS_KEY).map_err(|e| db_error(dir, e))? {
            (status.hits, status.misses) = index::decode_pair(&stats).unwrap_or_default();
        }
        Ok(status)
    }
}
