//! Mounting and unmounting: overlayfs, proc, bind mounts, and an unmount that falls back to the
//! FUSE setuid helper for a user's own mounts.

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A mount or unmount that failed, naming its target.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The system call failed.
    #[error("{action} {target}: {source}{hint}")]
    Call {
        /// What was attempted ("mounting overlay at", "unmounting").
        action: String,
        /// The mount point.
        target: PathBuf,
        /// The error the kernel returned.
        source: std::io::Error,
        /// Advice for the common causes (busy, not root), or empty.
        hint: &'static str,
    },
    /// A path or option holds a NUL byte and cannot be passed to the kernel.
    #[error("{0}: holds a NUL byte")]
    Nul(String),
    /// The mount point could not be created.
    #[error("creating {path}: {source}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn c_string(text: &[u8], what: impl Fn() -> String) -> Result<CString, MountError> {
    CString::new(text).map_err(|_| MountError::Nul(what()))
}

fn c_path(path: &Path) -> Result<CString, MountError> {
    c_string(path.as_os_str().as_bytes(), || path.display().to_string())
}

fn create_dir(path: &Path) -> Result<(), MountError> {
    std::fs::create_dir_all(path).map_err(|source| MountError::Create {
        path: path.to_path_buf(),
        source,
    })
}

fn hint_for(error: &std::io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(libc::EBUSY) => " (files are open there; close them or unmount lazily)",
        Some(libc::EPERM) => " (needs root)",
        _ => "",
    }
}

/// One mount(2) call; `fstype` and `data` may be absent.
fn mount(
    source: &CStr,
    target: &Path,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
    action: &str,
) -> Result<(), MountError> {
    let target_c = c_path(target)?;
    // SAFETY: NUL-terminated strings that outlive the call; the data argument is a string or null.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target_c.as_ptr(),
            fstype.map_or(std::ptr::null(), CStr::as_ptr),
            flags,
            data.map_or(std::ptr::null(), |d| d.as_ptr() as *const libc::c_void),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let source = std::io::Error::last_os_error();
    Err(MountError::Call {
        action: action.to_string(),
        target: target.to_path_buf(),
        hint: hint_for(&source),
        source,
    })
}

/// Mounts an overlay of the read-only `lower` under the writable `upper` at `target`; `work` is
/// overlayfs's scratch directory. The three directories are created when missing.
pub fn mount_overlay(
    lower: &Path,
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), MountError> {
    for dir in [upper, work, target] {
        create_dir(dir)?;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let options = c_string(options.as_bytes(), || format!("overlay options {options}"))?;
    mount(
        c"overlay",
        target,
        Some(c"overlay"),
        0,
        Some(&options),
        "mounting a writable overlay at",
    )
}

/// Unmounts `target`: `lazy` detaches it even while files are open. Works on a FUSE mount whose
/// daemon died (the recovery for "Transport endpoint is not connected"). Without root, the FUSE
/// setuid helper (fusermount3, fusermount) is tried, which unmounts what this user mounted.
pub fn unmount(target: &Path, lazy: bool) -> Result<(), MountError> {
    let path = c_path(target)?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: `path` is a valid NUL-terminated string.
    if unsafe { libc::umount2(path.as_ptr(), flags) } == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EPERM) && fuse_helper_unmount(target, lazy) {
        return Ok(());
    }
    Err(MountError::Call {
        action: "unmounting".into(),
        target: target.to_path_buf(),
        hint: match error.raw_os_error() {
            Some(libc::EPERM) => "",
            _ => hint_for(&error),
        },
        source: error,
    })
}

/// Unmounts through the FUSE setuid helper; true when one succeeded.
fn fuse_helper_unmount(target: &Path, lazy: bool) -> bool {
    let mut args = vec!["-u"];
    if lazy {
        args.push("-z");
    }
    ["fusermount3", "fusermount"].iter().any(|helper| {
        std::process::Command::new(helper)
            .args(&args)
            .arg(target)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let err = unmount(dir.path(), false).unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        let err = unmount(Path::new("/tmp/a\0b"), false).unwrap_err();
        assert!(matches!(err, MountError::Nul(_)), "{err}");
    }

    #[test]
    fn an_overlay_writes_to_its_upper_layer_and_comes_off() {
        if !crate::host::is_root() {
            crate::skip::skipped("thaw-sys overlay mount", "mounting needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let lower = dir.path().join("lower");
        std::fs::create_dir_all(&lower).unwrap();
        std::fs::write(lower.join("file"), b"lower").unwrap();
        let merged = dir.path().join("merged");
        mount_overlay(
            &lower,
            &dir.path().join("upper"),
            &dir.path().join("work"),
            &merged,
        )
        .unwrap();
        std::fs::write(merged.join("file"), b"upper").unwrap();
        assert_eq!(std::fs::read(lower.join("file")).unwrap(), b"lower");
        unmount(&merged, true).unwrap();
        assert!(
            !merged.join("file").exists(),
            "the overlay is still mounted"
        );
        assert_eq!(
            std::fs::read(dir.path().join("upper/file")).unwrap(),
            b"upper"
        );
    }
}
