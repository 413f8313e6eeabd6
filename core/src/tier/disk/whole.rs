//! Whole files in the cache: how a file's content is named (its file key), whether the cache
//! holds it as one object the kernel can read directly (FUSE passthrough), and assembling
//! that object from the file's verified chunks.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::index::{Object, PlacedChunk};
use super::layout::ObjectKind;
use super::Inner;
use crate::pack::ChunkRef;
use crate::{ChunkId, Error, Result};

/// One slice of a chunk placed at an offset of a file (a manifest extent, with its chunk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileSlice {
    /// Offset in the file.
    pub file_offset: u64,
    /// The chunk the bytes come from.
    pub chunk: ChunkRef,
    /// Offset of the slice inside the chunk.
    pub chunk_offset: u32,
    /// Length of the slice.
    pub len: u32,
}

impl FileSlice {
    /// True when the slice is its whole chunk.
    pub fn is_whole_chunk(&self) -> bool {
        self.chunk_offset == 0 && self.len == self.chunk.raw_len
    }
}

/// A regular file's content as the cache sees it: its size and its slices, in file order,
/// not overlapping (what `Manifest::extents` returns); bytes between slices are zero.
#[derive(Clone, Copy, Debug)]
pub struct FileContent<'a> {
    /// Size in bytes.
    pub size: u64,
    /// Slices in file order.
    pub slices: &'a [FileSlice],
}

impl FileContent<'_> {
    /// The key naming this content's file object: a hash of the size and every slice, so two
    /// files with the same content (in two images) share one object.
    pub fn key(&self) -> ChunkId {
        let mut hasher = blake3::Hasher::new_derive_key("thaw disk cache file object v1");
        hasher.update(&self.size.to_le_bytes());
        for slice in self.slices {
            hasher.update(&slice.file_offset.to_le_bytes());
            hasher.update(&slice.chunk.id.0);
            hasher.update(&slice.chunk_offset.to_le_bytes());
            hasher.update(&slice.len.to_le_bytes());
        }
        ChunkId(*hasher.finalize().as_bytes())
    }

    /// The chunk that is the whole file, for a file that is exactly one whole chunk (most
    /// files: chunking is per file and chunks are 256 KiB or more): its chunk object is the
    /// file, no assembly needed.
    pub fn single_chunk(&self) -> Option<&ChunkRef> {
        match self.slices {
            [only]
                if only.file_offset == 0
                    && only.is_whole_chunk()
                    && self.size == only.len as u64 =>
            {
                Some(&only.chunk)
            }
            _ => None,
        }
    }
}

/// What the cache can do for a file about to be opened.
#[derive(Debug)]
pub enum WholeFile {
    /// Its content is one trusted object: read it directly.
    Ready(std::fs::File),
    /// It could be made ready ([`super::DiskCache::prepare_whole`]): every chunk is cached, or
    /// the object exists but must be verified first (after an unclean shutdown).
    Preparable,
    /// Some chunks are not cached.
    Missing,
}

impl Inner {
    /// Hashes object `key`'s whole file against what it must hold.
    pub(super) fn verify_object(
        &self,
        key: &ChunkId,
        object: &Object,
    ) -> std::result::Result<(), String> {
        let path = self.layout.path(object.kind, key);
        let mut file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
        let mut hasher = blake3::Hasher::new();
        let read = std::io::copy(&mut file, &mut hasher).map_err(|e| e.to_string())?;
        if read != object.size {
            return Err(format!("{read} bytes where {} were written", object.size));
        }
        let actual = ChunkId(*hasher.finalize().as_bytes());
        let expected = object.content_id(key);
        if actual != expected {
            return Err(format!("content hashes to {actual}, not {expected}"));
        }
        Ok(())
    }

    pub(super) fn prepare(
        &self,
        kind: ObjectKind,
        key: ChunkId,
        content: &FileContent<'_>,
    ) -> Result<bool> {
        let existing = self.index().object(&key).cloned();
        if let Some(object) = existing.filter(|o| o.kind == kind) {
            if object.trusted {
                return Ok(true);
            }
            return match self.verify_object(&key, &object) {
                Ok(()) => {
                    self.index().trust(&key);
                    Ok(true)
                }
                Err(reason) => {
                    tracing::warn!(path = %self.layout.path(kind, &key).display(), %reason, "dropping a bad disk cache object");
                    self.drop_object(&key)?;
                    Ok(false)
                }
            };
        }
        if content.size == 0 || content.size > self.budget / 2 {
            return Ok(false);
        }
        match kind {
            ObjectKind::Chunk => {
                let chunk = content.single_chunk().expect("a one-chunk file");
                let Some(bytes) = self.verified_chunk(chunk)? else {
                    return Ok(false);
                };
                self.keep_chunk(chunk.id, &bytes)?;
                Ok(true)
            }
            ObjectKind::File => self.assemble(key, content),
        }
    }

    /// A cached chunk's bytes after checking them against its id; a bad copy is dropped.
    fn verified_chunk(&self, chunk: &ChunkRef) -> Result<Option<Vec<u8>>> {
        let Some(bytes) = self.read_chunk(&chunk.id)? else {
            return Ok(None);
        };
        if ChunkId::of(&bytes) != chunk.id {
            self.drop_bad_chunk(&chunk.id)?;
            return Ok(None);
        }
        Ok(Some(bytes))
    }

    /// Builds the whole-file object `key` from the file's cached chunks, verifying each; then
    /// the chunk objects it makes redundant are deleted, so the file is held once.
    fn assemble(&self, key: ChunkId, content: &FileContent<'_>) -> Result<bool> {
        self.ensure_room(content.size)?;
        let path = self.layout.path(ObjectKind::File, &key);
        let written = self.layout.write_object(ObjectKind::File, &key, |file| {
            file.set_len(content.size)?;
            let mut hasher = blake3::Hasher::new();
            let mut at = 0u64;
            for slice in content.slices {
                let bytes = match self.verified_chunk(&slice.chunk) {
                    Ok(Some(bytes)) => bytes,
                    Ok(None) => return Ok(None),
                    Err(e) => return Err(std::io::Error::other(e.to_string())),
                };
                let part = &bytes[slice.chunk_offset as usize..][..slice.len as usize];
                hash_zeros(&mut hasher, slice.file_offset - at);
                hasher.update(part);
                file.write_all_at(part, slice.file_offset)?;
                at = slice.file_offset + slice.len as u64;
            }
            hash_zeros(&mut hasher, content.size - at);
            Ok(Some(ChunkId(*hasher.finalize().as_bytes())))
        });
        let hash = match written {
            Ok(Some(hash)) => hash,
            Ok(None) => {
                let _ = self.layout.remove(ObjectKind::File, &key);
                return Ok(false);
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let placed: Vec<PlacedChunk> = content
            .slices
            .iter()
            .filter(|s| s.is_whole_chunk())
            .map(|s| PlacedChunk {
                id: s.chunk.id,
                offset: s.file_offset,
                len: s.len,
            })
            .collect();
        self.record(
            key,
            Object {
                kind: ObjectKind::File,
                size: content.size,
                content: Some(hash),
                chunks: Arc::from(placed.clone()),
                seq: 0,
                trusted: true,
            },
        )?;
        let mut redundant = Vec::new();
        {
            let mut index = self.index();
            for chunk in &placed {
                index.relocate(chunk.id, key, chunk);
                if index
                    .object(&chunk.id)
                    .is_some_and(|o| o.kind == ObjectKind::Chunk)
                {
                    redundant.push(chunk.id);
                }
            }
        }
        for id in redundant {
            self.drop_object(&id)?;
        }
        self.evict_to_budget(0)?;
        Ok(true)
    }
}

/// Feeds `count` zero bytes (a hole) to `hasher`.
fn hash_zeros(hasher: &mut blake3::Hasher, mut count: u64) {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    while count > 0 {
        let n = count.min(ZEROS.len() as u64) as usize;
        hasher.update(&ZEROS[..n]);
        count -= n as u64;
    }
}
