//! Prometheus metrics of a mount, and the `/metrics` endpoint that serves them.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use thaw_core::store::Store;
use thaw_core::tier::TieredStore;

/// Counters and histograms the read path updates.
#[derive(Debug)]
pub struct FsMetrics {
    /// FUSE read requests answered.
    pub reads: Counter,
    /// Bytes returned by them.
    pub read_bytes: Counter,
    /// Reads answered with EIO.
    pub read_errors: Counter,
    /// Seconds per FUSE read request.
    pub read_seconds: Histogram,
    /// Seconds per chunk fetched through the tiers by reads and readahead (hits included).
    pub chunk_fetch_seconds: Histogram,
    /// Chunks the trace prefetcher fetched.
    pub prefetched_chunks: Counter,
    /// First reads of a chunk prefetch had already fetched.
    pub prefetch_hits: Counter,
    /// First reads of a chunk prefetch was fetching.
    pub prefetch_late: Counter,
    /// First reads of a chunk in the trace that prefetch had not reached.
    pub prefetch_missed: Counter,
    /// First reads of a chunk not in the trace.
    pub unpredicted_reads: Counter,
}

impl Default for FsMetrics {
    fn default() -> Self {
        let seconds = || Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        FsMetrics {
            reads: Counter::default(),
            read_bytes: Counter::default(),
            read_errors: Counter::default(),
            read_seconds: seconds(),
            chunk_fetch_seconds: seconds(),
            prefetched_chunks: Counter::default(),
            prefetch_hits: Counter::default(),
            prefetch_late: Counter::default(),
            prefetch_missed: Counter::default(),
            unpredicted_reads: Counter::default(),
        }
    }
}

impl FsMetrics {
    /// A registry holding these metrics, plus tier and object-store counters read at scrape time.
    pub fn registry(self: &Arc<Self>, tiers: TieredStore, store: Store) -> Registry {
        let mut registry = Registry::with_prefix("thaw");
        let m = self.as_ref();
        let counters = [
            ("fs_reads", "FUSE read requests answered", &m.reads),
            (
                "fs_read_bytes",
                "Bytes returned by FUSE reads",
                &m.read_bytes,
            ),
            (
                "fs_read_errors",
                "FUSE reads answered with EIO",
                &m.read_errors,
            ),
            (
                "prefetch_chunks",
                "Chunks fetched by trace prefetch",
                &m.prefetched_chunks,
            ),
            (
                "prefetch_hits",
                "First reads of a chunk prefetch had fetched",
                &m.prefetch_hits,
            ),
            (
                "prefetch_late",
                "First reads of a chunk prefetch was fetching",
                &m.prefetch_late,
            ),
            (
                "prefetch_missed",
                "First reads of a traced chunk prefetch had not reached",
                &m.prefetch_missed,
            ),
            (
                "unpredicted_reads",
                "First reads of a chunk not in the trace",
                &m.unpredicted_reads,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        let histograms = [
            ("fs_read_seconds", "Seconds per FUSE read", &m.read_seconds),
            (
                "chunk_fetch_seconds",
                "Seconds per chunk fetched through the tiers",
                &m.chunk_fetch_seconds,
            ),
        ];
        for (name, help, histogram) in histograms {
            registry.register(name, help, histogram.clone());
        }
        registry.register_collector(Box::new(TierCollector { tiers, store }));
        registry
    }
}

/// Reads the tier and store counters at scrape time.
struct TierCollector {
    tiers: TieredStore,
    store: Store,
}

impl std::fmt::Debug for TierCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TierCollector")
            .field("store", &self.store)
            .finish()
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(&[(&str, &str)], u64)],
) -> Result<(), std::fmt::Error> {
    let mut metric =
        encoder.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
    for (labels, value) in values {
        let labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ConstCounter::new(*value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for TierCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = self.tiers.counters();
        let names = self.tiers.cache_names();
        let mut hits: Vec<(Vec<(&str, &str)>, u64)> = names
            .iter()
            .zip(&c.cache_hits)
            .map(|(name, n)| (vec![("tier", name.as_str())], n.load(Ordering::Relaxed)))
            .collect();
        hits.push((
            vec![("tier", "store")],
            c.origin_fetches.load(Ordering::Relaxed),
        ));
        let hits: Vec<(&[(&str, &str)], u64)> =
            hits.iter().map(|(l, v)| (l.as_slice(), *v)).collect();
        counter(
            &mut encoder,
            "chunk_tier_hits",
            "Chunks served per tier",
            &hits,
        )?;
        counter(
            &mut encoder,
            "chunk_verify_failures",
            "Chunks a tier returned that failed verification",
            &[(&[], c.verify_failures.load(Ordering::Relaxed))],
        )?;
        let r = self.store.requests();
        counter(
            &mut encoder,
            "store_requests",
            "Requests made to the object store",
            &[
                (&[("op", "get")], r.gets.load(Ordering::Relaxed)),
                (&[("op", "get_range")], r.range_gets.load(Ordering::Relaxed)),
                (&[("op", "put")], r.puts.load(Ordering::Relaxed)),
                (&[("op", "other")], r.other.load(Ordering::Relaxed)),
            ],
        )?;
        counter(
            &mut encoder,
            "store_read_bytes",
            "Bytes read from the object store",
            &[(&[], r.bytes_read.load(Ordering::Relaxed))],
        )
    }
}

/// The registry as Prometheus text, or a 500 if it cannot be encoded.
fn render(registry: &Registry) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Serves `registry` as Prometheus text on `GET /metrics` at `addr` in a background task;
/// returns the bound address (useful with port 0) and the task.
pub async fn serve(
    registry: Registry,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let registry = Arc::new(registry);
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move { render(&registry) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok((bound, task))
}
