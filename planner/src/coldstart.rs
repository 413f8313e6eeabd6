//! Cold-start times per path, read from what `thaw bench coldstart --json` writes:
//! `{"paths": [{"name": "naive", "ready_seconds": 33.1, ...}, ...]}` (other fields ignored).

use std::path::Path;

use serde::Deserialize;

use crate::lines::read_json;
use crate::{Error, Result};

/// One way of starting a replica and how long it takes to be ready.
#[derive(Clone, Debug, PartialEq)]
pub struct ColdStartPath {
    /// The path's name (`naive`, `thaw-lazy`, `thaw-snapshot`).
    pub name: String,
    /// Seconds from start to ready.
    pub ready_seconds: f64,
}

#[derive(Deserialize)]
struct File {
    paths: Vec<Row>,
}

#[derive(Deserialize)]
struct Row {
    name: String,
    #[serde(default)]
    ready_seconds: Option<f64>,
}

/// The paths of a cold-start result file.
pub fn read_paths(path: &Path) -> Result<Vec<ColdStartPath>> {
    let file: File = read_json(path, "not a cold-start result")?;
    let json_error = |message: String| Error::Json {
        path: path.display().to_string(),
        message,
    };
    if file.paths.is_empty() {
        return Err(json_error("no paths".into()));
    }
    file.paths
        .into_iter()
        .enumerate()
        .map(|(i, row)| match row.ready_seconds {
            Some(s) if s.is_finite() && s >= 0.0 => Ok(ColdStartPath {
                name: row.name,
                ready_seconds: s,
            }),
            _ => Err(json_error(format!(
                "paths[{i}].ready_seconds missing or negative"
            ))),
        })
        .collect()
}

/// The ready time of the path named `name` in a cold-start result file, or of its fastest path.
pub fn ready_seconds(path: &Path, name: Option<&str>) -> Result<f64> {
    let paths = read_paths(path)?;
    let chosen = match name {
        Some(name) => paths
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| Error::Json {
                path: path.display().to_string(),
                message: format!("no path named {name}"),
            })?,
        None => paths
            .iter()
            .min_by(|a, b| a.ready_seconds.total_cmp(&b.ready_seconds))
            .expect("read_paths refuses an empty list"),
    };
    Ok(chosen.ready_seconds)
}
