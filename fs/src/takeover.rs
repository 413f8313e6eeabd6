//! A FUSE connection that outlives the process serving it.
//!
//! A supervised mount ([`crate::supervisor`]) opens the connection itself: it mounts with a
//! [`Handshake`] file system that only answers the kernel's `FUSE_INIT` (with the capabilities
//! [`crate::filesystem::negotiate`] asks for, the same ones a worker's [`crate::ThawFs`] asks
//! for) and records what the kernel offered. It keeps the `/dev/fuse` descriptor for as long as
//! the mount exists and passes a copy to each worker process it starts. Because the supervisor
//! holds the descriptor, the kernel keeps the connection (and every request queued on it) when a
//! worker exits or is killed; the supervisor then asks the kernel to queue again the requests the
//! dead worker had read but not answered ([`Connection::resend`], `FUSE_NOTIFY_RESEND`, Linux
//! 6.9+), and the next worker answers them.
//!
//! fuser only builds a serving session through the `FUSE_INIT` handshake, which a live
//! connection does not send again. [`worker_session`] therefore runs fuser's handshake against a
//! local socket carrying a copy of the supervisor's `FUSE_INIT` (so the worker's file system sees
//! what the kernel offered), then puts the inherited connection in that socket's place with
//! `dup3`: the session keeps its descriptor number, which now reads the live connection.
//!
//! Inode numbers and file handles are derived from the manifest alone, so a new worker answers
//! requests about anything the old one handed out. The one piece of per-connection state is the
//! passthrough backing ids; see [`crate::passthrough`]'s ledger.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};

use fuser::{Config, Filesystem, KernelConfig, Request, Session};

/// The descriptor number a worker finds the inherited connection on.
pub(crate) const CONNECTION_FD: RawFd = 4;
/// Set in a worker's environment: what the kernel offered at `FUSE_INIT`.
pub(crate) const CONNECTION_ENV: &str = "THAW_MOUNT_CONNECTION";

/// `FUSE_INIT`'s opcode.
const FUSE_INIT: u32 = 26;
/// `FUSE_INIT_EXT`: the second word of init flags is in use.
const FUSE_INIT_EXT: u64 = 1 << 30;
/// `FUSE_NOTIFY_RESEND`: queue again every request read but not answered.
const FUSE_NOTIFY_RESEND: i32 = 7;
/// `sizeof(struct fuse_in_header)`.
const IN_HEADER_BYTES: usize = 40;
/// `sizeof(struct fuse_init_in)`.
const INIT_IN_BYTES: usize = 64;

/// What the kernel offered at `FUSE_INIT`: a worker's handshake replays it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offered {
    /// The kernel's protocol version.
    pub major: u32,
    /// Its minor version.
    pub minor: u32,
    /// The largest readahead it allows.
    pub max_readahead: u32,
    /// The capability flags it offered (both words).
    pub flags: u64,
}

impl Offered {
    /// The form passed in a worker's environment.
    pub(crate) fn encode(&self) -> String {
        format!(
            "{}.{}:{}:{:#x}",
            self.major, self.minor, self.max_readahead, self.flags
        )
    }

    /// Parses [`Offered::encode`]'s form, `None` when it is not that.
    pub(crate) fn decode(text: &str) -> Option<Offered> {
        let (version, rest) = text.split_once(':')?;
        let (major, minor) = version.split_once('.')?;
        let (readahead, flags) = rest.split_once(':')?;
        Some(Offered {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
            max_readahead: readahead.parse().ok()?,
            flags: u64::from_str_radix(flags.strip_prefix("0x")?, 16).ok()?,
        })
    }

    /// A `FUSE_INIT` request carrying this offer.
    fn init_request(&self) -> Vec<u8> {
        let mut request = Vec::with_capacity(IN_HEADER_BYTES + INIT_IN_BYTES);
        let words_32 = |request: &mut Vec<u8>, words: &[u32]| {
            for word in words {
                request.extend_from_slice(&word.to_ne_bytes());
            }
        };
        words_32(
            &mut request,
            &[(IN_HEADER_BYTES + INIT_IN_BYTES) as u32, FUSE_INIT],
        );
        request.extend_from_slice(&1u64.to_ne_bytes()); // unique
        request.extend_from_slice(&0u64.to_ne_bytes()); // nodeid
        words_32(&mut request, &[0, 0, 0, 0]); // uid, gid, pid, padding
        let flags = self.flags | FUSE_INIT_EXT;
        words_32(
            &mut request,
            &[
                self.major,
                self.minor,
                self.max_readahead,
                flags as u32,
                (flags >> 32) as u32,
            ],
        );
        request.resize(IN_HEADER_BYTES + INIT_IN_BYTES, 0);
        request
    }
}

/// A file system that only answers `FUSE_INIT`: the supervisor's side of the handshake.
pub(crate) struct Handshake {
    passthrough: bool,
    offered: Arc<Mutex<Option<Offered>>>,
}

impl Filesystem for Handshake {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // A request above the largest answers with it.
        let max_readahead = config.set_max_readahead(u32::MAX).err().unwrap_or(u32::MAX);
        let version = config.kernel_abi();
        *self.offered.lock().expect("offered lock") = Some(Offered {
            major: version.0,
            minor: version.1,
            max_readahead,
            flags: config.capabilities().bits(),
        });
        crate::filesystem::negotiate(config, self.passthrough);
        Ok(())
    }
}

/// A mounted FUSE connection held by the supervisor.
pub struct Connection {
    /// Kept (never run) for the mount it holds; dropping it unmounts.
    session: Session<Handshake>,
    offered: Offered,
}

impl Connection {
    /// Mounts at `mountpoint` and answers the kernel's `FUSE_INIT`, asking for passthrough when
    /// `passthrough`.
    pub fn mount(mountpoint: &Path, config: &Config, passthrough: bool) -> std::io::Result<Self> {
        let offered = Arc::new(Mutex::new(None));
        let handshake = Handshake {
            passthrough,
            offered: offered.clone(),
        };
        let session = Session::new(handshake, mountpoint, config)?;
        let offered = offered
            .lock()
            .expect("offered lock")
            .ok_or_else(|| std::io::Error::other("the kernel's FUSE_INIT was not seen"))?;
        Ok(Connection { session, offered })
    }

    /// What the kernel offered.
    pub fn offered(&self) -> Offered {
        self.offered
    }

    /// The connection's descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.session.as_fd()
    }

    /// Asks the kernel to queue again every request read from this connection but not
    /// answered (those of a worker that exited).
    pub fn resend(&self) -> std::io::Result<()> {
        // struct fuse_out_header { len, error (the notify code), unique: 0 }
        let mut notify = Vec::with_capacity(16);
        notify.extend_from_slice(&16u32.to_ne_bytes());
        notify.extend_from_slice(&FUSE_NOTIFY_RESEND.to_ne_bytes());
        notify.extend_from_slice(&0u64.to_ne_bytes());
        // SAFETY: a write of an owned buffer to a descriptor this connection holds open.
        let written =
            unsafe { libc::write(self.fd().as_raw_fd(), notify.as_ptr().cast(), notify.len()) };
        if written < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The connection this process inherited from its supervisor, if it is a worker.
pub(crate) fn inherited() -> Option<(OwnedFd, Offered)> {
    let offered = Offered::decode(&std::env::var(CONNECTION_ENV).ok()?)?;
    // SAFETY: fcntl(F_GETFD) only asks whether the descriptor is open.
    if unsafe { libc::fcntl(CONNECTION_FD, libc::F_GETFD) } < 0 {
        return None;
    }
    static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if TAKEN.swap(true, std::sync::atomic::Ordering::AcqRel) {
        return None;
    }
    // SAFETY: the supervisor placed the connection at CONNECTION_FD for this process alone; it
    // is taken once (TAKEN).
    let fd = unsafe { OwnedFd::from_raw_fd(CONNECTION_FD) };
    set_cloexec(fd.as_fd());
    Some((fd, offered))
}

fn set_cloexec(fd: BorrowedFd<'_>) {
    // SAFETY: setting FD_CLOEXEC on an open descriptor.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
}

/// A serving session of `fs` on the live connection `fd` whose kernel made `offered`.
pub(crate) fn worker_session<FS: Filesystem>(
    fs: FS,
    fd: OwnedFd,
    offered: &Offered,
    config: Config,
) -> std::io::Result<Session<FS>> {
    let (ours, kernel_side) = seqpacket_pair()?;
    let mut kernel_side = kernel_side;
    kernel_side.write_all(&offered.init_request())?;
    let acl = config.acl;
    let session = Session::from_fd(fs, ours, acl, config)?;
    // The reply to the replayed init: the kernel has its own from the supervisor.
    let mut reply = [0u8; 4096];
    let _ = kernel_side.read(&mut reply);
    let slot = session.as_fd().as_raw_fd();
    // SAFETY: dup3 replaces the socket behind the session's descriptor number with the live
    // connection; both descriptors are open and owned (the session's, and `fd`).
    if unsafe { libc::dup3(fd.as_raw_fd(), slot, libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(session)
}

/// A connected pair of sequenced-packet sockets (one FUSE message per read, as /dev/fuse).
fn seqpacket_pair() -> std::io::Result<(OwnedFd, UnixStream)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair fills two descriptors that this function then owns.
    let made = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if made != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    Ok(unsafe {
        (
            OwnedFd::from_raw_fd(fds[0]),
            UnixStream::from_raw_fd(fds[1]),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offered_round_trips_through_the_environment_form() {
        let offered = Offered {
            major: 7,
            minor: 45,
            max_readahead: 131072,
            flags: 0x1_0000_4000_8001,
        };
        assert_eq!(Offered::decode(&offered.encode()), Some(offered));
        assert_eq!(Offered::decode("7.45:131072"), None);
        assert_eq!(Offered::decode("7:1:0x1"), None);
    }

    #[test]
    fn replayed_init_is_a_well_formed_request() {
        let offered = Offered {
            major: 7,
            minor: 45,
            max_readahead: 1 << 20,
            flags: 1 << 41,
        };
        let request = offered.init_request();
        let word = |at: usize| u32::from_ne_bytes(request[at..at + 4].try_into().unwrap());
        assert_eq!(request.len(), 104);
        assert_eq!(word(0), 104);
        assert_eq!(word(4), FUSE_INIT);
        assert_eq!((word(40), word(44), word(48)), (7, 45, 1 << 20));
        assert_eq!(u64::from(word(52)), FUSE_INIT_EXT);
        assert_eq!(word(56), 1 << 9);
    }
}
