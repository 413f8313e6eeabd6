//! `thaw cache-server`: serves verified chunks from memory and a RocksDB disk cache over HTTP,
//! fetching misses from the object store once however many clients ask at the same time.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use bytes::Bytes;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use thaw_core::metrics::TierCollector;
use thaw_core::pack::ChunkRef;
use thaw_core::store::Store;
use thaw_core::tier::{
    CacheConfig, ChunkCache, DiskCache, Fetched, MemoryCache, PackSource, Served, TieredStore,
};
use thaw_core::ChunkId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::Token;
use crate::inventory::{self, ChunkLists};
use crate::metrics::{RejectReason, RequestLabels, ServerMetrics, TierLabels};
use crate::protocol::{LocationQuery, CHUNKS_PATH, INVENTORY_PATH, SERVED_BY_HEADER};
use crate::tls::ServerTls;
use crate::{Error, Result};

/// Default bound on requests served at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// Default bound on requests served at once for one client address.
pub const DEFAULT_MAX_PER_CLIENT: usize = 256;

/// How the server listens and protects itself.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The bearer token every chunk and inventory request must carry; `None` serves anyone
    /// (only for closed networks: the CLI asks for `--no-auth` explicitly).
    pub token: Option<Token>,
    /// Requests served at once; more wait up to [`ADMISSION_WAIT`], then get 503.
    pub max_in_flight: usize,
    /// Requests served at once for one client address; more wait their turn the same way.
    pub max_per_client: usize,
    /// Serve HTTPS with this certificate (and, with a client CA, only to clients with one).
    pub tls: Option<ServerTls>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            token: None,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_per_client: DEFAULT_MAX_PER_CLIENT,
            tls: None,
        }
    }
}

/// How long requests under way may take once an HTTPS server is asked to stop.
const TLS_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How often the disk cache's newest chunks are made durable.
pub const DISK_FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// How long a request may wait for its turn before it is answered 503.
pub const ADMISSION_WAIT: Duration = Duration::from_secs(1);

/// Bounds on concurrent requests, per client address and overall. A request over its client's
/// share or the total waits its turn for up to [`ADMISSION_WAIT`], so one busy client queues
/// behind itself while others are served; only then is it refused. Entries exist only for
/// clients that passed the token check.
struct Limits {
    overall: Arc<Semaphore>,
    per_client: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
    max_per_client: usize,
}

/// A request's place under the [`Limits`]; released on drop.
struct Admission {
    _client: OwnedSemaphorePermit,
    _overall: OwnedSemaphorePermit,
}

impl Limits {
    async fn admit(&self, client: IpAddr) -> Option<Admission> {
        let share = self
            .per_client
            .lock()
            .expect("limits lock")
            .entry(client)
            .or_insert_with(|| Arc::new(Semaphore::new(self.max_per_client)))
            .clone();
        let deadline = tokio::time::Instant::now() + ADMISSION_WAIT;
        let client_permit = tokio::time::timeout_at(deadline, share.acquire_owned())
            .await
            .ok()?
            .ok()?;
        let overall = tokio::time::timeout_at(deadline, self.overall.clone().acquire_owned())
            .await
            .ok()?
            .ok()?;
        Some(Admission {
            _client: client_permit,
            _overall: overall,
        })
    }
}

struct Shared {
    tiers: TieredStore,
    /// Names of the cache tiers, by position (for `x-thaw-served-by` and metrics).
    cache_names: Vec<String>,
    disk: DiskCache,
    store: Store,
    token: Option<Token>,
    metrics: Arc<ServerMetrics>,
    registry: Registry,
    limits: Arc<Limits>,
    chunk_lists: ChunkLists,
}

/// The peer cache daemon: its tiers, limits and metrics. Cheap to clone.
#[derive(Clone)]
pub struct CacheServer {
    shared: Arc<Shared>,
    /// The TLS configuration, read and checked when the server is made.
    tls: Option<rustls::ServerConfig>,
}

impl CacheServer {
    /// A server over `store`, keeping chunks in memory and the disk cache `cache` describes
    /// (which is required: a peer without a disk cache would forget everything on restart).
    pub fn new(store: Store, cache: &CacheConfig, config: ServerConfig) -> Result<Self> {
        let dir = cache.disk_dir.clone().ok_or_else(|| {
            Error::Core(thaw_core::Error::DiskCache {
                path: "(none)".into(),
                reason: "a cache server needs a disk cache (do not pass --no-disk-cache)".into(),
            })
        })?;
        let disk = DiskCache::open(&dir, cache.disk_bytes)?;
        let mut caches: Vec<Arc<dyn ChunkCache>> = Vec::new();
        if cache.memory_bytes > 0 {
            caches.push(Arc::new(MemoryCache::new(cache.memory_bytes)));
        }
        caches.push(Arc::new(disk.clone()));
        let tiers = TieredStore::new(caches, Arc::new(PackSource::new(store.clone())));
        let metrics = Arc::new(ServerMetrics::default());
        let mut registry = Registry::with_prefix("thaw");
        metrics.register(&mut registry);
        registry.register_collector(Box::new(TierCollector::new(tiers.clone(), store.clone())));
        let tls = config.tls.as_ref().map(ServerTls::config).transpose()?;
        Ok(CacheServer {
            tls,
            shared: Arc::new(Shared {
                cache_names: tiers.cache_names(),
                tiers,
                disk,
                store,
                token: config.token,
                metrics,
                registry,
                limits: Arc::new(Limits {
                    overall: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
                    per_client: Mutex::new(HashMap::new()),
                    max_per_client: config.max_per_client.max(1),
                }),
                chunk_lists: ChunkLists::default(),
            }),
        })
    }

    /// The server's disk cache.
    pub fn disk(&self) -> &DiskCache {
        &self.shared.disk
    }

    /// The server's tiers (memory, disk, store).
    pub fn tiers(&self) -> &TieredStore {
        &self.shared.tiers
    }

    /// What the server counts.
    pub fn metrics(&self) -> &Arc<ServerMetrics> {
        &self.shared.metrics
    }

    /// The HTTP routes.
    pub fn router(&self) -> Router {
        let guarded = Router::new()
            .route(
                &format!("{CHUNKS_PATH}/{{id}}"),
                get(get_chunk).head(head_chunk),
            )
            .route(INVENTORY_PATH, get(get_inventory))
            .route_layer(axum::middleware::from_fn_with_state(
                self.shared.clone(),
                guard,
            ));
        Router::new()
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .merge(guarded)
            .with_state(self.shared.clone())
    }

    /// Binds `addr`.
    pub async fn bind(addr: &str) -> Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind {
                addr: addr.to_string(),
                source,
            })
    }

    /// Serves on `listener` until `shutdown` completes, then finishes the requests under way.
    /// The disk cache is flushed every [`DISK_FLUSH_INTERVAL`] and at the end, so a restart keeps
    /// what was fetched (a crash loses at most the last interval's chunks).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = self.router();
        let disk = self.shared.disk.clone();
        let flusher = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(DISK_FLUSH_INTERVAL);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if let Err(e) = disk.flush().await {
                    tracing::warn!(error = %e, "could not flush the disk cache");
                }
            }
        });
        // Between bursts of requests the server gives back the buffers the allocator kept.
        let metrics = self.shared.metrics.clone();
        let releaser = tokio::spawn(thaw_sys::host::release_memory_when_idle(move || {
            metrics.admitted.get()
        }));
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        let served = match &self.tls {
            None => {
                axum::serve(listener, service)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            Some(tls) => {
                let config = RustlsConfig::from_config(Arc::new(tls.clone()));
                let handle = axum_server::Handle::new();
                let stopper = handle.clone();
                tokio::spawn(async move {
                    shutdown.await;
                    // Requests under way get this long; idle keep-alive connections close now.
                    stopper.graceful_shutdown(Some(TLS_SHUTDOWN_GRACE));
                });
                axum_server::from_tcp_rustls(listener.into_std()?, config)?
                    .handle(handle)
                    .serve(service)
                    .await
            }
        };
        flusher.abort();
        releaser.abort();
        if let Err(e) = self.shared.disk.flush().await {
            tracing::warn!(error = %e, "could not flush the disk cache on shutdown");
        }
        served
    }
}

/// Checks the token, then admits the request under the concurrency limits.
async fn guard(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &shared.token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !token.admits(presented) {
            shared.metrics.reject(RejectReason::Unauthorized);
            tracing::warn!(%client, path = %request.uri().path(), "refused a request without the right token");
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a valid bearer token is required\n",
            )
                .into_response();
        }
    }
    let Some(_admission) = shared.limits.admit(client.ip()).await else {
        shared.metrics.reject(RejectReason::Overloaded);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "too many requests in flight\n",
        )
            .into_response();
    };
    let _in_flight = InFlight::enter(&shared.metrics);
    next.run(request).await
}

/// Counts a request in `in_flight` until dropped (also when the client goes away mid-request
/// and the handler is cancelled).
struct InFlight(Arc<ServerMetrics>);

impl InFlight {
    fn enter(metrics: &Arc<ServerMetrics>) -> Self {
        metrics.admitted.inc();
        metrics.in_flight.inc();
        InFlight(metrics.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// The location fields of a chunk request: all or none.
#[derive(Debug, Deserialize)]
struct LocationParams {
    pack: Option<String>,
    offset: Option<u64>,
    stored: Option<u32>,
    raw: Option<u32>,
    codec: Option<String>,
}

impl LocationParams {
    fn into_query(self) -> Result<Option<LocationQuery>, String> {
        match (self.pack, self.offset, self.stored, self.raw, self.codec) {
            (None, None, None, None, None) => Ok(None),
            (Some(pack), Some(offset), Some(stored), Some(raw), Some(codec)) => {
                Ok(Some(LocationQuery {
                    pack,
                    offset,
                    stored,
                    raw,
                    codec,
                }))
            }
            _ => Err("give all of pack, offset, stored, raw and codec, or none".into()),
        }
    }
}

fn bad_request(shared: &Shared, route: &'static str, reason: String) -> Response {
    shared.metrics.reject(RejectReason::BadRequest);
    count(shared, route, StatusCode::BAD_REQUEST);
    (StatusCode::BAD_REQUEST, format!("{reason}\n")).into_response()
}

fn count(shared: &Shared, route: &'static str, status: StatusCode) {
    shared
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            status: status.as_u16(),
        })
        .inc();
}

/// The request a chunk path and query describe.
fn chunk_request(
    id: &str,
    params: Result<Query<LocationParams>, QueryRejection>,
) -> Result<ChunkRef, String> {
    let id: ChunkId = id
        .parse()
        .map_err(|_| format!("{id:?} is not a chunk id (64 hex digits)"))?;
    let Query(params) = params.map_err(|e| format!("chunk {id}: {e}"))?;
    let location = match params
        .into_query()
        .map_err(|e| format!("chunk {id}: {e}"))?
    {
        Some(query) => Some(
            query
                .to_location()
                .map_err(|e| format!("chunk {id}: {e}"))?,
        ),
        None => None,
    };
    Ok(ChunkRef {
        id,
        raw_len: location.map(|l| l.raw_len).unwrap_or(0),
        location,
    })
}

fn tier_name(shared: &Shared, served: Served) -> String {
    match served {
        Served::Cache(i) => shared
            .cache_names
            .get(i)
            .cloned()
            .unwrap_or_else(|| "cache".into()),
        Served::Peer => "peer".into(),
        Served::Origin => "store".into(),
    }
}

async fn get_chunk(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    params: Result<Query<LocationParams>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    const ROUTE: &str = "chunk";
    let started = Instant::now();
    let chunk = match chunk_request(&id, params) {
        Ok(chunk) => chunk,
        Err(reason) => return bad_request(&shared, ROUTE, reason),
    };
    let fetched = if chunk.location.is_some() {
        shared.tiers.fetch(&chunk).await.map(Some)
    } else {
        Ok(shared.tiers.get_cached(&chunk).await)
    };
    let fetched = match fetched {
        Ok(Some(fetched)) => fetched,
        Ok(None) => {
            count(&shared, ROUTE, StatusCode::NOT_FOUND);
            return (
                StatusCode::NOT_FOUND,
                format!("chunk {id} is not held here (send its location to have it fetched)\n"),
            )
                .into_response();
        }
        Err(e) => {
            // The store lacks or garbles the chunk: this peer is healthy, the chunk is not.
            let status = if e.is_not_found()
                || matches!(
                    e,
                    thaw_core::Error::Corrupt { .. } | thaw_core::Error::ChunkMismatch { .. }
                ) {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_GATEWAY
            };
            tracing::warn!(chunk = %chunk.id, error = %e, "could not fetch a chunk for a client");
            count(&shared, ROUTE, status);
            return (status, format!("{e}\n")).into_response();
        }
    };
    if fetched.served == Served::Origin && !fetched.joined {
        shared
            .metrics
            .store_fetch_seconds
            .observe(started.elapsed().as_secs_f64());
    }
    let response = chunk_response(&shared, &chunk.id, fetched, headers.get(header::RANGE));
    count(&shared, ROUTE, response.status());
    shared
        .metrics
        .request_seconds
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The inclusive byte range a `Range` header asks of a chunk of `total` bytes: `None` for the
/// whole chunk (no header, or several ranges, which RFC 9110 lets a server ignore), `Err` when
/// it cannot be satisfied or parsed.
fn requested_range(range: Option<&HeaderValue>, total: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(range) = range else {
        return Ok(None);
    };
    let text = range.to_str().map_err(|_| ())?;
    let parsed = http_range_header::parse_range_header(text).map_err(|_| ())?;
    let ranges = parsed.validate(total).map_err(|_| ())?;
    match ranges.as_slice() {
        // An empty chunk has no byte to name: `validate(0)` lets `bytes=0-` through as 0..=MAX.
        [only] if *only.start() <= *only.end() && *only.end() < total => {
            Ok(Some((*only.start(), *only.end())))
        }
        [_] => Err(()),
        _ => Ok(None),
    }
}

/// The chunk's bytes, or the part a single `Range` asks for.
fn chunk_response(
    shared: &Shared,
    id: &ChunkId,
    fetched: Fetched,
    range: Option<&HeaderValue>,
) -> Response {
    let tier = tier_name(shared, fetched.served);
    let total = fetched.bytes.len() as u64;
    let (status, body, content_range): (StatusCode, Bytes, Option<String>) =
        match requested_range(range, total) {
            Ok(None) => (StatusCode::OK, fetched.bytes, None),
            Ok(Some((start, end))) => (
                StatusCode::PARTIAL_CONTENT,
                fetched.bytes.slice(start as usize..end as usize + 1),
                Some(format!("bytes {start}-{end}/{total}")),
            ),
            Err(()) => {
                return (
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, format!("bytes */{total}"))],
                )
                    .into_response()
            }
        };
    shared
        .metrics
        .served_bytes
        .get_or_create(&TierLabels { tier: tier.clone() })
        .inc_by(body.len() as u64);
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", id.to_hex())) {
        headers.insert(header::ETAG, etag);
    }
    if let Ok(tier) = HeaderValue::from_str(&tier) {
        headers.insert(SERVED_BY_HEADER, tier);
    }
    if let Some(content_range) = content_range.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(header::CONTENT_RANGE, content_range);
    }
    response
}

async fn head_chunk(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    const ROUTE: &str = "chunk_head";
    let chunk = match chunk_request(&id, Ok(Query(LocationParams::none()))) {
        Ok(chunk) => chunk,
        Err(reason) => return bad_request(&shared, ROUTE, reason),
    };
    let status = match shared.tiers.get_cached(&chunk).await {
        Some(fetched) => {
            count(&shared, ROUTE, StatusCode::OK);
            let tier = tier_name(&shared, fetched.served);
            return (
                StatusCode::OK,
                [
                    (header::CONTENT_LENGTH, fetched.bytes.len().to_string()),
                    (header::CONTENT_TYPE, "application/octet-stream".into()),
                    (header::HeaderName::from_static(SERVED_BY_HEADER), tier),
                ],
            )
                .into_response();
        }
        None => StatusCode::NOT_FOUND,
    };
    count(&shared, ROUTE, status);
    status.into_response()
}

impl LocationParams {
    fn none() -> Self {
        LocationParams {
            pack: None,
            offset: None,
            stored: None,
            raw: None,
            codec: None,
        }
    }
}

#[derive(Debug, Deserialize)]
struct InventoryParams {
    tag: Option<String>,
}

async fn get_inventory(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<InventoryParams>,
) -> Response {
    const ROUTE: &str = "inventory";
    match inventory::inventory(
        &shared.store,
        &shared.disk,
        &shared.chunk_lists,
        params.tag.as_deref(),
    )
    .await
    {
        Ok(inventory) => {
            count(&shared, ROUTE, StatusCode::OK);
            axum::Json(inventory).into_response()
        }
        Err(e) => {
            let status = match &e {
                Error::Core(core) if core.is_not_found() => StatusCode::NOT_FOUND,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            count(&shared, ROUTE, status);
            (status, format!("{e}\n")).into_response()
        }
    }
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(crate::protocol::Health {
        status: "ok".into(),
        chunks_held: shared.disk.len() as u64,
        bytes_held: shared.disk.used_bytes(),
    })
    .into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    match thaw_core::metrics::encode_text(&shared.registry) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunk requests come from any client: a mutated path, query or Range header must be
    /// refused or answered, never panic, and never name bytes outside the chunk.
    #[test]
    fn fuzz_chunk_requests_and_ranges() {
        let pack = ChunkId::of(b"pack").to_hex();
        let seed = format!(
            "/v1/chunks/{}?pack={pack}&offset=16&stored=1000&raw=4000&codec=zstd",
            ChunkId::of(b"c").to_hex()
        );
        let cases = thaw_core::fuzz::cases(3000);
        thaw_core::fuzz::run("peer chunk request", &[seed.into_bytes()], cases, |input| {
            let Ok(uri) = axum::http::Uri::try_from(input) else {
                return;
            };
            let id = uri.path().rsplit('/').next().unwrap_or("");
            if let Ok(chunk) = chunk_request(id, Query::<LocationParams>::try_from_uri(&uri)) {
                if let Some(location) = chunk.location {
                    assert!(location
                        .offset
                        .checked_add(u64::from(location.stored_len))
                        .is_some());
                }
            }
        });
        let seeds = ["bytes=0-99", "bytes=100-", "bytes=-50", "bytes=0-1,5-9"]
            .map(|s| s.as_bytes().to_vec());
        let total = std::cell::Cell::new(0u64);
        thaw_core::fuzz::run("peer range header", &seeds, cases, |input| {
            total.set((total.get() * 7 + 13) % 5000);
            let Ok(value) = HeaderValue::from_bytes(input) else {
                return;
            };
            if let Ok(Some((start, end))) = requested_range(Some(&value), total.get()) {
                assert!(
                    start <= end && end < total.get(),
                    "{start}-{end} of {}",
                    total.get()
                );
            }
        });
    }

    /// Found by the fuzzer: `bytes=0-` of an empty chunk named bytes past its end (the slice
    /// panicked the request's task).
    #[test]
    fn an_open_range_of_an_empty_chunk_is_refused() {
        let value = HeaderValue::from_static("bytes=0-");
        assert_eq!(requested_range(Some(&value), 0), Err(()));
        assert_eq!(requested_range(Some(&value), 10), Ok(Some((0, 9))));
    }

    /// Answers peers send (health, inventory) are parsed by clients and the planner.
    #[test]
    fn fuzz_peer_answers() {
        let inventory = serde_json::to_vec(&crate::protocol::Inventory {
            chunks_held: 3,
            bytes_held: 300,
            tags: vec![crate::protocol::TagInventory {
                tag: "app".into(),
                manifest: ChunkId::of(b"m").to_hex(),
                chunks: 4,
                held: 3,
                bytes: 400,
                held_bytes: 300,
            }],
        })
        .unwrap();
        let cases = thaw_core::fuzz::cases(3000);
        thaw_core::fuzz::run("peer inventory", &[inventory], cases, |input| {
            let _ = serde_json::from_slice::<crate::protocol::Inventory>(input);
            let _ = serde_json::from_slice::<crate::protocol::Health>(input);
        });
    }
}
