//! Builds manifest bytes from a tree described path by path.
//!
//! Inodes are numbered depth first in name order, so the same tree always encodes to the same
//! bytes and therefore the same manifest id, whatever order it was described in.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::layout::*;
use super::FileKind;
use crate::binary::Writer;
use crate::chunker::Chunker;
use crate::{ChunkId, Error, Result};

/// Extended attributes as (name, value) pairs, sorted by name.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Metadata and content of one node, as the indexer found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeMeta {
    /// Kind of file.
    pub kind: FileKind,
    /// Full st_mode.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (seconds).
    pub mtime_sec: i64,
    /// Modification time (nanoseconds).
    pub mtime_nsec: u32,
    /// Size of a regular file.
    pub size: u64,
    /// Device number of a device node.
    pub rdev: u64,
    /// Target of a symlink.
    pub symlink_target: Vec<u8>,
    /// Extended attributes, sorted by name.
    pub xattrs: Xattrs,
    /// Content of a regular file, sorted by offset; gaps are holes (zeros).
    pub extents: Vec<ExtentSpec>,
}

impl NodeMeta {
    /// A directory with `mode` permission bits (type bits added) owned by root, mtime 0.
    pub fn directory(mode: u32) -> Self {
        NodeMeta {
            kind: FileKind::Directory,
            mode: libc_s_ifdir() | (mode & 0o7777),
            uid: 0,
            gid: 0,
            mtime_sec: 0,
            mtime_nsec: 0,
            size: 0,
            rdev: 0,
            symlink_target: Vec::new(),
            xattrs: Vec::new(),
            extents: Vec::new(),
        }
    }
}

const fn libc_s_ifdir() -> u32 {
    0o040000
}

/// One slice of a chunk at an offset of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtentSpec {
    /// Offset in the file.
    pub file_offset: u64,
    /// The chunk.
    pub chunk: ChunkId,
    /// The chunk's raw length.
    pub chunk_raw_len: u32,
    /// Offset of the slice inside the chunk.
    pub chunk_offset: u32,
    /// Length of the slice.
    pub len: u32,
}

struct Node {
    meta: NodeMeta,
    children: BTreeMap<Vec<u8>, usize>,
}

/// Collects a tree and encodes it as a manifest.
pub struct ManifestBuilder {
    nodes: Vec<Node>,
    chunker: Chunker,
    annotations: BTreeMap<String, String>,
}

fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

fn path_error(path: &[u8], reason: &'static str) -> Error {
    Error::Path {
        path: String::from_utf8_lossy(path).into_owned(),
        reason,
    }
}

impl ManifestBuilder {
    /// A tree holding only its root directory.
    pub fn new(chunker: Chunker, root: NodeMeta) -> Self {
        ManifestBuilder {
            nodes: vec![Node {
                meta: root,
                children: BTreeMap::new(),
            }],
            chunker,
            annotations: BTreeMap::new(),
        }
    }

    /// Sets an annotation stored in the manifest.
    pub fn annotate(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.annotations.insert(key.into(), value.into());
    }

    fn parent_and_name<'p>(&self, path: &'p [u8]) -> Result<(usize, &'p [u8])> {
        let parts: Vec<&[u8]> = components(path).collect();
        let (name, dirs) = parts
            .split_last()
            .ok_or_else(|| path_error(path, "empty path"))?;
        if parts.iter().any(|c| *c == b"..") {
            return Err(path_error(path, "path contains '..'"));
        }
        let mut node = 0usize;
        for dir in dirs {
            node = match self.nodes[node].children.get(*dir) {
                Some(&child) if self.nodes[child].meta.kind == FileKind::Directory => child,
                Some(_) => return Err(path_error(path, "a parent is not a directory")),
                None => return Err(path_error(path, "parent directory was not added first")),
            };
        }
        Ok((node, name))
    }

    /// Adds (or replaces) the node at `path`; parents must exist. A directory replacing a
    /// directory keeps its children.
    pub fn insert(&mut self, path: &[u8], meta: NodeMeta) -> Result<()> {
        let (parent, name) = self.parent_and_name(path)?;
        if let Some(&existing) = self.nodes[parent].children.get(name) {
            if self.nodes[existing].meta.kind == FileKind::Directory
                && meta.kind == FileKind::Directory
            {
                self.nodes[existing].meta = meta;
                return Ok(());
            }
        }
        self.nodes.push(Node {
            meta,
            children: BTreeMap::new(),
        });
        let index = self.nodes.len() - 1;
        self.nodes[parent].children.insert(name.to_vec(), index);
        Ok(())
    }

    /// Adds `path` as a hard link to the existing non-directory `target`.
    pub fn link(&mut self, path: &[u8], target: &[u8]) -> Result<()> {
        let (target_parent, target_name) = self.parent_and_name(target)?;
        let node = *self.nodes[target_parent]
            .children
            .get(target_name)
            .ok_or_else(|| path_error(target, "hard link target was not added"))?;
        if self.nodes[node].meta.kind == FileKind::Directory {
            return Err(path_error(target, "hard link to a directory"));
        }
        let (parent, name) = self.parent_and_name(path)?;
        self.nodes[parent].children.insert(name.to_vec(), node);
        Ok(())
    }

    /// The node at `path` (the root for an empty path), if present.
    pub fn get(&self, path: &[u8]) -> Option<&NodeMeta> {
        self.find(path).map(|i| &self.nodes[i].meta)
    }

    /// Names of the children of the directory at `path` (the root for an empty path); empty
    /// when there is no such directory.
    pub fn children(&self, path: &[u8]) -> Vec<Vec<u8>> {
        self.find(path)
            .map(|i| self.nodes[i].children.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Replaces the root directory's metadata (its children stay).
    pub fn set_root(&mut self, meta: NodeMeta) {
        self.nodes[0].meta = meta;
    }

    fn find(&self, path: &[u8]) -> Option<usize> {
        let mut node = 0usize;
        for part in components(path) {
            node = *self.nodes[node].children.get(part)?;
        }
        Some(node)
    }

    /// Removes `path` (and everything under it); returns whether it existed.
    pub fn remove(&mut self, path: &[u8]) -> bool {
        match self.parent_and_name(path) {
            Ok((parent, name)) => self.nodes[parent].children.remove(name).is_some(),
            Err(_) => false,
        }
    }

    /// Encodes the tree; returns the manifest id and bytes.
    pub fn finish(self) -> Result<(ChunkId, Bytes)> {
        let too_big = |what: &'static str| {
            path_error(
                what.as_bytes(),
                "too many records for the u32 fields of format version 1",
            )
        };
        // Number nodes depth first in name order; a hard-linked node keeps its first number.
        let mut ino_of: HashMap<usize, u32> = HashMap::new();
        let mut order: Vec<usize> = Vec::new();
        let mut links: HashMap<usize, u32> = HashMap::new();
        let mut stack = vec![0usize];
        while let Some(node) = stack.pop() {
            *links.entry(node).or_default() += 1;
            if ino_of.contains_key(&node) {
                continue;
            }
            ino_of.insert(
                node,
                u32::try_from(order.len()).map_err(|_| too_big("inodes"))?,
            );
            order.push(node);
            for &child in self.nodes[node].children.values().rev() {
                stack.push(child);
            }
        }

        let mut strings = StringTable::default();
        let mut chunk_index: HashMap<ChunkId, u32> = HashMap::new();
        let (mut inodes, mut dirents, mut extents, mut chunks, mut xattrs) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut dirent_count, mut extent_count, mut xattr_count) = (0u32, 0u32, 0u32);
        for &node in &order {
            let Node { meta, children } = &self.nodes[node];
            let (first, count, size, nlink) = match meta.kind {
                FileKind::Directory => {
                    let first = dirent_count;
                    let mut subdirs = 0;
                    for (name, child) in children {
                        let (off, len) = strings.add(name)?;
                        dirents.put_u32(off);
                        dirents.put_u32(len);
                        dirents.put_u32(ino_of[child]);
                        if self.nodes[*child].meta.kind == FileKind::Directory {
                            subdirs += 1;
                        }
                    }
                    dirent_count = dirent_count
                        .checked_add(children.len() as u32)
                        .ok_or_else(|| too_big("dirents"))?;
                    (first, children.len() as u32, 0, 2 + subdirs)
                }
                FileKind::Regular => {
                    let first = extent_count;
                    for e in &meta.extents {
                        let next = chunk_index.len() as u32;
                        let index = *chunk_index.entry(e.chunk).or_insert_with(|| {
                            chunks.extend_from_slice(&e.chunk.0);
                            chunks.put_u32(e.chunk_raw_len);
                            chunks.put_u32(0);
                            next
                        });
                        extents.put_u64(e.file_offset);
                        extents.put_u32(index);
                        extents.put_u32(e.chunk_offset);
                        extents.put_u32(e.len);
                        extents.put_u32(0);
                    }
                    extent_count = extent_count
                        .checked_add(meta.extents.len() as u32)
                        .ok_or_else(|| too_big("extents"))?;
                    (first, meta.extents.len() as u32, meta.size, links[&node])
                }
                FileKind::Symlink => {
                    let (off, len) = strings.add(&meta.symlink_target)?;
                    (off, len, meta.symlink_target.len() as u64, links[&node])
                }
                _ => (0, 0, 0, links[&node]),
            };
            let xattr_first = xattr_count;
            for (name, value) in &meta.xattrs {
                let (noff, nlen) = strings.add(name)?;
                let (voff, vlen) = strings.add(value)?;
                for v in [noff, nlen, voff, vlen] {
                    xattrs.put_u32(v);
                }
            }
            xattr_count += meta.xattrs.len() as u32;
            inodes.push(meta.kind.code());
            inodes.put_zeros(3);
            inodes.put_u32(meta.mode);
            inodes.put_u32(meta.uid);
            inodes.put_u32(meta.gid);
            inodes.put_u32(nlink);
            inodes.put_u32(meta.mtime_nsec);
            inodes.put_u64(meta.mtime_sec as u64);
            inodes.put_u64(size);
            inodes.put_u64(meta.rdev);
            inodes.put_u32(first);
            inodes.put_u32(count);
            inodes.put_u32(xattr_first);
            inodes.put_u32(meta.xattrs.len() as u32);
        }
        let annotations = if self.annotations.is_empty() {
            Vec::new()
        } else {
            serde_json::to_vec(&self.annotations).expect("string map serialises")
        };

        let mut out = Vec::new();
        out.extend_from_slice(MANIFEST_MAGIC);
        out.put_u16(MANIFEST_VERSION);
        out.put_u16(0);
        out.push(self.chunker.kind_code());
        out.put_zeros(3);
        let (min, avg, max) = self.chunker.params();
        out.put_u32(min);
        out.put_u32(avg);
        out.put_u32(max);
        out.put_u32(0);
        let sections: [&[u8]; SECTION_COUNT] = [
            &inodes,
            &dirents,
            &extents,
            &chunks,
            &xattrs,
            &strings.bytes,
            &annotations,
        ];
        let table_at = out.len();
        out.put_zeros(SECTION_COUNT * 16);
        for (i, section) in sections.iter().enumerate() {
            out.pad_to(8);
            let offset = out.len() as u64;
            out.extend_from_slice(section);
            let at = table_at + i * 16;
            out[at..at + 8].copy_from_slice(&offset.to_le_bytes());
            out[at + 8..at + 16].copy_from_slice(&(section.len() as u64).to_le_bytes());
        }
        let id = ChunkId::of(&out);
        Ok((id, Bytes::from(out)))
    }
}

/// The strings section: interned byte strings addressed by (offset, length).
#[derive(Default)]
struct StringTable {
    bytes: Vec<u8>,
    interned: HashMap<Vec<u8>, (u32, u32)>,
}

impl StringTable {
    fn add(&mut self, s: &[u8]) -> Result<(u32, u32)> {
        if let Some(&found) = self.interned.get(s) {
            return Ok(found);
        }
        let offset = u32::try_from(self.bytes.len()).ok();
        let len = u32::try_from(s.len()).ok();
        let (Some(offset), Some(len)) = (offset, len) else {
            return Err(path_error(b"strings", "string section exceeds 4 GiB"));
        };
        self.bytes.extend_from_slice(s);
        self.interned.insert(s.to_vec(), (offset, len));
        Ok((offset, len))
    }
}
