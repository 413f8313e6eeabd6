//! Byte layout constants of the manifest format (docs/format.md, "Manifest").

/// Magic at offset 0.
pub const MANIFEST_MAGIC: &[u8; 8] = b"THAWMNFT";
/// The format version this code reads and writes.
pub const MANIFEST_VERSION: u16 = 1;
/// Feature flags this code understands (none yet: any set bit is refused).
pub const KNOWN_FLAGS: u16 = 0;
/// Offset of the section table in the header.
pub const SECTION_TABLE_OFFSET: u64 = 32;
/// Number of sections.
pub const SECTION_COUNT: usize = 7;
/// Bytes of the header, section table included.
pub const HEADER_BYTES: u64 = SECTION_TABLE_OFFSET + SECTION_COUNT as u64 * 16;
/// Bytes of an inode record.
pub const INODE_BYTES: u64 = 64;
/// Bytes of a directory entry record.
pub const DIRENT_BYTES: u64 = 12;
/// Bytes of an extent record.
pub const EXTENT_BYTES: u64 = 24;
/// Bytes of a chunk table record.
pub const CHUNK_RECORD_BYTES: u64 = 40;
/// Bytes of an xattr record.
pub const XATTR_BYTES: u64 = 16;

/// The sections, in section-table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// Inode records.
    Inodes = 0,
    /// Directory entries, each directory's run sorted by name.
    Dirents = 1,
    /// File extents, each file's run sorted by offset.
    Extents = 2,
    /// Distinct chunks (id, raw length).
    Chunks = 3,
    /// Extended attributes.
    Xattrs = 4,
    /// Names, symlink targets and xattr names/values.
    Strings = 5,
    /// A JSON object of string annotations.
    Annotations = 6,
}

/// Record size of each section (1 = a byte blob).
pub const SECTION_RECORD_BYTES: [u64; SECTION_COUNT] = [
    INODE_BYTES,
    DIRENT_BYTES,
    EXTENT_BYTES,
    CHUNK_RECORD_BYTES,
    XATTR_BYTES,
    1,
    1,
];

/// Section names for error messages.
pub const SECTION_NAMES: [&str; SECTION_COUNT] = [
    "inodes",
    "dirents",
    "extents",
    "chunks",
    "xattrs",
    "strings",
    "annotations",
];
