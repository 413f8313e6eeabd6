//! Running an image's process in a container, shared by `thaw run` and `thaw bench coldstart`:
//! finding the OCI runtime, the writable overlay over a mounted image, and the bundle (a runtime
//! spec next to a root filesystem).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The runtime binary: the one asked for, else crun, else runc (runc first on hosts with cgroup
/// v1 and v2 mounted side by side, which crun refuses).
pub fn find_runtime(asked: Option<&str>) -> anyhow::Result<PathBuf> {
    let hybrid_cgroups = Path::new("/sys/fs/cgroup/unified").is_dir();
    let candidates: Vec<&str> = match asked {
        Some(r) => vec![r],
        None if hybrid_cgroups => vec!["runc", "crun"],
        None => vec!["crun", "runc"],
    };
    for candidate in &candidates {
        if candidate.contains('/') {
            if Path::new(candidate).exists() {
                return Ok(candidate.into());
            }
        } else if let Some(path) = thaw_snapshot::criu::find_on_path(candidate) {
            return Ok(path);
        }
    }
    bail!(
        "no OCI runtime found ({}): install crun or runc",
        candidates.join(", ")
    )
}

/// An overlay mount (writable upper over the image), unmounted on drop.
pub struct Overlay {
    target: PathBuf,
}

impl Overlay {
    /// Mounts `lower` read-only under the writable `upper` at `target`; `work` is overlayfs's
    /// scratch directory. The three directories are created when missing.
    pub fn mount(lower: &Path, upper: &Path, work: &Path, target: &Path) -> anyhow::Result<Self> {
        for dir in [upper, work, target] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let options = CString::new(options).context("overlay options")?;
        let target_c =
            CString::new(target.as_os_str().as_bytes()).context("a path with a NUL byte")?;
        // SAFETY: valid NUL-terminated strings; no data pointer beyond the options string.
        let rc = unsafe {
            libc::mount(
                c"overlay".as_ptr(),
                target_c.as_ptr(),
                c"overlay".as_ptr(),
                0,
                options.as_ptr() as *const libc::c_void,
            )
        };
        if rc != 0 {
            bail!(
                "mounting a writable overlay at {}: {} (needs root)",
                target.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(Overlay {
            target: target.to_path_buf(),
        })
    }

    /// Where the merged tree is mounted.
    pub fn dir(&self) -> &Path {
        &self.target
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = thaw_fs::session::unmount(&self.target, true);
    }
}

/// Writes `spec` as `bundle/config.json` (creating `bundle`) and returns `bundle`.
pub fn write_bundle(bundle: &Path, spec: &serde_json::Value) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(bundle).with_context(|| format!("creating {}", bundle.display()))?;
    std::fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(spec)?)
        .with_context(|| format!("writing the runtime spec in {}", bundle.display()))?;
    Ok(bundle.to_path_buf())
}

/// The exit code a shell would report for `status`: the code, or 128 + the signal.
pub fn exit_code(status: &std::process::ExitStatus) -> u8 {
    match status.code() {
        Some(code) => code.clamp(0, 255) as u8,
        None => 128u8.saturating_add(
            std::os::unix::process::ExitStatusExt::signal(status).unwrap_or(0) as u8,
        ),
    }
}
