//! The container snapshot record, `thaw-container.json` at the top of a snapshot's manifest:
//! the image the container ran (as named and as the manifest id it resolved to), the runtime
//! spec it ran under, the host facts a restore is checked against, and what the dump included.
//!
//! The manifest tagged `snapshot/NAME` holds the record, the runtime's CRIU images under
//! [`IMAGES_DIR`] and the overlay's upper directory (what the container wrote) under
//! [`UPPER_DIR`].

use std::path::Path;

use serde::{Deserialize, Serialize};
use thaw_snapshot::{HostFacts, SnapshotSummary};

use crate::ReplicaError;

/// The record's name at the top of the snapshot's tree.
pub const RECORD_FILE: &str = "thaw-container.json";
/// Its format tag.
pub const RECORD_FORMAT: &str = "thaw-container-snapshot/1";
/// Where the CRIU images are in the snapshot's tree.
pub const IMAGES_DIR: &str = "criu";
/// Where the container's writable layer is in the snapshot's tree.
pub const UPPER_DIR: &str = "upper";

/// What a container snapshot is of and what restoring it needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// [`RECORD_FORMAT`].
    pub format: String,
    /// When the dump finished, seconds since the epoch.
    pub created_unix: u64,
    /// The image as it was named (a tag, or a manifest id).
    pub image: String,
    /// The image's manifest id (hex): what a restore mounts.
    pub image_manifest: String,
    /// The runtime spec the container ran under (its root path is replaced at restore).
    pub spec: serde_json::Value,
    /// The runtime that checkpointed it (its `--version` first line).
    pub runtime: String,
    /// The CRIU, kernel and CPU flags of the host it ran on.
    #[serde(flatten)]
    pub host: HostFacts,
    /// Whether the container kept running after the dump.
    pub leave_running: bool,
    /// Whether established TCP connections were dumped.
    pub tcp_established: bool,
    /// Whether the file locks its processes held were dumped.
    pub file_locks: bool,
    /// The container's processes (pids inside its pid namespace) whose CUDA state was
    /// checkpointed into host memory before the dump.
    #[serde(default)]
    pub cuda_processes: Vec<u32>,
}

impl ContainerRecord {
    /// Writes the record into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), ReplicaError> {
        let path = dir.join(RECORD_FILE);
        let text = serde_json::to_vec_pretty(self).expect("the record serialises");
        std::fs::write(&path, text).map_err(|e| ReplicaError::io(&path, e))
    }

    /// Parses a record read from `origin` (named in errors).
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Self, ReplicaError> {
        let bad = |reason: String| ReplicaError::BadRecord {
            origin: origin.to_string(),
            reason,
        };
        let record: ContainerRecord =
            serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if record.format != RECORD_FORMAT {
            return Err(bad(format!(
                "format {:?}, this thaw reads {RECORD_FORMAT:?}",
                record.format
            )));
        }
        record.host.validate(origin)?;
        if !record.spec.get("root").is_some_and(|r| r.is_object()) {
            return Err(bad("spec: no root object".into()));
        }
        if record
            .image_manifest
            .parse::<thaw_core::chunk::ChunkId>()
            .is_err()
        {
            return Err(bad(format!(
                "image_manifest {:?} is not a manifest id",
                record.image_manifest
            )));
        }
        Ok(record)
    }

    /// The row of `thaw snapshot ls` for snapshot `name`, stored as `manifest` holding `bytes`.
    pub fn summary(&self, name: &str, manifest: String, bytes: u64) -> SnapshotSummary {
        let args = self.spec["process"]["args"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        SnapshotSummary {
            name: name.to_string(),
            manifest,
            pid: 0,
            created_unix: self.created_unix,
            exe: args.split(' ').next().unwrap_or_default().into(),
            cmdline: args,
            bytes,
            criu: self.host.criu_version.clone(),
            image: Some(self.image.clone()),
        }
    }

    /// The spec for a restore whose root is `rootfs`.
    pub fn spec_with_root(&self, rootfs: &Path) -> serde_json::Value {
        let mut spec = self.spec.clone();
        spec["root"]["path"] = serde_json::json!(rootfs);
        spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> ContainerRecord {
        ContainerRecord {
            format: RECORD_FORMAT.into(),
            created_unix: 1,
            image: "server".into(),
            image_manifest: "ab".repeat(32),
            spec: serde_json::json!({"root": {"path": "/run/x/rootfs"}, "process": {"args": ["python3"]}}),
            runtime: "runc version 1.1.5".into(),
            host: HostFacts {
                criu_version: "4.1.1".into(),
                kernel: "6.18".into(),
                cpu_flags: vec!["fpu".into()],
            },
            leave_running: false,
            tcp_established: false,
            file_locks: true,
            cuda_processes: Vec::new(),
        }
    }

    #[test]
    fn records_round_trip_and_bad_ones_name_the_field() {
        let record = sample();
        let bytes = serde_json::to_vec(&record).unwrap();
        assert_eq!(ContainerRecord::parse(&bytes, "s").unwrap(), record);
        let moved = record.spec_with_root(Path::new("/elsewhere/rootfs"));
        assert_eq!(moved["root"]["path"], "/elsewhere/rootfs");
        assert_eq!(moved["process"], record.spec["process"]);

        let mut bad = record.clone();
        bad.image_manifest = "not-hex".into();
        let err = ContainerRecord::parse(&serde_json::to_vec(&bad).unwrap(), "snap/x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("snap/x") && err.contains("image_manifest"),
            "{err}"
        );
        let mut bad = record.clone();
        bad.host.criu_version = "four".into();
        let err = ContainerRecord::parse(&serde_json::to_vec(&bad).unwrap(), "snap/x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("criu_version"), "{err}");
        let mut bad = record;
        bad.format = "thaw-container-snapshot/9".into();
        let err = ContainerRecord::parse(&serde_json::to_vec(&bad).unwrap(), "snap/x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/9"), "{err}");
    }

    /// A record comes from the store: a mutated one is an error, never a panic.
    #[test]
    fn fuzz_container_records() {
        let json = serde_json::to_vec(&sample()).unwrap();
        thaw_core::fuzz::run(
            "container snapshot record",
            &[json],
            thaw_core::fuzz::cases(2000),
            |input| {
                let _ = ContainerRecord::parse(input, "fuzz");
            },
        );
    }
}
