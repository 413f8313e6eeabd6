//! Container snapshots end to end with real runc, CRIU and FUSE: a Python HTTP server with state
//! (64 MiB of known memory, a child process, a log file it keeps open in its writable layer) is
//! started from a lazily mounted image by `thaw run --snapshot ... --snapshot-when-ready`,
//! checkpointed once ready, and restored by `thaw run --from-snapshot` on "fresh nodes" (their
//! own cache and runtime directories; the original container, its dump and its overlay gone),
//! with its memory paged in lazily and whole. Snapshots a host cannot run are refused before
//! anything runs. Needs root, runc, criu >= 4.1 and the OCI tools; without them the tests say
//! SKIPPED and return.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::oci::{copy_python, oci_tools_available, Layout};
use crate::common::*;
use crate::snapshot::criu_available;

/// The server: memory from a seeded generator (its digest checked against one computed here),
/// a forked child, a tick thread appending to /data/log (open for the whole run), `/ready` for
/// readiness and `/state` for what the test checks. SIGTERM ends it.
///
/// `/events` (once, first thing after a restore) changes an 8 MiB region of private memory the
/// way a lazy-pages daemon must follow: madvise(DONTNEED) of its first MiB (must read back as
/// zeros, never as the dumped bytes), mremap of MiB 2-4 elsewhere (its bytes follow it), munmap
/// of MiB 6-7, mprotect of the last half MiB (it splits the VMA the last MiB's pages wait in),
/// and a child forked after the restore reading MiB 4-6.
const SERVER: &str = r#"
import ctypes, hashlib, http.server, json, os, random, signal, threading, time
mib, port = int(os.environ["MIB"]), int(os.environ["PORT"])
started = time.time()
mem = bytearray(random.Random(7).randbytes(mib << 20))
expected = hashlib.sha256(mem).hexdigest()
libc = ctypes.CDLL(None, use_errno=True)
vp, sz, i = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
libc.mmap.restype, libc.mmap.argtypes = vp, [vp, sz, i, i, i, ctypes.c_long]
libc.mremap.restype, libc.mremap.argtypes = vp, [vp, sz, sz, i, vp]
libc.madvise.argtypes, libc.munmap.argtypes = [vp, sz, i], [vp, sz]
libc.mprotect.argtypes = [vp, sz, i]
M = 1 << 20
region = libc.mmap(None, 8 * M, 3, 0x22, -1, 0)  # read/write, private anonymous
pattern = random.Random(9).randbytes(8 * M)
ctypes.memmove(region, pattern, 8 * M)
def sha(addr, n):
    return hashlib.sha256(ctypes.string_at(addr, n)).hexdigest()
def want(a, b):
    return hashlib.sha256(pattern[a * M:b * M]).hexdigest()
def events():
    libc.madvise(region, M, 4)  # MADV_DONTNEED
    zeroed = ctypes.string_at(region, M) == bytes(M)
    spot = libc.mmap(None, 2 * M, 0, 0x22, -1, 0)
    moved = libc.mremap(region + 2 * M, 2 * M, 2 * M, 3, spot)  # MREMAP_MAYMOVE | MREMAP_FIXED
    libc.munmap(region + 6 * M, M)
    libc.mprotect(region + 7 * M + M // 2, M // 2, 1)  # PROT_READ
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, sha(region + 4 * M, 2 * M).encode())
        os._exit(0)
    os.close(w)
    forked = os.read(r, 64).decode()
    os.waitpid(pid, 0)
    return {"zeroed": zeroed, "kept": sha(region + M, M) == want(1, 2),
            "moved": moved == spot and sha(moved, 2 * M) == want(2, 4),
            "forked": forked == want(4, 6), "tail": sha(region + 7 * M, M) == want(7, 8)}
os.makedirs("/data", exist_ok=True)
log = open("/data/log", "a")
child = os.fork()
if child == 0:
    while True:
        time.sleep(1)
ticks = [0]
def tick():
    while True:
        ticks[0] += 1
        log.write(f"{ticks[0]}\n"); log.flush()
        time.sleep(0.02)
threading.Thread(target=tick, daemon=True).start()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/ready":
            body = b"ok"
        elif self.path == "/events":
            body = json.dumps(events()).encode()
        else:
            try:
                os.kill(child, 0); alive = True
            except OSError:
                alive = False
            with open("/data/log") as f:
                lines = sum(1 for _ in f)
            body = json.dumps({"started": started, "ticks": ticks[0], "log_lines": lines,
                "digest": hashlib.sha256(mem).hexdigest(), "expected": expected,
                "child": alive}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
def stop(*_):
    os.kill(child, signal.SIGKILL)
    os._exit(0)
signal.signal(signal.SIGTERM, stop)
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"#;

/// Memory the server holds.
const MIB: u32 = 64;

/// Whether everything a container snapshot needs is here; says SKIPPED otherwise.
fn container_snapshots_available(test: &str) -> bool {
    if !criu_available(test) || !oci_tools_available(test) || !fuse_available(test) {
        return false;
    }
    if thaw_sys::which("runc").is_none() {
        thaw_sys::skip::skipped(test, "runc is not installed");
        return false;
    }
    true
}

/// Builds and indexes the server image as tag `server`; returns the interpreter's path.
fn index_server_image(w: &World) -> String {
    let layout = Layout::new(&w.path("build/layout"), "server");
    let mut python = String::new();
    layout.add_layer("server", &w.path("build/bundle"), |rootfs| {
        python = copy_python(rootfs);
        fs::create_dir_all(rootfs.join("app")).unwrap();
        fs::create_dir_all(rootfs.join("etc")).unwrap();
        fs::write(rootfs.join("app/server.py"), SERVER).unwrap();
        fs::write(rootfs.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
    });
    layout.configure(
        "server",
        &[
            "--config.entrypoint=/usr/bin/python3",
            "--config.cmd=/app/server.py",
            "--config.env=PYTHONDONTWRITEBYTECODE=1",
            &format!("--config.env=MIB={MIB}"),
        ],
    );
    w.index(
        "image",
        Path::new(&format!("oci:{}", layout.image("server"))),
        "server",
        &[],
    );
    python
}

/// `thaw run` on the node whose cache and runtime directories are under `w.path(node)`.
fn on_node(w: &World, node: &str) -> Command {
    let mut command = w.thaw();
    command
        .env("THAW_CACHE_DIR", w.path(&format!("{node}/cache")))
        .env("THAW_RUNTIME_DIR", w.path(&format!("{node}/run")));
    command
}

/// Starts the server and snapshots it as `name` once `/ready` answers.
fn snapshot_server(w: &World, port: u16, name: &str) {
    let out = on_node(w, "first")
        .args([
            "run",
            "server",
            "-e",
            &format!("PORT={port}"),
            "--snapshot",
            name,
        ])
        .args(["--snapshot-when-ready", "--ready-url"])
        .arg(format!("http://127.0.0.1:{port}/ready"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().last().is_some_and(|l| l.len() == 64),
        "thaw run --snapshot prints the snapshot's manifest id: {stdout}"
    );
    // The container ended with the dump: nothing answers, and its directory (bundle, overlay,
    // dump) is gone.
    assert!(get(port, "/ready").is_none());
    let containers = w.path("first/run/containers");
    assert!(
        fs::read_dir(&containers).map_or(true, |mut d| d.next().is_none()),
        "container directories left in {}",
        containers.display()
    );
}

/// One GET of the server, `None` when it does not answer.
fn get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
}

/// A `thaw run --from-snapshot` in the background (its stderr in `log`), stopped on drop.
struct Restore {
    child: Child,
    log: PathBuf,
}

impl Restore {
    fn start(w: &World, node: &str, name: &str, extra: &[&str], env: &[(&str, &str)]) -> Restore {
        let log = w.path(&format!("{node}.stderr"));
        let child = on_node(w, node)
            .args(["run", "--from-snapshot", name, "--timing"])
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Restore { child, log }
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server's state once it answers.
    /// The JSON the server answers at `path`, waiting until it answers.
    fn ask(&mut self, port: u16, path: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(body) = get(port, path) {
                return serde_json::from_str(&body).unwrap();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "thaw run --from-snapshot exited ({status}):\n{}",
                    self.stderr()
                );
            }
            assert!(Instant::now() < deadline, "no answer:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM to thaw run, which passes it on; the container ends and everything unmounts.
    fn stop(mut self) -> String {
        // SAFETY: kill with a pid of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        let stderr = self.stderr();
        assert!(status.success(), "thaw run ended {status}:\n{stderr}");
        stderr
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        // SAFETY: as in stop.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// The digest of the server's memory, computed here with the same generator.
fn expected_digest(python: &str) -> String {
    let script = format!(
        "import hashlib, random; print(hashlib.sha256(random.Random(7).randbytes({MIB} << 20)).hexdigest())"
    );
    let out = Command::new(python).args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Checks a restored server: the memory it was dumped with (every page read again), its child,
/// its open log file in the restored writable layer, and a start time before the restore.
fn assert_restored(state: &serde_json::Value, digest: &str, restore_began: f64) {
    assert_eq!(state["digest"], digest, "{state}");
    assert_eq!(state["expected"], digest, "{state}");
    assert_eq!(state["child"], true, "{state}");
    let started = state["started"].as_f64().unwrap();
    assert!(started < restore_began, "restarted, not restored: {state}");
    let (ticks, lines) = (
        state["ticks"].as_u64().unwrap(),
        state["log_lines"].as_u64().unwrap(),
    );
    assert!(ticks > 0 && lines + 1 >= ticks, "{state}");
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn assert_nothing_mounted_under(dir: &Path) {
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    let dir = dir.display().to_string();
    assert!(!mounts.contains(&dir), "mounts left under {dir}:\n{mounts}");
}

/// A restore to try: its node, `thaw run` flags, environment and what its stderr must say.
type RestoreCase<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn a_container_snapshotted_when_ready_is_restored_on_fresh_nodes_with_lazy_and_whole_memory() {
    let test = "container snapshot and restore";
    if !container_snapshots_available(test) {
        return;
    }
    let w = World::local();
    let python = index_server_image(&w);
    let digest = expected_digest(&python);
    let port = free_port();
    snapshot_server(&w, port, "server-ready");
    let listed = w.ok(&["snapshot", "ls"]);
    assert!(
        listed.contains("server-ready") && listed.contains("container of server"),
        "{listed}"
    );

    // Fresh nodes, each with its own empty cache and runtime directory: memory paged in lazily
    // by thaw's server (faults only, so /events meets pages still pending), by CRIU's daemon,
    // and restored whole before the container runs.
    let cases: [RestoreCase; 3] = [
        (
            "lazy",
            &[],
            &[("THAW_LAZY_PAGES_BACKGROUND", "off")],
            "memory paged in lazily",
        ),
        (
            "criu-daemon",
            &["--lazy-pages-daemon", "criu"],
            &[],
            "memory paged in lazily",
        ),
        ("whole", &["--no-lazy-pages"], &[], "memory restored whole"),
    ];
    for (node, flags, env, says) in cases {
        let began = unix_now();
        let mut restore = Restore::start(&w, node, "server-ready", flags, env);
        let events = restore.ask(port, "/events");
        for check in ["zeroed", "kept", "moved", "forked", "tail"] {
            assert_eq!(events[check], true, "{node}: {check} in {events}");
        }
        let state = restore.ask(port, "/state");
        assert_restored(&state, &digest, began);
        let stderr = restore.stop();
        assert!(stderr.contains(says), "{node}: {stderr}");
        assert_nothing_mounted_under(&w.path(node));
    }
}

#[test]
fn container_snapshots_a_host_cannot_run_are_refused_before_anything_runs() {
    let test = "container snapshot refusals";
    if !container_snapshots_available(test) {
        return;
    }
    let w = World::local();
    index_server_image(&w);
    let port = free_port();
    snapshot_server(&w, port, "server-ready");
    let refused = |extra_env: &[(&str, &str)], name: &str| -> String {
        let mut command = on_node(&w, "refused");
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let out = command
            .args(["run", "--from-snapshot", name])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{}", describe(&out));
        assert_no_panic(&out);
        assert!(get(port, "/ready").is_none(), "a container ran");
        assert!(
            fs::read_dir(w.path("refused/run/containers")).map_or(true, |mut d| d.next().is_none()),
            "a container directory was made"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    let err = refused(&[("THAW_CRIU", "/nonexistent/criu")], "server-ready");
    assert!(err.contains("/nonexistent/criu"), "{err}");
    let old = w.path("old-criu");
    fs::write(&old, "#!/bin/sh\necho Version: 3.17\n").unwrap();
    fs::set_permissions(&old, fs::Permissions::from_mode(0o755)).unwrap();
    let err = refused(&[("THAW_CRIU", old.to_str().unwrap())], "server-ready");
    assert!(err.contains("3.17") && err.contains("too old"), "{err}");

    // A record claiming a CPU feature this host lacks (the snapshot re-stored with it).
    let tree = w.path("bad-cpu");
    w.ok(&["extract", "snapshot/server-ready", tree.to_str().unwrap()]);
    let record_path = tree.join("thaw-container.json");
    let mut record: serde_json::Value =
        serde_json::from_slice(&fs::read(&record_path).unwrap()).unwrap();
    record["cpu_flags"]
        .as_array_mut()
        .unwrap()
        .push("thaw_test_feature".into());
    fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();
    w.index("dir", &tree, "snapshot/bad-cpu", &[]);
    let err = refused(&[], "bad-cpu");
    assert!(err.contains("thaw_test_feature"), "{err}");

    let err = refused(&[], "no-such-snapshot");
    assert!(err.contains("no-such-snapshot"), "{err}");

    // The image gone from the store (as a garbage collection after its tag was removed would
    // leave it): refused naming the image.
    let image = w.manifest_of("server").unwrap();
    fs::remove_file(w.store_dir().join("manifests").join(&image)).unwrap();
    let err = refused(&[], "server-ready");
    assert!(
        err.contains(&image) && err.contains("not in the store"),
        "{err}"
    );
}
