//! A `thaw mount --daemon` started by another command (a lazy snapshot restore, `thaw run`) and
//! unmounted when dropped; the child gets the same store, cache and peer options.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::GlobalOptions;

/// A mounted tag, unmounted (its trace saved) on drop.
pub struct DaemonMount {
    dir: PathBuf,
}

impl DaemonMount {
    /// Mounts `tag` at `dir` (created) and returns once the mount answers.
    pub fn start(global: &GlobalOptions, tag: &str, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let exe = std::env::current_exe().context("locating the thaw binary")?;
        let mut command = std::process::Command::new(&exe);
        global.pass_store_options(&mut command);
        let out = command
            .args(["mount", tag])
            .arg(dir)
            .arg("--daemon")
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
        })
    }

    /// The mount point.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for DaemonMount {
    fn drop(&mut self) {
        if let Ok(exe) = std::env::current_exe() {
            let _ = std::process::Command::new(exe)
                .arg("umount")
                .arg(&self.dir)
                .output();
        }
    }
}
