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

use fuser::{BackingId, FileHandle, FopenFlags, InitFlags, KernelConfig, ReplyOpen};
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
struct Backing {
    open: HashMap<InodeNo, (BackingId, u32)>,
    idle: lru::LruCache<InodeNo, BackingId>,
}

impl Default for Backing {
    fn default() -> Self {
        Backing {
            open: HashMap::new(),
            idle: lru::LruCache::new(IDLE_BACKING_KEPT),
        }
    }
}

impl Backing {
    /// The backing id of `ino` for one more open, if one is registered.
    fn acquire(&mut self, ino: InodeNo) -> Option<&BackingId> {
        if let Some(id) = self.idle.pop(&ino) {
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
            self.idle.put(ino, id);
        }
    }
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

    /// Asks the kernel for passthrough at FUSE init; off when it does not offer it.
    pub(crate) fn init(&self, config: &mut KernelConfig) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        let granted = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok();
        if !granted {
            self.turn_off("off (the kernel does not offer FUSE passthrough)".into());
        }
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

    fn turn_off(&self, reason: String) {
        tracing::warn!(%reason, "FUSE passthrough is off; reads go through thaw");
        self.on.store(false, Ordering::Relaxed);
        *self.off_reason.lock().expect("lock") = Some(reason);
    }

    /// Answers the open of regular file `ino`.
    pub(crate) fn open(&self, volume: &Arc<Volume>, ino: InodeNo, reply: ReplyOpen) -> OpenMode {
        let recording = self
            .recording_until
            .is_some_and(|until| Instant::now() < until);
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
