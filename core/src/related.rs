//! Which manifests are related to a manifest: the earlier versions of its tag
//! ([`Store::tag_history`]) and the images that share its layers.
//!
//! An image manifest lists the diff ids of its layers in the [`IMAGE_LAYERS_ANNOTATION`], and the
//! indexer leaves one empty marker object per (layer, image) under `layer-users/sha256/<diff
//! hex>/<manifest hex>`, so the images using a layer are one listing away. Both are hints for
//! prefetch (a related manifest's access trace names chunks this one probably reads); nothing
//! here is trusted for content.

use std::collections::HashMap;

use bytes::Bytes;

use crate::manifest::Manifest;
use crate::store::Store;
use crate::{ChunkId, Result};

/// Annotation of an image manifest: the diff ids of its layers, bottom first (JSON array of
/// `"sha256:<hex>"`).
pub const IMAGE_LAYERS_ANNOTATION: &str = "org.thaw.image.layers";

/// Layers looked up per manifest at most (an image with more is matched on its first ones).
const LAYERS_LOOKED_UP: usize = 64;

/// The layer diff ids `manifest` lists, bottom first (empty for a tree or model manifest, or an
/// image indexed before images recorded them).
pub fn image_layers(manifest: &Manifest) -> Vec<String> {
    manifest
        .annotations()
        .get(IMAGE_LAYERS_ANNOTATION)
        .and_then(|json| serde_json::from_str::<Vec<String>>(json).ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|diff_id| layer_hex(diff_id).is_some())
        .collect()
}

/// The hex part of a `sha256:<64 hex>` diff id.
fn layer_hex(diff_id: &str) -> Option<&str> {
    let hex = diff_id.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// Store key of the pointer to layer `hex`'s own tree (`layers/sha256/<hex>`).
pub fn layer_pointer_key(hex: &str) -> String {
    format!("layers/sha256/{hex}")
}

/// The layer tree a `layers/sha256/<hex>` pointer names; `None` when its bytes are not a
/// manifest id (the layer is indexed again when an image needs it).
pub fn parse_layer_pointer(bytes: &[u8]) -> Option<ChunkId> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// Store folder of the markers of the images using layer `diff_id`.
fn users_dir(hex: &str) -> String {
    format!("layer-users/sha256/{hex}")
}

/// Leaves a marker for every layer of image `manifest`, so images sharing a layer find it.
pub async fn record_layer_users(store: &Store, manifest: &Manifest) -> Result<()> {
    let id = manifest.id().to_hex();
    for diff_id in image_layers(manifest) {
        let hex = layer_hex(&diff_id).expect("image_layers checked it");
        store
            .put(&format!("{}/{id}", users_dir(hex)), Bytes::new())
            .await?;
    }
    Ok(())
}

/// Other images sharing layers with `manifest`, with how many they share, most first (ties by
/// id, so the order is stable).
pub async fn sharing_layers(store: &Store, manifest: &Manifest) -> Result<Vec<(ChunkId, usize)>> {
    let own = manifest.id();
    let mut shared: HashMap<ChunkId, usize> = HashMap::new();
    for diff_id in image_layers(manifest).iter().take(LAYERS_LOOKED_UP) {
        let hex = layer_hex(diff_id).expect("image_layers checked it");
        for (key, _) in store.list(&users_dir(hex)).await? {
            let Some(Ok(user)) = key.rsplit('/').next().map(str::parse::<ChunkId>) else {
                continue;
            };
            if user != own {
                *shared.entry(user).or_default() += 1;
            }
        }
    }
    let mut out: Vec<(ChunkId, usize)> = shared.into_iter().collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.to_hex().cmp(&b.0.to_hex())));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::Chunker;
    use crate::manifest::{ManifestBuilder, NodeMeta};
    use crate::store::StoreConfig;

    fn image(layers: &[&str], marker: &[u8]) -> Manifest {
        let mut builder = ManifestBuilder::new(Chunker::default(), NodeMeta::directory(0o755));
        builder.annotate(
            IMAGE_LAYERS_ANNOTATION,
            serde_json::to_string(layers).unwrap(),
        );
        builder.annotate("test.marker", hex::encode(marker));
        let (id, bytes) = builder.finish().unwrap();
        Manifest::open_verified(bytes, &id).unwrap()
    }

    #[tokio::test]
    async fn images_find_each_other_by_shared_layers_most_shared_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::local(dir.path())).unwrap();
        let layer = |n: u8| format!("sha256:{}", hex::encode([n; 32]));
        let (base, torch, app1, app2) = (layer(1), layer(2), layer(3), layer(4));
        let v1 = image(&[&base, &torch, &app1], b"v1");
        let v2 = image(&[&base, &torch, &app2], b"v2");
        let other = image(&[&base, &layer(9)], b"other");
        for m in [&v1, &v2, &other] {
            record_layer_users(&store, m).await.unwrap();
        }
        let found = sharing_layers(&store, &v2).await.unwrap();
        assert_eq!(found, vec![(v1.id(), 2), (other.id(), 1)]);
        assert_eq!(image_layers(&v2), vec![base, torch, app2]);
        let tree = image(&[], b"tree");
        assert!(sharing_layers(&store, &tree).await.unwrap().is_empty());
        let junk = image(&["sha256:xyz", "md5:00"], b"junk");
        assert!(image_layers(&junk).is_empty(), "malformed ids are ignored");
    }
}
