//! The command tree: global options (store, caches, logging) and one module per command group.

mod bench;
mod browse;
mod cache_server;
pub mod config;
mod daemon_mount;
mod index;
mod mount;
mod progress;
mod restore;
mod run;
mod snapshot;
mod verify;
mod weights;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::sync::Arc;
use std::time::Duration;
use thaw_core::store::{S3Options, Store, StoreConfig};

use thaw_cache_server::{PeerClientConfig, PeerSpec, PeerTier, Token};
use thaw_core::tier::{self, CacheConfig, ChunkSource, TieredStore};

/// Environment variable holding the peer token itself (when no token file is given).
const PEER_TOKEN_ENV: &str = "THAW_PEER_TOKEN";

/// thaw: start inference replicas in seconds from content-addressed, lazily fetched images.
#[derive(Parser, Debug)]
#[command(name = "thaw", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOptions,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(Args, Debug, Clone)]
pub struct GlobalOptions {
    /// TOML file of defaults for these options (flags and environment win)
    /// [default: ~/.config/thaw/config.toml when present].
    #[arg(long, env = "THAW_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Store URL: a directory, file://DIR, s3://BUCKET[/PREFIX], gs://..., az://...
    /// [default: ~/.local/share/thaw/store]
    #[arg(long, env = "THAW_STORE", global = true)]
    store: Option<String>,
    /// Endpoint of an S3-compatible server (http://host:port).
    #[arg(long, env = "THAW_S3_ENDPOINT", global = true)]
    s3_endpoint: Option<String>,
    /// S3 region (else AWS_REGION / AWS_DEFAULT_REGION).
    #[arg(long, env = "THAW_S3_REGION", global = true)]
    s3_region: Option<String>,
    /// S3 access key id (else AWS_ACCESS_KEY_ID).
    #[arg(long, env = "THAW_S3_ACCESS_KEY_ID", global = true)]
    s3_access_key_id: Option<String>,
    /// S3 secret access key (else AWS_SECRET_ACCESS_KEY).
    #[arg(
        long,
        env = "THAW_S3_SECRET_ACCESS_KEY",
        global = true,
        hide_env_values = true
    )]
    s3_secret_access_key: Option<String>,
    /// Allow plain HTTP to the S3 endpoint.
    #[arg(long, env = "THAW_S3_ALLOW_HTTP", global = true)]
    s3_allow_http: bool,
    /// Local disk cache directory [default: ~/.cache/thaw/chunks].
    #[arg(long, env = "THAW_CACHE_DIR", global = true)]
    cache_dir: Option<PathBuf>,
    /// Disk cache budget (e.g. 20GiB).
    #[arg(long, env = "THAW_CACHE_BYTES", global = true, default_value = "20GiB")]
    cache_bytes: bytesize::ByteSize,
    /// Memory cache budget (e.g. 512MiB).
    #[arg(
        long,
        env = "THAW_MEMORY_CACHE_BYTES",
        global = true,
        default_value = "512MiB"
    )]
    memory_cache_bytes: bytesize::ByteSize,
    /// Do not use the local disk cache.
    #[arg(long, env = "THAW_NO_DISK_CACHE", global = true)]
    no_disk_cache: bool,
    /// Peer caches to read through before the object store: `http://a:7070,b:7070`, `@FILE`
    /// (one per line, re-read while running) or `dns://NAME:PORT` (every address is a peer).
    #[arg(long, env = "THAW_PEERS", global = true)]
    peers: Option<String>,
    /// File holding the bearer token shared by peers and clients (else $THAW_PEER_TOKEN).
    #[arg(long, env = "THAW_PEER_TOKEN_FILE", global = true)]
    peer_token_file: Option<PathBuf>,
    /// Milliseconds a peer has to deliver a chunk before it is skipped.
    #[arg(
        long,
        env = "THAW_PEER_TIMEOUT_MS",
        global = true,
        default_value_t = 5000
    )]
    peer_timeout_ms: u64,
    /// Seconds between re-reads of a peer file or DNS name.
    #[arg(
        long,
        env = "THAW_PEER_REFRESH_SECS",
        global = true,
        default_value_t = 10
    )]
    peer_refresh_secs: u64,
    /// Wait this many milliseconds before every store read (to measure against a distant
    /// object store; benchmarks use 20).
    #[arg(long, env = "THAW_STORE_READ_LATENCY_MS", global = true, hide = true)]
    store_read_latency_ms: Option<u64>,
    /// Hide progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
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
    /// Sizes, chunks and dedup of one or more tags.
    Stats(browse::StatsArgs),
    /// Mount a tagged tree read-only (FUSE); chunks are fetched on first read.
    Mount(mount::MountArgs),
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
    /// Measurements to run on your own setup.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Model weights: stream safetensors from the store into GPU (or host) memory.
    #[command(subcommand)]
    Weights(weights::WeightsCommand),
}

impl GlobalOptions {
    fn store_config(&self) -> StoreConfig {
        StoreConfig {
            url: self.store.clone(),
            s3: S3Options {
                endpoint: self.s3_endpoint.clone(),
                region: self.s3_region.clone(),
                access_key_id: self.s3_access_key_id.clone(),
                secret_access_key: self.s3_secret_access_key.clone(),
                allow_http: self.s3_allow_http,
            },
            read_latency: self
                .store_read_latency_ms
                .map(std::time::Duration::from_millis),
        }
    }

    /// Opens the store these options name.
    fn open_store(&self) -> anyhow::Result<Store> {
        let config = self.store_config();
        Store::open(&config).context("opening the store")
    }

    /// The peer token: `--peer-token-file`, else `$THAW_PEER_TOKEN`, else none.
    fn peer_token(&self) -> anyhow::Result<Option<Token>> {
        if let Some(path) = &self.peer_token_file {
            return Ok(Some(Token::from_file(path)?));
        }
        match std::env::var(PEER_TOKEN_ENV) {
            Ok(value) => Ok(Some(Token::new(&value, PEER_TOKEN_ENV)?)),
            Err(_) => Ok(None),
        }
    }

    /// The peer tier, when `--peers` is given.
    async fn peer_tier(&self) -> anyhow::Result<Option<Arc<PeerTier>>> {
        let Some(spec) = &self.peers else {
            return Ok(None);
        };
        let spec: PeerSpec = spec.parse()?;
        let config = PeerClientConfig {
            token: self.peer_token()?,
            timeout: Duration::from_millis(self.peer_timeout_ms.max(1)),
            refresh: Duration::from_secs(self.peer_refresh_secs.max(1)),
            ..PeerClientConfig::new(spec)
        };
        let tier = PeerTier::connect(config).await?;
        tracing::info!(
            peers = tier.membership().current().len(),
            "reading through peers"
        );
        Ok(Some(Arc::new(tier)))
    }

    /// Builds the read tiers (memory, disk cache, peers when configured, store); `fill_disk`
    /// keeps fetched chunks in the disk cache.
    async fn tiers(&self, store: &Store, fill_disk: bool) -> anyhow::Result<TieredStore> {
        let peers = self.peer_tier().await?;
        Ok(self.tiers_with(store, fill_disk, peers))
    }

    /// [`GlobalOptions::tiers`] with a peer tier made already.
    fn tiers_with(
        &self,
        store: &Store,
        fill_disk: bool,
        peers: Option<Arc<PeerTier>>,
    ) -> TieredStore {
        let config = self.cache_config(fill_disk);
        tier::tiers_for(store, &config, peers.map(|p| p as Arc<dyn ChunkSource>))
    }

    /// Tiers for a read whose destination is itself the copy in memory (weights streamed into
    /// an allocation): no memory tier, which would only hold (and churn) a second copy.
    async fn streaming_tiers(&self, store: &Store) -> anyhow::Result<TieredStore> {
        let peers = self.peer_tier().await?;
        let config = CacheConfig {
            memory_bytes: 0,
            ..self.cache_config(true)
        };
        Ok(tier::tiers_for(
            store,
            &config,
            peers.map(|p| p as Arc<dyn ChunkSource>),
        ))
    }

    /// Sets the environment of a child `thaw` so it uses the same store, caches and peers.
    fn pass_store_options(&self, command: &mut std::process::Command) {
        let mut set = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                command.env(name, value);
            }
        };
        set("THAW_STORE", self.store.clone());
        set("THAW_S3_ENDPOINT", self.s3_endpoint.clone());
        set("THAW_S3_REGION", self.s3_region.clone());
        set("THAW_S3_ACCESS_KEY_ID", self.s3_access_key_id.clone());
        set(
            "THAW_S3_SECRET_ACCESS_KEY",
            self.s3_secret_access_key.clone(),
        );
        set(
            "THAW_S3_ALLOW_HTTP",
            self.s3_allow_http.then(|| "true".into()),
        );
        set(
            "THAW_CACHE_DIR",
            self.cache_dir.as_ref().map(|d| d.display().to_string()),
        );
        set(
            "THAW_CACHE_BYTES",
            Some(self.cache_bytes.as_u64().to_string()),
        );
        set(
            "THAW_MEMORY_CACHE_BYTES",
            Some(self.memory_cache_bytes.as_u64().to_string()),
        );
        set(
            "THAW_NO_DISK_CACHE",
            self.no_disk_cache.then(|| "true".into()),
        );
        set("THAW_PEERS", self.peers.clone());
        set(
            "THAW_PEER_TOKEN_FILE",
            self.peer_token_file
                .as_ref()
                .map(|d| d.display().to_string()),
        );
        set(
            "THAW_PEER_TIMEOUT_MS",
            Some(self.peer_timeout_ms.to_string()),
        );
        set(
            "THAW_STORE_READ_LATENCY_MS",
            self.store_read_latency_ms.map(|ms| ms.to_string()),
        );
    }

    /// Where control sockets, daemon logs and container directories go.
    fn runtime_dir(&self) -> PathBuf {
        thaw_fs::control::runtime_dir()
    }

    /// Where and how big the local caches are.
    fn cache_config(&self, fill_disk: bool) -> CacheConfig {
        CacheConfig {
            disk_dir: if self.no_disk_cache {
                None
            } else {
                Some(
                    self.cache_dir
                        .clone()
                        .unwrap_or_else(tier::default_cache_dir),
                )
            },
            disk_bytes: self.cache_bytes.as_u64(),
            memory_bytes: self.memory_cache_bytes.as_u64(),
            fill_disk,
        }
    }
}

impl Cli {
    /// True for the commands that run as daemons serving sockets (a mount's metrics and control
    /// socket, the cache server): a peer closing its end must be an error there, not SIGPIPE.
    pub fn serves_connections(&self) -> bool {
        matches!(self.command, Command::Mount(_) | Command::CacheServer(_))
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

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let global = &cli.global;
    if let Some(config) = &global.config {
        tracing::debug!(config = %config.display(), "config file applied");
    }
    match cli.command {
        Command::Index(cmd) => index::run(global, &runtime, cmd),
        Command::Tags(args) => runtime.block_on(browse::tags(global, args)),
        Command::Ls(args) => runtime.block_on(browse::ls(global, args)),
        Command::Cat(args) => runtime.block_on(browse::cat(global, args)),
        Command::Stats(args) => runtime.block_on(browse::stats(global, args)),
        Command::Extract(args) => runtime.block_on(restore::extract(global, args)),
        Command::Verify(args) => runtime.block_on(verify::verify(global, args)),
        Command::Mount(args) => mount::mount(global, &runtime, args),
        Command::Umount(args) => runtime.block_on(mount::umount(args)),
        Command::Trace(cmd) => runtime.block_on(mount::trace(global, cmd)),
        Command::CacheServer(args) => runtime.block_on(cache_server::serve(global, args)),
        Command::Peers(cmd) => runtime.block_on(cache_server::peers(global, cmd)),
        Command::Snapshot(cmd) => snapshot::run(global, &runtime, cmd),
        Command::Weights(cmd) => runtime.block_on(weights::run(global, cmd)),
        Command::Run(args) => runtime.block_on(run::run(global, args)),
        Command::Bench(cmd) => bench::run(global, &runtime, cmd),
    }
}
