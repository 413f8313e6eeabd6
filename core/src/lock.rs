//! Store locks: writers share the store, `thaw gc` and `thaw repair` hold it alone.
//!
//! The protocol is restic's. A lock is one small JSON object, `locks/<unix ms>-<16 hex>.json`,
//! saying who holds it (host, pid, command) and when it was last refreshed. To take a lock a
//! process writes its own object first, then lists `locks/`: a shared lock yields to any live
//! exclusive one, an exclusive lock to any other live lock. Because each side writes before it
//! lists, of two processes starting together at least one sees the other (object stores list
//! what was written before: S3 and the local folder are strongly consistent), so a gc and an
//! indexer never both proceed. The loser deletes its object and tries again until its wait runs
//! out.
//!
//! A holder rewrites its object every [`REFRESH_EVERY`]; a lock not refreshed for
//! [`STALE_AFTER`], or held by a process of this host that no longer exists (a killed
//! indexer), is stale: it is ignored and removed by the next exclusive locker. A holder checks
//! its lock is still there before it commits ([`StoreLock::check`]: an indexer, before it sets
//! its tag), so a writer paused for longer than the stale time fails instead of publishing a tag
//! whose chunks a gc may have deleted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::store::{unix_ms_now, Store};
use crate::{Error, Result};

/// Store folder of the lock objects.
pub const LOCKS_DIR: &str = "locks";
/// How often a holder rewrites its lock.
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);
/// A lock not refreshed for this long is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(10 * 60);
/// Format name in every lock object.
pub const LOCK_FORMAT: &str = "thaw-lock/1";

/// Whether a lock shares the store with other writers or holds it alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    /// Writers that only add objects (indexing, snapshots, tag moves).
    Shared,
    /// Commands that delete objects (`thaw gc`, `thaw repair`).
    Exclusive,
}

/// The content of a lock object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Always [`LOCK_FORMAT`].
    pub format: String,
    /// Shared or exclusive.
    pub kind: LockKind,
    /// Host name of the holder.
    pub host: String,
    /// Process id of the holder on its host.
    pub pid: u32,
    /// What the holder is doing (`index image`, `gc`, ...).
    pub command: String,
    /// When the lock was taken (unix ms).
    pub created_unix_ms: u64,
    /// When the holder last rewrote it (unix ms).
    pub refreshed_unix_ms: u64,
}

impl LockInfo {
    /// Whether this lock no longer protects anything: not refreshed for [`STALE_AFTER`], or
    /// held by a process of this host that has exited.
    pub fn is_stale(&self, now_unix_ms: u64) -> bool {
        let age = now_unix_ms.saturating_sub(self.refreshed_unix_ms);
        age > STALE_AFTER.as_millis() as u64
            || (self.host == host_name() && !process_exists(self.pid))
    }

    /// Whether a lock of `kind` has to wait for this one.
    fn blocks(&self, kind: LockKind) -> bool {
        kind == LockKind::Exclusive || self.kind == LockKind::Exclusive
    }
}

impl std::fmt::Display for LockInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let age_s = unix_ms_now().saturating_sub(self.refreshed_unix_ms) / 1000;
        write!(
            f,
            "{:?} lock of `{}` by pid {} on {} (refreshed {age_s} s ago)",
            self.kind, self.command, self.pid, self.host
        )
    }
}

/// A lock object found in the store.
#[derive(Clone, Debug)]
pub struct ListedLock {
    /// Its key.
    pub key: String,
    /// Its content; `None` when it does not parse (a torn or foreign object, treated as live
    /// until it is older than [`STALE_AFTER`]).
    pub info: Option<LockInfo>,
    /// Its last-modified time (unix ms).
    pub modified_unix_ms: u64,
}

impl ListedLock {
    fn is_stale(&self, now: u64) -> bool {
        match &self.info {
            Some(info) => info.is_stale(now),
            None => now.saturating_sub(self.modified_unix_ms) > STALE_AFTER.as_millis() as u64,
        }
    }
}

/// Every lock object in the store.
pub async fn list_locks(store: &Store) -> Result<Vec<ListedLock>> {
    let mut locks = Vec::new();
    for object in store.list_objects(LOCKS_DIR).await? {
        let info = match store.get(&object.key).await {
            Ok(bytes) => serde_json::from_slice::<LockInfo>(&bytes).ok(),
            // Released between the listing and the read.
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        locks.push(ListedLock {
            key: object.key,
            info,
            modified_unix_ms: object.modified_unix_ms,
        });
    }
    Ok(locks)
}

/// Removes stale locks (all locks with `all`); returns what it removed.
pub async fn remove_locks(store: &Store, all: bool) -> Result<Vec<ListedLock>> {
    let now = unix_ms_now();
    let mut removed = Vec::new();
    for lock in list_locks(store).await? {
        if all || lock.is_stale(now) {
            store.delete(&lock.key).await?;
            removed.push(lock);
        }
    }
    Ok(removed)
}

/// A held lock. It is refreshed in the background until [`StoreLock::release`] (or drop, which
/// removes the object in the background).
pub struct StoreLock {
    store: Store,
    key: String,
    lost: Arc<AtomicBool>,
    refresher: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for StoreLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreLock({})", self.key)
    }
}

impl StoreLock {
    /// Takes a lock of `kind` for `command`, retrying while another holder blocks it for up to
    /// `wait`; then fails naming the holder ([`Error::Locked`]).
    pub async fn acquire(
        store: &Store,
        kind: LockKind,
        command: &str,
        wait: Duration,
    ) -> Result<StoreLock> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut attempt = 0u32;
        loop {
            let now = unix_ms_now();
            let info = LockInfo {
                format: LOCK_FORMAT.into(),
                kind,
                host: host_name(),
                pid: std::process::id(),
                command: command.into(),
                created_unix_ms: now,
                refreshed_unix_ms: now,
            };
            let key = format!("{LOCKS_DIR}/{now}-{:016x}.json", random_u64());
            put_info(store, &key, &info).await?;
            let mut holder = None;
            for other in list_locks(store).await? {
                if other.key == key {
                    continue;
                }
                if other.is_stale(now) {
                    if kind == LockKind::Exclusive {
                        tracing::warn!(lock = %other.key, "removing a stale lock");
                        store.delete(&other.key).await?;
                    }
                    continue;
                }
                let blocks = other.info.as_ref().is_none_or(|i| i.blocks(kind));
                if blocks {
                    holder = Some(other);
                    break;
                }
            }
            let Some(holder) = holder else {
                return Ok(Self::held(store.clone(), key, info));
            };
            store.delete(&key).await?;
            let pause = backoff(attempt);
            attempt += 1;
            if tokio::time::Instant::now() + pause > deadline {
                return Err(Error::Locked {
                    wanted: kind,
                    holder: match &holder.info {
                        Some(info) => info.to_string(),
                        None => format!("unreadable lock object {}", holder.key),
                    },
                });
            }
            tracing::info!(holder = ?holder.info, "store is locked; waiting");
            tokio::time::sleep(pause).await;
        }
    }

    fn held(store: Store, key: String, mut info: LockInfo) -> StoreLock {
        let lost = Arc::new(AtomicBool::new(false));
        let refresher = {
            let (store, key, lost) = (store.clone(), key.clone(), lost.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(REFRESH_EVERY).await;
                    // Gone means a locker judged it stale: the protection is lost for good.
                    // Any other error may pass: the refresh is tried again next time.
                    match store.size(&key).await {
                        Err(e) if e.is_not_found() => {
                            lost.store(true, Ordering::Relaxed);
                            tracing::error!(lock = %key, "store lock lost");
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(lock = %key, error = %e, "could not look at the store lock");
                            continue;
                        }
                        Ok(_) => {}
                    }
                    info.refreshed_unix_ms = unix_ms_now();
                    if let Err(e) = put_info(&store, &key, &info).await {
                        tracing::warn!(lock = %key, error = %e, "could not refresh the store lock");
                    }
                }
            })
        };
        StoreLock {
            store,
            key,
            lost,
            refresher,
        }
    }

    /// Fails if the lock was lost (removed by another process as stale, or no longer in the
    /// store): call it before committing what the lock protects.
    pub async fn check(&self) -> Result<()> {
        let present = match self.store.size(&self.key).await {
            Ok(_) => true,
            Err(e) if e.is_not_found() => false,
            Err(e) => return Err(e),
        };
        if self.lost.load(Ordering::Relaxed) || !present {
            return Err(Error::LockLost {
                key: self.key.clone(),
            });
        }
        Ok(())
    }

    /// The lock object's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Stops refreshing and removes the lock object.
    pub async fn release(self) -> Result<()> {
        self.refresher.abort();
        let (store, key) = (self.store.clone(), self.key.clone());
        std::mem::forget(self);
        store.delete(&key).await
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        self.refresher.abort();
        let (store, key) = (self.store.clone(), self.key.clone());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { store.delete(&key).await });
        }
    }
}

async fn put_info(store: &Store, key: &str, info: &LockInfo) -> Result<()> {
    let json = serde_json::to_vec(info).expect("lock info serialises");
    store.put(key, Bytes::from(json)).await
}

/// Pause before the next attempt: 100 ms doubling to 5 s, with jitter so two lockers that
/// collided do not collide again.
fn backoff(attempt: u32) -> Duration {
    let base = 100u64 << attempt.min(6);
    let ms = base.min(5000);
    Duration::from_millis(ms / 2 + random_u64() % (ms / 2 + 1))
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // getrandom never fails on Linux for 8 bytes; a zero fallback only weakens the jitter.
    let _ = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    u64::from_le_bytes(bytes) ^ unix_ms_now().rotate_left(17)
}

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Whether a process with this pid exists on this host.
fn process_exists(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the pid exists and may be signalled.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::local(dir.path())).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn shared_locks_coexist_and_an_exclusive_one_waits_for_them() {
        let (_dir, store) = store();
        let a = StoreLock::acquire(&store, LockKind::Shared, "index a", Duration::ZERO)
            .await
            .unwrap();
        let b = StoreLock::acquire(&store, LockKind::Shared, "index b", Duration::ZERO)
            .await
            .unwrap();
        let err = StoreLock::acquire(&store, LockKind::Exclusive, "gc", Duration::ZERO)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("index"), "{err}");
        assert_eq!(
            list_locks(&store).await.unwrap().len(),
            2,
            "the loser left nothing"
        );
        a.release().await.unwrap();
        b.release().await.unwrap();
        let gc = StoreLock::acquire(&store, LockKind::Exclusive, "gc", Duration::ZERO)
            .await
            .unwrap();
        let err = StoreLock::acquire(&store, LockKind::Shared, "index", Duration::ZERO)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("gc"), "{err}");
        gc.check().await.unwrap();
        gc.release().await.unwrap();
        assert!(list_locks(&store).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_waiting_locker_gets_the_lock_once_it_is_released() {
        let (_dir, store) = store();
        let gc = StoreLock::acquire(&store, LockKind::Exclusive, "gc", Duration::ZERO)
            .await
            .unwrap();
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move {
                StoreLock::acquire(&store, LockKind::Shared, "index", Duration::from_secs(30)).await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        gc.release().await.unwrap();
        let lock = waiter.await.unwrap().unwrap();
        lock.release().await.unwrap();
    }

    #[tokio::test]
    async fn locks_of_dead_processes_and_old_locks_are_stale_and_a_lost_lock_is_noticed() {
        let (_dir, store) = store();
        let now = unix_ms_now();
        let dead = LockInfo {
            format: LOCK_FORMAT.into(),
            kind: LockKind::Shared,
            host: host_name(),
            pid: i32::MAX as u32,
            command: "index".into(),
            created_unix_ms: now,
            refreshed_unix_ms: now,
        };
        assert!(dead.is_stale(now));
        let old = LockInfo {
            pid: std::process::id(),
            host: "elsewhere".into(),
            refreshed_unix_ms: now - STALE_AFTER.as_millis() as u64 - 1,
            ..dead.clone()
        };
        assert!(old.is_stale(now));
        let live = LockInfo {
            host: "elsewhere".into(),
            ..dead.clone()
        };
        assert!(!live.is_stale(now));
        put_info(&store, "locks/dead.json", &dead).await.unwrap();
        // The dead writer's lock does not block gc, which removes it.
        let gc = StoreLock::acquire(&store, LockKind::Exclusive, "gc", Duration::ZERO)
            .await
            .unwrap();
        let keys: Vec<String> = list_locks(&store)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.key)
            .collect();
        assert_eq!(keys, vec![gc.key().to_string()]);
        store.delete(gc.key()).await.unwrap();
        let err = gc.check().await.unwrap_err().to_string();
        assert!(err.contains("lost"), "{err}");
    }
}
