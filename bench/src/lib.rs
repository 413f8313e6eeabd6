//! thaw-bench: the measurements behind `thaw bench`, which people run on their own setup.
//! `coldstart` measures one start of an image's command every way there is (pull + unpack + run,
//! thaw's lazy mount with and without its trace and a warm peer, a snapshot restore), stage by
//! stage, and writes its result as [`ColdstartResult`] JSON; `utilisation` reads that JSON and
//! replays a request trace against a simple autoscaler over a pool of GPUs ([`autoscaler`]) for
//! each path, reporting GPU allocation utilisation, queueing delay and cost, with no idle buffer,
//! a fixed one or the planner's (thaw-planner); `place` compares the planner's placement with
//! random and least-loaded placement on a cluster simulated from the store's tags; `mark` times
//! gc's mark phase. It drives the `thaw` program it runs in as a user would (subcommands in
//! child processes) and owns no storage or mount logic; being a harness, it reports errors with
//! anyhow like the binary.

mod autoscaler;
mod coldstart;
mod mark;
mod place;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use autoscaler::{simulate, Buffer, Policy, Pool, PoolOffer, Request};
pub use coldstart::report::ColdstartResult;
use thaw_client::Config;

/// `thaw bench ...`.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time one start of an image's command from a cold node, every way: pull + unpack + run,
    /// thaw lazy mount, with trace prefetch, with a warm peer, from a snapshot; stage by stage,
    /// with the bytes each source delivered.
    Coldstart(Box<coldstart::ColdstartArgs>),
    /// GPU allocation utilisation (GPU-seconds running application code / GPU-seconds paid),
    /// p99 queueing delay and cost of a request trace under a simple autoscaler, for each
    /// cold-start path; with --offers, under no buffer, a fixed buffer and the planner's.
    Utilisation(UtilisationArgs),
    /// gc's mark phase on a synthetic store of many chunks (1M by default), against reading the
    /// same manifests and chunk maps alone, with peak memory.
    Mark(mark::MarkArgs),
    /// The placement program against random and least-loaded placement on a simulated cluster
    /// built from the store's tags (inventories computed chunk by chunk), with its solve time.
    Place(place::PlaceArgs),
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
    #[command(flatten)]
    buffers: BufferArgs,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

/// With `--offers`, each path is replayed three ways: no buffer, a fixed buffer, the planner's.
#[derive(Args, Debug)]
pub struct BufferArgs {
    /// GPU offers (`kind,region,price_per_hour,available,boot_s`): new GPUs boot for the offer's
    /// time and the buffer policies are compared. Without it GPUs are there when asked for.
    #[arg(long)]
    offers: Option<PathBuf>,
    /// The trace the planner plans from (yesterday's traffic) [default: --trace itself].
    #[arg(long)]
    plan_from: Option<PathBuf>,
    /// GPUs the fixed buffer keeps idle [default: the most the plan holds in any window].
    #[arg(long)]
    fixed_buffer: Option<u64>,
    #[command(flatten)]
    plan: thaw_planner::args::PlanArgs,
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
        BenchCommand::Place(args) => {
            let store = thaw_client::connect::open_store(global)?;
            runtime.block_on(place::run(&store, args))
        }
    }
}

/// One replay: a path under a buffer policy.
struct Row {
    path: String,
    ready: f64,
    policy: String,
    outcome: autoscaler::Outcome,
}

/// The policies to replay one path under: (name, pool).
fn pools(
    args: &BufferArgs,
    plan_from: &[Request],
    cold_start: f64,
) -> anyhow::Result<Vec<(String, Pool)>> {
    let Some(offers_file) = &args.offers else {
        return Ok(vec![("none".into(), Pool::instant())]);
    };
    let offers = thaw_planner::offers::read_offers(offers_file)?;
    let plan = args.plan.plan(plan_from, offers.clone(), cold_start)?;
    let pool_offers: Vec<PoolOffer> = offers
        .iter()
        .map(|o| PoolOffer {
            price_per_hour: o.price_per_hour,
            boot_s: o.boot_s,
            available: o.available,
        })
        .collect();
    let fixed = args.fixed_buffer.unwrap_or_else(|| plan.peak());
    let planned = Buffer::Planned {
        window_s: plan.window_s,
        held: plan.windows.iter().map(|w| w.held.clone()).collect(),
        lead_s: plan.offers.iter().map(|o| o.lead_s).collect(),
    };
    Ok([
        ("none".to_string(), Buffer::None),
        (format!("fixed {fixed}"), Buffer::Fixed(fixed)),
        ("planned".to_string(), planned),
    ]
    .into_iter()
    .map(|(name, buffer)| {
        (
            name,
            Pool {
                offers: pool_offers.clone(),
                buffer,
            },
        )
    })
    .collect())
}

fn utilisation(args: UtilisationArgs) -> anyhow::Result<ExitCode> {
    let paths = thaw_planner::coldstart::read_paths(&args.coldstart_json)?;
    let requests = thaw_planner::demand::read_trace(&args.trace)?;
    let plan_from = match &args.buffers.plan_from {
        Some(file) => thaw_planner::demand::read_trace(file)?,
        None => requests.clone(),
    };
    let policy = Policy {
        concurrency: args.concurrency.max(1),
        idle_timeout: args.idle_timeout.max(0.0),
        max_replicas: args.max_replicas.max(1),
    };
    let mut rows = Vec::new();
    for path in paths {
        for (name, pool) in pools(&args.buffers, &plan_from, path.ready_seconds)? {
            rows.push(Row {
                outcome: simulate(&requests, path.ready_seconds, &policy, &pool),
                path: path.name.clone(),
                ready: path.ready_seconds,
                policy: name,
            });
        }
    }
    if args.json {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|row| {
                let mut v = serde_json::to_value(&row.outcome).expect("outcome serialises");
                v["name"] = row.path.clone().into();
                v["ready_seconds"] = row.ready.into();
                v["policy"] = row.policy.clone().into();
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
        "{:<24} {:>9} {:<10} {:>11} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "path",
        "ready s",
        "buffer",
        "utilisation",
        "p50 wait",
        "p99 wait",
        "replicas",
        "GPU-h paid",
        "cost"
    );
    for row in &rows {
        let o = &row.outcome;
        println!(
            "{:<24} {:>9.2} {:<10} {:>10.1}% {:>8.2}s {:>8.2}s {:>9} {:>10.3} {:>9.2}",
            row.path,
            row.ready,
            row.policy,
            o.utilisation * 100.0,
            o.p50_delay,
            o.p99_delay,
            o.replicas_started,
            o.gpu_seconds_paid / 3600.0,
            o.cost
        );
    }
    Ok(ExitCode::SUCCESS)
}
