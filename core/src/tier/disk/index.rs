//! The cache's index: which objects exist, where each chunk lives inside them, and the
//! least-recently-used order, in memory, persisted as RocksDB records.
//!
//! Records (keys start with one letter, then the 32-byte object key):
//! - `o` object: kind (1 byte), size (8), content hash (32, file objects only), then per
//!   whole chunk inside: id (32), offset (8), length (4). Written once, when the object is.
//! - `a` last use: a sequence number (8). Rewritten on use, without the write-ahead log: a
//!   crash may forget recent uses (an order hint), never an object.
//! - `s` (key `stats`): lifetime hits and misses (8 + 8), written on flush.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::layout::ObjectKind;
use crate::ChunkId;

/// A chunk held inside an object: its id, where it starts and how long it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlacedChunk {
    /// The chunk.
    pub id: ChunkId,
    /// Its offset in the object.
    pub offset: u64,
    /// Its length.
    pub len: u32,
}

/// One object the cache holds.
#[derive(Clone, Debug)]
pub(crate) struct Object {
    pub(crate) kind: ObjectKind,
    pub(crate) size: u64,
    /// blake3 of the whole content (file objects; a chunk object's key is its hash).
    pub(crate) content: Option<ChunkId>,
    /// Whole chunks inside (file objects; a chunk object is its one chunk).
    pub(crate) chunks: Arc<[PlacedChunk]>,
    /// Last use.
    pub(crate) seq: u64,
    /// Known to hold the right bytes: written by this process, or by one that closed cleanly,
    /// or verified since. Only trusted objects are handed to the kernel for passthrough.
    pub(crate) trusted: bool,
}

impl Object {
    /// A chunk object of `size` bytes (its key is the chunk's id).
    pub(crate) fn chunk(size: u64, trusted: bool) -> Object {
        Object {
            kind: ObjectKind::Chunk,
            size,
            content: None,
            chunks: Arc::from(Vec::new()),
            seq: 0,
            trusted,
        }
    }

    /// The hash the whole content must have.
    pub(crate) fn content_id(&self, key: &ChunkId) -> ChunkId {
        self.content.unwrap_or(*key)
    }
}

/// Where a chunk's bytes are: object key and kind, offset, length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    pub(crate) kind: ObjectKind,
    pub(crate) key: ChunkId,
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

/// The in-memory index.
#[derive(Default)]
pub(crate) struct Index {
    objects: HashMap<ChunkId, Object>,
    by_age: BTreeMap<u64, ChunkId>,
    chunks: HashMap<ChunkId, Location>,
    used: u64,
    next_seq: u64,
}

impl Index {
    /// Bytes of all objects.
    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    /// Distinct chunks held.
    pub(crate) fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Objects of `kind`.
    pub(crate) fn count_of(&self, kind: ObjectKind) -> usize {
        self.objects.values().filter(|o| o.kind == kind).count()
    }

    /// Where chunk `id` is.
    pub(crate) fn locate(&self, id: &ChunkId) -> Option<Location> {
        self.chunks.get(id).copied()
    }

    /// The object `key`.
    pub(crate) fn object(&self, key: &ChunkId) -> Option<&Object> {
        self.objects.get(key)
    }

    /// Marks object `key` verified.
    pub(crate) fn trust(&mut self, key: &ChunkId) {
        if let Some(object) = self.objects.get_mut(key) {
            object.trusted = true;
        }
    }

    /// Every object key, least recently used first.
    pub(crate) fn keys_by_age(&self) -> Vec<ChunkId> {
        self.by_age.values().copied().collect()
    }

    /// The least recently used object.
    pub(crate) fn oldest(&self) -> Option<ChunkId> {
        self.by_age.values().next().copied()
    }

    /// Adds an object (replacing one of the same key) and points its chunks at it, unless
    /// they already live elsewhere. Returns its last-use sequence number.
    pub(crate) fn add(&mut self, key: ChunkId, mut object: Object) -> u64 {
        self.remove(&key);
        let seq = self.next_seq.max(object.seq);
        self.next_seq = seq + 1;
        object.seq = seq;
        self.used += object.size;
        self.by_age.insert(seq, key);
        match object.kind {
            ObjectKind::Chunk => {
                self.chunks.insert(
                    key,
                    Location {
                        kind: ObjectKind::Chunk,
                        key,
                        offset: 0,
                        len: object.size as u32,
                    },
                );
            }
            ObjectKind::File => {
                for placed in object.chunks.iter() {
                    self.chunks.entry(placed.id).or_insert(Location {
                        kind: ObjectKind::File,
                        key,
                        offset: placed.offset,
                        len: placed.len,
                    });
                }
            }
        }
        self.objects.insert(key, object);
        seq
    }

    /// Points `chunk` at a place inside file object `key` (after it was assembled there).
    pub(crate) fn relocate(&mut self, chunk: ChunkId, key: ChunkId, placed: &PlacedChunk) {
        self.chunks.insert(
            chunk,
            Location {
                kind: ObjectKind::File,
                key,
                offset: placed.offset,
                len: placed.len,
            },
        );
    }

    /// Notes a use of `key`; returns its new sequence number.
    pub(crate) fn touch(&mut self, key: &ChunkId) -> Option<u64> {
        let seq = self.next_seq;
        let object = self.objects.get_mut(key)?;
        self.by_age.remove(&object.seq);
        object.seq = seq;
        self.by_age.insert(seq, *key);
        self.next_seq += 1;
        Some(seq)
    }

    /// Forgets object `key` and every chunk location inside it. Chunks that another object
    /// also holds whole are pointed at it instead.
    pub(crate) fn remove(&mut self, key: &ChunkId) -> Option<Object> {
        let object = self.objects.remove(key)?;
        self.by_age.remove(&object.seq);
        self.used -= object.size;
        let held: Vec<ChunkId> = match object.kind {
            ObjectKind::Chunk => vec![*key],
            ObjectKind::File => object.chunks.iter().map(|c| c.id).collect(),
        };
        for id in held {
            if self.chunks.get(&id).is_some_and(|l| l.key == *key) {
                self.chunks.remove(&id);
                if self
                    .objects
                    .get(&id)
                    .is_some_and(|o| o.kind == ObjectKind::Chunk)
                {
                    let size = self.objects[&id].size;
                    self.chunks.insert(
                        id,
                        Location {
                            kind: ObjectKind::Chunk,
                            key: id,
                            offset: 0,
                            len: size as u32,
                        },
                    );
                }
            }
        }
        Some(object)
    }
}

/// The record key of object `key` (`o` + key).
pub(crate) fn object_key(key: &ChunkId) -> [u8; 33] {
    prefixed(b'o', key)
}

/// The last-use record key of object `key` (`a` + key).
pub(crate) fn age_key(key: &ChunkId) -> [u8; 33] {
    prefixed(b'a', key)
}

/// The record key of the lifetime hit counts.
pub(crate) const STATS_KEY: &[u8] = b"stats";

fn prefixed(letter: u8, key: &ChunkId) -> [u8; 33] {
    let mut k = [letter; 33];
    k[1..].copy_from_slice(&key.0);
    k
}

const PLACED_BYTES: usize = 32 + 8 + 4;

/// Encodes an object record (`o`).
pub(crate) fn encode_object(object: &Object) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + 32 + object.chunks.len() * PLACED_BYTES);
    v.push(object.kind.code());
    v.extend_from_slice(&object.size.to_le_bytes());
    if let Some(content) = object.content {
        v.extend_from_slice(&content.0);
        for placed in object.chunks.iter() {
            v.extend_from_slice(&placed.id.0);
            v.extend_from_slice(&placed.offset.to_le_bytes());
            v.extend_from_slice(&placed.len.to_le_bytes());
        }
    }
    v
}

/// Decodes an object record; `None` for a record this version cannot read (it is dropped).
pub(crate) fn decode_object(
    bytes: &[u8],
) -> Option<(ObjectKind, u64, Option<ChunkId>, Vec<PlacedChunk>)> {
    let kind = ObjectKind::from_code(*bytes.first()?)?;
    let size = u64::from_le_bytes(bytes.get(1..9)?.try_into().ok()?);
    match kind {
        ObjectKind::Chunk => (bytes.len() == 9).then_some((kind, size, None, Vec::new())),
        ObjectKind::File => {
            let content = ChunkId::from_slice(bytes.get(9..41)?);
            let rest = &bytes[41..];
            if !rest.len().is_multiple_of(PLACED_BYTES) {
                return None;
            }
            let chunks = rest
                .chunks_exact(PLACED_BYTES)
                .map(|r| PlacedChunk {
                    id: ChunkId::from_slice(&r[..32]),
                    offset: u64::from_le_bytes(r[32..40].try_into().expect("8 bytes")),
                    len: u32::from_le_bytes(r[40..44].try_into().expect("4 bytes")),
                })
                .collect::<Vec<_>>();
            let inside = chunks.iter().all(|c| {
                c.offset
                    .checked_add(c.len as u64)
                    .is_some_and(|end| end <= size)
            });
            inside.then_some((kind, size, Some(content), chunks))
        }
    }
}

/// Encodes two counters.
pub(crate) fn encode_pair(a: u64, b: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&a.to_le_bytes());
    v[8..].copy_from_slice(&b.to_le_bytes());
    v
}

/// Decodes two counters.
pub(crate) fn decode_pair(bytes: &[u8]) -> Option<(u64, u64)> {
    if bytes.len() != 16 {
        return None;
    }
    Some((
        u64::from_le_bytes(bytes[..8].try_into().ok()?),
        u64::from_le_bytes(bytes[8..].try_into().ok()?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_object_holds_its_chunks_until_removed_and_then_the_chunk_objects_do_again() {
        let (a, b) = (ChunkId::of(b"a"), ChunkId::of(b"b"));
        let file = ChunkId::of(b"file");
        let mut index = Index::default();
        index.add(a, Object::chunk(10, true));
        let placed = [
            PlacedChunk {
                id: a,
                offset: 0,
                len: 10,
            },
            PlacedChunk {
                id: b,
                offset: 10,
                len: 5,
            },
        ];
        let object = Object {
            kind: ObjectKind::File,
            size: 15,
            content: Some(ChunkId::of(b"content")),
            chunks: Arc::from(placed.to_vec()),
            seq: 0,
            trusted: true,
        };
        let record = encode_object(&object);
        let (kind, size, content, chunks) = decode_object(&record).unwrap();
        assert_eq!(
            (kind, size, content, chunks.as_slice()),
            (ObjectKind::File, 15, object.content, &placed[..])
        );
        index.add(file, object);
        assert_eq!(index.used(), 25);
        assert_eq!(
            index.locate(&a).unwrap().key,
            a,
            "a stays where it was first"
        );
        assert_eq!(index.locate(&b).unwrap().key, file);
        index.relocate(a, file, &placed[0]);
        index.remove(&file);
        assert_eq!(index.locate(&a).unwrap().key, a, "back to its own object");
        assert!(index.locate(&b).is_none());
        assert_eq!(index.oldest(), Some(a));
        assert!(
            decode_object(&record[..record.len() - 1]).is_none(),
            "a torn record is refused"
        );
    }
}
