//! The chunk sink every indexer feeds: chunks offered by any number of producers are hashed,
//! deduplicated against the store and this run, compressed, appended to packs on one writer
//! thread and uploaded; at the end a manifest is sealed with the location of each of its chunks.
//!
//! Directory trees (the parallel scan) and container image layers (tar streams) both index
//! through it, so packing, dedup and the write order live in one place:
//! packs -> pack indexes -> chunk map -> manifest (the caller sets the tag last).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use thaw_core::chunk_map::ChunkMap;
use thaw_core::manifest::{Manifest, ManifestBuilder};
use thaw_core::pack::{ChunkLocation, EncodedChunk, PackBuilder};
use thaw_core::store::Store;
use thaw_core::ChunkId;

use crate::{IndexError, IndexOptions};

/// Compressed chunks buffered between producers and the pack writer.
const CHANNEL_CHUNKS: usize = 64;
/// Sealed packs uploading at once.
const UPLOADS_IN_FLIGHT: usize = 2;

/// Where every chunk already in the store lives, from its pack indexes.
pub struct KnownChunks {
    /// Chunk id -> location.
    pub locations: HashMap<ChunkId, ChunkLocation>,
    /// Pack indexes that could not be read (not trusted for dedup).
    pub skipped_indexes: Vec<String>,
}

impl KnownChunks {
    /// Reads every pack index of `store`.
    pub fn load(store: &Store, runtime: &tokio::runtime::Handle) -> Result<Self, IndexError> {
        let (indexes, bad_indexes) = runtime.block_on(store.load_pack_indexes())?;
        let locations = thaw_core::pack::chunk_locations(&indexes);
        let skipped_indexes: Vec<String> = bad_indexes.iter().map(|e| e.to_string()).collect();
        for problem in &skipped_indexes {
            tracing::warn!(%problem, "not trusting this pack index for dedup");
        }
        Ok(KnownChunks {
            locations,
            skipped_indexes,
        })
    }
}

/// Takes chunks from producers (any thread): new ones are compressed and sent to the writer.
pub struct ChunkSink {
    seen: Mutex<HashSet<ChunkId>>,
    zstd_level: i32,
    sender: crossbeam_channel::Sender<EncodedChunk>,
}

impl ChunkSink {
    /// Hashes a chunk; if the store and this run have not seen it, compresses and sends it to
    /// the pack writer. Returns its id.
    pub fn offer(&self, raw: &[u8]) -> ChunkId {
        let id = ChunkId::of(raw);
        let is_new = self.seen.lock().expect("seen lock").insert(id);
        if is_new {
            let encoded = EncodedChunk::encode_with_id(id, raw, self.zstd_level);
            // The writer only hangs up after an abort; the run fails then anyway.
            let _ = self.sender.send(encoded);
        }
        id
    }
}

/// What one run added to the store, as reports show it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreWrites {
    /// Chunks that were new to the store.
    pub new_chunks: u64,
    /// Raw bytes of the new chunks.
    pub new_raw_bytes: u64,
    /// Stored (compressed) bytes of the new chunks.
    pub new_stored_bytes: u64,
    /// Packs written.
    pub packs: u64,
}

/// What the pack writer wrote.
#[derive(Debug, Default)]
pub struct Written {
    /// Location of every chunk written in this run.
    pub locations: HashMap<ChunkId, ChunkLocation>,
    /// Packs written.
    pub packs: u64,
    /// Raw bytes of the chunks written.
    pub raw_bytes: u64,
    /// Stored (compressed) bytes of the chunks written.
    pub stored_bytes: u64,
}

impl Written {
    /// The counts a report shows.
    pub fn summary(&self) -> StoreWrites {
        StoreWrites {
            new_chunks: self.locations.len() as u64,
            new_raw_bytes: self.raw_bytes,
            new_stored_bytes: self.stored_bytes,
            packs: self.packs,
        }
    }
}

/// Runs `produce` with a [`ChunkSink`] while a writer thread packs and uploads what it offers.
/// `abort` is set when either side fails; `produce`'s error is the one returned first.
pub fn with_sink<R>(
    store: &Store,
    runtime: &tokio::runtime::Handle,
    known: &KnownChunks,
    options: &IndexOptions,
    abort: &AtomicBool,
    produce: impl FnOnce(&ChunkSink) -> Result<R, IndexError>,
) -> Result<(R, Written), IndexError> {
    let (sender, receiver) = crossbeam_channel::bounded::<EncodedChunk>(CHANNEL_CHUNKS);
    let sink = ChunkSink {
        seen: Mutex::new(known.locations.keys().copied().collect()),
        zstd_level: options.zstd_level,
        sender,
    };
    let (produced, written) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut writer = PackWriter {
                store,
                runtime,
                target: options.pack_target_bytes,
                current: PackBuilder::new(),
                uploads: VecDeque::new(),
                written: Written::default(),
            };
            for chunk in receiver.iter() {
                if let Err(e) = writer.add(chunk) {
                    abort.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
            if abort.load(Ordering::Relaxed) {
                return Err(IndexError::Unsupported {
                    path: "index".into(),
                    reason: "aborted".into(),
                });
            }
            writer.finish()
        });
        let produced = produce(&sink);
        if produced.is_err() {
            abort.store(true, Ordering::Relaxed);
        }
        // Hang up on the writer (dropping the sender) so it seals the last pack and returns.
        drop(sink);
        let written = writer.join().expect("pack writer thread panicked");
        (produced, written)
    });
    // A producer error is the root cause; report it before the writer's "aborted".
    let produced = produced?;
    Ok((produced, written?))
}

/// Encodes `builder`, writes its chunk map (every chunk located in `written` or `known`) and
/// the manifest; returns the manifest.
pub fn seal_manifest(
    store: &Store,
    runtime: &tokio::runtime::Handle,
    builder: ManifestBuilder,
    written: &Written,
    known: &HashMap<ChunkId, ChunkLocation>,
) -> Result<(Manifest, ChunkMap), IndexError> {
    let (manifest_id, manifest_bytes) = builder.finish()?;
    let manifest = Manifest::open(manifest_bytes.clone(), "new manifest")?;
    let locations = manifest
        .chunks()?
        .iter()
        .map(|c| {
            written
                .locations
                .get(&c.id)
                .or_else(|| known.get(&c.id))
                .copied()
                .ok_or_else(|| IndexError::Unsupported {
                    path: "index".into(),
                    reason: format!("chunk {} was neither written nor found in the store", c.id),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let map = ChunkMap {
        manifest: manifest_id,
        locations,
    };
    runtime.block_on(async {
        store.put_chunk_map(&map).await?;
        store.put_manifest(&manifest_id, manifest_bytes).await
    })?;
    Ok((manifest, map))
}

/// Appends chunks into packs and uploads them; returns the location of every chunk it wrote.
struct PackWriter<'a> {
    store: &'a Store,
    runtime: &'a tokio::runtime::Handle,
    target: u64,
    current: PackBuilder,
    uploads: VecDeque<tokio::task::JoinHandle<thaw_core::Result<()>>>,
    written: Written,
}

impl PackWriter<'_> {
    fn add(&mut self, chunk: EncodedChunk) -> Result<(), IndexError> {
        self.written.raw_bytes += chunk.raw_len as u64;
        self.written.stored_bytes += chunk.data.len() as u64;
        self.current.append(&chunk);
        if self.current.len() >= self.target {
            self.seal()?;
        }
        Ok(())
    }

    fn seal(&mut self) -> Result<(), IndexError> {
        if self.current.is_empty() {
            return Ok(());
        }
        let sealed = std::mem::take(&mut self.current).seal();
        self.written.locations.extend(sealed.locations());
        self.written.packs += 1;
        while self.uploads.len() >= UPLOADS_IN_FLIGHT {
            self.wait_oldest()?;
        }
        let store = self.store.clone();
        self.uploads.push_back(
            self.runtime
                .spawn(async move { store.put_pack(&sealed).await }),
        );
        Ok(())
    }

    fn wait_oldest(&mut self) -> Result<(), IndexError> {
        if let Some(upload) = self.uploads.pop_front() {
            self.runtime
                .block_on(upload)
                .map_err(|e| IndexError::Unsupported {
                    path: "pack upload".into(),
                    reason: e.to_string(),
                })??;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Written, IndexError> {
        self.seal()?;
        while !self.uploads.is_empty() {
            self.wait_oldest()?;
        }
        Ok(self.written)
    }
}
