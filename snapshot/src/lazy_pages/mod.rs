//! Lazy pages: a restore with `--lazy-pages` leaves the restored tree's private memory
//! unpopulated and registered with userfaultfd, and a daemon answers its page faults from the
//! page images, then copies every remaining page in. With the images on a lazy `thaw mount`,
//! the bytes come through thaw's tiers on first touch, so a process runs before its memory has
//! arrived.
//!
//! Two daemons can do it: thaw's own [`server`] (the default: a fault brings in a window of up
//! to 1 MiB in one copy, the background 4 MiB at a time) and CRIU's `criu lazy-pages`
//! ([`criu_daemon`]: a page per fault), kept for comparison and as a fallback.

pub mod criu_daemon;
pub mod images;
mod pending;
pub mod server;

use std::path::Path;

use crate::Result;
pub use server::{ServeOptions, ServeStats};

/// The socket the restore and the lazy-pages daemon meet at, inside their shared work dir.
pub const SOCKET: &str = "lazy-pages.socket";

/// The log CRIU's daemon writes in its work dir.
pub const LOG: &str = "lazy-pages.log";

/// Which daemon serves the lazy pages of a restore.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PagesDaemon {
    /// thaw's server, in the restoring process.
    #[default]
    Thaw,
    /// `criu lazy-pages`.
    Criu,
}

impl std::str::FromStr for PagesDaemon {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "thaw" => Ok(PagesDaemon::Thaw),
            "criu" => Ok(PagesDaemon::Criu),
            other => Err(format!("{other:?}: expected thaw or criu")),
        }
    }
}

/// A running lazy-pages daemon of either kind; stopped when dropped before it finished.
pub enum LazyPages {
    /// thaw's server.
    Thaw(server::Server),
    /// CRIU's daemon.
    Criu(criu_daemon::CriuDaemon),
}

impl std::fmt::Debug for LazyPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LazyPages::Thaw(_) => f.write_str("LazyPages::Thaw"),
            LazyPages::Criu(daemon) => write!(f, "LazyPages::Criu({daemon:?})"),
        }
    }
}

impl LazyPages {
    /// Starts thaw's server over `images`, listening in `work_dir` (the restore's work dir).
    pub fn serve(images: &Path, work_dir: &Path, options: ServeOptions) -> Result<LazyPages> {
        std::fs::create_dir_all(work_dir).map_err(|e| crate::SnapshotError::io(work_dir, e))?;
        Ok(LazyPages::Thaw(server::Server::start(
            images,
            &work_dir.join(SOCKET),
            options,
        )?))
    }

    /// `Ok(true)` once every page is in, `Ok(false)` while the daemon runs; an error when it
    /// failed (the restored tree may then be missing memory and must not go on).
    pub fn finished(&mut self) -> Result<bool> {
        match self {
            LazyPages::Thaw(server) => Ok(match server.finished()? {
                Some(stats) => {
                    tracing::info!(?stats, "lazy pages: every page is in");
                    true
                }
                None => false,
            }),
            LazyPages::Criu(daemon) => daemon.finished(),
        }
    }
}
