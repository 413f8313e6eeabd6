//! `thaw mount --supervise`: readers keep reading right bytes while the mount is handed to new
//! workers (`thaw mount handoff`) and while its workers are killed with SIGKILL.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

/// Reader threads that loop over a mounted tree until told to stop, checking every byte.
struct Readers {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    /// Failed reads, and the first few of them.
    failures: Arc<Mutex<(u64, Vec<String>)>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Readers {
    /// Starts two readers that open, drop the page cache of and read every file each pass, and
    /// one that holds every file open for the whole run and reads it again with pread (its
    /// opens predate every handoff).
    fn start(mount: &Path, expected: BTreeMap<PathBuf, Vec<u8>>) -> Readers {
        let expected = Arc::new(expected);
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new((0, Vec::new())));
        let mut threads = Vec::new();
        for reader in 0..3 {
            let (mount, expected) = (mount.to_path_buf(), expected.clone());
            let (stop, reads, failures) = (stop.clone(), reads.clone(), failures.clone());
            threads.push(std::thread::spawn(move || {
                let held: Option<Vec<(PathBuf, fs::File)>> = (reader == 2).then(|| {
                    expected
                        .keys()
                        .map(|rel| (rel.clone(), fs::File::open(mount.join(rel)).unwrap()))
                        .collect()
                });
                while !stop.load(Ordering::Acquire) {
                    for (rel, want) in expected.iter() {
                        let got = match &held {
                            Some(files) => {
                                let file = &files.iter().find(|(r, _)| r == rel).unwrap().1;
                                read_uncached(file, want.len())
                            }
                            None => fs::File::open(mount.join(rel))
                                .and_then(|file| read_uncached(&file, want.len())),
                        };
                        reads.fetch_add(1, Ordering::Relaxed);
                        let failure = match got {
                            Ok(bytes) if bytes == *want => continue,
                            Ok(bytes) => format!("{}: {} wrong bytes", rel.display(), bytes.len()),
                            Err(e) => format!("{}: {e}", rel.display()),
                        };
                        let mut failures = failures.lock().unwrap();
                        failures.0 += 1;
                        if failures.1.len() < 20 {
                            failures.1.push(failure);
                        }
                    }
                }
            }));
        }
        Readers {
            stop,
            reads,
            failures,
            threads,
        }
    }

    /// Reads done so far.
    fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Waits until the readers have done `more` reads beyond now (they are not stuck).
    fn wait_for_reads(&self, more: u64) {
        let target = self.reads() + more;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.reads() < target {
            let failures = self.failures.lock().unwrap().clone();
            assert_eq!(failures.0, 0, "reads failed: {:?}", failures.1);
            assert!(
                Instant::now() < deadline,
                "the readers are stuck at {} reads",
                self.reads()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the readers; returns how many reads failed and the first few failures.
    fn stop(mut self) -> (u64, Vec<String>) {
        self.halt();
        self.failures.lock().unwrap().clone()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Readers {
    /// A failing test stops its readers too (they would read a dead mount for ever).
    fn drop(&mut self) {
        self.halt();
    }
}

/// The whole of `file` (`len` bytes) after dropping its page cache, so the read reaches the mount.
fn read_uncached(file: &fs::File, len: usize) -> std::io::Result<Vec<u8>> {
    // SAFETY: posix_fadvise on an open descriptor only drops cached pages.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let mut bytes = vec![0; len];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

/// A tree of files of a few sizes (one chunk to several), and each file's bytes.
fn write_tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for i in 0..12u64 {
        let rel = PathBuf::from(format!("d{}/f{i}", i % 3));
        let bytes = random_bytes(((i as usize % 4) + 1) * 300_000 + i as usize, 900 + i);
        fs::create_dir_all(root.join(&rel).parent().unwrap()).unwrap();
        fs::write(root.join(&rel), &bytes).unwrap();
        files.insert(rel, bytes);
    }
    files
}

/// The worker serving the mount now: (pid, generation).
fn worker(w: &World, dir: &Path) -> (i32, u64) {
    let status = mount_status(w, dir);
    let pid = status["pid"].as_i64().expect("a worker pid") as i32;
    let generation = status["worker_generation"].as_u64().unwrap();
    (pid, generation)
}

/// The worker that replaced `victim` (the status socket refuses until it binds its own).
fn next_worker(w: &World, dir: &Path, victim: i32) -> (i32, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = w
            .thaw()
            .args(["mount", "status", dir.to_str().unwrap(), "--json"])
            .output()
            .unwrap();
        if out.status.success() {
            let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let pid = status["pid"].as_i64().unwrap() as i32;
            if pid != victim {
                return (pid, status["worker_generation"].as_u64().unwrap());
            }
        }
        assert!(
            Instant::now() < deadline,
            "no worker replaced {victim}: {}\nthe mount's log:\n{}",
            describe(&out),
            fs::read_to_string(w.path("mount.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A world holding tag `app` (a [`write_tree`] tree) and the tree's bytes; `None` (the test
/// skipped, visibly) where supervised mounts cannot run.
fn world_with_app(test: &str) -> Option<(World, BTreeMap<PathBuf, Vec<u8>>)> {
    if !fuse_available(test) {
        return None;
    }
    if !is_root() {
        thaw_sys::skip::skipped(test, "needs root (FUSE_NOTIFY_RESEND is sent on the supervisor's connection, and passthrough is exercised)");
        return None;
    }
    let w = World::local();
    let src = w.path("src");
    let expected = write_tree(&src);
    w.index("dir", &src, "app", &[]);
    Some((w, expected))
}

/// Waits (up to `within`) until process `pid` has ended.
fn wait_gone(pid: i32, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while pid_alive(pid) {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn readers_see_no_error_while_a_supervised_mount_is_handed_over_and_its_workers_are_killed() {
    let test =
        "readers_see_no_error_while_a_supervised_mount_is_handed_over_and_its_workers_are_killed";
    let Some((w, expected)) = world_with_app(test) else {
        return;
    };
    let dir = w.path("mnt");
    let log = w.path("mount.log");
    let mount = w.mount(
        "app",
        &dir,
        &["--supervise", "--log-file", log.to_str().unwrap()],
    );
    let supervisor = mount.pid;
    let status = mount_status(&w, &dir);
    assert_eq!(
        status["supervisor_pid"].as_i64(),
        Some(supervisor as i64),
        "{status:#}"
    );
    assert_eq!(status["worker_generation"].as_u64(), Some(0), "{status:#}");

    let readers = Readers::start(&dir, expected.clone());
    readers.wait_for_reads(50);
    for handoff in 1..=20u64 {
        let (before, _) = worker(&w, &dir);
        let said = w.ok(&["mount", "handoff", dir.to_str().unwrap()]);
        let (after, generation) = worker(&w, &dir);
        assert_ne!(
            before, after,
            "handoff {handoff} kept the old worker: {said}"
        );
        assert!(
            generation >= handoff,
            "handoff {handoff}: generation {generation}"
        );
        assert!(
            !pid_alive(before),
            "the retired worker {before} is still running"
        );
        readers.wait_for_reads(20);
    }
    let (failed, failures) = readers.stop();
    assert_eq!(failed, 0, "reads failed during handoffs: {failures:?}");

    let readers = Readers::start(&dir, expected);
    readers.wait_for_reads(50);
    for kill in 1..=5 {
        let (victim, generation) = worker(&w, &dir);
        // SAFETY: kill(2) on the worker the mount reported.
        assert_eq!(unsafe { libc::kill(victim, libc::SIGKILL) }, 0);
        let (next, next_generation) = next_worker(&w, &dir, victim);
        assert!(next_generation > generation, "worker {next} after {victim}");
        readers.wait_for_reads(20);
        assert!(
            pid_alive(supervisor),
            "the supervisor left after kill {kill}"
        );
    }
    let (failed, failures) = readers.stop();
    assert_eq!(
        failed, 0,
        "reads failed while workers were killed: {failures:?}"
    );

    mount.unmount();
    wait_gone(
        supervisor,
        Duration::from_secs(20),
        "the supervisor outlived its mount",
    );
}

#[test]
fn a_supervised_mount_whose_workers_cannot_start_is_detached_not_left_hanging() {
    let test = "a_supervised_mount_whose_workers_cannot_start_is_detached_not_left_hanging";
    let Some((w, expected)) = world_with_app(test) else {
        return;
    };
    let dir = w.path("mnt");
    let mount = w.mount("app", &dir, &["--supervise"]);
    let supervisor = mount.pid;
    // Every later worker dies at once: the store it must open is gone.
    fs::rename(w.store_dir(), w.path("store-moved")).unwrap();
    let (victim, _) = worker(&w, &dir);
    // SAFETY: kill(2) on the worker the mount reported.
    assert_eq!(unsafe { libc::kill(victim, libc::SIGKILL) }, 0);
    wait_gone(
        supervisor,
        Duration::from_secs(60),
        "the supervisor keeps restarting workers that cannot start",
    );
    mount.ended();
    let (rel, _) = expected.iter().next().unwrap();
    let read = fs::read(dir.join(rel));
    assert!(
        read.is_err(),
        "a read on the given-up mount should fail, not hang: {read:?}"
    );
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounts.contains(dir.to_str().unwrap()),
        "still mounted: {mounts}"
    );
}

fn pid_alive(pid: i32) -> bool {
    // A zombie (exited, not reaped) is gone for this purpose.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}
