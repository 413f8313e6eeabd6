//! Shared harness for the end-to-end tests: a private store and cache per test, the real `thaw`
//! binary, tree generators and comparisons, and a real S3-compatible server (moto) on loopback.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};

pub mod oci;

/// A scratch world: store, cache and work directories for one test.
pub struct World {
    pub dir: tempfile::TempDir,
    pub store: String,
    extra_env: Vec<(String, String)>,
}

impl World {
    /// A world with a local folder store.
    pub fn local() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store").display().to_string();
        World {
            dir,
            store,
            extra_env: Vec::new(),
        }
    }

    /// A world whose store is a bucket on a running S3-compatible server.
    pub fn s3(server: &S3Server, bucket: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        server.create_bucket(bucket);
        World {
            dir,
            store: format!("s3://{bucket}/thaw"),
            extra_env: vec![
                ("THAW_S3_ENDPOINT".into(), server.endpoint()),
                ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
                ("AWS_REGION".into(), "us-east-1".into()),
            ],
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The store directory of a local world.
    pub fn store_dir(&self) -> PathBuf {
        PathBuf::from(&self.store)
    }

    /// `thaw` with this world's store and cache.
    pub fn thaw(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_thaw"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("THAW_STORE", &self.store)
            .env("THAW_CACHE_DIR", self.path("cache"))
            .env("THAW_RUNTIME_DIR", self.path("run"))
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null());
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs thaw with `args`; panics with its output unless it exits 0.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.thaw().args(args).output().unwrap();
        assert_no_panic(&out);
        assert!(
            out.status.success(),
            "thaw {args:?} failed:\n{}",
            describe(&out)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs thaw with `args`; panics unless it exits non-zero. Returns stdout + stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.thaw().args(args).output().unwrap();
        assert_no_panic(&out);
        assert!(
            !out.status.success(),
            "thaw {args:?} should have failed:\n{}",
            describe(&out)
        );
        describe(&out)
    }

    /// Builds [`build_rich_tree`] at `src` in this world and returns its path.
    pub fn rich_src(&self) -> PathBuf {
        let src = self.path("src");
        build_rich_tree(&src);
        src
    }

    /// The manifest id `tag` names, as `thaw tags` lists it.
    pub fn manifest_of(&self, tag: &str) -> Option<String> {
        self.ok(&["tags"])
            .lines()
            .find(|l| l.ends_with(&format!("  {tag}")))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
    }

    /// `thaw index dir PATH --tag TAG --json` parsed.
    pub fn index(&self, kind: &str, path: &Path, tag: &str, extra: &[&str]) -> serde_json::Value {
        let mut args = vec![
            "index",
            kind,
            path.to_str().unwrap(),
            "--tag",
            tag,
            "--json",
            "--quiet",
        ];
        args.extend_from_slice(extra);
        serde_json::from_str(self.ok(&args).trim()).unwrap()
    }
}

pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn assert_no_panic(out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "thaw panicked:\n{}",
        describe(out)
    );
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut buf = vec![0u8; len];
    rng.fill_bytes(&mut buf);
    buf
}

/// Compressible text-like bytes.
pub fn text_bytes(len: usize, seed: u64) -> Vec<u8> {
    let words = [
        "import", "torch", "def", "return", "self", "model", "layer", "weight", "\n", "    ",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        out.extend_from_slice(words[(rng.next_u32() % words.len() as u32) as usize].as_bytes());
        out.push(b' ');
    }
    out.truncate(len);
    out
}

fn set_mtime(path: &Path, sec: i64, nsec: u32) {
    let t = filetime::FileTime::from_unix_time(sec, nsec);
    filetime::set_symlink_file_times(path, t, t).unwrap();
}

/// A tree with every kind of entry the indexer supports. Device nodes and foreign owners only
/// when running as root.
pub fn build_rich_tree(root: &Path) {
    fs::create_dir_all(root.join("lib/python/pkg")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::write(root.join("big.bin"), random_bytes(9 << 20, 1)).unwrap();
    fs::write(root.join("lib/python/text.py"), text_bytes(3 << 20, 2)).unwrap();
    for i in 0..40 {
        fs::write(
            root.join(format!("lib/python/pkg/mod{i}.py")),
            text_bytes(100 + i * 997, i as u64),
        )
        .unwrap();
    }
    fs::write(root.join("empty-file"), b"").unwrap();
    fs::write(
        root.join("lib/python/pkg/setuid-tool"),
        b"#!/bin/sh\necho hi\n",
    )
    .unwrap();
    fs::set_permissions(
        root.join("lib/python/pkg/setuid-tool"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    fs::write(root.join("secret"), b"private").unwrap();
    fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("lib/python/text.py", root.join("link-rel")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("link-dangling")).unwrap();
    fs::write(root.join("hard-a"), text_bytes(200_000, 9)).unwrap();
    fs::hard_link(root.join("hard-a"), root.join("lib/hard-b")).unwrap();
    fs::write(root.join("small-hard"), b"tiny").unwrap();
    fs::hard_link(root.join("small-hard"), root.join("empty-dir/small-hard-2")).unwrap();
    // A sparse file: 64 MiB with two islands of data.
    let sparse = fs::File::create(root.join("sparse.img")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    sparse
        .write_all_at(&random_bytes(300_000, 3), 5 << 20)
        .unwrap();
    sparse.write_all_at(b"tail", (64 << 20) - 4).unwrap();
    xattr::set(
        root.join("lib/python/text.py"),
        "user.thaw.test",
        b"value-1",
    )
    .unwrap();
    xattr::set(root.join("empty-dir"), "user.dir", b"d").unwrap();
    let fifo = std::ffi::CString::new(root.join("fifo").to_str().unwrap()).unwrap();
    // SAFETY: valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    if is_root() {
        let dev = std::ffi::CString::new(root.join("null-dev").to_str().unwrap()).unwrap();
        // SAFETY: valid NUL-terminated path.
        assert_eq!(
            unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) },
            0
        );
        std::os::unix::fs::lchown(root.join("secret"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(root.join("link-rel"), Some(42), Some(43)).unwrap();
    }
    set_mtime(&root.join("big.bin"), 1_600_000_000, 123_456_789);
    set_mtime(&root.join("link-rel"), 1_500_000_000, 1);
    set_mtime(&root.join("empty-dir"), 1_400_000_000, 999);
}

/// Everything about one entry that extraction must preserve.
#[derive(Debug, PartialEq, Eq)]
pub struct EntryFacts {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: (i64, i64),
    pub nlink: u64,
    pub rdev: u64,
    pub link_target: Option<PathBuf>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    pub content: Option<blake3::Hash>,
}

/// Facts of every entry under `root`, keyed by relative path.
pub fn tree_facts(root: &Path) -> BTreeMap<PathBuf, EntryFacts> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            for e in fs::read_dir(&path).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
        let xattrs = xattr::list(&path)
            .map(|names| {
                names
                    .map(|n| {
                        (
                            n.to_string_lossy().into_owned(),
                            xattr::get(&path, &n).unwrap().unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let content = meta.is_file().then(|| {
            let mut h = blake3::Hasher::new();
            let mut f = fs::File::open(&path).unwrap();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            h.finalize()
        });
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        out.insert(
            rel,
            EntryFacts {
                mode: meta.mode(),
                uid: meta.uid(),
                gid: meta.gid(),
                size: if meta.is_dir() { 0 } else { meta.size() },
                mtime: (meta.mtime(), meta.mtime_nsec()),
                nlink: meta.nlink(),
                rdev: meta.rdev(),
                link_target: meta
                    .file_type()
                    .is_symlink()
                    .then(|| fs::read_link(&path).unwrap()),
                xattrs,
                content,
            },
        );
    }
    out
}

/// Asserts two trees are equal in content and metadata, naming the first difference.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let (fa, fb) = (tree_facts(a), tree_facts(b));
    assert_eq!(
        fa.keys().collect::<Vec<_>>(),
        fb.keys().collect::<Vec<_>>(),
        "different entries"
    );
    for (path, facts) in &fa {
        assert_eq!(facts, &fb[path], "entry {} differs", path.display());
    }
}

/// A `thaw mount --daemon` started by a test; unmounted (lazily, so a failing test cannot leave
/// it busy) when dropped.
pub struct MountGuard<'w> {
    world: &'w World,
    /// The mount point.
    pub dir: PathBuf,
    /// The daemon's pid.
    pub pid: i32,
    /// `http://ADDR/metrics` when started with `--metrics`.
    pub metrics_url: Option<String>,
    mounted: bool,
}

/// Whether this machine can mount FUSE file systems. Without /dev/fuse the mount tests say so on
/// stderr and return early; where it exists, any mount failure fails the test.
pub fn fuse_available(test: &str) -> bool {
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    eprintln!("SKIPPED {test}: no /dev/fuse on this machine (FUSE mounts need it)");
    false
}

impl World {
    /// Mounts `name` at `dir` (created) as a daemon with `extra` options.
    pub fn mount(&self, name: &str, dir: &Path, extra: &[&str]) -> MountGuard<'_> {
        self.mount_with_env(name, dir, extra, &[])
    }

    /// [`World::mount`] with more environment variables for the daemon.
    pub fn mount_with_env(
        &self,
        name: &str,
        dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> MountGuard<'_> {
        fs::create_dir_all(dir).unwrap();
        let mut args = vec!["mount", name, dir.to_str().unwrap(), "--daemon"];
        args.extend_from_slice(extra);
        let mut command = self.thaw();
        for (k, v) in env {
            command.env(k, v);
        }
        let out = command.args(&args).output().unwrap();
        assert_no_panic(&out);
        assert!(
            out.status.success(),
            "thaw {args:?} failed:\n{}",
            describe(&out)
        );
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        let pid = said
            .split("(pid ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {said:?}"));
        let metrics_url = said
            .split("metrics on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(|url| url.trim_end_matches([')', ';']).to_string());
        MountGuard {
            world: self,
            dir: dir.to_path_buf(),
            pid,
            metrics_url,
            mounted: true,
        }
    }
}

impl MountGuard<'_> {
    /// `thaw umount`; returns what it printed.
    pub fn unmount(mut self) -> String {
        self.mounted = false;
        let out = self
            .world
            .thaw()
            .args(["umount", self.dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "umount: {}", describe(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// The mount's Prometheus metrics: `name{labels}` -> value.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        scrape(
            self.metrics_url
                .as_ref()
                .expect("mounted without --metrics"),
        )
    }

    /// For a mount that ended without this guard (its daemon was killed, or told to stop):
    /// nothing is left to unmount on drop.
    pub fn ended(mut self) {
        self.mounted = false;
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the daemon this guard started.
        assert_eq!(unsafe { libc::kill(self.pid, signal) }, 0);
    }

    /// One metric, 0 when absent.
    pub fn metric(&self, name: &str) -> f64 {
        self.metrics().get(name).copied().unwrap_or(0.0)
    }
}

impl Drop for MountGuard<'_> {
    fn drop(&mut self) {
        if self.mounted {
            let _ = self
                .world
                .thaw()
                .args(["umount", "--lazy", self.dir.to_str().unwrap()])
                .output();
        }
    }
}

/// The Prometheus metrics at `url` (`http://ADDR/metrics`): `name{labels}` -> value.
pub fn scrape(url: &str) -> BTreeMap<String, f64> {
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_once('/').unwrap();
    let response = http(addr, "GET", &format!("/{path}"));
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("thaw_"))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// One bodiless HTTP/1.1 request to `addr` (host:port); the whole response, head and body.
pub fn http(addr: &str, method: &str, path: &str) -> String {
    let (head, body) = http_request(addr, method, path, &[]);
    format!("{head}\r\n\r\n{}", String::from_utf8_lossy(&body))
}

/// One bodiless HTTP/1.1 request with extra headers; the response head and raw body.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    s.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(response.len());
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let body = response.get(split + 4..).unwrap_or_default().to_vec();
    (head, body)
}

/// A real S3-compatible server (moto) on a free loopback port, stopped on drop. With
/// [`S3Server::start_recording`] it logs every request it serves (moto's recorder).
pub struct S3Server {
    child: Child,
    port: u16,
    recording: Option<tempfile::NamedTempFile>,
}

/// A free loopback port (bound, then released for a child to take), never one handed out
/// before in this test binary: the kernel may offer a just-released port again, and two servers
/// of concurrent tests would then race for it (one fails to bind, and its test talks to the
/// other's server until that one stops).
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap();
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// One request as moto's recorder logged it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
}

impl S3Server {
    pub fn start() -> Self {
        Self::launch(None)
    }

    /// A server that records every request (see [`S3Server::recorded`]).
    pub fn start_recording() -> Self {
        Self::launch(Some(tempfile::NamedTempFile::new().unwrap()))
    }

    /// Starts moto on a free port and waits until it answers HTTP. A server that exits first
    /// (its port taken in the meantime by another process) is started again on another port.
    fn launch(recording: Option<tempfile::NamedTempFile>) -> Self {
        let mut recording = recording;
        for _attempt in 0..3 {
            let port = free_port();
            let mut command = Command::new("moto_server");
            if let Some(file) = &recording {
                command
                    .env("MOTO_ENABLE_RECORDING", "1")
                    .env("MOTO_RECORDER_FILEPATH", file.path());
            }
            let child = command
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect(
                    "moto_server not found: run .ci/run's setup (pip install 'moto[server]') first",
                );
            let mut server = S3Server {
                child,
                port,
                recording: recording.take(),
            };
            if server.wait_until_answering(Duration::from_secs(60)) {
                return server;
            }
            recording = server.recording.take();
        }
        panic!("moto_server did not start (three tries)");
    }

    /// True once the server answers an HTTP request; false if it exits or the time runs out.
    fn wait_until_answering(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return false;
            }
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let probe = format!(
                    "GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                    self.port
                );
                let mut head = [0u8; 12];
                if stream.write_all(probe.as_bytes()).is_ok()
                    && stream.read_exact(&mut head).is_ok()
                    && head.starts_with(b"HTTP/1.")
                {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Forgets the requests recorded so far.
    pub fn reset_recording(&self) {
        let status = self.request("POST", "/moto-api/recorder/reset-recording");
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "reset recording: {status}"
        );
    }

    /// The requests recorded since the start or the last reset.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        let file = self.recording.as_ref().expect("started without recording");
        fs::read_to_string(file.path())
            .unwrap()
            .lines()
            .map(|line| {
                let entry: serde_json::Value = serde_json::from_str(line).unwrap();
                let url = entry["url"].as_str().unwrap();
                let path = url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap();
                RecordedRequest {
                    method: entry["method"].as_str().unwrap().to_string(),
                    path,
                    range: entry["headers"]["Range"]
                        .as_str()
                        .or_else(|| entry["headers"]["range"].as_str())
                        .map(str::to_string),
                }
            })
            .collect()
    }

    /// Creates a bucket with a plain HTTP PUT (moto needs no signature for this).
    pub fn create_bucket(&self, bucket: &str) {
        let status = self.request("PUT", &format!("/{bucket}"));
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "create bucket {bucket}: {status}"
        );
    }

    /// Deletes every object under `prefix` whose key ends with `suffix` (through boto3, which
    /// moto brings, so the request is signed as a real client's); returns the deleted keys.
    pub fn delete_objects(&self, bucket: &str, prefix: &str, suffix: &str) -> Vec<String> {
        let script = format!(
            "import boto3\n\
             s3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='testing', aws_secret_access_key='testing', region_name='us-east-1')\n\
             for o in s3.list_objects_v2(Bucket='{bucket}', Prefix='{prefix}').get('Contents', []):\n\
             \x20   if o['Key'].endswith('{suffix}'):\n\
             \x20       s3.delete_object(Bucket='{bucket}', Key=o['Key'])\n\
             \x20       print(o['Key'])\n",
            self.endpoint()
        );
        let out = Command::new("python3")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "boto3: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn request(&self, method: &str, path: &str) -> String {
        http(&format!("127.0.0.1:{}", self.port), method, path)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every object key under `dir` of a local store with the given suffix.
pub fn store_files(store: &Path, dir: &str, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(store.join(dir))
        .map(|rd| {
            rd.map(|e| e.unwrap().path())
                .filter(|p| p.to_string_lossy().ends_with(suffix))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// A token for the peer tests.
pub const PEER_TOKEN: &str = "test-token-0123456789abcdef";

/// A `thaw cache-server` process of a world, killed on drop.
pub struct CacheServerProc {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its port (kept across restarts).
    pub port: u16,
    /// Its disk cache.
    pub cache_dir: PathBuf,
    /// Its stderr log.
    pub log: PathBuf,
}

impl World {
    /// Starts a cache server on `port` (0: a free one) with its own disk cache `name`, the
    /// shared test token and `extra` options and environment.
    pub fn cache_server(
        &self,
        name: &str,
        port: u16,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> CacheServerProc {
        let port = if port == 0 { free_port() } else { port };
        let cache_dir = self.path(&format!("{name}-cache"));
        let log = self.path(&format!("{name}.log"));
        let mut command = self.thaw();
        command
            .env("THAW_PEER_TOKEN", PEER_TOKEN)
            .args(["cache-server", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--cache-dir")
            .arg(&cache_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).unwrap());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let mut first_line = String::new();
        let mut stdout = child.stdout.take().unwrap();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
            first_line.push(byte[0] as char);
        }
        let url = first_line
            .strip_prefix("thaw cache-server listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "cache server {name} did not start: {first_line:?}\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        CacheServerProc {
            child,
            url,
            port,
            cache_dir,
            log,
        }
    }
}

/// True when process `pid` ignores SIGPIPE (bit 13 of `SigIgn` in /proc/PID/status).
pub fn ignores_sigpipe(pid: u32) -> bool {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
        .unwrap();
    mask & (1 << (libc::SIGPIPE - 1)) != 0
}

impl CacheServerProc {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }

    /// Its Prometheus metrics.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        scrape(&format!("{}/metrics", self.url))
    }

    /// One metric, 0 when absent.
    pub fn metric(&self, name: &str) -> f64 {
        self.metrics().get(name).copied().unwrap_or(0.0)
    }

    /// SIGKILL, and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; waits for a clean exit.
    pub fn stop(&mut self) {
        // SAFETY: kill(2) on the child this guard started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "cache server exited with {status}");
    }
}

impl Drop for CacheServerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A misbehaving HTTP peer (a python process): `corrupt` answers every GET with 200 and the
/// right number of wrong bytes; `hang` accepts connections and never answers.
pub struct FakePeer {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl FakePeer {
    pub fn start(kind: &str) -> Self {
        let port = free_port();
        let script = match kind {
            "corrupt" => format!(
                "import http.server, urllib.parse\n\
                 class H(http.server.BaseHTTPRequestHandler):\n\
                 \x20   def do_GET(self):\n\
                 \x20       q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)\n\
                 \x20       n = int(q.get('raw', ['1000'])[0])\n\
                 \x20       self.send_response(200)\n\
                 \x20       self.send_header('Content-Length', str(n))\n\
                 \x20       self.end_headers()\n\
                 \x20       self.wfile.write(b'\\xee' * n)\n\
                 \x20   def log_message(self, *a):\n\
                 \x20       pass\n\
                 http.server.ThreadingHTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"
            ),
            "hang" => format!(
                "import socket, time\n\
                 s = socket.socket()\n\
                 s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                 s.bind(('127.0.0.1', {port}))\n\
                 s.listen(1000)\n\
                 held = []\n\
                 while True:\n\
                 \x20   c, _ = s.accept()\n\
                 \x20   held.append(c)\n"
            ),
            other => panic!("no fake peer {other}"),
        };
        let child = Command::new("python3")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "fake peer {kind} did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        FakePeer {
            child,
            addr: format!("127.0.0.1:{port}"),
        }
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (name, dtype, shape, bytes) of one safetensors tensor.
pub type Tensor = (&'static str, &'static str, Vec<u64>, Vec<u8>);

/// Writes a safetensors file; returns each tensor's blake3 by name.
pub fn write_safetensors(path: &Path, tensors: &[Tensor]) -> BTreeMap<String, String> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    let mut digests = BTreeMap::new();
    for (name, dtype, shape, bytes) in tensors {
        let begin = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [begin, data.len()]}),
        );
        digests.insert(name.to_string(), blake3::hash(bytes).to_hex().to_string());
    }
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let json = serde_json::to_vec(&header).unwrap();
    let mut file = (json.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&json);
    file.extend_from_slice(&data);
    fs::write(path, file).unwrap();
    digests
}
