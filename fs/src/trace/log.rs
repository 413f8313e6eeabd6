//! How traces are stored so that many nodes can save at once: an append-only folder of objects
//! per manifest (and profile), merged on read.
//!
//! `trace-runs/<manifest hex>[.<profile>]/` holds `run-<unix ms>-<hash>.json` objects, one per
//! saved run (a node never overwrites anything), and `merged-<hash>.json` objects, each the
//! merge of objects that were there before. Reading lists the folder and merges everything in
//! it. A save that finds more than [`COMPACT_ABOVE`] objects writes one merged object of all it
//! read, then deletes exactly those: an object is only ever deleted after its content is in a
//! newer object, so two nodes compacting at once both keep everything (the next read merges
//! both of their merged objects). A trace of the older single-object layout
//! (`traces/<manifest hex>[.<profile>]`) is read as one more object and folded in the same way.

use bytes::Bytes;
use thaw_core::store::Store;
use thaw_core::ChunkId;

use super::{Trace, TRACE_FORMAT};
use crate::FsError;

/// Objects in a trace folder above which a save compacts it.
pub const COMPACT_ABOVE: usize = 8;

/// Whether `name` can name a trace profile: 1-32 of `a-z`, `0-9` and `-`, not starting with `-`.
pub fn valid_profile(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Store folder of the trace of `manifest`, or of its `profile` (a [`valid_profile`] name).
pub fn trace_dir(manifest: &ChunkId, profile: Option<&str>) -> String {
    match profile {
        Some(profile) => format!("trace-runs/{}.{profile}", manifest.to_hex()),
        None => format!("trace-runs/{}", manifest.to_hex()),
    }
}

/// Store key of a trace in the older single-object layout.
fn legacy_key(manifest: &ChunkId, profile: Option<&str>) -> String {
    match profile {
        Some(profile) => format!("traces/{}.{profile}", manifest.to_hex()),
        None => format!("traces/{}", manifest.to_hex()),
    }
}

/// The trace of one manifest (and profile) in a store.
pub struct TraceLog<'a> {
    store: &'a Store,
    manifest: ChunkId,
    profile: Option<&'a str>,
}

/// A trace as read, with the objects it was merged from.
struct Read {
    trace: Option<Trace>,
    objects: Vec<String>,
}

impl<'a> TraceLog<'a> {
    /// The trace of `manifest` (of its `profile`, if given) in `store`.
    pub fn new(store: &'a Store, manifest: ChunkId, profile: Option<&'a str>) -> Self {
        TraceLog {
            store,
            manifest,
            profile,
        }
    }

    /// Its store folder.
    pub fn dir(&self) -> String {
        trace_dir(&self.manifest, self.profile)
    }

    /// The merged trace; `Ok(None)` when no run was saved yet. An object that cannot be read
    /// is skipped with a warning (a trace is a hint: one bad run must not hide the others).
    pub async fn load(&self) -> Result<Option<Trace>, FsError> {
        Ok(self.read().await?.trace)
    }

    async fn read(&self) -> Result<Read, FsError> {
        let mut objects: Vec<String> = self
            .store
            .list(&self.dir())
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .filter(|key| key.ends_with(".json"))
            .collect();
        objects.sort();
        let legacy = legacy_key(&self.manifest, self.profile);
        match self.store.size(&legacy).await {
            Ok(_) => objects.push(legacy),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        // One round trip for all of them, not one per object (a distant store).
        let fetched =
            futures::future::join_all(objects.iter().map(|key| self.read_object(key))).await;
        let mut merged: Option<Trace> = None;
        let mut read = Vec::with_capacity(objects.len());
        for (key, fetched) in objects.into_iter().zip(fetched) {
            match fetched {
                Ok(Some(trace)) => {
                    merged = Some(match merged {
                        Some(merged) => merged.merge(trace),
                        None => trace,
                    });
                    read.push(key);
                }
                // Deleted by a node compacting meanwhile: its content is in a newer object.
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable trace object"),
            }
        }
        Ok(Read {
            trace: merged,
            objects: read,
        })
    }

    /// One stored object, checked to be a trace of this manifest.
    async fn read_object(&self, key: &str) -> Result<Option<Trace>, FsError> {
        let bytes = match self.store.get(key).await {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let bad = |reason: String| FsError::BadTrace {
            key: key.to_string(),
            reason,
        };
        let trace: Trace = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if trace.format != TRACE_FORMAT || trace.manifest != self.manifest.to_hex() {
            return Err(bad(format!(
                "format {:?} for manifest {}, expected {TRACE_FORMAT} for {}",
                trace.format, trace.manifest, self.manifest
            )));
        }
        Ok(Some(trace))
    }

    /// Saves `run` as a new object beside the others (compacting the folder when it has grown
    /// past [`COMPACT_ABOVE`]); returns the folder and the merged trace's entry count.
    pub async fn save_run(&self, run: &Trace) -> Result<(String, usize), FsError> {
        let saved_ms = super::unix_ms_now();
        let content = serde_json::to_vec(run).expect("a trace always serializes");
        let id = format!(
            "run-{saved_ms:013}-{}",
            &blake3::hash(&content).to_hex()[..16]
        );
        let named = Trace {
            runs: 1,
            run_ids: vec![id.clone()],
            ..run.clone()
        };
        let json = serde_json::to_vec_pretty(&named).expect("a trace always serializes");
        let name = format!("{}/{id}.json", self.dir());
        self.store.put(&name, Bytes::from(json)).await?;
        let read = self.read().await?;
        let merged = read.trace.unwrap_or(named);
        let entries = merged.entries.len();
        if read.objects.len() > COMPACT_ABOVE {
            if let Err(e) = self.compact(&merged, &read.objects).await {
                tracing::warn!(error = %e, dir = %self.dir(), "could not compact the trace");
            }
        }
        Ok((self.dir(), entries))
    }

    /// Writes `merged` (the merge of `objects`) as one object, then deletes `objects`.
    async fn compact(&self, merged: &Trace, objects: &[String]) -> Result<(), FsError> {
        let json = serde_json::to_vec_pretty(merged).expect("a trace always serializes");
        let name = format!(
            "{}/merged-{}.json",
            self.dir(),
            &blake3::hash(&json).to_hex()[..16]
        );
        self.store.put(&name, Bytes::from(json)).await?;
        for key in objects.iter().filter(|key| **key != name) {
            self.store.delete(key).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::tests::entry;
    use thaw_core::store::StoreConfig;

    fn run(manifest: &ChunkId, entries: Vec<super::super::TraceEntry>) -> Trace {
        Trace {
            runs: 1,
            entries,
            ..Trace::empty(manifest)
        }
    }

    #[test]
    fn profiles_get_their_own_folder_and_names_are_checked() {
        let id = ChunkId::of(b"manifest");
        assert_eq!(trace_dir(&id, None), format!("trace-runs/{}", id.to_hex()));
        assert_eq!(
            trace_dir(&id, Some("restore")),
            format!("trace-runs/{}.restore", id.to_hex())
        );
        for good in ["restore", "gpu-2", "a"] {
            assert!(valid_profile(good), "{good}");
        }
        for bad in ["", "-x", "Restore", "a/b", "a.b", &"x".repeat(33)] {
            assert!(!valid_profile(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn runs_saved_by_many_nodes_all_count_and_compaction_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::local(dir.path())).unwrap();
        let id = ChunkId::of(b"m");
        let log = TraceLog::new(&store, id, None);
        assert_eq!(log.load().await.unwrap(), None);
        // A trace of the older layout is read too.
        let legacy = run(&id, vec![entry(100, 1)]);
        store
            .put(
                &legacy_key(&id, None),
                serde_json::to_vec(&legacy).unwrap().into(),
            )
            .await
            .unwrap();
        // Twenty "nodes" save at once: each its own chunk, all kept.
        let saves = (0..20u32).map(|n| {
            let log = TraceLog::new(&store, id, None);
            async move { log.save_run(&run(&id, vec![entry(n, n as u64 * 10)])).await }
        });
        for saved in futures::future::join_all(saves).await {
            saved.unwrap();
        }
        let merged = log.load().await.unwrap().unwrap();
        let mut chunks: Vec<u32> = merged.entries.iter().map(|e| e.chunk).collect();
        chunks.sort();
        let mut expected: Vec<u32> = (0..20).collect();
        expected.push(100);
        assert_eq!(chunks, expected, "no save lost another");
        assert_eq!(merged.runs, 21);
        // One more save compacts: the folder shrinks, the content stays, the old layout's
        // object is folded in and removed.
        log.save_run(&run(&id, vec![entry(7, 1)])).await.unwrap();
        let objects = store.list(&log.dir()).await.unwrap();
        assert!(objects.len() <= COMPACT_ABOVE, "{objects:?}");
        assert!(store
            .size(&legacy_key(&id, None))
            .await
            .unwrap_err()
            .is_not_found());
        let after = log.load().await.unwrap().unwrap();
        assert_eq!(after.entries.len(), 21);
        assert_eq!(after.runs, 22);
        let seven = after.entries.iter().find(|e| e.chunk == 7).unwrap();
        assert_eq!(seven.at_ms, 1, "the earlier first read wins");
        // A broken object is skipped, not fatal.
        store
            .put(&format!("{}/run-0-bad.json", log.dir()), Bytes::from("{"))
            .await
            .unwrap();
        assert_eq!(log.load().await.unwrap().unwrap().entries.len(), 21);
        let other = run(&ChunkId::of(b"other"), vec![entry(1, 1)]);
        store
            .put(
                &format!("{}/run-1-other.json", log.dir()),
                serde_json::to_vec(&other).unwrap().into(),
            )
            .await
            .unwrap();
        assert_eq!(
            log.load().await.unwrap().unwrap().runs,
            22,
            "another manifest's run is not merged"
        );
    }
}
