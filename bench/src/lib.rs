//! thaw-bench: the measurements behind `thaw bench`, which people run on their own setup.
//! `coldstart` measures one start of an image's command every way there is (pull + unpack + run,
//! thaw's lazy mount with and without its trace and a warm peer, a snapshot restore), stage by
//! stage, and writes its result as [`ColdstartResult`] JSON; `utilisation` reads that JSON and
//! replays a request trace against a simple autoscaler ([`autoscaler`]) for each path, reporting
//! GPU allocation utilisation and queueing delay. It drives the `thaw` program it runs in as a
//! user would (subcommands in child processes) and owns no storage or mount logic; being a
//! harness, it reports errors with anyhow like the binary.

mod autoscaler;
mod coldstart;
mod mark;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use autoscaler::{simulate, Policy, Request};
pub use coldstart::report::ColdstartResult;
use thaw_client::Config;

/// `thaw bench ...`.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time one start of an image's command from a cold node, every way: pull + unpack + run,
    /// thaw lazy mount, with trace prefetch, with a warm peer, from a snapshot; stage by stage,
    /// with the bytes each source delivered.
    Coldstart(Box<coldstart::ColdstartArgs>),
    /// GPU allocation utilisation (GPU-seconds running application code / GPU-seconds paid) and
    /// p99 queueing delay of a request trace under a simple autoscaler, for each cold-start path.
    Utilisation(UtilisationArgs),
    /// gc's mark phase on a synthetic store of many chunks (1M by default), against reading the
    /// same manifests and chunk maps alone, with peak memory.
    Mark(mark::MarkArgs),
}

/// `thaw bench utilisation`.
#[derive(Args, Debug)]
pub struct UtilisationArgs {
    /// Cold-start results: `{"paths": [{"name": "naive", "ready_seconds": 33.1}, ...]}` (the
    /// shape `thaw bench coldstart --json` writes).
    #[arg(long)]
    coldstart_json: PathBuf,
    /// Request trace, CSV with a header: `arrival_s,service_s` (benches/traces/bursty.csv).
    #[arg(long)]
    trace: PathBuf,
    /// Seconds a replica stays up after its last request.
    #[arg(long, default_value_t = 60.0)]
    idle_timeout: f64,
    /// Requests a replica serves at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Most replicas at once.
    #[arg(long, default_value_t = 1000)]
    max_replicas: usize,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs a `thaw bench` subcommand.
pub fn run(
    global: &Config,
    runtime: &tokio::runtime::Runtime,
    cmd: BenchCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Coldstart(args) => runtime.block_on(coldstart::run(global, *args)),
        BenchCommand::Utilisation(args) => utilisation(args),
        BenchCommand::Mark(args) => {
            let store = thaw_client::connect::open_store(global)?;
            runtime.block_on(mark::run(&store, args))
        }
    }
}

/// (name, seconds to ready) of each path in a cold-start result file.
fn read_paths(file: &PathBuf) -> anyhow::Result<Vec<(String, f64)>> {
    let text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let deserializer = &mut serde_json::Deserializer::from_slice(&text);
    let result: ColdstartResult = serde_path_to_error::deserialize(deserializer)
        .with_context(|| format!("{}: not a cold-start result", file.display()))?;
    if result.paths.is_empty() {
        bail!("{}: no paths", file.display());
    }
    result
        .paths
        .into_iter()
        .enumerate()
        .map(|(i, path)| match path.ready_seconds {
            s if s.is_finite() && s >= 0.0 => Ok((path.name, s)),
            _ => bail!(
                "{}: paths[{i}].ready_seconds missing or negative",
                file.display()
            ),
        })
        .collect()
}

/// A finite, non-negative number.
fn non_negative(field: &str) -> Option<f64> {
    field
        .trim()
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
}

/// The requests of a trace file, sorted by arrival.
fn read_trace(file: &PathBuf) -> anyhow::Result<Vec<Request>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.trim() == "arrival_s,service_s" => {}
        _ => bail!(
            "{}: the first line must be arrival_s,service_s",
            file.display()
        ),
    }
    let mut requests = Vec::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || {
            format!(
                "{}: line {}: expected two non-negative numbers",
                file.display(),
                i + 1
            )
        };
        let (a, s) = line.split_once(',').with_context(bad)?;
        let arrival = non_negative(a).with_context(bad)?;
        let service = non_negative(s).with_context(bad)?;
        requests.push(Request { arrival, service });
    }
    if requests.is_empty() {
        bail!("{}: no requests", file.display());
    }
    requests.sort_by(|a, b| a.arrival.total_cmp(&b.arrival));
    Ok(requests)
}

fn utilisation(args: UtilisationArgs) -> anyhow::Result<ExitCode> {
    let paths = read_paths(&args.coldstart_json)?;
    let requests = read_trace(&args.trace)?;
    let policy = Policy {
        concurrency: args.concurrency.max(1),
        idle_timeout: args.idle_timeout.max(0.0),
        max_replicas: args.max_replicas.max(1),
    };
    let results: Vec<(String, f64, autoscaler::Outcome)> = paths
        .into_iter()
        .map(|(name, ready)| {
            let outcome = simulate(&requests, ready, &policy);
            (name, ready, outcome)
        })
        .collect();
    if args.json {
        let rows: Vec<serde_json::Value> = results
            .iter()
            .map(|(name, ready, o)| {
                let mut v = serde_json::to_value(o).expect("outcome serialises");
                v["name"] = name.clone().into();
                v["ready_seconds"] = (*ready).into();
                v
            })
            .collect();
        let json = serde_json::json!({
            "requests": requests.len(),
            "policy": {
                "concurrency": policy.concurrency,
                "idle_timeout": policy.idle_timeout,
                "max_replicas": policy.max_replicas,
            },
            "paths": rows,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} requests; replicas serve {} at once, stay up {}s after their last request, at most {}",
        requests.len(),
        policy.concurrency,
        policy.idle_timeout,
        policy.max_replicas
    );
    println!(
        "{:<24} {:>9} {:>12} {:>10} {:>10} {:>9} {:>11}",
        "path", "ready s", "utilisation", "p50 wait", "p99 wait", "replicas", "GPU-h paid"
    );
    for (name, ready, o) in &results {
        println!(
            "{name:<24} {ready:>9.2} {:>11.1}% {:>9.2}s {:>9.2}s {:>9} {:>11.3}",
            o.utilisation * 100.0,
            o.p50_delay,
            o.p99_delay,
            o.replicas_started,
            o.gpu_seconds_paid / 3600.0
        );
    }
    Ok(ExitCode::SUCCESS)
}
