//! `thaw plan serve`: the extender over HTTP, its view of the cluster re-read in the background.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::{read_nodes, PeerAccess};
use crate::extender::{router, ExtenderState};

/// Serves the extender on `listener` until the process ends, re-reading `nodes` (and the
/// inventories it names) every `refresh`; a failed re-read keeps the last view.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ExtenderState>,
    nodes: PathBuf,
    access: PeerAccess,
    refresh: Duration,
) -> std::io::Result<()> {
    let refresher = {
        let state = state.clone();
        async move {
            let mut tick = tokio::time::interval(refresh);
            tick.tick().await;
            loop {
                tick.tick().await;
                match read_nodes(&nodes, &access).await {
                    Ok(cluster) => {
                        *state.cluster.write().expect("cluster lock") = Arc::new(cluster)
                    }
                    Err(e) => {
                        tracing::warn!("re-reading {}: {e}; keeping the last view", nodes.display())
                    }
                }
            }
        }
    };
    tokio::spawn(refresher);
    axum::serve(listener, router(state)).await
}
