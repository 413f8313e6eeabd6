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

/// Hands memory the allocator keeps for reuse back to the kernel (glibc's `malloc_trim`).
///
/// [`tune_allocator`] has glibc keep up to 512 MiB of freed chunk buffers per arena, which a
/// burst of reads fills; a long-running daemon calls this once it goes idle, so what it holds
/// between bursts is what it uses.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_free_memory() {
    // SAFETY: malloc_trim only returns free pages of the heap to the kernel.
    unsafe { libc::malloc_trim(0) };
}

/// Does nothing where the allocator is not glibc's.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}

/// How long a daemon's work pauses before [`release_memory_when_idle`] gives memory back.
pub const IDLE_RELEASE: std::time::Duration = std::time::Duration::from_secs(2);

/// Calls [`release_free_memory`] each time `activity` (a count of work done: reads, requests)
/// stops changing for [`IDLE_RELEASE`], once per quiet spell. Runs until the task is dropped.
pub async fn release_memory_when_idle(activity: impl Fn() -> u64) {
    on_each_quiet_spell(activity, IDLE_RELEASE, release_free_memory).await
}

/// Calls `then` once each time `activity` has not changed for `quiet`.
async fn on_each_quiet_spell(
    activity: impl Fn() -> u64,
    quiet: std::time::Duration,
    then: impl Fn(),
) {
    let mut last = activity();
    let mut done = true;
    loop {
        tokio::time::sleep(quiet).await;
        let now = activity();
        if now != last {
            (last, done) = (now, false);
        } else if !done {
            then();
            done = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn memory_is_released_once_per_quiet_spell_and_never_while_busy() {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        let work = Arc::new(AtomicU64::new(0));
        let released = Arc::new(AtomicU64::new(0));
        let (seen, count) = (work.clone(), released.clone());
        let quiet = std::time::Duration::from_secs(2);
        let task = tokio::spawn(async move {
            on_each_quiet_spell(
                move || seen.load(Ordering::Relaxed),
                quiet,
                move || {
                    count.fetch_add(1, Ordering::Relaxed);
                },
            )
            .await
        });
        let busy = |ticks: u32| {
            let work = work.clone();
            async move {
                for _ in 0..ticks {
                    work.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(quiet / 2).await;
                }
            }
        };
        tokio::time::sleep(quiet * 3).await;
        assert_eq!(released.load(Ordering::Relaxed), 0, "nothing was done yet");
        busy(10).await;
        assert_eq!(released.load(Ordering::Relaxed), 0, "released while busy");
        tokio::time::sleep(quiet * 5).await;
        assert_eq!(released.load(Ordering::Relaxed), 1, "once per quiet spell");
        busy(4).await;
        tokio::time::sleep(quiet * 5).await;
        assert_eq!(released.load(Ordering::Relaxed), 2, "again after more work");
        task.abort();
    }

    #[test]
    fn this_host_has_a_kernel_and_memory() {
        assert!(!kernel_release().unwrap().is_empty());
        assert!(memory_bytes().unwrap() > 1 << 20);
    }
}
