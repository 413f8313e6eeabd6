//! The memory tier: a byte-bounded LRU of uncompressed chunks.

use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use lru::LruCache;

use super::{ChunkCache, ChunkSource};
use crate::pack::ChunkRef;
use crate::{ChunkId, Result, VerifiedChunk};

/// Default memory budget.
pub const DEFAULT_MEMORY_CACHE_BYTES: u64 = 512 * 1024 * 1024;

struct State {
    lru: LruCache<ChunkId, Bytes>,
    used: u64,
}

/// A byte-bounded LRU of chunks.
pub struct MemoryCache {
    budget: u64,
    state: Mutex<State>,
}

impl MemoryCache {
    /// A cache holding at most `budget` bytes of chunk data.
    pub fn new(budget: u64) -> Self {
        MemoryCache {
            budget,
            state: Mutex::new(State {
                lru: LruCache::unbounded(),
                used: 0,
            }),
        }
    }

    /// Bytes held now.
    pub fn used_bytes(&self) -> u64 {
        self.state.lock().expect("memory cache lock").used
    }
}

#[async_trait]
impl ChunkSource for MemoryCache {
    fn name(&self) -> &str {
        "memory"
    }

    async fn fetch(&self, chunk: &ChunkRef) -> Result<Option<Bytes>> {
        Ok(self
            .state
            .lock()
            .expect("memory cache lock")
            .lru
            .get(&chunk.id)
            .cloned())
    }

    fn returns_verified(&self) -> bool {
        true
    }
}

#[async_trait]
impl ChunkCache for MemoryCache {
    async fn insert(&self, chunk: VerifiedChunk) -> Result<()> {
        let id = chunk.id();
        let data = chunk.into_bytes();
        let size = data.len() as u64;
        if size > self.budget {
            return Ok(());
        }
        let mut state = self.state.lock().expect("memory cache lock");
        if let Some(old) = state.lru.put(id, data) {
            state.used -= old.len() as u64;
        }
        state.used += size;
        while state.used > self.budget {
            match state.lru.pop_lru() {
                Some((_, evicted)) => state.used -= evicted.len() as u64,
                None => break,
            }
        }
        Ok(())
    }

    async fn remove(&self, id: &ChunkId) -> Result<()> {
        let mut state = self.state.lock().expect("memory cache lock");
        if let Some(old) = state.lru.pop(id) {
            state.used -= old.len() as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier::test_support::chunk;

    #[tokio::test]
    async fn evicts_least_recently_used_to_stay_within_budget() {
        let cache = MemoryCache::new(250);
        let (a, b, c) = (chunk(1, 100), chunk(2, 100), chunk(3, 100));
        cache.insert(a.0.clone()).await.unwrap();
        cache.insert(b.0.clone()).await.unwrap();
        cache.fetch(&a.1).await.unwrap().unwrap();
        cache.insert(c.0.clone()).await.unwrap();
        assert_eq!(cache.used_bytes(), 200);
        assert!(
            cache.fetch(&b.1).await.unwrap().is_none(),
            "b was least recently used"
        );
        assert!(cache.fetch(&a.1).await.unwrap().is_some());
        cache.remove(&a.0.id()).await.unwrap();
        assert_eq!(cache.used_bytes(), 100);
    }
}
