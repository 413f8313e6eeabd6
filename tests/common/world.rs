//! A scratch world per test (store, cache and runtime dirs) and running the real `thaw` in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::*;

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

    /// This world with `name=value` in every `thaw` it runs (replacing an earlier value).
    pub fn with_env(mut self, name: &str, value: &str) -> Self {
        self.extra_env.retain(|(k, _)| k != name);
        self.extra_env.push((name.into(), value.into()));
        self
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
