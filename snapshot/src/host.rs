//! Facts about this host that decide whether a snapshot can run here.

use std::collections::BTreeSet;

use crate::{Result, SnapshotError};

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> Result<String> {
    let path = "/proc/sys/kernel/osrelease";
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| SnapshotError::io(path, e))
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
    fn this_host_has_a_kernel_and_flags() {
        assert!(!kernel_release().unwrap().is_empty());
        assert!(!cpu_flags().unwrap().is_empty());
    }
}
