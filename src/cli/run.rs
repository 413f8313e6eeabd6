//! `thaw run`: start a container from an indexed image without pulling or unpacking it. The
//! image is mounted lazily, a writable overlay goes on top, and crun (or runc) runs the image's
//! command in it; the mount's access trace makes the next start prefetch what this one read.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use thaw_indexer::image::bundle::{resolve_user, runtime_spec, ImageRuntime};
use thaw_indexer::image::CONFIG_ANNOTATION;

use super::container::{exit_code, find_runtime, write_bundle, Overlay};
use super::daemon_mount::DaemonMount;
use super::GlobalOptions;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Tag or manifest id of an image (`thaw index image`).
    name: String,
    /// Command and arguments, after `--` (replace the image's Cmd; its Entrypoint stays).
    #[arg(last = true)]
    command: Vec<String>,
    /// Replace the image's Entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Set an environment variable (KEY=VALUE), repeatable.
    #[arg(long, short)]
    env: Vec<String>,
    /// Working directory inside the container [default: the image's].
    #[arg(long, short)]
    workdir: Option<String>,
    /// User (uid[:gid] or name[:group]) [default: the image's].
    #[arg(long, short)]
    user: Option<String>,
    /// OCI runtime: crun, runc or a path [default: crun, else runc; runc first where cgroup v1
    /// and v2 are mounted side by side].
    #[arg(long)]
    runtime: Option<String>,
    /// Keep the bundle and the overlay's upper directory after the container exits.
    #[arg(long)]
    keep: bool,
    /// Print how long each stage took (stderr).
    #[arg(long)]
    timing: bool,
}

/// Runs `thaw run`: returns the container's exit status.
pub async fn run(global: &GlobalOptions, args: RunArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let runtime_bin = find_runtime(args.runtime.as_deref())?;
    let store = global.open_store()?;
    let (manifest, _) = store.open_manifest(&args.name).await?;
    let image =
        ImageRuntime::from_annotation(&args.name, manifest.annotations().get(CONFIG_ANNOTATION))?;
    let id = format!(
        "thaw-{}-{}",
        std::process::id(),
        &manifest.id().to_hex()[..12]
    );
    let dir = thaw_fs::control::runtime_dir().join("containers").join(&id);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = run_in(global, &args, &image, &runtime_bin, &id, &dir, started).await;
    if !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn run_in(
    global: &GlobalOptions,
    args: &RunArgs,
    image: &ImageRuntime,
    runtime_bin: &Path,
    id: &str,
    dir: &Path,
    started: Instant,
) -> anyhow::Result<ExitCode> {
    let stage = |what: &str| {
        if args.timing {
            eprintln!(
                "thaw run: {what} at {:.3}s",
                started.elapsed().as_secs_f64()
            );
        }
    };
    let mount = DaemonMount::start(global, &args.name, &dir.join("image"))?;
    stage("image mounted");
    let rootfs = dir.join("rootfs");
    let overlay = Overlay::mount(mount.dir(), &dir.join("upper"), &dir.join("work"), &rootfs)?;
    let user = resolve_user(args.user.as_deref().unwrap_or(&image.user), &rootfs)?;
    let entrypoint = args.entrypoint.as_ref().map(|e| vec![e.clone()]);
    let process_args = image.args(&args.command, entrypoint.as_deref());
    if process_args.is_empty() {
        bail!(
            "{}: the image has no Entrypoint or Cmd: give a command after --",
            args.name
        );
    }
    let cwd = args
        .workdir
        .clone()
        .unwrap_or_else(|| image.working_dir.clone());
    let spec = runtime_spec(
        &process_args,
        &image.environment(&args.env),
        &cwd,
        user,
        &rootfs,
        "thaw",
    );
    let bundle = write_bundle(&dir.join("bundle"), &spec)?;
    stage("bundle written, starting the container");
    let status = tokio::process::Command::new(runtime_bin)
        .arg("run")
        .arg("--bundle")
        .arg(&bundle)
        .arg(id)
        .status()
        .await
        .with_context(|| format!("running {}", runtime_bin.display()))?;
    stage("container exited");
    drop(overlay);
    drop(mount);
    Ok(ExitCode::from(exit_code(&status)))
}
