//! The `criu` binary: where it is, its version, and the dump and restore runs thaw makes.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Result, SnapshotError};

/// Oldest CRIU thaw runs: 4.1 fixed restoring on current kernels ("Unexpected rt vDSO area
/// bounds" in 3.x).
pub const MIN_VERSION: Version = Version {
    major: 4,
    minor: 1,
    patch: 0,
};

/// A CRIU version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch (0 when not given).
    pub patch: u32,
}

impl std::str::FromStr for Version {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut parts = text.trim().split('.');
        let mut next = |name: &str, required: bool| -> Result<u32, String> {
            match parts.next() {
                Some(p) => p
                    .parse()
                    .map_err(|_| format!("{name} {p:?} in version {text:?} is not a number")),
                None if required => Err(format!("version {text:?} has no {name} number")),
                None => Ok(0),
            }
        };
        Ok(Version {
            major: next("major", true)?,
            minor: next("minor", true)?,
            patch: next("patch", false)?,
        })
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What to dump and how.
#[derive(Clone, Debug)]
pub struct DumpRequest {
    /// The root of the process tree.
    pub pid: u32,
    /// Where the images go (created empty).
    pub images: PathBuf,
    /// Where the log goes.
    pub work_dir: PathBuf,
    /// Keep the process running after the dump (else CRIU kills it).
    pub leave_running: bool,
    /// Dump established TCP connections (restoring them needs the same addresses).
    pub tcp_established: bool,
    /// The process has a controlling terminal (a shell job).
    pub shell_job: bool,
    /// Dump the file locks the tree holds (only safe when no process outside it shares them).
    pub file_locks: bool,
}

/// What to restore and how.
#[derive(Clone, Debug)]
pub struct RestoreRequest {
    /// The images (may be a read-only lazy mount).
    pub images: PathBuf,
    /// Where the log and the pid file go.
    pub work_dir: PathBuf,
    /// The snapshot holds established TCP connections.
    pub tcp_established: bool,
    /// The snapshot is of a shell job.
    pub shell_job: bool,
    /// The snapshot holds file locks to take again.
    pub file_locks: bool,
}

/// A located, version-checked criu binary.
#[derive(Clone, Debug)]
pub struct Criu {
    path: PathBuf,
    version: Version,
}

/// Environment variable naming the criu binary to use.
pub const CRIU_ENV: &str = "THAW_CRIU";

impl Criu {
    /// `$THAW_CRIU`, else `criu` on PATH or in the sbin directories; refuses one older than
    /// [`MIN_VERSION`].
    pub fn locate() -> Result<Self> {
        let path = match std::env::var_os(CRIU_ENV) {
            Some(path) => PathBuf::from(path),
            None => thaw_sys::which("criu").ok_or_else(|| {
                SnapshotError::CriuMissing(
                    "no criu on PATH or in /usr/local/sbin, /usr/sbin".into(),
                )
            })?,
        };
        let out = Command::new(&path)
            .arg("--version")
            .output()
            .map_err(|e| SnapshotError::CriuMissing(format!("{}: {e}", path.display())))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = text
            .lines()
            .find_map(|l| l.strip_prefix("Version:"))
            .ok_or_else(|| {
                SnapshotError::CriuMissing(format!(
                    "{} --version said {:?}",
                    path.display(),
                    text.trim()
                ))
            })?
            .parse::<Version>()
            .map_err(SnapshotError::CriuMissing)?;
        if version < MIN_VERSION {
            return Err(SnapshotError::CriuTooOld {
                found: version.to_string(),
                reason: format!("thaw needs criu >= {MIN_VERSION} ({})", path.display()),
            });
        }
        Ok(Criu { path, version })
    }

    /// A criu value of a given version, for tests of version checks.
    #[cfg(test)]
    pub(crate) fn for_tests(version: Version) -> Self {
        Criu {
            path: "criu".into(),
            version,
        }
    }

    /// Its version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Dumps the process tree of `request.pid` into `request.images`.
    pub fn dump(&self, request: &DumpRequest) -> Result<()> {
        std::fs::create_dir_all(&request.images)
            .map_err(|e| SnapshotError::io(&request.images, e))?;
        let mut command = self.command("dump", &request.work_dir);
        command
            .arg("--tree")
            .arg(request.pid.to_string())
            .arg("--images-dir")
            .arg(&request.images);
        flag(&mut command, request.leave_running, "--leave-running");
        flag(&mut command, request.tcp_established, "--tcp-established");
        flag(&mut command, request.shell_job, "--shell-job");
        flag(&mut command, request.file_locks, "--file-locks");
        self.run("dump", command, &request.work_dir)
    }

    /// Restores the images detached; returns the pid of the restored tree's root.
    pub fn restore(&self, request: &RestoreRequest) -> Result<u32> {
        let pid_file = request.work_dir.join("restored.pid");
        let _ = std::fs::remove_file(&pid_file);
        let mut command = self.command("restore", &request.work_dir);
        command
            .arg("--images-dir")
            .arg(&request.images)
            .arg("--restore-detached")
            .arg("--pidfile")
            .arg(&pid_file);
        flag(&mut command, request.tcp_established, "--tcp-established");
        flag(&mut command, request.shell_job, "--shell-job");
        flag(&mut command, request.file_locks, "--file-locks");
        self.run("restore", command, &request.work_dir)?;
        let text =
            std::fs::read_to_string(&pid_file).map_err(|e| SnapshotError::io(&pid_file, e))?;
        text.trim().parse().map_err(|_| SnapshotError::CriuFailed {
            action: "restore",
            status: "exit 0".into(),
            log_path: pid_file.clone(),
            log: format!("the pid file holds {text:?}"),
        })
    }

    /// `criu ACTION --work-dir DIR --log-file ACTION.log -v4`.
    fn command(&self, action: &str, work_dir: &Path) -> Command {
        let mut command = Command::new(&self.path);
        command
            .arg(action)
            .arg("--work-dir")
            .arg(work_dir)
            .arg("--log-file")
            .arg(format!("{action}.log"))
            .arg("-v4")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        command
    }

    fn run(&self, action: &'static str, mut command: Command, work_dir: &Path) -> Result<()> {
        std::fs::create_dir_all(work_dir).map_err(|e| SnapshotError::io(work_dir, e))?;
        tracing::debug!(?command, "running criu");
        let out = command
            .output()
            .map_err(|e| SnapshotError::CriuMissing(format!("{}: {e}", self.path.display())))?;
        if out.status.success() {
            return Ok(());
        }
        let log_path = work_dir.join(format!("{action}.log"));
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let shown = thaw_sys::process::log_errors(&log, 15);
        Err(SnapshotError::CriuFailed {
            action,
            status: out.status.to_string(),
            log_path,
            log: format!("{shown}{}", String::from_utf8_lossy(&out.stderr)),
        })
    }
}

fn flag(command: &mut Command, on: bool, name: &str) {
    if on {
        command.arg(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order() {
        let v: Version = "4.1.1".parse().unwrap();
        assert_eq!(v.to_string(), "4.1.1");
        assert!(v >= MIN_VERSION);
        assert!("3.17".parse::<Version>().unwrap() < MIN_VERSION);
        assert!("4".parse::<Version>().unwrap_err().contains("minor"));
        assert!("4.x".parse::<Version>().unwrap_err().contains("\"x\""));
    }

    #[test]
    fn a_missing_criu_is_a_clear_error() {
        // A path that is not criu: the error names it.
        let err = Criu {
            path: "/nonexistent/criu".into(),
            version: MIN_VERSION,
        }
        .dump(&DumpRequest {
            pid: 1,
            images: std::env::temp_dir().join("thaw-criu-test-images"),
            work_dir: std::env::temp_dir().join("thaw-criu-test-work"),
            leave_running: true,
            tcp_established: false,
            shell_job: false,
            file_locks: false,
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/criu"), "{err}");
    }
}
