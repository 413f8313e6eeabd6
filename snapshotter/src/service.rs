//! The snapshotter: containerd's snapshot operations over [`Metadata`], [`Layout`] and thaw's
//! store ([`Snapshotter`]), and the gRPC service containerd's proxy plugin calls, which only
//! converts messages and errors.
//!
//! A Prepare that carries `containerd.io/snapshot.ref` (the unpacker's "is this layer there
//! already?") over a parent whose layers are known looks the layer up in the store
//! ([`crate::chain::find_layer`]). When the store holds it, a committed remote snapshot is
//! recorded under the Prepare's key with that label and the answer is AlreadyExists: containerd
//! then finds it with a List filter on the label and the parent and neither downloads nor
//! unpacks the layer. Otherwise the Prepare is an ordinary one.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::{Duration, UNIX_EPOCH};

use thaw_core::store::Store;
use thaw_core::ChunkId;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

use crate::api::snapshots::{self as pb, snapshots_server};
use crate::api::types::Mount;
use crate::chain::{self, DIFF_ID_LABEL, SNAPSHOT_REF_LABEL};
use crate::filter::Filter;
use crate::layout::{disk_usage, Layout};
use crate::lazy::LazyMounts;
use crate::metadata::{Kind, Layers, Metadata, Snapshot};
use crate::{Result, SnapshotterError};

/// The label a remote snapshot carries: the manifest id of thaw's tree of its layer.
pub const TREE_LABEL: &str = "containerd.io/snapshot/thaw.tree";

/// Everything the snapshotter needs.
pub struct Snapshotter {
    layout: Layout,
    metadata: Mutex<Metadata>,
    store: Store,
    mounts: LazyMounts,
    index_options: thaw_indexer::IndexOptions,
}

impl std::fmt::Debug for Snapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshotter")
            .field("layout", &self.layout)
            .finish()
    }
}

/// Counts of what the snapshotter holds, for `thaw snapshotter` to log at start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Snapshots in the metadata.
    pub snapshots: usize,
    /// Of them, remote (lazy) layers.
    pub remote: usize,
}

impl Snapshotter {
    /// The snapshotter rooted at `layout`, reading layers from `store` and mounting them with
    /// `mounts`.
    pub fn open(layout: Layout, store: Store, mounts: LazyMounts) -> Result<Self> {
        let metadata = Metadata::open(&layout.metadata())?;
        Ok(Snapshotter {
            layout,
            metadata: Mutex::new(metadata),
            store,
            mounts,
            index_options: thaw_indexer::IndexOptions::default(),
        })
    }

    /// How many snapshots it holds.
    pub async fn counts(&self) -> Counts {
        let metadata = self.metadata.lock().await;
        Counts {
            snapshots: metadata.all().count(),
            remote: metadata.all().filter(|s| s.remote().is_some()).count(),
        }
    }

    /// A remote snapshot for the layer a Prepare names by chain id, when the store holds it.
    async fn remote_layer(
        &self,
        key: &str,
        parent: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Option<Snapshot>> {
        let Some(target) = labels.get(SNAPSHOT_REF_LABEL) else {
            return Ok(None);
        };
        let parent_layers = {
            let metadata = self.metadata.lock().await;
            if let Some(existing) = metadata.all().find(|s| {
                s.kind == Kind::Committed
                    && s.parent == parent
                    && s.labels.get(SNAPSHOT_REF_LABEL) == Some(target)
            }) {
                return Ok(Some(existing.clone()));
            }
            match parent {
                "" => Some(Vec::new()),
                p => metadata.get(p)?.layers.as_ref().map(|l| l.diff_ids.clone()),
            }
        };
        let Some(parent_layers) = parent_layers else {
            return Ok(None);
        };
        let diff_id = labels.get(DIFF_ID_LABEL).map(String::as_str);
        let Some(held) = chain::find_layer(&self.store, &parent_layers, target, diff_id).await?
        else {
            return Ok(None);
        };
        let mut labels = labels.clone();
        labels.insert(TREE_LABEL.into(), held.tree.to_hex());
        let layers = Layers {
            diff_ids: held.diff_ids,
            remote: Some(held.tree.to_hex()),
        };
        let snapshot = self.metadata.lock().await.create(
            Kind::Committed,
            key,
            parent,
            labels,
            Some(layers),
        )?;
        tracing::info!(key, layer = %target, tree = %held.tree, "remote layer: nothing to unpack");
        Ok(Some(snapshot))
    }

    /// Prepares an active snapshot (or a view, with `kind` [`Kind::View`]) and returns its
    /// mounts; AlreadyExists (naming the target) when the layer is a remote one thaw holds.
    pub async fn prepare(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>> {
        if kind == Kind::Active {
            if let Some(remote) = self.remote_layer(key, parent, &labels).await? {
                let target = remote.labels.get(SNAPSHOT_REF_LABEL).cloned();
                return Err(SnapshotterError::AlreadyExists(
                    target.unwrap_or(remote.key),
                ));
            }
        }
        let snapshot = {
            let mut metadata = self.metadata.lock().await;
            let layers = self.known_layers(&metadata, parent, &labels);
            let snapshot = metadata.create(kind, key, parent, labels, layers)?;
            if let Err(e) = self.layout.create_dirs(snapshot.id) {
                let _ = metadata.remove(key);
                return Err(e);
            }
            snapshot
        };
        self.mounts_of(&snapshot).await
    }

    /// The layers of a new ordinary snapshot, when containerd names its diff id and its
    /// parent's layers are known (so a remote layer can build on it).
    fn known_layers(
        &self,
        metadata: &Metadata,
        parent: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<Layers> {
        let diff_id = labels.get(DIFF_ID_LABEL)?;
        let mut diff_ids = match parent {
            "" => Vec::new(),
            p => metadata.get(p).ok()?.layers.as_ref()?.diff_ids.clone(),
        };
        diff_ids.push(diff_id.clone());
        let chain = chain::chain_id(&diff_ids);
        (labels.get(SNAPSHOT_REF_LABEL) == chain.as_ref()).then_some(Layers {
            diff_ids,
            remote: None,
        })
    }

    /// The mounts of active snapshot or view `key`.
    pub async fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let snapshot = self.metadata.lock().await.get(key)?.clone();
        self.mounts_of(&snapshot).await
    }

    async fn mounts_of(&self, snapshot: &Snapshot) -> Result<Vec<Mount>> {
        if snapshot.kind == Kind::Committed {
            return self.layout.mounts(snapshot, &[]);
        }
        let parents: Vec<Snapshot> = {
            let metadata = self.metadata.lock().await;
            match snapshot.parent.as_str() {
                "" => Vec::new(),
                p => metadata.chain(p)?.into_iter().cloned().collect(),
            }
        };
        let parents: Vec<&Snapshot> = parents.iter().collect();
        let lowers = self.layout.lowers(&parents);
        if let Some(remote) = parents.iter().find(|p| p.remote().is_some()) {
            self.mount_remote(remote).await?;
        }
        self.layout.mounts(snapshot, &lowers)
    }

    /// Mounts remote snapshot `remote` (its layers flattened) unless a daemon serves it already:
    /// the indexed image with exactly those layers when there is one (its trace prefetches),
    /// else the layers flattened into a tree of their own.
    async fn mount_remote(&self, remote: &Snapshot) -> Result<()> {
        let dir = self.layout.lazy_dir(remote.id);
        if self.mounts.is_mounted(&dir).await {
            return Ok(());
        }
        let diff_ids = remote
            .layers
            .as_ref()
            .map(|l| l.diff_ids.clone())
            .unwrap_or_default();
        let manifest: ChunkId = match chain::image_with_layers(&self.store, &diff_ids).await? {
            Some(image) => image,
            None => {
                let (store, options, layers) = (
                    self.store.clone(),
                    self.index_options.clone(),
                    diff_ids.clone(),
                );
                let runtime = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || {
                    thaw_indexer::image::flatten_stored_layers(&store, &runtime, &layers, &options)
                })
                .await
                .expect("flattening does not panic")?
                .id()
            }
        };
        self.mounts.ensure(&manifest, &dir).await
    }

    /// Commits active snapshot `key` as `name`.
    pub async fn commit(
        &self,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        self.metadata.lock().await.commit(name, key, labels)?;
        Ok(())
    }

    /// Removes `key` (refused while it has children), its directory and its lazy mount.
    pub async fn remove(&self, key: &str) -> Result<()> {
        let removed = self.metadata.lock().await.remove(key)?;
        if removed.remote().is_some() {
            self.mounts
                .release(&self.layout.lazy_dir(removed.id))
                .await?;
        }
        self.layout.remove_dirs(removed.id)
    }

    /// The record of `key`.
    pub async fn stat(&self, key: &str) -> Result<Snapshot> {
        Ok(self.metadata.lock().await.get(key)?.clone())
    }

    /// Changes the labels of `key` (see [`Metadata::update_labels`]).
    pub async fn update(
        &self,
        key: &str,
        labels: BTreeMap<String, String>,
        paths: &[String],
    ) -> Result<Snapshot> {
        self.metadata.lock().await.update_labels(key, labels, paths)
    }

    /// The snapshots passing `filters`.
    pub async fn list(&self, filters: &[String]) -> Result<Vec<Snapshot>> {
        let filter = Filter::parse(filters)?;
        let metadata = self.metadata.lock().await;
        Ok(metadata
            .all()
            .filter(|s| filter.matches(s))
            .cloned()
            .collect())
    }

    /// Disk bytes and inodes of `key`'s own files (a remote layer's live in the cache: 0).
    pub async fn usage(&self, key: &str) -> Result<(i64, i64)> {
        let snapshot = self.stat(key).await?;
        if snapshot.remote().is_some() {
            return Ok((0, 0));
        }
        let dir = self.layout.fs_dir(snapshot.id);
        Ok(tokio::task::spawn_blocking(move || disk_usage(&dir))
            .await
            .expect("du does not panic"))
    }

    /// Removes directories and lazy mounts no snapshot owns (left by a crash between a
    /// metadata change and the files); returns how many.
    pub async fn cleanup(&self) -> Result<usize> {
        let owned: std::collections::HashSet<u64> =
            self.metadata.lock().await.all().map(|s| s.id).collect();
        let (dirs, lazy) = self.layout.unowned(&owned);
        for id in &dirs {
            self.layout.remove_dirs(*id)?;
        }
        for id in &lazy {
            self.mounts.release(&self.layout.lazy_dir(*id)).await?;
        }
        let removed = dirs.len() + lazy.len();
        Ok(removed)
    }
}

fn timestamp(ns: u128) -> prost_types::Timestamp {
    let d = Duration::from_nanos(ns.min(u64::MAX as u128) as u64);
    let t = UNIX_EPOCH + d;
    prost_types::Timestamp::from(t)
}

/// A record as containerd's Info.
pub fn info(snapshot: &Snapshot) -> pb::Info {
    pb::Info {
        name: snapshot.key.clone(),
        parent: snapshot.parent.clone(),
        kind: match snapshot.kind {
            Kind::View => pb::Kind::View,
            Kind::Active => pb::Kind::Active,
            Kind::Committed => pb::Kind::Committed,
        } as i32,
        created_at: Some(timestamp(snapshot.created_ns)),
        updated_at: Some(timestamp(snapshot.updated_ns)),
        labels: snapshot.labels.clone().into_iter().collect(),
    }
}

fn labels(map: std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    map.into_iter().collect()
}

/// The gRPC face of a [`Snapshotter`].
#[derive(Debug)]
pub struct Service(pub std::sync::Arc<Snapshotter>);

type ListStream = Pin<
    Box<dyn futures::Stream<Item = std::result::Result<pb::ListSnapshotsResponse, Status>> + Send>,
>;

/// Infos sent per List message.
const LIST_BATCH: usize = 100;

#[tonic::async_trait]
impl snapshots_server::Snapshots for Service {
    async fn prepare(
        &self,
        request: Request<pb::PrepareSnapshotRequest>,
    ) -> std::result::Result<Response<pb::PrepareSnapshotResponse>, Status> {
        let r = request.into_inner();
        let mounts = self
            .0
            .prepare(Kind::Active, &r.key, &r.parent, labels(r.labels))
            .await?;
        Ok(Response::new(pb::PrepareSnapshotResponse { mounts }))
    }

    async fn view(
        &self,
        request: Request<pb::ViewSnapshotRequest>,
    ) -> std::result::Result<Response<pb::ViewSnapshotResponse>, Status> {
        let r = request.into_inner();
        let mounts = self
            .0
            .prepare(Kind::View, &r.key, &r.parent, labels(r.labels))
            .await?;
        Ok(Response::new(pb::ViewSnapshotResponse { mounts }))
    }

    async fn mounts(
        &self,
        request: Request<pb::MountsRequest>,
    ) -> std::result::Result<Response<pb::MountsResponse>, Status> {
        let mounts = self.0.mounts(&request.into_inner().key).await?;
        Ok(Response::new(pb::MountsResponse { mounts }))
    }

    async fn commit(
        &self,
        request: Request<pb::CommitSnapshotRequest>,
    ) -> std::result::Result<Response<()>, Status> {
        let r = request.into_inner();
        self.0.commit(&r.name, &r.key, labels(r.labels)).await?;
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveSnapshotRequest>,
    ) -> std::result::Result<Response<()>, Status> {
        self.0.remove(&request.into_inner().key).await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        request: Request<pb::StatSnapshotRequest>,
    ) -> std::result::Result<Response<pb::StatSnapshotResponse>, Status> {
        let snapshot = self.0.stat(&request.into_inner().key).await?;
        Ok(Response::new(pb::StatSnapshotResponse {
            info: Some(info(&snapshot)),
        }))
    }

    async fn update(
        &self,
        request: Request<pb::UpdateSnapshotRequest>,
    ) -> std::result::Result<Response<pb::UpdateSnapshotResponse>, Status> {
        let r = request.into_inner();
        let given = r
            .info
            .ok_or_else(|| Status::invalid_argument("an update needs the snapshot's info"))?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let updated = self
            .0
            .update(&given.name, labels(given.labels), &paths)
            .await?;
        Ok(Response::new(pb::UpdateSnapshotResponse {
            info: Some(info(&updated)),
        }))
    }

    type ListStream = ListStream;

    async fn list(
        &self,
        request: Request<pb::ListSnapshotsRequest>,
    ) -> std::result::Result<Response<Self::ListStream>, Status> {
        let found = self.0.list(&request.into_inner().filters).await?;
        let batches: Vec<std::result::Result<pb::ListSnapshotsResponse, Status>> = found
            .chunks(LIST_BATCH)
            .map(|batch| {
                Ok(pb::ListSnapshotsResponse {
                    info: batch.iter().map(info).collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(batches))))
    }

    async fn usage(
        &self,
        request: Request<pb::UsageRequest>,
    ) -> std::result::Result<Response<pb::UsageResponse>, Status> {
        let (size, inodes) = self.0.usage(&request.into_inner().key).await?;
        Ok(Response::new(pb::UsageResponse { size, inodes }))
    }

    async fn cleanup(
        &self,
        _request: Request<pb::CleanupRequest>,
    ) -> std::result::Result<Response<()>, Status> {
        let removed = self.0.cleanup().await?;
        tracing::info!(removed, "cleanup");
        Ok(Response::new(()))
    }
}
