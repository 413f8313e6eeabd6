//! Facts about this host that decide whether a snapshot can run here.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::criu::{Criu, Version};
use crate::{Result, SnapshotError};

/// What a dump depends on in the host that made it, checked against the host that restores it:
/// the CRIU version, the kernel and the CPU's feature flags.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    /// The CRIU that made it.
    pub criu_version: String,
    /// The kernel it ran on.
    pub kernel: String,
    /// The CPU flags of that host (a restored process may use any of them).
    pub cpu_flags: Vec<String>,
}

impl HostFacts {
    /// This host's facts, with `criu` the CRIU about to dump.
    pub fn capture(criu: &Criu) -> Result<Self> {
        Ok(HostFacts {
            criu_version: criu.version().to_string(),
            kernel: kernel_release()?,
            cpu_flags: cpu_flags()?.into_iter().collect(),
        })
    }

    /// Checks that a host with `criu` and CPU flags `host_flags` can restore snapshot `name`
    /// made on the host these facts describe: a criu at least as new, and every CPU feature
    /// the process may use.
    pub fn check(&self, name: &str, criu: &Criu, host_flags: &BTreeSet<String>) -> Result<()> {
        let refuse = |reason: String| SnapshotError::Incompatible {
            name: name.to_string(),
            reason,
        };
        let made_by: Version = self.criu_version.parse().map_err(|e: String| refuse(e))?;
        if (criu.version().major, criu.version().minor) < (made_by.major, made_by.minor) {
            return Err(refuse(format!(
                "it was dumped by criu {made_by} and this host has criu {}",
                criu.version()
            )));
        }
        let missing: Vec<&str> = self
            .cpu_flags
            .iter()
            .filter(|f| relevant(f) && !host_flags.contains(*f))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(refuse(format!(
                "this CPU lacks features the snapshot's host had: {}",
                missing.join(" ")
            )));
        }
        Ok(())
    }

    /// An error unless the recorded CRIU version parses (`origin` names the record).
    pub fn validate(&self, origin: &str) -> Result<()> {
        self.criu_version
            .parse::<Version>()
            .map(|_| ())
            .map_err(|e| SnapshotError::BadInfo {
                path: origin.to_string(),
                reason: format!("criu_version: {e}"),
            })
    }
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> Result<String> {
    thaw_sys::host::kernel_release().map_err(|e| SnapshotError::io("/proc/sys/kernel/osrelease", e))
}

/// The CPU feature flags of the first processor in /proc/cpuinfo.
pub fn cpu_flags() -> Result<BTreeSet<String>> {
    let path = "/proc/cpuinfo";
    let text = std::fs::read_to_string(path).map_err(|e| SnapshotError::io(path, e))?;
    Ok(parse_cpu_flags(&text))
}

/// The `flags` (x86) or `Features` (arm64) line of the first processor.
pub fn parse_cpu_flags(cpuinfo: &str) -> BTreeSet<String> {
    cpuinfo
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            matches!(key.trim(), "flags" | "Features").then_some(value)
        })
        .map(|flags| flags.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// CPU flags a restored process may rely on that are not about the virtual machine it runs in:
/// `hypervisor` and similar host-description flags differ between otherwise compatible hosts.
pub fn relevant(flag: &str) -> bool {
    !matches!(
        flag,
        "hypervisor"
            | "tsc_known_freq"
            | "rep_good"
            | "nopl"
            | "xtopology"
            | "cpuid"
            | "tsc_reliable"
    )
}

/// `root` and all its descendants (from /proc), root first, parents before children.
pub fn process_tree(root: u32) -> Result<Vec<u32>> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    let entries = std::fs::read_dir("/proc").map_err(|e| SnapshotError::io("/proc", e))?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes may exit while we look: skip them.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
        {
            parent_of.push((pid, ppid));
        }
    }
    if !std::path::Path::new(&format!("/proc/{root}")).exists() {
        return Err(SnapshotError::Process {
            pid: root,
            reason: "no such process".into(),
        });
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        let mut children: Vec<u32> = parent_of
            .iter()
            .filter(|(_, ppid)| *ppid == parent)
            .map(|(pid, _)| *pid)
            .collect();
        children.sort_unstable();
        tree.extend(children);
        i += 1;
    }
    Ok(tree)
}

/// Process `pid`'s pid inside its own (innermost) pid namespace: the last `NSpid` entry of
/// /proc/PID/status (the pid itself outside any nested namespace).
pub fn namespace_pid(pid: u32) -> Result<u32> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| SnapshotError::Process {
        pid,
        reason: format!("reading {path}: {e}"),
    })?;
    parse_namespace_pid(&status).ok_or_else(|| SnapshotError::Process {
        pid,
        reason: format!("{path} has no NSpid line"),
    })
}

fn parse_namespace_pid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// The host pids, in the tree rooted at host pid `root`, of the processes whose pids inside
/// their namespace are `inside` (a restored container's processes keep their pids inside it
/// but get new ones on the host); an error names any not found.
pub fn host_pids(root: u32, inside: &[u32]) -> Result<Vec<u32>> {
    let mut by_inside = std::collections::HashMap::new();
    for pid in process_tree(root)? {
        if let Ok(ns) = namespace_pid(pid) {
            by_inside.insert(ns, pid);
        }
    }
    inside
        .iter()
        .map(|ns| {
            by_inside
                .get(ns)
                .copied()
                .ok_or_else(|| SnapshotError::Process {
                    pid: root,
                    reason: format!("no process of its tree has pid {ns} in its namespace"),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_pids_are_the_last_nspid_entry() {
        assert_eq!(
            parse_namespace_pid("Name:\tx\nNSpid:\t4242\t7\t1\n"),
            Some(1)
        );
        assert_eq!(parse_namespace_pid("Name:\tx\n"), None);
        // Outside any nested namespace a process's pid is its own.
        let me = std::process::id();
        assert_eq!(namespace_pid(me).unwrap(), me);
        assert_eq!(host_pids(me, &[me]).unwrap(), vec![me]);
        let err = host_pids(me, &[u32::MAX - 3]).unwrap_err().to_string();
        assert!(err.contains(&(u32::MAX - 3).to_string()), "{err}");
    }

    #[test]
    fn flags_come_from_the_first_processor() {
        let text = "processor\t: 0\nflags\t\t: fpu sse2 avx2 hypervisor\n\nprocessor\t: 1\nflags\t\t: fpu\n";
        let flags = parse_cpu_flags(text);
        assert_eq!(flags.len(), 4);
        assert!(flags.contains("avx2"));
        assert!(!relevant("hypervisor") && relevant("avx2"));
        assert!(parse_cpu_flags("model name: x\n").is_empty());
    }

    #[test]
    fn a_process_tree_lists_the_root_then_its_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let tree = process_tree(std::process::id()).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(tree[0], std::process::id());
        assert!(tree.contains(&child.id()), "{tree:?}");
        assert!(process_tree(u32::MAX - 1)
            .unwrap_err()
            .to_string()
            .contains("no such process"));
    }

    #[test]
    fn this_host_has_a_kernel_and_flags() {
        assert!(!kernel_release().unwrap().is_empty());
        assert!(!cpu_flags().unwrap().is_empty());
    }
}
