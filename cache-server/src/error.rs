//! Errors of the peer cache, each naming the peer, file or value at fault.

use std::path::PathBuf;

/// What went wrong in the peer cache.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `--peers` value that cannot be understood.
    #[error("bad peer list {spec:?}: {reason}")]
    BadPeerSpec {
        /// The value given.
        spec: String,
        /// Why it was refused.
        reason: String,
    },
    /// A DNS name of the peers that did not resolve.
    #[error("resolving peers {host}:{port}: {source}")]
    Resolve {
        /// The name.
        host: String,
        /// The port.
        port: u16,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// A file (peer list, token) that could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A token that is empty or not printable.
    #[error("bad peer token from {origin}: {reason}")]
    BadToken {
        /// Where the token came from (file path or variable name).
        origin: String,
        /// Why it was refused.
        reason: String,
    },
    /// The listening socket could not be opened.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
    /// A certificate, key or CA file is unreadable or not what it should be.
    #[error("TLS: {path}: {reason}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("building the peer HTTP client: {0}")]
    Client(String),
    /// An error of the store or its tiers.
    #[error(transparent)]
    Core(#[from] thaw_core::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
