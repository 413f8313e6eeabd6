//! Size and dedup accounting over one or more manifests (no I/O: manifests and maps in, numbers out).

use std::collections::{HashMap, HashSet};

use crate::chunk_map::ChunkMap;
use crate::manifest::{FileKind, Manifest};
use crate::{ChunkId, Result};

/// Numbers for one manifest alone.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ManifestStats {
    /// Regular files (hard links counted once).
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Other entries (symlinks, devices, fifos, sockets).
    pub others: u64,
    /// Sum of regular file sizes (hard links counted once, holes included).
    pub logical_bytes: u64,
    /// Distinct chunks.
    pub chunks: u64,
    /// Raw bytes of the distinct chunks.
    pub chunk_bytes: u64,
    /// Stored (compressed) bytes of the distinct chunks.
    pub stored_bytes: u64,
}

/// Numbers for several manifests together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CombinedStats {
    /// Distinct chunks across all.
    pub chunks: u64,
    /// Stored bytes of the distinct chunks across all.
    pub stored_bytes: u64,
    /// Sum of each manifest's stored bytes alone.
    pub stored_bytes_separately: u64,
}

impl CombinedStats {
    /// Stored bytes together over the sum alone (lower is better; 1.0 = nothing shared).
    pub fn dedup_ratio(&self) -> f64 {
        if self.stored_bytes_separately == 0 {
            1.0
        } else {
            self.stored_bytes as f64 / self.stored_bytes_separately as f64
        }
    }
}

/// What `thaw stats --json` prints: each manifest alone, then all of them together.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StatsReport {
    /// Each manifest, in the order asked.
    pub manifests: Vec<NamedStats>,
    /// All of them together.
    pub combined: CombinedReport,
}

/// One manifest's numbers under the name it was asked by.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NamedStats {
    /// The tag or id asked for.
    pub name: String,
    /// Its manifest id (hex).
    pub manifest: String,
    /// Its numbers.
    #[serde(flatten)]
    pub stats: ManifestStats,
}

/// [`CombinedStats`] with its dedup ratio.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CombinedReport {
    /// Distinct chunks across all.
    pub chunks: u64,
    /// Stored bytes of the distinct chunks across all.
    pub stored_bytes: u64,
    /// Sum of each manifest's stored bytes alone.
    pub stored_bytes_separately: u64,
    /// [`CombinedStats::dedup_ratio`].
    pub dedup_ratio: f64,
}

impl From<&CombinedStats> for CombinedReport {
    fn from(c: &CombinedStats) -> Self {
        CombinedReport {
            chunks: c.chunks,
            stored_bytes: c.stored_bytes,
            stored_bytes_separately: c.stored_bytes_separately,
            dedup_ratio: c.dedup_ratio(),
        }
    }
}

/// Counts one manifest.
pub fn manifest_stats(manifest: &Manifest, map: &ChunkMap) -> Result<ManifestStats> {
    let mut s = ManifestStats::default();
    let mut seen = HashSet::new();
    for (_, inode) in manifest.walk()? {
        if !seen.insert(inode.ino) {
            continue;
        }
        match inode.kind {
            FileKind::Directory => s.dirs += 1,
            FileKind::Regular => {
                s.files += 1;
                s.logical_bytes += inode.size;
            }
            _ => s.others += 1,
        }
    }
    s.chunks = manifest.chunk_count() as u64;
    for location in &map.locations {
        s.chunk_bytes += location.raw_len as u64;
        s.stored_bytes += location.stored_len as u64;
    }
    Ok(s)
}

/// Combines several manifests: distinct chunks and stored bytes across all of them.
pub fn combined_stats(maps: &[&ChunkMap], manifests: &[&Manifest]) -> Result<CombinedStats> {
    let mut stored: HashMap<ChunkId, u64> = HashMap::new();
    let mut separately = 0;
    for (map, manifest) in maps.iter().zip(manifests) {
        for (i, location) in map.locations.iter().enumerate() {
            let id = manifest.chunk(i as u32)?.id;
            stored.insert(id, location.stored_len as u64);
            separately += location.stored_len as u64;
        }
    }
    Ok(CombinedStats {
        chunks: stored.len() as u64,
        stored_bytes: stored.values().sum(),
        stored_bytes_separately: separately,
    })
}
