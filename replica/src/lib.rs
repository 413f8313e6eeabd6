//! thaw-replica: replicas on a node. It owns starting a container from an indexed image (the
//! image mounted lazily, a writable overlay, the runtime bundle: [`launch`]), checkpointing a
//! container once it is ready and keeping the checkpoint in the store as `snapshot/NAME` (the
//! runtime's CRIU images, the container's writable layer and a [`record`]: [`take`]), and
//! restoring one on any node ([`restore`]): the image mounted again, the writable layer put
//! back, the container restored by the runtime from images read through a lazy mount, with its
//! memory paged in on demand by CRIU's lazy-pages daemon.
//!
//! It wires capabilities other crates own: mounts (thaw-fs), trees in and out of the store
//! (thaw-indexer), the runtime (thaw-container), CRIU, CUDA checkpoints and host checks
//! (thaw-snapshot). The `thaw run` command is a thin front end over it.
//!
//! ```no_run
//! # async fn example(node: thaw_replica::Node) -> Result<(), thaw_replica::ReplicaError> {
//! use thaw_replica::restore::{restore, RestoreOptions};
//! let options = RestoreOptions { name: "server-ready".into(), ..RestoreOptions::default() };
//! let mut signals = thaw_replica::launch::Signals::install()?;
//! let mut restored = restore(&node, &options, &|stage| eprintln!("{stage}")).await?;
//! let status = restored.wait(&mut signals).await?;
//! # Ok(()) }
//! ```

pub mod launch;
mod node;
pub mod record;
pub mod restore;
pub mod take;

pub use node::{Node, ThawCommand};

use std::path::{Path, PathBuf};

/// Tags of snapshots live under this prefix (process and container snapshots alike).
pub const SNAPSHOT_TAG_PREFIX: &str = "snapshot/";

/// The tag of snapshot `name`.
pub fn snapshot_tag(name: &str) -> String {
    format!("{SNAPSHOT_TAG_PREFIX}{name}")
}

/// What went wrong starting, snapshotting or restoring a replica.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// Refused before anything ran: what is missing or wrong.
    #[error("{what}: {reason}")]
    Refused {
        /// The image or snapshot.
        what: String,
        /// Why.
        reason: String,
    },
    /// A container snapshot record that cannot be used.
    #[error("container snapshot record {origin}: {reason}")]
    BadRecord {
        /// Where it was read from.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Running the container.
    #[error(transparent)]
    Container(#[from] thaw_container::ContainerError),
    /// CRIU, CUDA or a host check.
    #[error(transparent)]
    Snapshot(#[from] thaw_snapshot::SnapshotError),
    /// A mount of the image or of the snapshot's images.
    #[error(transparent)]
    Mount(#[from] thaw_fs::FsError),
    /// Storing or extracting a tree.
    #[error(transparent)]
    Index(#[from] thaw_indexer::IndexError),
    /// The store.
    #[error(transparent)]
    Store(#[from] thaw_core::Error),
    /// The configuration (tiers, peers).
    #[error(transparent)]
    Config(#[from] thaw_client::ConfigError),
}

impl ReplicaError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        ReplicaError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
