//! Store lifecycle commands: `thaw gc`, `check`, `repair`, `tag`, `unlock` (thaw-maintenance).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use thaw_core::progress::Progress;
use thaw_maintenance::check::{check_store, CheckOptions};
use thaw_maintenance::gc::{collect_garbage, GcOptions, DEFAULT_REPACK_BELOW};
use thaw_maintenance::repair::{repair_store, RepairOptions};
use thaw_maintenance::retention::Retention;

use super::progress::Bar;
use super::GlobalOptions;

#[derive(Args, Debug)]
pub struct GcArgs {
    /// Say what would be deleted and repacked; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Keep unreferenced objects younger than this (work of writers that do not lock).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    grace: Duration,
    /// Rewrite packs whose live bytes are below this share of their size (0 turns it off).
    #[arg(long, default_value_t = DEFAULT_REPACK_BELOW)]
    repack_below: f64,
    /// Retention: keep only the newest N tags under --prefix (removed before marking).
    #[arg(long, requires = "prefix")]
    keep_last: Option<usize>,
    /// The tag name prefix --keep-last applies to.
    #[arg(long, requires = "keep_last")]
    prefix: Option<String>,
    /// How long to wait for writers to finish.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    lock_wait: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Also read every pack and verify every chunk.
    #[arg(long, conflicts_with = "read_data_subset")]
    read_data: bool,
    /// Read and verify this share of the packs, chosen at random (`10%`).
    #[arg(long, value_parser = percent)]
    read_data_subset: Option<f64>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct RepairArgs {
    /// Say what would be repaired; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// How long to wait for writers to finish.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    lock_wait: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
pub enum TagCommand {
    /// List tags: manifest, when each was set, name.
    Ls,
    /// Remove tags (their trees go at the next `thaw gc`).
    Rm {
        /// Tag names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Rename a tag, keeping its history.
    Mv {
        /// The tag.
        from: String,
        /// Its new name.
        to: String,
        /// Replace an existing tag of the new name.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// Remove every lock, not only stale ones (only when no thaw is writing to the store).
    #[arg(long)]
    all: bool,
}

/// `10%` or `10` -> 10.0, within 0-100.
fn percent(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{text:?} is not a percentage"))?;
    if (0.0..=100.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{text} is not between 0% and 100%"))
    }
}

fn print_report(report: &(impl std::fmt::Display + serde::Serialize), json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).expect("report serialises")
        );
    } else {
        println!("{report}");
    }
}

pub async fn gc(global: &GlobalOptions, args: GcArgs) -> anyhow::Result<ExitCode> {
    let store = global.open_store()?;
    let options = GcOptions {
        dry_run: args.dry_run,
        grace: args.grace,
        repack_below: args.repack_below,
        retention: match (args.keep_last, args.prefix) {
            (Some(keep_last), Some(prefix)) => vec![Retention { prefix, keep_last }],
            _ => Vec::new(),
        },
        lock_wait: args.lock_wait,
    };
    let bar = Bar::new(global.quiet || args.json);
    let report = collect_garbage(&store, &options, &bar).await?;
    bar.finish();
    print_report(&report, args.json);
    Ok(ExitCode::SUCCESS)
}

pub async fn check(global: &GlobalOptions, args: CheckArgs) -> anyhow::Result<ExitCode> {
    let store = global.open_store()?;
    let options = CheckOptions {
        read_data_percent: if args.read_data {
            100.0
        } else {
            args.read_data_subset.unwrap_or(0.0)
        },
    };
    let bar = Bar::new(global.quiet || args.json);
    let report = check_store(&store, &options, &bar).await?;
    bar.finish();
    print_report(&report, args.json);
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn repair(global: &GlobalOptions, args: RepairArgs) -> anyhow::Result<ExitCode> {
    let store = global.open_store()?;
    let options = RepairOptions {
        dry_run: args.dry_run,
        lock_wait: args.lock_wait,
    };
    let bar = Bar::new(global.quiet || args.json);
    let report = repair_store(&store, &options, &bar).await?;
    bar.finish();
    print_report(&report, args.json);
    Ok(ExitCode::SUCCESS)
}

pub async fn tag(global: &GlobalOptions, command: TagCommand) -> anyhow::Result<ExitCode> {
    let store = global.open_store()?;
    match command {
        TagCommand::Ls => {
            for (name, _) in store.list_tags().await? {
                let current = store.tag_versions(&name).await?[0];
                let set = current
                    .set_unix_ms
                    .map(|ms| {
                        humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH + Duration::from_millis(ms),
                        )
                        .to_string()
                    })
                    .unwrap_or_else(|| "-".into());
                println!("{}  {set:<20}  {name}", current.manifest);
            }
        }
        TagCommand::Rm { names } => {
            for name in names {
                store.delete_tag(&name).await?;
                println!("removed tag {name}");
            }
        }
        TagCommand::Mv { from, to, force } => {
            thaw_maintenance::tags::move_tag(&store, &from, &to, force, Duration::from_secs(600))
                .await?;
            println!("renamed tag {from} to {to}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn unlock(global: &GlobalOptions, args: UnlockArgs) -> anyhow::Result<ExitCode> {
    let store = global.open_store()?;
    for lock in thaw_core::lock::remove_locks(&store, args.all).await? {
        match lock.info {
            Some(info) => println!("removed {}: {info}", lock.key),
            None => println!("removed {} (unreadable)", lock.key),
        }
    }
    Ok(ExitCode::SUCCESS)
}
