//! The mark phase: everything reachable from the tags.
//!
//! A tag's current manifest is live, with its chunk map and every frame that map locates; an
//! image's layer trees (`layers/sha256/<diff>` of each diff id it lists) are live with theirs.
//! Access traces are kept for every manifest a tag names or named (its history: a new version
//! borrows the traces of the old ones, which need only the trace, not the old tree). Only chunk
//! maps and manifests are read, never a pack: the live set is where each live frame is.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use thaw_core::chunk_map::{chunk_map_key, ChunkMap};
use thaw_core::manifest::manifest_key;
use thaw_core::pack::FRAME_HEADER_BYTES;
use thaw_core::progress::Progress;
use thaw_core::related::image_layers;
use thaw_core::store::{parse_tag, Store, TagVersion};
use thaw_core::ChunkId;

use crate::inventory::Inventory;
use crate::{Error, Result};

/// Manifests read at once.
const READS_IN_FLIGHT: usize = 16;

/// A tag as the mark phase read it.
#[derive(Clone, Debug)]
pub struct TagState {
    /// Its name.
    pub name: String,
    /// Its versions, current first.
    pub versions: Vec<TagVersion>,
    /// When its object was last written (unix ms): the time of a version written before tags
    /// recorded times.
    pub modified_unix_ms: u64,
}

impl TagState {
    /// When the tag was pointed at its current manifest.
    pub fn set_unix_ms(&self) -> u64 {
        self.versions[0]
            .set_unix_ms
            .unwrap_or(self.modified_unix_ms)
    }
}

/// What the tags reach.
#[derive(Debug, Default)]
pub struct LiveSet {
    /// Live manifests (tagged trees and the layer trees of tagged images).
    pub manifests: HashSet<ChunkId>,
    /// Manifests whose access traces are kept (live ones and those in tag histories).
    pub trace_owners: HashSet<ChunkId>,
    /// Layer diff ids (hex) that live images use.
    pub layers: HashSet<String>,
    /// Live frames per pack: (frame offset, frame length), sorted, no duplicates.
    pub frames: HashMap<ChunkId, Vec<(u64, u64)>>,
    /// The live manifests whose chunk maps name each pack.
    pub pack_users: HashMap<ChunkId, Vec<ChunkId>>,
    /// Tags whose manifest is not in the store (nothing to keep for them).
    pub dangling_tags: Vec<String>,
}

impl LiveSet {
    /// Bytes of live frames in `pack`.
    pub fn live_bytes(&self, pack: &ChunkId) -> u64 {
        self.frames
            .get(pack)
            .map(|frames| frames.iter().map(|(_, len)| len).sum())
            .unwrap_or(0)
    }

    /// Live frames, all packs together.
    pub fn frame_count(&self) -> usize {
        self.frames.values().map(Vec::len).sum()
    }
}

/// Reads every tag of the inventory. A tag that cannot be parsed stops gc (what it names is
/// unknown); one deleted since the listing is skipped.
pub async fn read_tags(store: &Store, inventory: &Inventory) -> Result<Vec<TagState>> {
    let reads = inventory.tags.iter().map(|(name, object)| async move {
        let key = format!("tags/{name}");
        let parsed = match store.get(&key).await {
            Ok(bytes) => parse_tag(&key, &bytes).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        };
        (name, object.modified_unix_ms, key, parsed)
    });
    let mut results: Vec<_> = futures::stream::iter(reads)
        .buffer_unordered(READS_IN_FLIGHT)
        .collect()
        .await;
    results.sort_by(|a, b| a.0.cmp(b.0));
    let mut tags = Vec::new();
    for (name, modified_unix_ms, key, parsed) in results {
        match parsed {
            Ok(Some(versions)) => tags.push(TagState {
                name: name.clone(),
                versions,
                modified_unix_ms,
            }),
            Ok(None) => {}
            Err(source) => {
                return Err(Error::Unreadable {
                    what: key,
                    tag: name.clone(),
                    source: Box::new(source),
                })
            }
        }
    }
    Ok(tags)
}

/// One live manifest as read: the frames its map locates and the layers it lists.
struct Reached {
    id: ChunkId,
    frames: Vec<(ChunkId, u64, u64)>,
    layers: Vec<String>,
}

/// Reads manifest `id` and its chunk map. `Ok(None)`: the manifest is not in the store. A
/// manifest that is there but cannot be read, or has no readable chunk map, is an error: its
/// chunks could be anywhere.
async fn reach(store: &Store, id: ChunkId, tag: &str) -> Result<Option<Reached>> {
    let unreadable = |what: String| {
        let tag = tag.to_string();
        move |source| Error::Unreadable {
            what,
            tag,
            source: Box::new(source),
        }
    };
    let manifest = match store.get_manifest(&id).await {
        Ok(manifest) => manifest,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(unreadable(manifest_key(&id))(e)),
    };
    let map_key = chunk_map_key(&id);
    let map: ChunkMap = store
        .get_chunk_map(&manifest)
        .await
        .map_err(unreadable(map_key))?;
    let frames = map
        .locations
        .iter()
        .map(|l| (l.pack, l.offset, FRAME_HEADER_BYTES + l.stored_len as u64))
        .collect();
    let layers = image_layers(&manifest)
        .into_iter()
        .filter_map(|d| d.strip_prefix("sha256:").map(|h| h.to_ascii_lowercase()))
        .collect();
    Ok(Some(Reached { id, frames, layers }))
}

/// Marks everything `tags` reach. Progress counts manifests read.
pub async fn mark(
    store: &Store,
    inventory: &Inventory,
    tags: &[TagState],
    progress: &dyn Progress,
) -> Result<LiveSet> {
    let mut live = LiveSet::default();
    let mut queue: Vec<(ChunkId, String, bool)> = Vec::new();
    for tag in tags {
        live.trace_owners
            .extend(tag.versions.iter().map(|v| v.manifest));
        queue.push((tag.versions[0].manifest, tag.name.clone(), true));
    }
    let mut seen: HashSet<ChunkId> = HashSet::new();
    queue.retain(|(id, _, _)| seen.insert(*id));
    progress.start_count("marking", queue.len() as u64);
    let mut frames: HashMap<ChunkId, Vec<(u64, u64)>> = HashMap::new();
    let mut users: HashMap<ChunkId, HashSet<ChunkId>> = HashMap::new();
    while !queue.is_empty() {
        let batch = std::mem::take(&mut queue);
        let mut reads =
            futures::stream::iter(batch.into_iter().map(|(id, tag, root)| async move {
                let reached = reach(store, id, &tag).await;
                (root, tag, reached)
            }))
            .buffer_unordered(READS_IN_FLIGHT);
        while let Some((root, tag, reached)) = reads.next().await {
            progress.advance(1);
            let Some(reached) = reached? else {
                // A missing layer tree is indexed again when needed; a missing tagged
                // manifest leaves its tag dangling.
                if root {
                    live.dangling_tags.push(tag);
                }
                continue;
            };
            live.manifests.insert(reached.id);
            live.trace_owners.insert(reached.id);
            for (pack, offset, len) in reached.frames {
                frames.entry(pack).or_default().push((offset, len));
                users.entry(pack).or_default().insert(reached.id);
            }
            for hex in reached.layers {
                if !live.layers.insert(hex.clone()) || !inventory.layers.contains_key(&hex) {
                    continue;
                }
                if let Some(layer) = layer_tree(store, &hex, &tag).await? {
                    if seen.insert(layer) {
                        queue.push((layer, tag.clone(), false));
                    }
                }
            }
        }
        drop(reads);
        progress.start("marking layers", queue.len() as u64);
    }
    progress.finish();
    for (pack, mut list) in frames {
        list.sort_unstable();
        list.dedup();
        live.frames.insert(pack, list);
    }
    live.pack_users = users
        .into_iter()
        .map(|(pack, set)| {
            let mut list: Vec<ChunkId> = set.into_iter().collect();
            list.sort();
            (pack, list)
        })
        .collect();
    live.dangling_tags.sort();
    Ok(live)
}

/// The layer tree `layers/sha256/<hex>` points at; `None` if the pointer is gone or does not
/// hold an id (the layer is indexed again when an image needs it).
async fn layer_tree(store: &Store, hex: &str, tag: &str) -> Result<Option<ChunkId>> {
    let key = thaw_core::related::layer_pointer_key(hex);
    match store.get(&key).await {
        Ok(bytes) => Ok(thaw_core::related::parse_layer_pointer(&bytes)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(source) => Err(Error::Unreadable {
            what: key,
            tag: tag.to_string(),
            source: Box::new(source),
        }),
    }
}
