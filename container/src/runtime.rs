//! The OCI runtime (crun or runc): finding it, and running a bundle either to its end (`thaw
//! run`) or until it is ready (a measured start), deleting the container however that ends.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::logs::RunLogs;
use crate::readiness::{Liveness, Probe};
use crate::{io_error, ContainerError};

/// How long a killed container has to exit.
const KILL_WAIT: Duration = Duration::from_secs(30);

/// An OCI runtime binary.
#[derive(Clone, Debug)]
pub struct Runtime {
    path: PathBuf,
}

/// Seconds from launching the runtime to the process existing, and from there to ready.
#[derive(Clone, Copy, Debug)]
pub struct StartTimes {
    /// Launch → the container's process exists (runtime set-up).
    pub start: f64,
    /// Process exists → ready.
    pub ready: f64,
}

impl Runtime {
    /// The runtime asked for (a name or a path), else crun, else runc (runc first on hosts with
    /// cgroup v1 and v2 mounted side by side, which crun refuses).
    pub fn find(asked: Option<&str>) -> Result<Self, ContainerError> {
        let hybrid_cgroups = Path::new("/sys/fs/cgroup/unified").is_dir();
        let candidates: Vec<&str> = match asked {
            Some(r) => vec![r],
            None if hybrid_cgroups => vec!["runc", "crun"],
            None => vec!["crun", "runc"],
        };
        candidates
            .iter()
            .find_map(|candidate| thaw_sys::which(candidate))
            .map(|path| Runtime { path })
            .ok_or_else(|| ContainerError::NoRuntime(candidates.join(", ")))
    }

    /// The binary.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The first line of its `--version` (its name and version), else its path.
    pub fn version(&self) -> String {
        std::process::Command::new(&self.path)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(str::to_string)
            })
            .unwrap_or_else(|| self.path.display().to_string())
    }

    pub(crate) fn command(&self) -> tokio::process::Command {
        tokio::process::Command::new(&self.path)
    }

    pub(crate) fn spawn_error(&self) -> impl FnOnce(std::io::Error) -> ContainerError + '_ {
        move |source| ContainerError::Spawn {
            program: self.path.display().to_string(),
            source,
        }
    }

    /// Runs the bundle as container `id` in the foreground (its output is ours) and returns its
    /// exit status.
    pub async fn run(&self, bundle: &Path, id: &str) -> Result<ExitStatus, ContainerError> {
        self.command()
            .arg("run")
            .arg("--bundle")
            .arg(bundle)
            .arg(id)
            .status()
            .await
            .map_err(self.spawn_error())
    }

    /// Runs the bundle as container `id` with its output in `logs` until `probe` says it is
    /// ready (at most `timeout`), then kills and deletes it. The runtime's pid file marks the
    /// moment the container's process exists; `rootfs` is where readiness files are looked up.
    pub async fn run_until_ready(
        &self,
        bundle: &Path,
        rootfs: &Path,
        id: &str,
        logs: &RunLogs,
        probe: &Probe,
        timeout: Duration,
    ) -> Result<StartTimes, ContainerError> {
        let pid_file = bundle.join("container.pid");
        let _ = std::fs::remove_file(&pid_file);
        let (stdout, stderr) = logs.create()?;
        let launched = Instant::now();
        let mut child = self
            .command()
            .arg("run")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(self.spawn_error())?;
        // Dropped before the end (an interrupted benchmark), the guard deletes the container.
        let guard = DeleteOnDrop { runtime: self, id };
        let mut started: Option<Instant> = None;
        let outcome = probe
            .wait(
                "the command",
                rootfs,
                timeout,
                || {
                    if started.is_none() && pid_file.exists() {
                        started = Some(Instant::now());
                    }
                    Ok(match child.try_wait()? {
                        Some(status) => Liveness::Exited(status),
                        None if started.is_some() => Liveness::Running,
                        None => Liveness::Starting,
                    })
                },
                || logs.error_tail(),
            )
            .await;
        let ready_at = Instant::now();
        let started_at = started.unwrap_or(ready_at);
        if child.try_wait().ok().flatten().is_none() {
            let _ = self.command().args(["kill", id, "KILL"]).output().await;
            let _ = tokio::time::timeout(KILL_WAIT, child.wait()).await;
        }
        drop(guard);
        outcome?;
        Ok(StartTimes {
            start: (started_at - launched).as_secs_f64(),
            ready: (ready_at - started_at).as_secs_f64(),
        })
    }
}

/// Deletes (killing) a container when dropped.
struct DeleteOnDrop<'a> {
    runtime: &'a Runtime,
    id: &'a str,
}

impl Drop for DeleteOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.runtime.path)
            .args(["delete", "--force", self.id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A container's private directory (bundle, overlay layers, rootfs), removed on drop unless
/// kept.
#[derive(Debug)]
pub struct ContainerDir {
    path: PathBuf,
    keep: bool,
}

impl ContainerDir {
    /// Creates `path`; `keep` leaves it behind when dropped.
    pub fn create(path: PathBuf, keep: bool) -> Result<Self, ContainerError> {
        std::fs::create_dir_all(&path).map_err(io_error(&path))?;
        Ok(ContainerDir { path, keep })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ContainerDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_that_is_not_there_is_named() {
        let err = Runtime::find(Some("thaw-no-such-runtime"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("thaw-no-such-runtime") && err.contains("install crun or runc"),
            "{err}"
        );
        let sh = thaw_sys::which("sh").unwrap();
        let found = Runtime::find(Some(&sh.display().to_string())).unwrap();
        assert_eq!(found.path(), sh);
    }

    #[test]
    fn a_container_dir_goes_unless_kept() {
        let parent = tempfile::tempdir().unwrap();
        let gone = parent.path().join("a");
        drop(ContainerDir::create(gone.clone(), false).unwrap());
        assert!(!gone.exists());
        let kept = parent.path().join("b");
        drop(ContainerDir::create(kept.clone(), true).unwrap());
        assert!(kept.is_dir());
    }
}
