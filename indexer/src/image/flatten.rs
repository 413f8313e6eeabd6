//! Layer flattening as container runtimes do it: each layer's tree is laid over the ones below;
//! `.wh.NAME` deletes NAME from the lower layers, `.wh..wh..opq` empties its directory of lower
//! layers' entries, a later entry replaces an earlier one (a directory over a directory merges),
//! hard links may point into lower layers, and metadata and xattrs come from the top-most entry.

use std::collections::{HashMap, HashSet};

use thaw_core::chunk_map::ChunkMap;
use thaw_core::chunker::Chunker;
use thaw_core::manifest::{ExtentSpec, FileKind, Inode, Manifest, ManifestBuilder, NodeMeta};
use thaw_core::pack::ChunkLocation;
use thaw_core::ChunkId;

use super::layer::{IMPLICIT_ANNOTATION, ROOT_ANNOTATION};
use crate::IndexError;

/// Whiteout prefix.
const WHITEOUT: &[u8] = b".wh.";
/// Opaque-directory marker.
const OPAQUE: &[u8] = b".wh..wh..opq";

/// One layer as stored: its tree, where its chunks are, and its links into lower layers.
pub struct StoredLayer {
    /// How errors name it.
    pub name: String,
    /// The layer's tree (whiteouts as entries).
    pub manifest: Manifest,
    /// Its chunk locations.
    pub map: ChunkMap,
    /// Hard links to files of lower layers: (path, target).
    pub external_links: Vec<(Vec<u8>, Vec<u8>)>,
}

fn layer_error(layer: &StoredLayer, entry: &[u8], reason: impl Into<String>) -> IndexError {
    IndexError::Layer {
        layer: layer.name.clone(),
        entry: String::from_utf8_lossy(entry).into_owned(),
        reason: reason.into(),
    }
}

/// The [`NodeMeta`] of one inode of `manifest` (content as extents of its chunks).
pub fn node_meta(manifest: &Manifest, inode: &Inode) -> Result<NodeMeta, IndexError> {
    let extents = manifest
        .extents(inode)?
        .into_iter()
        .map(|e| {
            let chunk = manifest.chunk(e.chunk)?;
            Ok(ExtentSpec {
                file_offset: e.file_offset,
                chunk: chunk.id,
                chunk_raw_len: chunk.raw_len,
                chunk_offset: e.chunk_offset,
                len: e.len,
            })
        })
        .collect::<Result<Vec<_>, IndexError>>()?;
    Ok(NodeMeta {
        kind: inode.kind,
        mode: inode.mode,
        uid: inode.uid,
        gid: inode.gid,
        mtime_sec: inode.mtime_sec,
        mtime_nsec: inode.mtime_nsec,
        size: if inode.kind == FileKind::Regular {
            inode.size
        } else {
            0
        },
        rdev: inode.rdev,
        symlink_target: manifest.symlink_target(inode)?.to_vec(),
        xattrs: manifest
            .xattrs(inode)?
            .into_iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect(),
        extents,
    })
}

fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&path[..0], path),
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

/// Lays `layers` (bottom first) over each other; returns the merged tree and the location of
/// every chunk it references.
pub fn flatten(
    chunker: Chunker,
    layers: &[StoredLayer],
) -> Result<(ManifestBuilder, HashMap<ChunkId, ChunkLocation>), IndexError> {
    let mut merged = ManifestBuilder::new(chunker, NodeMeta::directory(0o755));
    let mut locations = HashMap::new();
    for layer in layers {
        for (entry, location) in layer.manifest.chunks()?.iter().zip(&layer.map.locations) {
            locations.insert(entry.id, *location);
        }
        let implicit: HashSet<Vec<u8>> = layer
            .manifest
            .annotations()
            .get(IMPLICIT_ANNOTATION)
            .and_then(|json| serde_json::from_str::<Vec<String>>(json).ok())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|h| hex::decode(h).ok())
            .collect();
        let mut added: HashSet<Vec<u8>> = HashSet::new();
        let mut first_name_of: HashMap<u32, Vec<u8>> = HashMap::new();
        for (path, inode) in layer.manifest.walk()? {
            if path.is_empty() {
                if layer.manifest.annotations().contains_key(ROOT_ANNOTATION) {
                    merged.set_root(node_meta(&layer.manifest, &inode)?);
                }
                continue;
            }
            let (dir, name) = split_parent(&path);
            if name == OPAQUE {
                for child in merged.children(dir) {
                    let child_path = join(dir, &child);
                    if !added.contains(&child_path) {
                        merged.remove(&child_path);
                    }
                }
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT) {
                let hidden_path = join(dir, hidden);
                if !added.contains(&hidden_path) {
                    merged.remove(&hidden_path);
                }
                continue;
            }
            if let Some(parent) = merged.get(dir) {
                if parent.kind != FileKind::Directory {
                    return Err(layer_error(
                        layer,
                        &path,
                        "parent is not a directory in the image",
                    ));
                }
            }
            if implicit.contains(&path)
                && merged
                    .get(&path)
                    .is_some_and(|m| m.kind == FileKind::Directory)
            {
                // Only a parent of this layer's entries: the lower directory stays as it was.
                continue;
            }
            added.insert(path.clone());
            if inode.kind != FileKind::Directory && inode.nlink > 1 {
                if let Some(first) = first_name_of.get(&inode.ino) {
                    merged
                        .link(&path, first)
                        .map_err(|e| layer_error(layer, &path, e.to_string()))?;
                    continue;
                }
                first_name_of.insert(inode.ino, path.clone());
            }
            merged
                .insert(&path, node_meta(&layer.manifest, &inode)?)
                .map_err(|e| layer_error(layer, &path, e.to_string()))?;
        }
        for (path, target) in &layer.external_links {
            match merged.get(target) {
                Some(meta) if meta.kind != FileKind::Directory => {}
                _ => {
                    return Err(layer_error(
                        layer,
                        path,
                        format!(
                            "hard link to {}, which no lower layer holds as a file",
                            String::from_utf8_lossy(target)
                        ),
                    ))
                }
            }
            merged
                .link(path, target)
                .map_err(|e| layer_error(layer, path, e.to_string()))?;
        }
    }
    Ok((merged, locations))
}
