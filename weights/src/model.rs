//! The safetensors files of a model manifest, their headers read through the chunk tiers.
//!
//! Only the first bytes of each file are fetched (the 8-byte length and the JSON header); the
//! header is validated by [`thaw_core::safetensors`] again here, whatever the indexer checked,
//! because a manifest made by `thaw index dir` (or an older indexer) never went through it.

use std::ops::Range;

use thaw_core::chunk_map::ChunkMap;
use thaw_core::manifest::{FileKind, Inode, Manifest};
use thaw_core::safetensors::{self, SafetensorsHeader};
use thaw_core::tier::TieredStore;

use crate::{Result, WeightsError};

/// One safetensors file of a model: its path in the manifest, inode and validated header.
#[derive(Clone, Debug)]
pub struct ModelFile {
    /// Path inside the manifest (`model-00001-of-00002.safetensors`).
    pub path: String,
    /// The file's inode (size and extents).
    pub inode: Inode,
    /// Its validated header.
    pub header: SafetensorsHeader,
}

/// Every regular `*.safetensors` file of `manifest`, in path order, with validated headers.
/// `name` (a tag or id) names the manifest in errors.
pub async fn model_files(
    tiers: &TieredStore,
    manifest: &Manifest,
    map: &ChunkMap,
    name: &str,
) -> Result<Vec<ModelFile>> {
    let mut files = Vec::new();
    for (path, inode) in manifest.walk()? {
        if inode.kind != FileKind::Regular || !path.ends_with(b".safetensors") {
            continue;
        }
        let path = String::from_utf8_lossy(&path).into_owned();
        // The first chunk holds the length and, nearly always, the whole header.
        let first_chunk = manifest
            .extents(&inode)?
            .first()
            .filter(|e| e.file_offset == 0)
            .map_or(8, |e| e.len as u64);
        let prefix_len = first_chunk.max(8).min(inode.size);
        let mut prefix = read_range(tiers, manifest, map, &inode, 0..prefix_len).await?;
        let n = safetensors::header_len(&path, &prefix, inode.size)?;
        if 8 + n > prefix.len() as u64 {
            let rest = prefix.len() as u64..8 + n;
            prefix.extend(read_range(tiers, manifest, map, &inode, rest).await?);
        }
        let header = safetensors::parse_header(&path, &prefix[8..8 + n as usize], inode.size)?;
        files.push(ModelFile {
            path,
            inode,
            header,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    if files.is_empty() {
        return Err(WeightsError::NoSafetensors {
            manifest: name.to_string(),
        });
    }
    Ok(files)
}

/// Bytes `range` of a regular file (holes read as zeros), fetched through the tiers.
pub async fn read_range(
    tiers: &TieredStore,
    manifest: &Manifest,
    map: &ChunkMap,
    inode: &Inode,
    range: Range<u64>,
) -> Result<Vec<u8>> {
    let mut out = vec![0u8; (range.end - range.start) as usize];
    for extent in manifest.extents(inode)? {
        let start = extent.file_offset.max(range.start);
        let end = (extent.file_offset + extent.len as u64).min(range.end);
        if start >= end {
            continue;
        }
        let chunk = map.chunk_ref(manifest, extent.chunk)?;
        let data = tiers.get(&chunk).await?;
        let from = extent.chunk_offset as u64 + (start - extent.file_offset);
        let needed = from + (end - start);
        let piece =
            data.get(from as usize..needed as usize)
                .ok_or_else(|| WeightsError::ShortChunk {
                    chunk: chunk.id.to_hex(),
                    len: data.len(),
                    needed,
                })?;
        out[(start - range.start) as usize..(end - range.start) as usize].copy_from_slice(piece);
    }
    Ok(out)
}
