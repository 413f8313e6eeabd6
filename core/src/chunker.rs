//! How files are cut into chunks: content-defined (FastCDC 2020) by default, fixed-size optionally.
//!
//! Chunking is per file, so a file's chunks never mix with another file's. The choice and its
//! parameters are recorded in every manifest header.

use std::fmt;
use std::io::Read;
use std::str::FromStr;

/// Default FastCDC minimum chunk size.
pub const CDC_MIN_BYTES: u32 = 256 * 1024;
/// Default FastCDC average chunk size.
pub const CDC_AVG_BYTES: u32 = 1024 * 1024;
/// Default FastCDC maximum chunk size.
pub const CDC_MAX_BYTES: u32 = 4 * 1024 * 1024;
/// Default fixed chunk size.
pub const FIXED_CHUNK_BYTES: u32 = 4 * 1024 * 1024;
/// Largest chunk any chunker may produce (bounds memory per chunk and the u32 length fields).
pub const MAX_CHUNK_BYTES: u32 = 16 * 1024 * 1024;

/// The chunking policy of one manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunker {
    /// Content-defined chunking (FastCDC 2020) with min/avg/max sizes in bytes.
    FastCdc {
        /// Smallest chunk (except a file's last).
        min: u32,
        /// Target average.
        avg: u32,
        /// Largest chunk.
        max: u32,
    },
    /// Fixed-size chunks (the last chunk of a file may be shorter).
    Fixed {
        /// Chunk size in bytes.
        size: u32,
    },
}

impl Default for Chunker {
    fn default() -> Self {
        Chunker::FastCdc {
            min: CDC_MIN_BYTES,
            avg: CDC_AVG_BYTES,
            max: CDC_MAX_BYTES,
        }
    }
}

impl Chunker {
    /// The wire code of the chunker kind (manifest header byte 12).
    pub fn kind_code(&self) -> u8 {
        match self {
            Chunker::FastCdc { .. } => 0,
            Chunker::Fixed { .. } => 1,
        }
    }

    /// (min, avg, max) as written in the manifest header; fixed writes its size three times.
    pub fn params(&self) -> (u32, u32, u32) {
        match *self {
            Chunker::FastCdc { min, avg, max } => (min, avg, max),
            Chunker::Fixed { size } => (size, size, size),
        }
    }

    /// Rebuilds a chunker from its header fields; `None` for an unknown kind or bad sizes.
    pub fn from_parts(kind: u8, min: u32, avg: u32, max: u32) -> Option<Self> {
        let chunker = match kind {
            0 => Chunker::FastCdc { min, avg, max },
            1 => Chunker::Fixed { size: avg },
            _ => return None,
        };
        chunker.validate().ok()?;
        Some(chunker)
    }

    /// Checks the sizes against what FastCDC and the format accept.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            Chunker::FastCdc { min, avg, max } => {
                use fastcdc::v2020::{
                    AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
                };
                let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
                    && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
                    && (MAXIMUM_MIN..=MAX_CHUNK_BYTES).contains(&max)
                    && min <= avg
                    && avg <= max;
                if ok {
                    Ok(())
                } else {
                    Err(format!(
                        "fastcdc sizes min={min} avg={avg} max={max} out of range \
                         (min {MINIMUM_MIN}..={MINIMUM_MAX}, avg {AVERAGE_MIN}..={AVERAGE_MAX}, \
                         max ..={MAX_CHUNK_BYTES}, min <= avg <= max)"
                    ))
                }
            }
            Chunker::Fixed { size } => {
                if (4096..=MAX_CHUNK_BYTES).contains(&size) {
                    Ok(())
                } else {
                    Err(format!(
                        "fixed chunk size {size} out of range 4096..={MAX_CHUNK_BYTES}"
                    ))
                }
            }
        }
    }

    /// Cuts the bytes of `reader` into chunks, calling `sink(offset, bytes)` for each in order.
    ///
    /// Streams: at most one chunk (<= max size) is held in memory at a time.
    pub fn chunk_stream<R: Read, E>(
        &self,
        reader: R,
        mut sink: impl FnMut(u64, Vec<u8>) -> Result<(), E>,
        io_error: impl Fn(std::io::Error) -> E,
    ) -> Result<(), E> {
        match *self {
            Chunker::FastCdc { min, avg, max } => {
                let cdc = fastcdc::v2020::StreamCDC::new(reader, min, avg, max);
                for chunk in cdc {
                    let chunk = chunk.map_err(|e| match e {
                        fastcdc::v2020::Error::IoError(io) => io_error(io),
                        other => io_error(std::io::Error::other(other.to_string())),
                    })?;
                    sink(chunk.offset, chunk.data)?;
                }
                Ok(())
            }
            Chunker::Fixed { size } => {
                let mut reader = reader;
                let mut offset = 0u64;
                loop {
                    let mut buf = Vec::with_capacity(size as usize);
                    let n = (&mut reader)
                        .take(size as u64)
                        .read_to_end(&mut buf)
                        .map_err(&io_error)?;
                    if n == 0 {
                        return Ok(());
                    }
                    sink(offset, buf)?;
                    offset += n as u64;
                }
            }
        }
    }
}

impl fmt::Display for Chunker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Chunker::FastCdc { min, avg, max } => write!(f, "fastcdc:{min}:{avg}:{max}"),
            Chunker::Fixed { size } => write!(f, "fixed:{size}"),
        }
    }
}

impl FromStr for Chunker {
    type Err = String;

    /// Parses `fastcdc`, `fastcdc:MIN:AVG:MAX`, `fixed` or `fixed:SIZE` (sizes in bytes).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(':');
        let kind = parts.next().unwrap_or_default();
        let nums: Result<Vec<u32>, _> = parts.map(str::parse::<u32>).collect();
        let nums = nums.map_err(|e| format!("chunker {s:?}: {e}"))?;
        let chunker = match (kind, nums.as_slice()) {
            ("fastcdc", []) => Chunker::default(),
            ("fastcdc", [min, avg, max]) => Chunker::FastCdc {
                min: *min,
                avg: *avg,
                max: *max,
            },
            ("fixed", []) => Chunker::Fixed {
                size: FIXED_CHUNK_BYTES,
            },
            ("fixed", [size]) => Chunker::Fixed { size: *size },
            _ => {
                return Err(format!(
                    "chunker {s:?}: expected fastcdc, fastcdc:MIN:AVG:MAX, fixed or fixed:SIZE"
                ))
            }
        };
        chunker.validate()?;
        Ok(chunker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(chunker: Chunker, data: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        chunker
            .chunk_stream(
                data,
                |off, c| -> Result<(), std::io::Error> {
                    out.push((off, c));
                    Ok(())
                },
                |e| e,
            )
            .unwrap();
        out
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn chunks_cover_the_input_in_order() {
        let data = pseudo_random(5 << 20, 1);
        for chunker in [Chunker::default(), Chunker::Fixed { size: 1 << 20 }] {
            let chunks = cut(chunker, &data);
            let mut joined = Vec::new();
            for (off, c) in &chunks {
                assert_eq!(*off as usize, joined.len());
                joined.extend_from_slice(c);
            }
            assert_eq!(joined, data);
        }
    }

    #[test]
    fn an_inserted_byte_changes_few_content_defined_chunks() {
        let data = pseudo_random(8 << 20, 2);
        let mut edited = data.clone();
        edited.insert(3 << 20, 0xAB);
        let ids = |d: &[u8]| -> std::collections::HashSet<crate::ChunkId> {
            cut(Chunker::default(), d)
                .iter()
                .map(|(_, c)| crate::ChunkId::of(c))
                .collect()
        };
        let (a, b) = (ids(&data), ids(&edited));
        let shared = a.intersection(&b).count();
        assert!(
            shared + 2 >= a.len(),
            "only {shared} of {} chunks shared",
            a.len()
        );
    }

    #[test]
    fn parses_and_rejects_chunker_specs() {
        assert_eq!(
            "fixed:65536".parse::<Chunker>().unwrap(),
            Chunker::Fixed { size: 65536 }
        );
        assert_eq!("fastcdc".parse::<Chunker>().unwrap(), Chunker::default());
        assert!("fixed:12".parse::<Chunker>().is_err());
        assert!("rabin".parse::<Chunker>().is_err());
        let c = Chunker::default();
        let (min, avg, max) = c.params();
        assert_eq!(Chunker::from_parts(c.kind_code(), min, avg, max), Some(c));
    }
}
