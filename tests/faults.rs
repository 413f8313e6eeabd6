//! Injected faults, nothing lost: thaw against a real S3-compatible server (moto) behind a
//! fault-injecting proxy. Indexing (PUTs), extracting, reading one file, reading it through a
//! lazy mount and loading weights (GETs of packs) either succeed with the right bytes, or, when
//! the fault does not go away, fail within the configured bounds with an error naming the
//! object. Never wrong bytes, never a hang. A CRIU snapshot restored through the same faults
//! either runs with its state or is refused, naming the object, before any process runs. The
//! scenarios and the bytes checked are counted and printed.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::snapshot::{assert_restored, criu_available, kill_tree, system_python, Counter};

/// Per-request timeout and retries the scenarios run with (a 10 s stall is past the timeout).
const TIMEOUT_MS: &str = "2000";
const RETRIES: &str = "3";
/// The longest a failing operation may take: every try at the full timeout plus back-off.
const BOUND: Duration = Duration::from_secs(40);

/// The transient faults: each is injected into the first two matching requests.
fn transient_faults() -> Vec<Fault> {
    vec![
        Fault::Status(500),
        Fault::Status(503),
        Fault::ResetMidBody,
        Fault::Truncate,
        Fault::Stall(Duration::from_secs(10)),
    ]
}

struct Bench {
    _server: S3Server,
    proxy: FaultProxy,
    w: World,
    src: std::path::PathBuf,
    model_digests: BTreeMap<String, String>,
    scenarios: usize,
    bytes_checked: u64,
}

impl Bench {
    fn new() -> Bench {
        let server = S3Server::start();
        let proxy = FaultProxy::start(server.endpoint().trim_start_matches("http://"));
        let w = World::s3(&server, "faults")
            .with_env("THAW_S3_ENDPOINT", &proxy.url())
            .with_env("THAW_STORE_TIMEOUT_MS", TIMEOUT_MS)
            .with_env("THAW_STORE_RETRIES", RETRIES)
            .with_env("THAW_NO_DISK_CACHE", "true");
        let src = w.rich_src();
        let model = w.path("model");
        fs::create_dir_all(&model).unwrap();
        let model_digests = write_safetensors(
            &model.join("model.safetensors"),
            &[
                ("embed", "F16", vec![1024, 1024], random_bytes(2 << 20, 41)),
                ("head", "F32", vec![256, 1024], random_bytes(1 << 20, 42)),
            ],
        );
        w.index("model", &model, "m", &[]);
        Bench {
            _server: server,
            proxy,
            w,
            src,
            model_digests,
            scenarios: 0,
            bytes_checked: 0,
        }
    }

    /// Runs `thaw ARGS`: whether it succeeded, its output, and how long it took.
    fn run(&self, args: &[&str]) -> (bool, String, Duration) {
        let (out, took) = self.output(args);
        (out.status.success(), describe(&out), took)
    }

    /// Runs `thaw ARGS`: what it printed, and how long it took.
    fn output(&self, args: &[&str]) -> (std::process::Output, Duration) {
        let started = Instant::now();
        let out = self.w.thaw().args(args).output().unwrap();
        assert_no_panic(&out);
        (out, started.elapsed())
    }

    /// Extract of `tag`, checked against the source when it succeeds.
    fn extract(&mut self, tag: &str, dest: &str) -> (bool, String, Duration) {
        let dest = self.w.path(dest);
        let _ = fs::remove_dir_all(&dest);
        let result = self.run(&["extract", tag, dest.to_str().unwrap(), "--quiet"]);
        if result.0 {
            assert_same_tree(&self.src, &dest);
            self.bytes_checked += tree_bytes(&self.src);
        }
        result
    }

    /// `thaw cat` of the tree's largest file, checked when it succeeds.
    fn cat(&mut self, tag: &str) -> (bool, String, Duration) {
        let started = Instant::now();
        let out = self
            .w
            .thaw()
            .args(["cat", tag, "/big.bin"])
            .output()
            .unwrap();
        assert_no_panic(&out);
        if out.status.success() {
            self.check_big_file(&out.stdout, "cat");
        }
        (out.status.success(), describe(&out), started.elapsed())
    }

    /// A lazy mount of `tag` (nothing fetched in the background, so every chunk comes on the
    /// read) and a read of the tree's largest file through it, checked when it succeeds; on
    /// failure the read's error and the mount's log.
    fn mount_read(&mut self, tag: &str) -> (bool, String, Duration) {
        let dir = self.w.path("mnt");
        let log = self.w.path("mount.log");
        let _ = fs::remove_file(&log);
        let mount = self.w.mount(
            tag,
            &dir,
            &[
                "--no-prefetch",
                "--no-trace",
                "--log-file",
                log.to_str().unwrap(),
            ],
        );
        let started = Instant::now();
        let read = fs::read(dir.join("big.bin"));
        let took = started.elapsed();
        mount.unmount();
        let log = fs::read_to_string(&log).unwrap_or_default();
        match read {
            Ok(bytes) => {
                self.check_big_file(&bytes, "the mount");
                (true, log, took)
            }
            Err(e) => (false, format!("read: {e}\nthe mount's log:\n{log}"), took),
        }
    }

    /// Asserts `bytes` (what `via` returned) are the source's /big.bin, and counts them.
    fn check_big_file(&mut self, bytes: &[u8], via: &str) {
        let expected = fs::read(self.src.join("big.bin")).unwrap();
        assert!(bytes == expected, "{via} returned wrong bytes");
        self.bytes_checked += expected.len() as u64;
    }

    /// Runs `op` (extract, cat, weights, mount).
    fn op(&mut self, op: &str) -> (bool, String, Duration) {
        match op {
            "extract" => self.extract("app0", "dest"),
            "cat" => self.cat("app0"),
            "mount" => self.mount_read("app0"),
            _ => self.weights(),
        }
    }

    /// The reading operations this machine can run (mounts need /dev/fuse).
    fn reads(&self) -> Vec<&'static str> {
        let mut ops = vec!["extract", "cat", "weights"];
        if fuse_available("faults: mount reads under injected faults") {
            ops.push("mount");
        }
        ops
    }

    /// `thaw weights load m --device cpu`, every tensor's digest checked when it succeeds.
    fn weights(&mut self) -> (bool, String, Duration) {
        let started = Instant::now();
        let out = self
            .w
            .thaw()
            .args([
                "weights",
                "load",
                "m",
                "--device",
                "cpu",
                "--json",
                "--digests",
            ])
            .output()
            .unwrap();
        assert_no_panic(&out);
        if out.status.success() {
            let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let loaded: BTreeMap<String, String> = json["tensors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    let name = t["name"].as_str().unwrap().to_string();
                    (name, t["blake3"].as_str().unwrap().to_string())
                })
                .collect();
            assert_eq!(loaded, self.model_digests, "weights loaded wrong bytes");
            self.bytes_checked += 3 << 20;
        }
        (out.status.success(), describe(&out), started.elapsed())
    }
}

/// Bytes of the regular files of a tree.
fn tree_bytes(root: &Path) -> u64 {
    fn walk(dir: &Path) -> u64 {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let t = e.file_type().unwrap();
                if t.is_dir() {
                    walk(&e.path())
                } else if t.is_file() {
                    e.metadata().unwrap().len()
                } else {
                    0
                }
            })
            .sum()
    }
    walk(root)
}

#[test]
fn transient_store_faults_are_retried_and_persistent_ones_name_the_object() {
    let mut b = Bench::new();
    let src = b.src.clone();
    // Indexing through PUT faults: the tag is set and every byte is there.
    for (i, fault) in transient_faults().into_iter().enumerate() {
        b.proxy.inject(fault, "PUT ", 2);
        let tag = format!("app{i}");
        let (ok, out, _) = b.run(&[
            "index",
            "dir",
            src.to_str().unwrap(),
            "--tag",
            &tag,
            "--quiet",
        ]);
        let injected = b.proxy.clear();
        assert!(ok, "{fault:?} during index: {out}");
        assert!(injected >= 1, "{fault:?} was never injected");
        let (ok, out, _) = b.extract(&tag, "check");
        assert!(ok, "after {fault:?} during index: {out}");
        b.scenarios += 1;
    }
    // Reading through GET faults on packs: extract, cat, weights load and reads through a mount
    // all come back whole.
    let reads = b.reads();
    for fault in transient_faults() {
        for &op in &reads {
            b.proxy.inject(fault, "/packs/", 2);
            let (ok, out, took) = b.op(op);
            let injected = b.proxy.clear();
            assert!(ok, "{fault:?} during {op}: {out}");
            assert!(injected >= 1, "{fault:?} during {op} was never injected");
            assert!(took < BOUND, "{fault:?} during {op} took {took:?}");
            b.scenarios += 1;
        }
    }
    // Faults that do not go away: the read fails, naming the pack, within the bounds (a mount's
    // read fails with EIO and its log names the pack).
    let failing: Vec<_> = reads
        .iter()
        .copied()
        .filter(|op| ["cat", "mount"].contains(op))
        .collect();
    for fault in transient_faults() {
        for &op in &failing {
            b.proxy.inject(fault, "/packs/", usize::MAX);
            let (ok, out, took) = b.op(op);
            b.proxy.clear();
            assert!(!ok, "{fault:?} for ever: {op} succeeded");
            assert!(
                out.contains("packs/"),
                "{fault:?} for ever: the error of {op} names no pack: {out}"
            );
            assert!(took < BOUND, "{fault:?} for ever took {took:?} in {op}");
            b.scenarios += 1;
        }
    }
    // Flipped bytes are never served: one bad answer is read again; bad answers every time fail
    // naming the chunk and the pack.
    for times in [1, usize::MAX] {
        for &op in &reads {
            b.proxy.inject(Fault::FlipByte, "/packs/", times);
            let (ok, out, _) = b.op(op);
            let injected = b.proxy.clear();
            assert!(injected >= 1, "no byte was flipped during {op}");
            if times == 1 {
                // One bad answer: the chunk is read again and comes back whole.
                assert!(ok, "one flipped byte during {op}: {out}");
            } else {
                assert!(!ok, "a byte flipped in every answer, yet {op} succeeded");
                assert!(
                    out.contains("packs/") && out.contains("chunk"),
                    "flipped bytes during {op}: the error names no chunk and pack: {out}"
                );
            }
            b.scenarios += 1;
        }
    }
    eprintln!(
        "fault scenarios: {}, bytes checked: {}",
        b.scenarios, b.bytes_checked
    );
}

#[test]
fn a_faulty_peer_never_serves_wrong_bytes_and_reads_fall_back_to_the_store() {
    // The store is a local folder here: the peer is what misbehaves.
    let w = World::local();
    let src = w.rich_src();
    w.index("dir", &src, "app", &[]);
    let server = w.cache_server("peer", 0, &[], &[]);
    let proxy = FaultProxy::start(server.url.trim_start_matches("http://"));
    let expected = fs::read(src.join("big.bin")).unwrap();
    let (mut scenarios, mut bytes_checked) = (0, 0u64);
    let faults = [
        Fault::Status(500),
        Fault::Status(503),
        Fault::ResetMidBody,
        Fault::Truncate,
        Fault::FlipByte,
        Fault::Stall(Duration::from_secs(10)),
    ];
    for fault in faults {
        for times in [2, usize::MAX] {
            proxy.inject(fault, "/v1/chunks/", times);
            let started = Instant::now();
            let out = w
                .thaw()
                .env("THAW_PEERS", proxy.url())
                .env("THAW_PEER_TOKEN", PEER_TOKEN)
                .env("THAW_PEER_TIMEOUT_MS", "1000")
                .env("THAW_NO_DISK_CACHE", "true")
                .args(["cat", "app", "/big.bin"])
                .output()
                .unwrap();
            let took = started.elapsed();
            let injected = proxy.clear();
            assert_no_panic(&out);
            assert!(
                out.status.success(),
                "{fault:?} x{times}: {}",
                describe(&out)
            );
            assert!(out.stdout == expected, "{fault:?} x{times}: wrong bytes");
            assert!(injected >= 1, "{fault:?} was never injected");
            // A stalled peer costs its timeout per chunk at most, and is then backed off from.
            assert!(took < BOUND, "{fault:?} x{times} took {took:?}");
            scenarios += 1;
            bytes_checked += expected.len() as u64;
        }
    }
    eprintln!("peer fault scenarios: {scenarios}, bytes checked: {bytes_checked}");
}

#[test]
fn cache_server_restarts_under_reading_clients_fail_no_read() {
    let w = World::local();
    let src = w.rich_src();
    w.index("dir", &src, "app", &[]);
    let mut servers: Vec<CacheServerProc> = (0..2)
        .map(|i| w.cache_server(&format!("peer{i}"), 0, &[], &[]))
        .collect();
    let peers = servers
        .iter()
        .map(|s| s.url.clone())
        .collect::<Vec<_>>()
        .join(",");
    let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
    let expected = fs::read(src.join("big.bin")).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, peers, expected) = (stop.clone(), peers.clone(), expected.clone());
            let mut command = w.thaw();
            command
                .env("THAW_PEERS", &peers)
                .env("THAW_PEER_TOKEN", PEER_TOKEN)
                .env("THAW_PEER_TIMEOUT_MS", "1000")
                .env("THAW_NO_DISK_CACHE", "true")
                .args(["cat", "app", "/big.bin"]);
            std::thread::spawn(move || {
                let (mut reads, mut failed) = (0, 0);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let out = command.output().unwrap();
                    reads += 1;
                    if !out.status.success() || out.stdout != expected {
                        failed += 1;
                    }
                }
                (reads, failed)
            })
        })
        .collect();
    // Ten clean restarts and five kill -9s, alternating between the two peers, each back on
    // its port.
    for round in 0..15 {
        let i = round % 2;
        std::thread::sleep(Duration::from_millis(300));
        if round < 10 {
            servers[i].stop();
        } else {
            servers[i].kill();
        }
        std::thread::sleep(Duration::from_millis(200));
        servers[i] = w.cache_server(&format!("peer{i}"), ports[i], &[], &[]);
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut reads, mut failed) = (0, 0);
    for reader in readers {
        let (r, f) = reader.join().unwrap();
        reads += r;
        failed += f;
    }
    eprintln!("peer restarts: 15 (10 clean, 5 kill -9); reads {reads}, failed {failed}");
    assert!(reads >= 15, "the readers hardly ran: {reads} reads");
    assert_eq!(
        failed, 0,
        "{failed} of {reads} reads failed across peer restarts"
    );
}

#[test]
fn a_snapshot_restores_whole_through_store_faults_or_is_refused_naming_the_object() {
    let test = "a_snapshot_restores_whole_through_store_faults_or_is_refused_naming_the_object";
    if !criu_available(test) {
        return;
    }
    let mut b = Bench::new();
    let mut counter = Counter::start(&b.w, &system_python(), 16);
    let pid = counter.child.id();
    let (_, last_before) = counter.dump(&b.w, "counter");
    let restore = |b: &Bench| {
        let (out, took) = b.output(&["snapshot", "restore", "counter", "--json"]);
        let pid = out.status.success().then(|| {
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            report["pid"].as_u64().unwrap() as u32
        });
        (pid, describe(&out), took)
    };

    // Transient faults and one flipped byte: the restored process runs on with its state.
    let mut once: Vec<(Fault, usize)> = transient_faults().into_iter().map(|f| (f, 2)).collect();
    once.push((Fault::FlipByte, 1));
    for (fault, times) in once {
        b.proxy.inject(fault, "/packs/", times);
        let (restored, out, took) = restore(&b);
        let injected = b.proxy.clear();
        let restored = restored.unwrap_or_else(|| panic!("{fault:?} during restore: {out}"));
        assert!(injected >= 1, "{fault:?} during restore was never injected");
        assert!(took < BOUND, "{fault:?} during restore took {took:?}");
        assert_restored(&counter, restored, pid, last_before);
        kill_tree(restored);
        b.scenarios += 1;
    }
    // Faults that stay: refused, naming the pack, and no process runs.
    for fault in [Fault::Status(503), Fault::ResetMidBody, Fault::FlipByte] {
        let counted = counter.counts().len();
        b.proxy.inject(fault, "/packs/", usize::MAX);
        let (restored, out, took) = restore(&b);
        b.proxy.clear();
        assert!(
            restored.is_none(),
            "{fault:?} for ever: the restore succeeded"
        );
        assert!(
            out.contains("packs/"),
            "{fault:?} for ever: the error names no pack: {out}"
        );
        assert!(took < BOUND, "{fault:?} for ever took {took:?}");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(counter.counts().len(), counted, "{fault:?}: a process ran");
        b.scenarios += 1;
    }
    eprintln!("snapshot restore fault scenarios: {}", b.scenarios);
}
