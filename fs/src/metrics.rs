//! Prometheus metrics of a mount, and the `/metrics` endpoint that serves them.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use thaw_core::metrics::TierCollector;
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
    /// Chunks queued because their file was opened (fetched whole ahead of the reads).
    pub opened_prefetch_chunks: Counter,
    /// Chunks queued because their directory was listed (its small files).
    pub listed_prefetch_chunks: Counter,
    /// Chunks the full fetch (`--fetch-all`) fetched.
    pub fetch_all_chunks: Counter,
    /// First reads of a chunk prefetch had already fetched.
    pub prefetch_hits: Counter,
    /// First reads of a chunk prefetch was fetching.
    pub prefetch_late: Counter,
    /// First reads of a chunk in the trace that prefetch had not reached.
    pub prefetch_missed: Counter,
    /// First reads of a chunk not in the trace.
    pub unpredicted_reads: Counter,
    /// Opens handed to the kernel (FUSE passthrough: reads never reach thaw).
    pub passthrough_opens: Counter,
    /// Opens whose reads come through thaw.
    pub fuse_opens: Counter,
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
            opened_prefetch_chunks: Counter::default(),
            listed_prefetch_chunks: Counter::default(),
            fetch_all_chunks: Counter::default(),
            prefetch_hits: Counter::default(),
            prefetch_late: Counter::default(),
            prefetch_missed: Counter::default(),
            unpredicted_reads: Counter::default(),
            passthrough_opens: Counter::default(),
            fuse_opens: Counter::default(),
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
                "fs_opened_prefetch_chunks",
                "Chunks queued for fetch because their file was opened",
                &m.opened_prefetch_chunks,
            ),
            (
                "fs_listed_prefetch_chunks",
                "Chunks queued for fetch because their directory was listed",
                &m.listed_prefetch_chunks,
            ),
            (
                "fs_fetch_all_chunks",
                "Chunks fetched by the full background fetch",
                &m.fetch_all_chunks,
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
            (
                "fs_passthrough_opens",
                "Opens handed to the kernel (FUSE passthrough to a disk cache file)",
                &m.passthrough_opens,
            ),
            (
                "fs_fuse_opens",
                "Opens whose reads come through thaw",
                &m.fuse_opens,
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
        registry.register_collector(Box::new(TierCollector::new(tiers, store)));
        registry
    }
}

/// A function that registers metrics.
type Registration = Arc<dyn Fn(&mut Registry) + Send + Sync>;

/// More metrics a mount's starter adds to its registry (for instance the peer tier's).
#[derive(Clone, Default)]
pub struct ExtraMetrics(Vec<Registration>);

impl ExtraMetrics {
    /// Adds a function that registers metrics.
    pub fn add(&mut self, register: impl Fn(&mut Registry) + Send + Sync + 'static) {
        self.0.push(Arc::new(register));
    }

    /// Registers everything added into `registry`.
    pub fn register_into(&self, registry: &mut Registry) {
        for register in &self.0 {
            register(registry);
        }
    }
}

impl std::fmt::Debug for ExtraMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExtraMetrics({} registrations)", self.0.len())
    }
}

/// The registry as Prometheus text, or a 500 if it cannot be encoded.
fn render(registry: &Registry) -> axum::response::Response {
    use axum::response::IntoResponse;
    match thaw_core::metrics::encode_text(registry) {
        Ok(text) => (
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
