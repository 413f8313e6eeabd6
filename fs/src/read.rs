//! Reads of an open file: file ranges to chunk slices, fetched concurrently, and a readahead
//! window that grows while a reader goes through the file in order.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use thaw_core::manifest::{Extent, InodeNo};
use thaw_core::pack::ChunkRef;

use crate::access::ChunkAccess;
use crate::ReadError;

/// Readahead starts at this many bytes past a sequential read...
const READAHEAD_MIN: u64 = 1 << 20;
/// ...and doubles with each further sequential read up to this.
const READAHEAD_MAX: u64 = 64 << 20;
/// Chunk bytes the readahead of all files may have in flight at once (one full window): many
/// files read in parallel share it instead of each holding its own window in memory.
pub(crate) const READAHEAD_IN_FLIGHT: usize = 64 << 20;

/// The readahead budget of a volume, in KiB permits ([`READAHEAD_IN_FLIGHT`]).
pub(crate) fn readahead_budget() -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(READAHEAD_IN_FLIGHT >> 10))
}

/// A regular file being read: its extents (parsed once) and its readahead state. One per inode,
/// shared by every reader of the file.
pub(crate) struct FileReader {
    ino: InodeNo,
    size: u64,
    extents: Vec<Extent>,
    readahead: Mutex<Readahead>,
}

/// Where the last read ended and how far ahead to fetch.
#[derive(Debug, Default)]
struct Readahead {
    next_offset: u64,
    window: u64,
    issued_until: u64,
}

impl Readahead {
    /// Notes a read of `offset..end`; returns the range to fetch ahead, if any.
    fn on_read(&mut self, offset: u64, end: u64, file_size: u64) -> Option<(u64, u64)> {
        if offset == self.next_offset {
            self.window = (self.window * 2).clamp(READAHEAD_MIN, READAHEAD_MAX);
        } else {
            self.window = 0;
            self.issued_until = 0;
        }
        self.next_offset = end;
        if self.window == 0 {
            return None;
        }
        let start = end.max(self.issued_until);
        let stop = end.saturating_add(self.window).min(file_size);
        if start >= stop {
            return None;
        }
        self.issued_until = stop;
        Some((start, stop))
    }
}

impl FileReader {
    /// The reader of file `ino` of `size` bytes made of `extents` (in file order).
    pub(crate) fn new(ino: InodeNo, size: u64, extents: Vec<Extent>) -> Self {
        FileReader {
            ino,
            size,
            extents,
            readahead: Mutex::new(Readahead::default()),
        }
    }

    /// The file's size.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The file's extents, in file order.
    pub(crate) fn extents(&self) -> &[Extent] {
        &self.extents
    }

    /// The extents that overlap `offset..end`.
    fn extents_in(&self, offset: u64, end: u64) -> &[Extent] {
        let first = self
            .extents
            .partition_point(|e| e.file_offset + e.len as u64 <= offset);
        let count = self.extents[first..]
            .iter()
            .take_while(|e| e.file_offset < end)
            .count();
        &self.extents[first..first + count]
    }

    /// Bytes `offset..offset+size` of the file (fewer at its end; holes read as zeros).
    pub(crate) async fn read<V: ChunkAccess>(
        &self,
        volume: &Arc<V>,
        offset: u64,
        size: u32,
    ) -> Result<Bytes, ReadError> {
        let end = offset.saturating_add(size as u64).min(self.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        self.start_readahead(volume, offset, end);
        let extents = self.extents_in(offset, end);
        let ino = self.ino;
        let chunks =
            futures::future::try_join_all(extents.iter().map(|e| volume.read_chunk(e, ino)))
                .await?;
        // One extent covering the whole range: hand out a slice of the chunk, no copy.
        if let ([extent], [chunk]) = (extents, chunks.as_slice()) {
            if extent.file_offset <= offset && extent.file_offset + extent.len as u64 >= end {
                let start = extent.chunk_offset as usize + (offset - extent.file_offset) as usize;
                return Ok(chunk.slice(start..start + (end - offset) as usize));
            }
        }
        let mut out = BytesMut::zeroed((end - offset) as usize);
        for (extent, chunk) in extents.iter().zip(&chunks) {
            let from = extent.file_offset.max(offset);
            let to = (extent.file_offset + extent.len as u64).min(end);
            let in_chunk = extent.chunk_offset as usize + (from - extent.file_offset) as usize;
            out[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&chunk[in_chunk..in_chunk + (to - from) as usize]);
        }
        Ok(out.freeze())
    }

    /// Fetches the chunks of the readahead window in the background (into the caches).
    fn start_readahead<V: ChunkAccess>(&self, volume: &Arc<V>, offset: u64, end: u64) {
        let ahead = self
            .readahead
            .lock()
            .expect("readahead lock")
            .on_read(offset, end, self.size);
        let Some((start, stop)) = ahead else { return };
        let mut chunks: Vec<ChunkRef> = self
            .extents_in(start, stop)
            .iter()
            .filter(|e| !volume.was_read(e.chunk))
            .filter_map(|e| volume.chunk_ref(e.chunk).ok())
            // What the disk cache holds is read when asked for: fetching it ahead would only
            // copy it into memory (and push the chunks readers are using out of the memory tier).
            .filter(|c| !volume.is_cached(c))
            .collect();
        chunks.dedup_by_key(|c| c.id);
        if chunks.is_empty() {
            return;
        }
        // One batch through the tiers: cache hits are skipped, the misses come in runs (one
        // ranged read per run of adjacent frames), every frame decodes on its own core.
        // It waits for its share of the volume's readahead budget, and holds it until the
        // chunks are in the caches.
        let kib: u64 = chunks
            .iter()
            .map(|c| u64::from(c.raw_len))
            .sum::<u64>()
            .div_ceil(1024);
        let budget = volume.readahead_budget();
        let permits = (kib as u32).clamp(1, (READAHEAD_IN_FLIGHT >> 10) as u32);
        let volume = volume.clone();
        tokio::spawn(async move {
            let Ok(_held) = budget.acquire_many_owned(permits).await else {
                return;
            };
            volume.fetch_many(&chunks).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::fake::FakeVolume;

    fn extent(file_offset: u64, chunk: u32, chunk_offset: u32, len: u32) -> Extent {
        Extent {
            file_offset,
            chunk,
            chunk_offset,
            len,
        }
    }

    #[tokio::test]
    async fn a_read_stitches_chunk_slices_and_zero_holes() {
        let volume = Arc::new(FakeVolume {
            chunks: vec![
                Bytes::from(vec![1u8; 100]),
                Bytes::from((0..60u8).collect::<Vec<_>>()),
            ],
            ..FakeVolume::default()
        });
        // 0..100 chunk 0, a hole 100..200, 200..250 bytes 10..60 of chunk 1.
        let file = FileReader::new(7, 250, vec![extent(0, 0, 0, 100), extent(200, 1, 10, 50)]);
        let all = file.read(&volume, 0, 4096).await.unwrap();
        assert_eq!(all.len(), 250, "a read stops at the end of the file");
        assert!(all[..100].iter().all(|&b| b == 1));
        assert!(all[100..200].iter().all(|&b| b == 0), "holes read as zeros");
        assert_eq!(&all[200..], &(10..60u8).collect::<Vec<_>>()[..]);
        // Inside one extent: a slice of the chunk.
        assert_eq!(
            &file.read(&volume, 210, 5).await.unwrap()[..],
            &[20, 21, 22, 23, 24]
        );
        assert!(file.read(&volume, 250, 10).await.unwrap().is_empty());
        assert_eq!(*volume.application_reads.lock().unwrap(), [0, 1, 1]);
    }

    #[tokio::test]
    async fn a_failed_chunk_fails_the_read_naming_it() {
        let volume = Arc::new(FakeVolume {
            chunks: vec![Bytes::from(vec![1u8; 10]), Bytes::from(vec![2u8; 10])],
            failing: [1].into(),
            ..FakeVolume::default()
        });
        let file = FileReader::new(1, 20, vec![extent(0, 0, 0, 10), extent(10, 1, 0, 10)]);
        assert_eq!(file.read(&volume, 0, 10).await.unwrap().len(), 10);
        let err = file.read(&volume, 0, 20).await.unwrap_err();
        assert_eq!(err.chunk_index, 1);
    }

    #[tokio::test]
    async fn sequential_reads_fetch_ahead_what_was_not_read() {
        let chunk = Bytes::from(vec![3u8; 1 << 20]);
        let volume = Arc::new(FakeVolume {
            chunks: vec![chunk; 4],
            already_read: [2].into(),
            ..FakeVolume::default()
        });
        let extents = (0..4)
            .map(|i| extent(i as u64 * (1 << 20), i, 0, 1 << 20))
            .collect();
        let file = FileReader::new(1, 4 << 20, extents);
        file.read(&volume, 0, 4096).await.unwrap();
        file.read(&volume, 4096, 4096).await.unwrap();
        // The readahead task runs on the runtime: give it its turn.
        for _ in 0..100 {
            if !volume.background_fetches.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let fetched = volume.background_fetches.lock().unwrap().clone();
        assert!(
            fetched.contains(&1),
            "the next chunk is fetched ahead: {fetched:?}"
        );
        assert!(
            !fetched.contains(&2),
            "a chunk already read is not fetched again: {fetched:?}"
        );
    }

    #[test]
    fn the_readahead_window_grows_with_sequential_reads_and_resets_on_a_seek() {
        let mut ra = Readahead::default();
        let size = 1 << 30;
        assert_eq!(
            ra.on_read(0, 131072, size),
            Some((131072, 131072 + READAHEAD_MIN))
        );
        // Next sequential read: window doubles; only the part not yet issued is fetched.
        let second = ra.on_read(131072, 262144, size).unwrap();
        assert_eq!(second, (131072 + READAHEAD_MIN, 262144 + 2 * READAHEAD_MIN));
        assert_eq!(
            ra.on_read(100 << 20, (100 << 20) + 4096, size),
            None,
            "a seek resets"
        );
        let mut offset = (100 << 20) + 4096;
        for _ in 0..20 {
            ra.on_read(offset, offset + 4096, size);
            offset += 4096;
        }
        assert_eq!(ra.window, READAHEAD_MAX, "the window is capped");
        assert_eq!(
            ra.on_read(size - 10, size, size),
            None,
            "nothing past the end"
        );
    }
}
