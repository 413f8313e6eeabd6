//! OCI test parts: a real registry (Debian's docker-registry, distribution 2.8) on loopback,
//! optionally behind htpasswd basic auth, and helpers running umoci and skopeo to build images.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{describe, free_port, http};

/// Whether the OCI tools are installed (scripts/setup installs them). Tests say so and return
/// early where they are not.
pub fn oci_tools_available(test: &str) -> bool {
    let missing: Vec<&str> = ["docker-registry", "umoci", "skopeo"]
        .into_iter()
        .filter(|tool| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let reason = format!(
        "{} not installed (scripts/setup installs them)",
        missing.join(", ")
    );
    thaw_sys::skip::skipped(test, &reason);
    false
}

/// Runs a tool; panics with its output unless it exits 0.
pub fn run_tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}",
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A docker-registry process on a free loopback port, killed when dropped.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl Registry {
    /// Starts a registry storing under `dir`; with `user`, behind htpasswd basic auth.
    pub fn start(dir: &Path, user: Option<(&str, &str)>) -> Registry {
        fs::create_dir_all(dir).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.join("data").display()
        );
        if let Some((name, password)) = user {
            let htpasswd = dir.join("htpasswd");
            run_tool(
                "htpasswd",
                &["-Bbc", htpasswd.to_str().unwrap(), name, password],
            );
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: thaw-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.join("config.yml");
        fs::write(&config_path, config).unwrap();
        let log = fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut registry = Registry { child, addr };
        // Ready when /v2/ answers (200, or 401 behind auth), not merely when the port accepts.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                matches!(registry.child.try_wait(), Ok(None)),
                "the registry exited: see {}",
                dir.join("registry.log").display()
            );
            if std::net::TcpStream::connect(&registry.addr).is_ok()
                && http(&registry.addr, "GET", "/v2/").starts_with("HTTP/1.1")
            {
                return registry;
            }
            assert!(
                Instant::now() < deadline,
                "the registry did not start: {}",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Pushes `oci:LAYOUT:TAG` (all platforms of an index) to `REPO:TAG` here.
    pub fn push(&self, layout: &Path, tag: &str, repo: &str, creds: Option<&str>) {
        let src = format!("oci:{}:{tag}", layout.display());
        let dest = format!("docker://{}/{repo}:{tag}", self.addr);
        let mut args = vec!["copy", "--all", "--dest-tls-verify=false"];
        if let Some(creds) = creds {
            args.extend(["--dest-creds", creds]);
        }
        args.extend([src.as_str(), dest.as_str()]);
        run_tool("skopeo", &args);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OCI layout built with umoci; images are made by unpacking, changing and repacking.
pub struct Layout {
    /// The layout folder.
    pub dir: PathBuf,
}

impl Layout {
    /// A new layout with an empty image `tag`.
    pub fn new(dir: &Path, tag: &str) -> Layout {
        let layout = Layout {
            dir: dir.to_path_buf(),
        };
        run_tool("umoci", &["init", "--layout", dir.to_str().unwrap()]);
        run_tool("umoci", &["new", "--image", &layout.image(tag)]);
        layout
    }

    /// `DIR:TAG`.
    pub fn image(&self, tag: &str) -> String {
        format!("{}:{tag}", self.dir.display())
    }

    /// Runs `umoci VERB --image DIR:TAG PATH`.
    fn umoci(&self, verb: &[&str], tag: &str, path: &Path) {
        let image = self.image(tag);
        let mut args = verb.to_vec();
        args.extend(["--image", image.as_str(), path.to_str().unwrap()]);
        run_tool("umoci", &args);
    }

    /// Unpacks `tag` into `bundle`, lets `change` edit its rootfs, repacks it as a new layer of
    /// `tag`.
    pub fn add_layer(&self, tag: &str, bundle: &Path, change: impl FnOnce(&Path)) {
        change(&self.unpack(tag, bundle));
        self.umoci(&["repack"], tag, bundle);
        fs::remove_dir_all(bundle).unwrap();
    }

    /// Adds `tar` verbatim as a new layer of `tag`.
    pub fn add_raw_layer(&self, tag: &str, tar: &Path) {
        self.umoci(&["raw", "add-layer"], tag, tar);
    }

    /// Sets config fields of `tag` (`--config.cmd`, `--config.env`, ...).
    pub fn configure(&self, tag: &str, args: &[&str]) {
        let image = self.image(tag);
        let mut all = vec!["config", "--image", image.as_str()];
        all.extend_from_slice(args);
        run_tool("umoci", &all);
    }

    /// What a runtime unpacks: `umoci unpack` of `tag` into `bundle`; returns its rootfs.
    pub fn unpack(&self, tag: &str, bundle: &Path) -> PathBuf {
        self.umoci(&["unpack"], tag, bundle);
        bundle.join("rootfs")
    }
}

/// Copies `binary` and the shared libraries `ldd` lists into `rootfs` at the same paths.
pub fn copy_with_libraries(binary: &str, rootfs: &Path) {
    let ldd = run_tool("ldd", &[binary]);
    let mut files = vec![binary.to_string()];
    for line in ldd.lines() {
        if let Some(path) = line.split_whitespace().find(|w| w.starts_with('/')) {
            files.push(path.to_string());
        }
    }
    for file in files {
        let real = fs::canonicalize(&file).unwrap();
        let dest = rootfs.join(file.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(&real, &dest).unwrap();
    }
}

/// The host's Python (Debian's /usr/bin/python3 where present: an interpreter whose standard
/// library lives in one directory) copied into `rootfs` at the same paths: the interpreter, its
/// standard library without tests, packages and the larger unused parts, the extension modules
/// and every shared library they load. Returns the interpreter's path.
pub fn copy_python(rootfs: &Path) -> String {
    let python = match Path::new("/usr/bin/python3").exists() {
        true => "/usr/bin/python3",
        false => "python3",
    };
    let paths = run_tool(
        python,
        &[
            "-c",
            "import os, sys, sysconfig; print(os.path.realpath(sys.executable)); \
             print(sysconfig.get_paths()['stdlib']); print(sysconfig.get_config_var('DESTSHARED'))",
        ],
    );
    let mut lines = paths.lines();
    let (exe, stdlib, dynload) = (
        lines.next().unwrap().to_string(),
        lines.next().unwrap().to_string(),
        lines.next().unwrap().to_string(),
    );
    copy_with_libraries(&exe, rootfs);
    let dest = rootfs.join(stdlib.trim_start_matches('/'));
    fs::create_dir_all(&dest).unwrap();
    let excluded = [
        "test",
        "site-packages",
        "dist-packages",
        "idlelib",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "lib2to3",
        "config-*",
        "pydoc_data",
        "__pycache__",
        "distutils",
        "sqlite3",
        "curses",
        "dbm",
    ];
    let mut script = format!("tar -C {stdlib} -cf -");
    for name in excluded {
        script.push_str(&format!(" --exclude='./{name}' --exclude='{name}'"));
    }
    script.push_str(&format!(" . | tar -C {} -xf -", dest.display()));
    run_tool("sh", &["-c", &script]);
    for entry in fs::read_dir(&dynload).unwrap().flatten() {
        copy_with_libraries(&entry.path().display().to_string(), rootfs);
    }
    let bin = rootfs.join("usr/bin");
    fs::create_dir_all(&bin).unwrap();
    let link = bin.join("python3");
    if fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink(&exe, &link).unwrap();
    }
    exe
}
