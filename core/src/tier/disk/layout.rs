//! Where the cache's objects live on disk and how one is written without ever being seen torn.
//!
//! ```text
//! <cache>/chunks/ab/<chunk id>   one verified chunk (a one-chunk file's whole content)
//! <cache>/files/ab/<file key>    a whole file's content, assembled from verified chunks
//! <cache>/tmp/                   objects being written; cleared when the cache opens
//! <cache>/index/                 RocksDB: object records and last-use order
//! ```
//!
//! An object is written under `tmp/` and renamed into place only once complete, so a crash
//! (even `kill -9` mid-write) leaves at worst a file in `tmp/`, never a partial object under
//! its final name. Objects are immutable and named by what they hold.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ChunkId;

/// What an object holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// One chunk, named by its id.
    Chunk,
    /// A whole file's content, named by its file key (see `whole::file_key`).
    File,
}

impl ObjectKind {
    pub(crate) fn code(self) -> u8 {
        match self {
            ObjectKind::Chunk => 1,
            ObjectKind::File => 2,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(ObjectKind::Chunk),
            2 => Some(ObjectKind::File),
            _ => None,
        }
    }

    fn folder(self) -> &'static str {
        match self {
            ObjectKind::Chunk => "chunks",
            ObjectKind::File => "files",
        }
    }
}

/// The cache directory's layout.
#[derive(Debug)]
pub(crate) struct Layout {
    root: PathBuf,
    next_tmp: AtomicU64,
}

impl Layout {
    /// The layout under `root`, its folders created.
    pub(crate) fn create(root: &Path) -> io::Result<Self> {
        for folder in ["chunks", "files", "tmp", "index"] {
            std::fs::create_dir_all(root.join(folder))?;
        }
        Ok(Layout {
            root: root.to_path_buf(),
            next_tmp: AtomicU64::new(0),
        })
    }

    /// The cache directory.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The RocksDB index's directory.
    pub(crate) fn index_dir(&self) -> PathBuf {
        self.root.join("index")
    }

    /// The file marking the cache open; found at open, it says the last holder did not close.
    pub(crate) fn open_marker(&self) -> PathBuf {
        self.root.join("in-use")
    }

    /// Where object `key` of `kind` lives.
    pub(crate) fn path(&self, kind: ObjectKind, key: &ChunkId) -> PathBuf {
        let hex = key.to_hex();
        self.root.join(kind.folder()).join(&hex[..2]).join(hex)
    }

    /// Writes a new object: `fill` writes the content into a temporary file, which is renamed
    /// to the object's name only when `fill` succeeded. On any error the temporary file goes.
    pub(crate) fn write_object<T>(
        &self,
        kind: ObjectKind,
        key: &ChunkId,
        fill: impl FnOnce(&File) -> io::Result<T>,
    ) -> io::Result<T> {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp =
            self.root
                .join("tmp")
                .join(format!("{}-{}-{n}", key.to_hex(), std::process::id()));
        let result = (|| {
            let file = File::create(&tmp)?;
            let value = fill(&file)?;
            drop(file);
            let target = self.path(kind, key);
            if let Err(e) = std::fs::rename(&tmp, &target) {
                if e.kind() != io::ErrorKind::NotFound {
                    return Err(e);
                }
                std::fs::create_dir_all(target.parent().expect("objects have a folder"))?;
                std::fs::rename(&tmp, &target)?;
            }
            Ok(value)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Removes an object's file (gone already is fine).
    pub(crate) fn remove(&self, kind: ObjectKind, key: &ChunkId) -> io::Result<()> {
        match std::fs::remove_file(self.path(kind, key)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Deletes what a crashed writer left in `tmp/`.
    pub(crate) fn clear_tmp(&self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(self.root.join("tmp"))? {
            let entry = entry?;
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Every object file on disk: kind, key and size. Files that are not named like objects
    /// are returned as strays for the caller to delete.
    pub(crate) fn scan(&self) -> io::Result<Scan> {
        let mut scan = Scan::default();
        for kind in [ObjectKind::Chunk, ObjectKind::File] {
            for shard in std::fs::read_dir(self.root.join(kind.folder()))? {
                let shard = shard?;
                if !shard.file_type()?.is_dir() {
                    scan.strays.push(shard.path());
                    continue;
                }
                for entry in std::fs::read_dir(shard.path())? {
                    let entry = entry?;
                    let name = entry.file_name();
                    let key = name.to_str().and_then(|n| n.parse::<ChunkId>().ok());
                    match key {
                        Some(key) if entry.file_type()?.is_file() => {
                            scan.objects.push((kind, key, entry.metadata()?.len()))
                        }
                        _ => scan.strays.push(entry.path()),
                    }
                }
            }
        }
        Ok(scan)
    }
}

/// What [`Layout::scan`] found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Object files: kind, key, size.
    pub(crate) objects: Vec<(ObjectKind, ChunkId, u64)>,
    /// Files in the object folders that are not objects.
    pub(crate) strays: Vec<PathBuf>,
}
