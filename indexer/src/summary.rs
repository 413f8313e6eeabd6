//! What `thaw index ... --json` prints about a run: the manifest written, what was read, what
//! the store gained, and (for images) the layers.

use serde::Serialize;

use crate::image::ImageReport;
use crate::IndexReport;

/// One index run.
#[derive(Clone, Debug, Serialize)]
pub struct IndexSummary {
    /// The manifest id (hex).
    pub manifest: String,
    /// The tag set, if any.
    pub tag: Option<String>,
    /// Entries of the tree (images: layer entries read).
    pub entries: u64,
    /// Bytes of file content read.
    pub bytes_read: u64,
    /// Distinct chunks of the manifest.
    pub chunks: u64,
    /// Chunks new to the store.
    pub new_chunks: u64,
    /// Their raw bytes.
    pub new_raw_bytes: u64,
    /// Their stored (compressed) bytes.
    pub new_stored_bytes: u64,
    /// Packs written.
    pub packs: u64,
    /// Seconds the run took.
    pub seconds: f64,
    /// Pack indexes not trusted for dedup (directory and model runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped_indexes: Option<Vec<String>>,
    /// Layers of the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<usize>,
    /// Layers already in the store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers_reused: Option<usize>,
}

impl IndexSummary {
    /// A directory or model run that took `seconds`.
    pub fn of_tree(report: &IndexReport, tag: Option<&str>, seconds: f64) -> Self {
        IndexSummary {
            entries: report.entries,
            skipped_indexes: Some(report.skipped_indexes.clone()),
            ..Self::common(
                report.manifest,
                tag,
                report.bytes_read,
                report.chunks,
                &report.writes,
                seconds,
            )
        }
    }

    /// An image run that took `seconds`.
    pub fn of_image(report: &ImageReport, tag: Option<&str>, seconds: f64) -> Self {
        IndexSummary {
            entries: report.entries_read,
            layers: Some(report.layers),
            layers_reused: Some(report.layers_reused),
            ..Self::common(
                report.manifest,
                tag,
                report.bytes_read,
                report.chunks,
                &report.writes,
                seconds,
            )
        }
    }

    fn common(
        manifest: thaw_core::ChunkId,
        tag: Option<&str>,
        bytes_read: u64,
        chunks: u64,
        writes: &crate::StoreWrites,
        seconds: f64,
    ) -> Self {
        IndexSummary {
            manifest: manifest.to_hex(),
            tag: tag.map(str::to_string),
            entries: 0,
            bytes_read,
            chunks,
            new_chunks: writes.new_chunks,
            new_raw_bytes: writes.new_raw_bytes,
            new_stored_bytes: writes.new_stored_bytes,
            packs: writes.packs,
            seconds,
            skipped_indexes: None,
            layers: None,
            layers_reused: None,
        }
    }
}
