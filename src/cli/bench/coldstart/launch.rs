//! Starting the measured command and timing it to readiness: the OCI runtime runs a bundle, the
//! pid file marks the moment the container's process exists, and the readiness condition (a
//! file, an HTTP answer or a clean exit) marks the end.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// When the command counts as ready.
#[derive(Clone, Debug)]
pub enum Readiness {
    /// It exited with status 0.
    Exit,
    /// This path (inside the container's root) exists.
    File(PathBuf),
    /// A GET of this URL answers 2xx (the container shares the host's network).
    Url(String),
}

impl Readiness {
    /// Words for the report.
    pub fn describe(&self) -> String {
        match self {
            Readiness::Exit => "the command exits with status 0".into(),
            Readiness::File(path) => format!("{} exists", path.display()),
            Readiness::Url(url) => format!("GET {url} answers 2xx"),
        }
    }

    /// Whether the condition holds for a process whose root filesystem is `rootfs` (never for
    /// [`Readiness::Exit`], which the caller sees from the process itself).
    pub async fn holds(&self, rootfs: &Path, http: &reqwest::Client) -> bool {
        match self {
            Readiness::Exit => false,
            Readiness::File(path) => {
                let inside = path.strip_prefix("/").unwrap_or(path);
                rootfs.join(inside).exists()
            }
            Readiness::Url(url) => match http.get(url).send().await {
                Ok(answer) => answer.status().is_success(),
                Err(_) => false,
            },
        }
    }
}

/// How often readiness and the pid file are polled.
pub const POLL: Duration = Duration::from_millis(2);

/// A short-timeout HTTP client for readiness probes.
pub fn probe_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .context("building the HTTP client for readiness probes")
}

/// The files a run's output goes to.
pub struct RunLogs {
    /// The command's standard output.
    pub stdout: PathBuf,
    /// The command's standard error (and the runtime's).
    pub stderr: PathBuf,
}

impl RunLogs {
    /// `stdout` and `stderr` files in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        RunLogs {
            stdout: dir.join("stdout"),
            stderr: dir.join("stderr"),
        }
    }

    /// The start of the command's output (at most 4 KiB, lossy UTF-8).
    pub fn output(&self) -> String {
        head(&self.stdout, 4096)
    }

    /// The end of its error output, for error messages.
    pub fn error_tail(&self) -> String {
        let text = std::fs::read(&self.stderr).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        String::from_utf8_lossy(&text[start..]).trim().to_string()
    }
}

/// The first `limit` bytes of a file as text.
fn head(path: &Path, limit: usize) -> String {
    let mut text = std::fs::read(path).unwrap_or_default();
    text.truncate(limit);
    String::from_utf8_lossy(&text).into_owned()
}

/// Seconds from launching the runtime to the process existing, and from there to ready.
#[derive(Clone, Copy, Debug)]
pub struct StartTimes {
    /// Launch → the container's process exists (runtime set-up).
    pub start: f64,
    /// Process exists → ready.
    pub ready: f64,
}

/// One container to run: the runtime binary, the bundle, its root filesystem and its id.
pub struct Container<'a> {
    /// crun or runc.
    pub runtime: &'a Path,
    /// The directory holding config.json.
    pub bundle: &'a Path,
    /// The root filesystem the spec names (readiness files are looked up there).
    pub rootfs: &'a Path,
    /// The container id.
    pub id: &'a str,
}

/// Runs `container` until `readiness` holds (at most `timeout`), then kills it.
pub async fn run_container(
    container: &Container<'_>,
    logs: &RunLogs,
    readiness: &Readiness,
    timeout: Duration,
    http: &reqwest::Client,
) -> anyhow::Result<StartTimes> {
    let Container {
        runtime,
        bundle,
        rootfs,
        id,
    } = *container;
    let pid_file = bundle.join("container.pid");
    let _ = std::fs::remove_file(&pid_file);
    let stdout = std::fs::File::create(&logs.stdout)
        .with_context(|| format!("creating {}", logs.stdout.display()))?;
    let stderr = std::fs::File::create(&logs.stderr)
        .with_context(|| format!("creating {}", logs.stderr.display()))?;
    let launched = Instant::now();
    let mut child = tokio::process::Command::new(runtime)
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
        .with_context(|| format!("starting {}", runtime.display()))?;
    // Dropped before the end (an interrupted benchmark), the guard deletes the container.
    let guard = DeleteOnDrop { runtime, id };
    let outcome = wait_ready(
        &mut child, &pid_file, rootfs, logs, readiness, timeout, http,
    )
    .await;
    let ready_at = Instant::now();
    if child.try_wait()?.is_none() {
        let _ = tokio::process::Command::new(runtime)
            .args(["kill", id, "KILL"])
            .output()
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    }
    drop(guard);
    let started_at = outcome?;
    Ok(StartTimes {
        start: (started_at - launched).as_secs_f64(),
        ready: (ready_at - started_at).as_secs_f64(),
    })
}

/// Deletes (killing) a container when dropped.
struct DeleteOnDrop<'a> {
    runtime: &'a Path,
    id: &'a str,
}

impl Drop for DeleteOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new(self.runtime)
            .args(["delete", "--force", self.id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Polls until ready; returns when the container's process came to exist.
async fn wait_ready(
    child: &mut tokio::process::Child,
    pid_file: &Path,
    rootfs: &Path,
    logs: &RunLogs,
    readiness: &Readiness,
    timeout: Duration,
    http: &reqwest::Client,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    let mut started: Option<Instant> = None;
    loop {
        if started.is_none() && pid_file.exists() {
            started = Some(Instant::now());
        }
        if let Some(status) = child.try_wait()? {
            let started = started.unwrap_or_else(Instant::now);
            if status.success() && matches!(readiness, Readiness::Exit) {
                return Ok(started);
            }
            bail!(
                "the command exited with status {} before it was ready ({}): {}",
                crate::cli::container::exit_code(&status),
                readiness.describe(),
                logs.error_tail()
            );
        }
        if let Some(started) = started {
            if readiness.holds(rootfs, http).await {
                return Ok(started);
            }
        }
        if Instant::now() > deadline {
            bail!(
                "not ready after {}s ({}); its error output: {}",
                timeout.as_secs(),
                readiness.describe(),
                logs.error_tail()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}
