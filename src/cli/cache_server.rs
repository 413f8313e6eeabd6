//! `thaw cache-server` (the peer cache daemon) and `thaw peers status|load-test`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use thaw_cache_server::load_test::{self, LoadOptions, LoadTarget};
use thaw_cache_server::server::{DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_PER_CLIENT};
use thaw_cache_server::status::{peer_statuses, PeerStatus};
use thaw_cache_server::tls::ServerTls;
use thaw_cache_server::{CacheServer, PeerSpec, PeerTier, ServerConfig};
use thaw_core::pack::ChunkRef;

use super::GlobalOptions;

/// `thaw cache-server`. It takes the global store and cache options; its misses go to the
/// store (it does not read through other peers, so `--peers` does not apply to it).
#[derive(Args, Debug)]
pub struct CacheServerArgs {
    /// Address to listen on (port 0 picks a free one; the first line of output names it).
    #[arg(long, env = "THAW_CACHE_SERVER_LISTEN", default_value = "0.0.0.0:7070")]
    listen: String,
    /// Serve without a token. Anyone who reaches the port can then make this server fetch and
    /// keep chunks: only for closed networks.
    #[arg(long)]
    no_auth: bool,
    /// Requests served at once; more are answered 503 (clients use the next source).
    #[arg(long, default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    max_in_flight: usize,
    /// Requests served at once for one client address.
    #[arg(long, default_value_t = DEFAULT_MAX_PER_CLIENT)]
    max_per_client: usize,
    /// Serve HTTPS with this PEM certificate chain (and --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve only clients presenting a certificate from this PEM CA (mutual TLS).
    #[arg(long, requires = "tls_cert")]
    client_ca: Option<PathBuf>,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn serve(global: &GlobalOptions, args: CacheServerArgs) -> anyhow::Result<ExitCode> {
    let token = global.peer_token()?;
    // Mutual TLS authenticates clients by certificate: the token is then optional.
    if token.is_none() && !args.no_auth && args.client_ca.is_none() {
        bail!(
            "a cache server needs the cluster's shared token: --peer-token-file FILE or \
             THAW_PEER_TOKEN, or client certificates (--client-ca), or --no-auth on a closed \
             network"
        );
    }
    let store = global.open_store()?;
    let store_for_gc = store.clone();
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(ServerTls {
            cert,
            key,
            client_ca: args.client_ca,
        }),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let config = ServerConfig {
        token,
        max_in_flight: args.max_in_flight,
        max_per_client: args.max_per_client,
        tls,
    };
    let server = CacheServer::new(store, &global.cache_config(true), config)
        .context("starting the cache server")?;
    let listener = CacheServer::bind(&args.listen).await?;
    let addr = listener.local_addr().context("reading the bound address")?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "thaw cache-server listening on {scheme}://{addr}")?;
        out.flush()?;
    }
    tracing::info!(%addr, "cache server started");
    follow_freed_chunks(
        store_for_gc,
        server.disk().clone(),
        global.cache_config(true).disk_dir,
    );
    server
        .serve(listener, thaw_sys::process::termination())
        .await
        .context("serving")?;
    eprintln!("thaw: cache-server stopped");
    Ok(ExitCode::SUCCESS)
}

/// How often a cache server reads the store's freed-chunk log.
const FREED_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// Evicts what `thaw gc` freed from the store, at start and every [`FREED_LOG_EVERY`].
fn follow_freed_chunks(
    store: thaw_core::store::Store,
    disk: thaw_core::tier::DiskCache,
    dir: Option<std::path::PathBuf>,
) {
    let Some(dir) = dir else { return };
    let state = thaw_maintenance::freed::state_file(&dir);
    tokio::spawn(async move {
        loop {
            match thaw_maintenance::freed::forget_freed(&store, &disk, &state).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(chunks = n, "evicted chunks gc freed from the store"),
                Err(e) => tracing::warn!(error = %e, "could not read the freed-chunk log"),
            }
            tokio::time::sleep(FREED_LOG_EVERY).await;
        }
    });
}

/// `thaw peers ...`.
#[derive(Subcommand, Debug)]
pub enum PeersCommand {
    /// Each peer of --peers: health, latency, what it holds, and its share of TAG's chunks.
    Status(StatusArgs),
    /// A bounded load test: a fixed number of chunk GETs of TAG's chunks, then requests/s and
    /// latency percentiles.
    LoadTest(LoadTestArgs),
}

/// `thaw peers status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Also report how much of this tag each peer owns and holds.
    #[arg(long)]
    tag: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `thaw peers load-test`.
#[derive(Args, Debug)]
pub struct LoadTestArgs {
    /// The tag whose chunks are requested.
    tag: String,
    /// Requests in all (after the warm-up pass).
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// One peer to load (`http://host:port`) instead of each chunk's owner among --peers.
    #[arg(long)]
    target: Option<String>,
    /// Any server: a URL with `{id}` for the chunk id (e.g. nginx serving chunk files).
    #[arg(long, conflicts_with = "target")]
    url_template: Option<String>,
    /// Skip the warm-up pass that requests every chunk once before measuring.
    #[arg(long)]
    cold: bool,
    /// Do not hash bodies (measures the server, not the client's blake3).
    #[arg(long)]
    no_verify: bool,
    /// Write each chunk, as served by the warm-up pass, to DIR/<id> (a baseline's files).
    #[arg(long)]
    save_chunks: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs a `thaw peers` command.
pub async fn peers(global: &GlobalOptions, cmd: PeersCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PeersCommand::Status(args) => status(global, args).await,
        PeersCommand::LoadTest(args) => load(global, args).await,
    }
}

/// The peer tier of --peers, or an error asking for it.
async fn required_peers(global: &GlobalOptions) -> anyhow::Result<Arc<PeerTier>> {
    global
        .peer_tier()
        .await?
        .context("no peers: give --peers or THAW_PEERS")
}

/// Distinct chunks of a tag, with their store locations.
async fn tag_chunks(global: &GlobalOptions, tag: &str) -> anyhow::Result<Vec<ChunkRef>> {
    let store = global.open_store()?;
    let (manifest, map) = store.open_manifest(tag).await?;
    Ok(map.distinct_refs(&manifest)?)
}

async fn status(global: &GlobalOptions, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let tier = required_peers(global).await?;
    let chunks: Vec<_> = match &args.tag {
        Some(tag) => tag_chunks(global, tag)
            .await?
            .iter()
            .map(|c| c.id)
            .collect(),
        None => Vec::new(),
    };
    let rows = peer_statuses(&tier, args.tag.as_deref(), &chunks).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_statuses(&rows);
    }
    Ok(match rows.iter().all(|row| row.up) {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    })
}

fn print_statuses(rows: &[PeerStatus]) {
    let line = |cells: [&str; 7]| {
        println!(
            "{:<28} {:>5} {:>9} {:>10} {:>12} {:>8} {:>14}",
            cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6]
        )
    };
    line([
        "PEER", "UP", "LATENCY", "CHUNKS", "BYTES", "OWNS", "TAG HELD",
    ]);
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for row in rows {
        line([
            &row.peer,
            if row.up { "yes" } else { "no" },
            &or_dash(row.latency_ms.map(|ms| format!("{ms:.1}ms"))),
            &or_dash(row.chunks_held.map(|n| n.to_string())),
            &or_dash(row.bytes_held.map(|n| bytesize::ByteSize(n).to_string())),
            &row.owns.to_string(),
            &or_dash(
                row.tag_held
                    .zip(row.tag_chunks)
                    .map(|(h, t)| format!("{h}/{t}")),
            ),
        ]);
        if let Some(error) = &row.error {
            println!("  {error}");
        }
    }
}

async fn load(global: &GlobalOptions, args: LoadTestArgs) -> anyhow::Result<ExitCode> {
    let chunks = tag_chunks(global, &args.tag).await?;
    if chunks.is_empty() {
        bail!("{} has no chunks to request", args.tag);
    }
    let token = global.peer_token()?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(1))
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")?;
    let targets: Vec<LoadTarget> = match (&args.url_template, &args.target) {
        (Some(template), _) => load_test::targets_from_template(template, &chunks),
        (None, Some(target)) => match target.parse::<PeerSpec>()? {
            PeerSpec::Static(peers) if peers.len() == 1 => {
                load_test::targets_at_owners(&peers, &chunks)
            }
            _ => bail!("--target takes one peer URL, got {target}"),
        },
        (None, None) => {
            let tier = required_peers(global).await?;
            load_test::targets_at_owners(&tier.membership().current(), &chunks)
        }
    }
    .map_err(anyhow::Error::msg)?;
    let options = LoadOptions {
        requests: args.requests,
        concurrency: args.concurrency,
        token: token.clone(),
        verify: !args.no_verify,
        timeout: Duration::from_secs(30),
    };
    if let Some(dir) = &args.save_chunks {
        load_test::save_chunks(&http, &targets, &options, dir)
            .await
            .map_err(anyhow::Error::msg)?;
    } else if !args.cold {
        load_test::warm_up(&http, &targets, &options)
            .await
            .map_err(anyhow::Error::msg)?;
    }
    let report = load_test::run(http, targets, options).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} requests in {:.2} s: {:.0} requests/s, {:.1} MiB/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} errors",
            report.requests,
            report.seconds,
            report.requests_per_second,
            report.mib_per_second,
            report.p50_ms,
            report.p99_ms,
            report.max_ms,
            report.errors
        );
    }
    if report.errors > 0 {
        eprintln!(
            "thaw: {} requests failed; first: {}",
            report.errors,
            report.first_error.unwrap_or_default()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
