//! `thaw weights load`: stream a model's safetensors into GPU (or host) memory and compare the
//! rate with this machine's raw copy into the same memory, measured in the same run.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use thaw_indexer::Progress;
use thaw_weights::{
    load_plan, open_backend, plan_model, tensor_digests, DeviceKind, LoadOptions, LoadReport,
    LoadSummary, Reference,
};

use super::progress::Bar;
use super::GlobalOptions;

#[derive(Subcommand, Debug)]
pub enum WeightsCommand {
    /// Load every tensor of a model tag into one allocation on a device and report the rate
    /// against this machine's pinned host-to-device copy (host memcpy with --device cpu).
    Load(LoadArgs),
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Tag or manifest id of a model (`thaw index model`).
    name: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cuda:0")]
    device: DeviceKind,
    /// Copy lanes (threads, each with its own CUDA stream and two pinned buffers).
    #[arg(long)]
    lanes: Option<usize>,
    /// Chunks fetched at once.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Alignment of each tensor in the allocation (a power of two).
    #[arg(long, default_value_t = thaw_weights::plan::DEFAULT_ALIGNMENT, value_parser = power_of_two)]
    alignment: u64,
    /// Skip the reference copy.
    #[arg(long)]
    no_reference: bool,
    /// Read every tensor back and report its blake3 digest (checks, tests).
    #[arg(long)]
    digests: bool,
    /// Print the report and every tensor as JSON on stdout.
    #[arg(long)]
    json: bool,
}

fn power_of_two(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n.is_power_of_two() => Ok(n),
        _ => Err(format!("{s:?} is not a power of two")),
    }
}

/// Runs a `thaw weights` subcommand.
pub async fn run(global: &GlobalOptions, cmd: WeightsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        WeightsCommand::Load(args) => load(global, args).await,
    }
}

async fn load(global: &GlobalOptions, args: LoadArgs) -> anyhow::Result<ExitCode> {
    let backend = open_backend(args.device)?;
    let store = global.open_store()?;
    let (manifest, map) = store.open_manifest(&args.name).await?;
    let tiers = thaw_client::connect::streaming_tiers(&global.config, &store).await?;
    let defaults = LoadOptions::default();
    let options = LoadOptions {
        fetch_concurrency: args.concurrency.unwrap_or(defaults.fetch_concurrency),
        lanes: args.lanes.unwrap_or(defaults.lanes),
        alignment: args.alignment,
    };
    let plan = plan_model(&tiers, &manifest, &map, &args.name, options.alignment)
        .await
        .with_context(|| format!("reading the safetensors headers of {}", args.name))?;
    let bar = Arc::new(Bar::new(global.quiet || args.json));
    bar.start("weights", plan.tensor_bytes());
    let progress = bar.clone();
    let model = load_plan(
        &tiers,
        plan,
        backend.clone(),
        &options,
        Some(Arc::new(move |n| progress.advance(n))),
    )
    .await
    .with_context(|| format!("loading {} into {}", args.name, args.device))?;
    bar.finish();
    let reference = if args.no_reference {
        None
    } else {
        Some(
            backend
                .reference_copy(model.report.tensor_bytes)
                .context("measuring the reference copy")?,
        )
    };
    if args.json {
        let summary = LoadSummary::of(&model, reference, &backend.describe(), args.digests)?;
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_table(
            &args.name,
            &backend.describe(),
            &model.report,
            reference.as_ref(),
        );
        if args.digests {
            for (tensor, digest) in model.plan.tensors.iter().zip(tensor_digests(&model)?) {
                println!(
                    "{digest}  {}:{}",
                    model.plan.files[tensor.file], tensor.name
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn gb_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / seconds.max(1e-9) / 1e9
}

fn print_table(name: &str, device: &str, report: &LoadReport, reference: Option<&Reference>) {
    println!(
        "{name}: {} files, {} tensors, {} into {device}",
        report.files,
        report.tensors,
        bytesize::ByteSize(report.tensor_bytes)
    );
    println!(
        "{:<28} {:>12} {:>9} {:>8} {:>7}",
        "path", "bytes", "seconds", "GB/s", "ratio"
    );
    let reference_rate = reference.map(|r| gb_per_s(r.bytes, r.seconds));
    let row = |label: &str, bytes: u64, seconds: f64| {
        let rate = gb_per_s(bytes, seconds);
        let ratio = reference_rate.map_or("-".to_string(), |r| format!("{:.2}x", rate / r));
        println!(
            "{label:<28} {:>12} {seconds:>9.3} {rate:>8.2} {ratio:>7}",
            bytesize::ByteSize(bytes).to_string()
        );
    };
    row(
        &format!("thaw tiers -> {}", report.device),
        report.tensor_bytes,
        report.seconds,
    );
    if let Some(r) = reference {
        row(&r.name, r.bytes, r.seconds);
    }
    let s = &report.sources;
    let caches: Vec<String> = s
        .cache_hits
        .iter()
        .map(|(tier, hits)| format!("{tier} {hits}"))
        .collect();
    println!(
        "chunks: {} ({}; peers {}, store {} = {}); {} lanes, {} fetches at once, allocation {:.3}s",
        report.chunks,
        caches.join(", "),
        s.peer_chunks,
        s.store_chunks,
        bytesize::ByteSize(s.store_bytes),
        report.lanes,
        report.fetch_concurrency,
        report.allocate_seconds,
    );
}
