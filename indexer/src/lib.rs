//! thaw-indexer turns file trees into thaw manifests and back.
//!
//! [`index_tree`] walks a directory (or a model folder, whose safetensors headers it validates),
//! cuts files into chunks in parallel, compresses new chunks into packs, and writes the chunk map,
//! the manifest and finally the tag, in the order that keeps the store valid if it is killed.
//! [`extract::extract`] restores a manifest as a directory tree, metadata included.
//! Progress goes to a caller-supplied [`Progress`]; this crate prints nothing.
//!
//! ```no_run
//! # fn demo() -> Result<(), thaw_indexer::IndexError> {
//! use thaw_core::store::{Store, StoreConfig};
//! use thaw_indexer::{index_tree, IndexOptions, SourceKind};
//! let store = Store::open(&StoreConfig::local("/tmp/thaw-store"))?;
//! let runtime = tokio::runtime::Runtime::new().unwrap();
//! let report = index_tree(&store, runtime.handle(), "/usr/lib/python3.11".as_ref(),
//!     SourceKind::Directory, Some("python-stdlib"), &IndexOptions::default(), &())?;
//! println!("manifest {}", report.manifest);
//! # Ok(()) }
//! ```

mod error;
pub mod extract;
pub mod image;
mod model;
mod pipeline;
mod sink;
pub mod summary;
mod walk;

use std::path::Path;

pub use error::IndexError;
pub use pipeline::IndexReport;
pub use sink::StoreWrites;
pub use summary::IndexSummary;
use thaw_core::chunker::Chunker;

/// Files smaller than this are batched with their neighbours into shared chunks.
pub const SMALL_FILE_BYTES: u64 = 64 * 1024;
/// Target size of a batch of small files.
pub const BATCH_BYTES: u64 = 1024 * 1024;

/// What kind of tree is being indexed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// Any directory tree.
    Directory,
    /// A model folder: every `*.safetensors` header is validated and summarised.
    Model,
}

impl SourceKind {
    /// The chunker used when none is asked for: content-defined for trees, fixed 4 MiB for
    /// model weights (offset math for tensor placement; fine-tunes rarely share byte runs).
    pub fn default_chunker(self) -> Chunker {
        match self {
            SourceKind::Directory => Chunker::default(),
            SourceKind::Model => Chunker::Fixed {
                size: thaw_core::chunker::FIXED_CHUNK_BYTES,
            },
        }
    }

    /// The annotation value recorded in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Directory => "directory",
            SourceKind::Model => "model",
        }
    }
}

/// Tuning for one indexing run; one place holds every policy.
#[derive(Clone, Debug)]
pub struct IndexOptions {
    /// Chunker; `None` takes the source kind's default.
    pub chunker: Option<Chunker>,
    /// zstd level for new chunks.
    pub zstd_level: i32,
    /// Seal a pack once it reaches this many bytes.
    pub pack_target_bytes: u64,
    /// Worker threads (chunking, hashing, compression).
    pub threads: usize,
    /// How long to wait for `thaw gc` or `thaw repair` to release the store (writers hold a
    /// shared store lock from before they read the pack indexes until their tag is set).
    pub lock_wait: std::time::Duration,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            chunker: None,
            zstd_level: thaw_core::pack::ZSTD_LEVEL,
            pack_target_bytes: thaw_core::pack::PACK_TARGET_BYTES,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            lock_wait: std::time::Duration::from_secs(3600),
        }
    }
}

/// Progress callbacks (the trait lives in thaw-core so every library reports the same way).
pub use thaw_core::progress::Progress;

/// Indexes the tree at `root` into `store`; sets `tag` (if given) once everything is written.
pub fn index_tree(
    store: &thaw_core::store::Store,
    runtime: &tokio::runtime::Handle,
    root: &Path,
    kind: SourceKind,
    tag: Option<&str>,
    options: &IndexOptions,
    progress: &dyn Progress,
) -> Result<IndexReport, IndexError> {
    if let Some(tag) = tag {
        thaw_core::store::validate_tag(tag)?;
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads.max(1))
        .build()
        .map_err(|e| IndexError::Unsupported {
            path: root.to_path_buf(),
            reason: format!("thread pool: {e}"),
        })?;
    let chunker = options.chunker.unwrap_or_else(|| kind.default_chunker());
    let what = format!("index {}", kind.name());
    with_write_lock(store, runtime, &what, options, |lock| {
        let report = pipeline::run(
            store, runtime, &pool, root, chunker, kind, options, progress,
        )?;
        if let Some(tag) = tag {
            commit_tag(store, runtime, lock, tag, &report.manifest)?;
        }
        Ok(report)
    })
}

/// Runs `write` under a shared store lock (so `thaw gc` cannot delete what it deduplicates
/// against), releasing the lock afterwards whatever the outcome.
pub(crate) fn with_write_lock<R>(
    store: &thaw_core::store::Store,
    runtime: &tokio::runtime::Handle,
    what: &str,
    options: &IndexOptions,
    write: impl FnOnce(&thaw_core::lock::StoreLock) -> Result<R, IndexError>,
) -> Result<R, IndexError> {
    use thaw_core::lock::{LockKind, StoreLock};
    let lock = runtime.block_on(StoreLock::acquire(
        store,
        LockKind::Shared,
        what,
        options.lock_wait,
    ))?;
    let result = write(&lock);
    if let Err(e) = runtime.block_on(lock.release()) {
        tracing::warn!(error = %e, "could not remove the store lock (it goes stale on its own)");
    }
    result
}

/// Sets `tag` once the lock is known to be still held (the commit point of a write).
pub(crate) fn commit_tag(
    store: &thaw_core::store::Store,
    runtime: &tokio::runtime::Handle,
    lock: &thaw_core::lock::StoreLock,
    tag: &str,
    manifest: &thaw_core::ChunkId,
) -> Result<(), IndexError> {
    runtime.block_on(async {
        lock.check().await?;
        store.set_tag(tag, manifest).await
    })?;
    Ok(())
}
