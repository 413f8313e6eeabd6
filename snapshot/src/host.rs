//! Facts about this host that decide whether a snapshot can run here.

use std::collections::BTreeSet;

use crate::{Result, SnapshotError};

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

#[cfg(test)]
mod tests {
    use super::*;

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
