//! Chunks read straight from the disk cache's files into their destination: one positioned
//! read per segment into the host allocation, or one read of the whole chunk into a pinned
//! staging buffer on a GPU. No buffer in between, so each byte is copied once out of the page
//! cache, as `cat` copies it.
//!
//! Trust follows the disk cache's model (see `thaw_core::tier::DiskCache`): bytes of a trusted
//! object were verified when written and are not hashed again; an untrusted object's bytes are
//! hashed in chunk order while they are read, and a mismatch sends the chunk to the tiers.

use std::os::unix::fs::FileExt;

use thaw_core::tier::ChunkInFile;
use thaw_core::ChunkId;

use crate::plan::{ChunkJob, Segment};

/// Reads `job`'s chunk from `source`, each segment straight into `place(segment)` (a slice of
/// exactly the segment's length). When `source` is not trusted every chunk byte is hashed, in
/// order, reading bytes no segment needs into a scratch buffer. Returns `false` when the bytes
/// are not the chunk's (a short file included): nothing read may then be used.
pub(crate) fn read_segments<'a>(
    source: &ChunkInFile,
    job: &ChunkJob,
    mut place: impl FnMut(&Segment) -> &'a mut [u8],
) -> std::io::Result<bool> {
    let mut segments: Vec<&Segment> = job.segments.iter().collect();
    segments.sort_by_key(|s| s.chunk_offset);
    let verify = !source.trusted;
    let mut hasher = blake3::Hasher::new();
    let mut hashed_to = 0u64;
    let mut scratch = Vec::new();
    for segment in segments {
        let start = segment.chunk_offset as u64;
        if verify && start > hashed_to {
            scratch.resize((start - hashed_to) as usize, 0);
            if !read_exact(source, hashed_to, &mut scratch)? {
                return Ok(false);
            }
            hasher.update(&scratch);
            hashed_to = start;
        }
        let dst = place(segment);
        if !read_exact(source, start, dst)? {
            return Ok(false);
        }
        let end = start + dst.len() as u64;
        if verify && end > hashed_to {
            hasher.update(&dst[(hashed_to - start) as usize..]);
            hashed_to = end;
        }
    }
    if !verify {
        return Ok(true);
    }
    let raw_len = job.chunk.raw_len as u64;
    if raw_len > hashed_to {
        scratch.resize((raw_len - hashed_to) as usize, 0);
        if !read_exact(source, hashed_to, &mut scratch)? {
            return Ok(false);
        }
        hasher.update(&scratch);
    }
    Ok(ChunkId(*hasher.finalize().as_bytes()) == job.chunk.id)
}

/// Reads the whole chunk of `job` into `buffer` (at least the chunk's length), hashing it when
/// `source` is not trusted; `false` when the bytes are not the chunk's.
pub(crate) fn read_whole(
    source: &ChunkInFile,
    job: &ChunkJob,
    buffer: &mut [u8],
) -> std::io::Result<bool> {
    let chunk = &mut buffer[..job.chunk.raw_len as usize];
    if !read_exact(source, 0, chunk)? {
        return Ok(false);
    }
    Ok(source.trusted || ChunkId::of(chunk) == job.chunk.id)
}

/// The outcome of a read into place as the lanes use it: `false` (get the chunk from the tiers)
/// for bytes that are not the chunk's and for a cache file that cannot be read (logged).
pub(crate) fn usable(read: std::io::Result<bool>, job: &ChunkJob) -> bool {
    read.unwrap_or_else(|e| {
        tracing::debug!(chunk = %job.chunk.id, error = %e, "reading a disk cache file failed");
        false
    })
}

/// Fills `buf` from chunk offset `at`; `false` when the file ends first.
fn read_exact(source: &ChunkInFile, at: u64, buf: &mut [u8]) -> std::io::Result<bool> {
    match source.file.read_exact_at(buf, source.offset + at) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thaw_core::pack::ChunkRef;

    fn source(bytes: &[u8], trusted: bool) -> (tempfile::NamedTempFile, ChunkInFile) {
        let file = tempfile::NamedTempFile::new().unwrap();
        // The chunk sits at offset 7 of its object file.
        let mut content = vec![0xEEu8; 7];
        content.extend_from_slice(bytes);
        std::fs::write(file.path(), content).unwrap();
        let source = ChunkInFile {
            file: std::fs::File::open(file.path()).unwrap(),
            offset: 7,
            trusted,
        };
        (file, source)
    }

    fn job(bytes: &[u8], segments: Vec<Segment>) -> ChunkJob {
        ChunkJob {
            chunk: ChunkRef {
                id: ChunkId::of(bytes),
                raw_len: bytes.len() as u32,
                location: None,
            },
            segments,
        }
    }

    #[test]
    fn segments_land_in_place_and_untrusted_bytes_are_checked_gaps_included() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        // A header (0..100) no segment copies, two tensors, a tail nobody copies.
        let segments = vec![
            Segment {
                chunk_offset: 6000,
                dst: 0,
                len: 3000,
            },
            Segment {
                chunk_offset: 100,
                dst: 4096,
                len: 5900,
            },
        ];
        let mut dst = vec![0u8; 4096 + 5900];
        for trusted in [true, false] {
            dst.fill(0);
            let (_keep, source) = source(&bytes, trusted);
            let base = dst.as_mut_ptr();
            let ok = read_segments(&source, &job(&bytes, segments.clone()), |s| unsafe {
                std::slice::from_raw_parts_mut(base.add(s.dst as usize), s.len as usize)
            })
            .unwrap();
            assert!(ok);
            assert_eq!(&dst[..3000], &bytes[6000..9000]);
            assert_eq!(&dst[4096..], &bytes[100..6000]);
        }
        // Rotten bytes in the header are caught only when the object is untrusted.
        let mut rotten = bytes.clone();
        rotten[50] ^= 1;
        for (trusted, expected) in [(true, true), (false, false)] {
            let (_keep, source) = source(&rotten, trusted);
            let base = dst.as_mut_ptr();
            let ok = read_segments(&source, &job(&bytes, segments.clone()), |s| unsafe {
                std::slice::from_raw_parts_mut(base.add(s.dst as usize), s.len as usize)
            })
            .unwrap();
            assert_eq!(ok, expected, "trusted {trusted}");
        }
        // A file shorter than the chunk is never the chunk.
        let (_keep, short) = source(&bytes[..5000], true);
        let mut buffer = vec![0u8; bytes.len()];
        assert!(!read_whole(&short, &job(&bytes, Vec::new()), &mut buffer).unwrap());
        let (_keep, whole) = source(&bytes, false);
        assert!(read_whole(&whole, &job(&bytes, Vec::new()), &mut buffer).unwrap());
        assert_eq!(buffer, bytes);
    }
}
