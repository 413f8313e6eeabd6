//! thaw-core owns thaw's store format and the tiers that read it.
//!
//! Everything thaw stores is content addressed: a [`ChunkId`] is the blake3 of a chunk's
//! uncompressed bytes. Files are cut into chunks ([`chunker`]), chunks are zstd-compressed into
//! pack objects ([`pack`]), a [`manifest::Manifest`] holds a flattened file tree whose files point
//! at chunks, a [`chunk_map::ChunkMap`] says where each of a manifest's chunks lives in the packs,
//! and tags name manifests ([`store::Store`]). Reads go through a [`tier::TieredStore`]: memory,
//! local disk (RocksDB), then the object store, every chunk verified against its id on the way in.
//!
//! This crate does not walk file systems, mount anything or talk to peers: the indexer, fs and
//! cache-server crates build on the traits here. `docs/format.md` specifies every byte.
//!
//! ```no_run
//! # async fn demo() -> thaw_core::Result<()> {
//! use thaw_core::{store::{Store, StoreConfig}, tier::TieredStore};
//! let store = Store::open(&StoreConfig::local("/tmp/thaw-store"))?;
//! let manifest_id = store.resolve("python-stdlib").await?;
//! let manifest = store.get_manifest(&manifest_id).await?;
//! println!("{} chunks", manifest.chunk_count());
//! # Ok(()) }
//! ```

pub mod binary;
pub mod chunk;
pub mod chunk_map;
pub mod chunker;
pub mod dirs;
pub mod error;
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;
pub mod lock;
pub mod manifest;
pub mod metrics;
pub mod pack;
pub mod progress;
pub mod related;
pub mod safetensors;
pub mod stats;
pub mod store;
pub mod tier;
pub mod verify;

#[cfg(test)]
mod fuzz_targets;

pub use chunk::{ChunkId, VerifiedChunk};
pub use error::{Error, Result};
