//! What each node of a cluster holds, as its `thaw cache-server` reports it
//! (`GET /v1/inventory`), and what a replica of given tags would fetch from where on each node.
//!
//! A nodes file is JSON:
//! `{"nodes": [{"name": "gpu-1", "free_gpus": 8, "peer": "http://10.0.0.1:7070"},
//!             {"name": "gpu-2", "free_gpus": 4, "inventory": {...}}]}`: a node either embeds
//! the inventory its cache server returned or names the server, whose inventory is then read
//! live. A node whose server does not answer is kept, holding nothing (and a warning says so):
//! a missing inventory never blocks a plan.
//!
//! Bytes of a tag a node does not hold itself come from a peer when some other node holds them
//! (the most any single other node holds is counted, a lower bound of what the peers hold
//! together) and from the store otherwise.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thaw_cache_server::auth::Token;
use thaw_cache_server::protocol::Inventory;
use thaw_cache_server::tls::ClientTls;

use crate::lines::read_json;
use crate::{Error, Result};

/// One node as a nodes file gives it.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct NodeSpec {
    /// The node's name (the Kubernetes node name).
    pub name: String,
    /// GPUs free for new replicas.
    #[serde(default)]
    pub free_gpus: u64,
    /// Base URL of its cache server, read live when `inventory` is absent.
    #[serde(default)]
    pub peer: Option<String>,
    /// What its cache server holds.
    #[serde(default)]
    pub inventory: Option<Inventory>,
}

#[derive(Deserialize)]
struct NodesFile {
    nodes: Vec<NodeSpec>,
}

/// How much of one tag a node holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Holding {
    held_bytes: u64,
}

/// Where the bytes of some tags would come from on one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Fetch {
    /// Already in the node's cache.
    pub local_bytes: u64,
    /// In some other node's cache.
    pub peer_bytes: u64,
    /// From the store.
    pub store_bytes: u64,
}

impl Fetch {
    /// Bytes from outside the node.
    pub fn remote_bytes(&self) -> u64 {
        self.peer_bytes + self.store_bytes
    }

    /// All the bytes.
    pub fn total_bytes(&self) -> u64 {
        self.local_bytes + self.remote_bytes()
    }

    /// Modelled seconds to fetch what is not local over `links`.
    pub fn seconds(&self, links: &Links) -> f64 {
        self.peer_bytes as f64 / links.peer_bytes_per_s
            + self.store_bytes as f64 / links.store_bytes_per_s
    }
}

impl std::ops::AddAssign for Fetch {
    fn add_assign(&mut self, other: Fetch) {
        self.local_bytes += other.local_bytes;
        self.peer_bytes += other.peer_bytes;
        self.store_bytes += other.store_bytes;
    }
}

/// Bandwidth of a node's links.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Links {
    /// From a peer's cache, bytes per second.
    pub peer_bytes_per_s: f64,
    /// From the store, bytes per second.
    pub store_bytes_per_s: f64,
}

/// A node of the cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Its name.
    pub name: String,
    /// GPUs free.
    pub free_gpus: u64,
    holdings: HashMap<String, Holding>,
    /// Whether thaw reported on this node (its cache server answered or an inventory was given).
    pub reported: bool,
}

/// The nodes and, per tag, its size and its two largest holders.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    /// The nodes, in input order.
    pub nodes: Vec<Node>,
    /// Per tag: distinct raw bytes.
    sizes: HashMap<String, u64>,
    /// Per tag: the two largest (held bytes, node index).
    top_holders: HashMap<String, [(u64, usize); 2]>,
    /// Per tag: the nodes holding any of it.
    holders: HashMap<String, Vec<usize>>,
    /// Nodes whose inventory could not be read, with why.
    pub warnings: Vec<String>,
}

impl Cluster {
    /// The cluster of `nodes` (name, free GPUs, inventory if any).
    pub fn new(nodes: Vec<(String, u64, Option<Inventory>)>) -> Cluster {
        let mut cluster = Cluster::default();
        for (index, (name, free_gpus, inventory)) in nodes.into_iter().enumerate() {
            let mut holdings = HashMap::new();
            let reported = inventory.is_some();
            for tag in inventory.map(|i| i.tags).unwrap_or_default() {
                cluster.sizes.entry(tag.tag.clone()).or_insert(tag.bytes);
                let top = cluster
                    .top_holders
                    .entry(tag.tag.clone())
                    .or_insert([(0, usize::MAX); 2]);
                if tag.held_bytes > top[0].0 {
                    top[1] = top[0];
                    top[0] = (tag.held_bytes, index);
                } else if tag.held_bytes > top[1].0 {
                    top[1] = (tag.held_bytes, index);
                }
                if tag.held_bytes > 0 {
                    cluster
                        .holders
                        .entry(tag.tag.clone())
                        .or_default()
                        .push(index);
                }
                holdings.insert(
                    tag.tag,
                    Holding {
                        held_bytes: tag.held_bytes.min(tag.bytes),
                    },
                );
            }
            cluster.nodes.push(Node {
                name,
                free_gpus,
                holdings,
                reported,
            });
        }
        cluster
    }

    /// Distinct raw bytes of `tag`, if any node's inventory knows it.
    pub fn tag_bytes(&self, tag: &str) -> Option<u64> {
        self.sizes.get(tag).copied()
    }

    /// Where the bytes of `tags` would come from on node `node`; tags no inventory knows add
    /// nothing.
    pub fn fetch(&self, node: usize, tags: &[&str]) -> Fetch {
        self.fetch_on(Some(node), tags)
    }

    /// Where the bytes of `tags` would come from on a node that holds none of them.
    pub fn fetch_elsewhere(&self, tags: &[&str]) -> Fetch {
        self.fetch_on(None, tags)
    }

    fn fetch_on(&self, node: Option<usize>, tags: &[&str]) -> Fetch {
        let mut fetch = Fetch::default();
        for tag in tags {
            let Some(&size) = self.sizes.get(*tag) else {
                continue;
            };
            let local = node
                .and_then(|n| self.nodes[n].holdings.get(*tag))
                .map_or(0, |h| h.held_bytes);
            let top = self.top_holders.get(*tag).copied().unwrap_or_default();
            let best_other = if Some(top[0].1) == node {
                top[1].0
            } else {
                top[0].0
            };
            let peer = best_other.min(size - local);
            fetch += Fetch {
                local_bytes: local,
                peer_bytes: peer,
                store_bytes: size - local - peer,
            };
        }
        fetch
    }

    /// The nodes holding any of `tag`.
    pub fn holders(&self, tag: &str) -> &[usize] {
        self.holders.get(tag).map_or(&[], Vec::as_slice)
    }

    /// The index of the node named `name`.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }
}

/// How the planner reaches cache servers: their token and TLS.
#[derive(Clone, Debug, Default)]
pub struct PeerAccess {
    /// The bearer token.
    pub token: Option<Token>,
    /// TLS to `https://` servers.
    pub tls: Option<ClientTls>,
}

/// Reads a nodes file, fetching the inventories of nodes that name a peer instead of embedding
/// one.
pub async fn read_nodes(path: &Path, access: &PeerAccess) -> Result<Cluster> {
    let file: NodesFile = read_json(path, "")?;
    let mut http = reqwest::Client::builder();
    if let Some(tls) = &access.tls {
        let config = tls.config().map_err(|e| Error::Invalid(e.to_string()))?;
        http = http.use_preconfigured_tls(config);
    }
    let http = http
        .build()
        .map_err(|e| Error::Invalid(format!("HTTP client: {e}")))?;
    let token = access.token.as_ref();
    let fetched = futures::future::join_all(file.nodes.iter().map(|node| {
        let http = &http;
        async move {
            match (&node.inventory, &node.peer) {
                (Some(inventory), _) => Ok(Some(inventory.clone())),
                (None, Some(peer)) => fetch(http, peer, token).await.map(Some),
                (None, None) => Ok(None),
            }
        }
    }))
    .await;
    let mut warnings = Vec::new();
    let nodes = file
        .nodes
        .into_iter()
        .zip(fetched)
        .map(|(node, inventory)| {
            let inventory = inventory.unwrap_or_else(|e: String| {
                warnings.push(format!(
                    "node {}: {e}; counted as holding nothing",
                    node.name
                ));
                None
            });
            (node.name, node.free_gpus, inventory)
        })
        .collect();
    let mut cluster = Cluster::new(nodes);
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    cluster.warnings = warnings;
    Ok(cluster)
}

/// The inventory of the cache server at `peer`.
async fn fetch(
    http: &reqwest::Client,
    peer: &str,
    token: Option<&Token>,
) -> std::result::Result<Inventory, String> {
    let base = url::Url::parse(peer).map_err(|e| format!("peer {peer:?}: {e}"))?;
    thaw_cache_server::status::fetch_inventory(http, &base, token, None)
        .await
        .map_err(|e| format!("inventory of {peer}: {e}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use thaw_cache_server::protocol::TagInventory;

    /// An inventory holding `held` of each (tag, bytes, held).
    pub(crate) fn inventory(tags: &[(&str, u64, u64)]) -> Inventory {
        Inventory {
            chunks_held: 0,
            bytes_held: tags.iter().map(|t| t.2).sum(),
            tags: tags
                .iter()
                .map(|&(tag, bytes, held_bytes)| TagInventory {
                    tag: tag.into(),
                    manifest: String::new(),
                    chunks: 1,
                    held: u64::from(held_bytes > 0),
                    bytes,
                    held_bytes,
                })
                .collect(),
        }
    }

    #[test]
    fn bytes_come_from_the_node_then_its_best_peer_then_the_store() {
        let cluster = Cluster::new(vec![
            (
                "a".into(),
                1,
                Some(inventory(&[("img", 100, 100), ("model", 1000, 0)])),
            ),
            (
                "b".into(),
                1,
                Some(inventory(&[("img", 100, 40), ("model", 1000, 600)])),
            ),
            ("c".into(), 1, None),
        ]);
        assert_eq!(
            cluster.fetch(0, &["img", "model"]),
            Fetch {
                local_bytes: 100,
                peer_bytes: 600,
                store_bytes: 400
            }
        );
        assert_eq!(
            cluster.fetch(1, &["img", "model"]),
            Fetch {
                local_bytes: 640,
                peer_bytes: 60,
                store_bytes: 400
            }
        );
        // Node c reported nothing: all from peers where they hold it.
        assert_eq!(cluster.fetch(2, &["img"]).peer_bytes, 100);
        assert!(!cluster.nodes[2].reported);
        // A tag no inventory knows costs nothing anywhere.
        assert_eq!(cluster.fetch(0, &["unknown"]).total_bytes(), 0);
    }
}
