//! Model folders: every `*.safetensors` file's header is read and validated as the file is
//! indexed, and a summary is kept as a manifest annotation for weight streaming to plan from.

use std::fs::File;
use std::io::Read;

use thaw_core::manifest::FileKind;
use thaw_core::safetensors;

use crate::walk::{display_rel, Entry};
use crate::IndexError;

/// Annotation key holding the JSON summary of the safetensors files.
pub const ANNOTATION: &str = "org.thaw.model.safetensors";

/// True for a regular file named `*.safetensors`.
pub fn is_safetensors(entry: &Entry) -> bool {
    entry.meta.kind == FileKind::Regular && entry.rel.ends_with(b".safetensors")
}

/// Validates one safetensors file's header; returns its path and summary
/// `{"tensors": n, "data_start": offset, "data_bytes": n}`.
pub fn summarize(entry: &Entry) -> Result<(String, serde_json::Value), IndexError> {
    let name = display_rel(&entry.rel).into_owned();
    let mut file = File::open(&entry.abs).map_err(|e| IndexError::io(&entry.abs, e))?;
    let mut first = Vec::with_capacity(8);
    (&mut file)
        .take(8)
        .read_to_end(&mut first)
        .map_err(|e| IndexError::io(&entry.abs, e))?;
    let n = safetensors::header_len(&name, &first, entry.meta.size)?;
    let mut json = Vec::with_capacity(n as usize);
    (&mut file)
        .take(n)
        .read_to_end(&mut json)
        .map_err(|e| IndexError::io(&entry.abs, e))?;
    let header = safetensors::parse_header(&name, &json, entry.meta.size)?;
    let data_bytes: u64 = header.tensors.iter().map(|t| t.end - t.begin).sum();
    let summary = serde_json::json!({
        "tensors": header.tensors.len(),
        "data_start": header.data_start,
        "data_bytes": data_bytes,
    });
    Ok((name, summary))
}
