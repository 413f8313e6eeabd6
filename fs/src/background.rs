//! Background fetching, below the application's own reads: the access trace, whole files as
//! they are opened, the small files of listed directories, and the full fetch that makes sure no
//! start is slower than pulling the image whole.
//!
//! A fixed number of workers take batches (adjacent chunks, bounded in count and bytes, so one
//! batch is one or a few ranged store reads) from four queues in priority order ([`Class`]).
//! Memory is bounded by workers x batch bytes. The application's reads never wait in these
//! queues: they go straight to the tiers, and join a background fetch of the same chunk
//! (single-flight). While any application read is in flight, the two lowest classes (listed
//! directories, the full fetch) start no new batch beyond [`Limits::while_demand`] (0 by
//! default), so a demand read shares the store and the cores with at most the `workers` batches
//! of those classes started before it, plus the trace and opened-file work.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use thaw_core::pack::ChunkRef;
use tokio::sync::Notify;

use crate::access::ChunkAccess;
use crate::metrics::FsMetrics;
use crate::prefetch::{Class, PrefetchState};

/// How much background work runs at once.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Batches in flight, all classes together.
    pub workers: usize,
    /// Batches of the two lowest classes in flight while an application read is (0: none
    /// starts then; on 2 cores the full fetch's cache writes competed with the start for CPU,
    /// docs/benchmarks.md).
    pub while_demand: usize,
    /// Chunks per batch at most.
    pub batch_chunks: usize,
    /// Raw bytes per batch at most (one chunk larger than this is a batch of its own).
    pub batch_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            workers: crate::prefetch::DEFAULT_PREFETCH_CONCURRENCY,
            while_demand: 0,
            batch_chunks: 32,
            batch_bytes: 8 << 20,
        }
    }
}

/// Chunks queued, fetched, failed and skipped per class.
#[derive(Debug, Default)]
struct Counts {
    queued: AtomicU64,
    fetched: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
}

/// What one class of background work did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClassReport {
    /// Chunks queued.
    pub queued: u64,
    /// Chunks fetched (from any tier).
    pub fetched: u64,
    /// Chunks that could not be fetched (the application's own read retries them).
    pub failed: u64,
    /// Chunks queued but not fetched by this class: the application read them first, or a
    /// higher class took them over.
    #[serde(default)]
    pub skipped: u64,
}

impl ClassReport {
    /// Whether every queued chunk was fetched, failed or skipped.
    pub fn settled(&self) -> bool {
        self.fetched + self.failed + self.skipped >= self.queued
    }
}

#[derive(Default)]
struct Queues {
    trace: VecDeque<u32>,
    /// One queue per opened file, served round robin: a large file does not hold up the small
    /// ones opened after it.
    opened: VecDeque<VecDeque<u32>>,
    listed: VecDeque<u32>,
    /// The full fetch: the chunks it takes first, then its cursor over the chunk table.
    all_first: VecDeque<u32>,
    all: Option<Range<u32>>,
}

/// The background queues and their workers' shared state.
pub(crate) struct Background {
    state: PrefetchState,
    queues: Mutex<Queues>,
    wake: Notify,
    demand: AtomicUsize,
    low_in_flight: AtomicUsize,
    limits: Limits,
    counts: [Counts; 4],
}

/// One batch a worker took: its class, chunk indexes and tier requests, and the chunks it
/// found in the local cache already (ready, nothing to fetch).
struct Batch {
    class: Class,
    chunks: Vec<u32>,
    refs: Vec<ChunkRef>,
    cached: Vec<u32>,
}

/// Counts an application read as in flight while it lives.
pub(crate) struct DemandGuard<'a>(&'a Background);

impl Drop for DemandGuard<'_> {
    fn drop(&mut self) {
        if self.0.demand.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.wake.notify_waiters();
        }
    }
}

fn is_low(class: Class) -> bool {
    matches!(class, Class::Listed | Class::All)
}

impl Background {
    /// Queues for a manifest of `chunks` chunks.
    pub(crate) fn new(chunks: usize, limits: Limits) -> Self {
        Background {
            state: PrefetchState::new(chunks),
            queues: Mutex::new(Queues::default()),
            wake: Notify::new(),
            demand: AtomicUsize::new(0),
            low_in_flight: AtomicUsize::new(0),
            limits,
            counts: Default::default(),
        }
    }

    /// Every chunk's prefetch state.
    pub(crate) fn state(&self) -> &PrefetchState {
        &self.state
    }

    /// What `class` did so far.
    pub(crate) fn report(&self, class: Class) -> ClassReport {
        let counts = &self.counts[class.rank()];
        ClassReport {
            queued: counts.queued.load(Ordering::Relaxed),
            fetched: counts.fetched.load(Ordering::Relaxed),
            failed: counts.failed.load(Ordering::Relaxed),
            skipped: counts.skipped.load(Ordering::Relaxed),
        }
    }

    /// Marks an application read in flight until the guard drops.
    pub(crate) fn demand(&self) -> DemandGuard<'_> {
        self.demand.fetch_add(1, Ordering::AcqRel);
        DemandGuard(self)
    }

    /// Queues `chunks` (in order) for `class`, skipping those a class at least as high has or
    /// that are fetched; returns how many were queued.
    pub(crate) fn queue(&self, class: Class, chunks: impl IntoIterator<Item = u32>) -> usize {
        let queued: VecDeque<u32> = chunks
            .into_iter()
            .filter(|&index| self.state.queue(index, class))
            .collect();
        let count = queued.len();
        if count == 0 {
            return 0;
        }
        self.counts[class.rank()]
            .queued
            .fetch_add(count as u64, Ordering::Relaxed);
        {
            let mut queues = self.queues.lock().expect("background lock");
            match class {
                Class::Trace => queues.trace.extend(queued),
                Class::Opened => queues.opened.push_back(queued),
                Class::Listed => queues.listed.extend(queued),
                Class::All => unreachable!("the full fetch is a cursor: fetch_all"),
            }
        }
        self.wake.notify_waiters();
        count
    }

    /// Starts the full fetch, behind everything else: chunks `first`, then all of `0..count`
    /// (what `first` took is skipped then).
    pub(crate) fn fetch_all(&self, first: Vec<u32>, count: u32) {
        {
            let mut queues = self.queues.lock().expect("background lock");
            queues.all_first = first.into();
            queues.all = Some(0..count);
        }
        self.wake.notify_waiters();
    }

    /// Whether the full fetch is running (started and not through the chunk table yet).
    pub(crate) fn fetching_all(&self) -> bool {
        self.queues
            .lock()
            .expect("background lock")
            .all
            .as_ref()
            .is_some_and(|range| range.start < range.end)
    }

    /// Starts the workers on `runtime`; they run until the returned handles are aborted.
    /// Fetched chunks of the trace and full-fetch classes are counted in `metrics`.
    pub(crate) fn start<V: ChunkAccess>(
        self: &Arc<Self>,
        volume: Arc<V>,
        metrics: Arc<FsMetrics>,
        runtime: &tokio::runtime::Handle,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..self.limits.workers.max(1))
            .map(|_| runtime.spawn(self.clone().work(volume.clone(), metrics.clone())))
            .collect()
    }

    async fn work<V: ChunkAccess>(self: Arc<Self>, volume: Arc<V>, metrics: Arc<FsMetrics>) {
        loop {
            let batch = self.next_batch(&*volume).await;
            let results = if batch.refs.is_empty() {
                Vec::new()
            } else {
                volume.fetch_many(&batch.refs).await
            };
            let counts = &self.counts[batch.class.rank()];
            let fetched = batch
                .chunks
                .iter()
                .zip(results.iter().map(|r| r.as_ref().err()));
            let cached = batch.cached.iter().map(|index| (index, None));
            for (index, error) in fetched.chain(cached) {
                self.state.finish(*index, error.is_none());
                match error {
                    None => {
                        match batch.class {
                            Class::Trace => metrics.prefetched_chunks.inc(),
                            Class::All => metrics.fetch_all_chunks.inc(),
                            Class::Opened | Class::Listed => 0,
                        };
                        counts.fetched.fetch_add(1, Ordering::Relaxed)
                    }
                    Some(e) => {
                        tracing::debug!(chunk = index, class = batch.class.name(), error = %e, "background fetch failed");
                        counts.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            if is_low(batch.class) {
                self.low_in_flight.fetch_sub(1, Ordering::AcqRel);
                self.wake.notify_waiters();
            }
        }
    }

    /// Waits for the next batch this worker may run.
    async fn next_batch<V: ChunkAccess>(&self, volume: &V) -> Batch {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(batch) = self.try_take(volume) {
                return batch;
            }
            notified.await;
        }
    }

    /// The next batch of the highest class that has work and may run now.
    fn try_take<V: ChunkAccess>(&self, volume: &V) -> Option<Batch> {
        let mut queues = self.queues.lock().expect("background lock");
        for class in Class::ALL {
            if is_low(class)
                && self.demand.load(Ordering::Acquire) > 0
                && self.low_in_flight.load(Ordering::Acquire) >= self.limits.while_demand
            {
                continue;
            }
            let batch = self.take_from(&mut queues, class, volume);
            if !batch.chunks.is_empty() || !batch.cached.is_empty() {
                if is_low(class) {
                    self.low_in_flight.fetch_add(1, Ordering::AcqRel);
                }
                return Some(batch);
            }
        }
        None
    }

    /// Claims up to one batch of `class`'s queued chunks the application has not read yet.
    fn take_from<V: ChunkAccess>(&self, queues: &mut Queues, class: Class, volume: &V) -> Batch {
        let mut batch = Batch {
            class,
            chunks: Vec::new(),
            refs: Vec::new(),
            cached: Vec::new(),
        };
        let mut bytes = 0u64;
        let limits = self.limits;
        let skipped = &self.counts[class.rank()].skipped;
        let mut add = |index: u32| -> bool {
            if volume.was_read(index) || !self.state.claim(index, class) {
                // The full fetch walks every chunk: only what it was asked for counts.
                if class != Class::All {
                    skipped.fetch_add(1, Ordering::Relaxed);
                }
                return true;
            }
            match volume.chunk_ref(index) {
                Ok(chunk) if volume.is_cached(&chunk) => batch.cached.push(index),
                Ok(chunk) => {
                    bytes += chunk.raw_len as u64;
                    batch.chunks.push(index);
                    batch.refs.push(chunk);
                }
                Err(e) => {
                    self.state.finish(index, false);
                    tracing::warn!(chunk = index, error = %e, "background fetch: no such chunk");
                }
            }
            batch.chunks.len() + batch.cached.len() < limits.batch_chunks
                && bytes < limits.batch_bytes
        };
        match class {
            Class::Trace => {
                drain_while(&mut queues.trace, &mut add);
            }
            Class::Listed => {
                drain_while(&mut queues.listed, &mut add);
            }
            Class::Opened => {
                while let Some(mut file) = queues.opened.pop_front() {
                    let more = drain_while(&mut file, &mut add);
                    if !file.is_empty() {
                        queues.opened.push_back(file);
                    }
                    if !more {
                        break;
                    }
                }
            }
            Class::All => {
                if !drain_while(&mut queues.all_first, &mut add) {
                    return batch;
                }
                if let Some(range) = &mut queues.all {
                    for index in range.by_ref() {
                        if !add(index) {
                            break;
                        }
                    }
                    if range.start >= range.end {
                        tracing::info!(
                            fetched = self.counts[Class::All.rank()]
                                .fetched
                                .load(Ordering::Relaxed),
                            "full fetch: every chunk asked for"
                        );
                        queues.all = None;
                    }
                }
            }
        }
        batch
    }
}

/// Pops chunks from `queue` into `add` while it asks for more; false when it asked to stop.
fn drain_while(queue: &mut VecDeque<u32>, add: &mut impl FnMut(u32) -> bool) -> bool {
    while let Some(index) = queue.pop_front() {
        if !add(index) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::access::fake::FakeVolume;

    fn volume(chunks: usize) -> Arc<FakeVolume> {
        Arc::new(FakeVolume::with_chunks(chunks))
    }

    async fn until(what: &str, done: impl Fn() -> bool) {
        for _ in 0..400 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn classes_run_in_priority_order_and_each_chunk_is_fetched_once() {
        let volume = Arc::new(FakeVolume {
            already_read: [5].into(),
            failing: [7].into(),
            ..FakeVolume::with_chunks(12)
        });
        let limits = Limits {
            workers: 1,
            batch_chunks: 2,
            ..Limits::default()
        };
        let background = Arc::new(Background::new(12, limits));
        background.fetch_all(vec![11], 12);
        assert_eq!(background.queue(Class::Listed, [9, 10]), 2);
        assert_eq!(background.queue(Class::Opened, [4, 5, 6, 7]), 4);
        assert_eq!(
            background.queue(Class::Trace, [8, 4]),
            2,
            "the trace takes 4 over"
        );
        assert_eq!(background.queue(Class::Listed, [8]), 0, "the trace has it");
        let workers = background.start(
            volume.clone(),
            Default::default(),
            &tokio::runtime::Handle::current(),
        );
        until("the full fetch", || {
            volume.background_fetches.lock().unwrap().len() >= 12
        })
        .await;
        for worker in workers {
            worker.abort();
        }
        let fetched = volume.background_fetches.lock().unwrap().clone();
        // Trace (8, 4), opened (6, 7: 5 was read), listed (9, 10), then the full fetch: what it
        // takes first (11), then the rest in order, with another try of the chunk that failed.
        assert_eq!(fetched, [8, 4, 6, 7, 9, 10, 11, 0, 1, 2, 3, 7]);
        assert_eq!(background.report(Class::Opened).failed, 1);
        let opened = background.report(Class::Opened);
        assert_eq!(
            (opened.queued, opened.skipped),
            (4, 2),
            "5 was read, 4 taken by the trace"
        );
        assert!(opened.settled());
        assert_eq!(background.report(Class::All).fetched, 5);
        assert!(!background.fetching_all());
    }

    #[tokio::test]
    async fn opened_files_share_the_workers_round_robin() {
        let volume = volume(8);
        let limits = Limits {
            workers: 1,
            batch_chunks: 1,
            ..Limits::default()
        };
        let background = Arc::new(Background::new(8, limits));
        background.queue(Class::Opened, [0, 1, 2, 3]);
        background.queue(Class::Opened, [4, 5]);
        let workers = background.start(
            volume.clone(),
            Default::default(),
            &tokio::runtime::Handle::current(),
        );
        until("both files", || {
            volume.background_fetches.lock().unwrap().len() == 6
        })
        .await;
        workers.into_iter().for_each(|w| w.abort());
        assert_eq!(
            *volume.background_fetches.lock().unwrap(),
            [0, 4, 1, 5, 2, 3]
        );
    }

    #[tokio::test]
    async fn while_the_application_reads_the_full_fetch_starts_no_batch_or_only_its_share() {
        for while_demand in [0, 1] {
            let volume = Arc::new(FakeVolume {
                delay: Some(Duration::from_millis(30)),
                ..FakeVolume::with_chunks(64)
            });
            let limits = Limits {
                workers: 8,
                while_demand,
                batch_chunks: 1,
                ..Limits::default()
            };
            let background = Arc::new(Background::new(64, limits));
            let reading = background.demand();
            background.fetch_all(Vec::new(), 64);
            let workers = background.start(
                volume.clone(),
                Default::default(),
                &tokio::runtime::Handle::current(),
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            let busy_peak = volume.peak_in_flight();
            let fetched_while_reading = volume.background_fetches.lock().unwrap().len();
            drop(reading);
            until("the rest", || {
                volume.background_fetches.lock().unwrap().len() == 64
            })
            .await;
            workers.into_iter().for_each(|w| w.abort());
            assert_eq!(
                busy_peak, while_demand,
                "full-fetch batches while the application read"
            );
            if while_demand == 0 {
                assert_eq!(fetched_while_reading, 0);
            }
            assert!(volume.peak_in_flight() > 1, "all workers once it stopped");
        }
    }
}
