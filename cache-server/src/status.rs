//! `thaw peers status`: asks every peer of the membership how it is (`/healthz`), what it holds
//! of a tag (`/v1/inventory`) and how many of the tag's chunks rendezvous hashing gives it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thaw_core::ChunkId;

use crate::auth::Token;
use crate::client::PeerTier;
use crate::protocol::{Health, Inventory, INVENTORY_PATH};
use crate::rendezvous::{self, Peer};

/// How long a health check may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an inventory may take (a server walks the tag's chunk list).
const INVENTORY_TIMEOUT: Duration = Duration::from_secs(30);

/// One peer's row.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// `host:port`.
    pub peer: String,
    /// Its base URL.
    pub url: String,
    /// Whether `/healthz` answered.
    pub up: bool,
    /// How long `/healthz` took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Chunks in its disk cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks_held: Option<u64>,
    /// Their bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_held: Option<u64>,
    /// The tag's chunks rendezvous hashing gives this peer.
    pub owns: u64,
    /// The tag's chunks it holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag_held: Option<u64>,
    /// The tag's distinct chunks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag_chunks: Option<u64>,
    /// What failed, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The status of every current peer of `tier`; `tag` and its distinct `chunks` add the tag's
/// share (held and owned).
pub async fn peer_statuses(
    tier: &PeerTier,
    tag: Option<&str>,
    chunks: &[ChunkId],
) -> Vec<PeerStatus> {
    let peers = tier.membership().current();
    // Each chunk's owner, computed once (not once per peer).
    let mut owned_by: HashMap<&str, u64> = HashMap::new();
    for chunk in chunks {
        if let Some(owner) = rendezvous::owner(&peers, chunk) {
            *owned_by.entry(owner.authority.as_str()).or_default() += 1;
        }
    }
    let mut rows = Vec::new();
    for peer in peers.iter() {
        let mut row = peer_status(tier, peer, tag).await;
        row.owns = owned_by.get(peer.authority.as_str()).copied().unwrap_or(0);
        rows.push(row);
    }
    rows
}

/// An error and its causes, `: `-separated (reqwest's own message leaves out why a connection
/// failed, such as the certificate a TLS handshake refused).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let line = c.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = c.source();
    }
    text
}

/// What the cache server at `base` holds: of every tag, or of `tag` only (`GET /v1/inventory`).
pub async fn fetch_inventory(
    http: &reqwest::Client,
    base: &url::Url,
    token: Option<&Token>,
    tag: Option<&str>,
) -> reqwest::Result<Inventory> {
    let mut url = base.clone();
    url.set_path(INVENTORY_PATH);
    if let Some(tag) = tag {
        url.query_pairs_mut().append_pair("tag", tag);
    }
    let mut request = http.get(url).timeout(INVENTORY_TIMEOUT);
    if let Some(token) = token {
        request = request.header(reqwest::header::AUTHORIZATION, token.header_value());
    }
    request
        .send()
        .await?
        .error_for_status()?
        .json::<Inventory>()
        .await
}

/// One peer's health and, with `tag`, its share of the tag.
async fn peer_status(tier: &PeerTier, peer: &Peer, tag: Option<&str>) -> PeerStatus {
    let mut row = PeerStatus {
        peer: peer.authority.clone(),
        url: peer.base.to_string(),
        ..PeerStatus::default()
    };
    let started = Instant::now();
    let mut url = peer.base.clone();
    url.set_path("/healthz");
    let health = async {
        tier.http()
            .get(url)
            .timeout(HEALTH_TIMEOUT)
            .send()
            .await?
            .error_for_status()?
            .json::<Health>()
            .await
    };
    match health.await {
        Ok(health) => {
            row.up = true;
            row.latency_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
            row.chunks_held = Some(health.chunks_held);
            row.bytes_held = Some(health.bytes_held);
        }
        Err(e) => {
            row.error = Some(format!("{}: {}", peer.base, with_causes(&e)));
            return row;
        }
    }
    let Some(tag) = tag else { return row };
    match fetch_inventory(tier.http(), &peer.base, tier.token(), Some(tag)).await {
        Ok(inventory) => {
            if let Some(entry) = inventory.tags.first() {
                row.tag_held = Some(entry.held);
                row.tag_chunks = Some(entry.chunks);
            }
        }
        Err(e) => row.error = Some(format!("inventory of {}: {}", peer.base, with_causes(&e))),
    }
    row
}
