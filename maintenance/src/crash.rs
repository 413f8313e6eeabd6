//! Crash points for the tests: `THAW_MAINTENANCE_CRASH_AT=<point>` makes the process abort at
//! that point, as `kill -9` would (no destructor runs, no lock is released), so the tests can
//! check that every tag still verifies and that a rerun finishes the job.

/// Aborts the process if `THAW_MAINTENANCE_CRASH_AT` names `point`.
pub fn point(point: &str) {
    if std::env::var("THAW_MAINTENANCE_CRASH_AT").is_ok_and(|p| p == point) {
        eprintln!("thaw: crashing at {point} (THAW_MAINTENANCE_CRASH_AT)");
        std::process::abort();
    }
}
