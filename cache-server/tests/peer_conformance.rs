//! The tier conformance suite (thaw-core's `tier::conformance`) against the peer tier: a real
//! cache server on loopback over a local folder store, read through `PeerTier`.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use thaw_cache_server::{CacheServer, PeerClientConfig, PeerTier, ServerConfig};
use thaw_core::pack::ChunkRef;
use thaw_core::store::{Store, StoreConfig};
use thaw_core::tier::conformance::{self, Held, TierFixture};
use thaw_core::tier::CacheConfig;
use thaw_core::VerifiedChunk;

/// Starts one cache server per tier and keeps their scratch directories.
#[derive(Default)]
struct Peers(Mutex<Vec<tempfile::TempDir>>);

impl Peers {
    /// A server over a store holding `chunks` (one of them corrupt in the pack when asked),
    /// and a peer tier reading through it.
    async fn serving(&self, chunks: &[VerifiedChunk], corrupt: Option<usize>) -> Held {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::local(dir.path().join("store"))).unwrap();
        let requests = conformance::write_pack(&store, chunks, corrupt).await;
        let cache = CacheConfig {
            disk_dir: Some(dir.path().join("cache")),
            ..CacheConfig::default()
        };
        let server = CacheServer::new(store, &cache, ServerConfig::default()).unwrap();
        let listener = CacheServer::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(server.serve(listener, std::future::pending()));
        let spec = format!("http://{addr}").parse().unwrap();
        let tier = PeerTier::connect(PeerClientConfig::new(spec))
            .await
            .unwrap();
        self.0.lock().unwrap().push(dir);
        Held {
            source: Arc::new(tier),
            requests,
        }
    }
}

#[async_trait]
impl TierFixture for Peers {
    async fn holding(&self, chunks: &[VerifiedChunk]) -> Held {
        self.serving(chunks, None).await
    }

    fn missing(&self, held: &Held, absent: &VerifiedChunk) -> ChunkRef {
        conformance::in_a_missing_pack(&held.requests[0], absent)
    }

    async fn holding_corrupt(&self, chunk: &VerifiedChunk) -> Option<Held> {
        Some(self.serving(std::slice::from_ref(chunk), Some(0)).await)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_tier_conforms() {
    conformance::run(&Peers::default()).await;
}
