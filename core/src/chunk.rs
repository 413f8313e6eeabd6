//! Chunk identity: the blake3 hash of a chunk's uncompressed bytes.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// Length of every id in bytes (blake3 output).
pub const ID_BYTES: usize = 32;

/// A content id: blake3 of the uncompressed bytes. Used for chunks, manifests and packs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; ID_BYTES]);

impl ChunkId {
    /// Hashes `data` into its id.
    pub fn of(data: &[u8]) -> Self {
        ChunkId(*blake3::hash(data).as_bytes())
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex characters, for tables meant for people.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }

    /// Checks that `data` hashes to this id; `source_name` names where the bytes came from.
    pub fn verify(&self, data: &[u8], source_name: &str) -> Result<()> {
        let actual = ChunkId::of(data);
        if actual == *self {
            Ok(())
        } else {
            Err(Error::ChunkMismatch {
                id: *self,
                actual,
                source_name: source_name.to_string(),
            })
        }
    }

    /// Reads an id from the first 32 bytes of `bytes` (caller checks the length).
    pub fn from_slice(bytes: &[u8]) -> Self {
        let mut id = [0u8; ID_BYTES];
        id.copy_from_slice(&bytes[..ID_BYTES]);
        ChunkId(id)
    }
}

/// Bytes that were checked against their id. Only [`ChunkId::verified`] makes one, so a cache
/// that takes `VerifiedChunk`s can only ever hold verified bytes.
#[derive(Clone, Debug)]
pub struct VerifiedChunk {
    id: ChunkId,
    bytes: bytes::Bytes,
}

impl VerifiedChunk {
    /// The id the bytes hash to.
    pub fn id(&self) -> ChunkId {
        self.id
    }

    /// The bytes.
    pub fn bytes(&self) -> &bytes::Bytes {
        &self.bytes
    }

    /// The bytes, owned.
    pub fn into_bytes(self) -> bytes::Bytes {
        self.bytes
    }

    /// Wraps bytes from a source that verified them itself (a tier whose
    /// `returns_verified()` is true). Only core's tiers make that promise.
    pub(crate) fn already_verified(id: ChunkId, bytes: bytes::Bytes) -> Self {
        VerifiedChunk { id, bytes }
    }
}

impl ChunkId {
    /// Checks `bytes` against this id (see [`ChunkId::verify`]) and wraps them as verified.
    pub fn verified(&self, bytes: bytes::Bytes, source_name: &str) -> Result<VerifiedChunk> {
        self.verify(&bytes, source_name)?;
        Ok(VerifiedChunk { id: *self, bytes })
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.short())
    }
}

impl FromStr for ChunkId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bytes = hex::decode(s).map_err(|_| Error::UnknownName(s.to_string()))?;
        if bytes.len() != ID_BYTES {
            return Err(Error::UnknownName(s.to_string()));
        }
        Ok(ChunkId::from_slice(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trips_through_hex_and_verifies_content() {
        let id = ChunkId::of(b"hello");
        let parsed: ChunkId = id.to_hex().parse().unwrap();
        assert_eq!(parsed, id);
        id.verify(b"hello", "test").unwrap();
        let err = id.verify(b"hellp", "memory").unwrap_err().to_string();
        assert!(
            err.contains(&id.to_hex()) && err.contains("memory"),
            "{err}"
        );
        assert!("abc".parse::<ChunkId>().is_err());
    }
}
