//! Prometheus metrics of the cache server and of the peer tier in clients.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// Labels of a served request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `chunk`, `chunk_head`, `inventory`.
    pub route: &'static str,
    /// HTTP status code.
    pub status: u16,
}

/// Labels naming a tier.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    /// `memory`, `disk`, `store`.
    pub tier: String,
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RejectReason {
    /// No or a wrong bearer token.
    Unauthorized,
    /// Too many requests in flight (overall or from one client).
    Overloaded,
    /// A malformed id, location or range.
    BadRequest,
}

impl RejectReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Unauthorized => "unauthorized",
            RejectReason::Overloaded => "overloaded",
            RejectReason::BadRequest => "bad_request",
        }
    }
}

impl EncodeLabelValue for RejectReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Labels of a refused request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// Why.
    pub reason: RejectReason,
}

/// What the server counts.
#[derive(Debug)]
pub struct ServerMetrics {
    /// Requests answered, by route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Bytes of chunk bodies sent, by the tier that produced them.
    pub served_bytes: Family<TierLabels, Counter>,
    /// Seconds per chunk GET, from request to body ready.
    pub request_seconds: Histogram,
    /// Seconds per chunk this server fetched from the object store (cache misses).
    pub store_fetch_seconds: Histogram,
    /// Requests refused, by reason.
    pub rejected: Family<RejectLabels, Counter>,
    /// Requests being served now.
    pub in_flight: Gauge,
    /// Requests admitted (past the token check and the limits), all routes.
    pub admitted: Counter,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics {
            requests: Family::default(),
            served_bytes: Family::default(),
            request_seconds: seconds_histogram(),
            store_fetch_seconds: seconds_histogram(),
            rejected: Family::default(),
            in_flight: Gauge::default(),
            admitted: Counter::default(),
        }
    }
}

impl ServerMetrics {
    /// Registers every metric in `registry` (prefix `thaw_peer_server_` under a `thaw` registry).
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("peer_server");
        sub.register("requests", "Requests answered", self.requests.clone());
        sub.register(
            "served_bytes",
            "Chunk bytes sent, by the tier that produced them",
            self.served_bytes.clone(),
        );
        sub.register(
            "request_seconds",
            "Seconds per chunk GET",
            self.request_seconds.clone(),
        );
        sub.register(
            "store_fetch_seconds",
            "Seconds per chunk fetched from the object store on a miss",
            self.store_fetch_seconds.clone(),
        );
        sub.register("rejected", "Requests refused", self.rejected.clone());
        sub.register("in_flight", "Requests being served", self.in_flight.clone());
        sub.register(
            "admitted",
            "Requests admitted past the token check and the limits",
            self.admitted.clone(),
        );
    }

    /// Counts a refusal.
    pub fn reject(&self, reason: RejectReason) {
        self.rejected.get_or_create(&RejectLabels { reason }).inc();
    }
}

/// How one request to a peer ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum PeerOutcome {
    /// Good bytes.
    Ok,
    /// The peer does not hold it and could not fetch it (404).
    NotFound,
    /// Bytes that do not hash to the chunk id, or a wrong length.
    Corrupt,
    /// No answer in time.
    Timeout,
    /// Connection refused or reset.
    Unreachable,
    /// 401/403: the token was refused.
    Refused,
    /// 503: the peer sheds load.
    Overloaded,
    /// Any other failure (5xx, a broken body).
    Error,
}

impl PeerOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerOutcome::Ok => "ok",
            PeerOutcome::NotFound => "not_found",
            PeerOutcome::Corrupt => "corrupt",
            PeerOutcome::Timeout => "timeout",
            PeerOutcome::Unreachable => "unreachable",
            PeerOutcome::Refused => "refused",
            PeerOutcome::Overloaded => "overloaded",
            PeerOutcome::Error => "error",
        }
    }
}

impl EncodeLabelValue for PeerOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Labels of a peer request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerOutcomeLabels {
    /// The peer's authority.
    pub peer: String,
    /// How it ended.
    pub outcome: PeerOutcome,
}

/// What the peer tier of a client counts.
#[derive(Debug)]
pub struct ClientMetrics {
    /// Requests to peers, by peer and outcome.
    pub requests: Family<PeerOutcomeLabels, Counter>,
    /// Seconds per successful peer request.
    pub fetch_seconds: Histogram,
    /// Chunks asked of the peer tier that no peer delivered (the object store was used).
    pub fell_through: Counter,
    /// Attempts skipped because the peer was backing off.
    pub skipped_backing_off: Counter,
}

impl Default for ClientMetrics {
    fn default() -> Self {
        ClientMetrics {
            requests: Family::default(),
            fetch_seconds: seconds_histogram(),
            fell_through: Counter::default(),
            skipped_backing_off: Counter::default(),
        }
    }
}

impl ClientMetrics {
    /// Registers every metric in `registry` (prefix `thaw_peer_client_` under a `thaw` registry).
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("peer_client");
        sub.register(
            "requests",
            "Requests to peers by outcome",
            self.requests.clone(),
        );
        sub.register(
            "fetch_seconds",
            "Seconds per chunk a peer delivered",
            self.fetch_seconds.clone(),
        );
        sub.register(
            "fell_through",
            "Chunks no peer delivered (the object store was used)",
            self.fell_through.clone(),
        );
        sub.register(
            "skipped_backing_off",
            "Peer attempts skipped while the peer backs off",
            self.skipped_backing_off.clone(),
        );
    }

    /// Counts one request's outcome.
    pub fn count(&self, peer: &str, outcome: PeerOutcome) {
        self.requests
            .get_or_create(&PeerOutcomeLabels {
                peer: peer.to_string(),
                outcome,
            })
            .inc();
    }
}
