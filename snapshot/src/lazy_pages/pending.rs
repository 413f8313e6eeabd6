//! The lazy memory of one process not copied in yet: runs of addresses, each with the offset of
//! its bytes in the pages image, taken out as they are copied, dropped when the process unmaps
//! or discards them, and moved when it remaps them.

use std::collections::BTreeMap;

use super::images::Run;

/// Runs still to copy, keyed by start address; they never overlap.
#[derive(Clone, Debug, Default)]
pub struct Pending {
    runs: BTreeMap<u64, (u64, u64)>,
    bytes: u64,
}

impl Pending {
    /// All of `runs` pending.
    pub fn new(runs: &[Run]) -> Pending {
        let mut pending = Pending::default();
        for run in runs {
            pending.insert(*run);
        }
        pending
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Bytes left.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Takes the part of `window` that lies in the run holding `addr`, or `None` when `addr`
    /// is not pending.
    pub fn take_around(&mut self, addr: u64, window: std::ops::Range<u64>) -> Option<Run> {
        let (&start, &(end, offset)) = self.runs.range(..=addr).next_back()?;
        if addr >= end {
            return None;
        }
        let run = Run { start, end, offset };
        let (s, e) = (window.start.max(start), window.end.min(end));
        self.cut(run, s, e);
        Some(Run {
            start: s,
            end: e,
            offset: offset + (s - start),
        })
    }

    /// The pages-image bytes (offset, length) of the first `max` bytes still pending, in
    /// address order: what the background copy reads next.
    pub fn upcoming(&self, max: u64) -> Vec<(u64, u64)> {
        let mut left = max;
        let mut out = Vec::new();
        for (&start, &(end, offset)) in &self.runs {
            if left == 0 {
                break;
            }
            let len = (end - start).min(left);
            out.push((offset, len));
            left -= len;
        }
        out
    }

    /// Takes up to `max` bytes from the start of the lowest run, or `None` when nothing is left.
    pub fn take_next(&mut self, max: u64) -> Option<Run> {
        let (&start, &(end, offset)) = self.runs.iter().next()?;
        let e = end.min(start + max);
        self.cut(Run { start, end, offset }, start, e);
        Some(Run {
            start,
            end: e,
            offset,
        })
    }

    /// Forgets `start..end` (unmapped or discarded: its old bytes must never be copied in).
    pub fn drop_range(&mut self, start: u64, end: u64) {
        for run in self.overlapping(start, end) {
            let (s, e) = (start.max(run.start), end.min(run.end));
            self.cut(run, s, e);
        }
    }

    /// Moves what is pending in `from..from + len` to start at `to` (mremap).
    pub fn remap(&mut self, from: u64, to: u64, len: u64) {
        let moved: Vec<Run> = self
            .overlapping(from, from + len)
            .into_iter()
            .map(|run| {
                let (s, e) = (from.max(run.start), (from + len).min(run.end));
                self.cut(run, s, e);
                Run {
                    start: s - from + to,
                    end: e - from + to,
                    offset: run.offset + (s - run.start),
                }
            })
            .collect();
        for run in moved {
            self.insert(run);
        }
    }

    /// Makes `run` pending again (a copy the kernel asked to retry); it must not overlap
    /// anything pending.
    pub fn restore(&mut self, run: Run) {
        self.insert(run);
    }

    fn overlapping(&self, start: u64, end: u64) -> Vec<Run> {
        let first = self
            .runs
            .range(..=start)
            .next_back()
            .filter(|(_, &(e, _))| e > start)
            .map(|(&s, _)| s)
            .unwrap_or(start);
        self.runs
            .range(first..end)
            .map(|(&start, &(end, offset))| Run { start, end, offset })
            .collect()
    }

    /// Removes `s..e` from `run` (which holds it), keeping what is left on either side.
    fn cut(&mut self, run: Run, s: u64, e: u64) {
        self.runs.remove(&run.start);
        self.bytes -= run.end - run.start;
        if run.start < s {
            self.insert(Run {
                start: run.start,
                end: s,
                offset: run.offset,
            });
        }
        if e < run.end {
            self.insert(Run {
                start: e,
                end: run.end,
                offset: run.offset + (e - run.start),
            });
        }
    }

    fn insert(&mut self, run: Run) {
        if run.start < run.end {
            self.bytes += run.end - run.start;
            self.runs.insert(run.start, (run.end, run.offset));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(start: u64, end: u64, offset: u64) -> Run {
        Run { start, end, offset }
    }

    #[test]
    fn taking_dropping_and_remapping_keep_offsets_right() {
        let mut p = Pending::new(&[run(0x1000, 0x9000, 0), run(0x10000, 0x12000, 0x8000)]);
        assert_eq!(p.bytes(), 0xa000);
        assert_eq!(p.upcoming(0x9000), vec![(0, 0x8000), (0x8000, 0x1000)]);
        // A fault in the middle takes its window, clipped to the run.
        assert_eq!(
            p.take_around(0x4000, 0x0..0x6000),
            Some(run(0x1000, 0x6000, 0))
        );
        assert_eq!(p.take_around(0x4000, 0x4000..0x5000), None, "already taken");
        assert_eq!(p.take_around(0xa000, 0xa000..0xb000), None, "never lazy");
        // The rest of the first run, then the second.
        p.drop_range(0x7000, 0x8000);
        assert_eq!(p.take_next(0x1000), Some(run(0x6000, 0x7000, 0x5000)));
        assert_eq!(p.take_next(0x100000), Some(run(0x8000, 0x9000, 0x7000)));
        // mremap of part of the second run: its bytes follow it.
        p.remap(0x11000, 0x50000, 0x4000);
        assert_eq!(p.take_next(0x100000), Some(run(0x10000, 0x11000, 0x8000)));
        assert_eq!(
            p.take_around(0x50000, 0x50000..0x60000),
            Some(run(0x50000, 0x51000, 0x9000))
        );
        assert!(p.is_empty());
        assert_eq!(p.bytes(), 0);
    }
}
