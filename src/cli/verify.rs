//! `thaw verify`.

use std::process::ExitCode;

use clap::Args;
use thaw_core::pack::pack_key;
use thaw_core::verify::verify_manifest;
use thaw_indexer::Progress;

use super::progress::Bar;
use super::GlobalOptions;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Tag or manifest id.
    name: String,
    /// Chunks fetched at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

pub async fn verify(global: &GlobalOptions, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let store = global.open_store()?;
    let (manifest, map) = store.open_manifest(&args.name).await?;
    let bar = Bar::new(global.quiet);
    bar.start(
        "verifying",
        map.locations.iter().map(|l| l.raw_len as u64).sum(),
    );
    let report = verify_manifest(&store, &manifest, &map, args.concurrency, |n| {
        bar.advance(n)
    })
    .await?;
    bar.finish();
    for bad in &report.bad_chunks {
        println!(
            "BAD chunk {} in {} at offset {}: {}",
            bad.id,
            pack_key(&bad.location.pack),
            bad.location.offset,
            bad.error
        );
    }
    for problem in &report.other_problems {
        println!("BAD {problem}");
    }
    if report.is_ok() {
        println!(
            "ok: {} chunks, {} verified",
            report.chunks,
            bytesize::ByteSize(report.bytes)
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "FAILED: {} of {} chunks bad, {} other problems",
            report.bad_chunks.len(),
            report.chunks,
            report.other_problems.len()
        );
        Ok(ExitCode::FAILURE)
    }
}
