//! `thaw containerd pull`: an image into containerd without its layers, what `ctr-remote image
//! rpull` does for stargz. The manifest and config go into containerd's content store (with the
//! garbage-collection labels containerd's own pull sets), the image record is created or
//! updated, and each layer is prepared through containerd's snapshot service with the
//! remote-snapshot labels, so the thaw snapshotter answers "already exists" for it and
//! containerd downloads and unpacks nothing. All of it runs under a lease, so containerd's
//! garbage collector cannot take a half-made image. `ctr run --snapshotter thaw IMAGE` then finds
//! the image unpacked.

use std::collections::HashMap;

use thaw_indexer::image::source::{ImageMetadata, RawBlob};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request};

use crate::api::containerd::services::content::v1 as content;
use crate::api::containerd::services::images::v1 as images;
use crate::api::containerd::services::leases::v1 as leases;
use crate::api::snapshots;
use crate::api::types::Descriptor;
use crate::chain::{chain_id, DIFF_ID_LABEL, SNAPSHOT_REF_LABEL};
use crate::{Result, SnapshotterError};

/// What a pull did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullReport {
    /// The image's name in containerd.
    pub name: String,
    /// The manifest's digest.
    pub digest: String,
    /// Layers the snapshotter holds (nothing fetched).
    pub layers: usize,
}

/// Who to talk to.
#[derive(Clone, Debug)]
pub struct PullTarget {
    /// containerd's namespace (`default`, `k8s.io`).
    pub namespace: String,
    /// The snapshotter's name in containerd's `proxy_plugins`.
    pub snapshotter: String,
}

fn failed(what: &str) -> impl Fn(tonic::Status) -> SnapshotterError + '_ {
    move |status| SnapshotterError::Containerd {
        what: what.to_string(),
        status: Box::new(status),
    }
}

/// Requests tagged with the namespace (and the lease, once there is one).
struct Calls {
    namespace: MetadataValue<tonic::metadata::Ascii>,
    lease: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl Calls {
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let headers = request.metadata_mut();
        headers.insert("containerd-namespace", self.namespace.clone());
        if let Some(lease) = &self.lease {
            headers.insert("containerd-lease", lease.clone());
        }
        request
    }
}

fn ascii(what: &str, value: &str) -> Result<MetadataValue<tonic::metadata::Ascii>> {
    value
        .parse()
        .map_err(|_| SnapshotterError::InvalidArgument(format!("{what} {value:?} is not ASCII")))
}

/// Writes `blob` into containerd's content store with `labels` (set on it when it is there
/// already).
async fn put_blob(
    channel: &Channel,
    calls: &Calls,
    blob: &RawBlob,
    labels: HashMap<String, String>,
) -> Result<()> {
    let mut client = content::content_client::ContentClient::new(channel.clone());
    let write = content::WriteContentRequest {
        action: content::WriteAction::Commit as i32,
        r#ref: format!("thaw-pull-{}", blob.digest),
        total: blob.bytes.len() as i64,
        expected: blob.digest.clone(),
        offset: 0,
        data: blob.bytes.clone(),
        labels: labels.clone(),
    };
    let outcome = async {
        let mut answers = client
            .write(calls.request(futures::stream::iter([write])))
            .await?
            .into_inner();
        while answers.message().await?.is_some() {}
        Ok::<_, tonic::Status>(())
    }
    .await;
    match outcome {
        Ok(()) => Ok(()),
        Err(status) if status.code() == Code::AlreadyExists => {
            let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
            let update = content::UpdateRequest {
                info: Some(content::Info {
                    digest: blob.digest.clone(),
                    labels,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
            };
            client
                .update(calls.request(update))
                .await
                .map_err(failed("labelling content"))?;
            Ok(())
        }
        Err(status) => Err(failed(&format!("writing {}", blob.digest))(status)),
    }
}

/// Creates the image record `name` pointing at `manifest`, or points an existing one there.
async fn put_image(channel: &Channel, calls: &Calls, name: &str, manifest: &RawBlob) -> Result<()> {
    let mut client = images::images_client::ImagesClient::new(channel.clone());
    let image = images::Image {
        name: name.to_string(),
        target: Some(Descriptor {
            media_type: manifest.media_type.clone(),
            digest: manifest.digest.clone(),
            size: manifest.bytes.len() as i64,
            annotations: HashMap::new(),
        }),
        ..Default::default()
    };
    let created = client
        .create(calls.request(images::CreateImageRequest {
            image: Some(image.clone()),
            source_date_epoch: None,
        }))
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(status) if status.code() == Code::AlreadyExists => {
            client
                .update(calls.request(images::UpdateImageRequest {
                    image: Some(image),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["target".into()],
                    }),
                    source_date_epoch: None,
                }))
                .await
                .map_err(failed("updating the image"))?;
            Ok(())
        }
        Err(status) => Err(failed("creating the image")(status)),
    }
}

/// Pulls `image` into containerd over `channel` (see the module documentation). A layer the
/// snapshotter does not hold is an error naming it (index the image into thaw's store first).
pub async fn pull(
    channel: Channel,
    target: &PullTarget,
    image: &ImageMetadata,
) -> Result<PullReport> {
    let mut calls = Calls {
        namespace: ascii("namespace", &target.namespace)?,
        lease: None,
    };
    let lease_id = format!(
        "thaw-pull-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let mut lease_client = leases::leases_client::LeasesClient::new(channel.clone());
    let expire = rfc3339_in(3600);
    lease_client
        .create(calls.request(leases::CreateRequest {
            id: lease_id.clone(),
            labels: HashMap::from([("containerd.io/gc.expire".to_string(), expire)]),
        }))
        .await
        .map_err(failed("creating a lease"))?;
    calls.lease = Some(ascii("lease", &lease_id)?);
    let result = pull_leased(&channel, &calls, target, image).await;
    calls.lease = None;
    if let Err(e) = lease_client
        .delete(calls.request(leases::DeleteRequest {
            id: lease_id,
            sync: false,
        }))
        .await
    {
        tracing::warn!(error = %e, "could not delete the pull's lease (it expires in an hour)");
    }
    result
}

async fn pull_leased(
    channel: &Channel,
    calls: &Calls,
    target: &PullTarget,
    image: &ImageMetadata,
) -> Result<PullReport> {
    let diff_ids: Vec<String> = image.layers.iter().map(|l| l.diff_id.clone()).collect();
    let mut snapshots = snapshots::snapshots_client::SnapshotsClient::new(channel.clone());
    let mut parent = String::new();
    for (i, layer) in image.layers.iter().enumerate() {
        let chain = chain_id(&diff_ids[..=i]).expect("at least one layer");
        let mut labels = HashMap::from([
            (SNAPSHOT_REF_LABEL.to_string(), chain.clone()),
            (DIFF_ID_LABEL.to_string(), layer.diff_id.clone()),
            (
                "containerd.io/snapshot/cri.image-ref".to_string(),
                image.name.clone(),
            ),
            (
                "containerd.io/snapshot/cri.manifest-digest".to_string(),
                image.manifest.digest.clone(),
            ),
        ]);
        if let Some(digest) = &layer.digest {
            labels.insert(
                "containerd.io/snapshot/cri.layer-digest".to_string(),
                digest.clone(),
            );
        }
        let key = format!("thaw-pull-{}-{i} {chain}", std::process::id());
        let prepared = snapshots
            .prepare(calls.request(snapshots::PrepareSnapshotRequest {
                snapshotter: target.snapshotter.clone(),
                key: key.clone(),
                parent: parent.clone(),
                labels,
            }))
            .await;
        match prepared {
            Err(status) if status.code() == Code::AlreadyExists => {}
            Err(status) => return Err(failed(&format!("preparing layer {i} ({chain})"))(status)),
            Ok(_) => {
                let _ = snapshots
                    .remove(calls.request(snapshots::RemoveSnapshotRequest {
                        snapshotter: target.snapshotter.clone(),
                        key,
                    }))
                    .await;
                return Err(SnapshotterError::FailedPrecondition(format!(
                    "{}: layer {i} ({}, diff id {}) is not in thaw's store: index the image \
                     first (thaw index image {})",
                    image.name, layer.name, layer.diff_id, image.name
                )));
            }
        }
        parent = chain;
    }
    // The labels containerd's own pull sets, so its garbage collector keeps what the image
    // reaches: the manifest keeps its config, the config keeps the top snapshot.
    let config_labels = HashMap::from([(
        format!("containerd.io/gc.ref.snapshot.{}", target.snapshotter),
        parent,
    )]);
    put_blob(channel, calls, &image.config, config_labels).await?;
    let manifest_labels = HashMap::from([(
        "containerd.io/gc.ref.content.config".to_string(),
        image.config.digest.clone(),
    )]);
    put_blob(channel, calls, &image.manifest, manifest_labels).await?;
    put_image(channel, calls, &image.name, &image.manifest).await?;
    Ok(PullReport {
        name: image.name.clone(),
        digest: image.manifest.digest.clone(),
        layers: image.layers.len(),
    })
}

/// An RFC 3339 UTC time `seconds` from now (containerd's `gc.expire` label).
fn rfc3339_in(seconds: u64) -> String {
    let at = std::time::SystemTime::now() + std::time::Duration::from_secs(seconds);
    humantime::format_rfc3339_seconds(at).to_string()
}
