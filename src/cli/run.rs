//! `thaw run`: start a container from an indexed image without pulling or unpacking it. The
//! image is mounted lazily, a writable overlay goes on top, and crun (or runc) runs the image's
//! command in it; the mount's access trace makes the next start prefetch what this one read.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::bail;
use clap::Args;
use thaw_container::image::{resolve_user, ImageRuntime};
use thaw_container::rootfs::Overlay;
use thaw_container::runtime::{ContainerDir, Runtime};
use thaw_container::{exit_code, spec};

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
    /// Mount the image without FUSE passthrough (for a container you will snapshot: CRIU
    /// cannot dump a process whose files the kernel reads from disk cache files).
    #[arg(long)]
    no_passthrough: bool,
    /// Print how long each stage took (stderr).
    #[arg(long)]
    timing: bool,
}

/// Runs `thaw run`: returns the container's exit status.
pub async fn run(global: &GlobalOptions, args: RunArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let stage = |what: &str| {
        if args.timing {
            let seconds = started.elapsed().as_secs_f64();
            eprintln!("thaw run: {what} at {seconds:.3}s");
        }
    };
    let runtime = Runtime::find(args.runtime.as_deref())?;
    let store = global.open_store()?;
    let (manifest, _) = store.open_manifest(&args.name).await?;
    let image = ImageRuntime::of_manifest(&args.name, &manifest)?;
    let entrypoint = args.entrypoint.as_ref().map(|e| vec![e.clone()]);
    let process_args = image.args(&args.command, entrypoint.as_deref());
    if process_args.is_empty() {
        bail!(
            "{}: the image has no Entrypoint or Cmd: give a command after --",
            args.name
        );
    }
    let id = format!(
        "thaw-{}-{}",
        std::process::id(),
        &manifest.id().to_hex()[..12]
    );
    let dir = ContainerDir::create(global.runtime_dir().join("containers").join(&id), args.keep)?;
    let dir = dir.path();
    let mount_options: &[&str] = match args.no_passthrough {
        true => &["--no-passthrough"],
        false => &[],
    };
    let mount = global.start_mount(&args.name, &dir.join("image"), mount_options)?;
    stage("image mounted");
    let overlay = Overlay::in_dir(mount.dir(), dir)?;
    let user = resolve_user(args.user.as_deref().unwrap_or(&image.user), overlay.dir())?;
    let cwd = args.workdir.as_deref().unwrap_or(&image.working_dir);
    let environment = image.environment(&args.env);
    let spec = spec::runtime_spec(
        &process_args,
        &environment,
        cwd,
        user,
        overlay.dir(),
        "thaw",
    );
    let bundle = spec::write_bundle(&dir.join("bundle"), &spec)?;
    stage("bundle written, starting the container");
    let status = runtime.run(&bundle, &id).await?;
    stage("container exited");
    drop(overlay);
    drop(mount);
    Ok(ExitCode::from(exit_code(&status)))
}
