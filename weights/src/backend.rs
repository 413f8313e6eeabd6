//! Where weights land: the [`Backend`] trait, and the host-memory backend used with
//! `--device cpu` (and by tests on machines without a GPU).
//!
//! A backend makes one [`Allocation`] for the whole model and any number of [`Lane`]s; each copy
//! lane runs on its own thread and moves verified chunk bytes into the allocation. The CUDA lane
//! ([`crate::cuda`]) stages them through pinned buffers and copies asynchronously on its own
//! stream; the host lane copies directly.

use std::ops::Range;
use std::time::{Duration, Instant};

use thaw_core::tier::ChunkInFile;

use crate::plan::{ChunkJob, Segment};
use crate::{Result, WeightsError};

/// The kind of memory an allocation lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum DeviceKind {
    /// Host memory.
    Cpu,
    /// GPU memory of CUDA device `ordinal`.
    Cuda {
        /// The device ordinal.
        ordinal: usize,
    },
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceKind::Cpu => write!(f, "cpu"),
            DeviceKind::Cuda { ordinal } => write!(f, "cuda:{ordinal}"),
        }
    }
}

impl std::str::FromStr for DeviceKind {
    type Err = WeightsError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(DeviceKind::Cpu),
            "cuda" => Ok(DeviceKind::Cuda { ordinal: 0 }),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(|ordinal| DeviceKind::Cuda { ordinal })
                .ok_or_else(|| WeightsError::BadDevice(s.to_string())),
        }
    }
}

/// One destination allocation holding every tensor of a model.
pub trait Allocation: Send + Sync {
    /// Its device.
    fn device(&self) -> DeviceKind;
    /// Address of byte 0 (a device pointer for GPU memory).
    fn address(&self) -> u64;
    /// Size in bytes.
    fn len(&self) -> u64;
    /// True for a zero-byte allocation.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Clears `range`.
    fn zero(&self, range: Range<u64>) -> Result<()>;
    /// Copies `range` back into host memory (checks and tests).
    fn read(&self, range: Range<u64>) -> Result<Vec<u8>>;
}

/// A copy lane: one thread's path from chunk bytes into the allocation.
pub trait Lane: Send {
    /// Copies each segment of `chunk` into `target`; may return before the copy is complete
    /// (see [`Lane::finish`]), but never before `chunk` may be dropped. The caller has checked
    /// that every segment lies inside `chunk` and `target`.
    fn upload(&mut self, chunk: &[u8], target: &dyn Allocation, segments: &[Segment])
        -> Result<()>;
    /// Reads `job`'s chunk from the disk cache file `source` into `target` (see
    /// [`crate::in_place`]); `false` when the bytes there are not the chunk's (or cannot be
    /// read), and the caller gets the chunk from the tiers instead. By default the chunk is
    /// read into one buffer and uploaded.
    fn read_into(
        &mut self,
        source: &ChunkInFile,
        job: &ChunkJob,
        target: &dyn Allocation,
    ) -> Result<bool> {
        let mut buffer = vec![0u8; job.chunk.raw_len as usize];
        let read = crate::in_place::read_whole(source, job, &mut buffer);
        if !crate::in_place::usable(read, job) {
            return Ok(false);
        }
        self.upload(&buffer, target, &job.segments).map(|()| true)
    }
    /// Waits until every copy this lane started is complete.
    fn finish(&mut self) -> Result<()>;
}

/// The measured reference copy: the fastest this machine moves the same number of bytes from
/// (pinned) host memory into the destination memory, with no chunk store involved.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Reference {
    /// What was measured ("pinned H2D copy", "host memcpy").
    pub name: String,
    /// Bytes copied.
    pub bytes: u64,
    /// Time taken.
    pub seconds: f64,
}

impl Reference {
    /// Bytes per second.
    pub fn bytes_per_second(&self) -> f64 {
        self.bytes as f64 / self.seconds.max(1e-9)
    }
}

/// A kind of destination memory.
pub trait Backend: Send + Sync {
    /// The device this backend writes to.
    fn device(&self) -> DeviceKind;
    /// A human description ("NVIDIA H100 80GB HBM3 (cuda:0)", "host memory").
    fn describe(&self) -> String;
    /// Allocates `bytes` of destination memory.
    fn allocate(&self, bytes: u64) -> Result<Box<dyn Allocation>>;
    /// A copy lane whose staging buffers hold chunks of up to `staging_bytes`.
    fn lane(&self, staging_bytes: usize) -> Result<Box<dyn Lane>>;
    /// Measures [`Reference`] for `bytes` bytes.
    fn reference_copy(&self, bytes: u64) -> Result<Reference>;
}

/// Page-aligned host memory written by several lanes at once (each into its own ranges).
pub struct HostAllocation {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the memory is owned by this value; concurrent writers are handed disjoint ranges by
// the plan, and readers only read after every lane has finished.
unsafe impl Send for HostAllocation {}
// SAFETY: as above.
unsafe impl Sync for HostAllocation {}

impl HostAllocation {
    /// `len` zeroed bytes: an anonymous mapping, so pages are zero on first touch (no memset
    /// of the whole model up front) and, where the kernel allows, backed by huge pages.
    pub fn new(len: u64) -> Result<Self> {
        let failed = || WeightsError::HostAlloc {
            bytes: len,
            purpose: "the model's tensors",
        };
        let len = usize::try_from(len).map_err(|_| failed())?;
        if len == 0 {
            return Ok(HostAllocation {
                ptr: std::ptr::NonNull::dangling().as_ptr(),
                len,
            });
        }
        // SAFETY: a fresh private anonymous mapping; checked for failure below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(failed());
        }
        // SAFETY: advice on the mapping just made; failure only means no huge pages.
        unsafe { libc::madvise(ptr, len, libc::MADV_HUGEPAGE) };
        Ok(HostAllocation {
            ptr: ptr as *mut u8,
            len,
        })
    }

    /// The bytes; call only when no lane is writing.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for len bytes (or dangling with len 0).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn check(&self, range: &Range<u64>) -> Result<()> {
        if range.start > range.end || range.end > self.len as u64 {
            return Err(WeightsError::OutOfBounds {
                range: range.clone(),
                len: self.len as u64,
            });
        }
        Ok(())
    }

    /// Copies `src` to `dst..` (bounds checked).
    fn write(&self, dst: u64, src: &[u8]) -> Result<()> {
        self.check(&(dst..dst + src.len() as u64))?;
        // SAFETY: bounds checked above; the plan gives each writer disjoint ranges.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(dst as usize), src.len())
        };
        Ok(())
    }
}

impl Drop for HostAllocation {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: mapped in `new` with this length and not unmapped before.
            unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
        }
    }
}

impl Allocation for HostAllocation {
    fn device(&self) -> DeviceKind {
        DeviceKind::Cpu
    }

    fn address(&self) -> u64 {
        self.ptr as u64
    }

    fn len(&self) -> u64 {
        self.len as u64
    }

    fn zero(&self, range: Range<u64>) -> Result<()> {
        self.check(&range)?;
        // SAFETY: bounds checked above.
        unsafe {
            std::ptr::write_bytes(
                self.ptr.add(range.start as usize),
                0,
                (range.end - range.start) as usize,
            )
        };
        Ok(())
    }

    fn read(&self, range: Range<u64>) -> Result<Vec<u8>> {
        self.check(&range)?;
        Ok(self.as_slice()[range.start as usize..range.end as usize].to_vec())
    }
}

/// Host memory as the destination: lanes copy chunk bytes straight into one allocation.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostBackend;

struct HostLane;

impl Lane for HostLane {
    fn upload(
        &mut self,
        chunk: &[u8],
        target: &dyn Allocation,
        segments: &[Segment],
    ) -> Result<()> {
        let base = target.address() as *mut u8;
        for segment in segments {
            let src = &chunk[segment.chunk_offset as usize..][..segment.len as usize];
            // SAFETY: the pipeline checked every segment against the chunk and the allocation
            // (`pipeline::check_job`); the plan gives lanes disjoint destination ranges.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    src.as_ptr(),
                    base.add(segment.dst as usize),
                    src.len(),
                )
            };
        }
        Ok(())
    }

    /// One positioned read per segment, straight into the allocation.
    fn read_into(
        &mut self,
        source: &ChunkInFile,
        job: &ChunkJob,
        target: &dyn Allocation,
    ) -> Result<bool> {
        let base = target.address() as *mut u8;
        let read = crate::in_place::read_segments(source, job, |segment| {
            // SAFETY: the pipeline checked every segment against the allocation
            // (`pipeline::check_segments`); the plan gives lanes disjoint destination ranges.
            unsafe {
                std::slice::from_raw_parts_mut(base.add(segment.dst as usize), segment.len as usize)
            }
        });
        Ok(crate::in_place::usable(read, job))
    }

    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

impl Backend for HostBackend {
    fn device(&self) -> DeviceKind {
        DeviceKind::Cpu
    }

    fn describe(&self) -> String {
        "host memory".into()
    }

    fn allocate(&self, bytes: u64) -> Result<Box<dyn Allocation>> {
        Ok(Box::new(HostAllocation::new(bytes)?))
    }

    fn lane(&self, _staging_bytes: usize) -> Result<Box<dyn Lane>> {
        Ok(Box::new(HostLane))
    }

    /// One thread copying `bytes` from a 64 MiB host buffer into a fresh allocation, the way a
    /// loader reading an mmap'ed file would, after one untimed pass that faults the pages in.
    fn reference_copy(&self, bytes: u64) -> Result<Reference> {
        const BLOCK: usize = 64 << 20;
        let target = HostAllocation::new(bytes)?;
        let source = vec![0x5au8; BLOCK.min(bytes as usize).max(1)];
        let pass = |timed: bool| -> Result<Duration> {
            let started = Instant::now();
            let mut at = 0u64;
            while at < bytes {
                let n = (bytes - at).min(source.len() as u64) as usize;
                target.write(at, &source[..n])?;
                at += n as u64;
            }
            if timed {
                std::hint::black_box(target.as_slice().first());
            }
            Ok(started.elapsed())
        };
        pass(false)?;
        let seconds = pass(true)?.as_secs_f64();
        Ok(Reference {
            name: "host memcpy".into(),
            bytes,
            seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("cpu".parse::<DeviceKind>().unwrap(), DeviceKind::Cpu);
        assert_eq!(
            "cuda".parse::<DeviceKind>().unwrap(),
            DeviceKind::Cuda { ordinal: 0 }
        );
        assert_eq!(
            "cuda:3".parse::<DeviceKind>().unwrap(),
            DeviceKind::Cuda { ordinal: 3 }
        );
        for bad in ["gpu", "cuda:", "cuda:x", "CPU"] {
            let err = bad.parse::<DeviceKind>().unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains("cuda:N"), "{err}");
        }
        assert_eq!(DeviceKind::Cuda { ordinal: 1 }.to_string(), "cuda:1");
    }

    #[test]
    fn host_allocation_is_zeroed_bounded_and_page_aligned() {
        let a = HostAllocation::new(10_000).unwrap();
        assert_eq!(a.address() % 4096, 0);
        assert!(a.as_slice().iter().all(|b| *b == 0));
        a.write(9_990, &[7; 10]).unwrap();
        assert_eq!(a.read(9_995..10_000).unwrap(), [7; 5]);
        a.zero(9_990..9_995).unwrap();
        assert_eq!(a.read(9_990..9_996).unwrap(), [0, 0, 0, 0, 0, 7]);
        assert!(matches!(
            a.read(9_999..10_001),
            Err(WeightsError::OutOfBounds { len: 10_000, .. })
        ));
        assert!(a.write(9_995, &[1; 6]).is_err());
        assert!(HostAllocation::new(0).unwrap().is_empty());
    }

    #[test]
    fn the_reference_copy_moves_the_bytes_asked_for() {
        let r = HostBackend.reference_copy(3 << 20).unwrap();
        assert_eq!(r.bytes, 3 << 20);
        assert!(r.seconds > 0.0 && r.bytes_per_second() > 0.0);
    }
}
