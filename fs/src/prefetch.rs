//! The prefetch state of every chunk, and telling whether background fetching arrived in time.
//!
//! Each chunk is not queued, queued by one [`Class`] of background work, being fetched, or
//! fetched. Work of a higher class takes over a chunk a lower class queued (an opened file's
//! chunks jump ahead of the full fetch), and only one fetch ever claims a chunk. An
//! application's first read of a chunk looks at that state to count a prefetch hit (fetched
//! before it was asked for), a late prefetch (asked for while in flight), a miss (queued, not
//! reached yet) or an unpredicted read (nothing had queued it).

use std::sync::atomic::{AtomicU8, Ordering};

const NOT_QUEUED: u8 = 0;
// 1..=4: queued by the class of that rank + 1.
const IN_FLIGHT: u8 = 10;
const FETCHED: u8 = 11;

/// Windows of the trace fetched at once when not told otherwise.
pub const DEFAULT_PREFETCH_CONCURRENCY: usize = 8;

/// Why a chunk is fetched in the background, highest priority first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// The access trace (the mount's own, or carried over from related manifests).
    Trace,
    /// A file an application opened: fetched whole.
    Opened,
    /// The small files of a directory an application listed.
    Listed,
    /// Everything else, in chunk table order (`--fetch-all`).
    All,
}

impl Class {
    /// Every class, highest priority first.
    pub const ALL: [Class; 4] = [Class::Trace, Class::Opened, Class::Listed, Class::All];

    /// Position in [`Class::ALL`].
    pub fn rank(self) -> usize {
        self as usize
    }

    /// Its name in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Class::Trace => "trace",
            Class::Opened => "opened",
            Class::Listed => "listed",
            Class::All => "all",
        }
    }

    fn queued(self) -> u8 {
        self.rank() as u8 + 1
    }
}

/// What an application's first read of a chunk found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FirstRead {
    /// Prefetch had already fetched it.
    Prefetched,
    /// Prefetch was fetching it; the read joined that fetch.
    InFlight,
    /// It was queued but prefetch had not started on it.
    Queued,
    /// Nothing had queued it.
    NotPredicted,
}

/// The prefetch state of every chunk of a manifest.
pub(crate) struct PrefetchState {
    states: Vec<AtomicU8>,
}

impl PrefetchState {
    pub(crate) fn new(chunks: usize) -> Self {
        PrefetchState {
            states: (0..chunks).map(|_| AtomicU8::new(NOT_QUEUED)).collect(),
        }
    }

    fn slot(&self, index: u32) -> Option<&AtomicU8> {
        self.states.get(index as usize)
    }

    /// Queues chunk `index` for `class`: true when it was not queued, or queued by a lower
    /// class (which will skip it now); false when a class at least as high has it, or it is
    /// being fetched or fetched.
    pub(crate) fn queue(&self, index: u32, class: Class) -> bool {
        let Some(slot) = self.slot(index) else {
            return false;
        };
        let mine = class.queued();
        slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
            let lower = now == NOT_QUEUED || (now > mine && now < IN_FLIGHT);
            lower.then_some(mine)
        })
        .is_ok()
    }

    /// Claims chunk `index` for a fetch by `class`: true when `class` had it queued (or, for
    /// [`Class::All`], when nothing had).
    pub(crate) fn claim(&self, index: u32, class: Class) -> bool {
        let Some(slot) = self.slot(index) else {
            return false;
        };
        let mine = class.queued();
        slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
            let ours = now == mine || (class == Class::All && now == NOT_QUEUED);
            ours.then_some(IN_FLIGHT)
        })
        .is_ok()
    }

    /// A claimed chunk arrived (`true`) or could not be fetched (`false`: anyone may queue it
    /// again; the application's own read retries it).
    pub(crate) fn finish(&self, index: u32, fetched: bool) {
        if let Some(slot) = self.slot(index) {
            slot.store(
                if fetched { FETCHED } else { NOT_QUEUED },
                Ordering::Release,
            );
        }
    }

    pub(crate) fn on_first_read(&self, index: u32) -> FirstRead {
        match self.slot(index).map(|s| s.load(Ordering::Acquire)) {
            Some(FETCHED) => FirstRead::Prefetched,
            Some(IN_FLIGHT) => FirstRead::InFlight,
            Some(NOT_QUEUED) | None => FirstRead::NotPredicted,
            Some(_) => FirstRead::Queued,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_higher_class_takes_over_a_queued_chunk_and_only_one_fetch_claims_it() {
        let state = PrefetchState::new(4);
        assert!(state.queue(0, Class::All));
        assert!(state.queue(0, Class::Opened), "an opened file jumps ahead");
        assert!(
            !state.queue(0, Class::Listed),
            "a lower class does not take it back"
        );
        assert!(!state.claim(0, Class::All), "the full fetch skips it now");
        assert!(state.claim(0, Class::Opened));
        assert!(!state.claim(0, Class::Opened), "claimed once");
        assert!(!state.queue(0, Class::Trace), "in flight: nothing to queue");
        assert_eq!(state.on_first_read(0), FirstRead::InFlight);
        state.finish(0, true);
        assert_eq!(state.on_first_read(0), FirstRead::Prefetched);

        assert!(
            state.claim(1, Class::All),
            "the full fetch takes what nobody queued"
        );
        state.finish(1, false);
        assert_eq!(state.on_first_read(1), FirstRead::NotPredicted);
        assert!(state.queue(2, Class::Trace));
        assert_eq!(state.on_first_read(2), FirstRead::Queued);
        assert!(!state.claim(3, Class::Opened), "not queued by that class");
        assert!(!state.queue(9, Class::Trace), "out of range");
    }
}
