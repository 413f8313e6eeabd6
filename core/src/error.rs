//! The one error type of thaw-core: every variant names the object, chunk or path that failed.

use std::path::PathBuf;
use std::sync::Arc;

use crate::ChunkId;

/// Result with thaw-core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, always with the thing it went wrong on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object store failed on one object.
    #[error("store object {object}: {cause}")]
    ObjectStore {
        /// Object key inside the store.
        object: String,
        /// What the object store said (part of the message, so not repeated as a source).
        cause: object_store::Error,
    },
    /// An object the store should hold is absent.
    #[error("store object {object} not found")]
    NotFound {
        /// Object key inside the store.
        object: String,
    },
    /// A pack a chunk map names is not in the store (lost, or rewritten by `thaw gc` after the
    /// map was read).
    #[error("{object} at offset {offset}: chunk {chunk}: pack is missing from the store")]
    PackMissing {
        /// The pack's key.
        object: String,
        /// Where the chunk's frame was.
        offset: u64,
        /// The chunk that was asked for.
        chunk: ChunkId,
    },
    /// An object's bytes do not follow the format.
    #[error("{object} at offset {offset}: {reason}")]
    Corrupt {
        /// Object key (or file) that is corrupt.
        object: String,
        /// Byte offset inside the object where the problem was found.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// A chunk's bytes do not hash to its id.
    #[error("chunk {id} from {source_name}: content hash mismatch (bytes hash to {actual})")]
    ChunkMismatch {
        /// The chunk that was asked for.
        id: ChunkId,
        /// The hash of the bytes that came back.
        actual: ChunkId,
        /// Where the bytes came from (tier and object).
        source_name: String,
    },
    /// A chunk could not be had from any tier.
    #[error("chunk {id}: not available from any tier ({tried})")]
    ChunkUnavailable {
        /// The chunk.
        id: ChunkId,
        /// The tiers tried and what each said.
        tried: String,
    },
    /// A local file operation failed.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// The local disk cache failed.
    #[error("disk cache {}: {reason}", path.display())]
    DiskCache {
        /// The cache directory.
        path: PathBuf,
        /// What RocksDB said.
        reason: String,
    },
    /// A tag name that cannot be stored.
    #[error("invalid tag name {name:?}: {reason}")]
    InvalidTag {
        /// The rejected name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A name is neither a tag in the store nor a manifest id.
    #[error("no tag or manifest named {0:?} in the store")]
    UnknownName(String),
    /// The store URL or its options are unusable.
    #[error("store {url}: {reason}")]
    StoreConfig {
        /// The URL given.
        url: String,
        /// Why it cannot be opened.
        reason: String,
    },
    /// A path inside a manifest that does not exist or has the wrong kind.
    #[error("{path}: {reason}")]
    Path {
        /// Path inside the manifest.
        path: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// A model file (safetensors) with a malformed header.
    #[error("{file}: {field}: {reason}")]
    Safetensors {
        /// The file.
        file: String,
        /// The field (header length, a tensor name and its field, ...).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// Another process holds the store lock this command needs.
    #[error("the store is locked ({wanted:?} lock wanted): {holder}; wait for it, or remove a stale lock with `thaw unlock`")]
    Locked {
        /// The kind of lock that could not be had.
        wanted: crate::lock::LockKind,
        /// Who holds the lock in the way.
        holder: String,
    },
    /// A held store lock disappeared (another process judged it stale and removed it).
    #[error(
        "store lock {key} was lost (removed as stale by another process); nothing was committed"
    )]
    LockLost {
        /// The lock object's key.
        key: String,
    },
    /// An error shared by every waiter of one single-flight fetch.
    #[error(transparent)]
    Shared(Arc<Error>),
}

impl Error {
    /// Builds [`Error::Corrupt`].
    pub fn corrupt(object: impl Into<String>, offset: u64, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            object: object.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// Builds [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }

    /// Maps an object-store error, turning "not found" into [`Error::NotFound`].
    pub fn object_store(object: impl Into<String>, source: object_store::Error) -> Self {
        let object = object.into();
        match source {
            object_store::Error::NotFound { .. } => Error::NotFound { object },
            cause => Error::ObjectStore { object, cause },
        }
    }

    /// True when bytes arrived but were not what they should be (a frame that does not decode
    /// or a chunk that does not hash to its id): a fresh read may get good ones.
    pub fn is_corrupt(&self) -> bool {
        match self {
            Error::Corrupt { .. } | Error::ChunkMismatch { .. } => true,
            Error::Shared(inner) => inner.is_corrupt(),
            _ => false,
        }
    }

    /// True when the error (or the shared error it wraps) says an object is absent.
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::NotFound { .. } | Error::PackMissing { .. } => true,
            Error::Shared(inner) => inner.is_not_found(),
            _ => false,
        }
    }
}
