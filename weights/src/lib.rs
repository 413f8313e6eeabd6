//! thaw-weights owns weight streaming: safetensors files of a model manifest go from thaw's chunk
//! tiers into one GPU (or host) allocation, with no file system in between.
//!
//! [`model::model_files`] reads and validates each file's header through the tiers,
//! [`plan::Plan`] places every tensor in one allocation and maps each chunk's bytes to their
//! destinations, and [`pipeline::load_model`] fetches the chunks concurrently (memory → disk →
//! peers → object store, each chunk verified against its id; a chunk in a disk cache file is read
//! straight into place by the lane itself), and copies them on several lanes:
//! through pinned staging buffers and `cuMemcpyHtoDAsync` streams on a GPU ([`cuda`]), straight
//! into host memory on the CPU ([`backend::HostBackend`]). CUDA is loaded at run time, so this
//! crate builds and its tests run on machines with no GPU and no CUDA toolkit.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use thaw_core::{store::{Store, StoreConfig}, tier::{tiers_for, CacheConfig}};
//! use thaw_weights::{open_backend, load_model, LoadOptions};
//!
//! let store = Store::open(&StoreConfig::local("/var/lib/thaw/store"))?;
//! let tiers = tiers_for(&store, &CacheConfig::default(), None);
//! let (manifest, map) = store.open_manifest("llama-3-8b").await?;
//! let backend = open_backend("cuda:0".parse()?)?;
//! let model = load_model(&tiers, &manifest, &map, "llama-3-8b", backend, &LoadOptions::default(), None).await?;
//! for t in &model.plan.tensors {
//!     println!("{} {} {:?} at {:#x}", t.name, t.dtype, t.shape, model.address(t));
//! }
//! # Ok(()) }
//! ```

pub mod backend;
pub mod cuda;
mod error;
mod in_place;
pub mod model;
pub mod pipeline;
pub mod plan;
pub mod summary;

use std::sync::Arc;

pub use backend::{Allocation, Backend, DeviceKind, HostBackend, Reference};
pub use error::{Result, WeightsError};
pub use pipeline::{load_model, load_plan, plan_model, LoadOptions, LoadReport, LoadedModel};
pub use plan::{PlacedTensor, Plan};
pub use summary::{tensor_digests, LoadSummary, TensorSummary};

/// The backend for `device`: host memory, or the CUDA device (an error naming the device when
/// there is no driver or no such GPU).
pub fn open_backend(device: DeviceKind) -> Result<Arc<dyn Backend>> {
    Ok(match device {
        DeviceKind::Cpu => Arc::new(HostBackend),
        DeviceKind::Cuda { ordinal } => Arc::new(cuda::CudaBackend::open(ordinal)?),
    })
}

/// A load report as JSON text (for bindings that hand it on as a dict).
pub fn report_json(report: &LoadReport) -> serde_json::Result<String> {
    serde_json::to_string(report)
}
