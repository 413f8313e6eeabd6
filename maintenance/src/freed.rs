//! The freed-chunk log: how local caches learn what gc took out of the store.
//!
//! Each gc that deletes chunks writes `gc/freed/<unix ms>-<16 hex>.ids`: the 32-byte ids of the
//! chunks in the packs it deleted or rewrote that no live chunk map locates any more, back to
//! back. A cache (the peer cache server every few minutes, `thaw cache prune` when asked) reads
//! the logs newer than the last one it applied and evicts those chunks before anything else,
//! so disk space follows the store. Logs older than [`FREED_LOG_KEEP`] are deleted by gc: a
//! cache that has not looked for that long keeps the chunks until its LRU evicts them. The log
//! is a hint: evicting a chunk that is still wanted only costs one fetch.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use thaw_core::store::{unix_ms_now, Store};
use thaw_core::tier::DiskCache;
use thaw_core::ChunkId;

use crate::Result;

/// Store folder of the freed-chunk logs.
pub const FREED_DIR: &str = "gc/freed";
/// How long gc keeps a freed-chunk log.
pub const FREED_LOG_KEEP: Duration = Duration::from_secs(30 * 24 * 3600);

/// Writes one log of `ids` (nothing when empty).
pub async fn record_freed(store: &Store, ids: &[ChunkId]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut bytes = Vec::with_capacity(ids.len() * 32);
    for id in ids {
        bytes.extend_from_slice(&id.0);
    }
    let now = unix_ms_now();
    let tag = ChunkId::of(&bytes).to_hex();
    let key = format!("{FREED_DIR}/{now:013}-{}.ids", &tag[..16]);
    store.put(&key, Bytes::from(bytes)).await?;
    Ok(())
}

/// The time in a log's key (`<unix ms>-<hex>.ids`).
fn log_time(key: &str) -> Option<u64> {
    key.rsplit('/').next()?.split('-').next()?.parse().ok()
}

/// Chunk ids of every log written after `after_unix_ms`, and the newest log's time.
pub async fn freed_since(store: &Store, after_unix_ms: u64) -> Result<(Vec<ChunkId>, u64)> {
    let mut newest = after_unix_ms;
    let mut ids = Vec::new();
    for object in store.list_objects(FREED_DIR).await? {
        let Some(time) = log_time(&object.key).filter(|t| *t > after_unix_ms) else {
            continue;
        };
        let bytes = match store.get(&object.key).await {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        if bytes.len() % 32 != 0 {
            tracing::warn!(log = %object.key, "freed-chunk log is not whole ids; skipped");
            continue;
        }
        ids.extend(bytes.chunks_exact(32).map(ChunkId::from_slice));
        newest = newest.max(time);
    }
    Ok((ids, newest))
}

/// Evicts from `cache` every chunk the freed logs name that it has not applied yet; `state`
/// (a file in the cache directory) remembers the newest log applied. Returns the chunks it
/// evicted.
pub async fn forget_freed(store: &Store, cache: &DiskCache, state: &Path) -> Result<usize> {
    let applied: u64 = std::fs::read_to_string(state)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    let (ids, newest) = freed_since(store, applied).await?;
    let mut evicted = 0;
    for id in &ids {
        if cache.contains(id) {
            cache.evict(id)?;
            evicted += 1;
        }
    }
    if newest > applied {
        std::fs::write(state, format!("{newest}\n")).map_err(|e| thaw_core::Error::io(state, e))?;
    }
    Ok(evicted)
}

/// The state file [`forget_freed`] keeps in the cache directory `cache_dir`.
pub fn state_file(cache_dir: &Path) -> std::path::PathBuf {
    cache_dir.join("gc-freed-applied")
}

#[cfg(test)]
mod tests {
    use super::*;
    use thaw_core::store::StoreConfig;

    #[tokio::test]
    async fn a_cache_evicts_what_gc_freed_once_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::local(dir.path().join("store"))).unwrap();
        let cache = DiskCache::open(&dir.path().join("cache"), 1 << 30).unwrap();
        let (freed, kept) = (Bytes::from_static(b"freed"), Bytes::from_static(b"kept"));
        let (freed_id, kept_id) = (ChunkId::of(&freed), ChunkId::of(&kept));
        use thaw_core::tier::ChunkCache;
        cache
            .insert(freed_id.verified(freed.clone(), "t").unwrap())
            .await
            .unwrap();
        cache
            .insert(kept_id.verified(kept, "t").unwrap())
            .await
            .unwrap();
        record_freed(&store, &[freed_id, ChunkId::of(b"never cached")])
            .await
            .unwrap();
        let state = state_file(&dir.path().join("cache"));
        assert_eq!(forget_freed(&store, &cache, &state).await.unwrap(), 1);
        assert!(!cache.contains(&freed_id) && cache.contains(&kept_id));
        // Applied logs are not read again.
        cache
            .insert(freed_id.verified(freed, "t").unwrap())
            .await
            .unwrap();
        assert_eq!(forget_freed(&store, &cache, &state).await.unwrap(), 0);
        assert!(cache.contains(&freed_id));
    }
}
