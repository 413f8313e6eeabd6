//! Rewriting packs that are mostly garbage: their live frames are copied, byte for byte and
//! verified, into new packs, and every live chunk map naming an old pack is rewritten to the new
//! locations. The old packs are then unreferenced and go with the rest of the garbage.
//!
//! Order, so that a crash anywhere leaves every map pointing at packs that exist: new packs and
//! their indexes first, then the maps (each one atomic put), and only then (by the caller) the
//! old indexes and packs. Frames go into new packs in (old pack id, offset) order, so a rerun
//! over the same live set writes the same packs with the same ids.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use thaw_core::chunk_map::{chunk_map_key, ChunkMap};
use thaw_core::lock::StoreLock;
use thaw_core::pack::{
    decode_frame, pack_key, ChunkLocation, Codec, EncodedChunk, PackBuilder, FRAME_HEADER_BYTES,
    PACK_TARGET_BYTES,
};
use thaw_core::progress::Progress;
use thaw_core::store::Store;
use thaw_core::ChunkId;

use crate::mark::LiveSet;
use crate::{crash, Result};

/// What repacking did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RepackReport {
    /// Old packs rewritten (now unreferenced).
    pub packs: usize,
    /// New packs written.
    pub new_packs: usize,
    /// Live bytes copied into the new packs.
    pub bytes_copied: u64,
    /// Chunk maps rewritten.
    pub maps_rewritten: usize,
    /// Packs left as they were because a live frame in them did not verify (`thaw check`
    /// lists them).
    pub skipped: Vec<String>,
}

/// Packs whose live bytes are below `below` (a fraction) of their size.
pub fn candidates(live: &LiveSet, pack_sizes: &HashMap<ChunkId, u64>, below: f64) -> Vec<ChunkId> {
    let mut out: Vec<ChunkId> = live
        .frames
        .keys()
        .filter(|pack| {
            pack_sizes
                .get(*pack)
                .is_some_and(|&size| (live.live_bytes(pack) as f64) < size as f64 * below)
        })
        .copied()
        .collect();
    out.sort();
    out
}

/// One live frame of an old pack, checked, as it goes into a new pack.
struct Moving {
    old: (ChunkId, u64),
    chunk: EncodedChunk,
}

/// Reads pack `pack` and returns its live frames, each verified; an error names the first
/// frame that is not right.
async fn live_frames(store: &Store, pack: &ChunkId, frames: &[(u64, u64)]) -> Result<Vec<Moving>> {
    let bytes = store.get(&pack_key(pack)).await?;
    let mut out = Vec::with_capacity(frames.len());
    for &(offset, len) in frames {
        let key = pack_key(pack);
        let end = offset + len;
        if end > bytes.len() as u64 || len < FRAME_HEADER_BYTES {
            return Err(thaw_core::Error::corrupt(
                key,
                offset,
                format!(
                    "frame of {len} bytes runs past the pack's {} bytes",
                    bytes.len()
                ),
            )
            .into());
        }
        let frame = &bytes[offset as usize..end as usize];
        let id = ChunkId::from_slice(&frame[..32]);
        let word = |at: usize| u32::from_le_bytes(frame[at..at + 4].try_into().expect("4 bytes"));
        let codec = Codec::from_code(frame[40]).ok_or_else(|| {
            thaw_core::Error::corrupt(&key, offset + 40, format!("unknown codec {}", frame[40]))
        })?;
        let location = ChunkLocation {
            pack: *pack,
            offset,
            raw_len: word(32),
            stored_len: word(36),
            codec,
        };
        decode_frame(frame, &id, &location)?;
        out.push(Moving {
            old: (*pack, offset),
            chunk: EncodedChunk {
                id,
                raw_len: location.raw_len,
                codec,
                data: frame[FRAME_HEADER_BYTES as usize..].to_vec(),
            },
        });
    }
    Ok(out)
}

/// What a repack leaves for the sweep.
#[derive(Debug, Default)]
pub struct Repacked {
    /// Old packs whose live frames moved: unreferenced now.
    pub old: Vec<ChunkId>,
    /// Packs this run wrote. They may have been in the listing gc took before it repacked (a
    /// killed run wrote the same pack), where they looked unreferenced: they must stay.
    pub new: Vec<ChunkId>,
}

/// Rewrites `packs` (sorted), then the maps of every live manifest that uses them.
pub async fn repack(
    store: &Store,
    live: &LiveSet,
    packs: &[ChunkId],
    lock: Option<&StoreLock>,
    progress: &dyn Progress,
) -> Result<(RepackReport, Repacked)> {
    let mut report = RepackReport::default();
    let total: u64 = packs.iter().map(|p| live.live_bytes(p)).sum();
    progress.start("repacking", total);
    let mut moved: HashMap<(ChunkId, u64), ChunkLocation> = HashMap::new();
    let mut written: Vec<ChunkId> = Vec::new();
    let mut done: Vec<ChunkId> = Vec::new();
    let mut builder = PackBuilder::new();
    let mut pending: Vec<((ChunkId, u64), thaw_core::pack::IndexEntry)> = Vec::new();
    for pack in packs {
        let frames = live.frames.get(pack).map(Vec::as_slice).unwrap_or_default();
        let moving = match live_frames(store, pack, frames).await {
            Ok(moving) => moving,
            Err(e) => {
                tracing::warn!(pack = %pack, error = %e, "not repacking a pack with a bad live frame");
                report.skipped.push(e.to_string());
                continue;
            }
        };
        for frame in moving {
            progress.advance(FRAME_HEADER_BYTES + frame.chunk.data.len() as u64);
            report.bytes_copied += FRAME_HEADER_BYTES + frame.chunk.data.len() as u64;
            pending.push((frame.old, builder.append(&frame.chunk)));
            if builder.len() >= PACK_TARGET_BYTES {
                let full = std::mem::take(&mut builder);
                written.push(seal_and_put(store, full, &mut pending, &mut moved).await?);
                report.new_packs += 1;
            }
        }
        done.push(*pack);
    }
    if !builder.is_empty() {
        written.push(seal_and_put(store, builder, &mut pending, &mut moved).await?);
        report.new_packs += 1;
    }
    progress.finish();
    report.packs = done.len();
    crash::point("repack-packs-written");
    if let Some(lock) = lock {
        lock.check().await?;
    }
    let rewritten: BTreeSet<ChunkId> = done
        .iter()
        .flat_map(|p| live.pack_users.get(p).into_iter().flatten().copied())
        .collect();
    for (i, manifest) in rewritten.iter().enumerate() {
        if i == rewritten.len() / 2 {
            crash::point("repack-maps-half");
        }
        let key = chunk_map_key(manifest);
        let mut map = ChunkMap::decode(&store.get(&key).await?, &key)?;
        for location in &mut map.locations {
            if let Some(new) = moved.get(&(location.pack, location.offset)) {
                *location = *new;
            }
        }
        store.put_chunk_map(&map).await?;
        report.maps_rewritten += 1;
    }
    crash::point("repack-maps-written");
    written.sort();
    Ok((
        report,
        Repacked {
            old: done,
            new: written,
        },
    ))
}

/// Seals `builder`, uploads the pack and its index, and records where each pending frame went;
/// returns the new pack's id.
async fn seal_and_put(
    store: &Store,
    builder: PackBuilder,
    pending: &mut Vec<((ChunkId, u64), thaw_core::pack::IndexEntry)>,
    moved: &mut HashMap<(ChunkId, u64), ChunkLocation>,
) -> Result<ChunkId> {
    let sealed = builder.seal();
    store.put_pack(&sealed).await?;
    for (old, entry) in pending.drain(..) {
        moved.insert(old, entry.location(sealed.id));
    }
    Ok(sealed.id)
}
