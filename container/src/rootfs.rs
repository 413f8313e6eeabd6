//! The root a container's process runs in: a writable overlay over the mounted (read-only)
//! image, unmounted when dropped.

use std::path::{Path, PathBuf};

use thaw_sys::mount;

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
