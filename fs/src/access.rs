//! The narrow interface the read path, readahead and prefetch have over a mounted volume, so
//! each is written (and unit-tested) against it instead of against [`crate::Volume`] itself.

use std::future::Future;

use bytes::Bytes;
use thaw_core::manifest::{Extent, InodeNo};
use thaw_core::pack::ChunkRef;

use crate::ReadError;

/// How chunks of a mounted manifest are read, by chunk table index.
pub(crate) trait ChunkAccess: Send + Sync + 'static {
    /// An application's read of the chunk of `extent` for file `ino`: its first read is noted
    /// (access trace, prefetch accounting), then the verified bytes come through the tiers.
    fn read_chunk(
        &self,
        extent: &Extent,
        ino: InodeNo,
    ) -> impl Future<Output = Result<Bytes, ReadError>> + Send;

    /// Whether an application has read chunk `index` already.
    fn was_read(&self, index: u32) -> bool;

    /// The tier request (id, length, pack location) of chunk `index`.
    fn chunk_ref(&self, index: u32) -> thaw_core::Result<ChunkRef>;

    /// Whether the local disk cache holds this chunk already (background work skips it).
    fn is_cached(&self, chunk: &ChunkRef) -> bool;

    /// The bytes readahead may have in flight across the volume's files (KiB permits).
    fn readahead_budget(&self) -> std::sync::Arc<tokio::sync::Semaphore>;

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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

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
        /// How long each background fetch takes.
        pub(crate) delay: Option<Duration>,
        pub(crate) in_flight: AtomicUsize,
        pub(crate) peak: AtomicUsize,
    }

    impl FakeVolume {
        /// `count` chunks of 10 bytes, chunk `i` all `i`.
        pub(crate) fn with_chunks(count: usize) -> Self {
            FakeVolume {
                chunks: (0..count).map(|i| Bytes::from(vec![i as u8; 10])).collect(),
                ..FakeVolume::default()
            }
        }

        /// The most background fetches that were in flight at once.
        pub(crate) fn peak_in_flight(&self) -> usize {
            self.peak.load(Ordering::SeqCst)
        }

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
        async fn read_chunk(&self, extent: &Extent, _ino: InodeNo) -> Result<Bytes, ReadError> {
            self.application_reads.lock().unwrap().push(extent.chunk);
            self.get(extent.chunk).await
        }

        fn was_read(&self, index: u32) -> bool {
            self.already_read.contains(&index)
        }

        fn is_cached(&self, _chunk: &ChunkRef) -> bool {
            false
        }

        fn readahead_budget(&self) -> std::sync::Arc<tokio::sync::Semaphore> {
            crate::read::readahead_budget()
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
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            if let Some(delay) = self.delay {
                tokio::time::sleep(delay).await;
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            let mut out = Vec::new();
            for index in indexes {
                out.push(self.get(index).await.map_err(|e| e.source));
            }
            out
        }
    }
}
