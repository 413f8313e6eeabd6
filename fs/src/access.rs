//! The narrow interface the read path, readahead and prefetch have over a mounted volume, so
//! each is written (and unit-tested) against it instead of against [`crate::Volume`] itself.

use std::future::Future;

use bytes::Bytes;
use thaw_core::manifest::InodeNo;
use thaw_core::pack::ChunkRef;

use crate::ReadError;

/// How chunks of a mounted manifest are read, by chunk table index.
pub(crate) trait ChunkAccess: Send + Sync + 'static {
    /// An application's read of chunk `index` for file `ino`: its first read is noted (access
    /// trace, prefetch accounting), then the verified bytes come through the tiers.
    fn read_chunk(
        &self,
        index: u32,
        ino: InodeNo,
    ) -> impl Future<Output = Result<Bytes, ReadError>> + Send;

    /// Whether an application has read chunk `index` already.
    fn was_read(&self, index: u32) -> bool;

    /// The tier request (id, length, pack location) of chunk `index`.
    fn chunk_ref(&self, index: u32) -> thaw_core::Result<ChunkRef>;

    /// The verified bytes of several chunks at once, in order (prefetch, readahead): no
    /// first-read accounting.
    fn fetch_many(
        &self,
        chunks: &[ChunkRef],
    ) -> impl Future<Output = Vec<thaw_core::Result<Bytes>>> + Send;
}

/// A volume stand-in for the read path's and prefetch's unit tests: chunks by index, some
/// already read, some that fail.
#[cfg(test)]
pub(crate) mod fake {
    use std::collections::HashSet;
    use std::sync::Mutex;

    use super::*;
    use thaw_core::ChunkId;

    /// Chunks held in memory; every fetch is logged.
    #[derive(Default)]
    pub(crate) struct FakeVolume {
        pub(crate) chunks: Vec<Bytes>,
        pub(crate) already_read: HashSet<u32>,
        pub(crate) failing: HashSet<u32>,
        pub(crate) application_reads: Mutex<Vec<u32>>,
        pub(crate) background_fetches: Mutex<Vec<u32>>,
    }

    impl FakeVolume {
        async fn get(&self, index: u32) -> Result<Bytes, ReadError> {
            match self.failing.contains(&index) {
                true => Err(ReadError {
                    chunk_index: index,
                    chunk: None,
                    source: thaw_core::Error::ChunkUnavailable {
                        id: ChunkId::of(&index.to_le_bytes()),
                        tried: "fake: failing".into(),
                    },
                }),
                false => Ok(self.chunks[index as usize].clone()),
            }
        }
    }

    impl ChunkAccess for FakeVolume {
        async fn read_chunk(&self, index: u32, _ino: InodeNo) -> Result<Bytes, ReadError> {
            self.application_reads.lock().unwrap().push(index);
            self.get(index).await
        }

        fn was_read(&self, index: u32) -> bool {
            self.already_read.contains(&index)
        }

        fn chunk_ref(&self, index: u32) -> thaw_core::Result<ChunkRef> {
            let bytes = self
                .chunks
                .get(index as usize)
                .ok_or(thaw_core::Error::Corrupt {
                    object: "fake".into(),
                    offset: index as u64,
                    reason: "no such chunk".into(),
                })?;
            Ok(ChunkRef {
                id: ChunkId::of(&index.to_le_bytes()),
                raw_len: bytes.len() as u32,
                location: None,
            })
        }

        async fn fetch_many(&self, chunks: &[ChunkRef]) -> Vec<thaw_core::Result<Bytes>> {
            let indexes = chunks
                .iter()
                .map(|c| {
                    let index = (0..self.chunks.len() as u32)
                        .find(|i| ChunkId::of(&i.to_le_bytes()) == c.id)
                        .expect("a chunk of this volume");
                    self.background_fetches.lock().unwrap().push(index);
                    index
                })
                .collect::<Vec<_>>();
            let mut out = Vec::new();
            for index in indexes {
                out.push(self.get(index).await.map_err(|e| e.source));
            }
            out
        }
    }
}
