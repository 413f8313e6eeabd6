//! Sequential lookahead across files: when the application's first reads walk the chunk table
//! in order (a tree read file after file: the indexer stores a directory's files in order, small
//! ones batched into shared chunks), the next chunks are fetched before they are asked for, as
//! one coalesced request where the pack layout allows. Random access never triggers it.

use std::ops::Range;
use std::sync::Mutex;

/// First reads of consecutive chunks needed before looking ahead.
const STREAK: u32 = 3;
/// Chunks fetched ahead of the newest first read.
const AHEAD: u32 = 8;

#[derive(Debug, Default)]
struct State {
    last: Option<u32>,
    streak: u32,
    issued_until: u32,
}

/// Watches the order of first reads and says which chunks to fetch ahead.
#[derive(Debug, Default)]
pub(crate) struct Lookahead {
    state: Mutex<State>,
}

impl Lookahead {
    /// Notes the first read of chunk `index` (of `chunk_count`); returns the chunk indexes to
    /// fetch ahead, if the reads have become sequential.
    pub(crate) fn on_first_read(&self, index: u32, chunk_count: u32) -> Option<Range<u32>> {
        let mut state = self.state.lock().expect("lookahead lock");
        state.streak = match state.last {
            Some(last) if index == last.wrapping_add(1) => state.streak + 1,
            _ => 1,
        };
        state.last = Some(index);
        if state.streak < STREAK {
            return None;
        }
        let start = (index + 1).max(state.issued_until);
        let end = index.saturating_add(1 + AHEAD).min(chunk_count);
        if start >= end {
            return None;
        }
        state.issued_until = end;
        Some(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_run_of_consecutive_first_reads_looks_ahead_and_each_chunk_once() {
        let ahead = Lookahead::default();
        assert_eq!(ahead.on_first_read(10, 100), None);
        assert_eq!(ahead.on_first_read(11, 100), None);
        assert_eq!(ahead.on_first_read(12, 100), Some(13..21));
        assert_eq!(
            ahead.on_first_read(13, 100),
            Some(21..22),
            "only what is new"
        );
        assert_eq!(ahead.on_first_read(50, 100), None, "a jump resets");
        assert_eq!(ahead.on_first_read(3, 100), None);
        assert_eq!(
            ahead.on_first_read(17, 100),
            None,
            "random order never looks ahead"
        );
        let tail = Lookahead::default();
        for i in 95..98 {
            tail.on_first_read(i, 100);
        }
        assert_eq!(
            tail.on_first_read(98, 100),
            None,
            "issued up to the end already"
        );
    }
}
