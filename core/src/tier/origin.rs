//! The object-store tier: a ranged GET of one pack frame, decoded and verified.

use async_trait::async_trait;
use bytes::Bytes;

use super::{ChunkRef, ChunkSource};
use crate::pack::{decode_frame, pack_key};
use crate::store::Store;
use crate::{Error, Result};

/// Reads chunks out of packs in a [`Store`] using their chunk-map locations.
pub struct PackSource {
    store: Store,
}

impl PackSource {
    /// A source over `store`.
    pub fn new(store: Store) -> Self {
        PackSource { store }
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
        let location = chunk.location.ok_or_else(|| Error::ChunkUnavailable {
            id: chunk.id,
            tried: "store: no pack location known for this chunk".into(),
        })?;
        let key = pack_key(&location.pack);
        let range = location.frame_range();
        let frame = match self.store.get_range(&key, range.clone()).await {
            Ok(frame) => frame,
            Err(e) if e.is_not_found() => {
                return Err(Error::corrupt(
                    key,
                    location.offset,
                    format!("chunk {}: pack is missing from the store", chunk.id),
                ))
            }
            Err(e) => {
                // A range past the end is the usual cause: say so with the pack's real size.
                return Err(match self.store.size(&key).await {
                    Ok(size) if range.end > size => Error::corrupt(
                        key,
                        location.offset,
                        format!("chunk {}: frame ends at {} but the pack is {size} bytes (truncated pack?)", chunk.id, range.end),
                    ),
                    _ => e,
                });
            }
        };
        decode_frame(&frame, &chunk.id, &location).map(Some)
    }
}
