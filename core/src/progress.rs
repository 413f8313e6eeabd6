//! Progress of long operations, reported to a caller-supplied sink (the CLI draws bars with it;
//! libraries print nothing).

/// Receives progress of long operations.
pub trait Progress: Send + Sync {
    /// The total amount of work is now known (bytes, or objects for store maintenance).
    fn start(&self, _phase: &str, _total: u64) {}
    /// Like [`Progress::start`] for work counted in objects, not bytes.
    fn start_count(&self, phase: &str, total: u64) {
        self.start(phase, total)
    }
    /// `amount` more are done.
    fn advance(&self, _amount: u64) {}
    /// The phase is over.
    fn finish(&self) {}
}

/// No progress reporting.
impl Progress for () {}
