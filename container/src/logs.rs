//! The files a container's output goes to.

use std::path::{Path, PathBuf};

use crate::{io_error, ContainerError};

/// A process's standard output and error files.
#[derive(Clone, Debug)]
pub struct RunLogs {
    /// The command's standard output.
    pub stdout: PathBuf,
    /// The command's standard error (and the runtime's).
    pub stderr: PathBuf,
}

impl RunLogs {
    /// `stdout` and `stderr` files in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        RunLogs {
            stdout: dir.join("stdout"),
            stderr: dir.join("stderr"),
        }
    }

    /// Creates (truncates) both files and returns them open for a child's output.
    pub fn create(&self) -> Result<(std::fs::File, std::fs::File), ContainerError> {
        let open = |path: &Path| std::fs::File::create(path).map_err(io_error(path));
        Ok((open(&self.stdout)?, open(&self.stderr)?))
    }

    /// The start of the command's output (at most 4 KiB, lossy UTF-8).
    pub fn output(&self) -> String {
        let mut text = std::fs::read(&self.stdout).unwrap_or_default();
        text.truncate(4096);
        String::from_utf8_lossy(&text).into_owned()
    }

    /// The end of its error output (at most 2000 bytes), for error messages.
    pub fn error_tail(&self) -> String {
        let text = std::fs::read(&self.stderr).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        String::from_utf8_lossy(&text[start..]).trim().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_the_head_and_errors_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let logs = RunLogs::in_dir(dir.path());
        logs.create().unwrap();
        std::fs::write(&logs.stdout, "x".repeat(5000)).unwrap();
        std::fs::write(&logs.stderr, format!("{}end\n", "y".repeat(3000))).unwrap();
        assert_eq!(logs.output().len(), 4096);
        let tail = logs.error_tail();
        assert!(
            tail.ends_with("end") && tail.len() == 1999,
            "{}",
            tail.len()
        );
    }
}
