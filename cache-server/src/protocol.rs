//! The peer protocol, shared by the server and the client.
//!
//! - `GET /v1/chunks/{id}?pack=&offset=&stored=&raw=&codec=`: the chunk's uncompressed bytes.
//!   With the location query a server that does not hold the chunk fetches it from the object
//!   store (once, however many ask) and keeps it; without it, a miss is 404. `Range: bytes=`
//!   gives 206 with part of the chunk. The `x-thaw-served-by` header says which tier answered
//!   (`memory`, `disk`, `store`).
//! - `HEAD /v1/chunks/{id}`: 200 with the length when the server holds a good copy, else 404;
//!   never fetches.
//! - `GET /v1/inventory[?tag=NAME]`: what the server holds, per tag (JSON).
//! - `GET /healthz` ([`Health`]), `GET /metrics`: open, everything else needs the bearer token.

use serde::{Deserialize, Serialize};
use thaw_core::chunker::MAX_CHUNK_BYTES;
use thaw_core::pack::{ChunkLocation, Codec};
use thaw_core::ChunkId;

/// Prefix of chunk paths.
pub const CHUNKS_PATH: &str = "/v1/chunks";
/// Path of the inventory.
pub const INVENTORY_PATH: &str = "/v1/inventory";
/// Response header naming the tier that answered.
pub const SERVED_BY_HEADER: &str = "x-thaw-served-by";
/// Largest stored frame a server fetches: a chunk's maximum plus zstd's worst-case expansion.
pub const MAX_STORED_BYTES: u32 = MAX_CHUNK_BYTES + MAX_CHUNK_BYTES / 64 + 4096;

/// Where a chunk lives in the object store, as a query string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocationQuery {
    /// Pack id (hex).
    pub pack: String,
    /// Offset of the frame in the pack.
    pub offset: u64,
    /// Stored length after the frame header.
    pub stored: u32,
    /// Raw length.
    pub raw: u32,
    /// `zstd` or `raw`.
    pub codec: String,
}

impl From<&ChunkLocation> for LocationQuery {
    fn from(l: &ChunkLocation) -> Self {
        LocationQuery {
            pack: l.pack.to_hex(),
            offset: l.offset,
            stored: l.stored_len,
            raw: l.raw_len,
            codec: match l.codec {
                Codec::Raw => "raw",
                Codec::Zstd => "zstd",
            }
            .to_string(),
        }
    }
}

impl LocationQuery {
    /// The location, or a reason naming the bad field.
    pub fn to_location(&self) -> Result<ChunkLocation, String> {
        let pack: ChunkId = self
            .pack
            .parse()
            .map_err(|_| format!("pack {:?} is not a chunk id", self.pack))?;
        let codec = match self.codec.as_str() {
            "raw" => Codec::Raw,
            "zstd" => Codec::Zstd,
            other => return Err(format!("codec {other:?} is not raw or zstd")),
        };
        if self.raw == 0 || self.raw > MAX_CHUNK_BYTES {
            return Err(format!(
                "raw length {} is not in 1..={MAX_CHUNK_BYTES}",
                self.raw
            ));
        }
        if self.stored == 0 || self.stored > MAX_STORED_BYTES {
            return Err(format!(
                "stored length {} is not in 1..={MAX_STORED_BYTES}",
                self.stored
            ));
        }
        if self.offset.checked_add(u64::from(self.stored)).is_none() {
            return Err(format!("offset {} overflows", self.offset));
        }
        Ok(ChunkLocation {
            pack,
            offset: self.offset,
            stored_len: self.stored,
            raw_len: self.raw,
            codec,
        })
    }
}

/// One tag's share of a server's cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagInventory {
    /// The tag.
    pub tag: String,
    /// The manifest it names (hex).
    pub manifest: String,
    /// Distinct chunks of the manifest.
    pub chunks: u64,
    /// How many of them the server holds.
    pub held: u64,
    /// Their raw bytes.
    pub bytes: u64,
    /// Raw bytes of the held ones.
    pub held_bytes: u64,
}

/// The answer of `GET /healthz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok` while the server serves.
    pub status: String,
    /// Chunks in the server's disk cache.
    pub chunks_held: u64,
    /// Their bytes.
    pub bytes_held: u64,
}

/// The answer of `GET /v1/inventory`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Chunks in the server's disk cache.
    pub chunks_held: u64,
    /// Their bytes.
    pub bytes_held: u64,
    /// Per tag.
    pub tags: Vec<TagInventory>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_round_trip_and_bad_fields_are_named() {
        let location = ChunkLocation {
            pack: ChunkId::of(b"pack"),
            offset: 16,
            stored_len: 1000,
            raw_len: 4000,
            codec: Codec::Zstd,
        };
        let query = LocationQuery::from(&location);
        assert_eq!(query.to_location().unwrap(), location);
        for (change, says) in [
            (
                Box::new(|q: &mut LocationQuery| q.pack = "zz".into()) as Box<dyn Fn(&mut _)>,
                "pack",
            ),
            (
                Box::new(|q: &mut LocationQuery| q.codec = "lz4".into()),
                "codec",
            ),
            (
                Box::new(|q: &mut LocationQuery| q.raw = u32::MAX),
                "raw length",
            ),
            (
                Box::new(|q: &mut LocationQuery| q.stored = 0),
                "stored length",
            ),
            (
                Box::new(|q: &mut LocationQuery| q.offset = u64::MAX),
                "overflows",
            ),
        ] {
            let mut bad = query.clone();
            change(&mut bad);
            let err = bad.to_location().unwrap_err();
            assert!(err.contains(says), "{err}");
        }
    }
}
