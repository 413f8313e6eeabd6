//! The manifest: a flattened, binary, versioned file tree whose blake3 is its id.
//!
//! Fixed-size little-endian records in sections (inodes, directory entries, extents, chunks,
//! xattrs, strings, annotations) are read in place: opening a manifest checks its header and
//! section bounds only, and a path lookup binary-searches one directory's sorted entries per
//! component, so a 100k-file manifest opens in milliseconds. Every reference is bounds checked
//! when followed; a lying manifest gives [`crate::Error::Corrupt`] with the offset, never a panic.
//! docs/format.md specifies every byte.

mod builder;
mod layout;

use std::collections::BTreeMap;

use bytes::Bytes;

pub use builder::{ExtentSpec, ManifestBuilder, NodeMeta, Xattrs};
pub use layout::*;

use crate::binary::Reader;
use crate::chunker::Chunker;
use crate::{ChunkId, Error, Result};

/// Inode number inside a manifest (index into the inode section). The root is [`ROOT_INODE`].
pub type InodeNo = u32;

/// The root directory's inode number.
pub const ROOT_INODE: InodeNo = 0;

/// Annotation of a container image's manifest holding the image config's runtime fields (JSON:
/// `entrypoint`, `cmd`, `env`, `working_dir`, `user`, ...). The indexer writes it; whoever runs
/// the image reads it.
pub const IMAGE_CONFIG_ANNOTATION: &str = "org.thaw.image.config";

/// What kind of file an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// A directory.
    Directory,
    /// A regular file.
    Regular,
    /// A symbolic link.
    Symlink,
    /// A character device node.
    CharDevice,
    /// A block device node.
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// A unix socket.
    Socket,
}

impl FileKind {
    /// Wire code.
    pub fn code(self) -> u8 {
        match self {
            FileKind::Directory => 1,
            FileKind::Regular => 2,
            FileKind::Symlink => 3,
            FileKind::CharDevice => 4,
            FileKind::BlockDevice => 5,
            FileKind::Fifo => 6,
            FileKind::Socket => 7,
        }
    }

    /// From the wire code.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => FileKind::Directory,
            2 => FileKind::Regular,
            3 => FileKind::Symlink,
            4 => FileKind::CharDevice,
            5 => FileKind::BlockDevice,
            6 => FileKind::Fifo,
            7 => FileKind::Socket,
            _ => return None,
        })
    }

    /// One letter as `ls -l` shows it.
    pub fn letter(self) -> char {
        match self {
            FileKind::Directory => 'd',
            FileKind::Regular => '-',
            FileKind::Symlink => 'l',
            FileKind::CharDevice => 'c',
            FileKind::BlockDevice => 'b',
            FileKind::Fifo => 'p',
            FileKind::Socket => 's',
        }
    }
}

/// One inode record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inode {
    /// Its number.
    pub ino: InodeNo,
    /// Kind of file.
    pub kind: FileKind,
    /// Full st_mode (type and permission bits).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count within the tree.
    pub nlink: u32,
    /// Modification time, seconds since the epoch.
    pub mtime_sec: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
    /// Size in bytes (regular files, symlinks).
    pub size: u64,
    /// Device number (device nodes).
    pub rdev: u64,
    first: u32,
    count: u32,
    xattr_first: u32,
    xattr_count: u32,
}

impl Inode {
    /// Type and permission bits as `ls -l` shows them (`drwxr-xr-x`).
    pub fn mode_string(&self) -> String {
        let mut s = String::with_capacity(10);
        s.push(self.kind.letter());
        for shift in [6, 3, 0] {
            let bits = (self.mode >> shift) & 7;
            s.push(if bits & 4 != 0 { 'r' } else { '-' });
            s.push(if bits & 2 != 0 { 'w' } else { '-' });
            s.push(if bits & 1 != 0 { 'x' } else { '-' });
        }
        s
    }
}

/// One slice of a chunk placed at an offset of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Offset in the file.
    pub file_offset: u64,
    /// Index into the chunk table.
    pub chunk: u32,
    /// Offset of the slice inside the chunk.
    pub chunk_offset: u32,
    /// Length of the slice.
    pub len: u32,
}

/// One chunk table record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkEntry {
    /// Id of the uncompressed bytes.
    pub id: ChunkId,
    /// Uncompressed length.
    pub raw_len: u32,
}

/// A directory entry.
#[derive(Clone, Copy, Debug)]
pub struct DirEntry<'a> {
    /// Name (bytes; not necessarily UTF-8).
    pub name: &'a [u8],
    /// Inode it names.
    pub ino: InodeNo,
}

/// An opened manifest.
#[derive(Clone)]
pub struct Manifest {
    id: ChunkId,
    name: String,
    bytes: Bytes,
    chunker: Chunker,
    sections: [(u64, u64); SECTION_COUNT],
    annotations: BTreeMap<String, String>,
}

impl std::fmt::Debug for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manifest")
            .field("id", &self.id)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// Store key of a manifest.
pub fn manifest_key(id: &ChunkId) -> String {
    format!("manifests/{}", id.to_hex())
}

impl Manifest {
    /// Opens manifest bytes fetched under `id`, checking that they hash to it first.
    pub fn open_verified(bytes: Bytes, id: &ChunkId) -> Result<Self> {
        let name = manifest_key(id);
        let actual = ChunkId::of(&bytes);
        if actual != *id {
            return Err(Error::corrupt(
                &name,
                0,
                format!("content hashes to {actual}, not to its name (corrupt or edited manifest)"),
            ));
        }
        Self::open(bytes, &name)
    }

    /// Opens manifest bytes, checking magic, version, flags, chunker and section bounds.
    ///
    /// `name` is used in errors.
    pub fn open(bytes: Bytes, name: &str) -> Result<Self> {
        let r = Reader::new(&bytes, name);
        r.magic_and_version(MANIFEST_MAGIC, MANIFEST_VERSION)?;
        let flags = r.u16(10, "feature flags")?;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(r.corrupt(10, format!("unknown required feature flags {flags:#06x}")));
        }
        let kind = r.u8(12, "chunker kind")?;
        let (min, avg, max) = (
            r.u32(16, "chunk min")?,
            r.u32(20, "chunk avg")?,
            r.u32(24, "chunk max")?,
        );
        let chunker = Chunker::from_parts(kind, min, avg, max).ok_or_else(|| {
            r.corrupt(
                12,
                format!("unknown chunker kind {kind} or sizes {min}/{avg}/{max}"),
            )
        })?;
        let mut sections = [(0u64, 0u64); SECTION_COUNT];
        for (i, section) in sections.iter_mut().enumerate() {
            let at = SECTION_TABLE_OFFSET + i as u64 * 16;
            let offset = r.u64(at, "section offset")?;
            let len = r.u64(at + 8, "section length")?;
            let fits = offset >= HEADER_BYTES
                && offset
                    .checked_add(len)
                    .is_some_and(|end| end <= bytes.len() as u64);
            if !fits {
                return Err(r.corrupt(
                    at,
                    format!(
                        "section {} spans {offset}+{len} but the manifest is {} bytes (truncated?)",
                        SECTION_NAMES[i],
                        bytes.len()
                    ),
                ));
            }
            let record = SECTION_RECORD_BYTES[i];
            if record > 1 && len % record != 0 {
                return Err(r.corrupt(
                    at + 8,
                    format!(
                        "section {} length {len} is not a multiple of {record}",
                        SECTION_NAMES[i]
                    ),
                ));
            }
            *section = (offset, len);
        }
        if sections[Section::Inodes as usize].1 == 0 {
            return Err(r.corrupt(
                SECTION_TABLE_OFFSET,
                "no inodes: a manifest needs at least its root",
            ));
        }
        let (ann_off, ann_len) = sections[Section::Annotations as usize];
        let annotations = if ann_len == 0 {
            BTreeMap::new()
        } else {
            serde_json::from_slice(&bytes[ann_off as usize..(ann_off + ann_len) as usize]).map_err(
                |e| {
                    r.corrupt(
                        ann_off,
                        format!("annotations are not a JSON string map: {e}"),
                    )
                },
            )?
        };
        let manifest = Manifest {
            id: ChunkId::of(&bytes),
            name: name.to_string(),
            bytes,
            chunker,
            sections,
            annotations,
        };
        let root = manifest.inode(ROOT_INODE)?;
        if root.kind != FileKind::Directory {
            return Err(manifest.corrupt(Section::Inodes, 0, "the root inode is not a directory"));
        }
        Ok(manifest)
    }

    /// The manifest id (blake3 of its bytes).
    pub fn id(&self) -> ChunkId {
        self.id
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The chunker that cut its files.
    pub fn chunker(&self) -> Chunker {
        self.chunker
    }

    /// Free-form annotations (source kind, image config, model summary, ...).
    pub fn annotations(&self) -> &BTreeMap<String, String> {
        &self.annotations
    }

    fn reader(&self) -> Reader<'_> {
        Reader::new(&self.bytes, &self.name)
    }

    fn corrupt(
        &self,
        section: Section,
        offset_in_section: u64,
        reason: impl Into<String>,
    ) -> Error {
        Error::corrupt(
            &self.name,
            self.sections[section as usize].0 + offset_in_section,
            reason,
        )
    }

    fn count(&self, section: Section) -> u64 {
        self.sections[section as usize].1 / SECTION_RECORD_BYTES[section as usize]
    }

    fn record_offset(&self, section: Section, index: u64, what: &str) -> Result<u64> {
        if index >= self.count(section) {
            let (offset, _) = self.sections[section as usize];
            return Err(Error::corrupt(
                &self.name,
                offset,
                format!(
                    "{what} {index} is out of range ({} {} records)",
                    self.count(section),
                    SECTION_NAMES[section as usize]
                ),
            ));
        }
        Ok(self.sections[section as usize].0 + index * SECTION_RECORD_BYTES[section as usize])
    }

    /// Number of inodes.
    pub fn inode_count(&self) -> u32 {
        self.count(Section::Inodes) as u32
    }

    /// Number of distinct chunks.
    pub fn chunk_count(&self) -> u32 {
        self.count(Section::Chunks) as u32
    }

    /// Reads inode `ino`.
    pub fn inode(&self, ino: InodeNo) -> Result<Inode> {
        let at = self.record_offset(Section::Inodes, ino as u64, "inode")?;
        let r = self.reader();
        let code = r.u8(at, "inode kind")?;
        let kind = FileKind::from_code(code)
            .ok_or_else(|| r.corrupt(at, format!("inode {ino}: unknown kind {code}")))?;
        Ok(Inode {
            ino,
            kind,
            mode: r.u32(at + 4, "mode")?,
            uid: r.u32(at + 8, "uid")?,
            gid: r.u32(at + 12, "gid")?,
            nlink: r.u32(at + 16, "nlink")?,
            mtime_nsec: r.u32(at + 20, "mtime nsec")?,
            mtime_sec: r.i64(at + 24, "mtime")?,
            size: r.u64(at + 32, "size")?,
            rdev: r.u64(at + 40, "rdev")?,
            first: r.u32(at + 48, "first")?,
            count: r.u32(at + 52, "count")?,
            xattr_first: r.u32(at + 56, "xattr first")?,
            xattr_count: r.u32(at + 60, "xattr count")?,
        })
    }

    fn string(&self, offset: u32, len: u32, what: &str) -> Result<&[u8]> {
        let (start, section_len) = self.sections[Section::Strings as usize];
        if offset as u64 + len as u64 > section_len {
            return Err(self.corrupt(
                Section::Strings,
                0,
                format!(
                    "{what} string {offset}+{len} is past the string section ({section_len} bytes)"
                ),
            ));
        }
        self.reader().slice(start + offset as u64, len as u64, what)
    }

    /// The entries of directory `dir`, sorted by name.
    pub fn read_dir(&self, dir: &Inode) -> Result<Vec<DirEntry<'_>>> {
        if dir.kind != FileKind::Directory {
            return Err(self.corrupt(
                Section::Inodes,
                dir.ino as u64 * INODE_BYTES,
                format!("inode {} is not a directory", dir.ino),
            ));
        }
        (0..dir.count as u64)
            .map(|i| self.dirent(dir, dir.first as u64 + i))
            .collect()
    }

    fn dirent(&self, dir: &Inode, index: u64) -> Result<DirEntry<'_>> {
        let at = self.record_offset(Section::Dirents, index, "directory entry")?;
        let r = self.reader();
        let name = self.string(
            r.u32(at, "name offset")?,
            r.u32(at + 4, "name length")?,
            "entry name",
        )?;
        if name.is_empty()
            || name == b"."
            || name == b".."
            || name.iter().any(|c| *c == b'/' || *c == 0)
        {
            return Err(r.corrupt(
                at,
                format!(
                    "entry name {:?} is empty, '.', '..' or holds '/' or NUL",
                    String::from_utf8_lossy(name)
                ),
            ));
        }
        let ino = r.u32(at + 8, "entry inode")?;
        if ino as u64 >= self.count(Section::Inodes) {
            return Err(r.corrupt(
                at + 8,
                format!("entry names inode {ino}, past the inode table"),
            ));
        }
        if ino <= dir.ino && self.inode(ino)?.kind == FileKind::Directory {
            return Err(r.corrupt(
                at + 8,
                format!(
                    "directory {} contains directory {ino} numbered before it (cycle)",
                    dir.ino
                ),
            ));
        }
        Ok(DirEntry { name, ino })
    }

    /// Finds `name` in directory `dir` by binary search.
    pub fn lookup_in(&self, dir: &Inode, name: &[u8]) -> Result<Option<InodeNo>> {
        if dir.kind != FileKind::Directory {
            return Ok(None);
        }
        let (mut lo, mut hi) = (0u64, dir.count as u64);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let entry = self.dirent(dir, dir.first as u64 + mid)?;
            match entry.name.cmp(name) {
                std::cmp::Ordering::Equal => return Ok(Some(entry.ino)),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Ok(None)
    }

    /// Resolves a slash-separated path (no symlinks followed) to an inode.
    pub fn lookup(&self, path: &str) -> Result<Option<Inode>> {
        let mut node = self.inode(ROOT_INODE)?;
        for component in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            match self.lookup_in(&node, component.as_bytes())? {
                Some(ino) => node = self.inode(ino)?,
                None => return Ok(None),
            }
        }
        Ok(Some(node))
    }

    /// Chunk table record `index`.
    pub fn chunk(&self, index: u32) -> Result<ChunkEntry> {
        let at = self.record_offset(Section::Chunks, index as u64, "chunk")?;
        let r = self.reader();
        Ok(ChunkEntry {
            id: r.id(at, "chunk id")?,
            raw_len: r.u32(at + 32, "chunk raw length")?,
        })
    }

    /// Every chunk table record, in table order.
    pub fn chunks(&self) -> Result<Vec<ChunkEntry>> {
        (0..self.chunk_count()).map(|i| self.chunk(i)).collect()
    }

    /// The extents of a regular file, checked: sorted, non-overlapping, inside the file and chunks.
    pub fn extents(&self, file: &Inode) -> Result<Vec<Extent>> {
        if file.kind != FileKind::Regular {
            return Ok(Vec::new());
        }
        let r = self.reader();
        // The count comes from the (untrusted) inode: reserve no more than the section holds.
        let mut out =
            Vec::with_capacity((file.count as u64).min(self.count(Section::Extents)) as usize);
        let mut end_of_previous = 0u64;
        for i in 0..file.count as u64 {
            let at = self.record_offset(Section::Extents, file.first as u64 + i, "extent")?;
            let extent = Extent {
                file_offset: r.u64(at, "extent file offset")?,
                chunk: r.u32(at + 8, "extent chunk")?,
                chunk_offset: r.u32(at + 12, "extent chunk offset")?,
                len: r.u32(at + 16, "extent length")?,
            };
            let chunk = self.chunk(extent.chunk)?;
            let end = extent.file_offset.checked_add(extent.len as u64);
            let ok = extent.file_offset >= end_of_previous
                && end.is_some_and(|e| e <= file.size)
                && extent.chunk_offset as u64 + extent.len as u64 <= chunk.raw_len as u64;
            if !ok {
                return Err(r.corrupt(at, format!(
                    "inode {}: extent {i} ({}+{} from chunk {} at {}) overlaps, leaves the file ({} bytes) or its chunk ({} bytes)",
                    file.ino, extent.file_offset, extent.len, extent.chunk, extent.chunk_offset, file.size, chunk.raw_len
                )));
            }
            end_of_previous = extent.file_offset + extent.len as u64;
            out.push(extent);
        }
        Ok(out)
    }

    /// The target of a symbolic link.
    pub fn symlink_target(&self, link: &Inode) -> Result<&[u8]> {
        if link.kind != FileKind::Symlink {
            return Ok(&[]);
        }
        self.string(link.first, link.count, "symlink target")
    }

    /// Extended attributes as (name, value) pairs.
    pub fn xattrs(&self, inode: &Inode) -> Result<Vec<(&[u8], &[u8])>> {
        let r = self.reader();
        (0..inode.xattr_count as u64)
            .map(|i| {
                let at =
                    self.record_offset(Section::Xattrs, inode.xattr_first as u64 + i, "xattr")?;
                let name = self.string(
                    r.u32(at, "xattr name offset")?,
                    r.u32(at + 4, "xattr name length")?,
                    "xattr name",
                )?;
                let value = self.string(
                    r.u32(at + 8, "xattr value offset")?,
                    r.u32(at + 12, "xattr value length")?,
                    "xattr value",
                )?;
                Ok((name, value))
            })
            .collect()
    }

    /// Every path in the tree, depth first, parents before children, with its inode.
    ///
    /// The root is the empty path. Paths are byte strings joined with `/`.
    pub fn walk(&self) -> Result<Vec<(Vec<u8>, Inode)>> {
        let mut out = Vec::with_capacity(self.inode_count() as usize);
        let root = self.inode(ROOT_INODE)?;
        let mut stack = vec![(Vec::new(), root)];
        while let Some((path, inode)) = stack.pop() {
            if inode.kind == FileKind::Directory {
                let entries = self.read_dir(&inode)?;
                for entry in entries.iter().rev() {
                    let mut child = path.clone();
                    if !child.is_empty() {
                        child.push(b'/');
                    }
                    child.extend_from_slice(entry.name);
                    stack.push((child, self.inode(entry.ino)?));
                }
            }
            out.push((path, inode));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
