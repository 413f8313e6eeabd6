//! The CUDA backend: one device allocation per model, and copy lanes that stage chunk bytes in
//! pinned host buffers (`cuMemHostAlloc`) and copy them with `cuMemcpyHtoDAsync` on their own
//! stream.
//!
//! Each lane owns two staging buffers: while the GPU copies out of one, the lane fills the other;
//! an event recorded after a buffer's copies tells the lane when it may be refilled. Several lanes
//! (threads, streams) run at once, so fetching, verifying, staging and the bus overlap.
//!
//! The driver library is loaded at run time (cudarc's dynamic loading): thaw builds and runs
//! without CUDA installed, and asks for a GPU only when `--device cuda` is used.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{result, sys, CudaContext, DriverError};

use crate::backend::{Allocation, Backend, DeviceKind, Lane, Reference};
use thaw_core::tier::ChunkInFile;

use crate::plan::{ChunkJob, Segment};
use crate::{Result, WeightsError};

/// Largest block the reference copy moves per call.
const REFERENCE_BLOCK: u64 = 256 << 20;

/// True when the CUDA driver library can be loaded on this machine.
pub fn driver_present() -> bool {
    // SAFETY: only tries to open the library.
    unsafe { sys::is_culib_present() }
}

fn failed(device: &str, operation: &str) -> impl Fn(DriverError) -> WeightsError {
    let device = device.to_string();
    let operation = operation.to_string();
    move |e| WeightsError::Cuda {
        device: device.clone(),
        operation: operation.clone(),
        reason: e.to_string(),
    }
}

/// GPU memory of one CUDA device as the destination.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    ordinal: usize,
    name: String,
}

impl CudaBackend {
    /// Opens device `ordinal` (its primary context, the one PyTorch also uses).
    pub fn open(ordinal: usize) -> Result<Self> {
        let device = format!("cuda:{ordinal}");
        if !driver_present() {
            return Err(WeightsError::NoDriver { device });
        }
        let count = CudaContext::device_count().map_err(failed(&device, "cuDeviceGetCount"))?;
        if ordinal >= count.max(0) as usize {
            return Err(WeightsError::Cuda {
                device,
                operation: "open".into(),
                reason: format!("this machine has {count} CUDA device(s)"),
            });
        }
        let ctx = CudaContext::new(ordinal).map_err(failed(&device, "cuDevicePrimaryCtxRetain"))?;
        let name = ctx.name().unwrap_or_else(|_| "CUDA device".into());
        Ok(CudaBackend { ctx, ordinal, name })
    }

    fn device_name(&self) -> String {
        format!("cuda:{}", self.ordinal)
    }

    fn bind(&self) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(failed(&self.device_name(), "cuCtxSetCurrent"))
    }
}

/// Device memory from `cuMemAlloc`, freed on drop.
pub struct CudaAllocation {
    ctx: Arc<CudaContext>,
    ordinal: usize,
    ptr: sys::CUdeviceptr,
    len: u64,
}

impl CudaAllocation {
    fn device_name(&self) -> String {
        format!("cuda:{}", self.ordinal)
    }

    fn check(&self, range: &Range<u64>) -> Result<()> {
        if range.start > range.end || range.end > self.len {
            return Err(WeightsError::OutOfBounds {
                range: range.clone(),
                len: self.len,
            });
        }
        self.ctx
            .bind_to_thread()
            .map_err(failed(&self.device_name(), "cuCtxSetCurrent"))
    }
}

impl Drop for CudaAllocation {
    fn drop(&mut self) {
        if self.len > 0 && self.ctx.bind_to_thread().is_ok() {
            // SAFETY: allocated by cuMemAlloc in this context and not freed before.
            if let Err(e) = unsafe { result::free_sync(self.ptr) } {
                tracing::warn!(device = %self.device_name(), error = %e, "cuMemFree failed");
            }
        }
    }
}

impl Allocation for CudaAllocation {
    fn device(&self) -> DeviceKind {
        DeviceKind::Cuda {
            ordinal: self.ordinal,
        }
    }

    fn address(&self) -> u64 {
        self.ptr
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn zero(&self, range: Range<u64>) -> Result<()> {
        self.check(&range)?;
        // SAFETY: the range lies inside this allocation.
        unsafe {
            result::memset_d8_sync(
                self.ptr + range.start,
                0,
                (range.end - range.start) as usize,
            )
        }
        .map_err(failed(&self.device_name(), "cuMemsetD8"))
    }

    fn read(&self, range: Range<u64>) -> Result<Vec<u8>> {
        self.check(&range)?;
        let mut out = vec![0u8; (range.end - range.start) as usize];
        // SAFETY: the range lies inside this allocation; `out` has its length.
        unsafe { result::memcpy_dtoh_sync(&mut out, self.ptr + range.start) }
            .map_err(failed(&self.device_name(), "cuMemcpyDtoH"))?;
        Ok(out)
    }
}

/// A pinned host buffer and the event recorded after the copies that read it.
struct Staging {
    ptr: *mut u8,
    len: usize,
    event: sys::CUevent,
    pending: bool,
}

/// One thread's stream and its two staging buffers.
struct CudaLane {
    ctx: Arc<CudaContext>,
    device: String,
    stream: sys::CUstream,
    buffers: Vec<Staging>,
    next: usize,
}

// SAFETY: the raw handles belong to this lane alone; the context is bound on every call.
unsafe impl Send for CudaLane {}

impl CudaLane {
    fn new(backend: &CudaBackend, staging_bytes: usize) -> Result<Self> {
        backend.bind()?;
        let device = backend.device_name();
        let stream = result::stream::create(result::stream::StreamKind::NonBlocking)
            .map_err(failed(&device, "cuStreamCreate"))?;
        let mut lane = CudaLane {
            ctx: backend.ctx.clone(),
            device: device.clone(),
            stream,
            buffers: Vec::new(),
            next: 0,
        };
        for _ in 0..2 {
            // SAFETY: plain allocation; freed in Drop.
            let ptr = unsafe { result::malloc_host(staging_bytes.max(1), 0) }
                .map_err(failed(&device, "cuMemHostAlloc"))? as *mut u8;
            let event = match result::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING) {
                Ok(event) => event,
                Err(e) => {
                    // SAFETY: just allocated above.
                    let _ = unsafe { result::free_host(ptr as _) };
                    return Err(failed(&device, "cuEventCreate")(e));
                }
            };
            lane.buffers.push(Staging {
                ptr,
                len: staging_bytes.max(1),
                event,
                pending: false,
            });
        }
        Ok(lane)
    }
}

impl CudaLane {
    /// Takes the next staging buffer once the copies that read it are complete, lets `fill`
    /// write the chunk into it (`false`: the bytes are not the chunk's, nothing is copied),
    /// then queues the segments' copies into `target` and records the buffer's event.
    fn stage(
        &mut self,
        target: &dyn Allocation,
        segments: &[Segment],
        fill: impl FnOnce(&mut [u8]) -> bool,
    ) -> Result<bool> {
        self.ctx
            .bind_to_thread()
            .map_err(failed(&self.device, "cuCtxSetCurrent"))?;
        let buffer = &mut self.buffers[self.next];
        self.next = (self.next + 1) % 2;
        if buffer.pending {
            // SAFETY: the event was created in this context.
            unsafe { result::event::synchronize(buffer.event) }
                .map_err(failed(&self.device, "cuEventSynchronize"))?;
            buffer.pending = false;
        }
        // SAFETY: the buffer holds `len` bytes and no copy reads it any more (event waited).
        let staged = unsafe { std::slice::from_raw_parts_mut(buffer.ptr, buffer.len) };
        if !fill(staged) {
            return Ok(false);
        }
        for segment in segments {
            let src = &staged[segment.chunk_offset as usize..][..segment.len as usize];
            // SAFETY: the pipeline checked the segment against the chunk (which fits the
            // staging buffer) and the allocation; the buffer stays untouched until the event
            // recorded below has completed.
            unsafe { result::memcpy_htod_async(target.address() + segment.dst, src, self.stream) }
                .map_err(failed(&self.device, "cuMemcpyHtoDAsync"))?;
        }
        // SAFETY: event and stream belong to this lane's context.
        unsafe { result::event::record(buffer.event, self.stream) }
            .map_err(failed(&self.device, "cuEventRecord"))?;
        buffer.pending = true;
        Ok(true)
    }
}

impl Lane for CudaLane {
    fn upload(
        &mut self,
        chunk: &[u8],
        target: &dyn Allocation,
        segments: &[Segment],
    ) -> Result<()> {
        self.stage(target, segments, |staged| {
            let n = chunk.len().min(staged.len());
            staged[..n].copy_from_slice(&chunk[..n]);
            true
        })
        .map(drop)
    }

    /// The chunk is read from its cache file straight into pinned staging memory.
    fn read_into(
        &mut self,
        source: &ChunkInFile,
        job: &ChunkJob,
        target: &dyn Allocation,
    ) -> Result<bool> {
        self.stage(target, &job.segments, |staged| {
            crate::in_place::usable(crate::in_place::read_whole(source, job, staged), job)
        })
    }

    fn finish(&mut self) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(failed(&self.device, "cuCtxSetCurrent"))?;
        // SAFETY: the stream belongs to this lane.
        unsafe { result::stream::synchronize(self.stream) }
            .map_err(failed(&self.device, "cuStreamSynchronize"))?;
        for buffer in &mut self.buffers {
            buffer.pending = false;
        }
        Ok(())
    }
}

impl Drop for CudaLane {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_err() {
            return;
        }
        // SAFETY: every handle was created by this lane and is released once, after the
        // stream's work is complete.
        unsafe {
            let _ = result::stream::synchronize(self.stream);
            for buffer in &self.buffers {
                let _ = result::event::destroy(buffer.event);
                let _ = result::free_host(buffer.ptr as _);
            }
            let _ = result::stream::destroy(self.stream);
        }
    }
}

impl Backend for CudaBackend {
    fn device(&self) -> DeviceKind {
        DeviceKind::Cuda {
            ordinal: self.ordinal,
        }
    }

    fn describe(&self) -> String {
        format!("{} ({})", self.name, self.device_name())
    }

    fn allocate(&self, bytes: u64) -> Result<Box<dyn Allocation>> {
        self.bind()?;
        let ptr = if bytes == 0 {
            0
        } else {
            // SAFETY: plain allocation; freed when the CudaAllocation drops.
            unsafe { result::malloc_sync(bytes as usize) }.map_err(failed(
                &self.device_name(),
                &format!("cuMemAlloc({bytes} bytes)"),
            ))?
        };
        Ok(Box::new(CudaAllocation {
            ctx: self.ctx.clone(),
            ordinal: self.ordinal,
            ptr,
            len: bytes,
        }))
    }

    fn lane(&self, staging_bytes: usize) -> Result<Box<dyn Lane>> {
        Ok(Box::new(CudaLane::new(self, staging_bytes)?))
    }

    /// `bytes` copied from one pinned buffer (up to 256 MiB, reused) into device memory on one
    /// stream, after one untimed warm-up copy: the bus's practical limit for these bytes.
    fn reference_copy(&self, bytes: u64) -> Result<Reference> {
        let block = bytes.clamp(1, REFERENCE_BLOCK) as usize;
        let target = self.allocate(block as u64)?;
        let mut lane = CudaLane::new(self, block)?;
        let staged = {
            let buffer = &lane.buffers[0];
            // SAFETY: freshly allocated, no copy pending.
            let s = unsafe { std::slice::from_raw_parts_mut(buffer.ptr, buffer.len) };
            s.fill(0x5a);
            // SAFETY: the buffer outlives every copy below (the lane is synchronized).
            unsafe { std::slice::from_raw_parts(buffer.ptr as *const u8, buffer.len) }
        };
        let copy = |lane: &mut CudaLane, n: usize| -> Result<()> {
            // SAFETY: `n` ≤ both the pinned buffer and the device block.
            unsafe { result::memcpy_htod_async(target.address(), &staged[..n], lane.stream) }
                .map_err(failed(&self.device_name(), "cuMemcpyHtoDAsync"))
        };
        copy(&mut lane, block)?;
        lane.finish()?;
        let started = Instant::now();
        let mut left = bytes;
        while left > 0 {
            let n = left.min(block as u64) as usize;
            copy(&mut lane, n)?;
            left -= n as u64;
        }
        lane.finish()?;
        Ok(Reference {
            name: "pinned H2D copy".into(),
            bytes,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a driver the backend refuses with the device named; with one, a device ordinal
    /// past the last GPU is refused likewise.
    #[test]
    fn opening_a_missing_device_names_it() {
        if driver_present() {
            let err = CudaBackend::open(4096)
                .err()
                .expect("no 4097th GPU")
                .to_string();
            assert!(err.starts_with("cuda:4096:"), "{err}");
        } else {
            eprintln!("SKIPPED (partly): no CUDA driver on this machine; checking the refusal");
            let err = CudaBackend::open(0).err().expect("no driver").to_string();
            assert!(err.starts_with("cuda:0: no CUDA driver"), "{err}");
        }
    }
}
