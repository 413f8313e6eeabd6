//! What a [`Config`] opens: the store, the peer tier and the read tiers over them.

use std::sync::Arc;
use std::time::Duration;

use thaw_cache_server::tls::ClientTls;
use thaw_cache_server::{PeerClientConfig, PeerSpec, PeerTier, Token};
use thaw_core::store::{RequestPolicy, S3Options, Store, StoreConfig};
use thaw_core::tier::{self, CacheConfig, ChunkSource, TieredStore};

use crate::{vars, Config, ConfigError};

/// The store settings as the store takes them.
pub fn store_config(config: &Config) -> StoreConfig {
    let store = &config.store;
    StoreConfig {
        url: store.url.clone(),
        s3: S3Options {
            endpoint: store.s3_endpoint.clone(),
            region: store.s3_region.clone(),
            access_key_id: store.s3_access_key_id.clone(),
            secret_access_key: store.s3_secret_access_key.clone(),
            allow_http: store.s3_allow_http,
        },
        read_latency: store.read_latency_ms.map(Duration::from_millis),
        requests: request_policy(config),
    }
}

/// The store's request bounds: the configured timeout and retries, the rest defaults; the
/// retry budget covers every try at the full timeout plus back-off.
fn request_policy(config: &Config) -> RequestPolicy {
    let mut policy = RequestPolicy::default();
    if let Some(ms) = config.store.timeout_ms {
        policy.timeout = Duration::from_millis(ms.max(1));
    }
    if let Some(retries) = config.store.retries {
        policy.retries = retries;
    }
    policy.retry_budget = policy
        .timeout
        .saturating_mul(policy.retries as u32 + 1)
        .saturating_add(Duration::from_secs(15 * policy.retries as u64))
        .min(RequestPolicy::default().retry_budget.max(policy.timeout));
    policy
}

/// Opens the store the configuration names.
pub fn open_store(config: &Config) -> Result<Store, ConfigError> {
    Store::open(&store_config(config)).map_err(ConfigError::Store)
}

/// Where and how big the local caches are; `fill_disk` keeps fetched chunks in the disk cache.
pub fn cache_config(config: &Config, fill_disk: bool) -> CacheConfig {
    CacheConfig {
        disk_dir: config.disk_cache_dir(),
        disk_bytes: config.cache.bytes,
        memory_bytes: config.cache.memory_bytes,
        fill_disk,
    }
}

/// The peer token: the token file, else `$THAW_PEER_TOKEN`, else none.
pub fn peer_token(config: &Config) -> Result<Option<Token>, ConfigError> {
    if let Some(path) = &config.peers.token_file {
        return Token::from_file(path).map(Some).map_err(ConfigError::Peers);
    }
    match std::env::var(vars::PEER_TOKEN_ENV) {
        Ok(value) if !value.is_empty() => Token::new(&value, vars::PEER_TOKEN_ENV)
            .map(Some)
            .map_err(ConfigError::Peers),
        _ => Ok(None),
    }
}

/// TLS to the peers, when a peer CA is configured; a certificate needs its key and a CA.
pub fn peer_tls(config: &Config) -> Result<Option<ClientTls>, ConfigError> {
    let peers = &config.peers;
    let bad = |reason: &str| {
        ConfigError::Peers(thaw_cache_server::Error::Client(format!(
            "peer TLS: {reason}"
        )))
    };
    let identity = match (&peers.cert_file, &peers.key_file) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        (None, None) => None,
        _ => {
            return Err(bad(
                "give both a certificate and its key (THAW_PEER_CERT_FILE, THAW_PEER_KEY_FILE)",
            ))
        }
    };
    match &peers.ca_file {
        Some(ca) => Ok(Some(ClientTls {
            ca: ca.clone(),
            identity,
            name: peers.tls_name.clone(),
        })),
        None if identity.is_some() || peers.tls_name.is_some() => Err(bad(
            "a client certificate or TLS name needs the peers' CA (THAW_PEER_CA_FILE)",
        )),
        None => Ok(None),
    }
}

/// The peer tier, when peers are configured.
pub async fn peer_tier(config: &Config) -> Result<Option<Arc<PeerTier>>, ConfigError> {
    let Some(list) = &config.peers.list else {
        return Ok(None);
    };
    let spec: PeerSpec = list.parse().map_err(ConfigError::Peers)?;
    let client = PeerClientConfig {
        token: peer_token(config)?,
        timeout: Duration::from_millis(config.peers.timeout_ms.max(1)),
        refresh: Duration::from_secs(config.peers.refresh_secs.max(1)),
        tls: peer_tls(config)?,
        ..PeerClientConfig::new(spec)
    };
    let tier = PeerTier::connect(client)
        .await
        .map_err(ConfigError::Peers)?;
    tracing::info!(
        peers = tier.membership().current().len(),
        "reading through peers"
    );
    Ok(Some(Arc::new(tier)))
}

/// Memory, disk cache, peers (when configured) and the store; `fill_disk` keeps fetched chunks
/// in the disk cache.
pub async fn tiers(
    config: &Config,
    store: &Store,
    fill_disk: bool,
) -> Result<TieredStore, ConfigError> {
    let peers = peer_tier(config).await?;
    Ok(tiers_with(config, store, fill_disk, peers))
}

/// [`tiers`] with a peer tier made already (or none).
pub fn tiers_with(
    config: &Config,
    store: &Store,
    fill_disk: bool,
    peers: Option<Arc<PeerTier>>,
) -> TieredStore {
    let caches = cache_config(config, fill_disk);
    tier::tiers_for(store, &caches, peers.map(|p| p as Arc<dyn ChunkSource>))
}

/// Tiers for a read whose destination is itself the copy in memory (weights streamed into an
/// allocation): no memory tier, which would only hold (and churn) a second copy.
pub async fn streaming_tiers(config: &Config, store: &Store) -> Result<TieredStore, ConfigError> {
    let peers = peer_tier(config).await?;
    let caches = CacheConfig {
        memory_bytes: 0,
        ..cache_config(config, true)
    };
    Ok(tier::tiers_for(
        store,
        &caches,
        peers.map(|p| p as Arc<dyn ChunkSource>),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_and_caches_follow_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.store.url = Some(dir.path().join("store").display().to_string());
        config.store.read_latency_ms = Some(5);
        config.cache.dir = Some(dir.path().join("cache"));
        config.cache.bytes = 1 << 20;
        let store = store_config(&config);
        assert_eq!(store.read_latency, Some(Duration::from_millis(5)));
        let caches = cache_config(&config, false);
        assert_eq!(caches.disk_dir, Some(dir.path().join("cache")));
        assert_eq!(caches.disk_bytes, 1 << 20);
        assert!(!caches.fill_disk);
        config.cache.disk = false;
        assert_eq!(cache_config(&config, true).disk_dir, None);
        open_store(&config).unwrap();
    }

    #[tokio::test]
    async fn no_peer_list_is_no_peer_tier_and_a_bad_one_is_an_error() {
        let mut config = Config::default();
        assert!(peer_tier(&config).await.unwrap().is_none());
        config.peers.list = Some("ftp://nope".into());
        assert!(peer_tier(&config).await.is_err());
    }
}
