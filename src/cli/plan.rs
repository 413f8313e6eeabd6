//! `thaw plan buffer|place|serve`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use thaw_planner::args::PlanArgs;
use thaw_planner::cluster::{read_nodes, PeerAccess};
use thaw_planner::demand::{read_trace, Demand};
use thaw_planner::extender::ExtenderState;
use thaw_planner::links::LinkArgs;
use thaw_planner::offers::read_offers;
use thaw_planner::place::{place_least_loaded, place_lp, place_random, read_replicas};

use super::GlobalOptions;

#[derive(Subcommand, Debug)]
pub enum PlanCommand {
    /// GPUs of each offer to hold per window, running and idle in the buffer, at least cost,
    /// so that demand up to a quantile finds a GPU within the latency target.
    Buffer(BufferArgs),
    /// Which node each replica starts on, so that the bytes it fetches from outside its node
    /// (its time to ready) are least, within free GPUs.
    Place(PlaceArgs),
    /// A kube-scheduler extender (`/filter`, `/prioritize`) scoring nodes by the share of a
    /// pod's image and model bytes they and their peers hold.
    Serve(ServeArgs),
}

#[derive(Args, Debug)]
pub struct BufferArgs {
    /// Demand from a request trace (`arrival_s,service_s`).
    #[arg(long, conflicts_with = "forecast")]
    trace: Option<PathBuf>,
    /// Demand from a forecast (`window_start_s,requests`); needs --throughput.
    #[arg(long)]
    forecast: Option<PathBuf>,
    /// GPU offers: `kind,region,price_per_hour,available,boot_s`.
    #[arg(long)]
    offers: PathBuf,
    /// Cold-start times (`thaw bench coldstart --json`); the path is --path.
    #[arg(long, conflicts_with = "cold_start")]
    coldstart_json: Option<PathBuf>,
    /// The cold-start path to plan for [default: the fastest].
    #[arg(long, requires = "coldstart_json")]
    path: Option<String>,
    /// Seconds a replica takes to be ready on a booted GPU.
    #[arg(long)]
    cold_start: Option<f64>,
    #[command(flatten)]
    plan: PlanArgs,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct PlaceArgs {
    /// Replicas: `{"replicas": [{"name", "image", "model", "gpus"}]}`.
    #[arg(long)]
    replicas: PathBuf,
    /// Nodes: `{"nodes": [{"name", "free_gpus", "peer" or "inventory"}]}`.
    #[arg(long)]
    nodes: PathBuf,
    #[command(flatten)]
    links: LinkArgs,
    /// Cheapest nodes offered to each replica in the program (0: every node).
    #[arg(long, default_value_t = thaw_planner::place::DEFAULT_CANDIDATES)]
    candidates: usize,
    /// Also place randomly and on the least-loaded node, and compare.
    #[arg(long)]
    compare: bool,
    /// Print the placement as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7080")]
    listen: String,
    /// Nodes and their cache servers (as for `thaw plan place`), re-read every --refresh.
    #[arg(long)]
    nodes: PathBuf,
    /// How often to re-read the nodes and their inventories.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    refresh: std::time::Duration,
    /// For pods whose tags thaw holds, filter out nodes no cache server reported on.
    #[arg(long)]
    require_thaw: bool,
    #[command(flatten)]
    links: LinkArgs,
}

/// The cold start to plan for.
fn cold_start(args: &BufferArgs) -> anyhow::Result<f64> {
    match (&args.coldstart_json, args.cold_start) {
        (_, Some(seconds)) => Ok(seconds),
        (Some(file), None) => Ok(thaw_planner::coldstart::ready_seconds(
            file,
            args.path.as_deref(),
        )?),
        (None, None) => bail!("give --coldstart-json FILE or --cold-start SECONDS"),
    }
}

fn buffer(args: BufferArgs) -> anyhow::Result<ExitCode> {
    let offers = read_offers(&args.offers)?;
    let cold_start = cold_start(&args)?;
    let plan = match (&args.trace, &args.forecast) {
        (Some(trace), _) => args.plan.plan(&read_trace(trace)?, offers, cold_start)?,
        (None, Some(forecast)) => args.plan.plan_forecast(
            Demand::read_forecast(forecast, args.plan.window)?,
            offers,
            cold_start,
        )?,
        (None, None) => bail!("give --trace FILE or --forecast FILE"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        println!("{plan}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The token and TLS the configuration gives for reaching cache servers.
fn peer_access(global: &GlobalOptions) -> anyhow::Result<PeerAccess> {
    Ok(PeerAccess {
        token: thaw_client::connect::peer_token(&global.config)?,
        tls: thaw_client::connect::peer_tls(&global.config)?,
    })
}

async fn place(global: &GlobalOptions, args: PlaceArgs) -> anyhow::Result<ExitCode> {
    let cluster = read_nodes(&args.nodes, &peer_access(global)?).await?;
    for warning in &cluster.warnings {
        eprintln!("warning: {warning}");
    }
    let replicas = read_replicas(&args.replicas)?;
    let links = args.links.links()?;
    let mut placements = vec![place_lp(&cluster, &replicas, &links, args.candidates)?];
    if args.compare {
        placements.push(place_random(&cluster, &replicas, &links, 1)?);
        placements.push(place_least_loaded(&cluster, &replicas, &links)?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&placements)?);
    } else {
        println!("{}", placements[0]);
        if args.compare {
            println!();
            println!("{}", thaw_planner::place::comparison(&placements));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(global: &GlobalOptions, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let access = peer_access(global)?;
    let cluster = read_nodes(&args.nodes, &access).await?;
    let state = ExtenderState::new(cluster, args.links.links()?, args.require_thaw);
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    eprintln!("extender listening on http://{}", listener.local_addr()?);
    thaw_planner::serve::serve(listener, state, args.nodes, access, args.refresh).await?;
    Ok(ExitCode::SUCCESS)
}

/// Runs a `thaw plan` subcommand.
pub fn run(
    global: &GlobalOptions,
    runtime: &tokio::runtime::Runtime,
    cmd: PlanCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        PlanCommand::Buffer(args) => buffer(args),
        PlanCommand::Place(args) => runtime.block_on(place(global, args)),
        PlanCommand::Serve(args) => runtime.block_on(serve(global, args)),
    }
}
