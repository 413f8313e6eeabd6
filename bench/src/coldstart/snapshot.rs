//! Path 5: restore a container snapshot of the ready server instead of starting it, as `thaw run
//! --from-snapshot` does on a node that has never run it.
//!
//! The snapshot is taken once, unmeasured, the way `thaw run IMAGE --snapshot NAME
//! --snapshot-when-ready` takes it (thaw-replica's [`take`]): the container started by runc
//! from the lazily mounted image, readiness awaited, runc's checkpoint (CRIU inside the
//! container's namespaces), and the CRIU images, the writable layer and the record stored as
//! `snapshot/NAME`. Its container, directory and mounts are gone before any restore.
//!
//! Every restore then runs on a fresh node: its own runtime directory, the benchmark's cache
//! emptied and the page cache dropped (the caller's [`super::Bench::reset_node`]). It is
//! thaw-replica's [`restore`]: the image and the snapshot's images mounted lazily, the writable
//! layer extracted from the store, runc's restore with memory paged in by CRIU's lazy-pages
//! daemon (`--no-lazy-pages`: all of it read first); the time runs from the call to the first
//! answer of the readiness probe.
//!
//! What a restored container reads from its image (the pages of the files it had mapped) is not
//! what a fresh start reads, so restores mount the image with their own trace profile
//! ([`thaw_replica::restore::RESTORE_TRACE_PROFILE`]); one unmeasured restore right after the
//! snapshot records it, as the lazy path's previous mount records the start-up trace.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use thaw_client::Config;
use thaw_container::logs::RunLogs;
use thaw_container::readiness::{Liveness, Readiness};
use thaw_container::runtime::Runtime;
use thaw_replica::launch::{self, LaunchOptions};
use thaw_replica::restore::{restore, RestoreOptions};
use thaw_replica::take::{take, TakeOptions};
use thaw_replica::Node;
use thaw_sys::process;

use super::report::{Run, Sources, Stages};
use super::Bench;

/// The runtime snapshots are taken and restored with unless `--runtime` names one: runc drives
/// CRIU itself (crun only when built with it).
const SNAPSHOT_RUNTIME: &str = "runc";

/// Why the snapshot path cannot run here, if it cannot.
pub fn unavailable(bench: &Bench) -> Option<String> {
    if bench.probe.readiness() == &Readiness::Exit {
        return Some(
            "readiness is the command's exit, and an exited container cannot be snapshotted \
             (use --ready-file or --ready-url)"
                .into(),
        );
    }
    if let Err(e) = thaw_snapshot::Criu::locate() {
        return Some(e.to_string());
    }
    match Runtime::find(Some(runtime_name(bench))) {
        Ok(runtime) => runtime.checkpoint_unsupported(),
        Err(e) => Some(e.to_string()),
    }
}

fn runtime_name<'b>(bench: &'b Bench) -> &'b str {
    bench.args.runtime.as_deref().unwrap_or(SNAPSHOT_RUNTIME)
}

/// A node for one start: the benchmark's cache and store settings, its own runtime directory
/// under `dir` (container directories, mount sockets), and this program for its mounts.
fn node(bench: &Bench<'_>, dir: &Path) -> anyhow::Result<Node> {
    let mut config = bench.child_options(false);
    config.runtime.dir = Some(dir.join("run"));
    let store = thaw_client::connect::open_store(&config)?;
    let exe = super::current_exe()?;
    let passed = config.clone();
    let thaw = Arc::new(move || {
        let mut command = std::process::Command::new(&exe);
        passed.pass_to(&mut command);
        command
    });
    Ok(Node::new(config, store, thaw))
}

/// A container snapshot of the ready server, stored as `snapshot/NAME`.
/// Dropped (at the end, or when the benchmark is interrupted), its tag and scratch files go.
pub struct Snapshot {
    name: String,
    dir: PathBuf,
    options: Config,
    /// What the container printed up to the checkpoint (a restored one goes on from there).
    output: String,
}

impl Snapshot {
    /// Starts the container from the lazily mounted image, waits until it is ready and stores
    /// a snapshot of it (the dump ends it); then restores it once, unmeasured, on a fresh node
    /// to record the restore trace.
    pub async fn take(bench: &mut Bench<'_>) -> anyhow::Result<Snapshot> {
        let dir = bench.work.join("snapshot");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // The guard comes first: whatever stops the rest, the tag and files go with it.
        let mut snapshot = Snapshot {
            name: format!("bench-coldstart-{}", std::process::id()),
            dir,
            options: bench.child_options(false),
            output: String::new(),
        };
        eprintln!("thaw: starting the container to snapshot it when ready");
        let logs = RunLogs::in_dir(&snapshot.dir);
        let node = node(bench, &snapshot.dir)?;
        let options = LaunchOptions {
            image: bench.args.tag.clone(),
            command: bench.args.command.clone(),
            env: bench.args.env.clone(),
            user: bench.args.user.clone(),
            runtime: Some(runtime_name(bench).to_string()),
            // The start that is dumped neither replays nor records a trace: the start-up
            // trace is the other paths'.
            mount_options: ["--no-prefetch", "--no-trace", "--no-passthrough"]
                .map(String::from)
                .to_vec(),
            logs: Some(logs.clone()),
            ..LaunchOptions::default()
        };
        let prepared = launch::prepare(&node, &options, &|_| {}).await?;
        let take_options = TakeOptions {
            name: snapshot.name.clone(),
            readiness: bench.probe.readiness().clone(),
            timeout: Duration::from_secs(bench.args.timeout),
            leave_running: false,
            tcp_established: false,
            // The whole container is dumped; no process outside it shares its files.
            file_locks: true,
        };
        let (container, taken) = take(&node, &prepared, &take_options, Arc::new(()))
            .await
            .map_err(|e| anyhow::anyhow!("{e}: {}", logs.error_tail()))?;
        drop(container);
        drop(prepared);
        eprintln!(
            "thaw: snapshot taken: ready after {:.2}s, checkpoint {:.2}s, {} stored in {:.2}s",
            taken.ready_seconds,
            taken.dump_seconds,
            bytesize::ByteSize(taken.bytes),
            taken.store_seconds
        );
        snapshot.output = logs.output();
        eprintln!("thaw: restoring once on a fresh node to record what a restore reads");
        bench.reset_node();
        let warm_up = snapshot.dir.join("restore-warm-up");
        snapshot
            .restore(bench, &warm_up)
            .await
            .context("the first, unmeasured restore")?;
        let _ = std::fs::remove_dir_all(&warm_up);
        Ok(snapshot)
    }

    /// One measured restore on a fresh node (the caller emptied the cache).
    pub async fn restore(&self, bench: &Bench<'_>, run_dir: &Path) -> anyhow::Result<Run> {
        std::fs::create_dir_all(run_dir)
            .with_context(|| format!("creating {}", run_dir.display()))?;
        let node = node(bench, run_dir)?;
        let logs = RunLogs::in_dir(run_dir);
        let options = RestoreOptions {
            name: self.name.clone(),
            runtime: Some(runtime_name(bench).to_string()),
            lazy_pages: !bench.args.no_lazy_pages,
            logs: Some(logs.clone()),
            ..RestoreOptions::default()
        };
        let started = Instant::now();
        let restored = restore(&node, &options, &|_| {}).await?;
        let restore_seconds = started.elapsed().as_secs_f64();
        let report = restored.report.clone();
        let pid = report.pid;
        let ready_at = Instant::now();
        let watch = || {
            Ok(match process::exists(pid) {
                true => Liveness::Running,
                false => Liveness::Gone,
            })
        };
        // A file is looked up in the container's own root.
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        let ready = bench
            .probe
            .wait(
                &format!("the restored container (pid {pid})"),
                &root,
                Duration::from_secs(bench.args.timeout),
                watch,
                || logs.error_tail(),
            )
            .await;
        let ready_seconds = ready_at.elapsed().as_secs_f64();
        let fetched = restored.fetched().await;
        drop(restored);
        ready?;
        let mount = report.check_seconds + report.mount_seconds;
        Ok(Run {
            stages: Stages {
                fetch: 0.0,
                mount,
                start: (restore_seconds - mount).max(0.0),
                ready: ready_seconds,
            },
            sources: Sources {
                registry: 0,
                store: fetched.store,
                peers: fetched.peers,
            },
            output: format!("{}{}", self.output, logs.output()),
        })
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if let Ok(exe) = std::env::current_exe() {
            let mut command = std::process::Command::new(exe);
            self.options.pass_to(&mut command);
            let _ = command
                .args(["snapshot", "rm", &self.name])
                .stdin(Stdio::null())
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
