//! `thaw bench mark`: gc's mark phase on a synthetic store of many chunks, against the time
//! to just read the objects it reads (every tagged manifest and chunk map, 16 at once), with
//! the process's peak memory. The store is made of manifests only (`--manifests` trees of
//! `--chunks` distinct chunks in all, located in fake packs): the mark phase reads no pack, so
//! none is needed, and a million-chunk store is built in seconds.

use std::time::Instant;

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use thaw_core::chunk_map::{chunk_map_key, ChunkMap};
use thaw_core::chunker::Chunker;
use thaw_core::manifest::{manifest_key, ExtentSpec, FileKind, ManifestBuilder, NodeMeta};
use thaw_core::pack::{ChunkLocation, Codec};
use thaw_core::store::Store;
use thaw_core::ChunkId;
use thaw_maintenance::inventory::Inventory;
use thaw_maintenance::mark::{mark, read_tags};

/// Tag prefix of the synthetic trees.
const PREFIX: &str = "bench-mark/";
/// Chunks per fake pack (a 64 MiB pack of ~1 MiB chunks holds about this many... times 16 for
/// small-file batches; the count only shapes the live set).
const CHUNKS_PER_PACK: u64 = 1024;

/// `thaw bench mark`.
#[derive(Args, Debug)]
pub struct MarkArgs {
    /// Distinct chunks in the store, all trees together.
    #[arg(long, default_value_t = 1_000_000)]
    chunks: u64,
    /// Tagged trees they are spread over.
    #[arg(long, default_value_t = 100)]
    manifests: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Writes tree `m` of `per` chunks (one 4 KiB file per chunk) with its chunk map and tag.
async fn write_tree(store: &Store, m: u64, per: u64) -> anyhow::Result<()> {
    let mut builder = ManifestBuilder::new(Chunker::default(), NodeMeta::directory(0o755));
    let mut locations = Vec::with_capacity(per as usize);
    for i in 0..per {
        let n = m * per + i;
        let chunk = ChunkId::of(&n.to_le_bytes());
        let mut file = NodeMeta::directory(0o644);
        file.kind = FileKind::Regular;
        file.mode = 0o100644;
        file.size = 4096;
        file.extents = vec![ExtentSpec {
            file_offset: 0,
            chunk,
            chunk_raw_len: 4096,
            chunk_offset: 0,
            len: 4096,
        }];
        builder.insert(format!("f{i:08}").as_bytes(), file)?;
        let pack = ChunkId::of(format!("pack {}", n / CHUNKS_PER_PACK).as_bytes());
        locations.push(ChunkLocation {
            pack,
            offset: 16 + (n % CHUNKS_PER_PACK) * 4200,
            stored_len: 4096,
            raw_len: 4096,
            codec: Codec::Raw,
        });
    }
    let (id, bytes) = builder.finish()?;
    store
        .put_chunk_map(&ChunkMap {
            manifest: id,
            locations,
        })
        .await?;
    store.put_manifest(&id, bytes).await?;
    store.set_tag(&format!("{PREFIX}{m}"), &id).await?;
    Ok(())
}

/// Peak resident memory of this process (VmHWM), bytes.
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

/// Runs the benchmark on `store`, generating the trees first if they are not there.
pub async fn run(store: &Store, args: MarkArgs) -> anyhow::Result<std::process::ExitCode> {
    let existing = store.list("tags/bench-mark").await?.len() as u64;
    if existing != args.manifests {
        let started = Instant::now();
        let per = args.chunks / args.manifests.max(1);
        let writes = (0..args.manifests).map(|m| write_tree(store, m, per));
        let results: Vec<_> = futures::stream::iter(writes)
            .buffer_unordered(2)
            .collect()
            .await;
        results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        eprintln!(
            "built {} trees of {per} chunks in {:.1} s",
            args.manifests,
            started.elapsed().as_secs_f64()
        );
    }
    let tags = store.list_tags().await?;
    let rss_before = peak_rss();
    // Baseline: read every object the mark phase reads, and nothing else.
    let started = Instant::now();
    let reads = tags
        .iter()
        .flat_map(|(_, id)| [manifest_key(id), chunk_map_key(id)]);
    let sizes: Vec<_> = futures::stream::iter(
        reads.map(|key| async move { store.get(&key).await.map(|b| b.len() as u64) }),
    )
    .buffer_unordered(16)
    .collect()
    .await;
    let read_bytes: u64 = sizes
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .iter()
        .sum();
    let read_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let inventory = Inventory::take(store).await?;
    let tag_states = read_tags(store, &inventory).await?;
    let live = mark(store, &inventory, &tag_states, &())
        .await
        .context("mark")?;
    let mark_s = started.elapsed().as_secs_f64();
    let chunks = live.frame_count();
    let result = serde_json::json!({
        "manifests": live.manifests.len(),
        "live_frames": chunks,
        "packs": live.frames.len(),
        "metadata_bytes": read_bytes,
        "read_seconds": read_s,
        "mark_seconds": mark_s,
        "ratio_to_reads": mark_s / read_s,
        "peak_rss_bytes": peak_rss(),
        "peak_rss_before_bytes": rss_before,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!(
            "mark: {} manifests, {chunks} live chunks in {} packs: {mark_s:.2} s; reading its {:.0} MiB of manifests and maps alone: {read_s:.2} s (ratio {:.2}x); peak RSS {:.0} MiB",
            live.manifests.len(),
            live.frames.len(),
            read_bytes as f64 / 1048576.0,
            mark_s / read_s,
            peak_rss() as f64 / 1048576.0
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}
