//! Replaying an access trace as prefetch, and telling whether it arrived in time.
//!
//! Each chunk has a state: not in the trace, queued for prefetch, being fetched, or fetched. An
//! application's first read of a chunk looks at that state to count a prefetch hit (fetched
//! before it was asked for), a late prefetch (asked for while in flight), a miss (the prefetcher
//! had not reached it) or an unpredicted read (not in the trace).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use futures::StreamExt;

use crate::access::ChunkAccess;
use crate::metrics::FsMetrics;

const NOT_PREDICTED: u8 = 0;
const QUEUED: u8 = 1;
const IN_FLIGHT: u8 = 2;
const FETCHED: u8 = 3;

/// Windows of the trace fetched at once by the prefetcher when not told otherwise.
pub const DEFAULT_PREFETCH_CONCURRENCY: usize = 8;

/// Trace entries per window. A window's chunks are fetched together: adjacent frames of one
/// pack with one request, the window's requests all at once.
const WINDOW_CHUNKS: usize = 32;

/// What an application's first read of a chunk found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FirstRead {
    /// Prefetch had already fetched it.
    Prefetched,
    /// Prefetch was fetching it; the read joined that fetch.
    InFlight,
    /// It was in the trace but prefetch had not started on it.
    Queued,
    /// It was not in the trace.
    NotPredicted,
}

/// The prefetch state of every chunk of a manifest.
pub(crate) struct PrefetchState {
    states: Vec<AtomicU8>,
}

impl PrefetchState {
    pub(crate) fn new(chunks: usize) -> Self {
        PrefetchState {
            states: (0..chunks).map(|_| AtomicU8::new(NOT_PREDICTED)).collect(),
        }
    }

    pub(crate) fn set(&self, index: u32, state: u8) {
        if let Some(slot) = self.states.get(index as usize) {
            slot.store(state, Ordering::Release);
        }
    }

    pub(crate) fn on_first_read(&self, index: u32) -> FirstRead {
        match self
            .states
            .get(index as usize)
            .map(|s| s.load(Ordering::Acquire))
        {
            Some(FETCHED) => FirstRead::Prefetched,
            Some(IN_FLIGHT) => FirstRead::InFlight,
            Some(QUEUED) => FirstRead::Queued,
            _ => FirstRead::NotPredicted,
        }
    }
}

/// What a prefetch run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefetchReport {
    /// Chunks fetched (from any tier).
    pub fetched: u64,
    /// Chunks skipped because the application had already read them.
    pub skipped: u64,
    /// Chunks that could not be fetched (logged; the application's own read will retry).
    pub failed: u64,
}

/// Fetches `chunks` (chunk table indexes, in trace order) through `volume`, in windows of
/// trace entries, `concurrency` windows at a time, starting them in order so the earliest reads
/// are served first; `state` records each chunk's progress for the first-read accounting.
pub(crate) async fn prefetch<V: ChunkAccess>(
    volume: Arc<V>,
    state: Arc<PrefetchState>,
    metrics: Arc<FsMetrics>,
    chunks: Vec<u32>,
    concurrency: usize,
) -> PrefetchReport {
    for &index in &chunks {
        state.set(index, QUEUED);
    }
    let started = std::time::Instant::now();
    let windows: Vec<Vec<u32>> = chunks.chunks(WINDOW_CHUNKS).map(<[u32]>::to_vec).collect();
    let mut reports = futures::stream::iter(windows.into_iter().map(|window| {
        let (volume, state, metrics) = (volume.clone(), state.clone(), metrics.clone());
        async move { prefetch_window(&*volume, &state, &metrics, window).await }
    }))
    .buffered(concurrency.max(1));
    let mut report = PrefetchReport::default();
    while let Some(window) = reports.next().await {
        report.fetched += window.fetched;
        report.skipped += window.skipped;
        report.failed += window.failed;
    }
    tracing::info!(
        fetched = report.fetched,
        skipped = report.skipped,
        failed = report.failed,
        seconds = started.elapsed().as_secs_f64(),
        "prefetch done"
    );
    report
}

/// Fetches one window of the trace: the chunks the application has not read yet.
async fn prefetch_window<V: ChunkAccess>(
    volume: &V,
    state: &PrefetchState,
    metrics: &FsMetrics,
    window: Vec<u32>,
) -> PrefetchReport {
    let mut report = PrefetchReport::default();
    let mut wanted = Vec::with_capacity(window.len());
    let mut refs = Vec::with_capacity(window.len());
    for index in window {
        if volume.was_read(index) {
            report.skipped += 1;
            continue;
        }
        match volume.chunk_ref(index) {
            Ok(chunk) => {
                state.set(index, IN_FLIGHT);
                wanted.push(index);
                refs.push(chunk);
            }
            Err(e) => {
                report.failed += 1;
                tracing::warn!(chunk = index, error = %e, "prefetch: no such chunk");
            }
        }
    }
    let results = volume.fetch_many(&refs).await;
    for (index, result) in wanted.into_iter().zip(results) {
        match result {
            Ok(_) => {
                state.set(index, FETCHED);
                report.fetched += 1;
                metrics.prefetched_chunks.inc();
            }
            Err(e) => {
                state.set(index, QUEUED);
                report.failed += 1;
                tracing::warn!(chunk = index, error = %e, "prefetch could not fetch a chunk");
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::access::fake::FakeVolume;

    #[tokio::test]
    async fn prefetch_skips_what_was_read_and_records_what_arrived() {
        let volume = Arc::new(FakeVolume {
            chunks: (0..5u8).map(|i| Bytes::from(vec![i; 10])).collect(),
            already_read: [1].into(),
            failing: [3].into(),
            ..FakeVolume::default()
        });
        let state = Arc::new(PrefetchState::new(5));
        let metrics = Arc::new(FsMetrics::default());
        let report = prefetch(
            volume.clone(),
            state.clone(),
            metrics.clone(),
            vec![0, 1, 2, 3],
            2,
        )
        .await;
        assert_eq!(
            report,
            PrefetchReport {
                fetched: 2,
                skipped: 1,
                failed: 1
            }
        );
        assert_eq!(state.on_first_read(0), FirstRead::Prefetched);
        assert_eq!(state.on_first_read(2), FirstRead::Prefetched);
        assert_eq!(
            state.on_first_read(3),
            FirstRead::Queued,
            "a failed fetch is queued again"
        );
        assert_eq!(state.on_first_read(4), FirstRead::NotPredicted);
        assert_eq!(metrics.prefetched_chunks.get(), 2);
        let mut fetched = volume.background_fetches.lock().unwrap().clone();
        fetched.sort();
        assert_eq!(fetched, [0, 2, 3], "the chunk already read is not fetched");
    }
}
