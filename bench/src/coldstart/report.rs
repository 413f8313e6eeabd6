//! What `thaw bench coldstart` measured: per path, the stages of each run and the bytes each
//! source delivered; printed as a table, written as JSON (the shape `thaw bench utilisation`
//! reads) and drawn by [`super::plot`].

use serde::{Deserialize, Serialize};

/// The ways a start is measured, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum PathKind {
    /// Pull the whole image, unpack it, run.
    Naive,
    /// thaw mount with its default background fetching and no trace of the image's own (it
    /// never records one): the trace of a related manifest carried over (the previous version
    /// given with `--previous-image`), else fetching on open and the full fetch.
    First,
    /// thaw lazy mount, cold local cache, no prefetch: every chunk from the object store.
    Lazy,
    /// As `lazy`, with the access trace the previous mount recorded replayed as prefetch.
    Trace,
    /// As `trace`, with a warm peer cache server on loopback in front of the object store.
    Peer,
    /// Restore a CRIU snapshot of the ready process.
    Snapshot,
}

impl PathKind {
    /// Every path, in run order.
    pub const ALL: [PathKind; 6] = [
        PathKind::Naive,
        PathKind::First,
        PathKind::Lazy,
        PathKind::Trace,
        PathKind::Peer,
        PathKind::Snapshot,
    ];

    /// The machine name (JSON `name`).
    pub fn name(self) -> &'static str {
        match self {
            PathKind::Naive => "naive",
            PathKind::First => "thaw-first",
            PathKind::Lazy => "thaw-lazy",
            PathKind::Trace => "thaw-trace",
            PathKind::Peer => "thaw-peer",
            PathKind::Snapshot => "thaw-snapshot",
        }
    }

    /// The table's words.
    pub fn label(self) -> &'static str {
        match self {
            PathKind::Naive => "naive: pull + unpack + run",
            PathKind::First => "thaw: first start, no own trace",
            PathKind::Lazy => "thaw: lazy mount, cold cache",
            PathKind::Trace => "thaw: + trace prefetch",
            PathKind::Peer => "thaw: + warm peer cache",
            PathKind::Snapshot => "thaw: snapshot restore",
        }
    }
}

/// Seconds spent in each stage of one start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stages {
    /// Getting the image (naive: the whole pull; snapshot: the process images) before anything
    /// runs; a lazy mount fetches nothing up front.
    pub fetch: f64,
    /// Unpacking it to disk (naive) or mounting it with a writable overlay (thaw).
    pub mount: f64,
    /// Launching the runtime until the process exists (snapshot: the CRIU restore).
    pub start: f64,
    /// Process exists → ready.
    pub ready: f64,
}

impl Stages {
    /// The whole start: demand → ready.
    pub fn total(&self) -> f64 {
        self.fetch + self.mount + self.start + self.ready
    }

    /// Each stage with its name, in order.
    pub fn named(&self) -> [(&'static str, f64); 4] {
        [
            ("fetch", self.fetch),
            ("unpack/mount", self.mount),
            ("process start", self.start),
            ("to ready", self.ready),
        ]
    }
}

/// Bytes delivered by each source during one start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sources {
    /// Pulled from the registry or image file (naive: the compressed image).
    pub registry: u64,
    /// Chunks fetched from the object store (uncompressed bytes).
    pub store: u64,
    /// Chunks fetched from peer caches (uncompressed bytes).
    pub peers: u64,
}

impl Sources {
    /// Bytes from all sources.
    pub fn total(&self) -> u64 {
        self.registry + self.store + self.peers
    }
}

/// One measured start.
#[derive(Clone, Debug)]
pub struct Run {
    /// Where the time went.
    pub stages: Stages,
    /// Where the bytes came from.
    pub sources: Sources,
    /// The start of what the command printed.
    pub output: String,
}

/// A path's result.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Runs in the order measured.
    Measured(Vec<Run>),
    /// Not measured here, and why.
    Skipped(String),
}

/// Everything one `thaw bench coldstart` found.
#[derive(Clone, Debug)]
pub struct Report {
    /// What ran, where and how.
    pub setup: Setup,
    /// Per path, in run order.
    pub paths: Vec<(PathKind, Outcome)>,
}

/// What a benchmark ran, on what machine, under which conditions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Setup {
    /// The image reference.
    pub image: String,
    /// The process arguments that ran.
    pub command: Vec<String>,
    /// The readiness condition, in words.
    pub readiness: String,
    /// Cores, memory and kernel of the machine.
    pub machine: String,
    /// Whether the kernel page cache was dropped before each run.
    pub page_cache_dropped: bool,
    /// Latency added to every object store read, if any.
    pub store_latency_ms: Option<u64>,
    /// Seconds `thaw index image` took (ahead of time, not part of any start).
    pub index_seconds: f64,
}

/// `thaw bench coldstart --json`: the result `thaw bench utilisation --coldstart-json` reads.
/// Only `paths[].name` and `paths[].ready_seconds` are required of a file written by hand.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ColdstartResult {
    /// What ran, where and how.
    #[serde(flatten)]
    pub setup: Setup,
    /// The measured paths, in run order.
    pub paths: Vec<PathResult>,
    /// The paths not measured, and why.
    pub skipped: Vec<SkippedPath>,
}

/// One measured path (its median run).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathResult {
    /// The path's machine name (`naive`, `thaw-lazy`, ...).
    pub name: String,
    /// The table's words for it.
    #[serde(default)]
    pub label: String,
    /// Demand to ready, seconds (NaN when a hand-written file leaves it out: refused on read).
    #[serde(default = "not_given")]
    pub ready_seconds: f64,
    /// How many times sooner than naive, when naive was measured.
    #[serde(default)]
    pub speedup_vs_naive: Option<f64>,
    /// Where the time went.
    #[serde(default)]
    pub stages_seconds: Stages,
    /// Where the bytes came from.
    #[serde(default)]
    pub bytes: Sources,
    /// Bytes from all sources.
    #[serde(default)]
    pub bytes_total: u64,
    /// The start of what the command printed.
    #[serde(default)]
    pub output: String,
    /// Seconds to ready of every run, in the order measured.
    #[serde(default)]
    pub runs_ready_seconds: Vec<f64>,
}

/// A path that was not measured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedPath {
    /// The path's machine name.
    pub name: String,
    /// Why it could not run here.
    pub reason: String,
}

fn not_given() -> f64 {
    f64::NAN
}

/// Widths of the table's columns (the first is left-aligned, the rest right-aligned).
const COLUMN_WIDTHS: [usize; 10] = [30, 8, 12, 13, 8, 8, 8, 13, 10, 10];

/// One line of the table: columns two spaces apart.
fn table_row(cells: [&str; 10]) -> String {
    let mut line = format!("{:<width$}", cells[0], width = COLUMN_WIDTHS[0]);
    for (cell, width) in cells.iter().zip(COLUMN_WIDTHS).skip(1) {
        line.push_str(&format!("  {cell:>width$}"));
    }
    line.push('\n');
    line
}

/// The run with the median total (the lower one of an even count).
pub fn median_run(runs: &[Run]) -> &Run {
    let mut order: Vec<&Run> = runs.iter().collect();
    order.sort_by(|a, b| a.stages.total().total_cmp(&b.stages.total()));
    order[(order.len() - 1) / 2]
}

impl Report {
    /// The measured paths with their median runs.
    pub fn measured(&self) -> impl Iterator<Item = (PathKind, &Run, &[Run])> {
        self.paths
            .iter()
            .filter_map(|(kind, outcome)| match outcome {
                Outcome::Measured(runs) if !runs.is_empty() => {
                    Some((*kind, median_run(runs), &runs[..]))
                }
                _ => None,
            })
    }

    /// Seconds to ready of the naive path, when it was measured.
    fn naive_seconds(&self) -> Option<f64> {
        self.measured()
            .find(|(kind, _, _)| *kind == PathKind::Naive)
            .map(|(_, run, _)| run.stages.total())
    }

    /// How many times faster than naive a start of `seconds` is.
    fn speedup(&self, seconds: f64) -> Option<f64> {
        self.naive_seconds()
            .filter(|_| seconds > 0.0)
            .map(|naive| naive / seconds)
    }

    /// The machine-readable result (what `--json` prints and `thaw bench utilisation` reads).
    pub fn to_result(&self) -> ColdstartResult {
        let paths = self
            .measured()
            .map(|(kind, run, runs)| PathResult {
                name: kind.name().into(),
                label: kind.label().into(),
                ready_seconds: run.stages.total(),
                speedup_vs_naive: self.speedup(run.stages.total()),
                stages_seconds: run.stages,
                bytes: run.sources,
                bytes_total: run.sources.total(),
                output: run.output.clone(),
                runs_ready_seconds: runs.iter().map(|r| r.stages.total()).collect(),
            })
            .collect();
        let skipped = self
            .paths
            .iter()
            .filter_map(|(kind, outcome)| match outcome {
                Outcome::Skipped(reason) => Some(SkippedPath {
                    name: kind.name().into(),
                    reason: reason.clone(),
                }),
                Outcome::Measured(_) => None,
            })
            .collect();
        ColdstartResult {
            setup: self.setup.clone(),
            paths,
            skipped,
        }
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "cold start of {} ({}), ready when {}\n{}; page cache {}; store latency {}\n\n",
            self.setup.image,
            self.setup.command.join(" "),
            self.setup.readiness,
            self.setup.machine,
            if self.setup.page_cache_dropped {
                "dropped before each run"
            } else {
                "NOT dropped (needs root)"
            },
            match self.setup.store_latency_ms {
                Some(ms) => format!("+{ms} ms per read"),
                None => "none added".into(),
            },
        );
        out.push_str(&table_row([
            "PATH",
            "FETCH",
            "UNPACK/MOUNT",
            "PROCESS START",
            "TO READY",
            "TOTAL",
            "VS NAIVE",
            "FROM REGISTRY",
            "FROM STORE",
            "FROM PEERS",
        ]));
        let seconds = |s: f64| format!("{s:.3}s");
        let bytes = |b: u64| match b {
            0 => "-".to_string(),
            b => bytesize::ByteSize(b).to_string(),
        };
        for (kind, outcome) in &self.paths {
            match outcome {
                Outcome::Measured(runs) if !runs.is_empty() => {
                    let run = median_run(runs);
                    let total = run.stages.total();
                    out.push_str(&table_row([
                        kind.label(),
                        &seconds(run.stages.fetch),
                        &seconds(run.stages.mount),
                        &seconds(run.stages.start),
                        &seconds(run.stages.ready),
                        &seconds(total),
                        &self
                            .speedup(total)
                            .map(|x| format!("{x:.2}x"))
                            .unwrap_or_else(|| "-".into()),
                        &bytes(run.sources.registry),
                        &bytes(run.sources.store),
                        &bytes(run.sources.peers),
                    ]));
                }
                Outcome::Measured(_) => {}
                Outcome::Skipped(reason) => {
                    out.push_str(&format!("{:<30} skipped: {reason}\n", kind.label()));
                }
            }
        }
        out.push_str(&format!(
            "\nindexing the image took {:.2}s (ahead of time, e.g. in CI; not part of any start)\n",
            self.setup.index_seconds
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(fetch: f64, ready: f64) -> Run {
        Run {
            stages: Stages {
                fetch,
                mount: 0.5,
                start: 0.25,
                ready,
            },
            sources: Sources {
                registry: 100,
                store: 0,
                peers: 0,
            },
            output: "ok".into(),
        }
    }

    #[test]
    fn the_median_run_is_picked_by_total_and_ratios_are_against_naive() {
        let runs = vec![run(9.0, 1.0), run(1.0, 1.0), run(4.0, 1.0)];
        assert_eq!(median_run(&runs).stages.fetch, 4.0);
        assert_eq!(median_run(&runs[..2]).stages.fetch, 1.0);
        let report = Report {
            setup: Setup {
                image: "oci:x".into(),
                command: vec!["sh".into()],
                readiness: "exit".into(),
                machine: "m".into(),
                page_cache_dropped: true,
                store_latency_ms: None,
                index_seconds: 1.0,
            },
            paths: vec![
                (PathKind::Naive, Outcome::Measured(runs)),
                (PathKind::Lazy, Outcome::Measured(vec![run(0.0, 0.25)])),
                (PathKind::Snapshot, Outcome::Skipped("no criu".into())),
            ],
        };
        let result = report.to_result();
        let paths = &result.paths;
        assert_eq!(paths.len(), 2);
        assert_eq!(paths[0].ready_seconds, 5.75);
        assert_eq!(paths[1].ready_seconds, 1.0);
        assert_eq!(paths[1].speedup_vs_naive, Some(5.75));
        assert_eq!(paths[1].runs_ready_seconds, [1.0]);
        assert_eq!(result.skipped[0].name, "thaw-snapshot");
        // What is written reads back as it was.
        let text = serde_json::to_string(&result).unwrap();
        let back: ColdstartResult = serde_json::from_str(&text).unwrap();
        assert_eq!(back, result);
        let table = report.table();
        assert!(table.contains("5.75x"), "{table}");
        assert!(table.contains("skipped: no criu"), "{table}");
    }
}
