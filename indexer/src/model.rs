//! Model folders: every `*.safetensors` file's header is read and validated before anything is
//! stored, and a summary is kept as a manifest annotation for weight streaming to plan from.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use thaw_core::manifest::FileKind;
use thaw_core::safetensors;

use crate::walk::{display_rel, Tree};
use crate::IndexError;

/// Annotation key holding the JSON summary of the safetensors files.
pub const ANNOTATION: &str = "org.thaw.model.safetensors";

/// Validates every safetensors file in the tree; returns the JSON summary
/// `{path: {"tensors": n, "data_start": offset, "data_bytes": n}}`.
pub fn validate_model(root: &Path, tree: &Tree) -> Result<String, IndexError> {
    let mut summary = BTreeMap::new();
    for entry in &tree.entries {
        if entry.meta.kind != FileKind::Regular || !entry.rel.ends_with(b".safetensors") {
            continue;
        }
        let name = display_rel(&entry.rel).into_owned();
        let mut file = File::open(&entry.abs).map_err(|e| IndexError::io(&entry.abs, e))?;
        let mut first = [0u8; 8];
        let got = file
            .read(&mut first)
            .map_err(|e| IndexError::io(&entry.abs, e))?;
        let n = safetensors::header_len(&name, &first[..got], entry.meta.size)?;
        let mut json = Vec::with_capacity(n as usize);
        (&mut file)
            .take(n)
            .read_to_end(&mut json)
            .map_err(|e| IndexError::io(&entry.abs, e))?;
        let header = safetensors::parse_header(&name, &json, entry.meta.size)?;
        let data_bytes: u64 = header.tensors.iter().map(|t| t.end - t.begin).sum();
        summary.insert(
            name,
            serde_json::json!({"tensors": header.tensors.len(), "data_start": header.data_start, "data_bytes": data_bytes}),
        );
    }
    if summary.is_empty() {
        return Err(IndexError::Unsupported {
            path: root.to_path_buf(),
            reason:
                "no .safetensors files: not a model folder (use `thaw index dir` for other trees)"
                    .into(),
        });
    }
    Ok(serde_json::to_string(&summary).expect("summary serialises"))
}
