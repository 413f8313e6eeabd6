//! `thaw bench place`: the placement program against random and least-loaded placement on a
//! simulated cluster built from a real store: every tag's distinct chunks are read from its
//! manifest, each node is given the caches of a few tags it ran before (seeded), its inventory
//! of every tag is computed the way `thaw cache-server` computes it (held bytes of the tag's
//! chunks, so that a cache of one version holds most of the next), and replicas of random
//! tags are placed. Reports bytes fetched from outside the nodes, modelled time to ready and
//! the solve time.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use thaw_cache_server::protocol::{Inventory, TagInventory};
use thaw_core::store::Store;
use thaw_planner::cluster::Cluster;
use thaw_planner::links::LinkArgs;
use thaw_planner::place::{comparison, place_least_loaded, place_lp, place_random, ReplicaSpec};

/// `thaw bench place`.
#[derive(Args, Debug)]
pub struct PlaceArgs {
    /// Nodes in the simulated cluster.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Replicas to place.
    #[arg(long, default_value_t = 500)]
    replicas: usize,
    /// Tags each node has run before (its cache holds their chunks).
    #[arg(long, default_value_t = 2)]
    tags_per_node: usize,
    /// Most free GPUs of a node (each has 0..=this, seeded).
    #[arg(long, default_value_t = 8)]
    max_free_gpus: u64,
    /// Only tags starting with this.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Tags starting with this are models, the others images; each replica gets one of each
    /// (when no tag starts with it, any two tags).
    #[arg(long, default_value = "models/")]
    model_prefix: String,
    /// Seed of the cluster and the replicas.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(flatten)]
    links: LinkArgs,
    /// Cheapest nodes offered to each replica in the pruned program.
    #[arg(long, default_value_t = thaw_planner::place::DEFAULT_CANDIDATES)]
    candidates: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// xorshift64: the same seed gives the same cluster.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Every tag's distinct chunks, as dense chunk numbers, and the raw length of each chunk.
async fn tag_chunks(
    store: &Store,
    prefix: &str,
) -> anyhow::Result<(Vec<(String, Vec<u32>)>, Vec<u64>)> {
    let mut numbers = HashMap::new();
    let mut lengths = Vec::new();
    let mut tags = Vec::new();
    for (name, manifest_id) in store.list_tags().await? {
        if !name.starts_with(prefix) {
            continue;
        }
        let manifest = store
            .get_manifest(&manifest_id)
            .await
            .with_context(|| format!("manifest of {name}"))?;
        let mut chunks: Vec<u32> = manifest
            .chunks()?
            .into_iter()
            .map(|c| {
                *numbers.entry(c.id).or_insert_with(|| {
                    lengths.push(u64::from(c.raw_len));
                    (lengths.len() - 1) as u32
                })
            })
            .collect();
        chunks.sort_unstable();
        chunks.dedup();
        tags.push((name, chunks));
    }
    if tags.len() < 2 {
        bail!("the store needs at least two tags under {prefix:?} to place replicas of");
    }
    Ok((tags, lengths))
}

/// Runs the comparison.
pub async fn run(store: &Store, args: PlaceArgs) -> anyhow::Result<std::process::ExitCode> {
    let links = args.links.links()?;
    let (tags, lengths) = tag_chunks(store, &args.prefix).await?;
    let started = Instant::now();
    let mut rng = Rng(args.seed.max(1));
    let words = lengths.len().div_ceil(64);
    let nodes: Vec<(String, u64, Option<Inventory>)> = (0..args.nodes)
        .map(|i| {
            let mut cache = vec![0u64; words];
            for _ in 0..args.tags_per_node {
                let (_, chunks) = &tags[rng.below(tags.len() as u64) as usize];
                for &c in chunks {
                    cache[c as usize / 64] |= 1 << (c % 64);
                }
            }
            let holds = |c: u32| cache[c as usize / 64] & (1 << (c % 64)) != 0;
            let inventory = Inventory {
                chunks_held: cache.iter().map(|w| u64::from(w.count_ones())).sum(),
                bytes_held: 0,
                tags: tags
                    .iter()
                    .map(|(name, chunks)| {
                        let held: Vec<u32> = chunks.iter().copied().filter(|&c| holds(c)).collect();
                        TagInventory {
                            tag: name.clone(),
                            manifest: String::new(),
                            chunks: chunks.len() as u64,
                            held: held.len() as u64,
                            bytes: chunks.iter().map(|&c| lengths[c as usize]).sum(),
                            held_bytes: held.iter().map(|&c| lengths[c as usize]).sum(),
                        }
                    })
                    .collect(),
            };
            let free = rng.below(args.max_free_gpus + 1);
            (format!("node-{i}"), free, Some(inventory))
        })
        .collect();
    let cluster = Cluster::new(nodes);
    let built = started.elapsed().as_secs_f64();
    let (models, images): (Vec<usize>, Vec<usize>) =
        (0..tags.len()).partition(|&t| tags[t].0.starts_with(&args.model_prefix));
    let (images, models) = if models.is_empty() || images.is_empty() {
        ((0..tags.len()).collect(), (0..tags.len()).collect())
    } else {
        (images, models)
    };
    let replicas: Vec<ReplicaSpec> = (0..args.replicas)
        .map(|i| {
            let image = images[rng.below(images.len() as u64) as usize];
            let model = models[rng.below(models.len() as u64) as usize];
            ReplicaSpec {
                name: format!("replica-{i}"),
                image: Some(tags[image].0.clone()),
                model: (model != image).then(|| tags[model].0.clone()),
                gpus: 1,
            }
        })
        .collect();
    let mut full = place_lp(&cluster, &replicas, &links, 0)?;
    full.method = "lp-all-nodes".into();
    let placements = vec![
        place_lp(&cluster, &replicas, &links, args.candidates)?,
        full,
        place_random(&cluster, &replicas, &links, args.seed)?,
        place_least_loaded(&cluster, &replicas, &links)?,
    ];
    if args.json {
        let rows: Vec<serde_json::Value> = placements
            .iter()
            .map(|p| {
                serde_json::json!({
                    "method": p.method,
                    "remote_bytes": p.remote_bytes,
                    "store_bytes": p.store_bytes,
                    "mean_seconds": p.mean_seconds,
                    "max_seconds": p.max_seconds,
                    "lp_bound_seconds": p.lp_bound_seconds,
                    "variables": p.variables,
                    "solve_seconds": p.solve_seconds,
                })
            })
            .collect();
        let json = serde_json::json!({
            "nodes": args.nodes,
            "replicas": args.replicas,
            "tags": tags.len(),
            "chunks": lengths.len(),
            "cluster_build_seconds": built,
            "placements": rows,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!(
            "{} nodes ({} tags each, up to {} free GPUs), {} replicas of {} tags ({} distinct chunks); cluster built in {:.2}s",
            args.nodes,
            args.tags_per_node,
            args.max_free_gpus,
            args.replicas,
            tags.len(),
            lengths.len(),
            built
        );
        println!("{}", comparison(&placements));
        for lp in &placements[..2] {
            println!(
                "{}: {} variables, LP bound {:.3}s total, rounded {:.3}s",
                lp.method,
                lp.variables,
                lp.lp_bound_seconds.unwrap_or(0.0),
                lp.mean_seconds * replicas.len() as f64
            );
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
