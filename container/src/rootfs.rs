//! The root a container's process runs in: a writable overlay over the mounted (read-only)
//! image, and, for a process started without a runtime (chrooted, to be snapshotted by CRIU),
//! /proc and /dev mounted inside it. Everything comes off when dropped, innermost first.

use std::path::{Path, PathBuf};

use thaw_sys::mount::{self, MountStack};

use crate::ContainerError;

/// An overlay mount (writable upper over the image), unmounted on drop.
#[derive(Debug)]
pub struct Overlay {
    target: PathBuf,
}

impl Overlay {
    /// Mounts `lower` read-only under the writable `upper` at `target`; `work` is overlayfs's
    /// scratch directory. The three directories are created when missing.
    pub fn mount(
        lower: &Path,
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<Self, ContainerError> {
        mount::mount_overlay(lower, upper, work, target)?;
        Ok(Overlay {
            target: target.to_path_buf(),
        })
    }

    /// Mounts `lower` under `dir/upper` at `dir/rootfs` (scratch `dir/work`): the layout every
    /// container directory of thaw uses.
    pub fn in_dir(lower: &Path, dir: &Path) -> Result<Self, ContainerError> {
        Self::mount(
            lower,
            &dir.join("upper"),
            &dir.join("work"),
            &dir.join("rootfs"),
        )
    }

    /// Where the merged tree is mounted.
    pub fn dir(&self) -> &Path {
        &self.target
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = mount::unmount(&self.target, true);
    }
}

/// An overlay root with /proc and /dev (the host's, bound) mounted inside, for a process that
/// runs chrooted there in the host's namespaces. Fields drop in order: the inner mounts, then
/// the overlay.
#[derive(Debug)]
pub struct ChrootRoot {
    inner: MountStack,
    overlay: Overlay,
}

impl ChrootRoot {
    /// Mounts /proc and /dev inside `overlay`.
    pub fn over(overlay: Overlay) -> Result<Self, ContainerError> {
        let mut inner = MountStack::new();
        let rootfs = overlay.dir();
        let proc = rootfs.join("proc");
        mount::mount_proc(&proc)?;
        inner.push(&proc);
        let dev = rootfs.join("dev");
        mount::bind_recursive(Path::new("/dev"), &dev)?;
        inner.push(&dev);
        Ok(ChrootRoot { inner, overlay })
    }

    /// The root directory.
    pub fn dir(&self) -> &Path {
        self.overlay.dir()
    }

    /// Unmounts everything now (innermost first).
    pub fn unmount(self) {
        let ChrootRoot { inner, overlay } = self;
        drop(inner);
        drop(overlay);
    }
}
