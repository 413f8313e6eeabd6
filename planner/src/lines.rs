//! Input files: CSV with a fixed header, read line by line so that every error names its file
//! and line, and JSON, whose errors name the file and the field path.

use std::path::Path;

use crate::{Error, Result};

/// The data lines of `path` (1-based line number, fields) after checking its first line is
/// `header`; blank lines and lines starting with `#` are skipped.
pub(crate) fn read_csv(path: &Path, header: &str) -> Result<Vec<(usize, Vec<String>)>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, first)) if first.trim() == header => {}
        _ => {
            return Err(line_error(
                path,
                1,
                format!("the first line must be {header}"),
            ))
        }
    }
    let columns = header.split(',').count();
    let mut rows = Vec::new();
    for (i, line) in lines {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let fields: Vec<String> = trimmed.split(',').map(|f| f.trim().to_string()).collect();
        if fields.len() != columns {
            return Err(line_error(
                path,
                i + 1,
                format!(
                    "expected {columns} fields ({header}), found {}",
                    fields.len()
                ),
            ));
        }
        rows.push((i + 1, fields));
    }
    Ok(rows)
}

/// The bytes of `path`.
fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A JSON file as `T`; errors name the file and the field (`nodes[0].free_gpus: ...`), after
/// `context` when it is not empty.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path, context: &str) -> Result<T> {
    let bytes = read_file(path)?;
    let deserializer = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|e| Error::Json {
        path: path.display().to_string(),
        message: if context.is_empty() {
            e.to_string()
        } else {
            format!("{context}: {e}")
        },
    })
}

/// An [`Error::Line`].
pub(crate) fn line_error(path: &Path, line: usize, message: String) -> Error {
    Error::Line {
        path: path.to_path_buf(),
        line,
        message,
    }
}

/// Field `name` of a line as a finite, non-negative number.
pub(crate) fn non_negative(path: &Path, line: usize, name: &str, field: &str) -> Result<f64> {
    field
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| {
            line_error(
                path,
                line,
                format!("{name} must be a non-negative number, not {field:?}"),
            )
        })
}
