//! `thaw gc`: retention, mark, repack, sweep, under the store's exclusive lock.
//!
//! Safety rests on three rules. (1) gc holds the exclusive store lock (thaw_core::lock) for its
//! whole run, and every writer holds a shared one from before it reads the pack indexes it
//! deduplicates against until after it sets its tag, so no writer can reference a chunk gc is
//! about to delete. (2) An unreferenced object younger than the grace period is kept: it may be
//! the work of a writer that does not lock (an older thaw) or of a mount saving its trace.
//! (3) Objects go in an order that keeps every tag whole if gc is killed at any point: tags
//! (retention) first, then manifests, chunk maps, traces and markers, then pack indexes, and
//! packs last, each pack after its index (an indexer never sees an index whose pack is gone). A
//! rerun finishes what a killed run started.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::Serialize;
use thaw_core::lock::{LockKind, StoreLock};
use thaw_core::progress::Progress;
use thaw_core::store::{unix_ms_now, ListedObject, Store};
use thaw_core::ChunkId;

use crate::inventory::Inventory;
use crate::mark::{mark, read_tags, LiveSet};
use crate::repack::{candidates, repack, RepackReport, Repacked};
use crate::retention::{apply_retention, Retention};
use crate::{crash, Result};

/// Keys handed to one bulk delete (S3 takes 1,000 a request; a batch also bounds progress steps).
const DELETES_PER_BATCH: usize = 1000;

/// A pack whose live bytes are below this share of its size is rewritten by default.
pub const DEFAULT_REPACK_BELOW: f64 = 0.5;
/// Unreferenced objects younger than this are kept by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// How gc runs.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Report what would go; change nothing (takes no lock).
    pub dry_run: bool,
    /// Keep unreferenced objects younger than this.
    pub grace: Duration,
    /// Rewrite packs whose live bytes are below this share of their size (0 turns it off).
    pub repack_below: f64,
    /// Tags to remove first: all but the newest N under a prefix.
    pub retention: Vec<Retention>,
    /// How long to wait for writers' locks to go.
    pub lock_wait: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            grace: DEFAULT_GRACE,
            repack_below: DEFAULT_REPACK_BELOW,
            retention: Vec::new(),
            lock_wait: Duration::from_secs(600),
        }
    }
}

/// Objects and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Count {
    /// Objects.
    pub objects: u64,
    /// Bytes.
    pub bytes: u64,
}

impl Count {
    fn add(&mut self, object: &ListedObject) {
        self.objects += 1;
        self.bytes += object.size;
    }
}

/// What gc found and did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct GcReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// The store before gc.
    pub before: Count,
    /// Tags removed by retention rules.
    pub tags_removed: Vec<String>,
    /// Tags naming a manifest that is not in the store.
    pub dangling_tags: Vec<String>,
    /// Live manifests (tagged trees, and layer trees of tagged images).
    pub live_manifests: usize,
    /// Packs holding live chunks.
    pub live_packs: usize,
    /// Bytes of live frames.
    pub live_bytes: u64,
    /// Deleted, by kind (`manifests`, `maps`, `packs`, `indexes`, `traces`, `layers`,
    /// `layer-users`, `tags`).
    pub deleted: BTreeMap<String, Count>,
    /// Unreferenced objects kept because they are younger than the grace period.
    pub kept_young: Count,
    /// Packs rewritten.
    pub repacked: RepackReport,
    /// Chunks gone from the store, written to the freed-chunk log caches follow.
    pub chunks_freed: usize,
    /// Store requests made (gets, puts, deletes, lists).
    pub requests: RequestCount,
    /// Wall time.
    pub seconds: f64,
}

impl GcReport {
    /// Everything deleted, all kinds together.
    pub fn freed(&self) -> Count {
        self.deleted.values().fold(Count::default(), |a, c| Count {
            objects: a.objects + c.objects,
            bytes: a.bytes + c.bytes,
        })
    }
}

/// Store requests of one command.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RequestCount {
    /// Whole and ranged GETs.
    pub gets: u64,
    /// PUTs.
    pub puts: u64,
    /// DELETEs.
    pub deletes: u64,
    /// Lists and HEADs.
    pub other: u64,
}

impl RequestCount {
    /// The requests `store`'s handle has made so far.
    pub fn of(store: &Store) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let r = store.requests();
        RequestCount {
            gets: r.gets.load(Relaxed) + r.range_gets.load(Relaxed),
            puts: r.puts.load(Relaxed),
            deletes: r.deletes.load(Relaxed),
            other: r.other.load(Relaxed),
        }
    }

    fn since(self, start: RequestCount) -> Self {
        RequestCount {
            gets: self.gets - start.gets,
            puts: self.puts - start.puts,
            deletes: self.deletes - start.deletes,
            other: self.other - start.other,
        }
    }
}

/// One object to delete, with its kind.
struct Doomed {
    kind: &'static str,
    object: ListedObject,
}

/// Runs gc over `store`.
pub async fn collect_garbage(
    store: &Store,
    options: &GcOptions,
    progress: &dyn Progress,
) -> Result<GcReport> {
    let started = Instant::now();
    let requests_before = RequestCount::of(store);
    let lock = if options.dry_run {
        None
    } else {
        Some(StoreLock::acquire(store, LockKind::Exclusive, "gc", options.lock_wait).await?)
    };
    let mut inventory = Inventory::take(store).await?;
    let mut report = GcReport {
        dry_run: options.dry_run,
        before: Count {
            objects: inventory.object_count() as u64,
            bytes: inventory.byte_count(),
        },
        ..GcReport::default()
    };
    let mut tags = read_tags(store, &inventory).await?;
    let removed = apply_retention(&mut tags, &options.retention)?;
    let mut removed_keys = Vec::new();
    for tag in &removed {
        let object = inventory.tags.remove(&tag.name).expect("listed tag");
        report
            .deleted
            .entry("tags".into())
            .or_default()
            .add(&object);
        report.tags_removed.push(tag.name.clone());
        removed_keys.push(object.key);
    }
    if !options.dry_run {
        store.delete_many(&removed_keys).await?;
    }
    let live = mark(store, &inventory, &tags, progress).await?;
    crash::point("marked");
    report.dangling_tags = live.dangling_tags.clone();
    report.live_manifests = live.manifests.len();
    report.live_packs = live.frames.len();
    report.live_bytes = live.frames.keys().map(|p| live.live_bytes(p)).sum();

    let cutoff = unix_ms_now().saturating_sub(options.grace.as_millis() as u64);
    let pack_sizes: HashMap<ChunkId, u64> = inventory
        .packs
        .iter()
        .filter(|(_, o)| o.modified_unix_ms <= cutoff)
        .map(|(id, o)| (*id, o.size))
        .collect();
    let to_repack = if options.repack_below > 0.0 {
        candidates(&live, &pack_sizes, options.repack_below)
    } else {
        Vec::new()
    };
    let repacked = if options.dry_run {
        report.repacked = RepackReport {
            packs: to_repack.len(),
            bytes_copied: to_repack.iter().map(|p| live.live_bytes(p)).sum(),
            ..RepackReport::default()
        };
        Repacked {
            old: to_repack,
            new: Vec::new(),
        }
    } else {
        let (repack_report, done) =
            repack(store, &live, &to_repack, lock.as_ref(), progress).await?;
        report.repacked = repack_report;
        done
    };
    let doomed = sweep_plan(&inventory, &live, &repacked, cutoff, &mut report);
    for d in &doomed {
        report
            .deleted
            .entry(d.kind.into())
            .or_default()
            .add(&d.object);
    }
    if !options.dry_run {
        if let Some(lock) = &lock {
            lock.check().await?;
        }
        let freed = freed_chunks(store, &doomed, &live).await?;
        report.chunks_freed = freed.len();
        crate::freed::record_freed(store, &freed).await?;
        delete_in_order(store, &doomed, progress).await?;
    }
    if let Some(lock) = lock {
        lock.release().await?;
    }
    report.requests = RequestCount::of(store).since(requests_before);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// What to delete, kind by kind in deletion order; counts young garbage into `report`.
fn sweep_plan(
    inventory: &Inventory,
    live: &LiveSet,
    repacked: &Repacked,
    cutoff: u64,
    report: &mut GcReport,
) -> Vec<Doomed> {
    let mut doomed = Vec::new();
    let mut consider = |kind: &'static str, object: &ListedObject, keep: bool, forced: bool| {
        if keep {
            return;
        }
        if object.modified_unix_ms > cutoff && !forced {
            report.kept_young.add(object);
            return;
        }
        doomed.push(Doomed {
            kind,
            object: object.clone(),
        });
    };
    let is_live = |id: &ChunkId| live.manifests.contains(id);
    for (id, object) in &inventory.manifests {
        consider("manifests", object, is_live(id), false);
    }
    for (id, object) in &inventory.maps {
        consider("maps", object, is_live(id), false);
    }
    for trace in &inventory.traces {
        let keep = live.trace_owners.contains(&trace.owner);
        consider("traces", &trace.object, keep, false);
    }
    for (hex, object) in &inventory.layers {
        consider(
            "layers",
            object,
            live.layers.contains(&hex.to_ascii_lowercase()),
            false,
        );
    }
    for user in &inventory.layer_users {
        consider("layer-users", &user.object, is_live(&user.owner), false);
    }
    // A repacked pack is unreferenced now whatever its age: its live frames were moved. A
    // pack this run wrote is referenced by the maps it rewrote.
    let gone = |id: &ChunkId| repacked.old.binary_search(id).is_ok();
    let written = |id: &ChunkId| repacked.new.binary_search(id).is_ok();
    let pack_live = |id: &ChunkId| (live.frames.contains_key(id) && !gone(id)) || written(id);
    for (id, object) in &inventory.indexes {
        // An index without its pack describes nothing: it goes too.
        let keep = pack_live(id) && inventory.packs.contains_key(id);
        consider("indexes", object, keep, gone(id));
    }
    for (id, object) in &inventory.packs {
        consider("packs", object, pack_live(id), gone(id));
    }
    let expired = unix_ms_now().saturating_sub(crate::freed::FREED_LOG_KEEP.as_millis() as u64);
    for object in &inventory.freed_logs {
        consider(
            "freed-logs",
            object,
            object.modified_unix_ms > expired,
            false,
        );
    }
    doomed
}

/// The chunks of the doomed packs that no live map locates (read from their indexes).
async fn freed_chunks(store: &Store, doomed: &[Doomed], live: &LiveSet) -> Result<Vec<ChunkId>> {
    let mut freed = Vec::new();
    for d in doomed.iter().filter(|d| d.kind == "packs") {
        let Some(pack) = d
            .object
            .key
            .strip_prefix("packs/")
            .and_then(|k| k.strip_suffix(".pack"))
            .and_then(|hex| hex.parse::<ChunkId>().ok())
        else {
            continue;
        };
        let key = thaw_core::pack::index_key(&pack);
        let index = match store.get(&key).await {
            Ok(bytes) => match thaw_core::pack::PackIndex::decode(&bytes, &key) {
                Ok(index) => index,
                Err(_) => continue,
            },
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        let kept = live.frames.get(&pack);
        freed.extend(
            index
                .entries
                .iter()
                .filter(|e| {
                    kept.is_none_or(|f| f.binary_search_by_key(&e.offset, |x| x.0).is_err())
                })
                .map(|e| e.id),
        );
    }
    freed.sort();
    freed.dedup();
    Ok(freed)
}

/// Deletes kind by kind in the order of [`sweep_plan`]; within a kind, in bulk.
async fn delete_in_order(store: &Store, doomed: &[Doomed], progress: &dyn Progress) -> Result<()> {
    progress.start("deleting", doomed.iter().map(|d| d.object.size).sum());
    let mut start = 0;
    while start < doomed.len() {
        let kind = doomed[start].kind;
        let end = start
            + doomed[start..]
                .iter()
                .take_while(|d| d.kind == kind)
                .count();
        let batch = &doomed[start..end];
        // Packs in two halves, so the tests can kill gc between them.
        let halves = if kind == "packs" {
            batch.split_at(batch.len() / 2)
        } else {
            (batch, &batch[..0])
        };
        for (i, half) in [halves.0, halves.1].into_iter().enumerate() {
            if i == 1 {
                crash::point("deleting-packs");
            }
            for slice in half.chunks(DELETES_PER_BATCH) {
                let keys: Vec<String> = slice.iter().map(|d| d.object.key.clone()).collect();
                store.delete_many(&keys).await?;
                progress.advance(slice.iter().map(|d| d.object.size).sum());
            }
        }
        start = end;
    }
    progress.finish();
    Ok(())
}
