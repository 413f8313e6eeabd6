//! Where a snapshot's files are and the mounts containerd is handed for it, laid out as
//! containerd's overlayfs snapshotter lays them out: `snapshots/ID/fs` holds an ordinary
//! snapshot's files (the overlay's upper directory while it is active), `snapshots/ID/work` is
//! overlayfs's work directory, and `lazy/ID` is where a remote snapshot's lazy mount goes.
//! An active snapshot with no parent is a bind mount of its `fs`; with parents it is an overlay
//! whose lowers are the parents' directories, top first. A remote parent's lazy mount holds
//! that layer and every layer below it already flattened, so it is always the last lower.

use std::path::{Path, PathBuf};

use crate::api::types::Mount;
use crate::metadata::{Kind, Snapshot};
use crate::{Result, SnapshotterError};

/// The snapshotter's root directory.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout under `root` (created, with its subdirectories).
    pub fn create(root: &Path) -> Result<Self> {
        for dir in ["snapshots", "lazy"] {
            let path = root.join(dir);
            std::fs::create_dir_all(&path).map_err(|e| SnapshotterError::io(&path, e))?;
        }
        Ok(Layout {
            root: root.to_path_buf(),
        })
    }

    /// The metadata file.
    pub fn metadata(&self) -> PathBuf {
        self.root.join("metadata.json")
    }

    /// The directory of snapshot number `id`.
    pub fn snapshot_dir(&self, id: u64) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    /// Snapshot `id`'s files.
    pub fn fs_dir(&self, id: u64) -> PathBuf {
        self.snapshot_dir(id).join("fs")
    }

    fn work_dir(&self, id: u64) -> PathBuf {
        self.snapshot_dir(id).join("work")
    }

    /// Where remote snapshot `id` is mounted.
    pub fn lazy_dir(&self, id: u64) -> PathBuf {
        self.root.join("lazy").join(id.to_string())
    }

    /// Creates the directories of a new ordinary snapshot.
    pub fn create_dirs(&self, id: u64) -> Result<()> {
        for dir in [self.fs_dir(id), self.work_dir(id)] {
            std::fs::create_dir_all(&dir).map_err(|e| SnapshotterError::io(&dir, e))?;
        }
        Ok(())
    }

    /// Removes snapshot `id`'s directory and everything in it.
    pub fn remove_dirs(&self, id: u64) -> Result<()> {
        let dir = self.snapshot_dir(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SnapshotterError::io(&dir, e)),
        }
    }

    /// Numbers under `snapshots/` and under `lazy/` that are not in `owned`.
    pub fn unowned(&self, owned: &std::collections::HashSet<u64>) -> (Vec<u64>, Vec<u64>) {
        let list = |dir: &str| -> Vec<u64> {
            let Ok(entries) = std::fs::read_dir(self.root.join(dir)) else {
                return Vec::new();
            };
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
                .filter(|id| !owned.contains(id))
                .collect()
        };
        (list("snapshots"), list("lazy"))
    }

    /// The lower directories of a snapshot whose ancestors are `parents` (nearest first): each
    /// ordinary parent's `fs`, up to and including the first remote parent's lazy mount.
    pub fn lowers(&self, parents: &[&Snapshot]) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for parent in parents {
            if parent.remote().is_some() {
                out.push(self.lazy_dir(parent.id));
                break;
            }
            out.push(self.fs_dir(parent.id));
        }
        out
    }

    /// The mounts of `snapshot` (active or view) over `lowers` (from [`Layout::lowers`]).
    pub fn mounts(&self, snapshot: &Snapshot, lowers: &[PathBuf]) -> Result<Vec<Mount>> {
        let path = |p: &Path| p.display().to_string();
        let bind = |source: &Path, mode: &str| Mount {
            r#type: "bind".into(),
            source: path(source),
            target: String::new(),
            options: vec![mode.into(), "rbind".into()],
        };
        let lowerdir = || {
            let joined: Vec<String> = lowers.iter().map(|l| path(l)).collect();
            format!("lowerdir={}", joined.join(":"))
        };
        let overlay = |options: Vec<String>| Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options,
        };
        Ok(match (snapshot.kind, lowers) {
            (Kind::Active, []) => vec![bind(&self.fs_dir(snapshot.id), "rw")],
            (Kind::Active, _) => vec![overlay(vec![
                "index=off".into(),
                format!("workdir={}", path(&self.work_dir(snapshot.id))),
                format!("upperdir={}", path(&self.fs_dir(snapshot.id))),
                lowerdir(),
            ])],
            (Kind::View, []) => vec![bind(&self.fs_dir(snapshot.id), "ro")],
            (Kind::View, [one]) => vec![bind(one, "ro")],
            (Kind::View, _) => vec![overlay(vec!["index=off".into(), lowerdir()])],
            (Kind::Committed, _) => {
                return Err(SnapshotterError::FailedPrecondition(format!(
                    "snapshot {} is committed: only active snapshots and views have mounts",
                    snapshot.key
                )))
            }
        })
    }
}

/// Bytes and inodes under `dir` (not following links, each hard-linked inode once), as
/// containerd's overlayfs snapshotter reports an ordinary snapshot's usage.
pub fn disk_usage(dir: &Path) -> (i64, i64) {
    use std::collections::HashSet;
    use std::os::unix::fs::MetadataExt;
    let mut seen = HashSet::new();
    let (mut bytes, mut inodes) = (0i64, 0i64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        inodes += 1;
        bytes += (meta.blocks() * 512) as i64;
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    (bytes, inodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn snapshot(id: u64, kind: Kind, remote: bool) -> Snapshot {
        Snapshot {
            key: format!("s{id}"),
            id,
            kind,
            parent: String::new(),
            labels: BTreeMap::new(),
            created_ns: 0,
            updated_ns: 0,
            layers: remote.then(|| crate::metadata::Layers {
                diff_ids: vec![],
                remote: Some("t".into()),
            }),
        }
    }

    #[test]
    fn mounts_are_containerds_overlayfs_ones_with_a_remote_parent_last() {
        let layout = Layout::create(tempfile::tempdir().unwrap().path()).unwrap();
        let (p3, p2, p1) = (
            snapshot(3, Kind::Committed, false),
            snapshot(2, Kind::Committed, true),
            snapshot(1, Kind::Committed, false),
        );
        let lowers = layout.lowers(&[&p3, &p2, &p1]);
        assert_eq!(lowers, vec![layout.fs_dir(3), layout.lazy_dir(2)]);
        let active = layout
            .mounts(&snapshot(4, Kind::Active, false), &lowers)
            .unwrap();
        assert_eq!(active[0].r#type, "overlay");
        let lowerdir = format!(
            "lowerdir={}:{}",
            layout.fs_dir(3).display(),
            layout.lazy_dir(2).display()
        );
        assert!(active[0].options.contains(&lowerdir), "{active:?}");
        let view = layout
            .mounts(&snapshot(5, Kind::View, false), &lowers[1..])
            .unwrap();
        assert_eq!(view[0].r#type, "bind");
        assert_eq!(view[0].source, layout.lazy_dir(2).display().to_string());
        assert!(view[0].options.contains(&"ro".to_string()));
        let root = layout
            .mounts(&snapshot(6, Kind::Active, false), &[])
            .unwrap();
        assert_eq!(root[0].options, vec!["rw", "rbind"]);
        assert!(layout.mounts(&p1, &[]).is_err());
    }
}
