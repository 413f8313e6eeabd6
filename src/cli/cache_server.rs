//! `thaw cache-server` (the peer cache daemon) and `thaw peers status|load-test`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use thaw_cache_server::client::chunk_url;
use thaw_cache_server::load_test::{self, LoadOptions, LoadTarget};
use thaw_cache_server::protocol::{Inventory, INVENTORY_PATH};
use thaw_cache_server::rendezvous::{self, Peer};
use thaw_cache_server::server::{DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_PER_CLIENT};
use thaw_cache_server::{CacheServer, PeerSpec, PeerTier, ServerConfig};
use thaw_core::tier::ChunkRef;

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
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn serve(global: &GlobalOptions, args: CacheServerArgs) -> anyhow::Result<ExitCode> {
    let token = global.peer_token()?;
    if token.is_none() && !args.no_auth {
        bail!(
            "a cache server needs the cluster's shared token: --peer-token-file FILE or \
             THAW_PEER_TOKEN (or --no-auth on a closed network)"
        );
    }
    let store = global.open_store()?;
    let config = ServerConfig {
        token,
        max_in_flight: args.max_in_flight,
        max_per_client: args.max_per_client,
    };
    let server = CacheServer::new(store, &global.cache_config(true), config)
        .context("starting the cache server")?;
    let listener = CacheServer::bind(&args.listen).await?;
    let addr = listener.local_addr().context("reading the bound address")?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "thaw cache-server listening on http://{addr}")?;
        out.flush()?;
    }
    tracing::info!(%addr, "cache server started");
    server
        .serve(listener, shutdown_signal())
        .await
        .context("serving")?;
    eprintln!("thaw: cache-server stopped");
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
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
    let mut seen = HashSet::new();
    let mut chunks = Vec::new();
    for index in 0..manifest.chunk_count() {
        let chunk = map.chunk_ref(&manifest, index)?;
        if seen.insert(chunk.id) {
            chunks.push(chunk);
        }
    }
    Ok(chunks)
}

async fn status(global: &GlobalOptions, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let tier = required_peers(global).await?;
    let peers = tier.membership().current();
    let chunks = match &args.tag {
        Some(tag) => tag_chunks(global, tag).await?,
        None => Vec::new(),
    };
    // Each chunk's owner, computed once (not once per peer).
    let mut owned_by: HashMap<&str, usize> = HashMap::new();
    for chunk in &chunks {
        if let Some(owner) = rendezvous::owner(&peers, &chunk.id) {
            *owned_by.entry(owner.authority.as_str()).or_default() += 1;
        }
    }
    let mut rows = Vec::new();
    let mut all_up = true;
    for peer in peers.iter() {
        let owned = owned_by.get(peer.authority.as_str()).copied().unwrap_or(0);
        let row = peer_status(&tier, peer, args.tag.as_deref()).await;
        all_up &= row.get("up") == Some(&serde_json::Value::Bool(true));
        let mut row = row;
        row["owns"] = serde_json::json!(owned);
        rows.push(row);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{:<28} {:>5} {:>9} {:>10} {:>12} {:>8} {:>14}",
            "PEER", "UP", "LATENCY", "CHUNKS", "BYTES", "OWNS", "TAG HELD"
        );
        for row in &rows {
            println!(
                "{:<28} {:>5} {:>9} {:>10} {:>12} {:>8} {:>14}",
                row["peer"].as_str().unwrap_or("?"),
                if row["up"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                },
                row["latency_ms"]
                    .as_f64()
                    .map(|ms| format!("{ms:.1}ms"))
                    .unwrap_or_else(|| "-".into()),
                row["chunks_held"]
                    .as_u64()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                row["bytes_held"]
                    .as_u64()
                    .map(|n| bytesize::ByteSize(n).to_string())
                    .unwrap_or_else(|| "-".into()),
                row["owns"].as_u64().unwrap_or_default(),
                match (row["tag_held"].as_u64(), row["tag_chunks"].as_u64()) {
                    (Some(held), Some(total)) => format!("{held}/{total}"),
                    _ => "-".into(),
                },
            );
            if let Some(error) = row["error"].as_str() {
                println!("  {error}");
            }
        }
    }
    Ok(if all_up {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One row of `thaw peers status`.
async fn peer_status(tier: &PeerTier, peer: &Peer, tag: Option<&str>) -> serde_json::Value {
    let mut row = serde_json::json!({ "peer": peer.authority, "url": peer.base.as_str() });
    let started = Instant::now();
    let health = async {
        let mut url = peer.base.clone();
        url.set_path("/healthz");
        let response = tier
            .http()
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await?
            .error_for_status()?;
        response.json::<serde_json::Value>().await
    };
    match health.await {
        Ok(health) => {
            row["up"] = true.into();
            row["latency_ms"] = (started.elapsed().as_secs_f64() * 1000.0).into();
            row["chunks_held"] = health["chunks_held"].clone();
            row["bytes_held"] = health["bytes_held"].clone();
        }
        Err(e) => {
            row["up"] = false.into();
            row["error"] = format!("{}: {e}", peer.base).into();
            return row;
        }
    }
    if let Some(tag) = tag {
        let mut url = peer.base.clone();
        url.set_path(INVENTORY_PATH);
        url.query_pairs_mut().append_pair("tag", tag);
        let mut request = tier.http().get(url).timeout(Duration::from_secs(30));
        if let Some(token) = tier.token() {
            request = request.header(reqwest::header::AUTHORIZATION, token.header_value());
        }
        let inventory = async {
            request
                .send()
                .await?
                .error_for_status()?
                .json::<Inventory>()
                .await
        };
        match inventory.await {
            Ok(inventory) => {
                if let Some(entry) = inventory.tags.first() {
                    row["tag_held"] = entry.held.into();
                    row["tag_chunks"] = entry.chunks.into();
                }
            }
            Err(e) => row["error"] = format!("inventory of {}: {e}", peer.base).into(),
        }
    }
    row
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
    let targets: Vec<LoadTarget> = if let Some(template) = &args.url_template {
        chunks
            .iter()
            .map(|c| {
                let url = template.replace("{id}", &c.id.to_hex());
                url.parse()
                    .with_context(|| format!("--url-template gives a bad URL: {url}"))
                    .map(|url| LoadTarget { url, id: c.id })
            })
            .collect::<anyhow::Result<_>>()?
    } else {
        let peers: Vec<Peer> = match &args.target {
            Some(target) => match target.parse::<PeerSpec>()? {
                PeerSpec::Static(peers) if peers.len() == 1 => peers,
                _ => bail!("--target takes one peer URL, got {target}"),
            },
            None => required_peers(global)
                .await?
                .membership()
                .current()
                .to_vec(),
        };
        chunks
            .iter()
            .map(|c| {
                let owner = rendezvous::owner(&peers, &c.id).context("no peers to load")?;
                Ok(LoadTarget {
                    url: chunk_url(owner, c),
                    id: c.id,
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let options = LoadOptions {
        requests: args.requests,
        concurrency: args.concurrency,
        token: token.clone(),
        verify: !args.no_verify,
        timeout: Duration::from_secs(30),
    };
    if let Some(dir) = &args.save_chunks {
        save_chunks(&http, &targets, &options, dir).await?;
    } else if !args.cold {
        let warm_up = LoadOptions {
            requests: targets.len(),
            verify: true,
            ..options.clone()
        };
        let report = load_test::run(http.clone(), targets.clone(), warm_up).await;
        if report.errors > 0 {
            bail!(
                "warm-up: {} of {} requests failed; first: {}",
                report.errors,
                report.requests,
                report.first_error.unwrap_or_default()
            );
        }
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

/// Fetches every target once, checks it and writes it to `dir/<id>`.
async fn save_chunks(
    http: &reqwest::Client,
    targets: &[LoadTarget],
    options: &LoadOptions,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for target in targets {
        let body = load_test::get(http, target, options)
            .await
            .map_err(anyhow::Error::msg)?;
        target
            .id
            .verify(&body, target.url.as_str())
            .with_context(|| format!("checking {}", target.url))?;
        let path = dir.join(target.id.to_hex());
        std::fs::write(&path, &body).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
