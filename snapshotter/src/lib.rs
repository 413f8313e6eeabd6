//! thaw-snapshotter owns thaw's containerd integration: a remote snapshotter that containerd
//! talks to over its snapshots gRPC API ([`service`], served by [`server`]), and the pull that
//! puts an image's manifest and config into containerd and prepares its layers with the
//! remote-snapshot labels ([`pull`]), as `ctr-remote image rpull` does for stargz.
//!
//! Snapshots and their parents, labels and kinds live in a small metadata file that survives a
//! restart ([`metadata`]). A layer that thaw's store holds (found by its chain id, [`chain`]) is
//! committed at once as a remote snapshot and containerd is told it already exists, so nothing
//! is downloaded or unpacked; an active snapshot over remote layers is an overlay whose lower is
//! a lazy `thaw mount` of the flattened layers ([`lazy`]), a daemon of its own that outlives a
//! restart of the snapshotter. Layers the store does not hold are ordinary overlayfs snapshots
//! that containerd unpacks into, as with containerd's own overlayfs snapshotter ([`layout`]).

pub mod api;
pub mod chain;
pub mod filter;
pub mod layout;
pub mod lazy;
pub mod metadata;
pub mod pull;
pub mod server;
pub mod service;

/// What went wrong in the snapshotter or a pull; each maps to the gRPC code containerd expects
/// ([`SnapshotterError::code`]).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotterError {
    /// No snapshot has this key.
    #[error("snapshot {0}: not found")]
    NotFound(String),
    /// A snapshot with this key or name exists already.
    #[error("snapshot {0}: already exists")]
    AlreadyExists(String),
    /// The request is malformed (a bad filter, an unknown field).
    #[error("{0}")]
    InvalidArgument(String),
    /// The snapshot is in the wrong state for the request (not active, has children).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The metadata file or a snapshot directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
    /// The metadata file does not parse.
    #[error("metadata {path}: {reason}")]
    BadMetadata {
        /// The metadata file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// thaw's store failed.
    #[error(transparent)]
    Store(#[from] thaw_core::Error),
    /// Flattening stored layers failed.
    #[error(transparent)]
    Index(#[from] thaw_indexer::IndexError),
    /// Mounting a lazy layer failed.
    #[error(transparent)]
    Mount(#[from] thaw_fs::FsError),
    /// Talking to containerd failed (in a pull).
    #[error("containerd {what}: {status}")]
    Containerd {
        /// The call that failed.
        what: String,
        /// containerd's answer.
        status: Box<tonic::Status>,
    },
    /// The containerd socket could not be reached.
    #[error("connecting to containerd at {address}: {reason}")]
    Connect {
        /// The socket.
        address: String,
        /// Why.
        reason: String,
    },
}

impl SnapshotterError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        SnapshotterError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// The gRPC code containerd's errdefs map back to its own errors.
    pub fn code(&self) -> tonic::Code {
        match self {
            SnapshotterError::NotFound(_) => tonic::Code::NotFound,
            SnapshotterError::AlreadyExists(_) => tonic::Code::AlreadyExists,
            SnapshotterError::InvalidArgument(_) => tonic::Code::InvalidArgument,
            SnapshotterError::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
            SnapshotterError::Containerd { status, .. } => status.code(),
            _ => tonic::Code::Internal,
        }
    }
}

impl From<SnapshotterError> for tonic::Status {
    fn from(e: SnapshotterError) -> Self {
        tonic::Status::new(e.code(), e.to_string())
    }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, SnapshotterError>;
