//! FUSE passthrough: a file whose whole content is one trusted object in the local disk cache
//! is handed to the kernel at open, and every read of it then goes from the kernel to the cache
//! file directly, with no request to this process (as a native file would).
//!
//! It needs the kernel's `FUSE_PASSTHROUGH` capability and root (registering a backing file is
//! privileged); without either, opens stay "zero-message" (answered ENOSYS once, see
//! `ThawFs::open`) and every read comes here. While a trace is being recorded, opens do not use
//! passthrough (the trace would miss those reads). A file that is complete in the cache but not
//! yet one object is prepared in the background, so its next open can use passthrough.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use fuser::{BackingId, FileHandle, FopenFlags, ReplyOpen};
use thaw_core::manifest::InodeNo;
use thaw_core::tier::{DiskCache, FileContent, FileSlice, WholeFile};

use crate::volume::Volume;

/// The file handle of passthrough opens (the kernel reads them without us).
const PASSTHROUGH_FH: u64 = 1;
/// The file handle of opens read through this process.
const FUSE_FH: u64 = 0;
/// Whole files prepared at once in the background.
const PREPARING_AT_ONCE: usize = 2;

/// How opens are answered for one mount.
pub(crate) struct Passthrough {
    /// Asked for (option and root) and granted by the kernel.
    on: AtomicBool,
    /// Why passthrough is off, when it is.
    off_reason: Mutex<Option<String>>,
    /// Opens refuse passthrough until then (the trace recording window).
    recording_until: Option<Instant>,
    /// Backing files registered with the kernel, by inode.
    backing: Mutex<Backing>,
    preparing: Arc<tokio::sync::Semaphore>,
    /// Preparations queued or running, and a wake-up for [`Passthrough::settle`].
    pending: Arc<(std::sync::atomic::AtomicUsize, tokio::sync::Notify)>,
    runtime: tokio::runtime::Handle,
}

/// Backing files idle (their inode closed) kept registered, so the next open of the inode
/// needs no cache lookup, file open or registration: each costs a few microseconds, and a tree
/// is often opened more than once (a walk, then the program).
const IDLE_BACKING_KEPT: NonZeroUsize = NonZeroUsize::new(4096).expect("non-zero");

/// The backing files registered with the kernel: those of open inodes with their open count,
/// and recently closed ones. The kernel wants one backing id per inode while it is open.
#[derive(Default)]
struct Backing {
    open: HashMap<InodeNo, (BackingId, u32)>,
    idle: Idle,
    /// Ids an earlier worker on this connection registered: files may still be open with them,
    /// so every open of those inodes uses them and they are never closed.
    pinned: HashMap<InodeNo, Pinned>,
    /// Where registrations are written down for the next worker (supervised mounts).
    ledger: Option<Ledger>,
}

/// Recently closed inodes' backing ids, least recently closed first out.
struct Idle(lru::LruCache<InodeNo, BackingId>);

impl Default for Idle {
    fn default() -> Self {
        Idle(lru::LruCache::new(IDLE_BACKING_KEPT))
    }
}

/// An inherited backing id: as written down, or wrapped once an open used it.
enum Pinned {
    Raw(u32),
    Wrapped(BackingId),
}

impl Pinned {
    /// The id, wrapped for `reply`'s connection on first use.
    fn id(&mut self, reply: &ReplyOpen) -> &BackingId {
        if let Pinned::Raw(raw) = *self {
            // SAFETY: the id was registered on this connection by an earlier worker and is
            // never closed while this process runs (pinned ids are not released).
            *self = Pinned::Wrapped(unsafe { reply.wrap_backing(raw) });
        }
        match self {
            Pinned::Wrapped(id) => id,
            Pinned::Raw(_) => unreachable!("wrapped above"),
        }
    }
}

impl Backing {
    /// The backing id of `ino` for one more open, if one is registered.
    fn acquire(&mut self, ino: InodeNo) -> Option<&BackingId> {
        if let Some(id) = self.idle.0.pop(&ino) {
            self.open.insert(ino, (id, 0));
        }
        let (id, opens) = self.open.get_mut(&ino)?;
        *opens += 1;
        Some(id)
    }

    /// One open of `ino` ended; after the last one its backing id goes idle (the least recently
    /// closed beyond [`IDLE_BACKING_KEPT`] is unregistered).
    fn release(&mut self, ino: InodeNo) {
        let Some((_, opens)) = self.open.get_mut(&ino) else {
            return;
        };
        *opens -= 1;
        if *opens == 0 {
            let (id, _) = self.open.remove(&ino).expect("present");
            if let Some((evicted, _closed)) = self.idle.0.push(ino, id) {
                if evicted != ino {
                    self.write_down(format_args!("-{evicted}"));
                }
            }
        }
    }

    /// Notes a registration in the ledger, if there is one.
    fn write_down(&mut self, line: std::fmt::Arguments<'_>) {
        if let Some(ledger) = &mut self.ledger {
            ledger.append(line);
        }
    }
}

/// The backing ids registered on a supervised mount's connection, one line per change
/// (`+INODE ID` registered, `-INODE` closed), in a file of the runtime dir: a worker that takes
/// the connection over (after an upgrade or a crash) reads it to know which inodes may still be
/// open with which id, since the kernel refuses a second backing file for an open inode.
struct Ledger {
    path: std::path::PathBuf,
    file: std::fs::File,
}

impl Ledger {
    /// Opens the ledger at `path`: an inheriting worker reads the ids registered so far (and
    /// rewrites the file with just those), a first worker starts it empty.
    fn open(
        path: &std::path::Path,
        inherited: bool,
    ) -> std::io::Result<(Ledger, HashMap<InodeNo, u32>)> {
        let registered = if inherited {
            parse_ledger(&std::fs::read_to_string(path).unwrap_or_default())
        } else {
            HashMap::new()
        };
        let mut text = String::new();
        for (ino, id) in &registered {
            text.push_str(&format!("+{ino} {id}\n"));
        }
        let temporary = path.with_extension("ledger-new");
        std::fs::write(&temporary, text)?;
        std::fs::rename(&temporary, path)?;
        let file = std::fs::OpenOptions::new().append(true).open(path)?;
        Ok((
            Ledger {
                path: path.to_path_buf(),
                file,
            },
            registered,
        ))
    }

    fn append(&mut self, line: std::fmt::Arguments<'_>) {
        use std::io::Write;
        if let Err(e) = writeln!(self.file, "{line}") {
            tracing::warn!(ledger = %self.path.display(), error = %e, "could not write down a backing id");
        }
    }
}

/// The ids a ledger's lines leave registered; lines it cannot read (a torn last line) are
/// skipped.
fn parse_ledger(text: &str) -> HashMap<InodeNo, u32> {
    let mut registered = HashMap::new();
    for line in text.lines() {
        if let Some(closed) = line.strip_prefix('-') {
            if let Ok(ino) = closed.parse::<InodeNo>() {
                registered.remove(&ino);
            }
        } else if let Some((ino, id)) = line.strip_prefix('+').and_then(|l| l.split_once(' ')) {
            if let (Ok(ino), Ok(id)) = (ino.parse::<InodeNo>(), id.parse::<u32>()) {
                registered.insert(ino, id);
            }
        }
    }
    registered
}

/// How one open was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpenMode {
    /// The kernel reads the cache file itself.
    Passthrough,
    /// Reads come to this process.
    Fuse,
}

impl Passthrough {
    /// Passthrough for a mount when `wanted`; opens use it only after `recording_until`;
    /// whole files are prepared on `runtime`.
    pub(crate) fn new(
        wanted: bool,
        recording_until: Option<Instant>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let off_reason = match (wanted, root) {
            (false, _) => Some("off (--no-passthrough)".to_string()),
            (true, false) => Some("off (needs root)".to_string()),
            (true, true) => None,
        };
        Passthrough {
            on: AtomicBool::new(off_reason.is_none()),
            off_reason: Mutex::new(off_reason),
            recording_until,
            backing: Mutex::new(Backing::default()),
            preparing: Arc::new(tokio::sync::Semaphore::new(PREPARING_AT_ONCE)),
            pending: Arc::default(),
            runtime,
        }
    }

    /// Writes the mount's backing ids down at `path` (a supervised mount); a worker that
    /// `inherited` the connection first takes over the ids written there.
    pub(crate) fn with_ledger(self, path: &std::path::Path, inherited: bool) -> Self {
        match Ledger::open(path, inherited) {
            Ok((ledger, registered)) => {
                let mut backing = self.backing.lock().expect("backing lock");
                if !registered.is_empty() {
                    tracing::info!(
                        ids = registered.len(),
                        "took over the backing ids of the previous worker"
                    );
                }
                backing.pinned = registered
                    .into_iter()
                    .map(|(ino, id)| (ino, Pinned::Raw(id)))
                    .collect();
                backing.ledger = Some(ledger);
            }
            Err(e) => self.turn_off(format!(
                "off (the backing id ledger {}: {e})",
                path.display()
            )),
        }
        self
    }

    /// Whether opens are answered at all (else ENOSYS once makes them free).
    pub(crate) fn answers_opens(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// `on`, or why not: for `thaw mount status`.
    pub(crate) fn describe(&self) -> String {
        self.off_reason
            .lock()
            .expect("lock")
            .clone()
            .unwrap_or_else(|| "on".into())
    }

    /// Turns passthrough off for `reason` (shown by `thaw mount status`).
    pub(crate) fn turn_off(&self, reason: String) {
        tracing::warn!(%reason, "FUSE passthrough is off; reads go through thaw");
        self.on.store(false, Ordering::Relaxed);
        *self.off_reason.lock().expect("lock") = Some(reason);
    }

    /// Answers the open of regular file `ino`.
    pub(crate) fn open(&self, volume: &Arc<Volume>, ino: InodeNo, reply: ReplyOpen) -> OpenMode {
        let recording = self
            .recording_until
            .is_some_and(|until| Instant::now() < until);
        {
            let mut backing = self.backing.lock().expect("backing lock");
            if let Some(pinned) = backing.pinned.get_mut(&ino) {
                let id = pinned.id(&reply);
                return opened_passthrough(reply, id);
            }
        }
        if !recording {
            let mut backing = self.backing.lock().expect("backing lock");
            if let Some(id) = backing.acquire(ino) {
                return opened_passthrough(reply, id);
            }
        }
        let whole = match (volume.tiers().local_files(), content_of(volume, ino)) {
            (Some(disk), Some(slices)) => Some((disk, slices)),
            _ => None,
        };
        if let Some((disk, (size, slices))) = whole {
            let content = FileContent {
                size,
                slices: &slices,
            };
            match disk.whole_file(&content) {
                WholeFile::Ready(file) if !recording => {
                    let mut backing = self.backing.lock().expect("backing lock");
                    if let Some(id) = backing.acquire(ino) {
                        // Registered by a concurrent open meanwhile.
                        return opened_passthrough(reply, id);
                    }
                    match reply.open_backing(&file) {
                        Ok(id) => {
                            // Written down before any file uses it (a worker killed first
                            // leaves an unused id).
                            let raw = id.into_raw();
                            backing.write_down(format_args!("+{ino} {raw}"));
                            // SAFETY: `raw` was just registered on this connection and is
                            // owned again by the wrapper.
                            let id = unsafe { reply.wrap_backing(raw) };
                            let mode = opened_passthrough(reply, &id);
                            backing.open.insert(ino, (id, 1));
                            return mode;
                        }
                        Err(e) => {
                            drop(backing);
                            self.turn_off(format!("off (registering a backing file failed: {e})"));
                        }
                    }
                }
                WholeFile::Ready(_) | WholeFile::Missing => {}
                WholeFile::Preparable => self.prepare(disk.clone(), size, slices),
            }
        }
        opened_through_thaw(reply)
    }

    /// Notes the close of `ino`: its backing file goes idle after the last passthrough open, and
    /// after a read through thaw prepares the file if its chunks are all cached now.
    pub(crate) fn release(&self, volume: &Arc<Volume>, ino: InodeNo, fh: u64) {
        if fh == PASSTHROUGH_FH {
            // An inherited open the old worker counted, or a pinned inode: nothing to count.
            self.backing.lock().expect("backing lock").release(ino);
            return;
        }
        let (Some(disk), Some((size, slices))) =
            (volume.tiers().local_files(), content_of(volume, ino))
        else {
            return;
        };
        let content = FileContent {
            size,
            slices: &slices,
        };
        if disk.whole_is_preparable(&content) {
            self.prepare(disk.clone(), size, slices);
        }
    }

    /// Verifies or assembles a whole file in the background, a few at a time.
    fn prepare(&self, disk: DiskCache, size: u64, slices: Vec<FileSlice>) {
        let permits = self.preparing.clone();
        let pending = self.pending.clone();
        pending.0.fetch_add(1, Ordering::AcqRel);
        self.runtime.spawn(async move {
            if let Ok(_permit) = permits.acquire_owned().await {
                let done = tokio::task::spawn_blocking(move || {
                    disk.prepare_whole(&FileContent {
                        size,
                        slices: &slices,
                    })
                })
                .await;
                if let Ok(Err(e)) = done {
                    tracing::debug!(error = %e, "could not prepare a whole file in the disk cache");
                }
            }
            if pending.0.fetch_sub(1, Ordering::AcqRel) == 1 {
                pending.1.notify_waiters();
            }
        });
    }

    /// Waits (at most `limit`) until no whole file is being prepared: an ending mount finishes
    /// what it started, so the next mount's opens find those files ready.
    pub(crate) async fn settle(&self, limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.pending.1.notified();
            let left = self.pending.0.load(Ordering::Acquire);
            if left == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::info!(left, "stopped waiting for whole files being prepared");
                return;
            }
        }
    }
}

/// Answers an open with the inode's registered backing file: the kernel reads it directly.
/// Answers an open whose reads come through thaw (the page cache keeps what they read).
pub(crate) fn opened_through_thaw(reply: ReplyOpen) -> OpenMode {
    reply.opened(FileHandle(FUSE_FH), FopenFlags::FOPEN_KEEP_CACHE);
    OpenMode::Fuse
}

fn opened_passthrough(reply: ReplyOpen, id: &BackingId) -> OpenMode {
    reply.opened_passthrough(FileHandle(PASSTHROUGH_FH), FopenFlags::empty(), id);
    OpenMode::Passthrough
}

/// File `ino`'s size and slices with their chunks, `None` when it is not a regular file with
/// content (or its extents are unreadable: reads will say so).
fn content_of(volume: &Volume, ino: InodeNo) -> Option<(u64, Vec<FileSlice>)> {
    let reader = volume.reader(ino).ok().flatten()?;
    if reader.size() == 0 {
        return None;
    }
    let slices = reader
        .extents()
        .iter()
        .map(|e| {
            Some(FileSlice {
                file_offset: e.file_offset,
                chunk: crate::access::ChunkAccess::chunk_ref(volume, e.chunk).ok()?,
                chunk_offset: e.chunk_offset,
                len: e.len,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some((reader.size(), slices))
}

#[cfg(test)]
mod tests {
    use super::parse_ledger;

    #[test]
    fn the_ledger_leaves_registered_what_was_not_closed() {
        let registered = parse_ledger("+5 1\n+7 2\n-5\n+9 3\n+5 4\ngarbage\n+11");
        let mut ids: Vec<_> = registered.into_iter().collect();
        ids.sort();
        assert_eq!(ids, vec![(5, 4), (7, 2), (9, 3)]);
    }
}
