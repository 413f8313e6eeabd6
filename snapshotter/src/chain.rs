//! Which layers thaw's store holds, found the way containerd names them. containerd asks for a
//! layer snapshot by its chain id (`containerd.io/snapshot.ref`): the OCI chain id of the
//! layer's diff id over its parent's chain, `sha256(parent_chain + " " + diff_id)`, the bottom
//! layer's being its diff id. A chain id cannot be turned back into a diff id, so the candidates
//! come from what the store knows: the `containerd.io/snapshot/diff-id` label when containerd
//! sends it (containerd 2), the chain id itself for a bottom layer, and otherwise the layer
//! that follows the parent's layers in every indexed image using the parent's top layer (the
//! indexer's `layer-users/` markers). A candidate is taken only when its chain id is the one
//! asked for and the store holds the layer's tree.

use sha2::{Digest, Sha256};
use thaw_core::manifest::Manifest;
use thaw_core::related;
use thaw_core::store::Store;
use thaw_core::ChunkId;

use crate::Result;

/// The label containerd 2's unpacker puts the layer's diff id in.
pub const DIFF_ID_LABEL: &str = "containerd.io/snapshot/diff-id";
/// The label naming the chain id a Prepare may be answered with (remote snapshots).
pub const SNAPSHOT_REF_LABEL: &str = "containerd.io/snapshot.ref";

/// The chain id of `diff_ids` (bottom first), `None` for no layers.
pub fn chain_id(diff_ids: &[String]) -> Option<String> {
    let mut chain: Option<String> = None;
    for diff_id in diff_ids {
        chain = Some(match chain {
            None => diff_id.clone(),
            Some(parent) => {
                let digest = Sha256::digest(format!("{parent} {diff_id}").as_bytes());
                format!("sha256:{}", hex::encode(digest))
            }
        });
    }
    chain
}

/// A layer of the store that a snapshot can stand for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldLayer {
    /// The diff ids of the chain, this layer last.
    pub diff_ids: Vec<String>,
    /// The layer's own tree.
    pub tree: ChunkId,
}

fn hex_of(diff_id: &str) -> Option<&str> {
    let hex = diff_id.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// The indexed images (manifests listing their layers) that use layer `diff_id`.
async fn images_using(store: &Store, diff_id: &str) -> Result<Vec<(ChunkId, Manifest)>> {
    let Some(hex) = hex_of(diff_id) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (key, _) in store.list(&format!("layer-users/sha256/{hex}")).await? {
        let Some(Ok(id)) = key.rsplit('/').next().map(str::parse::<ChunkId>) else {
            continue;
        };
        match store.get_manifest(&id).await {
            Ok(manifest) => out.push((id, manifest)),
            Err(e) => tracing::debug!(image = %id, error = %e, "a layer user is unreadable"),
        }
    }
    out.sort_by_key(|(id, _)| id.to_hex());
    Ok(out)
}

/// The tree of layer `diff_id` when the store holds it whole.
async fn layer_tree(store: &Store, diff_id: &str) -> Option<ChunkId> {
    let hex = hex_of(diff_id)?;
    let pointer = store.get(&related::layer_pointer_key(hex)).await.ok()?;
    let id = related::parse_layer_pointer(&pointer)?;
    let manifest = store.get_manifest(&id).await.ok()?;
    store.get_chunk_map(&manifest).await.ok()?;
    Some(id)
}

/// The layer over `parent` (its diff ids, bottom first) whose chain id is `target`, when the
/// store holds it; `diff_id` is the layer's diff id when containerd said it.
pub async fn find_layer(
    store: &Store,
    parent: &[String],
    target: &str,
    diff_id: Option<&str>,
) -> Result<Option<HeldLayer>> {
    let mut candidates: Vec<String> = Vec::new();
    if let Some(d) = diff_id {
        candidates.push(d.to_string());
    } else if parent.is_empty() {
        candidates.push(target.to_string());
    } else if let Some(top) = parent.last() {
        for (_, image) in images_using(store, top).await? {
            let layers = related::image_layers(&image);
            if layers.len() > parent.len() && layers.starts_with(parent) {
                let next = layers[parent.len()].clone();
                if !candidates.contains(&next) {
                    candidates.push(next);
                }
            }
        }
    }
    for candidate in candidates {
        let mut diff_ids = parent.to_vec();
        diff_ids.push(candidate.clone());
        if chain_id(&diff_ids).as_deref() != Some(target) {
            continue;
        }
        if let Some(tree) = layer_tree(store, &candidate).await {
            return Ok(Some(HeldLayer { diff_ids, tree }));
        }
    }
    Ok(None)
}

/// An indexed image whose layers are exactly `diff_ids`: its manifest is the one to mount (its
/// access trace makes the mount prefetch what the image's last start read).
pub async fn image_with_layers(store: &Store, diff_ids: &[String]) -> Result<Option<ChunkId>> {
    let Some(top) = diff_ids.last() else {
        return Ok(None);
    };
    Ok(images_using(store, top)
        .await?
        .into_iter()
        .find(|(_, image)| related::image_layers(image) == diff_ids)
        .map(|(id, _)| id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_are_the_oci_ones() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        assert_eq!(chain_id(&[]), None);
        assert_eq!(chain_id(std::slice::from_ref(&a)), Some(a.clone()));
        // ChainID(L0|L1) = sha256(ChainID(L0) + " " + DiffID(L1)), from the OCI image spec.
        let expected = hex::encode(Sha256::digest(format!("{a} {b}").as_bytes()));
        assert_eq!(chain_id(&[a, b]), Some(format!("sha256:{expected}")));
    }
}
