//! Access traces: which chunks a start-up read first, in what order and when.
//!
//! A [`TraceRecorder`] notes the first application read of every chunk after mount (for a
//! window of time); [`Trace`] is what gets stored, as JSON under `traces/<manifest id>` beside
//! the manifest, merged with earlier runs. The next mount replays it as prefetch. A mount whose
//! reads differ from a fresh start (the image under a restored snapshot maps only what the
//! process had mapped) keeps its own trace under a profile: `traces/<manifest id>.<profile>`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thaw_core::manifest::{InodeNo, Manifest};
use thaw_core::store::Store;
use thaw_core::ChunkId;

use crate::FsError;

/// Format tag written into every trace.
pub const TRACE_FORMAT: &str = "thaw-trace/1";

/// How long after mount first reads are recorded when not told otherwise.
pub const DEFAULT_TRACE_WINDOW: Duration = Duration::from_secs(60);

/// Store key of the trace of `manifest`, or of its `profile` (a [`valid_profile`] name).
pub fn trace_key(manifest: &ChunkId, profile: Option<&str>) -> String {
    match profile {
        Some(profile) => format!("traces/{}.{profile}", manifest.to_hex()),
        None => format!("traces/{}", manifest.to_hex()),
    }
}

/// Whether `name` can name a trace profile: 1-32 of `a-z`, `0-9` and `-`, not starting with `-`.
pub fn valid_profile(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// One chunk a start-up read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEntry {
    /// Index into the manifest's chunk table.
    pub chunk: u32,
    /// The chunk's id (checked against the manifest before the entry is used).
    pub id: String,
    /// Milliseconds from mount to the first read.
    pub at_ms: u64,
    /// The file the read was for.
    pub path: String,
}

/// A stored access trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// Always [`TRACE_FORMAT`].
    pub format: String,
    /// The manifest the chunk indexes refer to.
    pub manifest: String,
    /// How many recorded runs were merged into this trace.
    pub runs: u32,
    /// Entries ordered by first-read time.
    pub entries: Vec<TraceEntry>,
}

impl Trace {
    /// Reads the trace of `manifest` (of its `profile`, if given); `Ok(None)` when there is none.
    pub async fn load(
        store: &Store,
        manifest: &ChunkId,
        profile: Option<&str>,
    ) -> Result<Option<Trace>, FsError> {
        let key = trace_key(manifest, profile);
        let bytes = match store.get(&key).await {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(FsError::Store(e)),
        };
        let trace: Trace = serde_json::from_slice(&bytes).map_err(|e| FsError::BadTrace {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        if trace.format != TRACE_FORMAT || trace.manifest != manifest.to_hex() {
            return Err(FsError::BadTrace {
                key,
                reason: format!(
                    "format {:?} for manifest {}, expected {TRACE_FORMAT} for {}",
                    trace.format, trace.manifest, manifest
                ),
            });
        }
        Ok(Some(trace))
    }

    /// Writes this trace under its manifest's key (for `profile`, if given).
    pub async fn save(&self, store: &Store, profile: Option<&str>) -> Result<String, FsError> {
        let id: ChunkId = self.manifest.parse().map_err(FsError::Store)?;
        let key = trace_key(&id, profile);
        let json = serde_json::to_vec_pretty(self).expect("a trace always serializes");
        store.put(&key, json.into()).await.map_err(FsError::Store)?;
        Ok(key)
    }

    /// This trace with a newer run's merged in: every chunk either read, at the earlier of its
    /// two times, ordered by time.
    pub fn merge(mut self, newer: Trace) -> Trace {
        let mut by_chunk: std::collections::HashMap<u32, TraceEntry> =
            self.entries.drain(..).map(|e| (e.chunk, e)).collect();
        for entry in newer.entries {
            by_chunk
                .entry(entry.chunk)
                .and_modify(|kept| {
                    if entry.at_ms < kept.at_ms {
                        *kept = entry.clone();
                    }
                })
                .or_insert(entry);
        }
        let mut entries: Vec<TraceEntry> = by_chunk.into_values().collect();
        entries.sort_by_key(|e| (e.at_ms, e.chunk));
        Trace {
            format: TRACE_FORMAT.into(),
            manifest: self.manifest,
            runs: self.runs + newer.runs,
            entries,
        }
    }

    /// The chunk indexes to prefetch, in order: entries whose index and id do not match the
    /// manifest are skipped with a warning (a trace is a hint, never trusted for content).
    pub fn chunks_for(&self, manifest: &Manifest) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.entries.len());
        for entry in &self.entries {
            match manifest.chunk(entry.chunk) {
                Ok(chunk) if chunk.id.to_hex() == entry.id => out.push(entry.chunk),
                _ => tracing::warn!(
                    chunk = entry.chunk,
                    id = %entry.id,
                    "trace entry does not match the manifest; skipped"
                ),
            }
        }
        out
    }
}

/// Notes the first application read of every chunk; keeps the ones inside the window.
pub(crate) struct TraceRecorder {
    started: Instant,
    window: Duration,
    read: Vec<AtomicBool>,
    entries: Mutex<Vec<(u32, u64, InodeNo)>>,
}

impl TraceRecorder {
    pub(crate) fn new(chunks: usize, started: Instant, window: Duration) -> Self {
        TraceRecorder {
            started,
            window,
            read: (0..chunks).map(|_| AtomicBool::new(false)).collect(),
            entries: Mutex::new(Vec::new()),
        }
    }

    /// Notes a read of chunk `index` for file `ino`; true when it is the chunk's first.
    pub(crate) fn note_read(&self, index: u32, ino: InodeNo) -> bool {
        let Some(flag) = self.read.get(index as usize) else {
            return false;
        };
        if flag.swap(true, Ordering::AcqRel) {
            return false;
        }
        let elapsed = self.started.elapsed();
        if elapsed <= self.window {
            self.entries
                .lock()
                .expect("trace lock")
                .push((index, elapsed.as_millis() as u64, ino));
        }
        true
    }

    /// When the recording window closes.
    pub(crate) fn window_end(&self) -> Instant {
        self.started + self.window
    }

    /// Whether the application has read chunk `index`.
    pub(crate) fn was_read(&self, index: u32) -> bool {
        self.read
            .get(index as usize)
            .is_some_and(|flag| flag.load(Ordering::Acquire))
    }

    /// Entries recorded so far.
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().expect("trace lock").len()
    }
}

impl TraceRecorder {
    /// What was recorded so far, as a one-run trace of `manifest`; `path_of` names each file.
    pub(crate) fn to_trace(
        &self,
        manifest: &Manifest,
        path_of: impl Fn(InodeNo) -> String,
    ) -> Trace {
        let recorded = self.entries.lock().expect("trace lock").clone();
        let entries = recorded
            .into_iter()
            .filter_map(|(chunk, at_ms, ino)| {
                let id = manifest.chunk(chunk).ok()?.id.to_hex();
                Some(TraceEntry {
                    chunk,
                    id,
                    at_ms,
                    path: path_of(ino),
                })
            })
            .collect();
        Trace {
            format: TRACE_FORMAT.into(),
            manifest: manifest.id().to_hex(),
            runs: 1,
            entries,
        }
    }
}

/// Merges `recorded` into the trace stored for `manifest` (and `profile`); returns the key and
/// the merged entry count. A stored trace that cannot be read is replaced (with a warning)
/// rather than blocking the save.
pub(crate) async fn save_merged(
    store: &Store,
    manifest: &ChunkId,
    profile: Option<&str>,
    recorded: Trace,
) -> Result<(String, usize), FsError> {
    let merged = match Trace::load(store, manifest, profile).await {
        Ok(Some(stored)) => stored.merge(recorded),
        Ok(None) => recorded,
        Err(e) => {
            tracing::warn!(error = %e, "replacing an unreadable stored trace");
            recorded
        }
    };
    let key = merged.save(store, profile).await?;
    Ok((key, merged.entries.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_get_their_own_key_and_names_are_checked() {
        let id = ChunkId::of(b"manifest");
        assert_eq!(trace_key(&id, None), format!("traces/{}", id.to_hex()));
        assert_eq!(
            trace_key(&id, Some("restore")),
            format!("traces/{}.restore", id.to_hex())
        );
        for good in ["restore", "gpu-2", "a"] {
            assert!(valid_profile(good), "{good}");
        }
        for bad in ["", "-x", "Restore", "a/b", "a.b", &"x".repeat(33)] {
            assert!(!valid_profile(bad), "{bad}");
        }
    }

    fn entry(chunk: u32, at_ms: u64) -> TraceEntry {
        TraceEntry {
            chunk,
            id: format!("id{chunk}"),
            at_ms,
            path: format!("/f{chunk}"),
        }
    }

    fn trace(entries: Vec<TraceEntry>) -> Trace {
        Trace {
            format: TRACE_FORMAT.into(),
            manifest: "m".into(),
            runs: 1,
            entries,
        }
    }

    #[test]
    fn merging_keeps_every_chunk_once_at_its_earliest_time_in_time_order() {
        let old = trace(vec![entry(1, 10), entry(2, 20), entry(3, 30)]);
        let new = trace(vec![entry(3, 5), entry(2, 25), entry(4, 40)]);
        let merged = old.merge(new);
        assert_eq!(merged.runs, 2);
        let order: Vec<(u32, u64)> = merged.entries.iter().map(|e| (e.chunk, e.at_ms)).collect();
        assert_eq!(order, vec![(3, 5), (1, 10), (2, 20), (4, 40)]);
    }

    #[test]
    fn the_recorder_keeps_first_reads_inside_the_window_only() {
        let recorder = TraceRecorder::new(4, Instant::now(), Duration::from_secs(60));
        assert!(recorder.note_read(2, 7));
        assert!(!recorder.note_read(2, 7), "second read is not a first read");
        assert!(!recorder.note_read(99, 7), "out-of-range chunk ignored");
        assert!(recorder.was_read(2) && !recorder.was_read(1));
        assert_eq!(recorder.len(), 1);

        let closed = TraceRecorder::new(4, Instant::now(), Duration::ZERO);
        std::thread::sleep(Duration::from_millis(2));
        assert!(closed.note_read(1, 7), "still a first read");
        assert_eq!(closed.len(), 0, "but outside the window");
    }
}
