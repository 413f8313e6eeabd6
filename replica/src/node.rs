//! What a replica needs from the node it starts on: the configuration, the store, and a way to
//! run this thaw program again (for the background `thaw mount` daemons of its image and its
//! snapshot images).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use thaw_client::Config;
use thaw_core::store::Store;
use thaw_core::tier::TieredStore;
use thaw_fs::daemon::DaemonMount;

use crate::ReplicaError;

/// A maker of commands that run this thaw program with this node's configuration.
pub type ThawCommand = Arc<dyn Fn() -> std::process::Command + Send + Sync>;

/// This node: its configuration, its store, and the thaw program.
#[derive(Clone)]
pub struct Node {
    config: Config,
    store: Store,
    thaw: ThawCommand,
}

impl Node {
    /// The node `config` describes, with `store` opened from it and `thaw` running the program.
    pub fn new(config: Config, store: Store, thaw: ThawCommand) -> Self {
        Node {
            config,
            store,
            thaw,
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The read tiers (memory, disk cache filled on fetch, peers, store).
    pub async fn tiers(&self) -> Result<TieredStore, ReplicaError> {
        Ok(thaw_client::connect::tiers(&self.config, &self.store, true).await?)
    }

    /// Where containers' directories go.
    pub fn containers_dir(&self) -> PathBuf {
        self.config.runtime_dir().join("containers")
    }

    /// Mounts `tag` at `dir` in a background `thaw mount --daemon` with more `thaw mount`
    /// options; unmounted when the handle drops.
    pub fn mount(
        &self,
        tag: &str,
        dir: &Path,
        options: &[&str],
    ) -> Result<DaemonMount, ReplicaError> {
        Ok(DaemonMount::start(
            (self.thaw)(),
            &self.config.runtime_dir(),
            tag,
            dir,
            options,
        )?)
    }
}
