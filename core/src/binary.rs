//! Bounds-checked little-endian reads and writes shared by every binary format here.
//!
//! Every read names the object and offset it failed at, so a truncated or lying object is an
//! [`Error::Corrupt`] and never a panic.

use crate::{Error, Result};

/// A cursor-free reader over one object's bytes, for fixed-layout records.
#[derive(Clone, Copy)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    object: &'a str,
}

impl<'a> Reader<'a> {
    /// Reads `bytes`, naming them `object` in errors.
    pub fn new(bytes: &'a [u8], object: &'a str) -> Self {
        Reader { bytes, object }
    }

    /// A corrupt-object error at `offset`.
    pub fn corrupt(&self, offset: u64, reason: impl Into<String>) -> Error {
        Error::corrupt(self.object, offset, reason)
    }

    /// `len` bytes at `offset`, or an error saying the object ends too early.
    pub fn slice(&self, offset: u64, len: u64, what: &str) -> Result<&'a [u8]> {
        let end = offset.checked_add(len);
        match end {
            Some(end) if end <= self.bytes.len() as u64 => {
                Ok(&self.bytes[offset as usize..end as usize])
            }
            _ => Err(self.corrupt(
                offset,
                format!(
                    "{what}: {len} bytes needed but the object is {} bytes long (truncated?)",
                    self.bytes.len()
                ),
            )),
        }
    }

    /// A little-endian u16 at `offset`.
    pub fn u16(&self, offset: u64, what: &str) -> Result<u16> {
        let s = self.slice(offset, 2, what)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }

    /// A little-endian u32 at `offset`.
    pub fn u32(&self, offset: u64, what: &str) -> Result<u32> {
        let s = self.slice(offset, 4, what)?;
        Ok(u32::from_le_bytes(s.try_into().expect("4 bytes")))
    }

    /// A little-endian u64 at `offset`.
    pub fn u64(&self, offset: u64, what: &str) -> Result<u64> {
        let s = self.slice(offset, 8, what)?;
        Ok(u64::from_le_bytes(s.try_into().expect("8 bytes")))
    }

    /// A little-endian i64 at `offset`.
    pub fn i64(&self, offset: u64, what: &str) -> Result<i64> {
        Ok(self.u64(offset, what)? as i64)
    }

    /// A u8 at `offset`.
    pub fn u8(&self, offset: u64, what: &str) -> Result<u8> {
        Ok(self.slice(offset, 1, what)?[0])
    }

    /// A 32-byte id at `offset`.
    pub fn id(&self, offset: u64, what: &str) -> Result<crate::ChunkId> {
        Ok(crate::ChunkId::from_slice(self.slice(offset, 32, what)?))
    }

    /// Checks the magic bytes at offset 0 and returns the format version after them (u16).
    pub fn magic_and_version(&self, magic: &[u8; 8], supported: u16) -> Result<u16> {
        let found = self.slice(0, 8, "magic")?;
        if found != magic {
            return Err(self.corrupt(
                0,
                format!(
                    "wrong magic {:?}, expected {:?}",
                    String::from_utf8_lossy(found),
                    String::from_utf8_lossy(magic)
                ),
            ));
        }
        let version = self.u16(8, "format version")?;
        if version != supported {
            return Err(self.corrupt(
                8,
                format!("unknown format version {version}; this thaw reads version {supported}"),
            ));
        }
        Ok(version)
    }
}

/// Little-endian appends onto a byte vector.
pub trait Writer {
    /// Appends a u16.
    fn put_u16(&mut self, v: u16);
    /// Appends a u32.
    fn put_u32(&mut self, v: u32);
    /// Appends a u64.
    fn put_u64(&mut self, v: u64);
    /// Appends `n` zero bytes.
    fn put_zeros(&mut self, n: usize);
    /// Pads with zeros to a multiple of `align`.
    fn pad_to(&mut self, align: usize);
}

impl Writer for Vec<u8> {
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_zeros(&mut self, n: usize) {
        self.resize(self.len() + n, 0);
    }
    fn pad_to(&mut self, align: usize) {
        let rem = self.len() % align;
        if rem != 0 {
            self.put_zeros(align - rem);
        }
    }
}

/// Appends the blake3 of everything in `buf` so far (a trailer that detects torn or edited objects).
pub fn seal_with_checksum(buf: &mut Vec<u8>) {
    let sum = blake3::hash(buf);
    buf.extend_from_slice(sum.as_bytes());
}

/// Checks and strips a trailer written by [`seal_with_checksum`]; returns the body.
pub fn open_checksummed<'a>(bytes: &'a [u8], object: &str) -> Result<&'a [u8]> {
    if bytes.len() < 32 {
        return Err(Error::corrupt(
            object,
            0,
            format!(
                "{} bytes is too short to hold the checksum trailer (truncated?)",
                bytes.len()
            ),
        ));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(body).as_bytes() != trailer {
        return Err(Error::corrupt(
            object,
            body.len() as u64,
            "checksum trailer does not match the body (torn or edited object)",
        ));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_are_errors_naming_object_and_offset() {
        let r = Reader::new(&[1, 2, 3], "obj");
        let err = r.u32(1, "field").unwrap_err().to_string();
        assert!(err.contains("obj at offset 1"), "{err}");
        assert!(r.slice(u64::MAX, 2, "x").is_err());
    }

    #[test]
    fn checksum_trailer_detects_a_flipped_byte() {
        let mut buf = b"payload".to_vec();
        seal_with_checksum(&mut buf);
        assert_eq!(open_checksummed(&buf, "o").unwrap(), b"payload");
        buf[2] ^= 1;
        assert!(open_checksummed(&buf, "o").is_err());
    }
}
