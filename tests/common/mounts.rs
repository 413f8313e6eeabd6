//! `thaw mount --daemon` in a test, unmounted however the test ends, and its metrics.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::*;

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
    thaw_sys::skip::skipped(test, "no /dev/fuse on this machine (FUSE mounts need it)");
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

/// `thaw mount status DIR --json`.
pub fn mount_status(w: &World, dir: &Path) -> serde_json::Value {
    serde_json::from_str(&w.ok(&["mount", "status", dir.to_str().unwrap(), "--json"])).unwrap()
}

/// Waits (up to 30 s) until `done` holds for the mount's status.
pub fn wait_for_status(
    w: &World,
    dir: &Path,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = mount_status(w, dir);
        if done(&now) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {now:#}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether background class `class` has settled every chunk it queued (at least one).
pub fn settled(status: &serde_json::Value, class: &str) -> bool {
    let report = &status["background"][class];
    let count = |field: &str| report[field].as_u64().unwrap_or(0);
    count("queued") > 0 && count("fetched") + count("failed") + count("skipped") >= count("queued")
}
