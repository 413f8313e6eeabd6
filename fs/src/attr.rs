//! Manifest inodes as FUSE attributes, and the mapping between manifest and FUSE inode numbers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};
use thaw_core::manifest::{FileKind, Inode, InodeNo};

/// How long the kernel may cache entries and attributes: a manifest never changes.
pub(crate) const TTL: Duration = Duration::from_secs(24 * 3600);

/// Block size reported to `stat` and `statfs`.
pub(crate) const BLOCK_SIZE: u32 = 4096;

/// FUSE numbers the root 1; manifests number it 0. Every other inode shifts by one, so the
/// numbers are stable for a manifest and hard links (one manifest inode) share one.
pub(crate) fn fuse_ino(ino: InodeNo) -> INodeNo {
    INodeNo(ino as u64 + 1)
}

/// The manifest inode a FUSE inode number names, if it can name one.
pub(crate) fn manifest_ino(ino: INodeNo) -> Option<InodeNo> {
    ino.0.checked_sub(1).and_then(|n| InodeNo::try_from(n).ok())
}

/// The FUSE file type of a manifest file kind.
pub(crate) fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::Directory => FileType::Directory,
        FileKind::Regular => FileType::RegularFile,
        FileKind::Symlink => FileType::Symlink,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
    }
}

/// The attributes `stat` shows for `inode`. The manifest keeps one time (mtime); access and
/// change times show it too.
pub(crate) fn file_attr(inode: &Inode) -> FileAttr {
    let mtime = if inode.mtime_sec >= 0 {
        UNIX_EPOCH + Duration::new(inode.mtime_sec as u64, inode.mtime_nsec)
    } else {
        UNIX_EPOCH - Duration::new(inode.mtime_sec.unsigned_abs(), 0)
            + Duration::new(0, inode.mtime_nsec)
    };
    FileAttr {
        ino: fuse_ino(inode.ino),
        size: inode.size,
        blocks: inode.size.div_ceil(512),
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: SystemTime::UNIX_EPOCH,
        kind: file_type(inode.kind),
        perm: (inode.mode & 0o7777) as u16,
        nlink: inode.nlink.max(1),
        uid: inode.uid,
        gid: inode.gid,
        // The kernel's 32-bit device encoding is the low half of glibc's 64-bit one.
        rdev: inode.rdev as u32,
        blksize: BLOCK_SIZE,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_numbers_round_trip_and_the_root_is_one() {
        assert_eq!(fuse_ino(0), INodeNo(1));
        assert_eq!(manifest_ino(INodeNo(1)), Some(0));
        assert_eq!(manifest_ino(fuse_ino(41)), Some(41));
        assert_eq!(manifest_ino(INodeNo(0)), None);
        assert_eq!(manifest_ino(INodeNo(u64::MAX)), None);
    }
}
