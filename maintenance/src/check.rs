//! `thaw check`: the whole-store consistency check.
//!
//! Structure (always): every pack index parses, names its own pack, and that pack is in the
//! store with the length the index says; every pack has an index; every tag parses and names a
//! manifest in the store; every manifest verifies against its id and has a chunk map that
//! parses and matches it; every location of every map is an entry of its pack's index with the
//! same chunk id, lengths and codec; every layer pointer names a manifest. Data (with
//! `read_data_percent`): the chosen packs are read whole, every frame is decoded and verified
//! against its chunk id and the pack against its own id. Packs are chosen at random each run,
//! so repeated partial checks cover the store.

use std::collections::HashMap;

use futures::StreamExt;
use serde::Serialize;
use thaw_core::chunk_map::{chunk_map_key, ChunkMap};
use thaw_core::manifest::{manifest_key, Manifest};
use thaw_core::pack::{decode_frame, index_key, pack_key, IndexEntry, PackIndex};
use thaw_core::progress::Progress;
use thaw_core::store::{parse_tag, Store};
use thaw_core::ChunkId;

use crate::inventory::Inventory;
use crate::Result;

/// Objects read at once.
const READS_IN_FLIGHT: usize = 16;
/// Whole packs read at once with `read_data` (each up to ~64 MiB in memory).
const PACKS_IN_FLIGHT: usize = 4;

/// What `check` reads.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Share of the packs (0-100) read whole and verified frame by frame; 0 checks structure
    /// only.
    pub read_data_percent: f64,
}

/// What `check` found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    /// Tags checked.
    pub tags: usize,
    /// Manifests checked.
    pub manifests: usize,
    /// Pack indexes checked.
    pub indexes: usize,
    /// Chunk locations checked against the indexes.
    pub locations: u64,
    /// Packs read whole.
    pub packs_read: usize,
    /// Frames decoded and verified.
    pub frames_verified: u64,
    /// Bytes read by the data check.
    pub bytes_read: u64,
    /// Problems, each naming its object (and offset where it has one).
    pub problems: Vec<String>,
    /// Things that are not damage but are worth knowing (garbage `thaw gc` will remove).
    pub notes: Vec<String>,
}

impl CheckReport {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks `store`.
pub async fn check_store(
    store: &Store,
    options: &CheckOptions,
    progress: &dyn Progress,
) -> Result<CheckReport> {
    let inventory = Inventory::take(store).await?;
    let mut report = CheckReport::default();
    let indexes = check_indexes(store, &inventory, &mut report).await?;
    check_tags(store, &inventory, &mut report).await?;
    check_manifests(store, &inventory, &indexes, &mut report, progress).await?;
    check_layers(store, &inventory, &mut report).await?;
    if options.read_data_percent > 0.0 {
        read_data(
            store,
            &indexes,
            options.read_data_percent,
            &mut report,
            progress,
        )
        .await?;
    }
    report.problems.sort();
    Ok(report)
}

/// Entries of every readable index, by pack and frame offset.
type IndexByOffset = HashMap<ChunkId, HashMap<u64, IndexEntry>>;

async fn check_indexes(
    store: &Store,
    inventory: &Inventory,
    report: &mut CheckReport,
) -> Result<IndexByOffset> {
    let reads = inventory.indexes.keys().map(|pack| async move {
        let key = index_key(pack);
        (
            *pack,
            store
                .get(&key)
                .await
                .and_then(|b| PackIndex::decode(&b, &key)),
        )
    });
    let results: Vec<_> = futures::stream::iter(reads)
        .buffer_unordered(READS_IN_FLIGHT)
        .collect()
        .await;
    let mut by_offset = IndexByOffset::new();
    for (pack, result) in results {
        report.indexes += 1;
        let key = index_key(&pack);
        let index = match result {
            Ok(index) => index,
            Err(e) => {
                report
                    .problems
                    .push(format!("{e} (rebuild it: thaw repair)"));
                continue;
            }
        };
        if index.pack != pack {
            report.problems.push(format!(
                "{key} at offset 24: names pack {}, not its own",
                index.pack
            ));
            continue;
        }
        match inventory.packs.get(&pack) {
            None => report.problems.push(format!(
                "{key}: its pack {} is not in the store",
                pack_key(&pack)
            )),
            Some(object) if object.size != index.pack_len => report.problems.push(format!(
                "{}: {} bytes, its index says {} (truncated or replaced pack)",
                pack_key(&pack),
                object.size,
                index.pack_len
            )),
            Some(_) => {}
        }
        by_offset.insert(pack, index.entries.iter().map(|e| (e.offset, *e)).collect());
    }
    // A pack without an index is garbage an interrupted gc left (it deletes indexes first) or
    // damage; a chunk map locating a chunk in it is reported as a problem below either way.
    for pack in inventory.packs.keys() {
        if !inventory.indexes.contains_key(pack) {
            report.notes.push(format!(
                "{}: has no index {} (garbage the next gc removes, or rebuild it: thaw repair)",
                pack_key(pack),
                index_key(pack)
            ));
        }
    }
    Ok(by_offset)
}

async fn check_tags(store: &Store, inventory: &Inventory, report: &mut CheckReport) -> Result<()> {
    for name in inventory.tags.keys() {
        report.tags += 1;
        let key = format!("tags/{name}");
        let versions = match store.get(&key).await.and_then(|b| parse_tag(&key, &b)) {
            Ok(versions) => versions,
            Err(e) if e.is_not_found() => continue,
            Err(e) => {
                report.problems.push(e.to_string());
                continue;
            }
        };
        let current = versions[0].manifest;
        if !inventory.manifests.contains_key(&current) {
            report.problems.push(format!(
                "{key}: names manifest {current}, which is not in the store"
            ));
        }
    }
    Ok(())
}

/// Problems of one manifest and its map, and how many locations were checked.
async fn check_one_manifest(
    store: &Store,
    id: ChunkId,
    indexes: &IndexByOffset,
) -> (Vec<String>, u64) {
    let mut problems = Vec::new();
    let manifest = match store.get_manifest(&id).await {
        Ok(m) => m,
        Err(e) => return (vec![e.to_string()], 0),
    };
    if let Err(e) = manifest.walk() {
        problems.push(format!("{}: {e}", manifest_key(&id)));
    }
    let key = chunk_map_key(&id);
    let map = match store.get(&key).await {
        Ok(bytes) => ChunkMap::decode(&bytes, &key)
            .and_then(|map| map.check_matches(&manifest, &key).map(|_| map)),
        Err(e) => Err(e),
    };
    let map = match map {
        Ok(map) => map,
        Err(e) => {
            problems.push(format!("{e} (rebuild it: thaw repair)"));
            return (problems, 0);
        }
    };
    let located = locations_problems(&manifest, &map, &key, indexes);
    problems.extend(located.0);
    (problems, located.1)
}

/// Checks each location of `map` against the pack indexes.
fn locations_problems(
    manifest: &Manifest,
    map: &ChunkMap,
    key: &str,
    indexes: &IndexByOffset,
) -> (Vec<String>, u64) {
    let mut problems = Vec::new();
    let Ok(chunks) = manifest.chunks() else {
        return (
            vec![format!(
                "{}: chunk table unreadable",
                manifest_key(&manifest.id())
            )],
            0,
        );
    };
    for (i, (chunk, location)) in chunks.iter().zip(&map.locations).enumerate() {
        let entry = indexes
            .get(&location.pack)
            .and_then(|entries| entries.get(&location.offset));
        let fits = entry.is_some_and(|e| {
            e.id == chunk.id
                && e.raw_len == location.raw_len
                && e.stored_len == location.stored_len
                && e.codec == location.codec
        });
        if !fits {
            problems.push(format!(
                "{key}: entry {i} (chunk {}) is located at {} offset {}, {}",
                chunk.id,
                pack_key(&location.pack),
                location.offset,
                match entry {
                    None if indexes.contains_key(&location.pack) =>
                        "where the pack index has no frame",
                    None => "a pack with no readable index (rebuild it: thaw repair)",
                    Some(_) => "where the pack index has another chunk or other lengths",
                }
            ));
        }
    }
    (problems, chunks.len() as u64)
}

async fn check_manifests(
    store: &Store,
    inventory: &Inventory,
    indexes: &IndexByOffset,
    report: &mut CheckReport,
    progress: &dyn Progress,
) -> Result<()> {
    progress.start_count("checking manifests", inventory.manifests.len() as u64);
    let mut checks = futures::stream::iter(
        inventory
            .manifests
            .keys()
            .map(|id| check_one_manifest(store, *id, indexes)),
    )
    .buffer_unordered(READS_IN_FLIGHT);
    while let Some((problems, locations)) = checks.next().await {
        progress.advance(1);
        report.manifests += 1;
        report.locations += locations;
        report.problems.extend(problems);
    }
    progress.finish();
    for id in inventory.maps.keys() {
        if !inventory.manifests.contains_key(id) {
            report
                .notes
                .push(format!("{}: no manifest (garbage)", chunk_map_key(id)));
        }
    }
    Ok(())
}

async fn check_layers(
    store: &Store,
    inventory: &Inventory,
    report: &mut CheckReport,
) -> Result<()> {
    for object in inventory.layers.values() {
        let named = match store.get(&object.key).await {
            Ok(bytes) => thaw_core::related::parse_layer_pointer(&bytes),
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        match named {
            Some(id) if inventory.manifests.contains_key(&id) => {}
            Some(id) => report.problems.push(format!(
                "{}: names layer tree {id}, which is not in the store",
                object.key
            )),
            None => report
                .problems
                .push(format!("{} at offset 0: not a manifest id", object.key)),
        }
    }
    Ok(())
}

/// Whether pack `pack` is in this run's sample of `percent`, with `seed` chosen per run.
fn sampled(pack: &ChunkId, percent: f64, seed: u64) -> bool {
    if percent >= 100.0 {
        return true;
    }
    let word = u64::from_le_bytes(pack.0[..8].try_into().expect("8 bytes")) ^ seed;
    (word % 1_000_000) as f64 / 10_000.0 < percent
}

async fn read_data(
    store: &Store,
    indexes: &IndexByOffset,
    percent: f64,
    report: &mut CheckReport,
    progress: &dyn Progress,
) -> Result<()> {
    let seed = u64::from_le_bytes(
        ChunkId::of(&thaw_core::store::unix_ms_now().to_le_bytes()).0[..8]
            .try_into()
            .expect("8 bytes"),
    );
    let mut chosen: Vec<&ChunkId> = indexes
        .keys()
        .filter(|p| sampled(p, percent, seed))
        .collect();
    chosen.sort();
    progress.start_count("reading packs", chosen.len() as u64);
    let mut reads = futures::stream::iter(chosen.into_iter().map(|pack| async move {
        let key = pack_key(pack);
        let entries = &indexes[pack];
        let bytes = match store.get(&key).await {
            Ok(bytes) => bytes,
            Err(e) => return (0, 0, vec![e.to_string()]),
        };
        let mut problems = Vec::new();
        let actual = ChunkId::of(&bytes);
        if actual != *pack {
            problems.push(format!("{key}: its bytes hash to {actual}, not its id"));
        }
        let mut verified = 0;
        for entry in entries.values() {
            let range = entry.location(*pack).frame_range();
            let frame = bytes.get(range.start as usize..range.end as usize);
            match frame.map(|f| decode_frame(f, &entry.id, &entry.location(*pack))) {
                Some(Ok(_)) => verified += 1,
                Some(Err(e)) => problems.push(e.to_string()),
                None => problems.push(format!(
                    "{key} at offset {}: frame of chunk {} runs past the end",
                    entry.offset, entry.id
                )),
            }
        }
        (bytes.len() as u64, verified, problems)
    }))
    .buffer_unordered(PACKS_IN_FLIGHT);
    while let Some((bytes, verified, problems)) = reads.next().await {
        progress.advance(1);
        report.packs_read += 1;
        report.bytes_read += bytes;
        report.frames_verified += verified;
        report.problems.extend(problems);
    }
    progress.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_takes_about_its_share_and_all_at_100() {
        let packs: Vec<ChunkId> = (0..10_000u32)
            .map(|i| ChunkId::of(&i.to_le_bytes()))
            .collect();
        let taken = packs.iter().filter(|p| sampled(p, 10.0, 42)).count();
        assert!((800..1200).contains(&taken), "{taken}");
        assert!(packs.iter().all(|p| sampled(p, 100.0, 42)));
        let other_seed = packs.iter().filter(|p| sampled(p, 10.0, 43)).count();
        assert!((800..1200).contains(&other_seed), "{other_seed}");
    }
}
