//! Path 5: restore a CRIU snapshot of the ready process instead of starting it.
//!
//! CRIU dumps a process tree of the host's namespaces (a container's private namespaces need the
//! runtime's own checkpoint support), so this path runs the command chrooted into the same lazily
//! mounted image and overlay, with /proc and /dev mounted inside, in the host's namespaces. Once
//! it is ready, `thaw snapshot create` dumps it into the store. A measured run then mounts the
//! image again at the same path (cold cache), puts back the overlay's upper layer and the log
//! files as they were at the dump (on another node they would travel with the snapshot), runs
//! `thaw snapshot restore` (the images come from the store) and waits for readiness.
//!
//! What a restored process reads from its image (the pages of the libraries it had mapped) is not
//! what a fresh start reads, so restores mount the image with their own trace profile
//! ([`RESTORE_TRACE_PROFILE`]); one unmeasured restore right after the dump records it, as the
//! lazy path's previous mount records the start-up trace.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use thaw_container::chroot::{self, ChrootProcess};
use thaw_container::image::resolve_user;
use thaw_container::logs::RunLogs;
use thaw_container::readiness::{Liveness, Readiness};
use thaw_container::rootfs::ChrootRoot;
use thaw_snapshot::RestoreReport;
use thaw_sys::process;

use super::report::{Run, Sources, Stages};
use super::{mount_image, thaw_command, Bench};
use thaw_client::Config;
use thaw_fs::daemon::DaemonMount;

/// Why the snapshot path cannot run here, if it cannot.
pub fn unavailable(bench: &Bench) -> Option<String> {
    if bench.probe.readiness() == &Readiness::Exit {
        return Some(
            "readiness is the command's exit, and an exited process cannot be snapshotted \
             (use --ready-file or --ready-url)"
                .into(),
        );
    }
    thaw_snapshot::Criu::locate().err().map(|e| e.to_string())
}

/// The trace profile of the image mounts under restored processes.
pub const RESTORE_TRACE_PROFILE: &str = "restore";

/// The image mounted lazily with an overlay and /proc and /dev inside: the root the snapshotted
/// process runs in, always at the same paths.
/// Fields drop in order, innermost mount first (an interrupted benchmark leaves nothing mounted).
struct Root {
    root: ChrootRoot,
    image: DaemonMount,
}

impl Root {
    /// Mounts the root at `dir`: for the run that is dumped (neither replaying nor recording a
    /// trace: the start-up trace is the other paths') or, with `for_restore`, under a restored
    /// process (the restore profile's trace replayed and recorded).
    async fn mount(bench: &Bench<'_>, dir: &Path, for_restore: bool) -> anyhow::Result<Root> {
        let options = bench.child_options(false);
        let mount_options: &[&str] = match for_restore {
            true => &["--trace-profile", RESTORE_TRACE_PROFILE],
            false => &["--no-prefetch", "--no-trace", "--no-passthrough"],
        };
        let (image, overlay) = mount_image(&options, &bench.args.tag, dir, mount_options)?;
        let root = ChrootRoot::over(overlay)?;
        Ok(Root { root, image })
    }

    fn rootfs(&self) -> &Path {
        self.root.dir()
    }

    /// Unmounts everything; returns the image mount's counters taken first.
    async fn unmount(self) -> anyhow::Result<thaw_fs::control::MountStatus> {
        let Root { root, image } = self;
        let status = image.status().await;
        root.unmount();
        image.stop().await?;
        Ok(status?)
    }
}

/// A snapshot of the ready process, stored as `snapshot/NAME`.
/// Dropped (at the end, or when the benchmark is interrupted), its tag and scratch files go.
pub struct Snapshot {
    name: String,
    dir: PathBuf,
    options: Config,
}

/// Copies a directory tree with its metadata (`cp -a`).
async fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    Ok(thaw_sys::tree::copy_tree(from, to).await?)
}

/// A restored process tree (it leads its own session and process group), killed on drop.
struct RestoredTree(u32);

impl Drop for RestoredTree {
    fn drop(&mut self) {
        process::kill_tree(self.0);
    }
}

impl Snapshot {
    /// Starts the command chrooted into the mounted image, waits until it is ready and stores a
    /// snapshot of it (CRIU stops it); then restores it once, unmeasured, to record the restore
    /// trace.
    pub async fn take(bench: &mut Bench<'_>) -> anyhow::Result<Snapshot> {
        let dir = bench.work.join("snapshot");
        let _ = std::fs::remove_dir_all(&dir);
        let logs_dir = dir.join("logs");
        std::fs::create_dir_all(&logs_dir)
            .with_context(|| format!("creating {}", logs_dir.display()))?;
        // The guard comes first: whatever stops the rest, the tag and files go with it.
        let snapshot = Snapshot {
            name: format!("bench-coldstart-{}", std::process::id()),
            dir,
            options: bench.child_options(false),
        };
        eprintln!("thaw: starting the command chrooted into the image to snapshot it when ready");
        let root = Root::mount(bench, &snapshot.dir, false).await?;
        let dumped = Self::run_and_dump(bench, &root, &logs_dir, &snapshot.name).await;
        root.unmount().await?;
        dumped?;
        snapshot.record_restore_trace(bench).await?;
        Ok(snapshot)
    }

    /// Keeps the overlay's upper layer and the logs as the dump left them (what a restored
    /// process expects to find), and restores once to record what a restore reads.
    async fn record_restore_trace(&self, bench: &mut Bench<'_>) -> anyhow::Result<()> {
        copy_tree(&self.dir.join("upper"), &self.dir.join("upper.dumped")).await?;
        copy_tree(&self.dir.join("logs"), &self.dir.join("logs.dumped")).await?;
        eprintln!("thaw: restoring once to record what a restore reads");
        bench.reset_node();
        let warm_up = self.dir.join("restore-warm-up");
        self.restore(bench, &warm_up)
            .await
            .context("the first, unmeasured restore")?;
        let _ = std::fs::remove_dir_all(&warm_up);
        Ok(())
    }

    async fn run_and_dump(
        bench: &Bench<'_>,
        root: &Root,
        logs_dir: &Path,
        name: &str,
    ) -> anyhow::Result<()> {
        let rootfs = root.rootfs();
        let logs = RunLogs::in_dir(logs_dir);
        let (uid, gid) = resolve_user(
            bench.args.user.as_deref().unwrap_or(&bench.image.user),
            rootfs,
        )?;
        let process = ChrootProcess {
            args: &bench.process_args,
            env: &bench.environment,
            cwd: &bench.image.working_dir,
            user: (uid, gid),
        };
        let mut child = chroot::spawn(rootfs, &process, &logs)?;
        let pid = child.id().context("the started process's pid")?;
        let timeout = Duration::from_secs(bench.args.timeout);
        let watch = || {
            Ok(match child.try_wait()? {
                Some(status) => Liveness::Exited(status),
                None => Liveness::Running,
            })
        };
        bench
            .probe
            .wait("the command", rootfs, timeout, watch, || logs.error_tail())
            .await?;
        let options = bench.child_options(false);
        let created = thaw_command(
            &options,
            &[
                "snapshot",
                "create",
                "--pid",
                &pid.to_string(),
                "--tag",
                name,
                // The command's whole tree is dumped; no process outside it shares its files.
                "--file-locks",
                "-q",
            ],
            "snapshotting the ready process",
        )
        .await;
        if created.is_err() {
            let _ = child.start_kill();
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
        created.map(|_| ())
    }

    /// One measured restore on a cold node.
    pub async fn restore(&self, bench: &Bench<'_>, run_dir: &Path) -> anyhow::Result<Run> {
        copy_tree(&self.dir.join("upper.dumped"), &self.dir.join("upper")).await?;
        copy_tree(&self.dir.join("logs.dumped"), &self.dir.join("logs")).await?;
        let _ = std::fs::remove_dir_all(self.dir.join("work"));
        std::fs::create_dir_all(run_dir)
            .with_context(|| format!("creating {}", run_dir.display()))?;
        let mounted = Instant::now();
        let root = Root::mount(bench, &self.dir, true).await?;
        let mount = mounted.elapsed().as_secs_f64();
        let restored = self.restore_in(bench, &root, run_dir, mount).await;
        let status = root.unmount().await;
        let mut run = restored?;
        let status = status?;
        run.sources.store += status.store_bytes;
        run.sources.peers += status.peer_bytes;
        Ok(run)
    }

    async fn restore_in(
        &self,
        bench: &Bench<'_>,
        root: &Root,
        run_dir: &Path,
        mount: f64,
    ) -> anyhow::Result<Run> {
        let options = bench.child_options(false);
        let started = Instant::now();
        let work_dir = run_dir.display().to_string();
        let answer = thaw_command(
            &options,
            &[
                "snapshot",
                "restore",
                &self.name,
                "--json",
                "--work-dir",
                &work_dir,
            ],
            "restoring the snapshot",
        )
        .await?;
        let restore_seconds = started.elapsed().as_secs_f64();
        let answer: RestoreReport = serde_json::from_str(answer.trim())
            .with_context(|| format!("reading thaw snapshot restore's answer {answer:?}"))?;
        let pid = answer.pid;
        let restored_tree = RestoredTree(pid);
        let fetch = answer.fetch_seconds;
        let restored = Instant::now();
        let watch = || {
            Ok(match process::exists(pid) {
                true => Liveness::Running,
                false => Liveness::Gone,
            })
        };
        let ready = bench
            .probe
            .wait(
                &format!("the restored process {pid}"),
                root.rootfs(),
                Duration::from_secs(bench.args.timeout),
                watch,
                String::new,
            )
            .await;
        let ready_seconds = restored.elapsed().as_secs_f64();
        drop(restored_tree);
        process::wait_gone(pid, Duration::from_secs(30)).await;
        ready?;
        Ok(Run {
            stages: Stages {
                fetch,
                mount,
                start: (restore_seconds - fetch).max(0.0),
                ready: ready_seconds,
            },
            sources: Sources {
                registry: 0,
                store: answer.store_bytes,
                peers: answer.peer_bytes,
            },
            output: RunLogs::in_dir(&self.dir.join("logs")).output(),
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
