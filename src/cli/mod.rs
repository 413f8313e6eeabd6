//! The command tree: global options (store, caches, logging) and one module per command group.

mod browse;
mod cache;
mod cache_server;
mod containerd;
mod index;
mod lifecycle;
mod mount;
mod plan;
mod progress;
mod restore;
mod run;
mod snapshot;
mod verify;
mod weights;

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use thaw_cache_server::{PeerTier, Token};
use thaw_client::{connect, Config};
use thaw_core::store::Store;
use thaw_core::tier::{CacheConfig, TieredStore};
use thaw_fs::daemon::DaemonMount;

/// thaw: start inference replicas in seconds from content-addressed, lazily fetched images.
#[derive(Parser, Debug)]
#[command(name = "thaw", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// The options every command takes. Each also comes from a `THAW_*` environment variable and
/// the config file (thaw-client reads both); a flag given here wins.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Store, cache and peer options (every command)")]
pub struct GlobalArgs {
    /// TOML file of defaults for these options [env: THAW_CONFIG]
    /// [default: ~/.config/thaw/config.toml when present].
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Store URL: a directory, file://DIR, s3://BUCKET[/PREFIX], gs://..., az://...
    /// [env: THAW_STORE] [default: ~/.local/share/thaw/store]
    #[arg(long, global = true)]
    store: Option<String>,
    /// Endpoint of an S3-compatible server (http://host:port) [env: THAW_S3_ENDPOINT].
    #[arg(long, global = true)]
    s3_endpoint: Option<String>,
    /// S3 region [env: THAW_S3_REGION, else AWS_REGION].
    #[arg(long, global = true)]
    s3_region: Option<String>,
    /// S3 access key id [env: THAW_S3_ACCESS_KEY_ID, else AWS_ACCESS_KEY_ID].
    #[arg(long, global = true)]
    s3_access_key_id: Option<String>,
    /// S3 secret access key [env: THAW_S3_SECRET_ACCESS_KEY, else AWS_SECRET_ACCESS_KEY].
    #[arg(long, global = true)]
    s3_secret_access_key: Option<String>,
    /// Allow plain HTTP to the S3 endpoint [env: THAW_S3_ALLOW_HTTP].
    #[arg(long, global = true)]
    s3_allow_http: bool,
    /// Local disk cache directory [env: THAW_CACHE_DIR] [default: ~/.cache/thaw/chunks].
    #[arg(long, global = true)]
    cache_dir: Option<PathBuf>,
    /// Disk cache budget, e.g. 20GiB [env: THAW_CACHE_BYTES] [default: 20GiB].
    #[arg(long, global = true)]
    cache_bytes: Option<bytesize::ByteSize>,
    /// Memory cache budget, e.g. 512MiB [env: THAW_MEMORY_CACHE_BYTES] [default: 512MiB].
    #[arg(long, global = true)]
    memory_cache_bytes: Option<bytesize::ByteSize>,
    /// Do not use the local disk cache [env: THAW_NO_DISK_CACHE].
    #[arg(long, global = true)]
    no_disk_cache: bool,
    /// Peer caches to read through before the object store: `http://a:7070,b:7070`, `@FILE`
    /// (one per line, re-read while running) or `dns://NAME:PORT` (every address is a peer)
    /// [env: THAW_PEERS].
    #[arg(long, global = true)]
    peers: Option<String>,
    /// File holding the bearer token shared by peers and clients [env: THAW_PEER_TOKEN_FILE,
    /// else the token itself in THAW_PEER_TOKEN].
    #[arg(long, global = true)]
    peer_token_file: Option<PathBuf>,
    /// PEM CA that `https://` peers' certificates must chain to [env: THAW_PEER_CA_FILE].
    #[arg(long, global = true)]
    peer_ca: Option<PathBuf>,
    /// PEM certificate (and --peer-key) to present to peers that require one [env:
    /// THAW_PEER_CERT_FILE, THAW_PEER_KEY_FILE].
    #[arg(long, global = true, requires = "peer_key")]
    peer_cert: Option<PathBuf>,
    /// PEM private key of --peer-cert.
    #[arg(long, global = true, requires = "peer_cert")]
    peer_key: Option<PathBuf>,
    /// The name every peer's certificate must be valid for, instead of the address dialled
    /// [env: THAW_PEER_TLS_NAME].
    #[arg(long, global = true)]
    peer_tls_name: Option<String>,
    /// Milliseconds a peer has to deliver a chunk before it is skipped [env:
    /// THAW_PEER_TIMEOUT_MS] [default: 5000].
    #[arg(long, global = true)]
    peer_timeout_ms: Option<u64>,
    /// Seconds between re-reads of a peer file or DNS name [env: THAW_PEER_REFRESH_SECS]
    /// [default: 10].
    #[arg(long, global = true)]
    peer_refresh_secs: Option<u64>,
    /// Control sockets, daemon logs and container directories [env: THAW_RUNTIME_DIR]
    /// [default: /run/thaw for root, else $XDG_RUNTIME_DIR/thaw].
    #[arg(long, global = true)]
    runtime_dir: Option<PathBuf>,
    /// Milliseconds one request to a cloud store may take, its body included, before it is
    /// retried [env: THAW_STORE_TIMEOUT_MS] [default: 30000].
    #[arg(long, global = true)]
    store_timeout_ms: Option<u64>,
    /// Retries of a failed or timed-out cloud store request, with back-off [env:
    /// THAW_STORE_RETRIES] [default: 10].
    #[arg(long, global = true)]
    store_retries: Option<usize>,
    /// Wait this many milliseconds before every store read (to measure against a distant
    /// object store; benchmarks use 20) [env: THAW_STORE_READ_LATENCY_MS].
    #[arg(long, global = true, hide = true)]
    store_read_latency_ms: Option<u64>,
    /// Hide progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl GlobalArgs {
    /// The configuration: defaults, the config file, the environment, then these flags.
    fn resolve(&self) -> anyhow::Result<GlobalOptions> {
        let mut config = Config::load(self.config.as_deref())?;
        fn given<T: Clone>(field: &mut T, flag: &Option<T>) {
            if let Some(value) = flag {
                *field = value.clone();
            }
        }
        let (store, cache, peers) = (&mut config.store, &mut config.cache, &mut config.peers);
        let some = |flag: &Option<String>| flag.as_ref().map(|v| Some(v.clone()));
        given(&mut store.url, &some(&self.store));
        given(&mut store.s3_endpoint, &some(&self.s3_endpoint));
        given(&mut store.s3_region, &some(&self.s3_region));
        given(&mut store.s3_access_key_id, &some(&self.s3_access_key_id));
        given(
            &mut store.s3_secret_access_key,
            &some(&self.s3_secret_access_key),
        );
        store.s3_allow_http |= self.s3_allow_http;
        given(&mut store.timeout_ms, &self.store_timeout_ms.map(Some));
        given(&mut store.retries, &self.store_retries.map(Some));
        given(
            &mut store.read_latency_ms,
            &self.store_read_latency_ms.map(Some),
        );
        given(&mut cache.dir, &self.cache_dir.clone().map(Some));
        given(&mut cache.bytes, &self.cache_bytes.map(|b| b.as_u64()));
        given(
            &mut cache.memory_bytes,
            &self.memory_cache_bytes.map(|b| b.as_u64()),
        );
        cache.disk &= !self.no_disk_cache;
        given(&mut peers.list, &some(&self.peers));
        given(
            &mut peers.token_file,
            &self.peer_token_file.clone().map(Some),
        );
        given(&mut peers.ca_file, &self.peer_ca.clone().map(Some));
        given(&mut peers.cert_file, &self.peer_cert.clone().map(Some));
        given(&mut peers.key_file, &self.peer_key.clone().map(Some));
        given(&mut peers.tls_name, &some(&self.peer_tls_name));
        given(&mut peers.timeout_ms, &self.peer_timeout_ms);
        given(&mut peers.refresh_secs, &self.peer_refresh_secs);
        given(&mut config.runtime.dir, &self.runtime_dir.clone().map(Some));
        Ok(GlobalOptions {
            config,
            quiet: self.quiet,
        })
    }
}

/// What every command gets: the resolved configuration and how to show progress.
#[derive(Debug, Clone)]
pub struct GlobalOptions {
    /// Store, caches, peers and runtime dir.
    pub config: Config,
    /// Hide progress bars.
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Index a directory tree or a model folder into the store.
    #[command(subcommand)]
    Index(index::IndexCommand),
    /// List tags and the manifests they name.
    Tags(browse::TagsArgs),
    /// List a directory (or one entry) of a tagged tree.
    Ls(browse::LsArgs),
    /// Write one file of a tagged tree to standard output.
    Cat(browse::CatArgs),
    /// Restore a tagged tree into a directory, metadata included.
    Extract(restore::ExtractArgs),
    /// Fetch and check every chunk of a tag; exit non-zero listing each bad chunk.
    Verify(verify::VerifyArgs),
    /// Delete what no tag reaches (and repack mostly-garbage packs); `--keep-last N --prefix P`
    /// first removes all but the newest N tags under P. Safe beside running indexers.
    Gc(lifecycle::GcArgs),
    /// Check the whole store: every index, tag, manifest and chunk map (`--read-data`: every
    /// byte); exit 1 listing each problem.
    Check(lifecycle::CheckArgs),
    /// Rebuild pack indexes from packs and chunk maps from indexes; drop tags that cannot be
    /// recovered.
    Repair(lifecycle::RepairArgs),
    /// Tags: list with times, remove, rename.
    #[command(subcommand)]
    Tag(lifecycle::TagCommand),
    /// Remove stale store locks (those of killed processes); `--all` removes every lock.
    Unlock(lifecycle::UnlockArgs),
    /// Sizes, chunks and dedup of one or more tags.
    Stats(browse::StatsArgs),
    /// Mount a tagged tree read-only (FUSE); chunks are fetched on first read.
    Mount(mount::MountArgs),
    /// The local disk cache: status, check, prune.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Unmount a `thaw mount` (its daemon saves the access trace first).
    Umount(mount::UmountArgs),
    /// Access traces: what a start-up read, replayed as prefetch by the next mount.
    #[command(subcommand)]
    Trace(mount::TraceCommand),
    /// Run the peer cache daemon: serve verified chunks to the cluster over HTTP, fetching each
    /// miss from the store once (it does not read through other peers: --peers is for clients).
    CacheServer(cache_server::CacheServerArgs),
    /// Look at and load-test the peer caches named by --peers.
    #[command(subcommand)]
    Peers(cache_server::PeersCommand),
    /// Process snapshots: dump a warmed process with CRIU into the store, restore it anywhere.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Run a container from an indexed image: mounted lazily (nothing pulled or unpacked), a
    /// writable overlay on top, started with crun or runc using the image's config.
    Run(run::RunArgs),
    /// containerd's remote snapshotter: containerd (ctr, nerdctl, Kubernetes' CRI) starts
    /// images thaw indexed from lazy mounts, nothing pulled or unpacked.
    Snapshotter(containerd::SnapshotterArgs),
    /// containerd: pull an indexed image's manifest and config, its layers from thaw.
    #[command(subcommand)]
    Containerd(containerd::ContainerdCommand),
    /// Plans: the idle GPU buffer per offer and window, replicas onto the nodes that hold their
    /// bytes, and a kube-scheduler extender scoring nodes the same way.
    #[command(subcommand)]
    Plan(plan::PlanCommand),
    /// Measurements to run on your own setup.
    #[cfg(feature = "bench")]
    #[command(subcommand)]
    Bench(thaw_bench::BenchCommand),
    /// Model weights: stream safetensors from the store into GPU (or host) memory.
    #[command(subcommand)]
    Weights(weights::WeightsCommand),
}

impl GlobalOptions {
    /// Opens the store these options name.
    fn open_store(&self) -> anyhow::Result<Store> {
        Ok(connect::open_store(&self.config)?)
    }

    /// The peer token: the token file, else `$THAW_PEER_TOKEN`, else none.
    fn peer_token(&self) -> anyhow::Result<Option<Token>> {
        Ok(connect::peer_token(&self.config)?)
    }

    /// The peer tier, when peers are configured.
    async fn peer_tier(&self) -> anyhow::Result<Option<Arc<PeerTier>>> {
        Ok(connect::peer_tier(&self.config).await?)
    }

    /// Builds the read tiers (memory, disk cache, peers when configured, store); `fill_disk`
    /// keeps fetched chunks in the disk cache.
    async fn tiers(&self, store: &Store, fill_disk: bool) -> anyhow::Result<TieredStore> {
        Ok(connect::tiers(&self.config, store, fill_disk).await?)
    }

    /// A maker of commands running this thaw program with this configuration (for the
    /// processes thaw starts: background mounts, the snapshotter's lazy layers).
    fn thaw_command(
        &self,
    ) -> anyhow::Result<impl Fn() -> std::process::Command + Send + Sync + 'static> {
        let exe = std::env::current_exe().context("locating the thaw binary")?;
        let config = self.config.clone();
        Ok(move || {
            let mut command = std::process::Command::new(&exe);
            config.pass_to(&mut command);
            command
        })
    }

    /// Mounts `tag` at `dir` in a background `thaw mount --daemon` with this configuration
    /// and more `thaw mount` options; unmounted when the handle drops.
    fn start_mount(
        &self,
        tag: &str,
        dir: &std::path::Path,
        options: &[&str],
    ) -> anyhow::Result<DaemonMount> {
        Ok(DaemonMount::start(
            self.thaw_command()?(),
            &self.runtime_dir(),
            tag,
            dir,
            options,
        )?)
    }

    /// Where control sockets, daemon logs and container directories go.
    fn runtime_dir(&self) -> PathBuf {
        self.config.runtime_dir()
    }

    /// Where and how big the local caches are.
    fn cache_config(&self, fill_disk: bool) -> CacheConfig {
        connect::cache_config(&self.config, fill_disk)
    }
}

impl Cli {
    /// True for the commands that run as daemons serving sockets (a mount's metrics and control
    /// socket, the cache server): a peer closing its end must be an error there, not SIGPIPE.
    pub fn serves_connections(&self) -> bool {
        matches!(
            self.command,
            Command::Mount(_) | Command::CacheServer(_) | Command::Snapshotter(_)
        )
    }
}

/// Sets up tracing to stderr.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Threads for blocking work (disk cache reads and writes, frame decoding) at most: a burst of
/// parallel reads otherwise grows the pool to hundreds, each thread's stack resident.
const BLOCKING_THREADS: usize = 64;
/// How long an idle blocking thread stays before it exits (giving its stack back).
const BLOCKING_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .build()
        .context("starting the async runtime")?;
    let global = &cli.global.resolve()?;
    match cli.command {
        Command::Index(cmd) => index::run(global, &runtime, cmd),
        Command::Tags(args) => runtime.block_on(browse::tags(global, args)),
        Command::Ls(args) => runtime.block_on(browse::ls(global, args)),
        Command::Cat(args) => runtime.block_on(browse::cat(global, args)),
        Command::Stats(args) => runtime.block_on(browse::stats(global, args)),
        Command::Extract(args) => runtime.block_on(restore::extract(global, args)),
        Command::Verify(args) => runtime.block_on(verify::verify(global, args)),
        Command::Gc(args) => runtime.block_on(lifecycle::gc(global, args)),
        Command::Check(args) => runtime.block_on(lifecycle::check(global, args)),
        Command::Repair(args) => runtime.block_on(lifecycle::repair(global, args)),
        Command::Tag(cmd) => runtime.block_on(lifecycle::tag(global, cmd)),
        Command::Unlock(args) => runtime.block_on(lifecycle::unlock(global, args)),
        Command::Mount(args) => mount::mount(global, &runtime, args),
        Command::Umount(args) => runtime.block_on(mount::umount(global, args)),
        Command::Cache(cmd) => cache::run(global, &runtime, cmd),
        Command::Trace(cmd) => runtime.block_on(mount::trace(global, cmd)),
        Command::CacheServer(args) => runtime.block_on(cache_server::serve(global, args)),
        Command::Peers(cmd) => runtime.block_on(cache_server::peers(global, cmd)),
        Command::Snapshot(cmd) => snapshot::run(global, &runtime, cmd),
        Command::Weights(cmd) => runtime.block_on(weights::run(global, cmd)),
        Command::Run(args) => runtime.block_on(run::run(global, args)),
        #[cfg(feature = "bench")]
        Command::Bench(cmd) => thaw_bench::run(&global.config, &runtime, cmd),
        Command::Plan(cmd) => plan::run(global, &runtime, cmd),
        Command::Snapshotter(args) => containerd::snapshotter(global, &runtime, args),
        Command::Containerd(cmd) => containerd::run(global, &runtime, cmd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_configuration_they_are_applied_to() {
        // An empty config file: only the defaults and the environment under the flags.
        let empty = tempfile::NamedTempFile::new().unwrap();
        let cli = Cli::try_parse_from([
            "thaw",
            "--config",
            empty.path().to_str().unwrap(),
            "--store",
            "/flag/store",
            "--no-disk-cache",
            "--cache-bytes",
            "1MiB",
            "--peer-refresh-secs",
            "3",
            "--runtime-dir",
            "/flag/run",
            "tags",
        ])
        .unwrap();
        let global = cli.global.resolve().unwrap();
        let config = &global.config;
        assert_eq!(config.store.url.as_deref(), Some("/flag/store"));
        assert!(!config.cache.disk);
        assert_eq!(config.cache.bytes, 1 << 20);
        assert_eq!(config.peers.refresh_secs, 3);
        assert_eq!(config.runtime_dir(), std::path::Path::new("/flag/run"));
    }
}
