//! A kube-scheduler extender (`/filter`, `/prioritize`, kube-scheduler's extender v1 JSON):
//! nodes are scored by the share of a pod's image and model bytes they, and their peers, hold.
//!
//! A pod names its thaw tags with the annotations `thaw.dev/image` and `thaw.dev/model`; without
//! them, each container's `image` that is a tag thaw knows counts as the image. The score of a
//! node is `10 * (1 - seconds to fetch on it / seconds to fetch everything from the store)`
//! with [`Links`]: a byte in the node's cache counts fully, a byte in a peer's cache counts by
//! how much faster the peer link is. A pod whose tags thaw does not know gets 0 on every node
//! (neutral), never an error: the extender must not block scheduling. `/filter` keeps every
//! node, unless `require_thaw` is set and the pod is thaw's: then nodes no cache server reported
//! on are filtered out, as long as some node is left.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cluster::{Cluster, Fetch, Links};

/// The annotation naming a pod's image tag.
pub const IMAGE_ANNOTATION: &str = "thaw.dev/image";
/// The annotation naming a pod's model tag.
pub const MODEL_ANNOTATION: &str = "thaw.dev/model";
/// kube-scheduler's highest extender score.
pub const MAX_SCORE: i64 = 10;

/// What kube-scheduler sends to `/filter` and `/prioritize` (Go's JSON is case-insensitive, so
/// both spellings are accepted).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ExtenderArgs {
    /// The pod being scheduled.
    #[serde(alias = "Pod")]
    pub pod: Value,
    /// Candidate nodes (when the extender is not node-cache capable).
    #[serde(default, alias = "Nodes", skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeList>,
    /// Candidate node names (when it is).
    #[serde(
        default,
        alias = "NodeNames",
        alias = "nodeNames",
        skip_serializing_if = "Option::is_none"
    )]
    pub nodenames: Option<Vec<String>>,
}

/// A list of Kubernetes nodes, each kept as sent.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct NodeList {
    /// The nodes.
    #[serde(default, alias = "Items")]
    pub items: Vec<Value>,
    /// Anything else kube-scheduler sent (kind, apiVersion, metadata), returned as is.
    #[serde(flatten)]
    pub rest: serde_json::Map<String, Value>,
}

/// The answer to `/filter`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtenderFilterResult {
    /// The nodes kept (when nodes were sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeList>,
    /// The node names kept (when names were sent).
    #[serde(rename = "nodenames", skip_serializing_if = "Option::is_none")]
    pub node_names: Option<Vec<String>>,
    /// Nodes filtered out, with why.
    pub failed_nodes: BTreeMap<String, String>,
    /// Nodes filtered out that preemption cannot help (none here).
    pub failed_and_unresolvable_nodes: BTreeMap<String, String>,
    /// An error for kube-scheduler (empty: none).
    pub error: String,
}

/// One node's score.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct HostPriority {
    /// The node's name.
    pub host: String,
    /// 0..=10.
    pub score: i64,
}

/// A node's name from a Kubernetes node object.
fn node_name(node: &Value) -> Option<&str> {
    node.pointer("/metadata/name").and_then(Value::as_str)
}

/// The candidate node names of a request.
fn candidate_names(args: &ExtenderArgs) -> Vec<String> {
    match (&args.nodenames, &args.nodes) {
        (Some(names), _) => names.clone(),
        (None, Some(list)) => list
            .items
            .iter()
            .filter_map(|n| node_name(n).map(str::to_string))
            .collect(),
        (None, None) => Vec::new(),
    }
}

/// The thaw tags of a pod that `cluster` knows.
pub fn pod_tags(pod: &Value, cluster: &Cluster) -> Vec<String> {
    let annotation = |key: &str| {
        pod.pointer("/metadata/annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let mut tags: Vec<String> = Vec::new();
    match annotation(IMAGE_ANNOTATION) {
        Some(image) => tags.push(image),
        None => {
            for kind in ["/spec/initContainers", "/spec/containers"] {
                for container in pod
                    .pointer(kind)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(image) = container.get("image").and_then(Value::as_str) {
                        tags.push(image.to_string());
                    }
                }
            }
        }
    }
    tags.extend(annotation(MODEL_ANNOTATION));
    tags.retain(|t| cluster.tag_bytes(t).is_some());
    tags.dedup();
    tags
}

/// Scores of `names` for a pod of `tags`.
pub fn scores(
    cluster: &Cluster,
    tags: &[String],
    names: &[String],
    links: &Links,
) -> Vec<HostPriority> {
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    let all_from_store: u64 = tags.iter().filter_map(|t| cluster.tag_bytes(t)).sum();
    let worst = Fetch {
        store_bytes: all_from_store,
        ..Fetch::default()
    }
    .seconds(links);
    names
        .iter()
        .map(|name| {
            let seconds = match cluster.node_index(name) {
                Some(n) => cluster.fetch(n, &tags).seconds(links),
                None => cluster.fetch_elsewhere(&tags).seconds(links),
            };
            let score = if worst > 0.0 {
                (MAX_SCORE as f64 * (1.0 - seconds / worst)).round() as i64
            } else {
                0
            };
            HostPriority {
                host: name.clone(),
                score: score.clamp(0, MAX_SCORE),
            }
        })
        .collect()
}

/// `/filter` for `args`.
pub fn filter(cluster: &Cluster, args: ExtenderArgs, require_thaw: bool) -> ExtenderFilterResult {
    let thaws = !pod_tags(&args.pod, cluster).is_empty();
    let reported = |name: &str| {
        cluster
            .node_index(name)
            .is_some_and(|n| cluster.nodes[n].reported)
    };
    let names = candidate_names(&args);
    let drop: Vec<String> = if require_thaw && thaws && names.iter().any(|n| reported(n)) {
        names.iter().filter(|n| !reported(n)).cloned().collect()
    } else {
        Vec::new()
    };
    let kept = |name: &str| !drop.iter().any(|d| d == name);
    ExtenderFilterResult {
        nodes: args.nodes.map(|list| NodeList {
            items: list
                .items
                .into_iter()
                .filter(|n| node_name(n).is_none_or(kept))
                .collect(),
            rest: list.rest,
        }),
        node_names: args
            .nodenames
            .map(|names| names.into_iter().filter(|n| kept(n)).collect()),
        failed_nodes: drop
            .into_iter()
            .map(|n| (n, "no thaw cache server reported on this node".to_string()))
            .collect(),
        ..ExtenderFilterResult::default()
    }
}

/// Labels of the extender's request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
    /// `known` (the pod names tags thaw holds), `unknown` or `bad-request`.
    pod: &'static str,
}

/// What the extender's handlers share.
pub struct ExtenderState {
    /// The current view of the cluster (swapped by a refresher).
    pub cluster: RwLock<Arc<Cluster>>,
    /// Link speeds for scores.
    pub links: Links,
    /// Filter out nodes thaw does not report on, for thaw's pods.
    pub require_thaw: bool,
    requests: Family<RouteLabels, Counter>,
    registry: Registry,
}

impl ExtenderState {
    /// State over `cluster`.
    pub fn new(cluster: Cluster, links: Links, require_thaw: bool) -> Arc<ExtenderState> {
        let requests = Family::<RouteLabels, Counter>::default();
        let mut registry = Registry::default();
        registry.register(
            "thaw_extender_requests",
            "Extender requests by route and whether the pod's tags were known",
            requests.clone(),
        );
        Arc::new(ExtenderState {
            cluster: RwLock::new(Arc::new(cluster)),
            links,
            require_thaw,
            requests,
            registry,
        })
    }

    fn cluster(&self) -> Arc<Cluster> {
        self.cluster.read().expect("cluster lock").clone()
    }

    fn count(&self, route: &'static str, pod: &'static str) {
        self.requests
            .get_or_create(&RouteLabels { route, pod })
            .inc();
    }

    fn parse(
        &self,
        route: &'static str,
        body: &[u8],
    ) -> Result<(ExtenderArgs, Arc<Cluster>), String> {
        let deserializer = &mut serde_json::Deserializer::from_slice(body);
        match serde_path_to_error::deserialize::<_, ExtenderArgs>(deserializer) {
            Ok(args) => {
                let cluster = self.cluster();
                let known = !pod_tags(&args.pod, &cluster).is_empty();
                self.count(route, if known { "known" } else { "unknown" });
                Ok((args, cluster))
            }
            Err(e) => {
                self.count(route, "bad-request");
                Err(format!("not extender arguments: {e}"))
            }
        }
    }
}

async fn filter_route(
    State(state): State<Arc<ExtenderState>>,
    body: axum::body::Bytes,
) -> Response {
    match state.parse("filter", &body) {
        Ok((args, cluster)) => Json(filter(&cluster, args, state.require_thaw)).into_response(),
        Err(message) => (StatusCode::BAD_REQUEST, message).into_response(),
    }
}

async fn prioritize_route(
    State(state): State<Arc<ExtenderState>>,
    body: axum::body::Bytes,
) -> Response {
    match state.parse("prioritize", &body) {
        Ok((args, cluster)) => {
            let tags = pod_tags(&args.pod, &cluster);
            Json(scores(
                &cluster,
                &tags,
                &candidate_names(&args),
                &state.links,
            ))
            .into_response()
        }
        Err(message) => (StatusCode::BAD_REQUEST, message).into_response(),
    }
}

async fn metrics_route(State(state): State<Arc<ExtenderState>>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The extender's routes: `POST /filter`, `POST /prioritize`, `GET /healthz`, `GET /metrics`.
pub fn router(state: Arc<ExtenderState>) -> Router {
    Router::new()
        .route("/filter", post(filter_route))
        .route("/prioritize", post(prioritize_route))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics_route))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::tests::inventory;

    const LINKS: Links = Links {
        peer_bytes_per_s: 1e9,
        store_bytes_per_s: 1e8,
    };

    fn cluster() -> Cluster {
        Cluster::new(vec![
            (
                "a".into(),
                1,
                Some(inventory(&[("img", 100, 100), ("llama", 900, 900)])),
            ),
            (
                "b".into(),
                1,
                Some(inventory(&[("img", 100, 0), ("llama", 900, 0)])),
            ),
        ])
    }

    fn pod(annotations: Value, image: &str) -> Value {
        serde_json::json!({
            "metadata": {"name": "p", "annotations": annotations},
            "spec": {"containers": [{"name": "c", "image": image}]}
        })
    }

    #[test]
    fn the_node_holding_everything_scores_ten_its_peer_scores_by_the_link() {
        let c = cluster();
        let tags = pod_tags(
            &pod(serde_json::json!({"thaw.dev/model": "llama"}), "img"),
            &c,
        );
        assert_eq!(tags, vec!["img".to_string(), "llama".to_string()]);
        let names = vec!["a".to_string(), "b".to_string(), "elsewhere".to_string()];
        let s = scores(&c, &tags, &names, &LINKS);
        // a holds all: 10. b fetches all from a at ten times the store's speed: 10 * 0.9 = 9.
        assert_eq!(
            s.iter().map(|h| h.score).collect::<Vec<_>>(),
            vec![10, 9, 9]
        );
        // Unknown images: 0 everywhere.
        let tags = pod_tags(&pod(serde_json::json!({}), "docker.io/other:1"), &c);
        assert!(tags.is_empty());
        assert!(scores(&c, &tags, &names, &LINKS)
            .iter()
            .all(|h| h.score == 0));
    }
}
