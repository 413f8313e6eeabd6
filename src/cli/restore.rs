//! `thaw extract`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use thaw_indexer::extract::{extract as extract_tree, ExtractOptions};

use super::progress::Bar;
use super::GlobalOptions;

#[derive(Args, Debug)]
pub struct ExtractArgs {
    /// Tag or manifest id.
    name: String,
    /// Destination directory (created; must be empty if it exists).
    dest: PathBuf,
    /// Files written at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Do not restore owners (the default when not running as root).
    #[arg(long)]
    no_owners: bool,
    /// Also keep the fetched chunks in the disk cache. Off by default: the extracted tree is
    /// the local copy, and filling the cache would write every byte twice.
    #[arg(long)]
    fill_cache: bool,
}

pub async fn extract(global: &GlobalOptions, args: ExtractArgs) -> anyhow::Result<ExitCode> {
    let store = global.open_store()?;
    let (manifest, map) = store.open_manifest(&args.name).await?;
    let tiers = global.tiers(&store, args.fill_cache).await?;
    let mut options = ExtractOptions {
        concurrency: args.concurrency,
        ..ExtractOptions::default()
    };
    if args.no_owners {
        options.restore_owners = false;
    }
    let bar = std::sync::Arc::new(Bar::new(global.quiet));
    let started = std::time::Instant::now();
    let report = extract_tree(&tiers, &manifest, &map, &args.dest, &options, bar)
        .await
        .with_context(|| format!("extracting {} into {}", args.name, args.dest.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "extracted {} entries, {} in {seconds:.2}s",
        report.entries,
        bytesize::ByteSize(report.bytes)
    );
    Ok(ExitCode::SUCCESS)
}
