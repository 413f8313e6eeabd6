//! One listing of the whole store, each object sorted into its kind by its key
//! (docs/format.md's layout). Every maintenance command starts from it: nothing else lists.

use std::collections::{BTreeMap, HashMap};

use thaw_core::store::{ListedObject, Store};
use thaw_core::{ChunkId, Result};

/// An object of a kind that belongs to one manifest (its chunk map, its trace objects, a layer
/// user marker), with the manifest it belongs to.
#[derive(Clone, Debug)]
pub struct Owned {
    /// The manifest the object belongs to.
    pub owner: ChunkId,
    /// The object.
    pub object: ListedObject,
}

/// Every object of the store, by kind.
#[derive(Debug, Default)]
pub struct Inventory {
    /// `tags/<name>`, by name.
    pub tags: BTreeMap<String, ListedObject>,
    /// `manifests/<id>`.
    pub manifests: HashMap<ChunkId, ListedObject>,
    /// `maps/<manifest id>`.
    pub maps: HashMap<ChunkId, ListedObject>,
    /// `packs/<id>.pack`.
    pub packs: HashMap<ChunkId, ListedObject>,
    /// `packs/<id>.idx`.
    pub indexes: HashMap<ChunkId, ListedObject>,
    /// `trace-runs/<manifest>[.<profile>]/*` and the older `traces/<manifest>[.<profile>]`.
    pub traces: Vec<Owned>,
    /// `layers/sha256/<diff hex>`, by diff hex.
    pub layers: HashMap<String, ListedObject>,
    /// `layer-users/sha256/<diff hex>/<image manifest>`: owned by the image.
    pub layer_users: Vec<Owned>,
    /// `locks/*`.
    pub locks: Vec<ListedObject>,
    /// `gc/freed/*`: the freed-chunk logs caches follow.
    pub freed_logs: Vec<ListedObject>,
    /// Keys thaw does not know (left alone by every command).
    pub other: Vec<ListedObject>,
}

impl Inventory {
    /// Lists `store` once and sorts every object.
    pub async fn take(store: &Store) -> Result<Inventory> {
        let mut inventory = Inventory::default();
        for object in store.list_objects("").await? {
            inventory.add(object);
        }
        Ok(inventory)
    }

    fn add(&mut self, object: ListedObject) {
        let key = object.key.clone();
        let (top, rest) = key.split_once('/').unwrap_or((key.as_str(), ""));
        let id = |text: &str| text.parse::<ChunkId>().ok();
        let placed = match top {
            "tags" if !rest.is_empty() => {
                self.tags.insert(rest.to_string(), object.clone());
                true
            }
            "manifests" => id(rest)
                .map(|m| self.manifests.insert(m, object.clone()))
                .is_some(),
            "maps" => id(rest)
                .map(|m| self.maps.insert(m, object.clone()))
                .is_some(),
            "packs" => match rest.rsplit_once('.') {
                Some((hex, "pack")) => id(hex)
                    .map(|p| self.packs.insert(p, object.clone()))
                    .is_some(),
                Some((hex, "idx")) => id(hex)
                    .map(|p| self.indexes.insert(p, object.clone()))
                    .is_some(),
                _ => false,
            },
            "trace-runs" | "traces" => {
                // `<manifest hex>[.<profile>]`, then (trace-runs) the object's own name.
                let folder = rest.split('/').next().unwrap_or_default();
                let hex = folder.split('.').next().unwrap_or_default();
                id(hex)
                    .map(|owner| {
                        self.traces.push(Owned {
                            owner,
                            object: object.clone(),
                        })
                    })
                    .is_some()
            }
            "layers" => match rest.strip_prefix("sha256/") {
                Some(hex) if is_digest_hex(hex) => {
                    self.layers.insert(hex.to_string(), object.clone());
                    true
                }
                _ => false,
            },
            "layer-users" => {
                let mut parts = rest.split('/');
                match (parts.next(), parts.next(), parts.next().and_then(id)) {
                    (Some("sha256"), Some(hex), Some(owner)) if is_digest_hex(hex) => {
                        self.layer_users.push(Owned {
                            owner,
                            object: object.clone(),
                        });
                        true
                    }
                    _ => false,
                }
            }
            "locks" => {
                self.locks.push(object.clone());
                true
            }
            "gc" if rest.starts_with("freed/") => {
                self.freed_logs.push(object.clone());
                true
            }
            _ => false,
        };
        if !placed {
            self.other.push(object);
        }
    }

    /// Objects listed, of every kind.
    pub fn object_count(&self) -> usize {
        self.tags.len()
            + self.manifests.len()
            + self.maps.len()
            + self.packs.len()
            + self.indexes.len()
            + self.traces.len()
            + self.layers.len()
            + self.layer_users.len()
            + self.locks.len()
            + self.freed_logs.len()
            + self.other.len()
    }

    /// Bytes listed, of every kind.
    pub fn byte_count(&self) -> u64 {
        let sum = |objects: &mut dyn Iterator<Item = &ListedObject>| -> u64 {
            objects.map(|o| o.size).sum()
        };
        sum(&mut self.tags.values())
            + sum(&mut self.manifests.values())
            + sum(&mut self.maps.values())
            + sum(&mut self.packs.values())
            + sum(&mut self.indexes.values())
            + sum(&mut self.traces.iter().map(|o| &o.object))
            + sum(&mut self.layers.values())
            + sum(&mut self.layer_users.iter().map(|o| &o.object))
            + sum(&mut self.locks.iter())
            + sum(&mut self.freed_logs.iter())
            + sum(&mut self.other.iter())
    }
}

/// The hex of a sha256 digest: 64 lowercase or uppercase hex digits.
pub fn is_digest_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(key: &str) -> ListedObject {
        ListedObject {
            key: key.into(),
            size: 1,
            modified_unix_ms: 0,
        }
    }

    #[test]
    fn every_kind_of_key_lands_in_its_place_and_strangers_in_other() {
        let m = ChunkId::of(b"m").to_hex();
        let diff = "ab".repeat(32);
        let mut inventory = Inventory::default();
        for key in [
            "tags/models/llama:3".to_string(),
            format!("manifests/{m}"),
            format!("maps/{m}"),
            format!("packs/{m}.pack"),
            format!("packs/{m}.idx"),
            format!("trace-runs/{m}/run-1-00.json"),
            format!("trace-runs/{m}.restore/merged-00.json"),
            format!("traces/{m}"),
            format!("layers/sha256/{diff}"),
            format!("layer-users/sha256/{diff}/{m}"),
            "locks/1-00.json".to_string(),
            "manifests/not-hex".to_string(),
            "README".to_string(),
        ] {
            inventory.add(listed(&key));
        }
        assert_eq!(
            inventory.tags.keys().collect::<Vec<_>>(),
            ["models/llama:3"]
        );
        assert_eq!(inventory.manifests.len(), 1);
        assert_eq!(inventory.maps.len(), 1);
        assert_eq!((inventory.packs.len(), inventory.indexes.len()), (1, 1));
        assert_eq!(inventory.traces.len(), 3);
        assert!(inventory.traces.iter().all(|t| t.owner.to_hex() == m));
        assert_eq!(inventory.layers.len(), 1);
        assert_eq!(inventory.layer_users.len(), 1);
        assert_eq!(inventory.locks.len(), 1);
        assert_eq!(inventory.other.len(), 2);
        assert_eq!(inventory.object_count(), 13);
    }
}
