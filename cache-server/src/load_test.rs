//! A bounded HTTP load generator for chunk servers: a fixed number of GETs over a list of
//! chunk URLs at a fixed concurrency, reporting requests/s, MiB/s and latency percentiles. The
//! same client measures a peer and a baseline (nginx serving the same chunks as files).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use thaw_core::ChunkId;

use crate::auth::Token;

/// One URL to fetch, and the chunk id its body must hash to (when checking).
#[derive(Clone, Debug)]
pub struct LoadTarget {
    /// The URL.
    pub url: url::Url,
    /// The chunk it serves.
    pub id: ChunkId,
}

/// How hard to push.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Requests in all.
    pub requests: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Bearer token to send.
    pub token: Option<Token>,
    /// Hash every body against its chunk id (costs client CPU).
    pub verify: bool,
    /// Time limit per request.
    pub timeout: Duration,
}

/// What a load test measured.
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    /// Requests made.
    pub requests: usize,
    /// Requests that failed (status, transport or, when checking, a wrong body).
    pub errors: usize,
    /// The first failure, for the error message.
    pub first_error: Option<String>,
    /// Body bytes received.
    pub bytes: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Requests per second.
    pub requests_per_second: f64,
    /// MiB of bodies per second.
    pub mib_per_second: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Slowest request, milliseconds.
    pub max_ms: f64,
}

#[derive(Default)]
struct WorkerResult {
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
    bytes: u64,
}

/// Runs the load test: request `i` goes to `targets[i % targets.len()]`.
pub async fn run(
    http: reqwest::Client,
    targets: Vec<LoadTarget>,
    options: LoadOptions,
) -> LoadReport {
    let targets = Arc::new(targets);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..options.concurrency.max(1))
        .map(|_| {
            let (http, targets, next, options) =
                (http.clone(), targets.clone(), next.clone(), options.clone());
            tokio::spawn(async move {
                let mut result = WorkerResult::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= options.requests || targets.is_empty() {
                        return result;
                    }
                    let target = &targets[i % targets.len()];
                    let began = Instant::now();
                    match fetch_one(&http, target, &options).await {
                        Ok(n) => {
                            result.latencies.push(began.elapsed());
                            result.bytes += n;
                        }
                        Err(e) => {
                            result.errors += 1;
                            result.first_error.get_or_insert(e);
                        }
                    }
                }
            })
        })
        .collect();
    let mut all = WorkerResult::default();
    for worker in workers {
        let Ok(done) = worker.await else { continue };
        all.latencies.extend(done.latencies);
        all.errors += done.errors;
        all.bytes += done.bytes;
        if all.first_error.is_none() {
            all.first_error = done.first_error;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    all.latencies.sort();
    let percentile = |p: f64| -> f64 {
        if all.latencies.is_empty() {
            return 0.0;
        }
        let rank = ((p * all.latencies.len() as f64).ceil() as usize).clamp(1, all.latencies.len());
        all.latencies[rank - 1].as_secs_f64() * 1000.0
    };
    let requests = if targets.is_empty() {
        0
    } else {
        options.requests
    };
    LoadReport {
        requests,
        errors: all.errors,
        first_error: all.first_error,
        bytes: all.bytes,
        seconds,
        requests_per_second: requests as f64 / seconds.max(1e-9),
        mib_per_second: all.bytes as f64 / (1024.0 * 1024.0) / seconds.max(1e-9),
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        max_ms: percentile(1.0),
    }
}

async fn fetch_one(
    http: &reqwest::Client,
    target: &LoadTarget,
    options: &LoadOptions,
) -> Result<u64, String> {
    let body = get(http, target, options).await?;
    if options.verify && ChunkId::of(&body) != target.id {
        return Err(format!(
            "{}: body does not hash to chunk {}",
            target.url, target.id
        ));
    }
    Ok(body.len() as u64)
}

/// One GET of `target` with the options' token and timeout; the body of a 2xx answer, else an
/// error naming the URL.
pub async fn get(
    http: &reqwest::Client,
    target: &LoadTarget,
    options: &LoadOptions,
) -> Result<bytes::Bytes, String> {
    let mut request = http.get(target.url.clone()).timeout(options.timeout);
    if let Some(token) = &options.token {
        request = request.header(reqwest::header::AUTHORIZATION, token.header_value());
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("{}: {e}", target.url))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("{}: HTTP {status}", target.url));
    }
    response
        .bytes()
        .await
        .map_err(|e| format!("{}: {e}", target.url))
}
/// Requests every target once, each body checked, so the measured run that follows finds the
/// servers warm; an error when any request failed.
pub async fn warm_up(
    http: &reqwest::Client,
    targets: &[LoadTarget],
    options: &LoadOptions,
) -> Result<(), String> {
    let once = LoadOptions {
        requests: targets.len(),
        verify: true,
        ..options.clone()
    };
    let report = run(http.clone(), targets.to_vec(), once).await;
    match report.errors {
        0 => Ok(()),
        errors => Err(format!(
            "warm-up: {errors} of {} requests failed; first: {}",
            report.requests,
            report.first_error.unwrap_or_default()
        )),
    }
}

/// Each chunk at its owner among `peers` (rendezvous hashing), as clients would ask.
pub fn targets_at_owners(
    peers: &[crate::rendezvous::Peer],
    chunks: &[thaw_core::pack::ChunkRef],
) -> Result<Vec<LoadTarget>, String> {
    chunks
        .iter()
        .map(|chunk| {
            let owner = crate::rendezvous::owner(peers, &chunk.id).ok_or("no peers to load")?;
            Ok(LoadTarget {
                url: crate::client::chunk_url(owner, chunk),
                id: chunk.id,
            })
        })
        .collect()
}

/// Each chunk at `template` with `{id}` replaced by its id (any server, e.g. nginx serving
/// chunk files).
pub fn targets_from_template(
    template: &str,
    chunks: &[thaw_core::pack::ChunkRef],
) -> Result<Vec<LoadTarget>, String> {
    chunks
        .iter()
        .map(|chunk| {
            let url = template.replace("{id}", &chunk.id.to_hex());
            url.parse()
                .map_err(|e| format!("the URL template gives a bad URL {url}: {e}"))
                .map(|url| LoadTarget { url, id: chunk.id })
        })
        .collect()
}

/// Fetches every target once, checks it against its id and writes it to `dir/<id>` (the files
/// a baseline server then serves).
pub async fn save_chunks(
    http: &reqwest::Client,
    targets: &[LoadTarget],
    options: &LoadOptions,
    dir: &std::path::Path,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    for target in targets {
        let body = get(http, target, options).await?;
        target
            .id
            .verify(&body, target.url.as_str())
            .map_err(|e| format!("checking {}: {e}", target.url))?;
        let path = dir.join(target.id.to_hex());
        std::fs::write(&path, &body).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}
