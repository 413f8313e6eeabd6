//! safetensors headers: parsed and validated so a model manifest never holds a file that a
//! loader would trip on, and so weight streaming can plan tensor placement from the header alone.
//!
//! Layout: an 8-byte little-endian header length N, N bytes of JSON mapping tensor names to
//! `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the byte after the header)
//! plus an optional `__metadata__` string map, then the tensor data.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{Error, Result};

/// Largest header accepted (the reference implementation's limit).
pub const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;

/// One tensor as the header describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// Element type (`F32`, `BF16`, ...).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// Byte range inside the data section.
    pub begin: u64,
    /// End of the byte range (exclusive).
    pub end: u64,
}

/// A validated header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafetensorsHeader {
    /// N, the JSON header length.
    pub header_len: u64,
    /// Offset of the data section in the file (8 + N).
    pub data_start: u64,
    /// Tensors sorted by their offset.
    pub tensors: Vec<TensorInfo>,
    /// The `__metadata__` map.
    pub metadata: BTreeMap<String, String>,
}

/// Bytes per element of a dtype, `None` for an unknown dtype.
pub fn dtype_bytes(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" | "C64" => 8,
        _ => return None,
    })
}

fn bad(file: &str, field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Safetensors {
        file: file.to_string(),
        field: field.into(),
        reason: reason.into(),
    }
}

/// Reads N from the first 8 bytes and checks it against the file length.
pub fn header_len(file: &str, first_bytes: &[u8], file_len: u64) -> Result<u64> {
    if first_bytes.len() < 8 || file_len < 8 {
        return Err(bad(
            file,
            "header length",
            format!("file is {file_len} bytes, shorter than the 8-byte header length"),
        ));
    }
    let n = u64::from_le_bytes(first_bytes[..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER_BYTES {
        return Err(bad(
            file,
            "header length",
            format!("{n} bytes exceeds the {MAX_HEADER_BYTES}-byte limit"),
        ));
    }
    if 8 + n > file_len {
        return Err(bad(
            file,
            "header length",
            format!("header of {n} bytes is larger than the file ({file_len} bytes)"),
        ));
    }
    Ok(n)
}

/// Parses and validates the JSON header of a file of `file_len` bytes.
pub fn parse_header(file: &str, json: &[u8], file_len: u64) -> Result<SafetensorsHeader> {
    let header_len = json.len() as u64;
    let data_start = 8 + header_len;
    let data_len = file_len
        .checked_sub(data_start)
        .ok_or_else(|| bad(file, "header length", "header is larger than the file"))?;
    let root: Value = serde_json::from_slice(json)
        .map_err(|e| bad(file, "header", format!("not valid JSON: {e}")))?;
    let Value::Object(entries) = root else {
        return Err(bad(file, "header", "not a JSON object"));
    };
    let mut tensors = Vec::new();
    let mut metadata = BTreeMap::new();
    for (name, value) in entries {
        if name == "__metadata__" {
            let Value::Object(map) = value else {
                return Err(bad(file, "__metadata__", "not an object of strings"));
            };
            for (k, v) in map {
                let Value::String(v) = v else {
                    return Err(bad(file, format!("__metadata__.{k}"), "not a string"));
                };
                metadata.insert(k, v);
            }
            continue;
        }
        tensors.push(parse_tensor(file, name, &value, data_len)?);
    }
    tensors.sort_by_key(|t| (t.begin, t.end));
    for pair in tensors.windows(2) {
        if pair[1].begin < pair[0].end {
            return Err(bad(
                file,
                format!("tensor {}.data_offsets", pair[1].name),
                format!(
                    "[{}, {}) overlaps tensor {} [{}, {})",
                    pair[1].begin, pair[1].end, pair[0].name, pair[0].begin, pair[0].end
                ),
            ));
        }
    }
    Ok(SafetensorsHeader {
        header_len,
        data_start,
        tensors,
        metadata,
    })
}

fn parse_tensor(file: &str, name: String, value: &Value, data_len: u64) -> Result<TensorInfo> {
    let field = |f: &str| format!("tensor {name}.{f}");
    let dtype = value
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(file, field("dtype"), "missing or not a string"))?
        .to_string();
    let elem = dtype_bytes(&dtype)
        .ok_or_else(|| bad(file, field("dtype"), format!("unknown dtype {dtype:?}")))?;
    let shape: Vec<u64> = value
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(file, field("shape"), "missing or not an array"))?
        .iter()
        .map(|d| {
            d.as_u64().ok_or_else(|| {
                bad(
                    file,
                    field("shape"),
                    format!("dimension {d} is not a non-negative integer"),
                )
            })
        })
        .collect::<Result<_>>()?;
    let offsets = value
        .get("data_offsets")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 2)
        .ok_or_else(|| {
            bad(
                file,
                field("data_offsets"),
                "missing or not a [begin, end] pair",
            )
        })?;
    let (Some(begin), Some(end)) = (offsets[0].as_u64(), offsets[1].as_u64()) else {
        return Err(bad(
            file,
            field("data_offsets"),
            "offsets are not non-negative integers",
        ));
    };
    if begin > end || end > data_len {
        return Err(bad(
            file,
            field("data_offsets"),
            format!("[{begin}, {end}) is not inside the {data_len}-byte data section"),
        ));
    }
    let expected = shape
        .iter()
        .try_fold(elem, |acc, d| acc.checked_mul(*d))
        .ok_or_else(|| bad(file, field("shape"), "element count overflows"))?;
    if end - begin != expected {
        return Err(bad(
            file,
            field("data_offsets"),
            format!(
                "spans {} bytes but {dtype} {shape:?} needs {expected}",
                end - begin
            ),
        ));
    }
    Ok(TensorInfo {
        name,
        dtype,
        shape,
        begin,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(header: &str, data_len: u64) -> (Vec<u8>, u64) {
        let mut f = (header.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(header.as_bytes());
        let len = f.len() as u64 + data_len;
        (f, len)
    }

    #[test]
    fn accepts_a_valid_header() {
        let (f, len) = file_with(
            r#"{"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2,2],"data_offsets":[16,32]},"a":{"dtype":"BF16","shape":[8],"data_offsets":[0,16]}}"#,
            32,
        );
        let n = header_len("m.safetensors", &f, len).unwrap();
        let h = parse_header("m.safetensors", &f[8..8 + n as usize], len).unwrap();
        assert_eq!(
            h.tensors
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(h.metadata["format"], "pt");
    }

    #[test]
    fn names_the_file_tensor_and_field_of_each_fault() {
        let cases = [
            (
                r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,64]}}"#,
                "tensor w.data_offsets",
            ),
            (
                r#"{"w":{"dtype":"Q4","shape":[4],"data_offsets":[0,16]}}"#,
                "tensor w.dtype",
            ),
            (
                r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#,
                "tensor w.data_offsets",
            ),
            (
                r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"v":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
                "tensor v.data_offsets",
            ),
            (
                r#"{"w":{"dtype":"F32","shape":"x","data_offsets":[0,16]}}"#,
                "tensor w.shape",
            ),
            (r#"[1,2]"#, "header"),
            (r#"{"w":"#, "header"),
        ];
        for (header, field) in cases {
            let (f, len) = file_with(header, 32);
            let err = parse_header("model.safetensors", &f[8..], len)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("model.safetensors: {field}")),
                "{header} -> {err}"
            );
        }
        let err = header_len("m", &u64::MAX.to_le_bytes(), 100)
            .unwrap_err()
            .to_string();
        assert!(err.contains("header length"), "{err}");
        let err = header_len("m", &500u64.to_le_bytes(), 100)
            .unwrap_err()
            .to_string();
        assert!(err.contains("larger than the file"), "{err}");
    }
}
