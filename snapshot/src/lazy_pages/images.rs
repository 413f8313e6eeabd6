//! Which memory of a restored process is lazy and where its bytes are: CRIU's pagemap image
//! (`pagemap-PID.img`: runs of pages, flagged lazy and present in `pages-ID.img`) cut at the
//! VMA boundaries of its mm image (`mm-PID.img`), since one UFFDIO_COPY may not span two VMAs.
//!
//! A CRIU image is a magic (two 32-bit words: the common magic, then the image's own; or only
//! the image's own in old images) followed by entries, each a 32-bit little-endian length and
//! that many bytes of protobuf. Only the fields this reader needs are declared; prost skips the
//! rest.

use std::path::{Path, PathBuf};

use prost::Message;

use crate::{Result, SnapshotError};

/// The first word of every CRIU image but the raw ones.
const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
/// `pagemap-PID.img`.
const PAGEMAP_MAGIC: u32 = 0x5608_4025;
/// `mm-PID.img`.
const MM_MAGIC: u32 = 0x5749_2820;
/// No entry of these images comes near this; a larger length is a corrupt file, refused
/// before anything is allocated for it.
const MAX_ENTRY: u32 = 64 << 20;
/// Pages of this restore's memory.
pub const PAGE_SIZE: u64 = 4096;

/// The pagemap entry's flags (`criu/include/pagemap.h`).
const PE_PARENT: u32 = 1 << 0;
const PE_LAZY: u32 = 1 << 1;
const PE_PRESENT: u32 = 1 << 2;

#[derive(Clone, PartialEq, Message)]
struct PagemapHead {
    #[prost(uint32, required, tag = "1")]
    pages_id: u32,
}

#[derive(Clone, PartialEq, Message)]
struct PagemapEntry {
    #[prost(uint64, required, tag = "1")]
    vaddr: u64,
    #[prost(uint32, required, tag = "2")]
    compat_nr_pages: u32,
    #[prost(bool, optional, tag = "3")]
    in_parent: Option<bool>,
    #[prost(uint32, optional, tag = "4")]
    flags: Option<u32>,
    #[prost(uint64, optional, tag = "5")]
    nr_pages: Option<u64>,
}

#[derive(Clone, PartialEq, Message)]
struct VmaEntry {
    #[prost(uint64, required, tag = "1")]
    start: u64,
    #[prost(uint64, required, tag = "2")]
    end: u64,
}

#[derive(Clone, PartialEq, Message)]
struct MmEntry {
    #[prost(message, repeated, tag = "14")]
    vmas: Vec<VmaEntry>,
}

/// A run of lazy pages: virtual addresses `start..end` of one VMA, whose bytes begin at
/// `offset` in the pages image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// First address (page aligned).
    pub start: u64,
    /// One past the last address (page aligned).
    pub end: u64,
    /// Where `start`'s page is in the pages image.
    pub offset: u64,
}

/// The lazy memory of one process in a snapshot.
#[derive(Clone, Debug)]
pub struct LazyMemory {
    /// The pages image the runs point into.
    pub pages: PathBuf,
    /// The runs, in address order.
    pub runs: Vec<Run>,
}

impl LazyMemory {
    /// Reads process `pid`'s pagemap and mm images under `images`. Entries whose pages are in
    /// a parent snapshot (pre-dumps) are refused: their bytes are not in this folder.
    pub fn load(images: &Path, pid: i32) -> Result<LazyMemory> {
        let pagemap = images.join(format!("pagemap-{pid}.img"));
        let mm = images.join(format!("mm-{pid}.img"));
        let read = |path: &Path| std::fs::read(path).map_err(|e| SnapshotError::io(path, e));
        LazyMemory::parse(images, (&pagemap, &read(&pagemap)?), (&mm, &read(&mm)?))
    }

    /// The lazy memory described by a pagemap image's and an mm image's bytes (each with the
    /// path errors name), with its pages image in `images`.
    pub fn parse(
        images: &Path,
        (pagemap, pagemap_bytes): (&Path, &[u8]),
        (mm_path, mm_bytes): (&Path, &[u8]),
    ) -> Result<LazyMemory> {
        let mut entries = parse_entries(pagemap, pagemap_bytes, PAGEMAP_MAGIC)?.into_iter();
        let (head_at, head) = entries.next().ok_or_else(|| SnapshotError::BadImage {
            path: pagemap.to_path_buf(),
            offset: 8,
            reason: "no pagemap head".into(),
        })?;
        let head = PagemapHead::decode(head.as_slice()).map_err(|e| bad(pagemap, head_at, e))?;
        let (mm_at, mm) = parse_entries(mm_path, mm_bytes, MM_MAGIC)?
            .into_iter()
            .next()
            .ok_or_else(|| SnapshotError::BadImage {
                path: mm_path.to_path_buf(),
                offset: 8,
                reason: "no mm entry".into(),
            })?;
        let mut vmas: Vec<(u64, u64)> = MmEntry::decode(mm.as_slice())
            .map_err(|e| bad(mm_path, mm_at, e))?
            .vmas
            .iter()
            .map(|v| (v.start, v.end))
            .collect();
        vmas.sort_unstable();

        let mut runs = Vec::new();
        let mut offset = 0u64;
        for (at, bytes) in entries {
            let entry = PagemapEntry::decode(bytes.as_slice()).map_err(|e| bad(pagemap, at, e))?;
            let flags = match (entry.flags, entry.in_parent) {
                (Some(flags), _) => flags,
                (None, Some(true)) => PE_PARENT,
                (None, _) => PE_PRESENT,
            };
            let pages = entry.nr_pages.unwrap_or(entry.compat_nr_pages as u64);
            let len = pages
                .checked_mul(PAGE_SIZE)
                .filter(|len| entry.vaddr.checked_add(*len).is_some())
                .ok_or_else(|| SnapshotError::BadImage {
                    path: pagemap.to_path_buf(),
                    offset: at,
                    reason: format!("{pages} pages at {:#x} overflow", entry.vaddr),
                })?;
            if flags & PE_PARENT != 0 {
                return Err(SnapshotError::BadImage {
                    path: pagemap.to_path_buf(),
                    offset: at,
                    reason: "pages in a parent snapshot (a pre-dump) cannot be served lazily"
                        .into(),
                });
            }
            if flags & PE_LAZY != 0 && flags & PE_PRESENT != 0 {
                cut_at_vmas(&vmas, entry.vaddr, entry.vaddr + len, offset, &mut runs);
            }
            if flags & PE_PRESENT != 0 {
                offset += len;
            }
        }
        Ok(LazyMemory {
            pages: images.join(format!("pages-{}.img", head.pages_id)),
            runs,
        })
    }

    /// Bytes of lazy memory in all runs.
    pub fn bytes(&self) -> u64 {
        self.runs.iter().map(|r| r.end - r.start).sum()
    }
}

/// Appends `start..end` (pages image `offset`) to `runs`, cut where a VMA ends; addresses
/// outside every VMA are left out (no lazy mapping to copy them into).
fn cut_at_vmas(vmas: &[(u64, u64)], start: u64, end: u64, offset: u64, runs: &mut Vec<Run>) {
    let first = vmas.partition_point(|&(_, vma_end)| vma_end <= start);
    for &(vma_start, vma_end) in &vmas[first..] {
        if vma_start >= end {
            break;
        }
        let (s, e) = (start.max(vma_start), end.min(vma_end));
        if s < e {
            runs.push(Run {
                start: s,
                end: e,
                offset: offset + (s - start),
            });
        }
    }
}

fn bad(path: &Path, offset: u64, e: prost::DecodeError) -> SnapshotError {
    SnapshotError::BadImage {
        path: path.to_path_buf(),
        offset,
        reason: e.to_string(),
    }
}

/// The entries of the CRIU image `data` (read from `path`) with magic `magic`, each with its
/// byte offset.
fn parse_entries(path: &Path, data: &[u8], magic: u32) -> Result<Vec<(u64, Vec<u8>)>> {
    let word = |at: usize| -> Option<u32> {
        data.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("four bytes")))
    };
    let bad = |offset: usize, reason: String| SnapshotError::BadImage {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let mut at = match (word(0), word(4)) {
        (Some(IMG_COMMON_MAGIC), Some(m)) if m == magic => 8,
        (Some(m), _) if m == magic => 4,
        (first, second) => {
            return Err(bad(
                0,
                format!("magic {first:#x?}/{second:#x?}, expected {magic:#x}"),
            ))
        }
    };
    let mut entries = Vec::new();
    while at < data.len() {
        let len = word(at).ok_or_else(|| bad(at, "a truncated entry length".into()))?;
        if len > MAX_ENTRY {
            return Err(bad(
                at,
                format!("an entry of {len} bytes (limit {MAX_ENTRY})"),
            ));
        }
        let body = data
            .get(at + 4..at + 4 + len as usize)
            .ok_or_else(|| bad(at, format!("an entry of {len} bytes past the end")))?;
        entries.push((at as u64, body.to_vec()));
        at += 4 + len as usize;
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(magic: u32, entries: &[Vec<u8>]) -> Vec<u8> {
        let mut out = IMG_COMMON_MAGIC.to_le_bytes().to_vec();
        out.extend(magic.to_le_bytes());
        for e in entries {
            out.extend((e.len() as u32).to_le_bytes());
            out.extend(e);
        }
        out
    }

    fn entry(vaddr: u64, pages: u64, flags: u32) -> Vec<u8> {
        PagemapEntry {
            vaddr,
            compat_nr_pages: pages as u32,
            in_parent: None,
            flags: Some(flags),
            nr_pages: Some(pages),
        }
        .encode_to_vec()
    }

    fn write_images(dir: &Path, pagemap: &[Vec<u8>], vmas: &[(u64, u64)]) {
        let mut all = vec![PagemapHead { pages_id: 7 }.encode_to_vec()];
        all.extend_from_slice(pagemap);
        std::fs::write(dir.join("pagemap-1.img"), image(PAGEMAP_MAGIC, &all)).unwrap();
        let mm = MmEntry {
            vmas: vmas
                .iter()
                .map(|&(start, end)| VmaEntry { start, end })
                .collect(),
        };
        std::fs::write(dir.join("mm-1.img"), image(MM_MAGIC, &[mm.encode_to_vec()])).unwrap();
    }

    #[test]
    fn lazy_runs_carry_their_pages_offsets_and_stop_at_vma_ends() {
        let dir = tempfile::tempdir().unwrap();
        let p = PAGE_SIZE;
        write_images(
            dir.path(),
            &[
                // Present, not lazy (a file mapping's dirty pages): takes room in the pages image.
                entry(0x1000, 2, PE_PRESENT),
                // Lazy across two VMAs.
                entry(0x10000, 4, PE_PRESENT | PE_LAZY),
                // Not present (zero pages): no room in the pages image.
                entry(0x20000, 8, 0),
                entry(0x30000, 1, PE_PRESENT | PE_LAZY),
            ],
            &[(0x30000, 0x31000), (0x10000, 0x12000), (0x12000, 0x20000)],
        );
        let memory = LazyMemory::load(dir.path(), 1).unwrap();
        assert_eq!(memory.pages, dir.path().join("pages-7.img"));
        assert_eq!(
            memory.runs,
            vec![
                Run {
                    start: 0x10000,
                    end: 0x12000,
                    offset: 2 * p
                },
                Run {
                    start: 0x12000,
                    end: 0x14000,
                    offset: 4 * p
                },
                Run {
                    start: 0x30000,
                    end: 0x31000,
                    offset: 6 * p
                },
            ]
        );
        assert_eq!(memory.bytes(), 5 * p);
    }

    /// Pagemap and mm images come from the store: mutated ones are errors, never a panic or an
    /// allocation their lengths claim.
    #[test]
    fn fuzz_pagemap_and_mm_images() {
        let dir = tempfile::tempdir().unwrap();
        write_images(
            dir.path(),
            &[
                entry(0x1000, 2, PE_PRESENT),
                entry(0x10000, 4, PE_PRESENT | PE_LAZY),
            ],
            &[(0x10000, 0x12000), (0x12000, 0x20000)],
        );
        let pagemap = std::fs::read(dir.path().join("pagemap-1.img")).unwrap();
        let mm = std::fs::read(dir.path().join("mm-1.img")).unwrap();
        let (pm_path, mm_path) = (Path::new("pagemap-1.img"), Path::new("mm-1.img"));
        let cases = thaw_core::fuzz::cases(3000);
        thaw_core::fuzz::run(
            "CRIU pagemap image",
            std::slice::from_ref(&pagemap),
            cases,
            |input| {
                if let Ok(memory) = LazyMemory::parse(dir.path(), (pm_path, input), (mm_path, &mm))
                {
                    assert!(memory.runs.iter().all(|r| r.start < r.end));
                }
            },
        );
        thaw_core::fuzz::run("CRIU mm image", std::slice::from_ref(&mm), cases, |input| {
            let _ = LazyMemory::parse(dir.path(), (pm_path, &pagemap), (mm_path, input));
        });
    }

    #[test]
    fn bad_images_are_refused_naming_the_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        write_images(
            dir.path(),
            &[entry(0x10000, 1, PE_PARENT)],
            &[(0x10000, 0x11000)],
        );
        let err = LazyMemory::load(dir.path(), 1).unwrap_err().to_string();
        assert!(
            err.contains("pagemap-1.img") && err.contains("parent"),
            "{err}"
        );

        let path = dir.path().join("pagemap-1.img");
        let mut huge = image(PAGEMAP_MAGIC, &[]);
        huge.extend(u32::MAX.to_le_bytes());
        std::fs::write(&path, &huge).unwrap();
        let err = LazyMemory::load(dir.path(), 1).unwrap_err().to_string();
        assert!(err.contains("at byte 8") && err.contains("limit"), "{err}");

        std::fs::write(&path, image(MM_MAGIC, &[])).unwrap();
        let err = LazyMemory::load(dir.path(), 1).unwrap_err().to_string();
        assert!(err.contains("magic"), "{err}");

        let mut truncated = image(
            PAGEMAP_MAGIC,
            &[PagemapHead { pages_id: 1 }.encode_to_vec()],
        );
        truncated.extend(100u32.to_le_bytes());
        truncated.extend([0u8; 10]);
        std::fs::write(&path, &truncated).unwrap();
        let err = LazyMemory::load(dir.path(), 1).unwrap_err().to_string();
        assert!(err.contains("past the end"), "{err}");

        let err = LazyMemory::load(dir.path(), 2).unwrap_err().to_string();
        assert!(err.contains("pagemap-2.img"), "{err}");
    }
}
