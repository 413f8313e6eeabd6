//! `thaw cache status|check|prune`: the local disk cache.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Subcommand;
use thaw_core::tier::{CacheStatus, DiskCache};
use thaw_indexer::Progress;

use super::progress::Bar;
use super::GlobalOptions;

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// Bytes, files and hit ratio of the disk cache, against its budget (works while a mount
    /// or cache server has it open: then as of their last flush).
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-read every cached object and check it against its hash; drop and list each bad one
    /// (exit 1 when there was any). Needs the cache closed (no mount or cache server on it).
    Check,
    /// Delete least recently used objects until at most --to bytes are held (default: all).
    Prune {
        /// Bytes to keep, e.g. 10GiB.
        #[arg(long, default_value = "0")]
        to: bytesize::ByteSize,
    },
}

fn cache_dir(global: &GlobalOptions) -> anyhow::Result<PathBuf> {
    match global.cache_config(true).disk_dir {
        Some(dir) => Ok(dir),
        None => bail!("the disk cache is off (--no-disk-cache or THAW_DISK_CACHE=0)"),
    }
}

fn open(global: &GlobalOptions) -> anyhow::Result<DiskCache> {
    let dir = cache_dir(global)?;
    DiskCache::open(&dir, global.cache_config(true).disk_bytes).with_context(|| {
        format!(
            "opening the disk cache {} (a running mount or cache server holds it open: stop it first)",
            dir.display()
        )
    })
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Runs one `thaw cache` command.
pub fn run(
    global: &GlobalOptions,
    runtime: &tokio::runtime::Runtime,
    command: CacheCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        CacheCommand::Status { json } => {
            let dir = cache_dir(global)?;
            let status = CacheStatus::read(&dir)
                .with_context(|| format!("reading the disk cache {}", dir.display()))?;
            let budget = global.cache_config(true).disk_bytes;
            if json {
                let mut value = serde_json::to_value(&status)?;
                value["budget"] = budget.into();
                value["hit_ratio"] = status.hit_ratio().into();
                println!("{}", serde_json::to_string_pretty(&value)?);
                return Ok(ExitCode::SUCCESS);
            }
            let ratio = match status.hit_ratio() {
                Some(r) => format!("{:.1}%", r * 100.0),
                None => "-".into(),
            };
            println!("cache:      {}", status.dir.display());
            println!(
                "held:       {} of a {} budget",
                mib(status.bytes),
                mib(budget)
            );
            println!(
                "files:      {} chunk files, {} whole files",
                status.chunk_files, status.whole_files
            );
            println!(
                "hit ratio:  {ratio} ({} hits, {} misses)",
                status.hits, status.misses
            );
            if status.in_use {
                println!("in use:     yes (or its last holder did not close it); figures as of its last flush");
            }
        }
        CacheCommand::Check => {
            let cache = open(global)?;
            let bar = Bar::new(global.quiet);
            bar.start("checking", cache.used_bytes());
            let report = cache.check(|bytes| bar.advance(bytes))?;
            bar.finish();
            for bad in &report.bad {
                println!(
                    "bad {:?} {}: {} (dropped)",
                    bad.kind,
                    bad.path.display(),
                    bad.reason
                );
            }
            println!(
                "checked {} objects, {}: {} bad",
                report.objects,
                mib(report.bytes),
                report.bad.len()
            );
            if !report.bad.is_empty() {
                return Ok(ExitCode::from(1));
            }
        }
        CacheCommand::Prune { to } => {
            let cache = open(global)?;
            // What gc took out of the store goes first; an unreachable store is no reason
            // not to prune.
            let store = global.open_store()?;
            let state = thaw_maintenance::freed::state_file(&cache_dir(global)?);
            match runtime.block_on(thaw_maintenance::freed::forget_freed(
                &store, &cache, &state,
            )) {
                Ok(evicted) => println!("evicted {evicted} chunks the store no longer holds"),
                Err(e) => eprintln!("thaw: not following the store's freed-chunk log: {e}"),
            }
            let report = cache.prune(to.as_u64())?;
            println!(
                "pruned {} objects, {}; {} held",
                report.objects,
                mib(report.bytes),
                mib(cache.used_bytes())
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
