//! `thaw bench coldstart IMAGE -- CMD`: one start of an image's command, measured from a cold
//! node every way there is (pull + unpack + run; thaw lazy mount; with trace prefetch; with a warm
//! peer; restoring a snapshot), stage by stage, with the bytes each source delivered.
//!
//! Every path runs the same process with the same runtime spec through the same OCI runtime;
//! only where its root filesystem comes from differs. Before every measured run thaw's local cache
//! is emptied and the kernel page cache dropped (where permitted); the peer's cache stays warm,
//! as on another node of a cluster.

mod plot;
pub mod report;
mod snapshot;

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use thaw_container::image::{resolve_user, ImageRuntime};
use thaw_container::logs::RunLogs;
use thaw_container::readiness::{Probe, Readiness};
use thaw_container::rootfs::Overlay;
use thaw_container::runtime::{Runtime, StartTimes};
use thaw_container::spec::{runtime_spec, write_bundle};
use tokio::io::AsyncBufReadExt;

use report::{Outcome, PathKind, Report, Run, Setup, Sources, Stages};
use thaw_client::Config;
use thaw_fs::daemon::DaemonMount;

/// `thaw bench coldstart`.
#[derive(Args, Debug)]
pub struct ColdstartArgs {
    /// The image: docker://REGISTRY/REPO[:TAG|@DIGEST], oci:DIR[:TAG] or docker-archive:FILE.
    image: String,
    /// Command and arguments, after `--` (replace the image's Cmd; its Entrypoint stays)
    /// [default: the image's].
    #[arg(last = true)]
    command: Vec<String>,
    /// Ready when this path (inside the container) exists [default: when the command exits 0].
    #[arg(long, conflicts_with = "ready_url")]
    ready_file: Option<PathBuf>,
    /// Ready when a GET of this URL answers 2xx (the container uses the host's network).
    #[arg(long)]
    ready_url: Option<String>,
    /// Fail a path whose command output does not contain this text (proves each path ran it).
    #[arg(long)]
    expect_output: Option<String>,
    /// The paths to measure, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = PathKind::ALL)]
    paths: Vec<PathKind>,
    /// Measured runs per path (the table shows the median).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Milliseconds added to every object store read, to model a remote store.
    #[arg(long)]
    store_latency_ms: Option<u64>,
    /// Seconds a start may take before the benchmark gives up.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Set an environment variable (KEY=VALUE) for the command, repeatable.
    #[arg(long, short)]
    env: Vec<String>,
    /// User (uid[:gid] or name[:group]) [default: the image's].
    #[arg(long, short)]
    user: Option<String>,
    /// OCI runtime: crun, runc or a path (as `thaw run`).
    #[arg(long)]
    runtime: Option<String>,
    /// Platform of a multi-platform image (os/arch[/variant]).
    #[arg(long)]
    platform: Option<String>,
    /// Allow plain HTTP to the registry.
    #[arg(long)]
    insecure: bool,
    /// Tag the image is indexed under.
    #[arg(long, default_value = "bench/coldstart")]
    tag: String,
    /// One more `thaw mount` option for every thaw path (repeatable), e.g.
    /// `--mount-arg=--fetch-all-below=0`.
    #[arg(long, allow_hyphen_values = true)]
    mount_arg: Vec<String>,
    /// The snapshot path reads all of the process's memory before it runs (default: paged in
    /// lazily, as `thaw run --from-snapshot`).
    #[arg(long)]
    no_lazy_pages: bool,
    /// An earlier version of the image: indexed under the same tag first and started once
    /// (unmeasured) to record its trace, which the `first` path then carries over.
    #[arg(long)]
    previous_image: Option<String>,
    /// Scratch directory (caches, unpacked images, logs), removed afterwards unless given
    /// [default: bench-coldstart-PID next to thaw's cache directory].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Print the result as JSON (the input of `thaw bench utilisation --coldstart-json`).
    #[arg(long)]
    json: bool,
    /// Also write the JSON result to this file (whichever of table or JSON is printed).
    #[arg(long)]
    save_json: Option<PathBuf>,
    /// Also draw the stage breakdown per path into this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// Runs `thaw bench coldstart`.
pub async fn run(global: &Config, args: ColdstartArgs) -> anyhow::Result<ExitCode> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("thaw bench coldstart needs root: it mounts overlays and runs containers");
    }
    // On disk next to thaw's cache (the naive path unpacks the whole image there), not in the
    // runtime dir, which is often a small tmpfs.
    let work = args.work_dir.clone().unwrap_or_else(|| {
        let cache = global
            .cache
            .dir
            .clone()
            .unwrap_or_else(thaw_core::dirs::default_cache);
        cache
            .parent()
            .unwrap_or(&cache)
            .join(format!("bench-coldstart-{}", std::process::id()))
    });
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let measured = async {
        let mut bench = Bench::prepare(global, &args, &work).await?;
        bench.measure_all().await
    };
    // On Ctrl-C the measurement is dropped: its guards unmount, delete the container and stop
    // the peer before the scratch directory goes.
    let result = tokio::select! {
        result = measured => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if args.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
    let report = result?;
    if let Some(file) = &args.plot {
        plot::draw(&report, file)?;
        eprintln!("thaw: plot written to {}", file.display());
    }
    let json = serde_json::to_string_pretty(&report.to_result())?;
    if let Some(file) = &args.save_json {
        std::fs::write(file, format!("{json}\n"))
            .with_context(|| format!("writing {}", file.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}

/// A `thaw cache-server` on loopback standing in for a warm peer on another node (killed with
/// its handle).
struct PeerServer {
    _child: tokio::process::Child,
    url: String,
}

impl PeerServer {
    /// Starts one over `global`'s store with its own cache in `dir/cache` (its log in
    /// `dir/log`).
    async fn start(global: &Config, dir: &Path) -> anyhow::Result<Self> {
        let mut options = global.clone();
        options.cache.dir = Some(dir.join("cache"));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let log_path = dir.join("log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut command = std::process::Command::new(current_exe()?);
        options.pass_to(&mut command);
        let mut child = tokio::process::Command::from(command)
            .args(["cache-server", "--listen", "127.0.0.1:0", "--no-auth"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting thaw cache-server")?;
        let stdout = child.stdout.take().context("the cache server's output")?;
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(30),
            tokio::io::BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .with_context(|| {
            format!(
                "the cache server did not start in 30 s (log: {})",
                log_path.display()
            )
        })??;
        let url = line
            .trim()
            .strip_prefix("thaw cache-server listening on ")
            .with_context(|| {
                format!(
                    "the cache server did not start: {}",
                    std::fs::read_to_string(&log_path)
                        .unwrap_or_default()
                        .trim()
                )
            })?
            .to_string();
        Ok(PeerServer { _child: child, url })
    }
}

/// The state shared by every path of one benchmark.
struct Bench<'a> {
    global: &'a Config,
    args: &'a ColdstartArgs,
    work: PathBuf,
    image: ImageRuntime,
    runtime: Runtime,
    probe: Probe,
    process_args: Vec<String>,
    environment: Vec<String>,
    page_cache_dropped: bool,
    index_seconds: f64,
    peer: Option<PeerServer>,
    containers: usize,
    /// Manifest id of `--previous-image`, until its trace is recorded.
    previous: Option<String>,
}

/// Indexes `image` under the benchmark's tag (ahead of time, not part of a start).
async fn index_image(global: &Config, args: &ColdstartArgs, image: &str) -> anyhow::Result<()> {
    eprintln!("thaw: indexing {image} as {}", args.tag);
    let mut index = vec!["index", "image", image, "--tag", &args.tag, "-q"];
    if args.insecure {
        index.push("--insecure");
    }
    if let Some(platform) = &args.platform {
        index.extend(["--platform", platform]);
    }
    thaw_command(global, &index, &format!("indexing {image}"))
        .await
        .map(drop)
}

fn current_exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("locating the thaw binary")
}

/// Runs `command` to completion (killed if dropped before, as when the benchmark is
/// interrupted) and returns its standard output; a failure names `what` and its error output.
async fn stdout_of(mut command: tokio::process::Command, what: &str) -> anyhow::Result<String> {
    let program = command
        .as_std()
        .get_program()
        .to_string_lossy()
        .into_owned();
    let out = command
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("{what}: running {program}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({program}): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a helper program (skopeo, umoci) to completion.
async fn run_tool(program: &Path, args: &[&std::ffi::OsStr], what: &str) -> anyhow::Result<()> {
    let mut command = tokio::process::Command::new(program);
    command.args(args);
    stdout_of(command, what).await.map(drop)
}

/// Runs the thaw binary with `options`' store settings; returns its standard output.
async fn thaw_command(options: &Config, args: &[&str], what: &str) -> anyhow::Result<String> {
    let mut command = std::process::Command::new(current_exe()?);
    options.pass_to(&mut command);
    command.args(args);
    stdout_of(command.into(), what).await
}

/// Mounts `tag` lazily at `dir/image` (with more `thaw mount` options) under a writable overlay
/// at `dir/rootfs` (upper layer `dir/upper`).
fn mount_image(
    options: &Config,
    tag: &str,
    dir: &Path,
    mount_options: &[&str],
) -> anyhow::Result<(DaemonMount, Overlay)> {
    let image = start_mount(options, tag, &dir.join("image"), mount_options)?;
    let overlay = Overlay::in_dir(image.dir(), dir)?;
    Ok((image, overlay))
}

/// Mounts `tag` at `dir` in the background with `options`' configuration (and more `thaw mount`
/// options), unmounted when the handle drops.
fn start_mount(
    options: &Config,
    tag: &str,
    dir: &Path,
    mount_options: &[&str],
) -> anyhow::Result<DaemonMount> {
    let mut thaw = std::process::Command::new(current_exe()?);
    options.pass_to(&mut thaw);
    let runtime_dir = options.runtime_dir();
    Ok(DaemonMount::start(
        thaw,
        &runtime_dir,
        tag,
        dir,
        mount_options,
    )?)
}

/// Total size of the files under `dir`.
fn tree_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| match entry.file_type() {
                    Ok(t) if t.is_dir() => tree_bytes(&entry.path()),
                    Ok(t) if t.is_file() => entry.metadata().map(|m| m.len()).unwrap_or(0),
                    _ => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Cores, memory and kernel.
fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let memory = thaw_sys::host::memory_bytes()
        .map(|bytes| bytesize::ByteSize(bytes).to_string())
        .unwrap_or_else(|| "? memory".into());
    let kernel = thaw_sys::host::kernel_release().unwrap_or_else(|_| "?".into());
    format!("{cores} cores, {memory}, Linux {kernel}")
}

impl<'a> Bench<'a> {
    /// Indexes the image (ahead of time, not measured as part of a start) and reads its config.
    async fn prepare(
        global: &'a Config,
        args: &'a ColdstartArgs,
        work: &Path,
    ) -> anyhow::Result<Bench<'a>> {
        let readiness =
            Readiness::from_options(args.ready_file.as_deref(), args.ready_url.as_deref());
        let runtime = Runtime::find(args.runtime.as_deref())?;
        let store = thaw_client::connect::open_store(global)?;
        let previous = match &args.previous_image {
            Some(image) => {
                index_image(global, args, image).await?;
                Some(store.resolve(&args.tag).await?.to_hex())
            }
            None => None,
        };
        let indexed = Instant::now();
        index_image(global, args, &args.image).await?;
        let index_seconds = indexed.elapsed().as_secs_f64();
        let (manifest, _) = store.open_manifest(&args.tag).await?;
        let image = ImageRuntime::of_manifest(&args.tag, &manifest)?;
        let process_args = image.args(&args.command, None);
        if process_args.is_empty() {
            bail!(
                "{}: the image has no Entrypoint or Cmd: give a command after --",
                args.image
            );
        }
        let environment = image.environment(&args.env);
        Ok(Bench {
            global,
            args,
            work: work.to_path_buf(),
            image,
            runtime,
            probe: Probe::new(readiness)?,
            process_args,
            environment,
            page_cache_dropped: true,
            index_seconds,
            peer: None,
            containers: 0,
            previous,
        })
    }

    /// Measures every asked path and assembles the report.
    async fn measure_all(&mut self) -> anyhow::Result<Report> {
        let mut kinds = self.args.paths.clone();
        kinds.sort();
        kinds.dedup();
        let mut paths = Vec::new();
        for kind in kinds {
            let outcome = match self.unavailable(kind) {
                Some(reason) => {
                    eprintln!("thaw: {}: skipped: {reason}", kind.label());
                    Outcome::Skipped(reason)
                }
                None => self.measure(kind).await?,
            };
            paths.push((kind, outcome));
        }
        self.peer = None;
        let setup = Setup {
            image: self.args.image.clone(),
            command: self.process_args.clone(),
            readiness: self.probe.readiness().describe(),
            machine: machine(),
            page_cache_dropped: self.page_cache_dropped,
            store_latency_ms: self.args.store_latency_ms,
            index_seconds: self.index_seconds,
        };
        Ok(Report { setup, paths })
    }

    /// Why `kind` cannot be measured here, if it cannot.
    fn unavailable(&self, kind: PathKind) -> Option<String> {
        match kind {
            PathKind::Naive => ["skopeo", "umoci"]
                .into_iter()
                .find(|tool| thaw_sys::which(tool).is_none())
                .map(|tool| format!("{tool} is not installed (the naive path pulls with skopeo and unpacks with umoci)")),
            PathKind::Snapshot => snapshot::unavailable(self),
            PathKind::First | PathKind::Lazy | PathKind::Trace | PathKind::Peer => None,
        }
    }

    /// The runs of one path (a snapshot path whose snapshot cannot be taken is skipped).
    async fn measure(&mut self, kind: PathKind) -> anyhow::Result<Outcome> {
        let mut snapshot = None;
        match kind {
            PathKind::Peer => self.warm_peer().await?,
            PathKind::First => self.record_previous().await?,
            PathKind::Snapshot => match snapshot::Snapshot::take(self).await {
                Ok(taken) => snapshot = Some(taken),
                Err(e) => {
                    // One line for the table: CRIU's log excerpt stays in the log it names.
                    let error = format!("{e:#}");
                    let first_line = error.lines().next().unwrap_or_default();
                    let reason = format!("the snapshot could not be taken: {first_line}");
                    eprintln!(
                        "thaw: {}: skipped: the snapshot could not be taken: {error}",
                        kind.label()
                    );
                    return Ok(Outcome::Skipped(reason));
                }
            },
            _ => {}
        }
        let runs = self.runs(kind, snapshot.as_ref()).await;
        drop(snapshot);
        Ok(Outcome::Measured(runs?))
    }

    /// The measured runs of `kind`, each from a cold node.
    async fn runs(
        &mut self,
        kind: PathKind,
        snapshot: Option<&snapshot::Snapshot>,
    ) -> anyhow::Result<Vec<Run>> {
        let mut runs = Vec::new();
        for n in 0..self.args.runs {
            self.reset_node();
            let dir = self.work.join(format!("{}-{n}", kind.name()));
            let run = match (snapshot, kind) {
                (Some(snapshot), _) => snapshot.restore(self, &dir).await,
                (None, PathKind::Naive) => self.naive(&dir).await,
                (None, _) => self.thaw(kind, &dir).await,
            }
            .with_context(|| format!("{} (run {})", kind.label(), n + 1))?;
            let _ = std::fs::remove_dir_all(&dir);
            self.check_output(kind, &run)?;
            eprintln!(
                "thaw: {}: ready in {:.3}s",
                kind.label(),
                run.stages.total()
            );
            runs.push(run);
        }
        Ok(runs)
    }

    /// Fails when the command's output lacks the expected text.
    fn check_output(&self, kind: PathKind, run: &Run) -> anyhow::Result<()> {
        match &self.args.expect_output {
            Some(expected) if !run.output.contains(expected.as_str()) => bail!(
                "{}: the command's output does not contain {expected:?}; it printed: {:?}",
                kind.label(),
                run.output
            ),
            _ => Ok(()),
        }
    }

    /// A cold node: thaw's local cache emptied, the page cache dropped.
    fn reset_node(&mut self) {
        let _ = std::fs::remove_dir_all(self.cache_dir());
        self.page_cache_dropped &= thaw_sys::host::drop_page_cache();
    }

    /// thaw's local disk cache for every measured start.
    fn cache_dir(&self) -> PathBuf {
        self.work.join("cache")
    }

    /// Options for the thaw commands of a start: the bench's cache, the added store latency,
    /// and the peer when `with_peer`.
    fn child_options(&self, with_peer: bool) -> Config {
        let mut options = self.global.clone();
        options.cache.dir = Some(self.cache_dir());
        options.cache.disk = true;
        options.store.read_latency_ms = self
            .args
            .store_latency_ms
            .or(self.global.store.read_latency_ms);
        options.peers.list = match (with_peer, &self.peer) {
            (true, Some(peer)) => Some(peer.url.clone()),
            _ => None,
        };
        options.peers.token_file = None;
        options
    }

    /// A fresh container id.
    fn container_id(&mut self) -> String {
        self.containers += 1;
        format!("thaw-bench-{}-{}", std::process::id(), self.containers)
    }

    /// The runtime spec of the measured process over `rootfs`.
    fn spec(&self, rootfs: &Path) -> anyhow::Result<serde_json::Value> {
        let user = resolve_user(
            self.args.user.as_deref().unwrap_or(&self.image.user),
            rootfs,
        )?;
        Ok(runtime_spec(
            &self.process_args,
            &self.environment,
            &self.image.working_dir,
            user,
            rootfs,
            "thaw-bench",
        ))
    }

    /// Writes the bundle over `rootfs` and runs the process in it until ready.
    async fn start_container(
        &mut self,
        dir: &Path,
        rootfs: &Path,
    ) -> anyhow::Result<(StartTimes, String)> {
        let bundle = write_bundle(&dir.join("bundle"), &self.spec(rootfs)?)?;
        let logs = RunLogs::in_dir(dir);
        let id = self.container_id();
        let timeout = Duration::from_secs(self.args.timeout);
        let times = self
            .runtime
            .run_until_ready(&bundle, rootfs, &id, &logs, &self.probe, timeout)
            .await?;
        Ok((times, logs.output()))
    }

    /// Path 1: pull the whole image (skopeo), unpack it (umoci), run.
    async fn naive(&mut self, dir: &Path) -> anyhow::Result<Run> {
        let skopeo = thaw_sys::which("skopeo").context("skopeo")?;
        let umoci = thaw_sys::which("umoci").context("umoci")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let layout = dir.join("layout");
        let destination = format!("oci:{}:bench", layout.display());
        let fetched = Instant::now();
        let mut copy: Vec<String> = vec!["copy".into(), "--quiet".into()];
        if self.args.insecure {
            copy.push("--src-tls-verify=false".into());
        }
        if let Some(platform) = &self.args.platform {
            let parts: Vec<&str> = platform.split('/').collect();
            for (flag, value) in ["--override-os", "--override-arch", "--override-variant"]
                .iter()
                .zip(parts)
            {
                copy.push(format!("{flag}={value}"));
            }
        }
        copy.push(self.args.image.clone());
        copy.push(destination);
        let copy: Vec<&std::ffi::OsStr> = copy.iter().map(|a| a.as_ref()).collect();
        run_tool(&skopeo, &copy, "pulling the image").await?;
        let fetch = fetched.elapsed().as_secs_f64();
        let pulled = tree_bytes(&layout.join("blobs"));
        let unpacked = Instant::now();
        let bundle = dir.join("bundle");
        let image = format!("{}:bench", layout.display());
        run_tool(
            &umoci,
            &[
                "unpack".as_ref(),
                "--image".as_ref(),
                image.as_ref(),
                bundle.as_os_str(),
            ],
            "unpacking the image",
        )
        .await?;
        let mount = unpacked.elapsed().as_secs_f64();
        let (times, output) = self.start_container(dir, &bundle.join("rootfs")).await?;
        Ok(Run {
            stages: Stages {
                fetch,
                mount,
                start: times.start,
                ready: times.ready,
            },
            sources: Sources {
                registry: pulled,
                ..Sources::default()
            },
            output,
        })
    }

    /// Paths 2-4: a lazy mount of the indexed image (no prefetch for `lazy`; the recorded trace
    /// for `trace`; that and the warm peer for `peer`) with a writable overlay, then run.
    async fn thaw(&mut self, kind: PathKind, dir: &Path) -> anyhow::Result<Run> {
        let tag = self.args.tag.clone();
        self.thaw_start(kind, &tag, dir).await
    }

    /// A thaw path's start of `name` (a tag or manifest id).
    async fn thaw_start(&mut self, kind: PathKind, name: &str, dir: &Path) -> anyhow::Result<Run> {
        let options = self.child_options(kind == PathKind::Peer);
        let mut mount_options: Vec<&str> = match kind {
            PathKind::Lazy => vec!["--no-prefetch"],
            // Never its own trace: every run is a first start.
            PathKind::First => vec!["--no-trace"],
            _ => Vec::new(),
        };
        mount_options.extend(self.args.mount_arg.iter().map(String::as_str));
        let mounted = Instant::now();
        let (image, overlay) = mount_image(&options, name, dir, &mount_options)?;
        let mount = mounted.elapsed().as_secs_f64();
        let rootfs = overlay.dir().to_path_buf();
        let started = self.start_container(dir, &rootfs).await;
        let status = image.status().await;
        drop(overlay);
        image.stop().await?;
        let (times, output) = started?;
        let status = status?;
        Ok(Run {
            stages: Stages {
                fetch: 0.0,
                mount,
                start: times.start,
                ready: times.ready,
            },
            sources: Sources {
                registry: 0,
                store: status.store_bytes,
                peers: status.peer_bytes,
            },
            output,
        })
    }

    /// Records the trace of `--previous-image` with one (unmeasured) start of it, once.
    async fn record_previous(&mut self) -> anyhow::Result<()> {
        let Some(previous) = self.previous.take() else {
            return Ok(());
        };
        eprintln!("thaw: recording the previous version's trace with one start of it");
        self.reset_node();
        let dir = self.work.join("previous-warm-up");
        let run = self
            .thaw_start(PathKind::Trace, &previous, &dir)
            .await
            .context("starting the previous version")?;
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!("thaw: previous version ready in {:.3}s", run.stages.total());
        Ok(())
    }

    /// Starts the peer and warms it with one (unmeasured) start through it.
    async fn warm_peer(&mut self) -> anyhow::Result<()> {
        if self.peer.is_some() {
            return Ok(());
        }
        let mut options = self.global.clone();
        options.store.read_latency_ms = self
            .args
            .store_latency_ms
            .or(self.global.store.read_latency_ms);
        self.peer = Some(PeerServer::start(&options, &self.work.join("peer")).await?);
        eprintln!("thaw: warming the peer cache with one start through it");
        self.reset_node();
        let dir = self.work.join("peer-warm-up");
        self.thaw(PathKind::Peer, &dir)
            .await
            .context("warming the peer cache")?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
