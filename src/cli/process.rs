//! Watching processes that are not our children (a mount daemon, a restored snapshot), which
//! cannot be waited for: only seen to be gone from /proc.

use std::path::Path;
use std::time::{Duration, Instant};

/// Whether process `pid` exists (a zombie still does until its parent reaps it).
pub fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits until process `pid` is gone; false if it is still there after `limit`.
pub async fn wait_gone(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while exists(pid) {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}
