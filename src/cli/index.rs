//! `thaw index dir|model|image`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use thaw_core::chunker::Chunker;
use thaw_indexer::image::{index_image, ImageOptions, ImageRef, PlatformSpec, RegistryOptions};
use thaw_indexer::{index_tree, IndexOptions, IndexSummary, SourceKind};

use super::progress::Bar;
use super::GlobalOptions;

#[derive(Subcommand, Debug)]
pub enum IndexCommand {
    /// Any directory tree: files, symlinks, hard links, holes, devices, xattrs, owners, mtimes.
    Dir(IndexArgs),
    /// A model folder: safetensors headers validated, config and tokenizer files kept.
    Model(IndexArgs),
    /// A container image, flattened as a runtime would: docker://REGISTRY/REPO:TAG (or @DIGEST),
    /// oci:DIR[:TAG] or docker-archive:FILE. Layers stream from the source (nothing is unpacked
    /// to disk) and layers already in the store are not read again.
    Image(ImageArgs),
}

/// What every index command takes.
#[derive(Args, Debug)]
pub struct WriteArgs {
    /// Tag to point at the new manifest (set only once everything is stored).
    #[arg(long)]
    tag: Option<String>,
    /// fastcdc[:MIN:AVG:MAX] or fixed[:SIZE] [default: fastcdc; fixed:4194304 for model]
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
    /// How long to wait while `thaw gc` or `thaw repair` holds the store.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    lock_wait: std::time::Duration,
}

impl WriteArgs {
    fn options(&self) -> IndexOptions {
        let mut options = IndexOptions {
            chunker: self.chunker,
            zstd_level: self.zstd_level,
            pack_target_bytes: self.pack_bytes.as_u64(),
            lock_wait: self.lock_wait,
            ..IndexOptions::default()
        };
        if let Some(threads) = self.threads {
            options.threads = threads;
        }
        options
    }
}

#[derive(Args, Debug)]
pub struct IndexArgs {
    /// The directory to index.
    path: PathBuf,
    #[command(flatten)]
    write: WriteArgs,
}

#[derive(Args, Debug)]
pub struct ImageArgs {
    /// docker://REGISTRY/REPO[:TAG|@DIGEST], oci:DIR[:TAG] or docker-archive:FILE.
    image: ImageRef,
    #[command(flatten)]
    write: WriteArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// The platform, credentials and transport for reading an image from a registry.
#[derive(Args, Debug)]
pub struct RegistryArgs {
    /// Platform to pick from a multi-platform image index (OS/ARCH[/VARIANT]).
    #[arg(long, default_value = "linux/amd64")]
    platform: PlatformSpec,
    /// Registry user for basic auth (else ~/.docker/config.json, else anonymous).
    #[arg(long, env = "THAW_REGISTRY_USERNAME")]
    username: Option<String>,
    /// Read the registry password from standard input.
    #[arg(long, requires = "username")]
    password_stdin: bool,
    /// Plain HTTP to the registry (a registry on a private network or loopback).
    #[arg(long)]
    insecure: bool,
}

impl RegistryArgs {
    /// The image options these flags give (the password read from stdin or the environment).
    pub fn options(&self) -> anyhow::Result<ImageOptions> {
        let credentials = match &self.username {
            Some(user) => {
                let mut password = String::new();
                if self.password_stdin {
                    std::io::stdin()
                        .read_to_string(&mut password)
                        .context("reading the registry password from standard input")?;
                } else {
                    password = std::env::var("THAW_REGISTRY_PASSWORD")
                        .context("--username needs --password-stdin or THAW_REGISTRY_PASSWORD")?;
                }
                Some((
                    user.clone(),
                    password.trim_end_matches(['\n', '\r']).to_string(),
                ))
            }
            None => None,
        };
        Ok(ImageOptions {
            platform: self.platform.clone(),
            registry: RegistryOptions {
                credentials,
                insecure: self.insecure,
            },
        })
    }
}

/// Prints a run's summary: JSON with `--json`, else a few aligned lines.
fn print(summary: &IndexSummary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(summary)?);
        return Ok(());
    }
    let s = summary;
    println!("manifest   {}", s.manifest);
    if let Some(tag) = &s.tag {
        println!("tag        {tag}");
    }
    println!("entries    {}", s.entries);
    let rate = (s.bytes_read as f64 / s.seconds.max(1e-9)) as u64;
    println!(
        "read       {} in {:.2}s ({}/s)",
        bytesize::ByteSize(s.bytes_read),
        s.seconds,
        bytesize::ByteSize(rate)
    );
    println!(
        "chunks     {} ({} new, {} raw -> {} stored)",
        s.chunks,
        s.new_chunks,
        bytesize::ByteSize(s.new_raw_bytes),
        bytesize::ByteSize(s.new_stored_bytes)
    );
    println!("packs      {} written", s.packs);
    if let (Some(layers), Some(reused)) = (s.layers, s.layers_reused) {
        println!("layers     {layers} ({reused} already in the store)");
    }
    Ok(())
}

pub fn run(
    global: &GlobalOptions,
    runtime: &tokio::runtime::Runtime,
    cmd: IndexCommand,
) -> anyhow::Result<ExitCode> {
    let (kind, args) = match cmd {
        IndexCommand::Dir(a) => (SourceKind::Directory, a),
        IndexCommand::Model(a) => (SourceKind::Model, a),
        IndexCommand::Image(a) => return image(global, runtime, a),
    };
    let store = global.open_store()?;
    let bar = Bar::new(global.quiet);
    let started = std::time::Instant::now();
    let report = index_tree(
        &store,
        runtime.handle(),
        &args.path,
        kind,
        args.write.tag.as_deref(),
        &args.write.options(),
        &bar,
    )
    .with_context(|| format!("indexing {}", args.path.display()))?;
    for skipped in &report.skipped_indexes {
        eprintln!("thaw: warning: pack index not trusted for dedup: {skipped}");
    }
    let seconds = started.elapsed().as_secs_f64();
    let summary = IndexSummary::of_tree(&report, args.write.tag.as_deref(), seconds);
    print(&summary, args.write.json)?;
    Ok(ExitCode::SUCCESS)
}

fn image(
    global: &GlobalOptions,
    runtime: &tokio::runtime::Runtime,
    args: ImageArgs,
) -> anyhow::Result<ExitCode> {
    let store = global.open_store()?;
    let image_options = args.registry.options()?;
    let bar = Bar::new(global.quiet);
    let started = std::time::Instant::now();
    let report = index_image(
        &store,
        runtime.handle(),
        &args.image,
        args.write.tag.as_deref(),
        &args.write.options(),
        &image_options,
        &bar,
    )
    .map_err(|e| match e {
        // Already names the image.
        thaw_indexer::IndexError::Image { .. } => anyhow::Error::new(e),
        other => anyhow::Error::new(other).context(format!("indexing {}", args.image)),
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let summary = IndexSummary::of_image(&report, args.write.tag.as_deref(), seconds);
    print(&summary, args.write.json)?;
    Ok(ExitCode::SUCCESS)
}
