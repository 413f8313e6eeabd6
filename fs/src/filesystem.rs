//! [`ThawFs`]: the FUSE request handlers. Metadata is answered on the dispatcher thread from the
//! manifest alone; reads are handed to the async runtime, so the dispatcher never waits on a
//! chunk fetch.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::Instant;

use fuser::{
    Errno, FileHandle, Filesystem, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use thaw_core::manifest::{FileKind, Inode};

use crate::attr::{file_attr, file_type, fuse_ino, manifest_ino, BLOCK_SIZE, TTL};
use crate::passthrough::{opened_through_thaw, OpenMode, Passthrough};
use crate::volume::Volume;

/// One extended attribute: name and value, borrowed from the manifest.
type Xattr<'a> = (&'a [u8], &'a [u8]);

/// Largest read request the kernel may send (it also sizes its readahead requests).
const MAX_REQUEST_BYTES: u32 = 1 << 20;

/// One directory entry as [`ThawFs::list_dir`] hands it out.
struct Listed<'a> {
    ino: INodeNo,
    position: u64,
    name: &'a OsStr,
    inode: &'a Inode,
}

/// The file system the kernel talks to.
pub struct ThawFs {
    volume: Arc<Volume>,
    runtime: tokio::runtime::Handle,
    passthrough: Arc<Passthrough>,
}

impl ThawFs {
    /// Serves `volume`; reads run on `runtime`; opens use `passthrough` when they can.
    pub(crate) fn new(
        volume: Arc<Volume>,
        runtime: tokio::runtime::Handle,
        passthrough: Arc<Passthrough>,
    ) -> Self {
        ThawFs {
            volume,
            runtime,
            passthrough,
        }
    }

    /// The manifest inode behind a FUSE inode number, or the errno to answer with.
    fn inode(&self, ino: INodeNo) -> Result<Inode, Errno> {
        let number = manifest_ino(ino).ok_or(Errno::ENOENT)?;
        if number >= self.volume.manifest.inode_count() {
            return Err(Errno::ENOENT);
        }
        self.volume.manifest.inode(number).map_err(|e| {
            tracing::error!(inode = number, error = %e, "manifest read failed");
            Errno::EIO
        })
    }

    /// Lists directory `ino` from entry `offset` on (1 is ".", 2 is "..", 3.. the entries; each
    /// offset names the entry after it), handing each to `add` until it says the reply is full.
    fn list_dir(
        &self,
        ino: INodeNo,
        offset: u64,
        mut add: impl FnMut(&Listed<'_>) -> bool,
    ) -> Result<(), Errno> {
        let dir = match self.inode(ino)? {
            dir if dir.kind == FileKind::Directory => dir,
            _ => return Err(Errno::ENOTDIR),
        };
        if offset == 0 {
            self.volume.listed(&dir);
        }
        let manifest = &self.volume.manifest;
        let entries = manifest.read_dir(&dir).map_err(|e| {
            tracing::error!(path = %self.volume.path_of(dir.ino), error = %e, "directory read failed");
            Errno::EIO
        })?;
        let mut position = 0u64;
        for name in [".", ".."] {
            position += 1;
            let dot = Listed {
                ino,
                position,
                name: OsStr::new(name),
                inode: &dir,
            };
            if position > offset && add(&dot) {
                return Ok(());
            }
        }
        for entry in entries {
            position += 1;
            if position <= offset {
                continue;
            }
            let child = manifest.inode(entry.ino).map_err(|e| {
                tracing::error!(inode = entry.ino, error = %e, "inode read failed");
                Errno::EIO
            })?;
            let listed = Listed {
                ino: fuse_ino(entry.ino),
                position,
                name: OsStr::from_bytes(entry.name),
                inode: &child,
            };
            if add(&listed) {
                break;
            }
        }
        Ok(())
    }

    /// The extended attributes of `inode`, or EIO (logged) when the manifest cannot say.
    fn xattrs(&self, inode: &Inode) -> Result<Vec<Xattr<'_>>, Errno> {
        self.volume.manifest.xattrs(inode).map_err(|e| {
            tracing::error!(inode = inode.ino, error = %e, "xattr read failed");
            Errno::EIO
        })
    }
}

impl Filesystem for ThawFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let wanted = self.passthrough.answers_opens();
        let granted = negotiate(config, wanted);
        if wanted && !granted {
            self.passthrough
                .turn_off("off (the kernel does not offer FUSE passthrough)".into());
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = self.inode(parent).and_then(|dir| {
            match self.volume.manifest.lookup_in(&dir, name.as_bytes()) {
                Ok(Some(ino)) => self.inode(fuse_ino(ino)),
                Ok(None) => Err(Errno::ENOENT),
                Err(e) => {
                    tracing::error!(parent = dir.ino, error = %e, "directory read failed");
                    Err(Errno::EIO)
                }
            }
        });
        match found {
            Ok(inode) => reply.entry(&TTL, &file_attr(&inode), Generation(0)),
            Err(errno) => reply.error(errno),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.inode(ino) {
            Ok(inode) => reply.attr(&TTL, &file_attr(&inode)),
            Err(errno) => reply.error(errno),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let target = self.inode(ino).and_then(|inode| {
            if inode.kind != FileKind::Symlink {
                return Err(Errno::EINVAL);
            }
            self.volume
                .manifest
                .symlink_target(&inode)
                .map(|t| t.to_vec())
                .map_err(|e| {
                    tracing::error!(inode = inode.ino, error = %e, "symlink read failed");
                    Errno::EIO
                })
        });
        match target {
            Ok(target) => reply.data(&target),
            Err(errno) => reply.error(errno),
        }
    }

    /// Without passthrough, opens cost nothing: answering ENOSYS once makes the kernel stop
    /// sending OPEN and RELEASE for files ("zero-message open") and treat them as keep_cache.
    /// With it, a file whose whole content is a trusted disk cache file is handed to the kernel
    /// (see [`crate::passthrough`]); others open as keep_cache. The mount is read-only, so the
    /// kernel itself refuses opens for writing (EROFS). Reads find the file's state by inode.
    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let passthrough = self.passthrough.answers_opens();
        if !passthrough && !self.volume.fetches_on_open() {
            // Nothing to do at open: the kernel stops asking.
            return reply.error(Errno::ENOSYS);
        }
        let Some(number) = manifest_ino(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let mode = match passthrough {
            true => self.passthrough.open(&self.volume, number, reply),
            false => opened_through_thaw(reply),
        };
        match mode {
            OpenMode::Passthrough => {
                self.volume.metrics.passthrough_opens.inc();
            }
            OpenMode::Fuse => {
                self.volume.metrics.fuse_opens.inc();
                self.volume.opened(number);
            }
        };
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
        if let Some(number) = manifest_ino(ino) {
            self.passthrough.release(&self.volume, number, fh.0);
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(number) = manifest_ino(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let volume = self.volume.clone();
        self.runtime.spawn(async move {
            let started = Instant::now();
            let metrics = volume.metrics.clone();
            metrics.reads.inc();
            let file = match volume.reader(number) {
                Ok(Some(file)) => file,
                Ok(None) => return reply.error(Errno::EISDIR),
                Err(e) => {
                    metrics.read_errors.inc();
                    tracing::error!(path = %volume.path_of(number), error = %e, "file extents are unreadable");
                    return reply.error(Errno::EIO);
                }
            };
            match file.read(&volume, offset, size).await {
                Ok(data) => {
                    metrics.read_bytes.inc_by(data.len() as u64);
                    reply.data(&data);
                }
                Err(e) => {
                    metrics.read_errors.inc();
                    tracing::error!(
                        path = %volume.path_of(number),
                        offset,
                        chunk_index = e.chunk_index,
                        chunk = %e.chunk.map(|c| c.to_hex()).unwrap_or_default(),
                        tier = %volume.tiers().origin_name(),
                        error = %e.source,
                        "read failed; answering EIO"
                    );
                    reply.error(Errno::EIO);
                }
            }
            metrics
                .read_seconds
                .observe(started.elapsed().as_secs_f64());
        });
    }

    /// Nothing is ever written; ENOSYS once makes the kernel stop sending FLUSH on every close.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    /// Like `open`: no OPENDIR/RELEASEDIR round trips; the kernel caches directory pages.
    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(Errno::ENOSYS);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.list_dir(ino, offset, |entry| {
            reply.add(
                entry.ino,
                entry.position,
                file_type(entry.inode.kind),
                entry.name,
            )
        }) {
            Ok(()) => reply.ok(),
            Err(errno) => reply.error(errno),
        }
    }

    /// READDIR with every entry's attributes: the kernel caches them as if looked up, so a tree
    /// walk (`find`, Python's imports) sends no LOOKUP per file.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        match self.list_dir(ino, offset, |entry| {
            reply.add(
                entry.ino,
                entry.position,
                entry.name,
                &TTL,
                &file_attr(entry.inode),
                Generation(0),
            )
        }) {
            Ok(()) => reply.ok(),
            Err(errno) => reply.error(errno),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(
            self.volume.logical_bytes().div_ceil(BLOCK_SIZE as u64),
            0,
            0,
            self.volume.manifest.inode_count() as u64,
            0,
            BLOCK_SIZE,
            255,
            BLOCK_SIZE,
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let value = self.inode(ino).and_then(|inode| {
            self.xattrs(&inode)?
                .into_iter()
                .find(|(n, _)| *n == name.as_bytes())
                .map(|(_, v)| v.to_vec())
                .ok_or(Errno::ENODATA)
        });
        match value {
            Ok(value) => reply_sized(reply, size, &value),
            Err(errno) => reply.error(errno),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let names = self.inode(ino).and_then(|inode| {
            let mut list = Vec::new();
            for (name, _) in self.xattrs(&inode)? {
                list.extend_from_slice(name);
                list.push(0);
            }
            Ok(list)
        });
        match names {
            Ok(names) => reply_sized(reply, size, &names),
            Err(errno) => reply.error(errno),
        }
    }
}

/// The xattr reply convention: size 0 asks for the length, a too-small size is ERANGE.
fn reply_sized(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if (size as usize) < value.len() {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

/// Asks the kernel at `FUSE_INIT` for what a thaw mount uses, passthrough too when
/// `passthrough`; returns whether passthrough was granted. The supervisor's handshake and every
/// worker's file system ask the same (`crate::takeover`).
pub(crate) fn negotiate(config: &mut KernelConfig, passthrough: bool) -> bool {
    // Bigger requests mean fewer round trips; each setter returns the nearest allowed value
    // when the kernel offers less.
    if let Err(nearest) = config.set_max_write(MAX_REQUEST_BYTES) {
        let _ = config.set_max_write(nearest);
    }
    if let Err(nearest) = config.set_max_readahead(MAX_REQUEST_BYTES) {
        let _ = config.set_max_readahead(nearest);
    }
    // Directory listings carry attributes: a tree walk needs no LOOKUP per entry.
    let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
    let _ = config.set_max_background(64);
    let _ = config.set_congestion_threshold(48);
    passthrough
        && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
        && config.set_max_stack_depth(1).is_ok()
}
