//! The snapshot record: what a restore needs to know, written as `thaw-snapshot.json` beside the
//! CRIU images (so it travels in the same manifest), and the host check made before a restore.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::criu::Criu;
use crate::host::HostFacts;
use crate::{Result, SnapshotError};

/// Name of the record inside the image folder.
pub const INFO_FILE: &str = "thaw-snapshot.json";
/// Format tag of the record.
pub const INFO_FORMAT: &str = "thaw-snapshot/1";

/// What was snapshotted and on what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// [`INFO_FORMAT`].
    pub format: String,
    /// The dumped tree's root pid (a restore brings the same pids back).
    pub pid: u32,
    /// When the dump finished, seconds since the epoch.
    pub created_unix: u64,
    /// The CRIU, kernel and CPU flags of the host that made it.
    #[serde(flatten)]
    pub host: HostFacts,
    /// The process's executable: it must exist at the same path to restore.
    pub exe: PathBuf,
    /// Its working directory, likewise.
    pub cwd: PathBuf,
    /// Its command line.
    pub cmdline: Vec<String>,
    /// Whether the process kept running after the dump.
    pub leave_running: bool,
    /// Whether established TCP connections were dumped (restoring needs their addresses).
    pub tcp_established: bool,
    /// Whether it was a shell job (had a controlling terminal).
    pub shell_job: bool,
    /// Whether the file locks the tree held were dumped (a restore then takes them again).
    #[serde(default)]
    pub file_locks: bool,
    /// The thaw mount the executable ran from (a lazily mounted image), when it did.
    #[serde(default)]
    pub rootfs: Option<RootfsMount>,
    /// Processes of the tree whose CUDA state was checkpointed into host memory before the dump
    /// (restored and unlocked after a restore); empty for CPU-only processes.
    #[serde(default)]
    pub cuda_pids: Vec<u32>,
}

/// A `thaw mount` a snapshotted process ran from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsMount {
    /// The tag or manifest it mounted.
    pub tag: String,
    /// Where.
    pub mountpoint: PathBuf,
}

/// The thaw mount (source `thaw:TAG` in the mount table `mounts`) holding `path`, if any.
fn thaw_mount_of(mounts: &str, path: &Path) -> Option<RootfsMount> {
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (source, mountpoint) = (fields.next()?, fields.next()?);
            // /proc/mounts escapes spaces and other odd bytes as octal.
            let mountpoint = PathBuf::from(mountpoint.replace("\\040", " "));
            path.starts_with(&mountpoint)
                .then_some((source, mountpoint))
        })
        .max_by_key(|(_, mountpoint)| mountpoint.as_os_str().len())
        .and_then(|(source, mountpoint)| {
            source.strip_prefix("thaw:").map(|tag| RootfsMount {
                tag: tag.to_string(),
                mountpoint,
            })
        })
}

/// One row of `thaw snapshot ls`: a stored snapshot and what its record says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    /// The snapshot's name.
    pub name: String,
    /// The manifest its images are stored as (hex).
    pub manifest: String,
    /// The pid it was taken of.
    pub pid: u32,
    /// When it was taken (seconds since the epoch).
    pub created_unix: u64,
    /// The executable.
    pub exe: PathBuf,
    /// The command line, space-joined.
    pub cmdline: String,
    /// Bytes of its images.
    pub bytes: u64,
    /// The criu version that took it.
    pub criu: String,
    /// For a container snapshot, the image the container ran (its pid is then 0: a restore
    /// gives it a new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl SnapshotSummary {
    /// The row of snapshot `name`, stored as `manifest` holding `bytes`, with record `info`.
    pub fn new(name: &str, manifest: String, bytes: u64, info: &SnapshotInfo) -> Self {
        SnapshotSummary {
            name: name.to_string(),
            manifest,
            pid: info.pid,
            created_unix: info.created_unix,
            exe: info.exe.clone(),
            cmdline: info.cmdline.join(" "),
            bytes,
            criu: info.host.criu_version.clone(),
            image: None,
        }
    }
}

impl SnapshotInfo {
    /// Describes process `pid` on this host, before it is dumped by `criu`; `cuda_pids` are the
    /// processes of its tree that use CUDA.
    pub fn capture(
        pid: u32,
        criu: &Criu,
        leave_running: bool,
        tcp_established: bool,
        file_locks: bool,
        cuda_pids: Vec<u32>,
    ) -> Result<Self> {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let gone = |reason: String| SnapshotError::Process { pid, reason };
        let link = |name: &str| {
            std::fs::read_link(proc_dir.join(name)).map_err(|e| {
                gone(format!(
                    "reading /proc/{pid}/{name}: {e} (does it exist, and are we root?)"
                ))
            })
        };
        let exe = link("exe")?;
        let cwd = link("cwd")?;
        let cmdline = std::fs::read(proc_dir.join("cmdline"))
            .map_err(|e| gone(format!("reading its command line: {e}")))?
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let stat = std::fs::read_to_string(proc_dir.join("stat"))
            .map_err(|e| gone(format!("reading its stat: {e}")))?;
        let rootfs = std::fs::read_to_string(proc_dir.join("mounts"))
            .ok()
            .and_then(|mounts| thaw_mount_of(&mounts, &exe));
        Ok(SnapshotInfo {
            format: INFO_FORMAT.into(),
            pid,
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
            host: HostFacts::capture(criu)?,
            exe,
            cwd,
            cmdline,
            leave_running,
            tcp_established,
            shell_job: has_controlling_terminal(&stat),
            file_locks,
            rootfs,
            cuda_pids,
        })
    }

    /// Writes the record into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(INFO_FILE);
        let text = serde_json::to_string_pretty(self).expect("the record serialises");
        std::fs::write(&path, text).map_err(|e| SnapshotError::io(&path, e))
    }

    /// Parses a record read from `origin` (for errors).
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Self> {
        let bad = |reason: String| SnapshotError::BadInfo {
            path: origin.to_string(),
            reason,
        };
        let info: SnapshotInfo = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if info.format != INFO_FORMAT {
            return Err(bad(format!(
                "format {:?}, this thaw reads {INFO_FORMAT:?}",
                info.format
            )));
        }
        info.host.validate(origin)?;
        Ok(info)
    }

    /// Checks that this host can restore the snapshot `name`: a criu at least as new as the one
    /// that dumped it, every CPU feature the process may use, and its executable and working
    /// directory present.
    pub fn check_host(&self, name: &str, criu: &Criu, host_flags: &BTreeSet<String>) -> Result<()> {
        self.host.check(name, criu, host_flags)?;
        let refuse = |reason: String| SnapshotError::Incompatible {
            name: name.to_string(),
            reason,
        };
        for (what, path) in [("executable", &self.exe), ("working directory", &self.cwd)] {
            if !path.exists() {
                let hint = match &self.rootfs {
                    Some(m) => format!(
                        "it ran from a thaw mount: `thaw mount {} {}` first",
                        m.tag,
                        m.mountpoint.display()
                    ),
                    None => "restore on the same image or rootfs".into(),
                };
                return Err(refuse(format!(
                    "its {what} {} is absent here ({hint})",
                    path.display()
                )));
            }
        }
        Ok(())
    }
}

/// True when field 7 of /proc/PID/stat (`tty_nr`) is not 0.
fn has_controlling_terminal(stat: &str) -> bool {
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(4))
        .and_then(|tty| tty.parse::<i64>().ok())
        .is_some_and(|tty| tty != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot record comes from the store: a mutated one is an error, never a panic.
    #[test]
    fn fuzz_snapshot_records() {
        let json = serde_json::to_vec(&sample()).unwrap();
        let cases = thaw_core::fuzz::cases(3000);
        thaw_core::fuzz::run("snapshot record", &[json], cases, |input| {
            let _ = SnapshotInfo::parse(input, "fuzz");
        });
    }

    fn sample() -> SnapshotInfo {
        SnapshotInfo {
            format: INFO_FORMAT.into(),
            pid: 42,
            created_unix: 1,
            host: HostFacts {
                criu_version: "4.1.1".into(),
                kernel: "6.18".into(),
                cpu_flags: vec!["fpu".into(), "avx2".into(), "hypervisor".into()],
            },
            exe: "/bin/sh".into(),
            cwd: "/".into(),
            cmdline: vec!["sh".into()],
            leave_running: false,
            tcp_established: false,
            shell_job: false,
            file_locks: false,
            rootfs: None,
            cuda_pids: Vec::new(),
        }
    }

    fn criu(version: &str) -> Criu {
        Criu::for_tests(version.parse().unwrap())
    }

    #[test]
    fn records_round_trip_and_bad_ones_name_the_problem() {
        let info = sample();
        let bytes = serde_json::to_vec(&info).unwrap();
        assert_eq!(SnapshotInfo::parse(&bytes, "x").unwrap(), info);
        let mut other = info.clone();
        other.format = "thaw-snapshot/9".into();
        let err = SnapshotInfo::parse(&serde_json::to_vec(&other).unwrap(), "snap:x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("snap:x") && err.contains("thaw-snapshot/9"),
            "{err}"
        );
        assert!(SnapshotInfo::parse(b"{", "y").is_err());
    }

    #[test]
    fn the_host_check_names_what_is_missing() {
        let info = sample();
        let flags: BTreeSet<String> = ["fpu", "avx2"].into_iter().map(String::from).collect();
        info.check_host("s", &criu("4.1.1"), &flags).unwrap();
        let err = info
            .check_host("s", &criu("4.1.1"), &["fpu".to_string()].into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("avx2") && !err.contains("hypervisor"), "{err}");
        let mut newer = info.clone();
        newer.host.criu_version = "4.2".into();
        let err = newer
            .check_host("s", &criu("4.1.1"), &flags)
            .unwrap_err()
            .to_string();
        assert!(err.contains("criu 4.2"), "{err}");
        let mut elsewhere = info;
        elsewhere.exe = "/nonexistent/python".into();
        let err = elsewhere
            .check_host("s", &criu("4.1.1"), &flags)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent/python") && err.contains("absent"),
            "{err}"
        );
    }

    #[test]
    fn the_thaw_mount_holding_the_executable_is_recorded_and_named_when_absent() {
        let mounts = "/dev/vda / ext4 rw 0 0\n\
                      thaw:llama /srv/image fuse rw 0 0\n\
                      thaw:other /srv/image/opt fuse rw 0 0\n";
        let found = thaw_mount_of(mounts, Path::new("/srv/image/usr/bin/python3")).unwrap();
        assert_eq!(
            (found.tag.as_str(), found.mountpoint.as_path()),
            ("llama", Path::new("/srv/image"))
        );
        assert_eq!(
            thaw_mount_of(mounts, Path::new("/srv/image/opt/x"))
                .unwrap()
                .tag,
            "other"
        );
        assert!(thaw_mount_of(mounts, Path::new("/usr/bin/python3")).is_none());

        let mut info = sample();
        info.exe = "/srv/image/usr/bin/python3".into();
        info.rootfs = Some(found);
        let flags: BTreeSet<String> = ["fpu", "avx2"].into_iter().map(String::from).collect();
        let err = info
            .check_host("s", &criu("4.1.1"), &flags)
            .unwrap_err()
            .to_string();
        assert!(err.contains("thaw mount llama /srv/image"), "{err}");
    }

    #[test]
    fn controlling_terminals_are_read_from_stat() {
        assert!(!has_controlling_terminal(
            "12 (py (x)) S 1 12 12 0 -1 4194560"
        ));
        assert!(has_controlling_terminal(
            "12 (bash) S 1 12 12 34816 12 4194560"
        ));
    }
}
