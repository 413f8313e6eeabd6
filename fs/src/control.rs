//! The control socket of a running mount: `thaw umount` and `thaw trace save` talk to the
//! mount's daemon through a Unix socket named after the mount point, one JSON request line and
//! one JSON response line per connection.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::FsError;

/// What a client asks a mount's daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum ControlRequest {
    /// Merge the trace recorded so far into the store now.
    SaveTrace,
    /// Unmount (lazily: detach even while files are open), save the trace and exit.
    Unmount {
        /// Detach even if busy.
        lazy: bool,
    },
    /// Report counters.
    Status,
}

/// The daemon's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlResponse {
    /// Whether the request succeeded.
    pub ok: bool,
    /// A human-readable result or error.
    pub message: String,
    /// Counters (for `status`).
    #[serde(default)]
    pub status: Option<MountStatus>,
}

/// A running mount's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountStatus {
    /// Manifest id.
    pub manifest: String,
    /// Daemon process id.
    pub pid: u32,
    /// Trace entries recorded so far.
    pub trace_entries: u64,
    /// Chunks fetched from the object store.
    pub store_fetches: u64,
    /// Raw (uncompressed) bytes of the chunks fetched from the object store.
    #[serde(default)]
    pub store_bytes: u64,
    /// Chunks fetched from peer caches.
    #[serde(default)]
    pub peer_fetches: u64,
    /// Raw bytes of the chunks fetched from peer caches.
    #[serde(default)]
    pub peer_bytes: u64,
    /// Prefetch hits so far.
    pub prefetch_hits: u64,
    /// FUSE passthrough: `on`, or `off (why)`.
    #[serde(default)]
    pub passthrough: String,
    /// Opens handed to the kernel (passthrough to a disk cache file).
    #[serde(default)]
    pub passthrough_opens: u64,
    /// Opens whose reads came through thaw.
    #[serde(default)]
    pub fuse_opens: u64,
    /// Chunks the application has read (first reads; `prefetch_hits` of them were prefetched).
    #[serde(default)]
    pub first_reads: u64,
    /// The traces prefetch came from (the mount's own, or related manifests' carried over).
    #[serde(default)]
    pub prefetch_sources: Vec<crate::trace::TraceSource>,
    /// Whether opening a file fetches it whole and listing a directory its small files.
    #[serde(default)]
    pub fetch_on_open: bool,
    /// Whether the full background fetch is still going.
    #[serde(default)]
    pub fetching_all: bool,
    /// What each class of background work did (`trace`, `opened`, `listed`, `all`).
    #[serde(default)]
    pub background: std::collections::BTreeMap<String, crate::background::ClassReport>,
    /// The supervisor holding the mount's connection, when supervised (`--supervise`).
    #[serde(default)]
    pub supervisor_pid: Option<u32>,
    /// Workers before this one on the connection (handoffs and restarts).
    #[serde(default)]
    pub worker_generation: u32,
}

impl MountStatus {
    /// One line on the background fetching: each class's fetched and failed chunks, whether
    /// opens fetch ahead, whether the full fetch is running.
    pub fn background_summary(&self) -> String {
        let classes: Vec<String> = self
            .background
            .iter()
            .filter(|(_, report)| report.queued + report.fetched > 0)
            .map(|(class, r)| format!("{class} {} fetched, {} failed", r.fetched, r.failed))
            .collect();
        let mut line = match classes.is_empty() {
            true => "nothing".to_string(),
            false => classes.join("; "),
        };
        if self.fetch_on_open {
            line.push_str("; fetching files as they are opened");
        }
        if self.fetching_all {
            line.push_str("; the full fetch is running");
        }
        line
    }
}

/// The absolute, symlink-free form of a mount point (as the kernel and the socket name see it).
pub fn canonical_mountpoint(mountpoint: &Path) -> PathBuf {
    // A supervised worker's mount point is canonical already, and looking it up would wait for
    // the worker itself.
    if let Some(given) = crate::supervisor::worker_mountpoint() {
        if given == mountpoint {
            return given;
        }
    }
    std::fs::canonicalize(mountpoint).unwrap_or_else(|_| {
        if mountpoint.is_absolute() {
            mountpoint.to_path_buf()
        } else {
            std::env::current_dir()
                .map(|d| d.join(mountpoint))
                .unwrap_or_else(|_| mountpoint.to_path_buf())
        }
    })
}

/// Files of the mount at `mountpoint` in `runtime_dir` (sockets and daemon logs, the
/// configuration's runtime dir), with `extension`: named by a hash of the canonical mount point,
/// so any process can find them from the path alone.
pub fn runtime_file(runtime_dir: &Path, mountpoint: &Path, extension: &str) -> PathBuf {
    let canonical = canonical_mountpoint(mountpoint);
    let hash = thaw_core::ChunkId::of(canonical.as_os_str().as_encoded_bytes());
    runtime_dir.join(format!("mount-{}.{extension}", &hash.to_hex()[..16]))
}

/// The control socket of the mount at `mountpoint`.
pub fn socket_path(runtime_dir: &Path, mountpoint: &Path) -> PathBuf {
    runtime_file(runtime_dir, mountpoint, "sock")
}

/// Sends one request to the daemon of the mount at `mountpoint`.
pub async fn request(
    runtime_dir: &Path,
    mountpoint: &Path,
    request: &ControlRequest,
) -> Result<ControlResponse, FsError> {
    let socket = socket_path(runtime_dir, mountpoint);
    let fail = |reason: String| FsError::Control {
        socket: socket.display().to_string(),
        reason,
    };
    let stream = UnixStream::connect(&socket).await.map_err(|e| {
        fail(format!(
            "cannot connect ({e}); is a thaw mount running there?"
        ))
    })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request).expect("a request always serializes");
    line.push(b'\n');
    write
        .write_all(&line)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut answer = String::new();
    BufReader::new(read)
        .read_line(&mut answer)
        .await
        .map_err(|e| fail(e.to_string()))?;
    serde_json::from_str(&answer).map_err(|e| fail(format!("bad answer {answer:?}: {e}")))
}

/// Reads one request from a connection; `Err` carries the answer to send back.
pub(crate) async fn read_request(
    reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
) -> Result<ControlRequest, ControlResponse> {
    let mut line = String::new();
    if let Err(e) = reader.read_line(&mut line).await {
        return Err(ControlResponse {
            ok: false,
            message: format!("reading the request: {e}"),
            status: None,
        });
    }
    serde_json::from_str(&line).map_err(|e| ControlResponse {
        ok: false,
        message: format!("bad request {line:?}: {e}"),
        status: None,
    })
}

/// Writes one answer.
pub(crate) async fn write_response(
    mut writer: tokio::net::unix::OwnedWriteHalf,
    response: &ControlResponse,
) {
    let mut line = serde_json::to_vec(response).expect("a response always serializes");
    line.push(b'\n');
    if let Err(e) = writer.write_all(&line).await {
        tracing::debug!(error = %e, "control client went away");
    }
}
