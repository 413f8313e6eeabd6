//! thaw's lazy-pages server: what `criu lazy-pages` does, in a thread of the restoring process,
//! with faults answered a window at a time instead of a page at a time.
//!
//! `criu restore --lazy-pages` connects to `lazy-pages.socket` in its work dir and sends, for
//! each restored process, its pid (an `i32`; negative for a zombie, which has no memory) and its
//! userfaultfd (`SCM_RIGHTS`, one dummy byte), then `RESTORE_FINISHED` once the tree runs. From
//! then on every touch of a lazy page is a fault this server answers: it reads the run of pages
//! around the fault (up to `fault_window` bytes, one VMA) from the pages image and copies it in
//! with one UFFDIO_COPY, which also wakes the faulting thread. Between faults, once the restore
//! has finished, it copies the rest in `background_chunk` pieces in address order. A process
//! that forks hands over a userfaultfd for its child, which gets a copy of what is still pending;
//! mremap moves pending runs, munmap and madvise(DONTNEED) drop them (their old bytes must never
//! come back). The server ends once nothing is pending in any process.
//!
//! The pages image is read through the images' lazy mount, so each read comes through thaw's
//! tiers and lands in the mount's access trace, which the next restore prefetches from.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use userfaultfd::{Error as UffdError, Event, Uffd};

use super::images::{LazyMemory, Run, PAGE_SIZE};
use super::pending::Pending;
use crate::{Result, SnapshotError};

/// What the restore sends once the restored tree runs (`LAZY_PAGES_RESTORE_FINISHED`).
const RESTORE_FINISHED: u32 = 0x5253_5446;
/// Background chunks the pages image is read ahead by (asked of the kernel, which reads them
/// through the images mount while the current chunk is copied in).
const READ_AHEAD_CHUNKS: u64 = 2;
/// How often a waiting server looks at its stop flag.
const TICK: Duration = Duration::from_millis(50);

/// How much is copied per fault and per background step.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// Bytes copied around a faulting address (a power of two; the window is aligned to it and
    /// clipped to the run, which never crosses a VMA).
    pub fault_window: u64,
    /// Bytes copied per background step.
    pub background_chunk: u64,
    /// Copy what no fault asked for in the background once the tree runs (off: faults only,
    /// so pending pages stay pending until touched; for tests and debugging).
    pub background: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            fault_window: 1 << 20,
            background_chunk: 4 << 20,
            background: true,
        }
    }
}

impl ServeOptions {
    /// The defaults, with `THAW_LAZY_PAGES_BACKGROUND=off` turning the background copy off.
    pub fn from_env() -> ServeOptions {
        ServeOptions {
            background: std::env::var_os("THAW_LAZY_PAGES_BACKGROUND").is_none_or(|v| v != "off"),
            ..ServeOptions::default()
        }
    }
}

/// What a server did, for logs and reports.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ServeStats {
    /// Processes served (forked children included).
    pub processes: u64,
    /// Lazy bytes the restored processes had.
    pub lazy_bytes: u64,
    /// Faults answered with bytes from the images.
    pub faults: u64,
    /// Bytes those faults copied in.
    pub fault_bytes: u64,
    /// Faults outside lazy memory, answered with a zero page.
    pub zero_faults: u64,
    /// Bytes copied in the background.
    pub background_bytes: u64,
    /// Pending bytes dropped because the process unmapped or discarded them, or exited.
    pub dropped_bytes: u64,
}

/// A running server; dropping it stops it.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<ServeStats>>>,
}

impl Server {
    /// Listens on `socket` and serves the processes a restore from `images` sends there.
    pub fn start(images: &Path, socket: &Path, options: ServeOptions) -> Result<Server> {
        let _ = std::fs::remove_file(socket);
        let listener = bind(socket).map_err(|e| SnapshotError::io(socket, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| SnapshotError::io(socket, e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let images = images.to_path_buf();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("lazy-pages".into())
            .spawn(move || serve(listener, &images, options, &flag))
            .map_err(|e| SnapshotError::LazyPages(format!("starting its thread: {e}")))?;
        Ok(Server {
            stop,
            thread: Some(thread),
        })
    }

    /// `Ok(Some(stats))` once every page is in, `Ok(None)` while it runs, the error when it
    /// failed (the restored tree may be missing memory).
    pub fn finished(&mut self) -> Result<Option<ServeStats>> {
        match &self.thread {
            Some(thread) if thread.is_finished() => {}
            _ => return Ok(None),
        }
        let thread = self.thread.take().expect("checked above");
        match thread.join() {
            Ok(result) => result.map(Some),
            Err(_) => Err(SnapshotError::LazyPages("its thread panicked".into())),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One restored process: its userfaultfd, what is still to copy and where the bytes are.
struct Process {
    pid: i32,
    uffd: Uffd,
    pending: Pending,
    pages: Arc<File>,
    pages_path: Arc<PathBuf>,
    /// Faults whose copy must be tried again (the kernel said EAGAIN: a mapping was changing).
    retry: Vec<u64>,
    exited: bool,
}

/// How a copy ended.
enum Copied {
    /// Everything asked for is in (or was skipped as already there).
    Done,
    /// The kernel asked to try again once events are read; the rest is pending again.
    Again,
    /// The process has exited.
    Exited,
}

/// The buffer pages are read into before they are copied: page aligned, as CRIU's is.
struct PageBuffer {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl PageBuffer {
    fn new(len: u64) -> PageBuffer {
        let layout = std::alloc::Layout::from_size_align(len as usize, PAGE_SIZE as usize)
            .expect("a page-aligned layout");
        // SAFETY: a non-zero size (the windows are at least a page).
        let ptr = unsafe { std::alloc::alloc(layout) };
        assert!(!ptr.is_null(), "allocating {len} bytes for lazy pages");
        PageBuffer { ptr, layout }
    }

    fn slice(&mut self, len: usize) -> &mut [u8] {
        assert!(len <= self.layout.size());
        // SAFETY: `len` bytes inside the allocation, borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, len) }
    }
}

impl Drop for PageBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// Binds a listening socket at `path`, however long: a Unix socket address holds only 107
/// bytes, so a longer path is reached through its folder's descriptor (`/proc/self/fd/N/NAME`).
fn bind(path: &Path) -> std::io::Result<UnixListener> {
    const SHORT_ENOUGH: usize = 100;
    if path.as_os_str().len() < SHORT_ENOUGH {
        return UnixListener::bind(path);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return UnixListener::bind(path);
    };
    let dir = File::open(dir)?;
    let short = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    UnixListener::bind(short)
}

fn serve(
    listener: UnixListener,
    images: &Path,
    options: ServeOptions,
    stop: &AtomicBool,
) -> Result<ServeStats> {
    let Some(mut restore) = accept(&listener, stop)? else {
        return Ok(ServeStats::default());
    };
    drop(listener);
    let mut stats = ServeStats::default();
    let mut processes: Vec<Process> = Vec::new();
    let mut buffer = PageBuffer::new(options.fault_window.max(options.background_chunk));
    let mut restore_open = true;
    let mut finished = false;
    let mut next_background = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let background =
            options.background && finished && processes.iter().any(|p| !p.pending.is_empty());
        let mut fds: Vec<libc::pollfd> = processes
            .iter()
            .map(|p| pollfd(p.uffd.as_raw_fd()))
            .collect();
        if restore_open {
            fds.push(pollfd(restore.as_raw_fd()));
        }
        let timeout = if background {
            0
        } else {
            TICK.as_millis() as i32
        };
        // SAFETY: `fds` is a valid array of pollfd of this length.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if ready < 0 && Errno::last() != Errno::EINTR {
            return Err(lazy_error("poll", Errno::last()));
        }
        if restore_open && fds.last().is_some_and(|f| f.revents != 0) {
            match read_restore_message(&mut restore)? {
                Message::Process(pid, uffd) => {
                    let process = Process::new(images, pid, uffd)?;
                    stats.processes += 1;
                    stats.lazy_bytes += process.pending.bytes();
                    processes.push(process);
                }
                Message::Zombie => {}
                Message::Finished => finished = true,
                Message::Closed if finished => restore_open = false,
                Message::Closed => {
                    return Err(SnapshotError::LazyPages(
                        "the restore closed its socket before the tree was restored".into(),
                    ))
                }
            }
        }
        let mut forked = Vec::new();
        for process in processes.iter_mut() {
            process.handle_events(&options, &mut buffer, &mut stats, &mut forked)?;
        }
        for child in forked {
            stats.processes += 1;
            processes.push(child);
        }
        if background {
            let n = processes.len();
            let next = (0..n)
                .map(|i| (next_background + i) % n)
                .find(|&i| !processes[i].exited && !processes[i].pending.is_empty());
            if let Some(process) = next.map(|i| &mut processes[i]) {
                if let Some(run) = process.pending.take_next(options.background_chunk) {
                    // The images mount fetches what comes next while this chunk is copied in.
                    process.read_ahead(options.background_chunk * READ_AHEAD_CHUNKS);
                    let len = run.end - run.start;
                    match process.copy(run, &mut buffer)? {
                        Copied::Done => stats.background_bytes += len,
                        Copied::Again => {}
                        Copied::Exited => process.exited = true,
                    }
                }
            }
            next_background = next_background.wrapping_add(1);
        }
        for process in processes.iter().filter(|p| p.exited) {
            stats.dropped_bytes += process.pending.bytes();
        }
        processes.retain(|p| !p.exited);
        if finished
            && processes
                .iter()
                .all(|p| p.pending.is_empty() && p.retry.is_empty())
        {
            return Ok(stats);
        }
    }
    Ok(stats)
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

fn lazy_error(what: &str, errno: Errno) -> SnapshotError {
    SnapshotError::LazyPages(format!("{what}: {}", errno.desc()))
}

/// Waits for the restore to connect, unless stopped first.
fn accept(listener: &UnixListener, stop: &AtomicBool) -> Result<Option<UnixStream>> {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                stream
                    .set_nonblocking(false)
                    .map_err(|e| SnapshotError::LazyPages(format!("the restore's socket: {e}")))?;
                return Ok(Some(stream));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(TICK / 10),
            Err(e) => {
                return Err(SnapshotError::LazyPages(format!(
                    "accepting the restore: {e}"
                )))
            }
        }
    }
    Ok(None)
}

/// One message of the restore.
enum Message {
    /// A restored process and its userfaultfd.
    Process(i32, Uffd),
    /// A zombie: nothing to serve.
    Zombie,
    /// The tree runs; background copies may start.
    Finished,
    /// The socket closed.
    Closed,
}

fn read_restore_message(restore: &mut UnixStream) -> Result<Message> {
    let mut word = [0u8; 4];
    match restore.read_exact(&mut word) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Message::Closed),
        Err(e) => {
            return Err(SnapshotError::LazyPages(format!(
                "reading the restore: {e}"
            )))
        }
    }
    let value = u32::from_ne_bytes(word);
    if value == RESTORE_FINISHED {
        return Ok(Message::Finished);
    }
    let pid = value as i32;
    if pid < 0 {
        return Ok(Message::Zombie);
    }
    let fd = receive_fd(restore.as_raw_fd())
        .map_err(|e| SnapshotError::LazyPages(format!("the userfaultfd of process {pid}: {e}")))?;
    // SAFETY: a descriptor the kernel just gave us, owned by nothing else.
    Ok(Message::Process(pid, unsafe { Uffd::from_raw_fd(fd) }))
}

/// Receives one descriptor sent with `SCM_RIGHTS` and a one-byte payload (CRIU's `send_fd`).
fn receive_fd(socket: RawFd) -> std::io::Result<RawFd> {
    let mut byte = 0u8;
    let mut iov = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    // Room for one descriptor's control message, aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: zeroed msghdr is a valid empty header; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as _;
    // SAFETY: `msg` describes buffers valid for the call.
    let n = unsafe { libc::recvmsg(socket, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel filled `msg`; CMSG_FIRSTHDR reads inside its control buffer.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    // SAFETY: `cmsg` is either null or points at a control message in `control`.
    let header = unsafe { cmsg.as_ref() }.filter(|c| {
        c.cmsg_level == libc::SOL_SOCKET
            && c.cmsg_type == libc::SCM_RIGHTS
            && msg.msg_flags & libc::MSG_CTRUNC == 0
    });
    match header {
        // SAFETY: an SCM_RIGHTS message holds at least one descriptor.
        Some(c) => Ok(unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const RawFd) }),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no descriptor came with the message",
        )),
    }
}

impl Process {
    fn new(images: &Path, pid: i32, uffd: Uffd) -> Result<Process> {
        let memory = LazyMemory::load(images, pid)?;
        let pages = File::open(&memory.pages).map_err(|e| SnapshotError::io(&memory.pages, e))?;
        tracing::debug!(
            pid,
            lazy_bytes = memory.bytes(),
            runs = memory.runs.len(),
            "lazy process"
        );
        Ok(Process {
            pid,
            uffd,
            pending: Pending::new(&memory.runs),
            pages: Arc::new(pages),
            pages_path: Arc::new(memory.pages),
            retry: Vec::new(),
            exited: false,
        })
    }

    /// Reads and answers every event queued on this process's userfaultfd, then the faults
    /// waiting for a retry; a fork's child goes to `forked`.
    fn handle_events(
        &mut self,
        options: &ServeOptions,
        buffer: &mut PageBuffer,
        stats: &mut ServeStats,
        forked: &mut Vec<Process>,
    ) -> Result<()> {
        while !self.exited {
            let event = match self.uffd.read_event() {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(UffdError::ReadEof) => {
                    self.exited = true;
                    break;
                }
                Err(e) => {
                    return Err(SnapshotError::LazyPages(format!(
                        "reading process {}'s userfaultfd: {e}",
                        self.pid
                    )))
                }
            };
            match event {
                Event::Pagefault { addr, .. } => self.fault(addr as u64, options, buffer, stats)?,
                Event::Fork { uffd } => forked.push(Process {
                    pid: self.pid,
                    uffd,
                    pending: self.pending.clone(),
                    pages: self.pages.clone(),
                    pages_path: self.pages_path.clone(),
                    retry: Vec::new(),
                    exited: false,
                }),
                Event::Remap { from, to, len } => {
                    self.pending.remap(from as u64, to as u64, len as u64)
                }
                Event::Remove { start, end } => {
                    let (start, end) = (start as u64, end as u64);
                    self.drop_pending(start, end, stats);
                    // The VMA stays: faults in it must now be the kernel's zero fill, not ours.
                    match self.uffd.unregister(start as _, (end - start) as usize) {
                        Ok(()) => {}
                        Err(UffdError::SystemError(Errno::ENOMEM)) => self.exited = true,
                        Err(e) => {
                            return Err(SnapshotError::LazyPages(format!(
                                "unregistering {start:#x}..{end:#x} of process {}: {e}",
                                self.pid
                            )))
                        }
                    }
                }
                Event::Unmap { start, end } => self.drop_pending(start as u64, end as u64, stats),
            }
        }
        for addr in std::mem::take(&mut self.retry) {
            if !self.exited {
                self.fault(addr, options, buffer, stats)?;
            }
        }
        Ok(())
    }

    /// Asks the kernel to read the next `bytes` of pending pages from the pages image into
    /// the page cache, so the copies after this one find them there.
    fn read_ahead(&self, bytes: u64) {
        for (offset, len) in self.pending.upcoming(bytes) {
            self.advise(offset, len, libc::POSIX_FADV_WILLNEED);
        }
    }

    /// `posix_fadvise` on the pages image; advice only, so its result does not matter.
    fn advise(&self, offset: u64, len: u64, advice: libc::c_int) {
        // SAFETY: advice on our own descriptor; no memory is touched.
        unsafe {
            libc::posix_fadvise(
                self.pages.as_raw_fd(),
                offset as libc::off_t,
                len as libc::off_t,
                advice,
            )
        };
    }

    fn drop_pending(&mut self, start: u64, end: u64, stats: &mut ServeStats) {
        let before = self.pending.bytes();
        self.pending.drop_range(start, end);
        stats.dropped_bytes += before - self.pending.bytes();
    }

    /// Answers a fault at `addr`: its window of pending pages, or a zero page outside them.
    fn fault(
        &mut self,
        addr: u64,
        options: &ServeOptions,
        buffer: &mut PageBuffer,
        stats: &mut ServeStats,
    ) -> Result<()> {
        let page = addr & !(PAGE_SIZE - 1);
        let window_start = page & !(options.fault_window - 1);
        let window = window_start..window_start + options.fault_window;
        if let Some(run) = self.pending.take_around(page, window) {
            let len = run.end - run.start;
            match self.copy(run, buffer)? {
                Copied::Done => {
                    stats.faults += 1;
                    stats.fault_bytes += len;
                }
                Copied::Again => self.retry.push(page),
                Copied::Exited => self.exited = true,
            }
            return Ok(());
        }
        // SAFETY: zero-fills one page of this process's registered range (or fails).
        match unsafe { self.uffd.zeropage(page as _, PAGE_SIZE as usize, true) } {
            Ok(_) => stats.zero_faults += 1,
            // Already there (another thread's fault got it) or no longer mapped: wake the
            // thread so it retries its access.
            Err(UffdError::ZeropageFailed(Errno::EEXIST | Errno::ENOENT)) => {
                let _ = self.uffd.wake(page as _, PAGE_SIZE as usize);
            }
            Err(UffdError::ZeropageFailed(Errno::EAGAIN)) => self.retry.push(page),
            Err(UffdError::ZeropageFailed(Errno::ESRCH | Errno::ENOSPC)) => self.exited = true,
            Err(e) => {
                return Err(SnapshotError::LazyPages(format!(
                    "zero page at {page:#x} of process {}: {e}",
                    self.pid
                )))
            }
        }
        Ok(())
    }

    /// Reads `run` from the pages image and copies it into the process, waking whoever waits
    /// on it. Pages already there, and pages no longer mapped, are skipped.
    fn copy(&mut self, run: Run, buffer: &mut PageBuffer) -> Result<Copied> {
        let len = (run.end - run.start) as usize;
        let bytes = buffer.slice(len);
        self.pages.read_exact_at(bytes, run.offset).map_err(|e| {
            SnapshotError::LazyPages(format!(
                "reading {len} bytes at {} of {} for process {}: {e}",
                run.offset,
                self.pages_path.display(),
                self.pid
            ))
        })?;
        let page = PAGE_SIZE as usize;
        let mut done = 0usize;
        // Whole runs at once, until the kernel says a run no longer lies in one VMA.
        let mut page_at_a_time = false;
        while done < len {
            let dst = run.start + done as u64;
            let n = if page_at_a_time { page } else { len - done };
            // SAFETY: the source is `n` bytes of our buffer; the destination is a registered
            // lazy range of the process, which the kernel checks.
            let result = unsafe {
                self.uffd
                    .copy(bytes[done..].as_ptr().cast(), dst as _, n, true)
            };
            match result {
                Ok(n) => done += n,
                Err(UffdError::PartiallyCopied(n)) if n > 0 => done += n,
                Err(UffdError::PartiallyCopied(_)) => {
                    self.give_back(run, done);
                    return Ok(Copied::Again);
                }
                Err(UffdError::CopyFailed(Errno::EEXIST)) => done += page,
                // The range spans more than one VMA (an mprotect or mremap since the dump split
                // it): go on a page at a time, so no page that still needs its bytes is lost.
                Err(UffdError::CopyFailed(Errno::ENOENT)) if n > page => page_at_a_time = true,
                // This page is mapped no more (or no longer ours): nothing to copy it into.
                Err(UffdError::CopyFailed(Errno::ENOENT)) => done += page,
                Err(UffdError::CopyFailed(Errno::ESRCH | Errno::ENOSPC)) => {
                    return Ok(Copied::Exited)
                }
                Err(e) => {
                    return Err(SnapshotError::LazyPages(format!(
                        "copying {:#x}..{:#x} into process {}: {e}",
                        dst, run.end, self.pid
                    )))
                }
            }
        }
        // The bytes now live in the process: their page-cache copy would only crowd it.
        self.advise(run.offset, run.end - run.start, libc::POSIX_FADV_DONTNEED);
        Ok(Copied::Done)
    }

    /// Puts what is left of `run` after its first `done` bytes back into pending.
    fn give_back(&mut self, run: Run, done: usize) {
        let rest = Run {
            start: run.start + done as u64,
            end: run.end,
            offset: run.offset + done as u64,
        };
        self.pending.restore(rest);
    }
}
