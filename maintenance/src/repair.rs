//! `thaw repair`: rebuild what can be rebuilt, drop what cannot, report both.
//!
//! 1. Every pack whose index is missing, unreadable or disagrees with the pack gets a new index
//!    scanned from the pack itself ([`PackIndex::scan`]: frame headers name chunk, lengths and
//!    codec; each frame is verified, bad ones are left out). An index whose pack is gone is
//!    removed (an indexer would otherwise deduplicate against chunks that are not there).
//! 2. Every tag's manifest is checked: a chunk map that is missing, unreadable, or locates a
//!    chunk where no index has it is rebuilt from the indexes; a tag whose manifest is gone or
//!    corrupt, or whose chunks are not all in some pack, is dropped (its name and why are
//!    reported; `thaw index` again to restore it).
//! 3. A layer pointer naming a layer tree that is gone is removed (the layer is indexed again).
//!
//! It holds the exclusive store lock (nothing changes under it) unless it is a dry run.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use thaw_core::chunk_map::{chunk_map_key, ChunkMap};
use thaw_core::lock::{LockKind, StoreLock};
use thaw_core::pack::{index_key, pack_key, ChunkLocation, PackIndex};
use thaw_core::progress::Progress;
use thaw_core::store::{parse_tag, Store};
use thaw_core::ChunkId;

use crate::inventory::Inventory;
use crate::Result;

/// How repair runs.
#[derive(Clone, Debug)]
pub struct RepairOptions {
    /// Report only; change nothing.
    pub dry_run: bool,
    /// How long to wait for other holders of the store lock.
    pub lock_wait: Duration,
}

/// A tag that was (or would be) dropped.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DroppedTag {
    /// The tag.
    pub name: String,
    /// Why it cannot be recovered.
    pub reason: String,
}

/// What repair did (or would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Packs whose index was rebuilt from the pack.
    pub indexes_rebuilt: Vec<String>,
    /// Indexes removed because their pack is gone.
    pub indexes_removed: Vec<String>,
    /// Frames left out of rebuilt indexes because they did not verify.
    pub bad_frames: Vec<String>,
    /// Chunk maps rebuilt from the indexes.
    pub maps_rebuilt: Vec<String>,
    /// Tags dropped.
    pub tags_dropped: Vec<DroppedTag>,
    /// Layer pointers removed.
    pub layer_pointers_removed: Vec<String>,
}

impl RepairReport {
    /// True when the store needed nothing.
    pub fn is_clean(&self) -> bool {
        self.indexes_rebuilt.is_empty()
            && self.indexes_removed.is_empty()
            && self.maps_rebuilt.is_empty()
            && self.tags_dropped.is_empty()
            && self.layer_pointers_removed.is_empty()
    }
}

/// Repairs `store`.
pub async fn repair_store(
    store: &Store,
    options: &RepairOptions,
    progress: &dyn Progress,
) -> Result<RepairReport> {
    let lock = if options.dry_run {
        None
    } else {
        Some(StoreLock::acquire(store, LockKind::Exclusive, "repair", options.lock_wait).await?)
    };
    let inventory = Inventory::take(store).await?;
    let mut report = RepairReport {
        dry_run: options.dry_run,
        ..RepairReport::default()
    };
    let indexes = repair_indexes(store, &inventory, options.dry_run, &mut report, progress).await?;
    let located = thaw_core::pack::chunk_locations(indexes.values());
    let by_offset: HashMap<(ChunkId, u64), ChunkId> = indexes
        .values()
        .flat_map(|i| i.entries.iter().map(|e| ((i.pack, e.offset), e.id)))
        .collect();
    for name in inventory.tags.keys() {
        if let Some(reason) = repair_tag(
            store,
            name,
            &located,
            &by_offset,
            options.dry_run,
            &mut report,
        )
        .await?
        {
            if !options.dry_run {
                store.delete(&format!("tags/{name}")).await?;
            }
            report.tags_dropped.push(DroppedTag {
                name: name.clone(),
                reason,
            });
        }
    }
    for object in inventory.layers.values() {
        let named = store
            .get(&object.key)
            .await
            .ok()
            .and_then(|b| thaw_core::related::parse_layer_pointer(&b));
        let whole = match named {
            Some(id) => store.get_manifest(&id).await.is_ok(),
            None => false,
        };
        if !whole {
            if !options.dry_run {
                store.delete(&object.key).await?;
            }
            report.layer_pointers_removed.push(object.key.clone());
        }
    }
    if let Some(lock) = lock {
        lock.release().await?;
    }
    Ok(report)
}

/// Rebuilds bad indexes and removes orphaned ones; returns every good index by pack.
async fn repair_indexes(
    store: &Store,
    inventory: &Inventory,
    dry_run: bool,
    report: &mut RepairReport,
    progress: &dyn Progress,
) -> Result<HashMap<ChunkId, PackIndex>> {
    let mut good = HashMap::new();
    progress.start_count("checking packs", inventory.packs.len() as u64);
    let mut packs: Vec<_> = inventory.packs.iter().collect();
    packs.sort_by_key(|(id, _)| **id);
    for (pack, object) in packs {
        progress.advance(1);
        let key = index_key(pack);
        let current = match inventory.indexes.contains_key(pack) {
            true => store
                .get(&key)
                .await
                .and_then(|b| PackIndex::decode(&b, &key))
                .ok()
                .filter(|i| i.pack == *pack && i.pack_len == object.size),
            false => None,
        };
        if let Some(index) = current {
            good.insert(*pack, index);
            continue;
        }
        let bytes = store.get(&pack_key(pack)).await?;
        let (index, problems) = PackIndex::scan(*pack, &bytes, &pack_key(pack));
        report
            .bad_frames
            .extend(problems.iter().map(|p| p.to_string()));
        if !dry_run {
            store.put(&key, index.encode()).await?;
        }
        report.indexes_rebuilt.push(key);
        good.insert(*pack, index);
    }
    progress.finish();
    for pack in inventory.indexes.keys() {
        if !inventory.packs.contains_key(pack) {
            if !dry_run {
                store.delete(&index_key(pack)).await?;
            }
            report.indexes_removed.push(index_key(pack));
        }
    }
    Ok(good)
}

/// Checks one tag; rebuilds its chunk map if needed. `Some(reason)`: the tag must go.
async fn repair_tag(
    store: &Store,
    name: &str,
    located: &HashMap<ChunkId, ChunkLocation>,
    by_offset: &HashMap<(ChunkId, u64), ChunkId>,
    dry_run: bool,
    report: &mut RepairReport,
) -> Result<Option<String>> {
    let key = format!("tags/{name}");
    let versions = match store.get(&key).await {
        Ok(bytes) => match parse_tag(&key, &bytes) {
            Ok(v) => v,
            Err(e) => return Ok(Some(e.to_string())),
        },
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let id = versions[0].manifest;
    let manifest = match store.get_manifest(&id).await {
        Ok(m) => m,
        Err(e)
            if e.is_not_found()
                || matches!(
                    e,
                    thaw_core::Error::Corrupt { .. } | thaw_core::Error::ChunkMismatch { .. }
                ) =>
        {
            return Ok(Some(format!("manifest {id}: {e}")))
        }
        Err(e) => return Err(e.into()),
    };
    let chunks = match manifest.chunks() {
        Ok(c) => c,
        Err(e) => return Ok(Some(format!("manifest {id}: {e}"))),
    };
    let map_key = chunk_map_key(&id);
    let map = store
        .get(&map_key)
        .await
        .and_then(|b| ChunkMap::decode(&b, &map_key))
        .and_then(|m| m.check_matches(&manifest, &map_key).map(|_| m))
        .ok();
    let sound = map.as_ref().is_some_and(|map| {
        chunks
            .iter()
            .zip(&map.locations)
            .all(|(c, l)| by_offset.get(&(l.pack, l.offset)) == Some(&c.id))
    });
    if sound {
        return Ok(None);
    }
    let mut locations = Vec::with_capacity(chunks.len());
    let mut missing = 0usize;
    for chunk in &chunks {
        match located.get(&chunk.id) {
            Some(l) => locations.push(*l),
            None => missing += 1,
        }
    }
    if missing > 0 {
        return Ok(Some(format!(
            "{missing} of its {} chunks are in no pack",
            chunks.len()
        )));
    }
    if !dry_run {
        store
            .put_chunk_map(&ChunkMap {
                manifest: id,
                locations,
            })
            .await?;
    }
    report.maps_rebuilt.push(map_key);
    Ok(None)
}
