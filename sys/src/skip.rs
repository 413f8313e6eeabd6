//! How a test that cannot run on this machine (no root, no criu, no GPU) says so: a
//! `SKIPPED <test>: <reason>` line on stderr and, when `$THAW_TEST_SKIP_LOG` names a file, the
//! same line appended to it. scripts/test sets the variable and prints the count and the list
//! after the run, so a skipped test is counted as skipped instead of passing silently.

use std::io::Write;

/// The variable naming the file skipped tests are listed in.
pub const SKIP_LOG_ENV: &str = "THAW_TEST_SKIP_LOG";

/// Reports that `test` was skipped, and why.
pub fn skipped(test: &str, reason: &str) {
    let line = format!("SKIPPED {test}: {reason}\n");
    eprint!("{line}");
    let Some(path) = std::env::var_os(SKIP_LOG_ENV) else {
        return;
    };
    // One short write with O_APPEND: lines of tests running in parallel do not interleave.
    if let Ok(mut log) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = log.write_all(line.as_bytes());
    }
}
