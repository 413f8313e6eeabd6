//! A real containerd (Debian's, 1.6) with its own root, state directory and socket, and a
//! `proxy_plugins` entry naming the thaw snapshotter's socket; and the snapshotter itself as a
//! `thaw snapshotter` process of a test's world. Dropping either stops it; dropping the
//! containerd also lazily unmounts whatever is left mounted under the test's directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{describe, World};

/// Whether containerd, ctr and a runtime are installed and this is root; says why not.
pub fn containerd_available(test: &str) -> bool {
    let have = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let missing: Vec<&str> = ["containerd", "ctr", "containerd-shim-runc-v2", "runc"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if !missing.is_empty() {
        let reason = format!(
            "{} not installed (scripts/setup installs them)",
            missing.join(", ")
        );
        thaw_sys::skip::skipped(test, &reason);
        return false;
    }
    if !super::is_root() {
        thaw_sys::skip::skipped(test, "containerd needs root");
        return false;
    }
    true
}

fn wait_for(what: &str, path: &Path, mut alive: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(alive(), "{what} exited before {} appeared", path.display());
        assert!(Instant::now() < deadline, "{what}: no {}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A containerd process, killed (and everything under its directory unmounted) on drop.
pub struct Containerd {
    child: Child,
    dir: PathBuf,
    /// containerd's socket.
    pub socket: PathBuf,
}

impl Containerd {
    /// Starts containerd under `dir`, with the snapshotter at `snapshotter` as `thaw`.
    pub fn start(dir: &Path, snapshotter: &Path) -> Containerd {
        fs::create_dir_all(dir).unwrap();
        let socket = dir.join("containerd.sock");
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{socket}\"\n\
             [ttrpc]\n  address = \"{socket}.ttrpc\"\n\
             [debug]\n  address = \"{socket}.debug\"\n\
             [proxy_plugins]\n  [proxy_plugins.thaw]\n    type = \"snapshot\"\n    address = \"{snap}\"\n",
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            socket = socket.display(),
            snap = snapshotter.display(),
        );
        let config_path = dir.join("config.toml");
        fs::write(&config_path, config).unwrap();
        let log = fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut c = Containerd {
            child,
            dir: dir.to_path_buf(),
            socket,
        };
        let socket = c.socket.clone();
        wait_for("containerd", &socket, || {
            matches!(c.child.try_wait(), Ok(None))
        });
        c
    }

    /// `ctr -a SOCKET ARGS...`, not yet run.
    pub fn ctr(&self, args: &[&str]) -> Command {
        let mut command = Command::new("ctr");
        command.arg("-a").arg(&self.socket).args(args);
        command.stdin(Stdio::null());
        command
    }

    /// Runs ctr; panics with its output and containerd's log unless it exits 0.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args).output().unwrap();
        self.check(&out, args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Panics with `out`, naming `args` and containerd's log, unless it succeeded.
    pub fn check(&self, out: &Output, args: &[&str]) {
        assert!(
            out.status.success(),
            "ctr {args:?} failed:\n{}\ncontainerd's log:\n{}",
            describe(out),
            fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
        );
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("pkill")
            .args([
                "-f",
                &format!("containerd-shim-runc-v2 .*{}", self.dir.display()),
            ])
            .status();
        unmount_under(self.dir.parent().unwrap_or(&self.dir));
    }
}

/// Lazily unmounts every mount under `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let prefix = dir.display().to_string();
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = thaw_sys::mount::unmount(Path::new(point), true);
    }
}

/// A `thaw snapshotter` of a world, killed on drop.
pub struct Snapshotter {
    child: Child,
    /// Its socket.
    pub socket: PathBuf,
    /// Its root.
    pub root: PathBuf,
}

impl Snapshotter {
    /// Starts `thaw snapshotter` in `w` at `socket` with `root`, passing `extra` arguments;
    /// returns once its socket exists.
    pub fn start(w: &World, socket: &Path, root: &Path, extra: &[&str]) -> Snapshotter {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(w.path("snapshotter.log"))
            .unwrap();
        let _ = fs::remove_file(socket);
        let child = w
            .thaw()
            .args(["-v", "snapshotter", "--address"])
            .arg(socket)
            .arg("--root")
            .arg(root)
            .args(extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut s = Snapshotter {
            child,
            socket: socket.to_path_buf(),
            root: root.to_path_buf(),
        };
        let path = socket.to_path_buf();
        wait_for("thaw snapshotter", &path, || {
            matches!(s.child.try_wait(), Ok(None))
        });
        s
    }

    /// Kills it with SIGKILL (no cleanup of any kind) and waits for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
