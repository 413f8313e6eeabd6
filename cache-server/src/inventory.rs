//! What a server holds, per tag: the answer to "where are this tag's chunks already?", for
//! operators and for placing replicas where their chunks are.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use thaw_core::store::Store;
use thaw_core::tier::DiskCache;
use thaw_core::ChunkId;

use crate::protocol::{Inventory, TagInventory};
use crate::Result;

/// Manifests whose chunk lists are kept between inventory requests.
const KEPT_MANIFESTS: usize = 64;

/// Distinct chunks of one manifest: id and raw length.
type ChunkList = Arc<Vec<(ChunkId, u32)>>;

/// Distinct chunks of manifests, by manifest id.
pub struct ChunkLists {
    lists: Mutex<lru::LruCache<ChunkId, ChunkList>>,
}

impl Default for ChunkLists {
    fn default() -> Self {
        ChunkLists {
            lists: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(KEPT_MANIFESTS).expect("non-zero"),
            )),
        }
    }
}

impl ChunkLists {
    async fn of(&self, store: &Store, manifest_id: &ChunkId) -> Result<ChunkList> {
        if let Some(list) = self
            .lists
            .lock()
            .expect("chunk lists lock")
            .get(manifest_id)
        {
            return Ok(list.clone());
        }
        let manifest = store.get_manifest(manifest_id).await?;
        let mut seen = HashSet::new();
        let list: Vec<(ChunkId, u32)> = manifest
            .chunks()?
            .into_iter()
            .filter(|c| seen.insert(c.id))
            .map(|c| (c.id, c.raw_len))
            .collect();
        let list = Arc::new(list);
        self.lists
            .lock()
            .expect("chunk lists lock")
            .put(*manifest_id, list.clone());
        Ok(list)
    }
}

/// The inventory of `disk` against every tag of `store` (or only `tag`).
pub async fn inventory(
    store: &Store,
    disk: &DiskCache,
    lists: &ChunkLists,
    tag: Option<&str>,
) -> Result<Inventory> {
    let tags = match tag {
        Some(name) => vec![(name.to_string(), store.resolve(name).await?)],
        None => store.list_tags().await?,
    };
    let mut out = Vec::with_capacity(tags.len());
    for (name, manifest) in tags {
        let list = lists.of(store, &manifest).await?;
        let mut entry = TagInventory {
            tag: name,
            manifest: manifest.to_hex(),
            chunks: list.len() as u64,
            held: 0,
            bytes: 0,
            held_bytes: 0,
        };
        for (id, len) in list.iter() {
            entry.bytes += u64::from(*len);
            if disk.contains(id) {
                entry.held += 1;
                entry.held_bytes += u64::from(*len);
            }
        }
        out.push(entry);
    }
    Ok(Inventory {
        chunks_held: disk.len() as u64,
        bytes_held: disk.used_bytes(),
        tags: out,
    })
}
