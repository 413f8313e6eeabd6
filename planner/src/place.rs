//! The placement program: which node each replica starts on, so that the time to fetch what its
//! node does not hold is least in total, within each node's free GPUs.
//!
//! ```text
//! minimise   sum_r,n seconds[r][n] * x[r][n]
//! subject to sum_n x[r][n] = 1                  (each replica placed once)
//!            sum_r gpus[r] * x[r][n] <= free[n]  (GPU capacity)
//!            0 <= x <= 1
//! ```
//!
//! `seconds[r][n]` is the replica's peer bytes over the peer link plus its store bytes over the
//! store link on node `n` ([`Fetch::seconds`]).
//!
//! Replicas of the same tags and GPUs are interchangeable, so the program is solved over
//! classes: `y[k][n]` replicas of class `k` on node `n`, with `sum_n y[k][n] = |k|` (exact, and
//! far smaller: 500 replicas of 80 tag pairs are 80 rows, not 500). A class is offered its
//! cheapest nodes, at least [`DEFAULT_CANDIDATES`] of them and enough to hold it, plus one
//! shared set of the emptiest nodes whose free GPUs cover every replica (so the program is
//! always feasible); nodes it is not offered only matter when all its cheap ones are full, and
//! `thaw bench place` solves the program over all nodes beside it to report any gap.
//! `candidates = 0` offers every node. The relaxation is rounded: each class takes the whole
//! replicas the program gave each node, then the rest go to their largest leftover shares with
//! room, or the cheapest node with room; the relaxation's cost bounds any placement.

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use good_lp::{constraint, variable, Expression, Solution, SolverModel, Variable};
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, Fetch, Links};
use crate::lines::read_json;
use crate::solve::solver_error;
use crate::{Error, Result};

/// One replica to place.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct ReplicaSpec {
    /// Its name.
    pub name: String,
    /// The image's tag in thaw's store.
    #[serde(default)]
    pub image: Option<String>,
    /// The model's tag.
    #[serde(default)]
    pub model: Option<String>,
    /// GPUs it needs.
    #[serde(default = "one")]
    pub gpus: u64,
}

fn one() -> u64 {
    1
}

impl ReplicaSpec {
    /// Its tags.
    pub fn tags(&self) -> Vec<&str> {
        self.image
            .iter()
            .chain(&self.model)
            .map(String::as_str)
            .collect()
    }
}

#[derive(Deserialize)]
struct ReplicasFile {
    replicas: Vec<ReplicaSpec>,
}

/// The replicas of a file: `{"replicas": [{"name": "r1", "image": "tag", "model": "tag",
/// "gpus": 1}]}`.
pub fn read_replicas(path: &Path) -> Result<Vec<ReplicaSpec>> {
    let file: ReplicasFile = read_json(path, "")?;
    Ok(file.replicas)
}

/// Where one replica goes and what it fetches there.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Assignment {
    /// The replica.
    pub replica: String,
    /// The node.
    pub node: String,
    /// Where its bytes come from on that node.
    pub fetch: Fetch,
    /// Modelled seconds to fetch what the node does not hold.
    pub seconds: f64,
}

/// A placement and what it costs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Placement {
    /// `lp`, `random` or `least-loaded`.
    pub method: String,
    /// One per replica, in input order.
    pub assignments: Vec<Assignment>,
    /// Bytes fetched from outside the replicas' nodes.
    pub remote_bytes: u64,
    /// Of which from the store.
    pub store_bytes: u64,
    /// Mean modelled seconds to ready.
    pub mean_seconds: f64,
    /// Longest.
    pub max_seconds: f64,
    /// For `lp`: the relaxation's total seconds, a bound no placement beats.
    pub lp_bound_seconds: Option<f64>,
    /// LP variables (replica, candidate node) pairs.
    pub variables: usize,
    /// Seconds spent building and solving.
    pub solve_seconds: f64,
    /// Tags of the replicas no inventory knows (placed as if they cost nothing anywhere).
    pub unknown_tags: Vec<String>,
}

/// Bytes as GB with one decimal.
fn gb(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / 1e9)
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<24} {:<20} {:>9} {:>9} {:>9} {:>9}",
            "replica", "node", "local GB", "peer GB", "store GB", "seconds"
        )?;
        for a in &self.assignments {
            writeln!(
                f,
                "{:<24} {:<20} {:>9} {:>9} {:>9} {:>9.2}",
                a.replica,
                a.node,
                gb(a.fetch.local_bytes),
                gb(a.fetch.peer_bytes),
                gb(a.fetch.store_bytes),
                a.seconds
            )?;
        }
        if !self.unknown_tags.is_empty() {
            writeln!(
                f,
                "tags no inventory knows: {}",
                self.unknown_tags.join(", ")
            )?;
        }
        write!(
            f,
            "{}: {} GB from outside the nodes ({} GB from the store); time to ready mean {:.2}s, max {:.2}s",
            self.method,
            gb(self.remote_bytes),
            gb(self.store_bytes),
            self.mean_seconds,
            self.max_seconds
        )?;
        if let Some(bound) = self.lp_bound_seconds {
            write!(
                f,
                "; LP bound {:.1}s total, {} variables, solved in {:.1} ms",
                bound,
                self.variables,
                self.solve_seconds * 1000.0
            )?;
        }
        Ok(())
    }
}

/// A table comparing placements of the same replicas.
pub fn comparison(placements: &[Placement]) -> String {
    let mut out = format!(
        "{:<14} {:>11} {:>11} {:>11} {:>10} {:>10}",
        "placement", "remote GB", "store GB", "mean ready", "max ready", "solve ms"
    );
    for p in placements {
        out.push_str(&format!(
            "\n{:<14} {:>11} {:>11} {:>10.3}s {:>9.3}s {:>10.1}",
            p.method,
            gb(p.remote_bytes),
            gb(p.store_bytes),
            p.mean_seconds,
            p.max_seconds,
            p.solve_seconds * 1000.0
        ));
    }
    out
}

/// Checks that the replicas fit at all.
fn check_room(cluster: &Cluster, replicas: &[ReplicaSpec]) -> Result<()> {
    let needed: u64 = replicas.iter().map(|r| r.gpus).sum();
    let free: u64 = cluster.nodes.iter().map(|n| n.free_gpus).sum();
    if needed > free {
        return Err(Error::NoRoom {
            needed,
            free,
            short: needed - free,
        });
    }
    let largest = cluster.nodes.iter().map(|n| n.free_gpus).max().unwrap_or(0);
    match replicas.iter().find(|r| r.gpus > largest) {
        Some(r) => Err(Error::Invalid(format!(
            "replica {} needs {} GPUs; no node has more than {largest} free",
            r.name, r.gpus
        ))),
        None => Ok(()),
    }
}

/// Builds the placement of `chosen` (node per replica).
fn placement(
    method: &str,
    cluster: &Cluster,
    replicas: &[ReplicaSpec],
    links: &Links,
    chosen: &[usize],
) -> Placement {
    let assignments: Vec<Assignment> = replicas
        .iter()
        .zip(chosen)
        .map(|(r, &n)| {
            let fetch = cluster.fetch(n, &r.tags());
            Assignment {
                replica: r.name.clone(),
                node: cluster.nodes[n].name.clone(),
                seconds: fetch.seconds(links),
                fetch,
            }
        })
        .collect();
    let mut unknown: Vec<String> = replicas
        .iter()
        .flat_map(|r| r.tags())
        .filter(|t| cluster.tag_bytes(t).is_none())
        .map(str::to_string)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    unknown.sort();
    Placement {
        method: method.into(),
        remote_bytes: assignments.iter().map(|a| a.fetch.remote_bytes()).sum(),
        store_bytes: assignments.iter().map(|a| a.fetch.store_bytes).sum(),
        mean_seconds: assignments.iter().map(|a| a.seconds).sum::<f64>()
            / assignments.len().max(1) as f64,
        max_seconds: assignments.iter().map(|a| a.seconds).fold(0.0, f64::max),
        assignments,
        lp_bound_seconds: None,
        variables: 0,
        solve_seconds: 0.0,
        unknown_tags: unknown,
    }
}

/// Free GPUs per node.
fn free(cluster: &Cluster) -> Vec<u64> {
    cluster.nodes.iter().map(|n| n.free_gpus).collect()
}

/// The node with room for `gpus` that `better` prefers (the least by its key).
fn pick<K: PartialOrd>(room: &[u64], gpus: u64, key: impl Fn(usize) -> K) -> Option<usize> {
    (0..room.len())
        .filter(|&n| room[n] >= gpus)
        .min_by(|&a, &b| {
            key(a)
                .partial_cmp(&key(b))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
}

/// Places each replica on a node with room chosen at random (seeded).
pub fn place_random(
    cluster: &Cluster,
    replicas: &[ReplicaSpec],
    links: &Links,
    seed: u64,
) -> Result<Placement> {
    check_room(cluster, replicas)?;
    let mut room = free(cluster);
    let mut state = seed | 1;
    let mut chosen = Vec::with_capacity(replicas.len());
    for r in replicas {
        // xorshift64: a fixed seed gives a fixed placement.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let salt = state;
        let n = pick(&room, r.gpus, |n| {
            (n as u64 ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        })
        .ok_or_else(|| no_node(r))?;
        room[n] -= r.gpus;
        chosen.push(n);
    }
    Ok(placement("random", cluster, replicas, links, &chosen))
}

/// Places each replica on the node with the most free GPUs left.
pub fn place_least_loaded(
    cluster: &Cluster,
    replicas: &[ReplicaSpec],
    links: &Links,
) -> Result<Placement> {
    check_room(cluster, replicas)?;
    let mut room = free(cluster);
    let mut chosen = Vec::with_capacity(replicas.len());
    for r in replicas {
        let n = pick(&room, r.gpus, |n| std::cmp::Reverse(room[n])).ok_or_else(|| no_node(r))?;
        room[n] -= r.gpus;
        chosen.push(n);
    }
    Ok(placement("least-loaded", cluster, replicas, links, &chosen))
}

fn no_node(r: &ReplicaSpec) -> Error {
    Error::Invalid(format!(
        "replica {} needs {} GPUs on one node; the nodes left have fewer free",
        r.name, r.gpus
    ))
}

/// Cheapest nodes offered to each replica by default.
pub const DEFAULT_CANDIDATES: usize = 32;

/// Replicas that need the same tags and GPUs: interchangeable, so the program places counts of
/// a class, not single replicas.
struct Class {
    /// Indices of its replicas.
    members: Vec<usize>,
    /// Its candidate nodes and the seconds a replica takes on each.
    nodes: Vec<(usize, f64)>,
}

/// Replicas grouped into classes, each with its candidates: its cheapest nodes, at least
/// `per_class` of them and enough to hold the whole class (all nodes when 0), plus the shared
/// emptiest nodes whose free GPUs cover all replicas together.
fn classes(
    cluster: &Cluster,
    replicas: &[ReplicaSpec],
    links: &Links,
    per_class: usize,
) -> Vec<Class> {
    let needed: u64 = replicas.iter().map(|r| r.gpus).sum();
    let mut by_room: Vec<usize> = (0..cluster.nodes.len())
        .filter(|&n| cluster.nodes[n].free_gpus > 0)
        .collect();
    by_room.sort_by_key(|&n| std::cmp::Reverse(cluster.nodes[n].free_gpus));
    let mut shared = Vec::new();
    let mut covered = 0;
    for n in by_room {
        if covered >= needed {
            break;
        }
        covered += cluster.nodes[n].free_gpus;
        shared.push(n);
    }
    let mut groups: Vec<(Vec<&str>, u64, Vec<usize>)> = Vec::new();
    for (i, r) in replicas.iter().enumerate() {
        let tags = r.tags();
        match groups
            .iter_mut()
            .find(|(t, g, _)| *t == tags && *g == r.gpus)
        {
            Some(group) => group.2.push(i),
            None => groups.push((tags, r.gpus, vec![i])),
        }
    }
    groups
        .into_iter()
        .map(|(tags, gpus, members)| {
            let mut fits: Vec<(f64, usize)> = (0..cluster.nodes.len())
                .filter(|&n| cluster.nodes[n].free_gpus >= gpus)
                .map(|n| (cluster.fetch(n, &tags).seconds(links), n))
                .collect();
            fits.sort_by(|a, b| a.0.total_cmp(&b.0));
            if per_class > 0 {
                let mut room = 0;
                let keep = fits
                    .iter()
                    .position(|&(_, n)| {
                        room += cluster.nodes[n].free_gpus / gpus;
                        room >= members.len() as u64
                    })
                    .map_or(fits.len(), |i| i + 1)
                    .max(per_class)
                    .min(fits.len());
                let extra: Vec<(f64, usize)> = fits[keep..]
                    .iter()
                    .copied()
                    .filter(|(_, n)| shared.contains(n))
                    .collect();
                fits.truncate(keep);
                fits.extend(extra);
            }
            Class {
                members,
                nodes: fits.into_iter().map(|(c, n)| (n, c)).collect(),
            }
        })
        .collect()
}

/// The placement that the program finds, rounded to whole replicas; each class of identical
/// replicas is offered its `per_class` cheapest nodes, or enough to hold it (0: all nodes).
pub fn place_lp(
    cluster: &Cluster,
    replicas: &[ReplicaSpec],
    links: &Links,
    per_class: usize,
) -> Result<Placement> {
    check_room(cluster, replicas)?;
    let started = Instant::now();
    let classes = classes(cluster, replicas, links, per_class);
    let mut vars = good_lp::ProblemVariables::new();
    // y[k][i]: how many replicas of class k go to its i-th candidate.
    let y: Vec<Vec<Variable>> = classes
        .iter()
        .map(|class| {
            let gpus = replicas[class.members[0]].gpus;
            class
                .nodes
                .iter()
                .map(|&(n, _)| {
                    let most = (cluster.nodes[n].free_gpus / gpus).min(class.members.len() as u64);
                    vars.add(variable().min(0).max(most as f64))
                })
                .collect()
        })
        .collect();
    let objective: Expression = y
        .iter()
        .zip(&classes)
        .flat_map(|(ys, class)| ys.iter().zip(&class.nodes).map(|(&v, &(_, c))| c * v))
        .sum();
    let mut model = vars.minimise(objective.clone()).using(good_lp::microlp);
    let mut per_node: Vec<Option<Expression>> = vec![None; cluster.nodes.len()];
    for (ys, class) in y.iter().zip(&classes) {
        let all: Expression = ys.iter().copied().sum();
        model = model.with(constraint!(all == class.members.len() as f64));
        let gpus = replicas[class.members[0]].gpus as f64;
        for (&v, &(n, _)) in ys.iter().zip(&class.nodes) {
            *per_node[n].get_or_insert_with(|| Expression::from(0.0)) += gpus * v;
        }
    }
    for (n, used) in per_node.into_iter().enumerate() {
        if let Some(used) = used {
            model = model.with(constraint!(used <= cluster.nodes[n].free_gpus as f64));
        }
    }
    let solution = model.solve().map_err(solver_error)?;
    let bound = solution.eval(&objective);
    // Round: each class takes the whole replicas the program gave each node, then its
    // remaining replicas go to the largest leftover shares with room, else the cheapest node
    // with room.
    let mut room = free(cluster);
    let mut chosen = vec![0; replicas.len()];
    let mut leftovers = Vec::new();
    for (ys, class) in y.iter().zip(&classes) {
        let gpus = replicas[class.members[0]].gpus;
        let mut members = class.members.iter();
        let mut fractions = Vec::new();
        for (&v, &(n, c)) in ys.iter().zip(&class.nodes) {
            let share = solution.value(v);
            let whole = (share + 1e-6).floor() as u64;
            for _ in 0..whole.min(room[n] / gpus) {
                if let Some(&r) = members.next() {
                    chosen[r] = n;
                    room[n] -= gpus;
                }
            }
            if share - whole as f64 > 1e-6 {
                fractions.push((share - whole as f64, c, n));
            }
        }
        fractions.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.total_cmp(&b.1)));
        leftovers.extend(members.map(|&r| (r, fractions.clone())));
    }
    for (r, fractions) in leftovers {
        let g = replicas[r].gpus;
        let tags = replicas[r].tags();
        let n = fractions
            .iter()
            .map(|&(_, _, n)| n)
            .find(|&n| room[n] >= g)
            .or_else(|| pick(&room, g, |n| cluster.fetch(n, &tags).seconds(links)))
            .ok_or_else(|| no_node(&replicas[r]))?;
        room[n] -= g;
        chosen[r] = n;
    }
    let mut placed = placement("lp", cluster, replicas, links, &chosen);
    placed.lp_bound_seconds = Some(bound);
    placed.variables = y.iter().map(Vec::len).sum();
    placed.solve_seconds = started.elapsed().as_secs_f64();
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::tests::inventory;

    const GB: u64 = 1_000_000_000;

    fn replica(name: &str, image: &str, model: &str, gpus: u64) -> ReplicaSpec {
        ReplicaSpec {
            name: name.into(),
            image: Some(image.into()),
            model: Some(model.into()),
            gpus,
        }
    }

    /// Peers at 1 GB/s, the store at 0.1 GB/s: a store byte costs ten peer bytes.
    const LINKS: Links = Links {
        peer_bytes_per_s: 1e9,
        store_bytes_per_s: 1e8,
    };

    #[test]
    fn three_nodes_four_replicas_go_where_their_bytes_are() {
        // Image "a" (10 GB) is on node 1 only, model "m" (20 GB) on node 2 only, image "c"
        // (1 GB) on node 3 only, "b" (5 GB) nowhere. Node 1 has 2 GPUs, node 2 has 1, node 3
        // has 4.
        let cluster = Cluster::new(vec![
            (
                "n1".into(),
                2,
                Some(inventory(&[
                    ("a", 10 * GB, 10 * GB),
                    ("m", 20 * GB, 0),
                    ("b", 5 * GB, 0),
                ])),
            ),
            (
                "n2".into(),
                1,
                Some(inventory(&[("a", 10 * GB, 0), ("m", 20 * GB, 20 * GB)])),
            ),
            ("n3".into(), 4, Some(inventory(&[("c", GB, GB)]))),
        ]);
        let replicas = vec![
            replica("r1", "a", "m", 1),
            replica("r2", "a", "m", 1),
            replica("r3", "b", "m", 1),
            replica("r4", "c", "x", 1),
        ];
        // Seconds per (replica, node): a from a peer is 10 s, m from a peer 20 s, c from a peer
        // 1 s, b from the store 50 s; x is unknown and costs nothing.
        //   r1, r2: n1 20 (m from n2) | n2 10 (a from n1) | n3 30
        //   r3:     n1 70             | n2 50             | n3 70
        //   r4:     n1 1              | n2 1              | n3 0
        // n2 has one GPU: r3 saves 20 there, r1 or r2 only 10. So r3 -> n2, r1 and r2 -> n1
        // (20 each), r4 -> n3: 20 + 20 + 50 + 0 = 90. Putting r4 on n1 instead pushes r1 or
        // r2 to n3: 1 + 20 + 30 + 50 = 101.
        let placed = place_lp(&cluster, &replicas, &LINKS, DEFAULT_CANDIDATES).unwrap();
        let nodes: Vec<&str> = placed.assignments.iter().map(|a| a.node.as_str()).collect();
        assert_eq!(nodes, vec!["n1", "n1", "n2", "n3"], "{placed:?}");
        let total: f64 = placed.assignments.iter().map(|a| a.seconds).sum();
        assert!((total - 90.0).abs() < 1e-6, "{placed:?}");
        assert!((placed.lp_bound_seconds.unwrap() - 90.0).abs() < 1e-6);
        assert_eq!(placed.unknown_tags, vec!["x".to_string()]);
        // The baselines do worse on this cluster.
        let least = place_least_loaded(&cluster, &replicas, &LINKS).unwrap();
        assert!(least.mean_seconds > placed.mean_seconds, "{least:?}");
        let random = place_random(&cluster, &replicas, &LINKS, 7).unwrap();
        assert!(random.mean_seconds >= placed.mean_seconds, "{random:?}");
    }

    #[test]
    fn replicas_that_cannot_fit_say_by_how_much() {
        let cluster = Cluster::new(vec![("n1".into(), 2, None), ("n2".into(), 1, None)]);
        let err = place_lp(&cluster, &[replica("r", "a", "m", 4)], &LINKS, 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("need 4 GPUs") && err.contains("short by 1"),
            "{err}"
        );
        let err = place_lp(&cluster, &[replica("big", "a", "m", 3)], &LINKS, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("replica big needs 3 GPUs"), "{err}");
    }
}
