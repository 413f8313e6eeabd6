//! `thaw index dir|model`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use thaw_core::chunker::Chunker;
use thaw_indexer::{index_tree, IndexOptions, SourceKind};

use super::progress::Bar;
use super::GlobalOptions;

#[derive(Subcommand, Debug)]
pub enum IndexCommand {
    /// Any directory tree: files, symlinks, hard links, holes, devices, xattrs, owners, mtimes.
    Dir(IndexArgs),
    /// A model folder: safetensors headers validated, config and tokenizer files kept.
    Model(IndexArgs),
}

#[derive(Args, Debug)]
pub struct IndexArgs {
    /// The directory to index.
    path: PathBuf,
    /// Tag to point at the new manifest (set only once everything is stored).
    #[arg(long)]
    tag: Option<String>,
    /// fastcdc[:MIN:AVG:MAX] or fixed[:SIZE] [default: fastcdc for dir, fixed:4194304 for model]
    #[arg(long)]
    chunker: Option<Chunker>,
    /// zstd level for new chunks.
    #[arg(long, default_value_t = thaw_core::pack::ZSTD_LEVEL)]
    zstd_level: i32,
    /// Seal packs at this size.
    #[arg(long, default_value = "64MiB")]
    pack_bytes: bytesize::ByteSize,
    /// Worker threads [default: number of CPUs].
    #[arg(long)]
    threads: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(
    global: &GlobalOptions,
    runtime: &tokio::runtime::Runtime,
    cmd: IndexCommand,
) -> anyhow::Result<ExitCode> {
    let (kind, args) = match cmd {
        IndexCommand::Dir(a) => (SourceKind::Directory, a),
        IndexCommand::Model(a) => (SourceKind::Model, a),
    };
    let store = global.open_store()?;
    let mut options = IndexOptions {
        chunker: args.chunker,
        zstd_level: args.zstd_level,
        pack_target_bytes: args.pack_bytes.as_u64(),
        ..IndexOptions::default()
    };
    if let Some(threads) = args.threads {
        options.threads = threads;
    }
    let bar = Bar::new(global.quiet);
    let started = std::time::Instant::now();
    let report = index_tree(
        &store,
        runtime.handle(),
        &args.path,
        kind,
        args.tag.as_deref(),
        &options,
        &bar,
    )
    .with_context(|| format!("indexing {}", args.path.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    for skipped in &report.skipped_indexes {
        eprintln!("thaw: warning: pack index not trusted for dedup: {skipped}");
    }
    if args.json {
        let json = serde_json::json!({
            "manifest": report.manifest.to_hex(),
            "tag": args.tag,
            "entries": report.entries,
            "bytes_read": report.bytes_read,
            "chunks": report.chunks,
            "new_chunks": report.new_chunks,
            "new_raw_bytes": report.new_raw_bytes,
            "new_stored_bytes": report.new_stored_bytes,
            "packs": report.packs,
            "skipped_indexes": report.skipped_indexes,
            "seconds": seconds,
        });
        println!("{json}");
    } else {
        println!("manifest   {}", report.manifest);
        if let Some(tag) = &args.tag {
            println!("tag        {tag}");
        }
        println!("entries    {}", report.entries);
        println!(
            "read       {} in {seconds:.2}s ({}/s)",
            bytesize::ByteSize(report.bytes_read),
            bytesize::ByteSize((report.bytes_read as f64 / seconds.max(1e-9)) as u64)
        );
        println!(
            "chunks     {} ({} new, {} raw -> {} stored)",
            report.chunks,
            report.new_chunks,
            bytesize::ByteSize(report.new_raw_bytes),
            bytesize::ByteSize(report.new_stored_bytes)
        );
        println!("packs      {} written", report.packs);
    }
    Ok(ExitCode::SUCCESS)
}
