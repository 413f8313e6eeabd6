//! CRIU's own lazy-pages daemon (`criu lazy-pages`), the alternative to thaw's server: it
//! answers each fault with one page and copies the rest in 64 KiB-4 MiB steps between faults.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{LazyPages, LOG, SOCKET};
use crate::criu::Criu;
use crate::{Result, SnapshotError};

/// How long the daemon has to open its socket.
const READY_WAIT: Duration = Duration::from_secs(10);

/// A running `criu lazy-pages` daemon; killed when dropped before it finished.
#[derive(Debug)]
pub struct CriuDaemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Criu {
    /// Whether this host's kernel and CRIU can restore lazily (`criu check --feature
    /// uffd-noncoop`: userfaultfd that follows forks and remaps); the reason when not.
    pub fn lazy_pages_unsupported(&self) -> Option<String> {
        let out = Command::new(self.path())
            .args(["check", "--feature", "uffd-noncoop"])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) if out.status.success() => None,
            Ok(out) => Some(format!(
                "criu check --feature uffd-noncoop: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => Some(format!("running {}: {e}", self.path().display())),
        }
    }

    /// Starts CRIU's lazy-pages daemon over `images` with its socket and log in `work_dir` (the
    /// same work dir the restore gets), and waits until it listens.
    pub fn lazy_pages(&self, images: &Path, work_dir: &Path) -> Result<LazyPages> {
        std::fs::create_dir_all(work_dir).map_err(|e| SnapshotError::io(work_dir, e))?;
        let socket = work_dir.join(SOCKET);
        let _ = std::fs::remove_file(&socket);
        let child = Command::new(self.path())
            .arg("lazy-pages")
            .arg("--images-dir")
            .arg(images)
            .arg("--work-dir")
            .arg(work_dir)
            .arg("--log-file")
            .arg(LOG)
            .arg("-v2")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| SnapshotError::CriuMissing(format!("{}: {e}", self.path().display())))?;
        let mut daemon = CriuDaemon {
            child: Some(child),
            log: work_dir.join(LOG),
        };
        let deadline = Instant::now() + READY_WAIT;
        while !socket.exists() {
            if let Some(status) = daemon.exited()? {
                return Err(daemon.failure(status));
            }
            if Instant::now() > deadline {
                return Err(daemon.failure(format!("no {SOCKET} after {READY_WAIT:?}")));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(LazyPages::Criu(daemon))
    }
}

impl CriuDaemon {
    /// `Ok(true)` once the daemon has copied every page in and exited cleanly, `Ok(false)`
    /// while it runs; an error naming its log when it failed (the restored tree may then be
    /// missing memory and must not go on).
    pub fn finished(&mut self) -> Result<bool> {
        if self.child.is_none() {
            return Ok(true);
        }
        match self.exited()? {
            None => Ok(false),
            Some(status) if status.success() => {
                self.child = None;
                Ok(true)
            }
            Some(status) => Err(self.failure(status)),
        }
    }

    fn exited(&mut self) -> Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => child
                .try_wait()
                .map_err(|e| SnapshotError::io(&self.log, e)),
            None => Ok(None),
        }
    }

    fn failure(&self, status: impl std::fmt::Display) -> SnapshotError {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        SnapshotError::CriuFailed {
            action: "lazy-pages",
            status: status.to_string(),
            log_path: self.log.clone(),
            log: thaw_sys::process::log_errors(&log, 15),
        }
    }
}

impl Drop for CriuDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
