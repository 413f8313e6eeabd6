//! What `thaw weights load --json` prints: the load report, the reference copy measured in the
//! same run, and every tensor with its place in device memory (and, when asked, its blake3 as
//! read back from the device).

use serde::Serialize;

use crate::backend::Reference;
use crate::pipeline::{LoadReport, LoadedModel};
use crate::Result;

/// One loaded tensor.
#[derive(Clone, Debug, Serialize)]
pub struct TensorSummary {
    /// The file it came from.
    pub file: String,
    /// Its name.
    pub name: String,
    /// Element type.
    pub dtype: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// Offset in the allocation.
    pub offset: u64,
    /// Bytes.
    pub bytes: u64,
    /// Its device address.
    pub address: u64,
    /// blake3 of its bytes as read back, when asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
}

/// A whole load.
#[derive(Clone, Debug, Serialize)]
pub struct LoadSummary {
    /// The destination, in words.
    pub device: String,
    /// What the load did.
    pub report: LoadReport,
    /// thaw's rate.
    pub bytes_per_second: f64,
    /// The reference copy, when measured.
    pub reference: Option<Reference>,
    /// thaw's rate over the reference's.
    pub ratio_to_reference: Option<f64>,
    /// Every tensor.
    pub tensors: Vec<TensorSummary>,
}

/// blake3 (hex) of every tensor as loaded, read back from the device, in plan order.
pub fn tensor_digests(model: &LoadedModel) -> Result<Vec<String>> {
    model
        .plan
        .tensors
        .iter()
        .map(|t| Ok(blake3::hash(&model.read(t)?).to_hex().to_string()))
        .collect()
}

impl LoadSummary {
    /// The summary of `model` loaded into `device`, with the `reference` copy; `digests` reads
    /// every tensor back to hash it.
    pub fn of(
        model: &LoadedModel,
        reference: Option<Reference>,
        device: &str,
        digests: bool,
    ) -> Result<Self> {
        let digests = match digests {
            true => Some(tensor_digests(model)?),
            false => None,
        };
        let tensors = model
            .plan
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| TensorSummary {
                file: model.plan.files[t.file].clone(),
                name: t.name.clone(),
                dtype: t.dtype.clone(),
                shape: t.shape.clone(),
                offset: t.offset,
                bytes: t.len,
                address: model.address(t),
                blake3: digests.as_ref().map(|d| d[i].clone()),
            })
            .collect();
        let rate = model.report.bytes_per_second();
        Ok(LoadSummary {
            device: device.to_string(),
            report: model.report.clone(),
            bytes_per_second: rate,
            ratio_to_reference: reference.as_ref().map(|r| rate / r.bytes_per_second()),
            reference,
            tensors,
        })
    }
}
