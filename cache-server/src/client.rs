//! The peer tier: a [`ChunkSource`] that asks a chunk's owner peer, then the next peer in
//! rendezvous order, verifying what they send and backing off from peers that fail.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use thaw_core::chunker::MAX_CHUNK_BYTES;
use thaw_core::pack::ChunkRef;
use thaw_core::tier::ChunkSource;
use thaw_core::ChunkId;

use crate::auth::Token;
use crate::health::PeerHealth;
use crate::membership::{Membership, PeerSpec};
use crate::metrics::{ClientMetrics, PeerOutcome};
use crate::protocol::{LocationQuery, CHUNKS_PATH};
use crate::rendezvous::{self, Peer};
use crate::tls::ClientTls;
use crate::{Error, Result};

/// Default time a peer has to deliver a chunk.
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// Default interval between membership refreshes (files and DNS names).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(10);
/// Peers asked per chunk before the object store: the owner and its successor.
pub const DEFAULT_ATTEMPTS: usize = 2;

/// How the peer tier reaches the cluster.
#[derive(Clone, Debug)]
pub struct PeerClientConfig {
    /// Who the peers are.
    pub spec: PeerSpec,
    /// The bearer token, when the peers require one.
    pub token: Option<Token>,
    /// Time a peer has to deliver a whole chunk.
    pub timeout: Duration,
    /// Peers asked per chunk (in rendezvous order, skipping those backing off).
    pub attempts: usize,
    /// Membership refresh interval.
    pub refresh: Duration,
    /// TLS to the peers (`https://` peers); `None` trusts nothing beyond the system's roots.
    pub tls: Option<ClientTls>,
}

impl PeerClientConfig {
    /// Defaults for `spec`: no token, 5 s timeout, two attempts, refresh every 10 s.
    pub fn new(spec: PeerSpec) -> Self {
        PeerClientConfig {
            spec,
            token: None,
            timeout: DEFAULT_PEER_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
            refresh: DEFAULT_REFRESH,
            tls: None,
        }
    }
}

/// Aborts a background task when dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why one peer request failed.
struct Failure {
    outcome: PeerOutcome,
    detail: String,
}

impl Failure {
    fn new(outcome: PeerOutcome, detail: impl Into<String>) -> Self {
        Failure {
            outcome,
            detail: detail.into(),
        }
    }

    fn from_http(e: reqwest::Error) -> Self {
        let outcome = if e.is_timeout() {
            PeerOutcome::Timeout
        } else if e.is_connect() {
            PeerOutcome::Unreachable
        } else {
            PeerOutcome::Error
        };
        Failure::new(outcome, crate::status::with_causes(&e))
    }
}

/// The peer tier of a [`thaw_core::tier::TieredStore`].
#[derive(Debug)]
pub struct PeerTier {
    membership: Arc<Membership>,
    health: PeerHealth,
    http: reqwest::Client,
    token: Option<Token>,
    timeout: Duration,
    attempts: usize,
    metrics: Arc<ClientMetrics>,
    _refresh: Option<AbortOnDrop>,
}

impl PeerTier {
    /// Resolves the membership and starts refreshing it; must run inside a tokio runtime.
    pub async fn connect(config: PeerClientConfig) -> Result<Self> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.timeout.min(Duration::from_secs(2)))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true);
        if let Some(tls) = &config.tls {
            builder = builder.use_preconfigured_tls(tls.config()?);
        }
        let http = builder.build().map_err(|e| Error::Client(e.to_string()))?;
        let membership = Arc::new(Membership::start(config.spec).await);
        let refresh = membership.spawn_refresh(config.refresh).map(AbortOnDrop);
        Ok(PeerTier {
            membership,
            health: PeerHealth::default(),
            http,
            token: config.token,
            timeout: config.timeout,
            attempts: config.attempts.max(1),
            metrics: Arc::new(ClientMetrics::default()),
            _refresh: refresh,
        })
    }

    /// The membership this tier routes over.
    pub fn membership(&self) -> &Arc<Membership> {
        &self.membership
    }

    /// Back-off state of the peers.
    pub fn health(&self) -> &PeerHealth {
        &self.health
    }

    /// What this tier counts.
    pub fn metrics(&self) -> &Arc<ClientMetrics> {
        &self.metrics
    }

    /// The HTTP client (with this tier's timeouts), for tools that talk to peers directly.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The bearer token sent to peers.
    pub fn token(&self) -> Option<&Token> {
        self.token.as_ref()
    }

    /// Asks `peer` for `chunk` and checks the answer against its id.
    async fn ask(&self, peer: &Peer, chunk: &ChunkRef) -> Result<Bytes, Failure> {
        let mut request = self.http.get(chunk_url(peer, chunk)).timeout(self.timeout);
        if let Some(token) = &self.token {
            request = request.header(reqwest::header::AUTHORIZATION, token.header_value());
        }
        let mut response = request.send().await.map_err(Failure::from_http)?;
        let status = response.status();
        if !status.is_success() {
            let outcome = match status.as_u16() {
                404 => PeerOutcome::NotFound,
                401 | 403 => PeerOutcome::Refused,
                429 | 503 => PeerOutcome::Overloaded,
                _ => PeerOutcome::Error,
            };
            return Err(Failure::new(outcome, format!("HTTP {status}")));
        }
        let limit = if chunk.raw_len > 0 {
            chunk.raw_len as usize
        } else {
            MAX_CHUNK_BYTES as usize
        };
        if response
            .content_length()
            .is_some_and(|n| n as usize > limit)
        {
            return Err(Failure::new(
                PeerOutcome::Corrupt,
                format!(
                    "announced {} bytes for a chunk of {limit}",
                    response.content_length().unwrap_or_default()
                ),
            ));
        }
        let mut body = BytesMut::with_capacity(limit);
        while let Some(part) = response.chunk().await.map_err(Failure::from_http)? {
            if body.len() + part.len() > limit {
                return Err(Failure::new(
                    PeerOutcome::Corrupt,
                    format!("sent more than the chunk's {limit} bytes"),
                ));
            }
            body.extend_from_slice(&part);
        }
        let body = body.freeze();
        if ChunkId::of(&body) != chunk.id {
            return Err(Failure::new(
                PeerOutcome::Corrupt,
                format!("{} bytes that do not hash to the chunk id", body.len()),
            ));
        }
        Ok(body)
    }

    /// Counts and logs a failed request and starts the peer's back-off, unless the peer is
    /// healthy: it only lacked the chunk, or it sheds load for a moment (backing off a busy owner
    /// would send all its chunks to their successors, each a second object-store read).
    fn record_failure(&self, peer: &Peer, chunk: &ChunkRef, failure: &Failure) {
        self.metrics.count(&peer.authority, failure.outcome);
        if matches!(
            failure.outcome,
            PeerOutcome::NotFound | PeerOutcome::Overloaded
        ) {
            return;
        }
        let Some(backoff) = self.health.failed(&peer.authority) else {
            return;
        };
        let (peer_url, chunk_id) = (peer.base.as_str(), chunk.id.to_hex());
        match failure.outcome {
            PeerOutcome::Refused => tracing::error!(
                peer = peer_url, chunk = %chunk_id, detail = %failure.detail, ?backoff,
                "peer refused our token (check --peer-token-file on both sides); skipping it"
            ),
            outcome => tracing::warn!(
                peer = peer_url, chunk = %chunk_id, ?outcome, detail = %failure.detail, ?backoff,
                "peer failed; skipping it"
            ),
        }
    }
}

/// `BASE/v1/chunks/ID`, with the location query when the chunk's location is known.
pub fn chunk_url(peer: &Peer, chunk: &ChunkRef) -> url::Url {
    let mut url = peer.base.clone();
    url.set_path(&format!("{CHUNKS_PATH}/{}", chunk.id.to_hex()));
    if let Some(location) = &chunk.location {
        let query = LocationQuery::from(location);
        url.query_pairs_mut()
            .append_pair("pack", &query.pack)
            .append_pair("offset", &query.offset.to_string())
            .append_pair("stored", &query.stored.to_string())
            .append_pair("raw", &query.raw.to_string())
            .append_pair("codec", &query.codec);
    }
    url
}

#[async_trait]
impl ChunkSource for PeerTier {
    fn name(&self) -> &str {
        "peer"
    }

    /// Every chunk is hashed against its id in [`PeerTier::fetch`] before it is returned.
    fn returns_verified(&self) -> bool {
        true
    }

    async fn fetch(&self, chunk: &ChunkRef) -> thaw_core::Result<Option<Bytes>> {
        let peers = self.membership.current();
        // Without a location only a peer that already holds the chunk can answer: ask the owner.
        let attempts = if chunk.location.is_some() {
            self.attempts
        } else {
            1
        };
        let mut tried = 0;
        for peer in rendezvous::rank(&peers, &chunk.id) {
            if tried == attempts {
                break;
            }
            if !self.health.available(&peer.authority) {
                self.metrics.skipped_backing_off.inc();
                continue;
            }
            tried += 1;
            let started = Instant::now();
            match self.ask(peer, chunk).await {
                Ok(bytes) => {
                    self.metrics.count(&peer.authority, PeerOutcome::Ok);
                    self.metrics
                        .fetch_seconds
                        .observe(started.elapsed().as_secs_f64());
                    self.health.succeeded(&peer.authority);
                    return Ok(Some(bytes));
                }
                Err(failure) => self.record_failure(peer, chunk, &failure),
            }
        }
        self.metrics.fell_through.inc();
        Ok(None)
    }
}
