//! thaw-container: running an indexed image's process. It owns the runtime spec built from the
//! image config ([`image`], [`spec`]), finding and driving the OCI runtime (crun or runc:
//! [`runtime`]), a container as a foreground handle the runtime can checkpoint and restore with
//! CRIU ([`checkpoint`]), the root a container runs in (a writable overlay over the mounted
//! image: [`rootfs`]), and one readiness poll (exit, file or URL: [`readiness`]).
//!
//! It does not mount images (thaw-fs does; the binary hands this crate the mounted directory)
//! and does not read the store beyond the manifest it is given.
//!
//! ```no_run
//! # async fn example(manifest: &thaw_core::manifest::Manifest) -> Result<(), thaw_container::ContainerError> {
//! use std::path::Path;
//! use thaw_container::{image::ImageRuntime, runtime::Runtime, spec};
//! let image = ImageRuntime::of_manifest("python", manifest)?;
//! let rootfs = Path::new("/run/thaw/containers/x/rootfs");
//! let spec = spec::runtime_spec(&image.args(&[], None), &image.environment(&[]), "/", (0, 0), rootfs, "thaw");
//! let bundle = spec::write_bundle(Path::new("/run/thaw/containers/x/bundle"), &spec)?;
//! let status = Runtime::find(None)?.run(&bundle, "x").await?;
//! # Ok(()) }
//! ```

pub mod checkpoint;
pub mod image;
pub mod logs;
pub mod readiness;
pub mod rootfs;
pub mod runtime;
pub mod spec;

use std::path::{Path, PathBuf};

/// What went wrong running a container.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The image (or its config) cannot be run as asked.
    #[error("{image}: {reason}")]
    Image {
        /// The image's name, or its root directory.
        image: String,
        /// Why.
        reason: String,
    },
    /// No OCI runtime was found.
    #[error("no OCI runtime found ({0}): install crun or runc")]
    NoRuntime(String),
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A program could not be started or waited for.
    #[error("running {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// A mount or unmount failed.
    #[error(transparent)]
    Mount(#[from] thaw_sys::MountError),
    /// The runtime's checkpoint or restore failed.
    #[error("{action} of container {id} failed: {output}")]
    Checkpoint {
        /// `checkpoint` or `restore`.
        action: &'static str,
        /// The container.
        id: String,
        /// The runtime's error output and the end of CRIU's log.
        output: String,
    },
    /// The process ended before it was ready.
    #[error("{what} {ended} before it was ready ({readiness}): {output}")]
    EndedBeforeReady {
        /// The process ("the command", "the restored process 42").
        what: String,
        /// How it ended ("exited with status 1").
        ended: String,
        /// The readiness condition, in words.
        readiness: String,
        /// The end of its error output.
        output: String,
    },
    /// The process was not ready in time.
    #[error("{what} was not ready after {seconds}s ({readiness}); its error output: {output}")]
    NotReady {
        /// The process.
        what: String,
        /// The limit.
        seconds: u64,
        /// The readiness condition, in words.
        readiness: String,
        /// The end of its error output.
        output: String,
    },
}

/// A `map_err` adapter for I/O errors on `path`.
pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ContainerError + '_ {
    move |source| ContainerError::Io {
        path: path.to_path_buf(),
        source,
    }
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
