//! [`TraceRecorder`]: notes the first application read of every chunk after mount, keeping the
//! ones inside the recording window.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use thaw_core::manifest::{Extent, InodeNo, Manifest};

use super::{Trace, TraceEntry};

/// One recorded first read: chunk index, milliseconds after mount, file, where in the file.
#[derive(Clone, Copy)]
struct Noted {
    chunk: u32,
    at_ms: u64,
    ino: InodeNo,
    offset: u64,
    len: u32,
}

/// Notes the first application read of every chunk; keeps the ones inside the window.
pub(crate) struct TraceRecorder {
    started: Instant,
    window: Duration,
    read: Vec<AtomicBool>,
    entries: Mutex<Vec<Noted>>,
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

    /// Notes a read of the chunk of `extent` for file `ino`; true when it is the chunk's first.
    pub(crate) fn note_read(&self, extent: &Extent, ino: InodeNo) -> bool {
        let Some(flag) = self.read.get(extent.chunk as usize) else {
            return false;
        };
        if flag.swap(true, Ordering::AcqRel) {
            return false;
        }
        let elapsed = self.started.elapsed();
        if elapsed <= self.window {
            self.entries.lock().expect("trace lock").push(Noted {
                chunk: extent.chunk,
                at_ms: elapsed.as_millis() as u64,
                ino,
                offset: extent.file_offset,
                len: extent.len,
            });
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

    /// Chunks the application has read (recorded or not: the window may have closed).
    pub(crate) fn chunks_read(&self) -> u64 {
        self.read
            .iter()
            .filter(|flag| flag.load(Ordering::Relaxed))
            .count() as u64
    }

    /// Entries recorded so far.
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().expect("trace lock").len()
    }

    /// What was recorded so far, as a one-run trace of `manifest`; `path_of` names each file.
    pub(crate) fn to_trace(
        &self,
        manifest: &Manifest,
        path_of: impl Fn(InodeNo) -> String,
    ) -> Trace {
        let recorded = self.entries.lock().expect("trace lock").clone();
        let entries = recorded
            .into_iter()
            .filter_map(|noted| {
                let id = manifest.chunk(noted.chunk).ok()?.id.to_hex();
                Some(TraceEntry {
                    chunk: noted.chunk,
                    id,
                    at_ms: noted.at_ms,
                    path: path_of(noted.ino),
                    offset: noted.offset,
                    len: noted.len,
                })
            })
            .collect();
        Trace {
            runs: 1,
            entries,
            ..Trace::empty(&manifest.id())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extent(chunk: u32) -> Extent {
        Extent {
            file_offset: 4096,
            chunk,
            chunk_offset: 0,
            len: 100,
        }
    }

    #[test]
    fn the_recorder_keeps_first_reads_inside_the_window_only() {
        let recorder = TraceRecorder::new(4, Instant::now(), Duration::from_secs(60));
        assert!(recorder.note_read(&extent(2), 7));
        assert!(
            !recorder.note_read(&extent(2), 7),
            "second read is not a first read"
        );
        assert!(
            !recorder.note_read(&extent(99), 7),
            "out-of-range chunk ignored"
        );
        assert!(recorder.was_read(2) && !recorder.was_read(1));
        assert_eq!(recorder.len(), 1);
        assert_eq!(recorder.chunks_read(), 1);

        let closed = TraceRecorder::new(4, Instant::now(), Duration::ZERO);
        std::thread::sleep(Duration::from_millis(2));
        assert!(closed.note_read(&extent(1), 7), "still a first read");
        assert_eq!(closed.len(), 0, "but outside the window");
        assert_eq!(closed.chunks_read(), 1);
    }
}
