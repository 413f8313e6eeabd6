//! Process snapshots end to end with real CRIU: a Python process with state (a counter written to
//! an open file, 200 MiB of known memory, a child process) is dumped into the store, killed, and
//! restored on a clean cache (extracted and lazily mounted); corrupted or unrunnable snapshots are
//! refused before any process runs. Needs root and criu >= 4.1 (scripts/install-criu); without
//! them the tests say SKIPPED and return.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// The stateful test program: writes its memory digest, forks a child, then counts.
const COUNTER: &str = r#"
import hashlib, os, sys, time
state, mib = sys.argv[1], int(sys.argv[2])
mem = bytearray()
for i in range(mib):
    mem += hashlib.sha256(str(i).encode()).digest() * 32768
with open(os.path.join(state, "digest"), "w") as f:
    f.write(hashlib.sha256(mem).hexdigest())
log = open(os.path.join(state, "counter.log"), "a")
if os.fork() == 0:
    while True:
        time.sleep(1)
n = 0
while True:
    n += 1
    log.write(f"{n}\n"); log.flush()
    check = os.path.join(state, "check")
    if os.path.exists(check):
        os.remove(check)
        with open(os.path.join(state, "result.tmp"), "w") as f:
            f.write(hashlib.sha256(mem).hexdigest())
        os.rename(os.path.join(state, "result.tmp"), os.path.join(state, "result"))
    time.sleep(0.05)
"#;

/// Whether real CRIU can run here; says SKIPPED otherwise.
pub(crate) fn criu_available(test: &str) -> bool {
    if !is_root() {
        thaw_sys::skip::skipped(test, "CRIU needs root");
        return false;
    }
    let found = ["criu", "/usr/local/sbin/criu", "/usr/sbin/criu"]
        .iter()
        .any(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if !found {
        thaw_sys::skip::skipped(test, "criu is not installed (scripts/install-criu)");
    }
    found
}

/// A running counter process, in its own session with no terminal and no pipes to the test.
pub(crate) struct Counter {
    pub(crate) child: Child,
    state: PathBuf,
}

impl Counter {
    pub(crate) fn start(world: &World, python: &Path, mib: u32) -> Self {
        let state = world.path("state");
        std::fs::create_dir_all(&state).unwrap();
        let script = world.path("counter.py");
        std::fs::write(&script, COUNTER).unwrap();
        let child = spawn_detached(
            python,
            &script,
            &[state.as_os_str(), mib.to_string().as_ref()],
        );
        let counter = Counter { child, state };
        counter.wait_for_count(5);
        counter
    }

    /// `thaw snapshot create --pid PID --tag TAG` (CRIU ends the process tree), then waits until
    /// its pids are free for a restore: the root reaped here, its child by init. Returns what
    /// create printed and the last count before the dump.
    pub(crate) fn dump(&mut self, world: &World, tag: &str) -> (String, u64) {
        let pid = self.child.id();
        let children = children_of(pid);
        let out = world.ok(&[
            "snapshot",
            "create",
            "--pid",
            &pid.to_string(),
            "--tag",
            tag,
        ]);
        self.child.wait().unwrap();
        wait_until_free(&children);
        (out, *self.counts().last().unwrap())
    }

    pub(crate) fn counts(&self) -> Vec<u64> {
        std::fs::read_to_string(self.state.join("counter.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }

    /// Waits until at least `n` counts were written since the start.
    fn wait_for_count(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.counts().len() < n {
            assert!(
                Instant::now() < deadline,
                "the counter stopped at {:?}",
                self.counts().last()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The digest of its memory, as it computes it now.
    fn memory_digest(&self) -> String {
        let result = self.state.join("result");
        let _ = std::fs::remove_file(&result);
        std::fs::write(self.state.join("check"), b"").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(digest) = std::fs::read_to_string(&result) {
                return digest;
            }
            assert!(
                Instant::now() < deadline,
                "no memory digest from the process"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn expected_digest(&self) -> String {
        std::fs::read_to_string(self.state.join("digest")).unwrap()
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `python script args...` in its own session with no terminal and no pipes to the test
/// (CRIU dumps only what it can restore: no fds shared with processes outside the tree).
fn spawn_detached(python: &Path, script: &Path, args: &[&std::ffi::OsStr]) -> Child {
    let mut command = Command::new(python);
    command
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid in the child before exec only changes the child's session.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            libc::setsid();
            Ok(())
        });
    }
    command.spawn().unwrap()
}

/// The contents of `path` once it exists (the programs write it whole with a rename).
fn wait_for_file(path: &Path, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills a restored tree (root and children) and waits until its pids are free again (reaped
/// by init: the restored root was detached from thaw), so the next restore can take them.
pub(crate) fn kill_tree(pid: u32) {
    let mut pids = children_of(pid);
    pids.push(pid as i32);
    for p in &pids {
        // SAFETY: kill(2) on pids the test restored.
        unsafe { libc::kill(*p, libc::SIGKILL) };
    }
    wait_until_free(&pids);
}

/// The child processes of `pid`.
fn children_of(pid: u32) -> Vec<i32> {
    let children = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    children
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Waits (up to 30 s) until every pid of `pids` is gone and reaped, free for a restore.
fn wait_until_free(pids: &[i32]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for p in pids {
        while Path::new(&format!("/proc/{p}")).exists() {
            assert!(Instant::now() < deadline, "pid {p} was not reaped");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn has_child(pid: u32) -> bool {
    Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub(crate) fn system_python() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Checks a restored counter: same pid, counting on from where the dump stopped it (not from
/// 1), with its child, and its memory intact.
pub(crate) fn assert_restored(counter: &Counter, pid: u32, dumped_pid: u32, last_before: u64) {
    assert_eq!(pid, dumped_pid, "CRIU restores the same pid");
    let already = counter.counts().len();
    counter.wait_for_count(already + 5);
    let counts = counter.counts();
    let resumed = &counts[already..];
    assert!(
        resumed[0] > last_before && resumed.windows(2).all(|w| w[1] == w[0] + 1),
        "the counter did not continue from {last_before}: {resumed:?}"
    );
    assert!(has_child(pid), "the child process was not restored");
    assert_eq!(
        counter.memory_digest(),
        counter.expected_digest(),
        "memory differs"
    );
}

#[test]
fn a_snapshot_restores_with_its_state_from_a_clean_cache_extracted_and_lazily_mounted() {
    let test = "a_snapshot_restores_with_its_state_from_a_clean_cache_extracted_and_lazily_mounted";
    if !criu_available(test) || !fuse_available(test) {
        return;
    }
    let world = World::local();
    let mut counter = Counter::start(&world, &system_python(), 200);
    let pid = counter.child.id();
    let (out, last_before) = counter.dump(&world, "counter");
    assert_eq!(out.trim().len(), 64, "prints the manifest id: {out}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        *counter.counts().last().unwrap(),
        last_before,
        "the dumped process still runs"
    );

    let listed = world.ok(&["snapshot", "ls", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], "counter");
    assert_eq!(rows[0]["pid"], pid);
    assert!(rows[0]["bytes"].as_u64().unwrap() > 100 << 20, "{listed}");

    // Restore 1: images fetched into a scratch folder, with a cache nobody filled.
    let restore = |extra: &[&str], cache: &str| -> (u32, serde_json::Value) {
        let mut args = vec!["snapshot", "restore", "counter", "--json"];
        args.extend_from_slice(extra);
        let out = world
            .thaw()
            .env("THAW_CACHE_DIR", world.path(cache))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "restore {extra:?}: {}",
            describe(&out)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (report["pid"].as_u64().unwrap() as u32, report)
    };
    let (restored, report) = restore(&[], "clean-cache");
    eprintln!("restore (extracted, cold cache): {report}");
    // Every image byte came from the store: the whole snapshot at most, the 200 MiB at least.
    let fetched = report["store_bytes"].as_u64().unwrap();
    let stored = rows[0]["bytes"].as_u64().unwrap();
    assert!(
        fetched > 100 << 20 && fetched <= stored,
        "{report} of {stored}"
    );
    assert_eq!(report["peer_bytes"], 0);
    assert_restored(&counter, restored, pid, last_before);
    kill_tree(restored);

    // Restore 2: the images read through a lazy mount, again from a cold cache.
    let (restored, report) = restore(&["--lazy"], "clean-cache-2");
    eprintln!("restore (lazy mount, cold cache): {report}");
    assert_eq!(report["lazy"], true);
    assert_restored(&counter, restored, pid, last_before);
    kill_tree(restored);
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        !mounts.contains("thaw:snapshot/counter"),
        "the lazy mount was left behind"
    );

    world.ok(&["snapshot", "rm", "counter"]);
    assert_eq!(world.ok(&["snapshot", "ls", "--json"]).trim(), "[]");
    let err = world.fails(&["snapshot", "rm", "counter"]);
    assert!(err.contains("counter"), "{err}");
}

#[test]
fn corrupt_or_unrunnable_snapshots_are_refused_before_any_process_runs() {
    let test = "corrupt_or_unrunnable_snapshots_are_refused_before_any_process_runs";
    if !criu_available(test) {
        return;
    }
    let world = World::local();
    // The process runs from a copy of the interpreter that is deleted after the dump.
    let python = world.path("python-copy");
    std::fs::copy(system_python(), &python).unwrap();
    let mut counter = Counter::start(&world, &python, 16);
    let pid = counter.child.id();
    counter.dump(&world, "small");

    // Its executable is gone: refused with the reason, and nothing runs.
    std::fs::rename(&python, world.path("python-moved")).unwrap();
    let err = world.fails(&["snapshot", "restore", "small"]);
    assert!(
        err.contains("python-copy") && err.contains("absent"),
        "{err}"
    );
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    std::fs::rename(world.path("python-moved"), &python).unwrap();

    // A flipped byte in a pack: the restore names the bad chunk, and nothing runs.
    let packs = store_files(&world.store_dir(), "packs", ".pack");
    let pack = packs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(pack).unwrap();
    bytes[16 + 48 + 1000] ^= 0x01;
    std::fs::write(pack, &bytes).unwrap();
    let report = world.fails(&["verify", "snapshot/small", "--quiet"]);
    let bad = report
        .lines()
        .find_map(|l| l.split("BAD chunk ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("verify found nothing bad: {report}"))
        .to_string();
    let err = world.fails(&["snapshot", "restore", "small"]);
    assert!(
        err.contains(&bad),
        "the error does not name chunk {bad}: {err}"
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "a process runs with bad memory"
    );

    let err = world.fails(&["snapshot", "restore", "nonexistent"]);
    assert!(err.contains("nonexistent"), "{err}");
}

/// A process holding a known GPU buffer (torch): computes its sum, and on request recomputes it
/// and launches a new kernel.
const GPU_HOLDER: &str = r#"
import os, sys, time, torch
state = sys.argv[1]
x = torch.arange(64 * 1024 * 1024, dtype=torch.float64, device="cuda")
expected = float(x.sum().item())
with open(os.path.join(state, "ready.tmp"), "w") as f:
    f.write(repr(expected))
os.rename(os.path.join(state, "ready.tmp"), os.path.join(state, "ready"))
while True:
    if os.path.exists(os.path.join(state, "check")):
        os.remove(os.path.join(state, "check"))
        again = float(x.sum().item())
        doubled = float((x * 2).sum().item())
        with open(os.path.join(state, "result.tmp"), "w") as f:
            f.write(f"{again!r} {doubled!r}")
        os.rename(os.path.join(state, "result.tmp"), os.path.join(state, "result"))
    time.sleep(0.05)
"#;

/// Whether a GPU and torch with CUDA are here; says SKIPPED otherwise.
fn gpu_available(test: &str) -> bool {
    let torch_cuda = Command::new("python3")
        .args([
            "-c",
            "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !torch_cuda {
        thaw_sys::skip::skipped(test, "no GPU with torch here (runs on the GPU machine)");
    }
    torch_cuda
}

#[test]
fn a_cuda_process_is_checkpointed_and_restored_with_its_gpu_buffer() {
    let test = "a_cuda_process_is_checkpointed_and_restored_with_its_gpu_buffer";
    if !criu_available(test) || !gpu_available(test) {
        return;
    }
    let world = World::local();
    let state = world.path("gpu-state");
    std::fs::create_dir_all(&state).unwrap();
    let script = world.path("gpu.py");
    std::fs::write(&script, GPU_HOLDER).unwrap();
    let mut child = spawn_detached(&system_python(), &script, &[state.as_os_str()]);
    let expected: f64 = wait_for_file(&state.join("ready"), Duration::from_secs(120))
        .parse()
        .unwrap();
    let pid = child.id();
    let started = Instant::now();
    world.ok(&[
        "snapshot",
        "create",
        "--pid",
        &pid.to_string(),
        "--tag",
        "gpu",
    ]);
    eprintln!(
        "GPU snapshot created in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    child.wait().unwrap();
    let out = world.ok(&["snapshot", "restore", "gpu", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    eprintln!("GPU restore: {report}");
    let restored = report["pid"].as_u64().unwrap() as u32;
    std::fs::write(state.join("check"), b"").unwrap();
    let result = wait_for_file(&state.join("result"), Duration::from_secs(60));
    kill_tree(restored);
    let (again, doubled) = result.split_once(' ').unwrap();
    assert_eq!(
        again.parse::<f64>().unwrap(),
        expected,
        "the GPU buffer changed"
    );
    assert_eq!(
        doubled.parse::<f64>().unwrap(),
        2.0 * expected,
        "a new kernel launch failed"
    );
}

/// A server holding a listening TCP socket and a request count (its state).
const SERVER: &str = r#"
import http.server, sys
count = 0
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global count
        count += 1
        body = f"request {count}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"#;

/// GETs / until the server answers; its body.
fn get_when_up(addr: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let response = http(addr, "GET", "/");
    response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_listening_server_is_restored_with_its_socket_and_state() {
    // criu 4.1.1 cannot dump inet sockets on Linux >= 6.16 without the patch scripts/install-criu
    // applies; this is the test that it did.
    let test = "a_listening_server_is_restored_with_its_socket_and_state";
    if !criu_available(test) {
        return;
    }
    let world = World::local();
    let script = world.path("server.py");
    std::fs::write(&script, SERVER).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = spawn_detached(&system_python(), &script, &[port.to_string().as_ref()]);
    assert_eq!(get_when_up(&addr), "request 1");
    world.ok(&[
        "snapshot",
        "create",
        "--pid",
        &server.id().to_string(),
        "--tag",
        "server",
    ]);
    server.wait().unwrap();
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "the dumped server still listens"
    );
    let out = world.ok(&["snapshot", "restore", "server", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let restored = report["pid"].as_u64().unwrap() as u32;
    // The same listening socket answers, and the count goes on from the dump.
    let answer = get_when_up(&addr);
    kill_tree(restored);
    assert_eq!(answer, "request 2");
}
