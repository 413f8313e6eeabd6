//! thaw-fs owns `thaw mount`: a read-only FUSE file system over a manifest that downloads
//! nothing up front.
//!
//! Metadata (lookup, getattr, readdir, readlink, xattrs, statfs) comes from the manifest alone.
//! A read maps its byte range to chunk slices and fetches them through the core tiers (memory,
//! disk cache, store), every chunk verified; reads run on the async runtime so the FUSE
//! dispatcher never waits on the network, and a readahead window grows along sequential reads.
//! The first read of each chunk after mount is recorded as an access trace, stored beside the
//! manifest when the mount ends and replayed as prefetch by the next mount ([`trace`],
//! [`prefetch`]). [`session`] runs a whole mount: readiness, signals, the control socket used by
//! `thaw umount` and `thaw trace save`, the Prometheus endpoint and the trace save at the end.
//! [`supervisor`] keeps a mount's FUSE connection in a small process of its own so that the
//! serving process can be upgraded or can die and be replaced under running readers
//! ([`takeover`]).

mod access;
mod attr;
pub mod background;
pub mod control;
pub mod daemon;
mod filesystem;
mod lookahead;
pub mod metrics;
mod passthrough;
pub mod prefetch;
mod read;
pub mod session;
pub mod supervisor;
pub mod takeover;
pub mod trace;
mod volume;

pub use filesystem::ThawFs;
pub use volume::{OpenAhead, Volume};

use thaw_core::ChunkId;

/// Errors of mounting, unmounting and traces.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The store or the manifest failed.
    #[error(transparent)]
    Store(#[from] thaw_core::Error),
    /// The mount itself failed.
    #[error("mount point {path}: {reason}")]
    Mount {
        /// The mount point.
        path: String,
        /// What failed.
        reason: String,
    },
    /// A stored trace could not be read.
    #[error("trace {key}: {reason}")]
    BadTrace {
        /// Store key of the trace.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A background mount daemon failed to start or stop.
    #[error("{0}")]
    Daemon(String),
    /// Talking to a mount's daemon failed.
    #[error("mount control socket {socket}: {reason}")]
    Control {
        /// The socket path.
        socket: String,
        /// What failed.
        reason: String,
    },
}

impl FsError {
    pub(crate) fn mount(path: &std::path::Path, reason: impl std::fmt::Display) -> Self {
        FsError::Mount {
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }
}

/// A chunk read that failed: which chunk (table index, and id when the manifest could say)
/// and why (the error names the tier that failed).
#[derive(Debug)]
pub(crate) struct ReadError {
    pub(crate) chunk_index: u32,
    pub(crate) chunk: Option<ChunkId>,
    pub(crate) source: thaw_core::Error,
}
