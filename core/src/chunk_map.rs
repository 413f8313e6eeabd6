//! The chunk map: where each chunk of one manifest lives in the store's packs.
//!
//! A manifest's id depends only on content; where its chunks were packed depends on the store and
//! on which chunks it already held. So locations live in a separate object, `maps/<manifest id>`,
//! written before the manifest. A wrong location can never yield wrong data: every chunk read
//! through it is verified against its id.

use bytes::Bytes;

use crate::binary::{open_checksummed, seal_with_checksum, Reader, Writer};
use crate::pack::{ChunkLocation, Codec};
use crate::{ChunkId, Error, Result};

/// Magic at offset 0.
pub const CHUNK_MAP_MAGIC: &[u8; 8] = b"THAWCMAP";
/// Format version.
pub const CHUNK_MAP_VERSION: u16 = 1;
const HEADER_BYTES: u64 = 56;
const ENTRY_BYTES: u64 = 24;

/// Store key of a manifest's chunk map.
pub fn chunk_map_key(manifest: &ChunkId) -> String {
    format!("maps/{}", manifest.to_hex())
}

/// Locations of a manifest's chunks, in the manifest's chunk-table order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkMap {
    /// The manifest it belongs to.
    pub manifest: ChunkId,
    /// Location of chunk table entry i.
    pub locations: Vec<ChunkLocation>,
}

impl ChunkMap {
    /// Encodes the map.
    pub fn encode(&self) -> Bytes {
        let mut packs: Vec<ChunkId> = self.locations.iter().map(|l| l.pack).collect();
        packs.sort();
        packs.dedup();
        let mut buf = Vec::new();
        buf.extend_from_slice(CHUNK_MAP_MAGIC);
        buf.put_u16(CHUNK_MAP_VERSION);
        buf.put_u16(0);
        buf.put_u32(packs.len() as u32);
        buf.put_u32(self.locations.len() as u32);
        buf.put_u32(0);
        buf.extend_from_slice(&self.manifest.0);
        for p in &packs {
            buf.extend_from_slice(&p.0);
        }
        for l in &self.locations {
            let pack = packs.binary_search(&l.pack).expect("pack listed") as u32;
            buf.put_u32(pack);
            buf.push(l.codec.code());
            buf.put_zeros(3);
            buf.put_u64(l.offset);
            buf.put_u32(l.stored_len);
            buf.put_u32(l.raw_len);
        }
        seal_with_checksum(&mut buf);
        Bytes::from(buf)
    }

    /// Decodes a map; `object` names it in errors.
    pub fn decode(bytes: &[u8], object: &str) -> Result<Self> {
        Reader::new(bytes, object).magic_and_version(CHUNK_MAP_MAGIC, CHUNK_MAP_VERSION)?;
        let body = open_checksummed(bytes, object)?;
        let r = Reader::new(body, object);
        let pack_count = r.u32(12, "pack count")? as u64;
        let count = r.u32(16, "chunk count")? as u64;
        let manifest = r.id(24, "manifest id")?;
        let entries_at = HEADER_BYTES + pack_count * 32;
        let expected = entries_at + count * ENTRY_BYTES;
        if body.len() as u64 != expected {
            return Err(r.corrupt(
                12,
                format!(
                    "{pack_count} packs and {count} chunks need {expected} bytes, the body has {}",
                    body.len()
                ),
            ));
        }
        let packs: Vec<ChunkId> = (0..pack_count)
            .map(|i| r.id(HEADER_BYTES + i * 32, "pack id"))
            .collect::<Result<_>>()?;
        let mut locations = Vec::with_capacity(count as usize);
        for i in 0..count {
            let at = entries_at + i * ENTRY_BYTES;
            let pack = r.u32(at, "pack ordinal")?;
            let codec = r.u8(at + 4, "codec")?;
            locations.push(ChunkLocation {
                pack: *packs.get(pack as usize).ok_or_else(|| {
                    r.corrupt(
                        at,
                        format!("pack ordinal {pack} out of range ({pack_count} packs)"),
                    )
                })?,
                codec: Codec::from_code(codec)
                    .ok_or_else(|| r.corrupt(at + 4, format!("unknown codec {codec}")))?,
                offset: r.u64(at + 8, "offset")?,
                stored_len: r.u32(at + 16, "stored length")?,
                raw_len: r.u32(at + 20, "raw length")?,
            });
        }
        Ok(ChunkMap {
            manifest,
            locations,
        })
    }

    /// The tier request for chunk table entry `index` of `manifest` (id, length, location).
    pub fn chunk_ref(
        &self,
        manifest: &crate::manifest::Manifest,
        index: u32,
    ) -> Result<crate::pack::ChunkRef> {
        let entry = manifest.chunk(index)?;
        Ok(crate::pack::ChunkRef {
            id: entry.id,
            raw_len: entry.raw_len,
            location: self.locations.get(index as usize).copied(),
        })
    }

    /// The request for every distinct chunk of `manifest`, in chunk table order (a chunk
    /// several files share is listed once).
    pub fn distinct_refs(
        &self,
        manifest: &crate::manifest::Manifest,
    ) -> Result<Vec<crate::pack::ChunkRef>> {
        let mut seen = std::collections::HashSet::new();
        let mut refs = Vec::new();
        for index in 0..manifest.chunk_count() {
            let chunk = self.chunk_ref(manifest, index)?;
            if seen.insert(chunk.id) {
                refs.push(chunk);
            }
        }
        Ok(refs)
    }

    /// Checks the map belongs to `manifest` and has one location per chunk.
    pub fn check_matches(&self, manifest: &crate::manifest::Manifest, object: &str) -> Result<()> {
        if self.manifest != manifest.id() || self.locations.len() != manifest.chunk_count() as usize
        {
            return Err(Error::corrupt(
                object,
                24,
                format!(
                    "map is for manifest {} with {} chunks, expected {} with {}",
                    self.manifest.short(),
                    self.locations.len(),
                    manifest.id().short(),
                    manifest.chunk_count()
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_round_trips_and_rejects_torn_bytes() {
        let loc = |p: &[u8], off| ChunkLocation {
            pack: ChunkId::of(p),
            offset: off,
            stored_len: 5,
            raw_len: 9,
            codec: Codec::Zstd,
        };
        let map = ChunkMap {
            manifest: ChunkId::of(b"m"),
            locations: vec![loc(b"a", 16), loc(b"b", 64), loc(b"a", 99)],
        };
        let bytes = map.encode();
        assert_eq!(ChunkMap::decode(&bytes, "maps/m").unwrap(), map);
        let err = ChunkMap::decode(&bytes[..bytes.len() - 1], "maps/m")
            .unwrap_err()
            .to_string();
        assert!(err.contains("maps/m"), "{err}");
    }
}
