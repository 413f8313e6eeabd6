//! Pack objects: many compressed chunks appended into one store object, plus the pack index.
//!
//! A pack is `THAWPACK` + version, then frames; each frame is a 48-byte header (chunk id, raw
//! length, stored length, codec) followed by the stored bytes. Its id is the blake3 of the whole
//! pack. The pack index lists every frame sorted by chunk id and ends in a checksum trailer. See
//! docs/format.md for every byte.

use bytes::Bytes;

use crate::binary::{open_checksummed, seal_with_checksum, Reader, Writer};
use crate::{ChunkId, Error, Result};

/// Magic at the start of every pack.
pub const PACK_MAGIC: &[u8; 8] = b"THAWPACK";
/// Magic at the start of every pack index.
pub const INDEX_MAGIC: &[u8; 8] = b"THAWPIDX";
/// The pack and pack-index format version this code reads and writes.
pub const PACK_VERSION: u16 = 1;
/// Bytes before the first frame of a pack.
pub const PACK_HEADER_BYTES: u64 = 16;
/// Bytes of a frame header.
pub const FRAME_HEADER_BYTES: u64 = 48;
/// Bytes of the fixed part of a pack index before its entries.
pub const INDEX_HEADER_BYTES: u64 = 56;
/// Bytes of one pack index entry.
pub const INDEX_ENTRY_BYTES: u64 = 56;
/// Default size at which a pack is sealed and uploaded.
pub const PACK_TARGET_BYTES: u64 = 64 * 1024 * 1024;
/// Default zstd level (chosen by measurement, see docs/benchmarks.md).
pub const ZSTD_LEVEL: i32 = 3;
/// A chunk whose zstd output is above this fraction of its size is stored raw: saving less
/// than a tenth of the bytes does not pay for decoding every byte on each cold read (model
/// weights typically compress to 90-100 %, and raw frames are read with no decode at all).
const INCOMPRESSIBLE_RATIO: f64 = 0.90;

/// How a frame's bytes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// Stored as is (incompressible data).
    Raw,
    /// One zstd frame.
    Zstd,
}

impl Codec {
    /// Wire code.
    pub fn code(self) -> u8 {
        match self {
            Codec::Raw => 0,
            Codec::Zstd => 1,
        }
    }

    /// From the wire code.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// A chunk ready to append to a pack: its id, raw length and stored bytes.
#[derive(Clone, Debug)]
pub struct EncodedChunk {
    /// Id of the raw bytes.
    pub id: ChunkId,
    /// Length of the raw bytes.
    pub raw_len: u32,
    /// How `data` is stored.
    pub codec: Codec,
    /// Stored bytes.
    pub data: Vec<u8>,
}

impl EncodedChunk {
    /// Hashes and compresses `raw` at zstd `level`, keeping it raw if compression does not pay.
    pub fn encode(raw: &[u8], level: i32) -> Self {
        Self::encode_with_id(ChunkId::of(raw), raw, level)
    }

    /// Like [`EncodedChunk::encode`] for a caller that already hashed `raw` into `id`.
    pub fn encode_with_id(id: ChunkId, raw: &[u8], level: i32) -> Self {
        let compressed = compress_reusing_context(raw, level);
        let (codec, data) = if !compressed.is_empty()
            && (compressed.len() as f64) < raw.len() as f64 * INCOMPRESSIBLE_RATIO
        {
            (Codec::Zstd, compressed)
        } else {
            (Codec::Raw, raw.to_vec())
        };
        EncodedChunk {
            id,
            raw_len: raw.len() as u32,
            codec,
            data,
        }
    }
}

thread_local! {
    /// One zstd context per thread and level: creating a context per chunk costs more than
    /// compressing a small chunk.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// zstd-compresses `raw` with this thread's cached context; empty on failure (stored raw then).
fn compress_reusing_context(raw: &[u8], level: i32) -> Vec<u8> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            *slot = zstd::bulk::Compressor::new(level).ok().map(|c| (level, c));
        }
        match slot.as_mut() {
            Some((_, compressor)) => compressor.compress(raw).unwrap_or_default(),
            None => Vec::new(),
        }
    })
}

/// What a reader asks for: a chunk id, its raw length and (when known) where it lives in the
/// object store (from the manifest's chunk map). Every tier takes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    /// The chunk.
    pub id: ChunkId,
    /// Its uncompressed length.
    pub raw_len: u32,
    /// Where it lives in the object store.
    pub location: Option<ChunkLocation>,
}

/// Where one chunk lives: pack, frame offset, stored and raw length, codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLocation {
    /// Pack id.
    pub pack: ChunkId,
    /// Offset of the frame header inside the pack.
    pub offset: u64,
    /// Stored (possibly compressed) length after the frame header.
    pub stored_len: u32,
    /// Raw length.
    pub raw_len: u32,
    /// Codec of the stored bytes.
    pub codec: Codec,
}

impl ChunkLocation {
    /// Byte range of the whole frame (header + stored bytes) inside the pack.
    pub fn frame_range(&self) -> std::ops::Range<u64> {
        self.offset..self.offset + FRAME_HEADER_BYTES + self.stored_len as u64
    }
}

/// Store key of a pack.
pub fn pack_key(pack: &ChunkId) -> String {
    format!("packs/{}.pack", pack.to_hex())
}

/// Store key of a pack's index.
pub fn index_key(pack: &ChunkId) -> String {
    format!("packs/{}.idx", pack.to_hex())
}

/// Decodes one frame fetched with [`ChunkLocation::frame_range`] and verifies it against `id`.
///
/// `pack_name` names the pack in errors; the frame offset is `location.offset`.
pub fn decode_frame(frame: &[u8], id: &ChunkId, location: &ChunkLocation) -> Result<Bytes> {
    let pack_name = pack_key(&location.pack);
    let err = |reason: String| {
        Error::corrupt(&pack_name, location.offset, format!("chunk {id}: {reason}"))
    };
    let expected_len = FRAME_HEADER_BYTES + location.stored_len as u64;
    if frame.len() as u64 != expected_len {
        return Err(err(format!(
            "frame is {} bytes, expected {expected_len} (pack truncated?)",
            frame.len()
        )));
    }
    let r = Reader::new(frame, &pack_name);
    let frame_id = r.id(0, "frame chunk id")?;
    let raw_len = r.u32(32, "frame raw length")?;
    let stored_len = r.u32(36, "frame stored length")?;
    let codec = r.u8(40, "frame codec")?;
    if frame_id != *id || raw_len != location.raw_len || stored_len != location.stored_len {
        return Err(err(format!(
            "frame header says chunk {frame_id} raw {raw_len} stored {stored_len}, the index says chunk {id} raw {} stored {}",
            location.raw_len,
            location.stored_len
        )));
    }
    // A lying length must not make the decoder allocate it (an allocation bomb).
    if raw_len > crate::chunker::MAX_CHUNK_BYTES {
        return Err(err(format!(
            "raw length {raw_len} is above the largest chunk thaw writes ({} bytes)",
            crate::chunker::MAX_CHUNK_BYTES
        )));
    }
    let stored = &frame[FRAME_HEADER_BYTES as usize..];
    let raw = match Codec::from_code(codec) {
        Some(Codec::Raw) => stored.to_vec(),
        Some(Codec::Zstd) => zstd::bulk::decompress(stored, raw_len as usize)
            .map_err(|e| err(format!("zstd: {e}")))?,
        None => return Err(err(format!("unknown codec {codec}"))),
    };
    if raw.len() != raw_len as usize {
        return Err(err(format!(
            "decoded {} bytes, expected {raw_len}",
            raw.len()
        )));
    }
    id.verify(&raw, &format!("{pack_name} offset {}", location.offset))?;
    Ok(Bytes::from(raw))
}

/// Builds one pack in memory; [`PackBuilder::seal`] turns it into pack and index bytes.
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<IndexEntry>,
}

/// One pack index entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// Chunk id.
    pub id: ChunkId,
    /// Frame offset inside the pack.
    pub offset: u64,
    /// Raw length.
    pub raw_len: u32,
    /// Stored length.
    pub stored_len: u32,
    /// Codec.
    pub codec: Codec,
}

/// A finished pack: its id, bytes, index bytes and entries.
pub struct SealedPack {
    /// blake3 of `bytes`.
    pub id: ChunkId,
    /// The pack object.
    pub bytes: Bytes,
    /// The pack index object.
    pub index: Bytes,
    /// The entries in the index (sorted by chunk id).
    pub entries: Vec<IndexEntry>,
}

impl Default for PackBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PackBuilder {
    /// An empty pack.
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(PACK_TARGET_BYTES as usize + (8 << 20));
        buf.extend_from_slice(PACK_MAGIC);
        buf.put_u16(PACK_VERSION);
        buf.put_zeros(6);
        PackBuilder {
            buf,
            entries: Vec::new(),
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.buf.len() as u64
    }

    /// True when no chunk was appended.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends a chunk; returns the frame offset.
    pub fn append(&mut self, chunk: &EncodedChunk) -> IndexEntry {
        let offset = self.buf.len() as u64;
        self.buf.extend_from_slice(&chunk.id.0);
        self.buf.put_u32(chunk.raw_len);
        self.buf.put_u32(chunk.data.len() as u32);
        self.buf.push(chunk.codec.code());
        self.buf.put_zeros(7);
        self.buf.extend_from_slice(&chunk.data);
        let entry = IndexEntry {
            id: chunk.id,
            offset,
            raw_len: chunk.raw_len,
            stored_len: chunk.data.len() as u32,
            codec: chunk.codec,
        };
        self.entries.push(entry);
        entry
    }

    /// Finishes the pack: names it by its hash and encodes the index.
    pub fn seal(self) -> SealedPack {
        let id = ChunkId::of(&self.buf);
        let mut entries = self.entries;
        entries.sort_by_key(|e| e.id);
        let index = encode_index(&id, self.buf.len() as u64, &entries);
        SealedPack {
            id,
            bytes: Bytes::from(self.buf),
            index: Bytes::from(index),
            entries,
        }
    }
}

impl SealedPack {
    /// The location of every chunk in this pack.
    pub fn locations(&self) -> impl Iterator<Item = (ChunkId, ChunkLocation)> + '_ {
        self.entries.iter().map(|e| (e.id, e.location(self.id)))
    }
}

impl IndexEntry {
    /// This entry as a location inside `pack`.
    pub fn location(&self, pack: ChunkId) -> ChunkLocation {
        ChunkLocation {
            pack,
            offset: self.offset,
            stored_len: self.stored_len,
            raw_len: self.raw_len,
            codec: self.codec,
        }
    }
}

fn encode_index(pack: &ChunkId, pack_len: u64, entries: &[IndexEntry]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(
        (INDEX_HEADER_BYTES + INDEX_ENTRY_BYTES * entries.len() as u64 + 32) as usize,
    );
    buf.extend_from_slice(INDEX_MAGIC);
    buf.put_u16(PACK_VERSION);
    buf.put_u16(0);
    buf.put_u32(entries.len() as u32);
    buf.put_u64(pack_len);
    buf.extend_from_slice(&pack.0);
    for e in entries {
        buf.extend_from_slice(&e.id.0);
        buf.put_u64(e.offset);
        buf.put_u32(e.raw_len);
        buf.put_u32(e.stored_len);
        buf.push(e.codec.code());
        buf.put_zeros(7);
    }
    seal_with_checksum(&mut buf);
    buf
}

/// A decoded pack index.
#[derive(Clone, Debug)]
pub struct PackIndex {
    /// The pack it describes.
    pub pack: ChunkId,
    /// The pack's length in bytes.
    pub pack_len: u64,
    /// Entries sorted by chunk id.
    pub entries: Vec<IndexEntry>,
}

/// Where every chunk of `indexes` lives (a chunk in several packs: the last index's copy).
pub fn chunk_locations<'a>(
    indexes: impl IntoIterator<Item = &'a PackIndex>,
) -> std::collections::HashMap<ChunkId, ChunkLocation> {
    indexes
        .into_iter()
        .flat_map(|index| index.entries.iter().map(|e| (e.id, e.location(index.pack))))
        .collect()
}

impl PackIndex {
    /// Encodes the index object (entries sorted by chunk id, as readers expect).
    pub fn encode(&self) -> Bytes {
        let mut entries = self.entries.clone();
        entries.sort_by_key(|e| e.id);
        Bytes::from(encode_index(&self.pack, self.pack_len, &entries))
    }

    /// Rebuilds the index of pack `pack` from the pack's own bytes: every frame header names
    /// its chunk, lengths and codec, so a pack describes itself. Each frame is decoded and
    /// verified; frames that do not verify are left out and reported (with their offsets),
    /// and a header that runs past the end stops the scan. `object` names the pack in errors.
    pub fn scan(pack: ChunkId, bytes: &[u8], object: &str) -> (PackIndex, Vec<Error>) {
        let mut problems = Vec::new();
        let mut entries = Vec::new();
        let r = Reader::new(bytes, object);
        if let Err(e) = r.magic_and_version(PACK_MAGIC, PACK_VERSION) {
            problems.push(e);
        }
        let mut offset = PACK_HEADER_BYTES;
        while offset < bytes.len() as u64 {
            let header = (
                r.id(offset, "frame chunk id"),
                r.u32(offset + 32, "frame raw length"),
                r.u32(offset + 36, "frame stored length"),
                r.u8(offset + 40, "frame codec"),
            );
            let (Ok(id), Ok(raw_len), Ok(stored_len), Ok(code)) = header else {
                problems.push(r.corrupt(offset, "frame header runs past the end of the pack"));
                break;
            };
            let end = offset + FRAME_HEADER_BYTES + stored_len as u64;
            if end > bytes.len() as u64 {
                problems.push(r.corrupt(
                    offset,
                    format!(
                        "frame of chunk {} ends at {end}, past the end of the pack",
                        id.short()
                    ),
                ));
                break;
            }
            match Codec::from_code(code) {
                Some(codec) => {
                    let entry = IndexEntry {
                        id,
                        offset,
                        raw_len,
                        stored_len,
                        codec,
                    };
                    let frame = &bytes[offset as usize..end as usize];
                    match decode_frame(frame, &id, &entry.location(pack)) {
                        Ok(_) => entries.push(entry),
                        Err(e) => problems.push(e),
                    }
                }
                None => problems.push(r.corrupt(offset + 40, format!("unknown codec {code}"))),
            }
            offset = end;
        }
        entries.sort_by_key(|e| e.id);
        let index = PackIndex {
            pack,
            pack_len: bytes.len() as u64,
            entries,
        };
        (index, problems)
    }

    /// Decodes and checks an index: checksum, header, and that every frame lies inside the pack.
    ///
    /// `object` names the index in errors (an entry error gives the entry's byte offset).
    pub fn decode(bytes: &[u8], object: &str) -> Result<Self> {
        let header = Reader::new(bytes, object);
        header.magic_and_version(INDEX_MAGIC, PACK_VERSION)?;
        let body = open_checksummed(bytes, object)?;
        let r = Reader::new(body, object);
        let count = r.u32(12, "entry count")? as u64;
        let pack_len = r.u64(16, "pack length")?;
        let pack = r.id(24, "pack id")?;
        let expected = INDEX_HEADER_BYTES + count * INDEX_ENTRY_BYTES;
        if body.len() as u64 != expected {
            return Err(r.corrupt(
                12,
                format!(
                    "{count} entries need {expected} bytes but the body is {} bytes",
                    body.len()
                ),
            ));
        }
        let mut entries = Vec::with_capacity(count as usize);
        for i in 0..count {
            let at = INDEX_HEADER_BYTES + i * INDEX_ENTRY_BYTES;
            let codec_code = r.u8(at + 48, "entry codec")?;
            let entry = IndexEntry {
                id: r.id(at, "entry chunk id")?,
                offset: r.u64(at + 32, "entry offset")?,
                raw_len: r.u32(at + 40, "entry raw length")?,
                stored_len: r.u32(at + 44, "entry stored length")?,
                codec: Codec::from_code(codec_code)
                    .ok_or_else(|| r.corrupt(at + 48, format!("unknown codec {codec_code}")))?,
            };
            let end = entry.location(pack).frame_range().end;
            if entry.offset < PACK_HEADER_BYTES || end > pack_len {
                return Err(r.corrupt(
                    at,
                    format!(
                        "entry {i} (chunk {}) points at bytes {}..{end}, past the end of pack {} ({pack_len} bytes)",
                        entry.id.short(),
                        entry.offset,
                        pack.short()
                    ),
                ));
            }
            entries.push(entry);
        }
        Ok(PackIndex {
            pack,
            pack_len,
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trips_and_index_locates_every_chunk() {
        let chunks: Vec<Vec<u8>> = vec![
            vec![7u8; 100_000],
            (0..=255u8).cycle().take(5000).collect(),
            vec![],
        ];
        let mut builder = PackBuilder::new();
        for c in &chunks {
            builder.append(&EncodedChunk::encode(c, ZSTD_LEVEL));
        }
        let sealed = builder.seal();
        let index = PackIndex::decode(&sealed.index, "idx").unwrap();
        assert_eq!(index.pack, sealed.id);
        assert_eq!(index.entries.len(), 3);
        for c in &chunks {
            let id = ChunkId::of(c);
            let e = index.entries.iter().find(|e| e.id == id).unwrap();
            let loc = e.location(sealed.id);
            let r = loc.frame_range();
            let got =
                decode_frame(&sealed.bytes[r.start as usize..r.end as usize], &id, &loc).unwrap();
            assert_eq!(&got[..], &c[..]);
        }
    }

    #[test]
    fn flipped_byte_in_a_frame_is_an_error_naming_pack_and_offset() {
        let raw = vec![42u8; 10_000];
        let mut builder = PackBuilder::new();
        let entry = builder.append(&EncodedChunk::encode(&raw, ZSTD_LEVEL));
        let sealed = builder.seal();
        let loc = entry.location(sealed.id);
        let mut frame = sealed.bytes[loc.frame_range().start as usize..].to_vec();
        let last = frame.len() - 2;
        frame[last] ^= 0x40;
        let err = decode_frame(&frame, &entry.id, &loc)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&pack_key(&sealed.id)), "{err}");
        assert!(err.contains("offset 16"), "{err}");
    }

    #[test]
    fn index_entry_past_the_end_is_rejected_with_its_offset() {
        let mut builder = PackBuilder::new();
        builder.append(&EncodedChunk::encode(b"abc", ZSTD_LEVEL));
        let sealed = builder.seal();
        let mut lying = sealed.index[..sealed.index.len() - 32].to_vec();
        let at = INDEX_HEADER_BYTES as usize + 32;
        lying[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        seal_with_checksum(&mut lying);
        let err = PackIndex::decode(&lying, "packs/x.idx")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("packs/x.idx at offset 56") && err.contains("past the end"),
            "{err}"
        );
        let truncated = &sealed.index[..40];
        assert!(PackIndex::decode(truncated, "i").is_err());
    }

    #[test]
    fn a_pack_rebuilds_its_own_index_and_reports_a_damaged_frame() {
        let mut builder = PackBuilder::new();
        for c in [&b"alpha"[..], &[9u8; 50_000][..], b"omega"] {
            builder.append(&EncodedChunk::encode(c, ZSTD_LEVEL));
        }
        let sealed = builder.seal();
        let (index, problems) = PackIndex::scan(sealed.id, &sealed.bytes, "p");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            index.encode(),
            sealed.index,
            "the same index, byte for byte"
        );
        let mut damaged = sealed.bytes.to_vec();
        let second = sealed.entries.iter().map(|e| e.offset).max().unwrap();
        damaged[second as usize + 50] ^= 1;
        let (index, problems) = PackIndex::scan(sealed.id, &damaged, "packs/p.pack");
        assert_eq!(index.entries.len(), 2);
        assert_eq!(problems.len(), 1);
        let text = problems[0].to_string();
        assert!(text.contains(&format!("offset {second}")), "{text}");
        let (index, problems) =
            PackIndex::scan(sealed.id, &sealed.bytes[..second as usize + 20], "p");
        assert_eq!(index.entries.len(), 2);
        assert!(
            problems[0].to_string().contains("past the end"),
            "{problems:?}"
        );
    }

    #[test]
    fn incompressible_chunks_are_stored_raw() {
        let mut x = 1u32;
        let noise: Vec<u8> = (0..65536)
            .map(|_| {
                x = x.wrapping_mul(1664525).wrapping_add(1013904223);
                (x >> 24) as u8
            })
            .collect();
        assert_eq!(EncodedChunk::encode(&noise, ZSTD_LEVEL).codec, Codec::Raw);
        assert_eq!(
            EncodedChunk::encode(&[0u8; 65536], ZSTD_LEVEL).codec,
            Codec::Zstd
        );
    }
}
