//! Facts about the host read from /proc.

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> std::io::Result<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string())
}

/// Total memory in bytes (`MemTotal` of /proc/meminfo), if it can be read.
pub fn memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Writes dirty pages back and drops the kernel's page cache; false where not permitted.
pub fn drop_page_cache() -> bool {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// Keeps glibc from giving every chunk-sized buffer its own fresh mapping.
///
/// Chunks are 1 to 16 MiB; by default glibc serves each such allocation with a new mmap, so every
/// chunk read faults its pages in and has them zeroed by the kernel, and unmaps them when freed.
/// Serving them from the heap and keeping freed memory (up to 512 MiB) for reuse cut page faults
/// of a warm `thaw weights load` tenfold and raised its rate 1.6x (docs/benchmarks.md). Call it
/// first thing in `main`, before any thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

/// Does nothing where the allocator is not glibc's.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_host_has_a_kernel_and_memory() {
        assert!(!kernel_release().unwrap().is_empty());
        assert!(memory_bytes().unwrap() > 1 << 20);
    }
}
