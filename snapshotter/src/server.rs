//! Serving the snapshots API on a unix socket, as containerd's `proxy_plugins` expects, until
//! a shutdown signal; and a client channel to a unix socket (containerd's, or a snapshotter's).

use std::path::Path;
use std::sync::Arc;

use tokio_stream::wrappers::UnixListenerStream;

use crate::api::snapshots::snapshots_server::SnapshotsServer;
use crate::service::{Service, Snapshotter};
use crate::{Result, SnapshotterError};

/// Serves `snapshotter` at `socket` (a stale socket file is replaced) until `shutdown` resolves;
/// `ready` runs once the socket accepts connections.
pub async fn serve(
    snapshotter: Arc<Snapshotter>,
    socket: &Path,
    ready: impl FnOnce(),
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| SnapshotterError::io(dir, e))?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(SnapshotterError::io(socket, e)),
    }
    let listener =
        tokio::net::UnixListener::bind(socket).map_err(|e| SnapshotterError::io(socket, e))?;
    tracing::info!(socket = %socket.display(), "serving containerd's snapshots API");
    ready();
    tonic::transport::Server::builder()
        .add_service(SnapshotsServer::new(Service(snapshotter)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| SnapshotterError::Connect {
            address: socket.display().to_string(),
            reason: e.to_string(),
        })?;
    let _ = std::fs::remove_file(socket);
    Ok(())
}

/// A gRPC channel to the unix socket `socket`.
pub async fn connect(socket: &Path) -> Result<tonic::transport::Channel> {
    let path = socket.to_path_buf();
    let failed = |reason: String| SnapshotterError::Connect {
        address: socket.display().to_string(),
        reason,
    };
    // The URI is required by tonic and ignored by the connector.
    tonic::transport::Endpoint::try_from("http://[::]:50051")
        .map_err(|e| failed(e.to_string()))?
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| failed(e.to_string()))
}
