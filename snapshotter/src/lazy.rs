//! The lazy mounts behind remote snapshots. Each is a `thaw mount MANIFEST DIR --daemon`: a
//! daemon of its own session, so it keeps serving the containers whose overlays sit on it while
//! the snapshotter restarts, is upgraded or is killed. A restarted snapshotter finds its mounts
//! through their control sockets and mounts again only what no daemon answers for (a stale
//! mount left by a daemon that died is unmounted first).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use thaw_core::ChunkId;
use thaw_fs::daemon::{self, DaemonMount};

use crate::Result;

/// Makes a command that runs the thaw program with the node's configuration.
pub type ThawCommand = Arc<dyn Fn() -> std::process::Command + Send + Sync>;

/// Starts and stops the lazy mounts.
#[derive(Clone)]
pub struct LazyMounts {
    thaw: ThawCommand,
    runtime_dir: PathBuf,
    options: Vec<String>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for LazyMounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyMounts")
            .field("runtime_dir", &self.runtime_dir)
            .field("options", &self.options)
            .finish()
    }
}

impl LazyMounts {
    /// Mounts with `thaw` (its control sockets under `runtime_dir`), passing `options` to each
    /// `thaw mount`.
    pub fn new(thaw: ThawCommand, runtime_dir: &Path, options: Vec<String>) -> Self {
        LazyMounts {
            thaw,
            runtime_dir: runtime_dir.to_path_buf(),
            options,
            lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Whether a daemon answers for the mount at `dir`.
    pub async fn is_mounted(&self, dir: &Path) -> bool {
        daemon::status(&self.runtime_dir, dir).await.is_ok()
    }

    /// Makes sure `manifest` is mounted at `dir`.
    pub async fn ensure(&self, manifest: &ChunkId, dir: &Path) -> Result<()> {
        let _one_at_a_time = self.lock.lock().await;
        if self.is_mounted(dir).await {
            return Ok(());
        }
        // A daemon that died leaves its mount point answering ENOTCONN.
        let _ = thaw_sys::mount::unmount(dir, true);
        let (thaw, runtime_dir, options) = (
            (self.thaw)(),
            self.runtime_dir.clone(),
            self.options.clone(),
        );
        let (tag, target) = (manifest.to_hex(), dir.to_path_buf());
        tokio::task::spawn_blocking(move || {
            let options: Vec<&str> = options.iter().map(String::as_str).collect();
            DaemonMount::start(thaw, &runtime_dir, &tag, &target, &options).map(DaemonMount::detach)
        })
        .await
        .expect("the mount task does not panic")?;
        tracing::info!(manifest = %manifest, dir = %dir.display(), "lazy layer mounted");
        Ok(())
    }

    /// Ends the mount at `dir` (lazily: a container still reading keeps its files until it
    /// lets go); nothing when nothing is mounted there.
    pub async fn release(&self, dir: &Path) -> Result<()> {
        let _one_at_a_time = self.lock.lock().await;
        if self.is_mounted(dir).await {
            daemon::unmount(&self.runtime_dir, dir, true).await?;
        } else {
            let _ = thaw_sys::mount::unmount(dir, true);
        }
        let _ = std::fs::remove_dir(dir);
        Ok(())
    }
}
