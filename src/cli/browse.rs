//! Read-only commands over a store: `thaw tags`, `ls`, `cat`, `stats`.

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use thaw_core::manifest::{FileKind, Inode, Manifest};
use thaw_core::stats::{combined_stats, manifest_stats, NamedStats, StatsReport};

use super::GlobalOptions;

#[derive(Args, Debug)]
pub struct TagsArgs {}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Tag or manifest id.
    name: String,
    /// Path inside the tree [default: the root].
    #[arg(default_value = "/")]
    path: String,
    /// List subdirectories recursively.
    #[arg(long, short = 'R')]
    recursive: bool,
}

#[derive(Args, Debug)]
pub struct CatArgs {
    /// Tag or manifest id.
    name: String,
    /// Path of a regular file inside the tree.
    path: String,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Tags or manifest ids; with several, dedup across them is reported.
    #[arg(required = true)]
    names: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub async fn tags(global: &GlobalOptions, _args: TagsArgs) -> anyhow::Result<ExitCode> {
    let store = global.open_store()?;
    for (name, id) in store.list_tags().await? {
        println!("{id}  {name}");
    }
    Ok(ExitCode::SUCCESS)
}

fn ls_line(manifest: &Manifest, path: &str, inode: &Inode) -> anyhow::Result<String> {
    let mut line = format!(
        "{} {:>3} {:>5} {:>5} {:>12} {:>11} {}",
        inode.mode_string(),
        inode.nlink,
        inode.uid,
        inode.gid,
        inode.size,
        inode.mtime_sec,
        path
    );
    if inode.kind == FileKind::Symlink {
        line.push_str(" -> ");
        line.push_str(&String::from_utf8_lossy(manifest.symlink_target(inode)?));
    }
    if matches!(inode.kind, FileKind::CharDevice | FileKind::BlockDevice) {
        line.push_str(&format!(
            " (device {}:{})",
            libc::major(inode.rdev as libc::dev_t),
            libc::minor(inode.rdev as libc::dev_t)
        ));
    }
    Ok(line)
}

fn join(dir: &str, name: &str) -> String {
    let dir = dir.trim_end_matches('/');
    format!("{dir}/{name}")
}

pub async fn ls(global: &GlobalOptions, args: LsArgs) -> anyhow::Result<ExitCode> {
    let store = global.open_store()?;
    let id = store.resolve(&args.name).await?;
    let manifest = store.get_manifest(&id).await?;
    let Some(inode) = manifest.lookup(&args.path)? else {
        bail!("{}: no such path in {}", args.path, args.name);
    };
    if inode.kind != FileKind::Directory {
        println!("{}", ls_line(&manifest, &args.path, &inode)?);
        return Ok(ExitCode::SUCCESS);
    }
    let base = format!("/{}", args.path.trim_matches('/'));
    let mut stack = vec![(base, inode)];
    while let Some((dir_path, dir)) = stack.pop() {
        let mut subdirs = Vec::new();
        for entry in manifest.read_dir(&dir)? {
            let child = manifest.inode(entry.ino)?;
            let path = join(&dir_path, &String::from_utf8_lossy(entry.name));
            println!("{}", ls_line(&manifest, &path, &child)?);
            if args.recursive && child.kind == FileKind::Directory {
                subdirs.push((path, child));
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn cat(global: &GlobalOptions, args: CatArgs) -> anyhow::Result<ExitCode> {
    let store = global.open_store()?;
    let (manifest, map) = store.open_manifest(&args.name).await?;
    let Some(inode) = manifest.lookup(&args.path)? else {
        bail!("{}: no such path in {}", args.path, args.name);
    };
    if inode.kind != FileKind::Regular {
        bail!("{}: not a regular file", args.path);
    }
    let tiers = global.tiers(&store, true).await?;
    let mut stdout = std::io::stdout().lock();
    thaw_indexer::extract::copy_file_to(&tiers, &manifest, &map, &inode, &mut stdout)
        .await
        .with_context(|| format!("reading {} from {}", args.path, args.name))?;
    Ok(ExitCode::SUCCESS)
}

pub async fn stats(global: &GlobalOptions, args: StatsArgs) -> anyhow::Result<ExitCode> {
    let store = global.open_store()?;
    let mut opened = Vec::new();
    for name in &args.names {
        let (manifest, map) = store
            .open_manifest(name)
            .await
            .with_context(|| format!("opening {name}"))?;
        let stats = manifest_stats(&manifest, &map)?;
        opened.push((name.clone(), manifest, map, stats));
    }
    let maps: Vec<_> = opened.iter().map(|o| &o.2).collect();
    let manifests: Vec<_> = opened.iter().map(|o| &o.1).collect();
    let combined = combined_stats(&maps, &manifests)?;
    if args.json {
        let manifests = opened
            .iter()
            .map(|(name, m, _, stats)| NamedStats {
                name: name.clone(),
                manifest: m.id().to_hex(),
                stats: stats.clone(),
            })
            .collect();
        let report = StatsReport {
            manifests,
            combined: (&combined).into(),
        };
        println!("{}", serde_json::to_string(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:>9} {:>7} {:>12} {:>8} {:>12} {:>12} {:>6}",
        "name", "files", "dirs", "logical", "chunks", "chunk bytes", "stored", "ratio"
    );
    for (name, _, _, s) in &opened {
        let ratio = s.stored_bytes as f64 / s.logical_bytes.max(1) as f64;
        println!(
            "{:<24} {:>9} {:>7} {:>12} {:>8} {:>12} {:>12} {:>6.3}",
            name,
            s.files,
            s.dirs,
            bytesize::ByteSize(s.logical_bytes).to_string(),
            s.chunks,
            bytesize::ByteSize(s.chunk_bytes).to_string(),
            bytesize::ByteSize(s.stored_bytes).to_string(),
            ratio
        );
    }
    if opened.len() > 1 {
        println!(
            "together: {} distinct chunks, {} stored vs {} stored separately (dedup ratio {:.3})",
            combined.chunks,
            bytesize::ByteSize(combined.stored_bytes),
            bytesize::ByteSize(combined.stored_bytes_separately),
            combined.dedup_ratio()
        );
    }
    Ok(ExitCode::SUCCESS)
}
