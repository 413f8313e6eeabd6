//! Access traces: which chunks a start-up read first, in what order and when.
//!
//! A [`recorder::TraceRecorder`] notes the first application read of every chunk after mount
//! (for a window of time). What a mount recorded is stored as one run of the manifest's trace
//! ([`log`]: every node appends its own run object, and runs are merged on read and compacted
//! now and then, so concurrent saves never lose each other). The next mount replays the merged
//! trace as prefetch. A mount of a manifest that has no trace yet borrows the traces of related
//! manifests ([`carry`]): the earlier versions of its tag and the images sharing its layers,
//! mapped onto its own chunks by chunk id and, where ids changed, by path and offset.
//!
//! A mount whose reads differ from a fresh start (the image under a restored snapshot maps only
//! what the process had mapped) keeps its own trace under a profile.

pub mod carry;
pub mod log;
pub(crate) mod recorder;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use thaw_core::manifest::Manifest;

/// Format tag written into every trace.
pub const TRACE_FORMAT: &str = "thaw-trace/1";

/// How long after mount first reads are recorded when not told otherwise.
pub const DEFAULT_TRACE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// Entries a merged trace keeps at most (the earliest first reads): a trace is a hint of a
/// start-up, and runs that wander off (a long-lived mount) must not grow it without bound.
pub const MAX_TRACE_ENTRIES: usize = 200_000;

/// Run summaries a merged trace keeps (the newest).
pub const MAX_RUN_HISTORY: usize = 32;

/// Run ids a merged trace keeps (the newest) to count each run once however often it is merged.
const MAX_RUN_IDS: usize = 1024;

pub use log::{valid_profile, TraceLog};

/// Milliseconds since the Unix epoch now (run names and run summaries).
pub(crate) use thaw_core::store::unix_ms_now;

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
    /// Where in that file the chunk's bytes are (what a manifest whose chunk ids changed maps
    /// by); 0 in traces written before it was recorded.
    #[serde(default)]
    pub offset: u64,
    /// How many of the file's bytes the chunk holds there (0: unknown, the whole file).
    #[serde(default)]
    pub len: u32,
}

/// A trace one mount prefetched from: whose it was, why it was chosen and how much of it
/// applied to the mounted manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceSource {
    /// Store folder of the trace ([`log::trace_dir`]).
    pub key: String,
    /// The manifest the trace was recorded on.
    pub manifest: String,
    /// Why it was used: `own`, `previous version N of tag T`, `shares N layers`.
    pub relation: String,
    /// Entries in that trace.
    pub entries: u64,
    /// Entries whose chunk the mounted manifest has too (same id).
    pub by_id: u64,
    /// Entries whose chunk changed but whose file (path and offset) is there.
    pub by_path: u64,
}

impl std::fmt::Display for TraceSource {
    /// `KEY (RELATION): M of N entries apply (P%: I by chunk id, J by path)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let matched = self.by_id + self.by_path;
        let percent = match self.entries {
            0 => 0.0,
            n => 100.0 * matched as f64 / n as f64,
        };
        write!(
            f,
            "{} ({}): {matched} of {} entries apply ({percent:.0}%: {} by chunk id, {} by path)",
            self.key, self.relation, self.entries, self.by_id, self.by_path
        )
    }
}

/// What one recorded run prefetched from and how well it predicted the run's reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    /// When the run was saved (milliseconds since the Unix epoch).
    pub saved_unix_ms: u64,
    /// Chunks the run read for the first time (recorded or not).
    pub first_reads: u64,
    /// Of those, how many prefetch had fetched before they were asked for.
    pub prefetch_hits: u64,
    /// The traces its prefetch came from (empty: it had none).
    pub sources: Vec<TraceSource>,
}

impl RunSummary {
    /// Prefetch hits per first read (0 when nothing was read).
    pub fn hit_ratio(&self) -> f64 {
        match self.first_reads {
            0 => 0.0,
            n => self.prefetch_hits as f64 / n as f64,
        }
    }
}

impl std::fmt::Display for RunSummary {
    /// `run saved at T ms: N first reads, H prefetched (R% hit ratio); from SOURCES`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "run saved at {} ms: {} first reads, {} prefetched ({:.0}% hit ratio); from ",
            self.saved_unix_ms,
            self.first_reads,
            self.prefetch_hits,
            100.0 * self.hit_ratio()
        )?;
        if self.sources.is_empty() {
            return write!(f, "no trace");
        }
        for (n, source) in self.sources.iter().enumerate() {
            let separator = if n == 0 { "" } else { "; " };
            write!(f, "{separator}{source}")?;
        }
        Ok(())
    }
}

/// A stored access trace: one run, or the merge of several.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// Always [`TRACE_FORMAT`].
    pub format: String,
    /// The manifest the chunk indexes refer to.
    pub manifest: String,
    /// How many recorded runs were merged into this trace.
    pub runs: u32,
    /// The ids of the newest of them ([`log`] names each saved run), so that a run merged
    /// twice (two nodes compacting at once) counts once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub run_ids: Vec<String>,
    /// Entries ordered by first-read time.
    pub entries: Vec<TraceEntry>,
    /// What the merged runs prefetched from and their hit ratios, oldest first (the newest
    /// [`MAX_RUN_HISTORY`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RunSummary>,
}

impl Trace {
    /// An empty trace of `manifest`.
    pub fn empty(manifest: &thaw_core::ChunkId) -> Trace {
        Trace {
            format: TRACE_FORMAT.into(),
            manifest: manifest.to_hex(),
            runs: 0,
            run_ids: Vec::new(),
            entries: Vec::new(),
            history: Vec::new(),
        }
    }

    /// Runs counted beyond the ones [`Trace::run_ids`] names.
    fn unnamed_runs(&self) -> u32 {
        self.runs.saturating_sub(self.run_ids.len() as u32)
    }

    /// This trace with another run's (or merged trace's) merged in: every chunk either read, at
    /// the earlier of its two times, ordered by time, at most [`MAX_TRACE_ENTRIES`] (the
    /// earliest); the run histories are joined in save order, and a run both name counts once.
    pub fn merge(mut self, other: Trace) -> Trace {
        let mut unnamed = self.unnamed_runs().max(other.unnamed_runs());
        let mut run_ids = std::mem::take(&mut self.run_ids);
        run_ids.extend(other.run_ids.iter().cloned());
        run_ids.sort();
        run_ids.dedup();
        let dropped = run_ids.len().saturating_sub(MAX_RUN_IDS);
        run_ids.drain(..dropped);
        unnamed += dropped as u32;
        let mut by_chunk: HashMap<u32, TraceEntry> =
            self.entries.drain(..).map(|e| (e.chunk, e)).collect();
        for entry in other.entries {
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
        entries.truncate(MAX_TRACE_ENTRIES);
        let mut history = self.history;
        history.extend(other.history);
        history.sort_by_key(|run| run.saved_unix_ms);
        history.dedup();
        let excess = history.len().saturating_sub(MAX_RUN_HISTORY);
        history.drain(..excess);
        Trace {
            format: TRACE_FORMAT.into(),
            manifest: self.manifest,
            runs: unnamed + run_ids.len() as u32,
            run_ids,
            entries,
            history,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Trace objects come from the store (any node can write one): parsing, merging and
    /// replaying a mutated one must never panic.
    #[test]
    fn fuzz_trace_objects() {
        let manifest = thaw_core::ChunkId::of(b"m");
        let mut seed = Trace::empty(&manifest);
        seed.entries = (0..5).map(|i| entry(i, i as u64 * 10)).collect();
        seed.run_ids = vec!["run-1-00".into()];
        let json = serde_json::to_vec(&seed).unwrap();
        let cases = thaw_core::fuzz::cases(3000);
        thaw_core::fuzz::run("trace", &[json], cases, |input| {
            if let Ok(trace) = serde_json::from_slice::<Trace>(input) {
                let merged = trace.clone().merge(seed.clone()).merge(trace);
                assert!(merged.entries.len() <= MAX_TRACE_ENTRIES);
            }
        });
    }

    pub(crate) fn entry(chunk: u32, at_ms: u64) -> TraceEntry {
        TraceEntry {
            chunk,
            id: format!("id{chunk}"),
            at_ms,
            path: format!("/f{chunk}"),
            offset: 0,
            len: 0,
        }
    }

    fn trace(entries: Vec<TraceEntry>) -> Trace {
        Trace {
            runs: 1,
            entries,
            ..Trace::empty(&thaw_core::ChunkId::of(b"m"))
        }
    }

    #[test]
    fn merging_keeps_every_chunk_once_at_its_earliest_time_in_time_order() {
        let old = trace(vec![entry(1, 10), entry(2, 20), entry(3, 30)]);
        let new = trace(vec![entry(3, 5), entry(2, 25), entry(4, 40)]);
        let merged = old.merge(new);
        assert_eq!(
            merged.runs, 1,
            "runs without ids (older traces) cannot be told apart: the larger count"
        );
        let order: Vec<(u32, u64)> = merged.entries.iter().map(|e| (e.chunk, e.at_ms)).collect();
        assert_eq!(order, vec![(3, 5), (1, 10), (2, 20), (4, 40)]);
    }

    #[test]
    fn a_run_merged_twice_counts_once() {
        let named = |id: &str| Trace {
            run_ids: vec![id.to_string()],
            ..trace(vec![entry(1, 1)])
        };
        let both = named("a").merge(named("b"));
        let again = both.clone().merge(named("b").merge(named("c")));
        assert_eq!(both.runs, 2);
        assert_eq!(again.runs, 3);
        assert_eq!(again.run_ids, ["a", "b", "c"]);
    }

    #[test]
    fn a_merged_trace_is_bounded_in_entries_and_in_run_history() {
        let many = trace(
            (0..MAX_TRACE_ENTRIES as u32 + 10)
                .map(|i| entry(i, i as u64 + 1))
                .collect(),
        );
        let early = trace(vec![entry(MAX_TRACE_ENTRIES as u32 + 20, 0)]);
        let merged = many.merge(early);
        assert_eq!(merged.entries.len(), MAX_TRACE_ENTRIES);
        assert_eq!(
            merged.entries[0].chunk,
            MAX_TRACE_ENTRIES as u32 + 20,
            "earliest kept"
        );
        let mut merged = trace(vec![]);
        for run in 0..MAX_RUN_HISTORY as u64 + 5 {
            let mut one = trace(vec![]);
            one.history.push(RunSummary {
                saved_unix_ms: run,
                ..RunSummary::default()
            });
            merged = merged.merge(one);
        }
        assert_eq!(merged.history.len(), MAX_RUN_HISTORY);
        assert_eq!(
            merged.history[0].saved_unix_ms, 5,
            "the newest runs are kept"
        );
    }
}
