//! A container as a handle that can be checkpointed: the runtime started in the foreground (its
//! output is ours, through the pipes it makes for the container), the runtime's `checkpoint`
//! (CRIU run inside the container's namespaces by runc) and `restore` of a bundle from those
//! images, lazily (`--lazy-pages`, a CRIU lazy-pages daemon sharing the work dir) or not.
//!
//! The container's standard streams are always pipes (the runtime copies between them and its
//! own), which is what lets a restore on another node hand the restored process new ones.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use crate::logs::RunLogs;
use crate::runtime::Runtime;
use crate::{io_error, ContainerError};

/// A container whose runtime runs in the foreground as our child; deleted (killed) when
/// dropped.
#[derive(Debug)]
pub struct Started {
    child: tokio::process::Child,
    runtime: Runtime,
    id: String,
    pid_file: PathBuf,
}

/// How to checkpoint a container.
#[derive(Clone, Debug)]
pub struct Checkpoint<'a> {
    /// Where the CRIU images go (created).
    pub images: &'a Path,
    /// Where CRIU's log (`dump.log`) goes.
    pub work: &'a Path,
    /// Keep the container running after the dump.
    pub leave_running: bool,
    /// Dump established TCP connections.
    pub tcp_established: bool,
    /// Dump the file locks its processes hold.
    pub file_locks: bool,
}

/// How to restore a container from a checkpoint.
#[derive(Clone, Debug)]
pub struct Restore<'a> {
    /// The bundle (its config.json and rootfs) the container is restored into.
    pub bundle: &'a Path,
    /// The container's id on this node.
    pub id: &'a str,
    /// The CRIU images (may be a read-only lazy mount).
    pub images: &'a Path,
    /// CRIU's work dir (`restore.log`; with `lazy_pages`, the daemon's socket).
    pub work: &'a Path,
    /// Leave private memory to a CRIU lazy-pages daemon listening in `work`.
    pub lazy_pages: bool,
    /// The checkpoint holds established TCP connections.
    pub tcp_established: bool,
    /// The checkpoint holds file locks.
    pub file_locks: bool,
    /// Where the restored container's output goes [default: our standard streams].
    pub logs: Option<&'a RunLogs>,
}

impl Runtime {
    /// Why this runtime cannot checkpoint, if it cannot (crun built without CRIU).
    pub fn checkpoint_unsupported(&self) -> Option<String> {
        let name = self.path().file_name()?.to_string_lossy().into_owned();
        if !name.contains("crun") {
            return None;
        }
        let version = std::process::Command::new(self.path())
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        (!version.contains("+CRIU")).then(|| {
            format!(
                "{} was built without CRIU support (its --version lacks +CRIU): use runc",
                self.path().display()
            )
        })
    }

    /// Starts the bundle as container `id` in the foreground (our stdin, stdout and stderr, or
    /// the files of `logs`, are copied to and from its pipes), writing its pid to
    /// `bundle/container.pid`.
    pub fn start(
        &self,
        bundle: &Path,
        id: &str,
        logs: Option<&RunLogs>,
    ) -> Result<Started, ContainerError> {
        let pid_file = bundle.join("container.pid");
        let mut command = self.command();
        command
            .arg("run")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id);
        self.spawn_started(command, id, pid_file, logs)
    }

    /// Restores a container from a checkpoint, in the foreground like [`Runtime::start`] (the
    /// restored process gets new pipes to our streams in place of the ones it had).
    pub fn restore(&self, request: &Restore<'_>) -> Result<Started, ContainerError> {
        let pid_file = request.bundle.join("container.pid");
        std::fs::create_dir_all(request.work).map_err(io_error(request.work))?;
        let mut command = self.command();
        command
            .arg("restore")
            .arg("--bundle")
            .arg(request.bundle)
            .arg("--image-path")
            .arg(request.images)
            .arg("--work-path")
            .arg(request.work)
            .arg("--pid-file")
            .arg(&pid_file);
        flag(&mut command, request.lazy_pages, "--lazy-pages");
        flag(&mut command, request.tcp_established, "--tcp-established");
        flag(&mut command, request.file_locks, "--file-locks");
        command.arg(request.id);
        self.spawn_started(command, request.id, pid_file, request.logs)
    }

    fn spawn_started(
        &self,
        mut command: tokio::process::Command,
        id: &str,
        pid_file: PathBuf,
        logs: Option<&RunLogs>,
    ) -> Result<Started, ContainerError> {
        let _ = std::fs::remove_file(&pid_file);
        if let Some(logs) = logs {
            let (stdout, stderr) = logs.create()?;
            command.stdout(stdout).stderr(stderr);
        }
        let child = command
            .kill_on_drop(true)
            .spawn()
            .map_err(self.spawn_error())?;
        Ok(Started {
            child,
            runtime: self.clone(),
            id: id.to_string(),
            pid_file,
        })
    }

    /// Checkpoints the running container `id` into `request.images`. Without `leave_running`
    /// the container's processes end with the dump.
    pub async fn checkpoint(
        &self,
        id: &str,
        request: &Checkpoint<'_>,
    ) -> Result<(), ContainerError> {
        for dir in [request.images, request.work] {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        }
        let mut command = self.command();
        command
            .arg("checkpoint")
            .arg("--image-path")
            .arg(request.images)
            .arg("--work-path")
            .arg(request.work);
        flag(&mut command, request.leave_running, "--leave-running");
        flag(&mut command, request.tcp_established, "--tcp-established");
        flag(&mut command, request.file_locks, "--file-locks");
        let out = command
            .arg(id)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(self.spawn_error())?;
        if out.status.success() {
            return Ok(());
        }
        let log_path = request.work.join("dump.log");
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        Err(ContainerError::Checkpoint {
            action: "checkpoint",
            id: id.to_string(),
            output: format!(
                "{}\n{} ({}):\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                "CRIU's log",
                log_path.display(),
                thaw_sys::process::log_errors(&log, 15)
            ),
        })
    }
}

impl Started {
    /// The container's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The container's first process (host pid), once the runtime has written it.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|text| text.trim().parse().ok())
    }

    /// The runtime's exit status, if it has exited.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Waits for the runtime (and so the container) to exit.
    pub async fn wait(&mut self) -> Result<ExitStatus, ContainerError> {
        self.child.wait().await.map_err(self.runtime.spawn_error())
    }

    /// Sends `signal` (a name such as `TERM`) to the container's first process.
    pub async fn signal(&self, signal: &str) {
        let _ = self
            .runtime
            .command()
            .args(["kill", &self.id, signal])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = std::process::Command::new(self.runtime.path())
            .args(["delete", "--force", &self.id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn flag(command: &mut tokio::process::Command, on: bool, name: &str) {
    if on {
        command.arg(name);
    }
}
