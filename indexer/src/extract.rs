//! Restores a manifest as a directory tree: contents (holes kept), hard links, symlinks, device
//! nodes, fifos, owners, modes, xattrs and mtimes.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use thaw_core::chunk_map::ChunkMap;
use thaw_core::manifest::{FileKind, Inode, Manifest};
use thaw_core::tier::TieredStore;

use crate::{IndexError, Progress};

/// Chunks of one file fetched ahead of the one being written (about 16 MiB at the default
/// chunk size). Large files (a snapshot's memory pages, a model) are most of the bytes; with a
/// store 20 ms away, 4 ahead held a 470 MiB file to ~50 MB/s.
const CHUNKS_AHEAD_PER_FILE: usize = 16;

/// How to extract.
#[derive(Clone, Debug)]
pub struct ExtractOptions {
    /// Files written at once.
    pub concurrency: usize,
    /// Restore owners (needs root; defaults to "running as root").
    pub restore_owners: bool,
    /// Extract only this directory of the tree (a path such as `upper`), as the destination's
    /// root; the whole tree when `None`.
    pub subtree: Option<String>,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            concurrency: 16,
            // SAFETY: geteuid has no preconditions.
            restore_owners: unsafe { libc::geteuid() } == 0,
            subtree: None,
        }
    }
}

/// What an extraction did.
#[derive(Clone, Debug, Default)]
pub struct ExtractReport {
    /// Entries created (hard links included).
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

fn os_path(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}

/// The entries of `nodes` (a walk, root first) under directory `dir`, re-rooted there; `None`
/// when `dir` is not a directory of the walk.
fn subtree(nodes: Vec<(Vec<u8>, Inode)>, dir: &str) -> Option<Vec<(Vec<u8>, Inode)>> {
    let dir = dir.trim_matches('/').as_bytes();
    let found = nodes
        .iter()
        .any(|(rel, inode)| rel == dir && inode.kind == FileKind::Directory);
    found.then(|| {
        nodes
            .into_iter()
            .filter_map(|(rel, inode)| {
                if rel == dir {
                    return Some((Vec::new(), inode));
                }
                let rest = rel.strip_prefix(dir)?.strip_prefix(b"/")?;
                Some((rest.to_vec(), inode))
            })
            .collect()
    })
}

fn cstring(path: &Path) -> Result<CString, IndexError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| IndexError::Unsupported {
        path: path.to_path_buf(),
        reason: "path holds a NUL byte".into(),
    })
}

fn check_libc(path: &Path, rc: libc::c_int) -> Result<(), IndexError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(IndexError::io(path, std::io::Error::last_os_error()))
    }
}

fn prepare_destination(dest: &Path) -> Result<(), IndexError> {
    match std::fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(IndexError::Unsupported {
                    path: dest.to_path_buf(),
                    reason: "destination exists and is not empty".into(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dest).map_err(|e| IndexError::io(dest, e))
        }
        Err(e) => Err(IndexError::io(dest, e)),
    }
}

/// The data of one regular file as (file offset, bytes) pieces in offset order, fetched through
/// the tiers a few chunks ahead. Gaps between pieces are holes.
fn file_pieces<'a>(
    tiers: &'a TieredStore,
    manifest: &'a Manifest,
    map: &'a ChunkMap,
    inode: &Inode,
) -> Result<impl futures::Stream<Item = Result<(u64, bytes::Bytes), IndexError>> + 'a, IndexError> {
    let extents = manifest.extents(inode)?;
    Ok(
        futures::stream::iter(extents.into_iter().map(move |extent| async move {
            let chunk = map.chunk_ref(manifest, extent.chunk)?;
            let data = tiers.get(&chunk).await?;
            let start = extent.chunk_offset as usize;
            Ok((
                extent.file_offset,
                data.slice(start..start + extent.len as usize),
            ))
        }))
        .buffered(CHUNKS_AHEAD_PER_FILE),
    )
}

/// Writes the content of one regular file into `out` at its offsets (holes stay holes).
async fn fill_file(
    tiers: &TieredStore,
    manifest: &Manifest,
    map: &ChunkMap,
    inode: &Inode,
    out: &File,
    path: &Path,
    progress: &dyn Progress,
) -> Result<u64, IndexError> {
    let mut pieces = std::pin::pin!(file_pieces(tiers, manifest, map, inode)?);
    let mut written = 0;
    while let Some(piece) = pieces.next().await {
        let (offset, data) = piece?;
        out.write_all_at(&data, offset)
            .map_err(|e| IndexError::io(path, e))?;
        written += data.len() as u64;
        progress.advance(data.len() as u64);
    }
    Ok(written)
}

/// Streams one regular file's bytes (holes as zeros) into `out`.
pub async fn copy_file_to(
    tiers: &TieredStore,
    manifest: &Manifest,
    map: &ChunkMap,
    inode: &Inode,
    out: &mut dyn Write,
) -> Result<(), IndexError> {
    let output_error = |e| IndexError::io("<output>", e);
    let zeros = vec![0u8; 64 * 1024];
    let write_zeros = |out: &mut dyn Write, mut n: u64| -> Result<(), IndexError> {
        while n > 0 {
            let k = n.min(zeros.len() as u64) as usize;
            out.write_all(&zeros[..k]).map_err(output_error)?;
            n -= k as u64;
        }
        Ok(())
    };
    let mut pieces = std::pin::pin!(file_pieces(tiers, manifest, map, inode)?);
    let mut pos = 0u64;
    while let Some(piece) = pieces.next().await {
        let (offset, data) = piece?;
        write_zeros(out, offset - pos)?;
        out.write_all(&data).map_err(output_error)?;
        pos = offset + data.len() as u64;
    }
    write_zeros(out, inode.size - pos)?;
    out.flush().map_err(output_error)
}

/// Creates a directory, symlink or special file (regular files are created in [`write_file`]).
fn create_node(path: &Path, inode: &Inode, manifest: &Manifest) -> Result<(), IndexError> {
    match inode.kind {
        FileKind::Directory => {
            if !path.exists() {
                std::fs::create_dir(path).map_err(|e| IndexError::io(path, e))?;
            }
        }
        FileKind::Regular => {}
        FileKind::Symlink => {
            let target = manifest.symlink_target(inode)?;
            std::os::unix::fs::symlink(OsStr::from_bytes(target), path)
                .map_err(|e| IndexError::io(path, e))?;
        }
        FileKind::CharDevice | FileKind::BlockDevice | FileKind::Fifo | FileKind::Socket => {
            let c = cstring(path)?;
            // SAFETY: c is a valid NUL-terminated path; mknod reads it only.
            let rc = unsafe {
                libc::mknod(
                    c.as_ptr(),
                    inode.mode as libc::mode_t,
                    inode.rdev as libc::dev_t,
                )
            };
            check_libc(path, rc)?;
        }
    }
    Ok(())
}

fn mtime_of(inode: &Inode) -> filetime::FileTime {
    filetime::FileTime::from_unix_time(inode.mtime_sec, inode.mtime_nsec)
}

/// Sets owner, xattrs, mode and mtime by path (not following symlinks). Owner before mode, so a
/// set-uid bit survives the chown.
fn apply_metadata(
    path: &Path,
    inode: &Inode,
    manifest: &Manifest,
    owners: bool,
) -> Result<(), IndexError> {
    let io = |e| IndexError::io(path, e);
    if owners {
        std::os::unix::fs::lchown(path, Some(inode.uid), Some(inode.gid)).map_err(io)?;
    }
    for (name, value) in manifest.xattrs(inode)? {
        xattr::set(path, OsStr::from_bytes(name), value).map_err(io)?;
    }
    if inode.kind != FileKind::Symlink {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(inode.mode & 0o7777))
            .map_err(io)?;
    }
    filetime::set_symlink_file_times(path, mtime_of(inode), mtime_of(inode)).map_err(io)
}

/// Creates one regular file, writes its content (holes stay holes) and sets its metadata through
/// the open descriptor.
#[allow(clippy::too_many_arguments)]
async fn write_file(
    tiers: &TieredStore,
    manifest: &Manifest,
    map: &ChunkMap,
    inode: &Inode,
    path: &Path,
    owners: bool,
    progress: &dyn Progress,
) -> Result<u64, IndexError> {
    let io = |e| IndexError::io(path, e);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io)?;
    let written = fill_file(tiers, manifest, map, inode, &file, path, progress).await?;
    if written < inode.size {
        file.set_len(inode.size).map_err(io)?;
    }
    if owners {
        std::os::unix::fs::fchown(&file, Some(inode.uid), Some(inode.gid)).map_err(io)?;
    }
    for (name, value) in manifest.xattrs(inode)? {
        xattr::FileExt::set_xattr(&file, OsStr::from_bytes(name), value).map_err(io)?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(inode.mode & 0o7777))
        .map_err(io)?;
    filetime::set_file_handle_times(&file, Some(mtime_of(inode)), Some(mtime_of(inode)))
        .map_err(io)?;
    Ok(written)
}

/// Extracts `manifest` into `dest` (absent or empty), reading chunks through `tiers`.
pub async fn extract(
    tiers: &TieredStore,
    manifest: &Manifest,
    map: &ChunkMap,
    dest: &Path,
    options: &ExtractOptions,
    progress: Arc<dyn Progress>,
) -> Result<ExtractReport, IndexError> {
    prepare_destination(dest)?;
    let nodes = match &options.subtree {
        None => manifest.walk()?,
        Some(dir) => subtree(manifest.walk()?, dir).ok_or_else(|| IndexError::Unsupported {
            path: dest.to_path_buf(),
            reason: format!("the tree has no directory {dir:?} to extract"),
        })?,
    };
    let mut report = ExtractReport {
        entries: nodes.len() as u64,
        bytes: 0,
    };

    // Pass 1: directories, symlinks and special files, in tree order. Regular files are listed
    // (first names) and hard links (later names) kept for after their file exists.
    let mut first_path: HashMap<u32, PathBuf> = HashMap::new();
    let mut files: Vec<(PathBuf, Inode)> = Vec::new();
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    for (rel, inode) in &nodes {
        let path = os_path(dest, rel);
        if let Some(first) = first_path.get(&inode.ino) {
            links.push((first.clone(), path));
            continue;
        }
        create_node(&path, inode, manifest)?;
        if inode.kind == FileKind::Regular {
            files.push((path.clone(), *inode));
        }
        first_path.insert(inode.ino, path);
    }
    progress.start("extracting", files.iter().map(|(_, i)| i.size).sum());

    // Pass 2: regular files, `concurrency` tasks at once on the runtime's threads (decompression
    // and writes run in parallel), each file with its metadata.
    // Tasks take whole runs of files that share a directory: creating files in one directory
    // from several tasks only makes them queue on the directory's lock.
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, (path, _)) in files.iter().enumerate() {
        match runs.last_mut() {
            Some(run) if files[run.start].0.parent() == path.parent() => run.end = i + 1,
            _ => runs.push(i..i + 1),
        }
    }
    let owners = options.restore_owners;
    let shared = Arc::new((tiers.clone(), manifest.clone(), map.clone(), files, runs));
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..options.concurrency.max(1) {
        let (shared, next, progress) = (shared.clone(), next.clone(), progress.clone());
        workers.spawn(async move {
            let (tiers, manifest, map, files, runs) = &*shared;
            let mut written = 0;
            while let Some(run) = runs.get(next.fetch_add(1, Ordering::Relaxed)) {
                for (path, inode) in &files[run.clone()] {
                    written +=
                        write_file(tiers, manifest, map, inode, path, owners, progress.as_ref())
                            .await?;
                }
            }
            Ok::<u64, IndexError>(written)
        });
    }
    while let Some(result) = workers.join_next().await {
        let written = result.map_err(|e| IndexError::Unsupported {
            path: dest.to_path_buf(),
            reason: format!("extract task: {e}"),
        })?;
        match written {
            Ok(n) => report.bytes += n,
            Err(e) => {
                workers.abort_all();
                return Err(e);
            }
        }
    }

    // Pass 3: hard links, now that their files exist.
    for (first, path) in &links {
        std::fs::hard_link(first, path).map_err(|e| IndexError::io(path, e))?;
    }

    // Pass 4: metadata of everything else, children before parents so directory mtimes stick.
    for (rel, inode) in nodes.iter().rev() {
        if inode.kind == FileKind::Regular {
            continue;
        }
        let path = os_path(dest, rel);
        if first_path.get(&inode.ino) == Some(&path) {
            apply_metadata(&path, inode, manifest, owners)?;
        }
    }
    progress.finish();
    Ok(report)
}
