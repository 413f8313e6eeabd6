//! Tag commands that change names: `thaw tag mv` and `thaw tag rm`.

use std::time::Duration;

use thaw_core::lock::{LockKind, StoreLock};
use thaw_core::store::{validate_tag, Store};

use crate::Result;

/// Renames tag `from` to `to`, keeping its history and times. The new name is written before
/// the old one goes, so a gc running between the two still sees one of them. An existing `to`
/// is an error unless `replace`.
pub async fn move_tag(
    store: &Store,
    from: &str,
    to: &str,
    replace: bool,
    lock_wait: Duration,
) -> Result<()> {
    validate_tag(to)?;
    let versions = store.tag_versions(from).await?;
    if !replace {
        match store.get_tag(to).await {
            Ok(_) => {
                return Err(thaw_core::Error::InvalidTag {
                    name: to.to_string(),
                    reason: "already exists (use --force to replace it)",
                }
                .into())
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    let lock = StoreLock::acquire(store, LockKind::Shared, "tag mv", lock_wait).await?;
    lock.check().await?;
    store.put_tag_versions(to, &versions).await?;
    store.delete_tag(from).await?;
    lock.release().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use thaw_core::store::StoreConfig;
    use thaw_core::ChunkId;

    #[tokio::test]
    async fn a_moved_tag_keeps_its_history_and_does_not_overwrite_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::local(dir.path())).unwrap();
        let (a, b, c) = (ChunkId::of(b"a"), ChunkId::of(b"b"), ChunkId::of(b"c"));
        store.set_tag("app", &a).await.unwrap();
        store.set_tag("app", &b).await.unwrap();
        store.set_tag("other", &c).await.unwrap();
        let before = store.tag_versions("app").await.unwrap();
        move_tag(&store, "app", "app-renamed", false, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(store.tag_versions("app-renamed").await.unwrap(), before);
        assert!(store.get_tag("app").await.unwrap_err().is_not_found());
        let err = move_tag(&store, "app-renamed", "other", false, Duration::ZERO)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("already exists"), "{err}");
        move_tag(&store, "app-renamed", "other", true, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(store.get_tag("other").await.unwrap(), b);
    }
}
