//! Errors of weight streaming; each names the model file, tensor, chunk or device concerned.

use std::ops::Range;

/// What can go wrong while planning or streaming weights.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// A store, manifest, chunk or safetensors header fault (already names its object).
    #[error(transparent)]
    Core(#[from] thaw_core::Error),
    /// The manifest holds no `*.safetensors` file.
    #[error("{manifest}: no .safetensors files in this manifest (index the model folder with `thaw index model`)")]
    NoSafetensors {
        /// The manifest's name or id.
        manifest: String,
    },
    /// A device string that is not `cpu`, `cuda` or `cuda:N`.
    #[error("device {0:?}: expected cpu, cuda or cuda:N")]
    BadDevice(String),
    /// No CUDA driver library on this machine.
    #[error("{device}: no CUDA driver (libcuda.so) on this machine; use --device cpu")]
    NoDriver {
        /// The device asked for.
        device: String,
    },
    /// A CUDA driver call failed.
    #[error("{device}: {operation} failed: {reason}")]
    Cuda {
        /// The device.
        device: String,
        /// The driver call or step.
        operation: String,
        /// The driver's error.
        reason: String,
    },
    /// Host memory could not be allocated.
    #[error("cannot allocate {bytes} bytes of host memory for {purpose}")]
    HostAlloc {
        /// Size asked for.
        bytes: u64,
        /// What it was for.
        purpose: &'static str,
    },
    /// A read of a destination range outside the allocation.
    #[error("range {range:?} is outside the {len}-byte allocation")]
    OutOfBounds {
        /// The range asked for.
        range: Range<u64>,
        /// The allocation's length.
        len: u64,
    },
    /// A chunk's bytes are shorter than the segments planned from it.
    #[error("chunk {chunk}: {len} bytes, but the plan copies up to byte {needed} of it")]
    ShortChunk {
        /// The chunk id (hex).
        chunk: String,
        /// Bytes delivered.
        len: usize,
        /// Bytes the plan needs.
        needed: u64,
    },
    /// A chunk's bytes are not as long as the manifest says.
    #[error("chunk {chunk}: {len} bytes, but the manifest says {expected}")]
    ChunkLength {
        /// The chunk id (hex).
        chunk: String,
        /// Bytes delivered.
        len: usize,
        /// The manifest's length.
        expected: u32,
    },
    /// A copy worker stopped without reporting (it panicked).
    #[error("weight copy worker stopped unexpectedly: {0}")]
    Worker(String),
}

/// Result with [`WeightsError`].
pub type Result<T, E = WeightsError> = std::result::Result<T, E>;
