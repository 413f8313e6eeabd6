//! The object-store tier: a ranged GET of one pack frame, decoded and verified.

use async_trait::async_trait;
use bytes::Bytes;

use super::ChunkSource;
use crate::pack::ChunkRef;
use crate::pack::{decode_frame, pack_key};
use crate::store::Store;
use crate::{Error, Result};

/// Frames this close together in one pack are fetched with one ranged read (the bytes between
/// are read and dropped)...
const RUN_MAX_GAP: u64 = 256 * 1024;
/// ...as long as the read stays this small.
const RUN_MAX_BYTES: u64 = 2 * 1024 * 1024;

/// A relocation table is loaded again at most this often (a chunk still missing after that is
/// reported, not looked up on every read).
const RELOCATIONS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads chunks out of packs in a [`Store`] using their chunk-map locations.
///
/// A location can outlive its pack: `thaw gc` rewrites packs that are mostly garbage and
/// deletes the old ones, while a mount keeps the chunk map it opened with. A chunk whose pack is
/// gone is looked up in the store's pack indexes (loaded on the first such miss, reloaded at
/// most every [`RELOCATIONS_MAX_AGE`]) and read from where it lives now.
pub struct PackSource {
    store: Store,
    relocations: tokio::sync::Mutex<Option<Relocations>>,
}

/// Where every chunk of the store lives, from its pack indexes, as of `loaded`.
struct Relocations {
    loaded: std::time::Instant,
    by_id: std::collections::HashMap<crate::ChunkId, crate::pack::ChunkLocation>,
}

impl PackSource {
    /// A source over `store`.
    pub fn new(store: Store) -> Self {
        PackSource {
            store,
            relocations: tokio::sync::Mutex::new(None),
        }
    }

    /// Where chunk `chunk` lives now, if its pack is not `gone`.
    async fn relocate(&self, chunk: &ChunkRef, gone: &crate::ChunkId) -> Result<Option<ChunkRef>> {
        let mut slot = self.relocations.lock().await;
        let fresh = |r: &Relocations| r.loaded.elapsed() < RELOCATIONS_MAX_AGE;
        let known = slot
            .as_ref()
            .and_then(|r| r.by_id.get(&chunk.id).copied())
            .filter(|l| l.pack != *gone);
        if known.is_none() && !slot.as_ref().is_some_and(fresh) {
            let (indexes, _bad) = self.store.load_pack_indexes().await?;
            let by_id = crate::pack::chunk_locations(&indexes);
            tracing::info!(chunk = %chunk.id, pack = %gone, "pack gone; looking the chunk up in the pack indexes");
            *slot = Some(Relocations {
                loaded: std::time::Instant::now(),
                by_id,
            });
        }
        let location = slot
            .as_ref()
            .and_then(|r| r.by_id.get(&chunk.id).copied())
            .filter(|l| l.pack != *gone && l.raw_len == chunk.raw_len);
        Ok(location.map(|l| ChunkRef {
            location: Some(l),
            ..*chunk
        }))
    }

    /// Reads and decodes one chunk at its location; bytes that fail to decode or verify are
    /// read once more (corruption in transit is transient; a bad pack fails twice).
    async fn fetch_at(&self, chunk: &ChunkRef) -> Result<Bytes> {
        match self.read_decode(chunk).await {
            Err(e) if e.is_corrupt() => {
                reading_again(chunk, &e);
                self.read_decode(chunk).await
            }
            other => other,
        }
    }

    /// One read of a chunk's frame, decoded and verified.
    async fn read_decode(&self, chunk: &ChunkRef) -> Result<Bytes> {
        let location = located(chunk)?;
        let frame = self
            .read_range(&location.pack, location.frame_range(), chunk)
            .await?;
        // Inline: a single fetch is already one of many tasks spread over the runtime's
        // workers, and a hand-off to a blocking thread per chunk costs more than it saves.
        decode_frame(&frame, &chunk.id, &location)
    }
}

#[async_trait]
impl ChunkSource for PackSource {
    fn name(&self) -> &str {
        "store"
    }

    /// Every frame is decoded and checked against its chunk id in [`decode_frame`].
    fn returns_verified(&self) -> bool {
        true
    }

    async fn fetch(&self, chunk: &ChunkRef) -> Result<Option<Bytes>> {
        match self.fetch_at(chunk).await {
            Err(e) if e.is_not_found() => {
                let gone = located(chunk)?.pack;
                match self.relocate(chunk, &gone).await? {
                    Some(moved) => self.fetch_at(&moved).await.map(Some),
                    None => Err(e),
                }
            }
            other => other.map(Some),
        }
    }

    /// Chunks with locations, grouped by pack, in offset order, split where frames are far
    /// apart or a run would grow too long. Chunks without a location are runs of their own (their
    /// fetch reports the missing location).
    fn plan_runs(&self, chunks: Vec<ChunkRef>) -> Vec<Vec<ChunkRef>> {
        let (mut located, unlocated): (Vec<ChunkRef>, Vec<ChunkRef>) =
            chunks.into_iter().partition(|c| c.location.is_some());
        located.sort_by_key(|c| {
            let l = c.location.expect("partitioned");
            (l.pack.0, l.offset)
        });
        let mut runs: Vec<Vec<ChunkRef>> = Vec::new();
        for chunk in located {
            let here = chunk.location.expect("partitioned");
            let joins = runs.last().is_some_and(|run| {
                let first = run[0].location.expect("partitioned");
                let last = run[run.len() - 1].location.expect("partitioned");
                let end = last.frame_range().end;
                last.pack == here.pack
                    && here.offset >= end
                    && here.offset - end <= RUN_MAX_GAP
                    && here.frame_range().end - first.offset <= RUN_MAX_BYTES
            });
            match runs.last_mut() {
                Some(run) if joins => run.push(chunk),
                _ => runs.push(vec![chunk]),
            }
        }
        runs.extend(unlocated.into_iter().map(|c| vec![c]));
        runs
    }

    /// One ranged read for the whole run, then each frame decoded and verified on its own.
    async fn fetch_run(&self, run: &[ChunkRef]) -> Vec<Result<Option<Bytes>>> {
        let (Some(first), Some(last)) = (
            run.first().and_then(|c| c.location),
            run.last().and_then(|c| c.location),
        ) else {
            let mut out = Vec::with_capacity(run.len());
            for chunk in run {
                out.push(self.fetch(chunk).await);
            }
            return out;
        };
        let span = first.offset..last.frame_range().end;
        let bytes = match self.read_range(&first.pack, span.clone(), &run[0]).await {
            Ok(bytes) => bytes,
            // The pack was rewritten by gc: each chunk is looked up where it lives now.
            Err(e) if e.is_not_found() => {
                let mut out = Vec::with_capacity(run.len());
                for chunk in run {
                    out.push(self.fetch(chunk).await);
                }
                return out;
            }
            Err(e) => {
                let shared = std::sync::Arc::new(e);
                return run
                    .iter()
                    .map(|_| Err(Error::Shared(shared.clone())))
                    .collect();
            }
        };
        // Each frame decodes in a task of its own, so a run uses every runtime worker.
        let decodes = run.iter().map(|chunk| {
            let frame = chunk.location.map(|location| {
                let range = location.frame_range();
                bytes.slice((range.start - span.start) as usize..(range.end - span.start) as usize)
            });
            let chunk = *chunk;
            async move {
                match frame {
                    Some(frame) => decode_off_runtime(frame, chunk).await.map(Some),
                    None => located(&chunk).map(|_| None),
                }
            }
        });
        let decoded = futures::future::join_all(decodes).await;
        let mut out = Vec::with_capacity(run.len());
        for (chunk, result) in run.iter().zip(decoded) {
            out.push(match result {
                Err(e) if e.is_corrupt() => {
                    reading_again(chunk, &e);
                    self.read_decode(chunk).await.map(Some)
                }
                other => other,
            });
        }
        out
    }
}

/// Logs that `chunk` came back bad from the store and is read again.
fn reading_again(chunk: &ChunkRef, error: &Error) {
    tracing::warn!(chunk = %chunk.id, %error, "bad bytes from the store; reading the chunk again");
}

/// Decodes and verifies one frame of a run in a runtime task of its own, so the frames of one
/// run decode on several workers at once. (A blocking-pool thread per frame was measured slower:
/// the hand-off costs more than it saves on 2 cores.)
async fn decode_off_runtime(frame: Bytes, chunk: ChunkRef) -> Result<Bytes> {
    let location = located(&chunk)?;
    tokio::spawn(async move { decode_frame(&frame, &chunk.id, &location) })
        .await
        .map_err(|e| Error::ChunkUnavailable {
            id: chunk.id,
            tried: format!("store: the decode task failed: {e}"),
        })?
}

/// The chunk's pack location, or an error saying it has none.
fn located(chunk: &ChunkRef) -> Result<crate::pack::ChunkLocation> {
    chunk.location.ok_or_else(|| Error::ChunkUnavailable {
        id: chunk.id,
        tried: "store: no pack location known for this chunk".into(),
    })
}

impl PackSource {
    /// Reads `range` of a pack; "not found" and "past the end" become errors that name the
    /// pack, the offset and (for the first chunk of the range) the chunk.
    async fn read_range(
        &self,
        pack: &crate::ChunkId,
        range: std::ops::Range<u64>,
        chunk: &ChunkRef,
    ) -> Result<Bytes> {
        let key = pack_key(pack);
        match self.store.get_range(&key, range.clone()).await {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.is_not_found() => Err(Error::PackMissing {
                object: key,
                offset: range.start,
                chunk: chunk.id,
            }),
            // A range past the end is the usual cause: say so with the pack's real size.
            Err(e) => Err(match self.store.size(&key).await {
                Ok(size) if range.end > size => Error::corrupt(
                    key,
                    range.start,
                    format!(
                        "chunk {}: frame ends at {} but the pack is {size} bytes (truncated pack?)",
                        chunk.id, range.end
                    ),
                ),
                _ => e,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::{ChunkLocation, Codec};
    use crate::store::StoreConfig;
    use crate::ChunkId;

    fn at(pack: u8, offset: u64, stored_len: u32) -> ChunkRef {
        ChunkRef {
            id: ChunkId::of(&[
                pack,
                offset as u8,
                (offset >> 8) as u8,
                (offset >> 16) as u8,
            ]),
            raw_len: stored_len,
            location: Some(ChunkLocation {
                pack: ChunkId::of(&[pack]),
                offset,
                stored_len,
                raw_len: stored_len,
                codec: Codec::Raw,
            }),
        }
    }

    #[test]
    fn runs_join_nearby_frames_of_one_pack_only() {
        let dir = tempfile::tempdir().unwrap();
        let source = PackSource::new(Store::open(&StoreConfig::local(dir.path())).unwrap());
        let a0 = at(1, 16, 100); // frame ends at 16 + 48 + 100 = 164
        let a1 = at(1, 164, 100); // adjacent
        let a2 = at(1, 264 + 48 + 1000, 100); // a small gap: same run
        let far = at(1, 10 << 20, 100); // far away: new run
        let b0 = at(2, 16, 100); // another pack
        let mut nowhere = at(3, 0, 1);
        nowhere.location = None;
        let runs = source.plan_runs(vec![far, a2, b0, a0, nowhere, a1]);
        let ids: Vec<Vec<ChunkId>> = runs
            .iter()
            .map(|r| r.iter().map(|c| c.id).collect())
            .collect();
        let (pack1, pack2) = (ChunkId::of(&[1]), ChunkId::of(&[2]));
        let first_pack_first = pack1.0 < pack2.0;
        let expected_1 = vec![vec![a0.id, a1.id, a2.id], vec![far.id]];
        let expected_2 = vec![vec![b0.id]];
        let mut expected = if first_pack_first {
            [expected_1, expected_2].concat()
        } else {
            [expected_2, expected_1].concat()
        };
        expected.push(vec![nowhere.id]);
        assert_eq!(ids, expected);
    }
}
