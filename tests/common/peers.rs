//! Peer cache servers of a world (`thaw cache-server` processes) and misbehaving fake peers.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

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
