//! When a started process counts as ready, and the one poll that waits for it: a clean exit, a
//! file appearing inside its root, or an HTTP answer.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::ContainerError;

/// How often readiness (and the process) is polled.
pub const POLL: Duration = Duration::from_millis(2);

/// How long one readiness GET may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// When the command counts as ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// It exited with status 0.
    Exit,
    /// This path (inside the process's root) exists.
    File(PathBuf),
    /// A GET of this URL answers 2xx (the process shares the host's network).
    Url(String),
}

/// What the watched process is doing, as its watcher sees it.
#[derive(Clone, Copy, Debug)]
pub enum Liveness {
    /// Not yet running the command (the runtime is still setting up): readiness is not checked.
    Starting,
    /// Running.
    Running,
    /// Exited with this status.
    Exited(ExitStatus),
    /// Gone, status unknown (a process that is not our child).
    Gone,
}

/// Probes the readiness condition; holds the HTTP client for URL readiness.
#[derive(Clone, Debug)]
pub struct Probe {
    readiness: Readiness,
    http: reqwest::Client,
}

impl Readiness {
    /// Words for reports and errors.
    pub fn describe(&self) -> String {
        match self {
            Readiness::Exit => "the command exits with status 0".into(),
            Readiness::File(path) => format!("{} exists", path.display()),
            Readiness::Url(url) => format!("GET {url} answers 2xx"),
        }
    }

    /// From the command line's choices: a file, else a URL, else the exit.
    pub fn from_options(file: Option<&Path>, url: Option<&str>) -> Self {
        match (file, url) {
            (Some(path), _) => Readiness::File(path.to_path_buf()),
            (None, Some(url)) => Readiness::Url(url.to_string()),
            (None, None) => Readiness::Exit,
        }
    }
}

impl Probe {
    /// A probe of `readiness` (its HTTP client has a short timeout and ignores proxies).
    pub fn new(readiness: Readiness) -> Result<Self, ContainerError> {
        let http = reqwest::Client::builder()
            .timeout(PROBE_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| ContainerError::Image {
                image: "readiness probe".into(),
                reason: format!("building the HTTP client: {e}"),
            })?;
        Ok(Probe { readiness, http })
    }

    /// The condition probed.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Whether the condition holds now for a process whose root is `rootfs` (never for
    /// [`Readiness::Exit`], which only the process's end shows).
    pub async fn holds(&self, rootfs: &Path) -> bool {
        match &self.readiness {
            Readiness::Exit => false,
            Readiness::File(path) => {
                let inside = path.strip_prefix("/").unwrap_or(path);
                rootfs.join(inside).exists()
            }
            Readiness::Url(url) => match self.http.get(url).send().await {
                Ok(answer) => answer.status().is_success(),
                Err(_) => false,
            },
        }
    }

    /// Polls until the process `what` (watched by `watch`) is ready, at most `timeout`.
    ///
    /// A process that exits with status 0 is ready when readiness is [`Readiness::Exit`]; any
    /// other end before readiness is an error carrying `error_output()`.
    pub async fn wait(
        &self,
        what: &str,
        rootfs: &Path,
        timeout: Duration,
        mut watch: impl FnMut() -> std::io::Result<Liveness>,
        error_output: impl Fn() -> String,
    ) -> Result<(), ContainerError> {
        let deadline = Instant::now() + timeout;
        loop {
            let liveness = watch().map_err(|source| ContainerError::Spawn {
                program: what.to_string(),
                source,
            })?;
            let ended = match liveness {
                Liveness::Exited(status)
                    if status.success() && self.readiness == Readiness::Exit =>
                {
                    return Ok(())
                }
                Liveness::Exited(status) => {
                    Some(format!("exited with status {}", crate::exit_code(&status)))
                }
                Liveness::Gone => Some("exited".to_string()),
                Liveness::Starting | Liveness::Running => None,
            };
            if let Some(ended) = ended {
                return Err(ContainerError::EndedBeforeReady {
                    what: what.to_string(),
                    ended,
                    readiness: self.readiness.describe(),
                    output: error_output(),
                });
            }
            if matches!(liveness, Liveness::Running) && self.holds(rootfs).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ContainerError::NotReady {
                    what: what.to_string(),
                    seconds: timeout.as_secs(),
                    readiness: self.readiness.describe(),
                    output: error_output(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child_liveness(child: &mut std::process::Child) -> std::io::Result<Liveness> {
        Ok(match child.try_wait()? {
            Some(status) => Liveness::Exited(status),
            None => Liveness::Running,
        })
    }

    #[tokio::test]
    async fn a_file_inside_the_root_makes_it_ready() {
        let root = tempfile::tempdir().unwrap();
        let marker = root.path().join("ready");
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("sleep 0.1; touch {}; sleep 30", marker.display()))
            .spawn()
            .unwrap();
        let probe = Probe::new(Readiness::from_options(Some(Path::new("/ready")), None)).unwrap();
        probe
            .wait(
                "the command",
                root.path(),
                Duration::from_secs(20),
                || child_liveness(&mut child),
                String::new,
            )
            .await
            .unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[tokio::test]
    async fn exit_readiness_needs_status_zero_and_other_ends_are_errors() {
        let root = tempfile::tempdir().unwrap();
        let exit = Probe::new(Readiness::Exit).unwrap();
        let mut ok = std::process::Command::new("true").spawn().unwrap();
        exit.wait(
            "ok",
            root.path(),
            Duration::from_secs(20),
            || child_liveness(&mut ok),
            String::new,
        )
        .await
        .unwrap();
        let mut bad = std::process::Command::new("false").spawn().unwrap();
        let err = exit
            .wait(
                "the command",
                root.path(),
                Duration::from_secs(20),
                || child_liveness(&mut bad),
                || "boom".into(),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the command exited with status 1 before it was ready"),
            "{err}"
        );
        assert!(err.ends_with("boom"), "{err}");
        let file = Probe::new(Readiness::File("/never".into())).unwrap();
        let err = file
            .wait(
                "the restored process 7",
                root.path(),
                Duration::from_secs(20),
                || Ok(Liveness::Gone),
                String::new,
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the restored process 7 exited before it was ready (/never exists)"),
            "{err}"
        );
        let err = file
            .wait(
                "the command",
                root.path(),
                Duration::from_millis(30),
                || Ok(Liveness::Running),
                || "tail".into(),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("was not ready after 0s") && err.ends_with("tail"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_starting_process_is_not_probed() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("ready"), b"").unwrap();
        let probe = Probe::new(Readiness::File("/ready".into())).unwrap();
        let mut polls = 0;
        probe
            .wait(
                "c",
                root.path(),
                Duration::from_secs(20),
                || {
                    polls += 1;
                    Ok(if polls < 3 {
                        Liveness::Starting
                    } else {
                        Liveness::Running
                    })
                },
                String::new,
            )
            .await
            .unwrap();
        assert_eq!(polls, 3);
    }
}
