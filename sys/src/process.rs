//! Watching processes that are not our children (a mount daemon, a restored snapshot): they
//! cannot be waited for, only seen to be gone from /proc.

use std::path::Path;
use std::time::{Duration, Instant};

/// How often [`wait_gone`] looks.
const POLL: Duration = Duration::from_millis(2);

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
        tokio::time::sleep(POLL).await;
    }
    true
}

/// Makes a write to a closed pipe end this process quietly (`thaw ls TAG | head`), as
/// command-line tools do, instead of Rust's default of ignoring SIGPIPE. Call it before any
/// thread starts; not in daemons, where a client hanging up must not kill the server.
pub fn die_on_closed_pipe() {
    // SAFETY: resetting a signal disposition; called before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Completes when this process receives SIGTERM or SIGINT (a daemon's cue to shut down
/// cleanly); never, where the handlers cannot be installed.
pub async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Sends SIGKILL to process `pid` and to the process group it leads (a restored tree leads its
/// own session and group).
pub fn kill_tree(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    // SAFETY: signalling a process and its group has no memory-safety preconditions.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_killed_child_is_seen_gone_once_reaped() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(exists(pid));
        assert!(!wait_gone(pid, Duration::from_millis(20)).await);
        kill_tree(pid);
        child.wait().unwrap();
        assert!(wait_gone(pid, Duration::from_secs(5)).await);
    }
}

/// What to show of a tool's log when it failed (CRIU's, or a runtime's checkpoint log, whose
/// error lines start with `Error`): its last `lines` error lines, else its last `lines` lines.
pub fn log_errors(log: &str, lines: usize) -> String {
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("Error") || l.contains("Error ("))
        .collect();
    let shown = match errors.is_empty() {
        true => log.lines().collect(),
        false => errors,
    };
    shown[shown.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod log_tests {
    use super::log_errors;

    #[test]
    fn a_log_shows_its_errors_else_its_end() {
        let log = "(0.1) start\nError (criu/x.c:1): bad\n(0.2) more\n(0.3) Error (y.c:2): worse\n";
        assert_eq!(
            log_errors(log, 15),
            "Error (criu/x.c:1): bad\n(0.3) Error (y.c:2): worse"
        );
        assert_eq!(log_errors("a\nb\nc\n", 2), "b\nc");
        assert_eq!(log_errors("", 2), "");
    }
}
