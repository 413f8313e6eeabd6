//! The indexer's error type: every variant names the file or object it failed on.

use std::path::PathBuf;

/// Why indexing or extraction failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A source or destination file could not be read or written.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// A file changed size while it was being read.
    #[error("{}: changed while being indexed (expected {expected} bytes, read {read})", path.display())]
    Changed {
        /// The file.
        path: PathBuf,
        /// Size at scan time.
        expected: u64,
        /// Bytes read.
        read: u64,
    },
    /// Something in the input that thaw cannot represent or refuses.
    #[error("{}: {reason}", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An image layer (or its tar entry) is malformed or refused.
    #[error("layer {layer}{}: {reason}", if entry.is_empty() { String::new() } else { format!(": entry {entry}") })]
    Layer {
        /// The layer (its digest).
        layer: String,
        /// The tar entry, empty for the whole layer.
        entry: String,
        /// Why.
        reason: String,
    },
    /// An image could not be read from its registry, layout or archive.
    #[error("{image}: {reason}")]
    Image {
        /// The image reference.
        image: String,
        /// Why.
        reason: String,
    },
    /// The store or the format failed.
    #[error(transparent)]
    Core(#[from] thaw_core::Error),
}

impl IndexError {
    /// Builds [`IndexError::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        IndexError::Io {
            path: path.into(),
            cause: source,
        }
    }
}
