//! A `thaw mount --daemon` started by another command (a lazy snapshot restore, `thaw run`,
//! `thaw bench coldstart`) and unmounted when dropped; the child gets the same store, cache and
//! peer options.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use thaw_fs::control::{self, ControlRequest, MountStatus};

use super::GlobalOptions;

/// A mounted tag, unmounted (its trace saved) on drop.
pub struct DaemonMount {
    dir: PathBuf,
    runtime_dir: PathBuf,
    mounted: bool,
}

impl DaemonMount {
    /// Mounts `tag` at `dir` (created) and returns once the mount answers.
    pub fn start(global: &GlobalOptions, tag: &str, dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(global, tag, dir, &[])
    }

    /// Like [`DaemonMount::start`], with more `thaw mount` options (`--no-prefetch`, ...).
    pub fn start_with(
        global: &GlobalOptions,
        tag: &str,
        dir: &Path,
        options: &[&str],
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let exe = std::env::current_exe().context("locating the thaw binary")?;
        let mut command = std::process::Command::new(&exe);
        global.pass_store_options(&mut command);
        let out = command
            .args(["mount", tag])
            .arg(dir)
            .arg("--daemon")
            .args(options)
            .output()
            .context("starting the mount")?;
        if !out.status.success() {
            bail!(
                "mounting {tag} at {}: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(DaemonMount {
            dir: dir.to_path_buf(),
            runtime_dir: global.runtime_dir(),
            mounted: true,
        })
    }

    /// The mount point.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The daemon's counters (chunks and bytes from the store and from peers so far).
    pub async fn status(&self) -> anyhow::Result<MountStatus> {
        let answer =
            control::request(&self.runtime_dir, &self.dir, &ControlRequest::Status).await?;
        match answer.status {
            Some(status) if answer.ok => Ok(status),
            _ => bail!("{}: no status: {}", self.dir.display(), answer.message),
        }
    }

    /// Unmounts and waits for the daemon to exit (its trace saved, its disk cache closed), so
    /// the next mount of the same cache starts from a settled state.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.status().await?.pid;
        let answer = control::request(
            &self.runtime_dir,
            &self.dir,
            &ControlRequest::Unmount { lazy: false },
        )
        .await?;
        if !answer.ok {
            bail!("unmounting {}: {}", self.dir.display(), answer.message);
        }
        self.mounted = false;
        if !thaw_sys::process::wait_gone(pid, Duration::from_secs(30)).await {
            bail!(
                "the mount daemon {pid} of {} did not exit",
                self.dir.display()
            );
        }
        Ok(())
    }
}

impl Drop for DaemonMount {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        if let Ok(exe) = std::env::current_exe() {
            let _ = std::process::Command::new(exe)
                .env("THAW_RUNTIME_DIR", &self.runtime_dir)
                .arg("umount")
                .arg(&self.dir)
                .output();
        }
    }
}
