//! Errors of snapshots, each naming the process, file or host feature at fault.

use std::path::PathBuf;

/// What went wrong with a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// No usable criu binary.
    #[error("criu is not available: {0} (install it with scripts/install-criu)")]
    CriuMissing(String),
    /// A criu older than thaw supports, or older than the one that made the snapshot.
    #[error("criu {found} is too old: {reason}")]
    CriuTooOld {
        /// The version found.
        found: String,
        /// What it needed to be.
        reason: String,
    },
    /// A criu run failed; `log` holds the end of its log.
    #[error("criu {action} failed ({status}); log {log_path}:\n{log}")]
    CriuFailed {
        /// `dump`, `restore`, `check`.
        action: &'static str,
        /// Its exit status.
        status: String,
        /// The log file.
        log_path: PathBuf,
        /// The last lines of the log.
        log: String,
    },
    /// The process to dump does not exist or cannot be inspected.
    #[error("process {pid}: {reason}")]
    Process {
        /// The pid.
        pid: u32,
        /// Why.
        reason: String,
    },
    /// This host cannot restore the snapshot.
    #[error("this host cannot restore snapshot {name}: {reason}")]
    Incompatible {
        /// The snapshot.
        name: String,
        /// Why (missing CPU features, absent files, ...).
        reason: String,
    },
    /// The snapshot record is missing or malformed.
    #[error("snapshot record {path}: {reason}")]
    BadInfo {
        /// Where it was read from.
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// The CUDA driver or its checkpoint API is not available.
    #[error("CUDA checkpoints are not available: {0}")]
    CudaUnavailable(String),
    /// A CUDA checkpoint call failed.
    #[error("{call} for process {pid} failed with CUDA error {code}")]
    Cuda {
        /// The driver call.
        call: &'static str,
        /// The process.
        pid: u32,
        /// The `CUresult`.
        code: i32,
    },
    /// The store of image folders failed (its error is this one's source, shown after it).
    #[error("snapshot {name}")]
    Images {
        /// The snapshot.
        name: String,
        /// What the store said.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A CRIU image file is malformed (a bad magic, a truncated or oversized entry).
    #[error("CRIU image {path}: {reason} (at byte {offset})")]
    BadImage {
        /// The image file.
        path: PathBuf,
        /// Where in the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// thaw's lazy-pages server failed: the restored tree may be missing memory.
    #[error("lazy pages: {0}")]
    LazyPages(String),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl SnapshotError {
    /// Builds [`SnapshotError::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SnapshotError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result with [`SnapshotError`].
pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;
