//! Looking into a disk cache directory from the outside: its object files, their bytes, and
//! the largest chunk file (the one tests rot).

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

/// Bytes of the object files under the cache directory (what the budget must bound).
pub fn object_bytes(cache: &Path) -> u64 {
    ["chunks", "files"]
        .iter()
        .filter(|d| cache.join(d).is_dir())
        .flat_map(|d| {
            files_under(&cache.join(d))
                .into_iter()
                .map(move |f| cache.join(d).join(f))
        })
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

/// The path of the largest chunk file in the cache directory.
pub fn largest_chunk_file(cache: &Path) -> PathBuf {
    let chunks = cache.join("chunks");
    files_under(&chunks)
        .into_iter()
        .map(|f| chunks.join(f))
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .expect("the cache holds a chunk file")
}
