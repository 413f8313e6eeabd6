//! Scans a directory tree into entries with full metadata, sorted depth first by name.
//!
//! Directories are scanned in parallel on the current rayon pool, and each directory's children
//! are handed to a [`DirVisitor`] as soon as they are known, so reading file contents overlaps
//! with scanning the rest of the tree.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use thaw_core::manifest::{FileKind, NodeMeta, Xattrs};

use crate::IndexError;

/// One scanned entry.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Path relative to the root, `/`-separated bytes (empty for the root).
    pub rel: Vec<u8>,
    /// Where it is on disk.
    pub abs: PathBuf,
    /// Metadata (extents are filled in by the pipeline).
    pub meta: NodeMeta,
    /// For the second and later names of a hard-linked file: the first name.
    pub hardlink_of: Option<Vec<u8>>,
    /// (device, inode) of a non-directory with more than one name.
    pub link_key: Option<(u64, u64)>,
}

/// Called once per directory with its children (sorted by name) before descending further.
pub trait DirVisitor: Sync {
    /// Looks at (and may fill in the extents of) one directory's children.
    fn visit(&self, children: &mut [Entry]) -> Result<(), IndexError>;
}

/// The scanned tree: `entries[0]` is the root.
pub struct Tree {
    /// Entries, parents before children, siblings sorted by name.
    pub entries: Vec<Entry>,
}

fn kind_of(meta: &Metadata) -> FileKind {
    let t = meta.file_type();
    if t.is_dir() {
        FileKind::Directory
    } else if t.is_symlink() {
        FileKind::Symlink
    } else if t.is_char_device() {
        FileKind::CharDevice
    } else if t.is_block_device() {
        FileKind::BlockDevice
    } else if t.is_fifo() {
        FileKind::Fifo
    } else if t.is_socket() {
        FileKind::Socket
    } else {
        FileKind::Regular
    }
}

fn read_xattrs(path: &Path) -> Result<Xattrs, IndexError> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(IndexError::io(path, e)),
    };
    let mut out = Vec::new();
    for name in names {
        if let Some(value) = xattr::get(path, &name).map_err(|e| IndexError::io(path, e))? {
            out.push((name.as_bytes().to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}

fn node_meta(path: &Path, meta: &Metadata) -> Result<NodeMeta, IndexError> {
    let kind = kind_of(meta);
    let symlink_target = if kind == FileKind::Symlink {
        std::fs::read_link(path)
            .map_err(|e| IndexError::io(path, e))?
            .as_os_str()
            .as_bytes()
            .to_vec()
    } else {
        Vec::new()
    };
    Ok(NodeMeta {
        kind,
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        mtime_sec: meta.mtime(),
        mtime_nsec: meta.mtime_nsec() as u32,
        size: if kind == FileKind::Regular {
            meta.size()
        } else {
            0
        },
        rdev: if matches!(kind, FileKind::CharDevice | FileKind::BlockDevice) {
            meta.rdev()
        } else {
            0
        },
        symlink_target,
        xattrs: read_xattrs(path)?,
        extents: Vec::new(),
    })
}

/// Scans `root` (which must be a directory), calling `visitor` for every directory's children.
/// Symlinks are recorded, never followed.
pub fn scan(root: &Path, visitor: &dyn DirVisitor) -> Result<Tree, IndexError> {
    let meta = std::fs::symlink_metadata(root).map_err(|e| IndexError::io(root, e))?;
    if !meta.is_dir() {
        return Err(IndexError::Unsupported {
            path: root.to_path_buf(),
            reason: "not a directory".into(),
        });
    }
    let root_entry = Entry {
        rel: Vec::new(),
        abs: root.to_path_buf(),
        meta: node_meta(root, &meta)?,
        hardlink_of: None,
        link_key: None,
    };
    let mut entries = vec![root_entry];
    entries.extend(scan_dir(root, b"", visitor)?);
    // Parents before children, siblings in name order: compare component by component.
    entries.sort_by(|a, b| components(&a.rel).cmp(components(&b.rel)));
    // The first name of a hard-link group in that order holds the data; the others link to it.
    let mut first_names: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    for entry in &mut entries {
        if let Some(key) = entry.link_key {
            match first_names.get(&key) {
                Some(first) => entry.hardlink_of = Some(first.clone()),
                None => {
                    first_names.insert(key, entry.rel.clone());
                }
            }
        }
    }
    Ok(Tree { entries })
}

/// Everything below `dir` (whose relative path is `rel`), subdirectories scanned in parallel.
fn scan_dir(dir: &Path, rel: &[u8], visitor: &dyn DirVisitor) -> Result<Vec<Entry>, IndexError> {
    let mut items: Vec<(Vec<u8>, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| IndexError::io(dir, e))?
        .map(|item| {
            let item = item.map_err(|e| IndexError::io(dir, e))?;
            Ok((item.file_name().as_bytes().to_vec(), item.path()))
        })
        .collect::<Result<_, IndexError>>()?;
    items.sort();
    let mut children: Vec<Entry> = items
        .into_par_iter()
        .map(|(name, path)| {
            let meta = std::fs::symlink_metadata(&path).map_err(|e| IndexError::io(&path, e))?;
            let mut child_rel = rel.to_vec();
            if !child_rel.is_empty() {
                child_rel.push(b'/');
            }
            child_rel.extend_from_slice(&name);
            Ok(Entry {
                meta: node_meta(&path, &meta)?,
                rel: child_rel,
                abs: path,
                hardlink_of: None,
                link_key: (!meta.is_dir() && meta.nlink() > 1).then(|| (meta.dev(), meta.ino())),
            })
        })
        .collect::<Result<_, IndexError>>()?;
    visitor.visit(&mut children)?;
    let below: Vec<Vec<Entry>> = children
        .par_iter()
        .filter(|c| c.meta.kind == FileKind::Directory)
        .map(|c| scan_dir(&c.abs, &c.rel, visitor))
        .collect::<Result<_, IndexError>>()?;
    children.extend(below.into_iter().flatten());
    Ok(children)
}

fn components(rel: &[u8]) -> impl Iterator<Item = &[u8]> {
    rel.split(|c| *c == b'/').filter(|c| !c.is_empty())
}

/// The file name of an entry, for messages.
pub fn display_rel(rel: &[u8]) -> std::borrow::Cow<'_, str> {
    if rel.is_empty() {
        "/".into()
    } else {
        OsStr::from_bytes(rel).to_string_lossy()
    }
}
