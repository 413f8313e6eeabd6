//! Store verification: fetch every chunk of a manifest from the object store (no cache) and check
//! it, and check the pack indexes of the packs it uses.

use std::collections::BTreeSet;

use futures::StreamExt;

use crate::chunk_map::ChunkMap;
use crate::manifest::{FileKind, Manifest};
use crate::pack::ChunkRef;
use crate::pack::{index_key, ChunkLocation, PackIndex};
use crate::store::Store;
use crate::tier::{ChunkSource, PackSource};
use crate::{ChunkId, Result};

/// A chunk that failed.
#[derive(Clone, Debug)]
pub struct BadChunk {
    /// Chunk id.
    pub id: ChunkId,
    /// Where the chunk map says it is.
    pub location: ChunkLocation,
    /// What went wrong.
    pub error: String,
}

/// The outcome of [`verify_manifest`].
#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    /// Chunks checked.
    pub chunks: u64,
    /// Raw bytes checked.
    pub bytes: u64,
    /// Chunks that failed.
    pub bad_chunks: Vec<BadChunk>,
    /// Problems with the tree structure or pack indexes (each names object and offset).
    pub other_problems: Vec<String>,
}

impl VerifyReport {
    /// True when nothing failed.
    pub fn is_ok(&self) -> bool {
        self.bad_chunks.is_empty() && self.other_problems.is_empty()
    }
}

/// Checks every chunk of `manifest` straight from the object store, `concurrency` at a time;
/// `on_chunk(raw_bytes)` is called after each chunk (for progress).
pub async fn verify_manifest(
    store: &Store,
    manifest: &Manifest,
    map: &ChunkMap,
    concurrency: usize,
    on_chunk: impl Fn(u64),
) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    match manifest.walk() {
        Ok(nodes) => {
            for (path, inode) in nodes {
                if inode.kind == FileKind::Regular {
                    if let Err(e) = manifest.extents(&inode) {
                        report
                            .other_problems
                            .push(format!("{}: {e}", String::from_utf8_lossy(&path)));
                    }
                }
            }
        }
        Err(e) => report.other_problems.push(e.to_string()),
    }
    let packs: BTreeSet<ChunkId> = map.locations.iter().map(|l| l.pack).collect();
    for pack in packs {
        let key = index_key(&pack);
        if let Err(e) = store
            .get(&key)
            .await
            .and_then(|b| PackIndex::decode(&b, &key))
        {
            report.other_problems.push(e.to_string());
        }
    }
    let source = PackSource::new(store.clone());
    let chunks = manifest.chunks()?;
    let source = &source;
    let mut results = futures::stream::iter(chunks.into_iter().zip(map.locations.iter().copied()))
        .map(|(entry, location)| async move {
            let chunk = ChunkRef {
                id: entry.id,
                raw_len: entry.raw_len,
                location: Some(location),
            };
            let result = source.fetch(&chunk).await;
            (entry, location, result)
        })
        .buffer_unordered(concurrency.max(1));
    while let Some((entry, location, result)) = results.next().await {
        report.chunks += 1;
        report.bytes += entry.raw_len as u64;
        on_chunk(entry.raw_len as u64);
        if let Err(e) = result {
            report.bad_chunks.push(BadChunk {
                id: entry.id,
                location,
                error: e.to_string(),
            });
        }
    }
    report
        .bad_chunks
        .sort_by_key(|b| (b.location.pack, b.location.offset));
    Ok(report)
}
