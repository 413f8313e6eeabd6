//! The snapshotter's own records: every snapshot's key, kind, parent, labels and times, the
//! number of its directory, and for a remote snapshot the layers it stands for. They live in
//! one JSON file under the snapshotter's root, rewritten whole (to a temporary file, synced,
//! renamed over the old one) on every change, so a restart or a crash finds the last state
//! containerd was told about. The rules are those of containerd's own snapshotter storage:
//! keys are unique, parents must be committed, only an active snapshot commits, and a snapshot
//! with children cannot be removed.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::{Result, SnapshotterError};

/// A snapshot's kind, as containerd names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A read-only view of a committed snapshot.
    View,
    /// A writable snapshot, committed later or removed.
    Active,
    /// A read-only layer other snapshots build on.
    Committed,
}

impl Kind {
    /// The name containerd's filters use (`kind==committed`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

/// The layers a snapshot stands for, when the snapshotter knows them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layers {
    /// Diff ids of its layers and its ancestors', bottom first.
    pub diff_ids: Vec<String>,
    /// For a remote snapshot: the manifest id of thaw's tree of its own (topmost) layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

/// One snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Its key (a committed snapshot's name).
    pub key: String,
    /// Number of its directory under `snapshots/`.
    pub id: u64,
    /// Its kind.
    pub kind: Kind,
    /// Its parent's key, empty for none.
    #[serde(default)]
    pub parent: String,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When it was created (nanoseconds since the epoch).
    pub created_ns: u128,
    /// When it last changed.
    pub updated_ns: u128,
    /// The layers it stands for (a remote snapshot always has them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<Layers>,
}

impl Snapshot {
    /// The thaw layer tree a remote snapshot serves, `None` for an ordinary one.
    pub fn remote(&self) -> Option<&str> {
        self.layers.as_ref().and_then(|l| l.remote.as_deref())
    }
}

/// The file's contents.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    next_id: u64,
    snapshots: BTreeMap<String, Snapshot>,
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The records, loaded from and saved to one file.
#[derive(Debug)]
pub struct Metadata {
    path: PathBuf,
    state: State,
}

impl Metadata {
    /// Opens the records at `path` (an empty set when the file does not exist yet).
    pub fn open(path: &Path) -> Result<Self> {
        let state = match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| SnapshotterError::BadMetadata {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(SnapshotterError::io(path, e)),
        };
        Ok(Metadata {
            path: path.to_path_buf(),
            state,
        })
    }

    fn save(&self) -> Result<()> {
        let io = |e| SnapshotterError::io(&self.path, e);
        let temporary = self.path.with_extension("json.new");
        let bytes = serde_json::to_vec_pretty(&self.state).expect("records serialise");
        let mut file = std::fs::File::create(&temporary).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&temporary, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }

    /// The snapshot `key`.
    pub fn get(&self, key: &str) -> Result<&Snapshot> {
        self.state
            .snapshots
            .get(key)
            .ok_or_else(|| SnapshotterError::NotFound(key.to_string()))
    }

    /// Every snapshot, by key.
    pub fn all(&self) -> impl Iterator<Item = &Snapshot> {
        self.state.snapshots.values()
    }

    /// `key` and its ancestors, `key` first.
    pub fn chain(&self, key: &str) -> Result<Vec<&Snapshot>> {
        let mut out = Vec::new();
        let mut next = key;
        while !next.is_empty() {
            let snapshot = self.get(next)?;
            out.push(snapshot);
            next = &snapshot.parent;
            if out.len() > self.state.snapshots.len() {
                return Err(SnapshotterError::FailedPrecondition(format!(
                    "snapshot {key}: its parents form a cycle"
                )));
            }
        }
        Ok(out)
    }

    fn check_new(&self, key: &str, parent: &str) -> Result<()> {
        if key.is_empty() {
            return Err(SnapshotterError::InvalidArgument(
                "a snapshot needs a key".into(),
            ));
        }
        if self.state.snapshots.contains_key(key) {
            return Err(SnapshotterError::AlreadyExists(key.to_string()));
        }
        if !parent.is_empty() {
            let p = self.state.snapshots.get(parent).ok_or_else(|| {
                SnapshotterError::NotFound(format!("{parent} (the parent of {key})"))
            })?;
            if p.kind != Kind::Committed {
                return Err(SnapshotterError::InvalidArgument(format!(
                    "parent {parent} of {key} is not a committed snapshot"
                )));
            }
        }
        Ok(())
    }

    /// Records a new active or view snapshot (or, with `layers` naming a remote tree, a
    /// committed remote one) and returns it.
    pub fn create(
        &mut self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
        layers: Option<Layers>,
    ) -> Result<Snapshot> {
        self.check_new(key, parent)?;
        let now = now_ns();
        self.state.next_id += 1;
        let snapshot = Snapshot {
            key: key.to_string(),
            id: self.state.next_id,
            kind,
            parent: parent.to_string(),
            labels,
            created_ns: now,
            updated_ns: now,
            layers,
        };
        self.state
            .snapshots
            .insert(key.to_string(), snapshot.clone());
        self.save()?;
        Ok(snapshot)
    }

    /// Commits active snapshot `key` as `name` (its directory stays; `labels` become its
    /// labels).
    pub fn commit(
        &mut self,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Snapshot> {
        let active = self.get(key)?.clone();
        if active.kind != Kind::Active {
            return Err(SnapshotterError::FailedPrecondition(format!(
                "snapshot {key} is {}, not active: only an active snapshot commits",
                active.kind.name()
            )));
        }
        if self.state.snapshots.contains_key(name) {
            return Err(SnapshotterError::AlreadyExists(name.to_string()));
        }
        let committed = Snapshot {
            key: name.to_string(),
            kind: Kind::Committed,
            labels,
            updated_ns: now_ns(),
            ..active
        };
        self.state.snapshots.remove(key);
        self.state
            .snapshots
            .insert(name.to_string(), committed.clone());
        self.save()?;
        Ok(committed)
    }

    /// Removes `key`, refused while another snapshot names it as parent; returns what it was.
    pub fn remove(&mut self, key: &str) -> Result<Snapshot> {
        self.get(key)?;
        if let Some(child) = self.all().find(|s| s.parent == key) {
            return Err(SnapshotterError::FailedPrecondition(format!(
                "cannot remove snapshot {key}: {} is its child",
                child.key
            )));
        }
        let removed = self.state.snapshots.remove(key).expect("checked above");
        self.save()?;
        Ok(removed)
    }

    /// Changes the labels of `key` as containerd's Update does: with no `paths`, or the path
    /// `labels`, the labels are replaced; a path `labels.NAME` sets or clears that one label.
    pub fn update_labels(
        &mut self,
        key: &str,
        labels: BTreeMap<String, String>,
        paths: &[String],
    ) -> Result<Snapshot> {
        let snapshot = self
            .state
            .snapshots
            .get_mut(key)
            .ok_or_else(|| SnapshotterError::NotFound(key.to_string()))?;
        let mut changed = snapshot.labels.clone();
        if paths.is_empty() {
            changed = labels;
        } else {
            for path in paths {
                if path == "labels" {
                    changed = labels.clone();
                } else if let Some(name) = path.strip_prefix("labels.") {
                    match labels.get(name) {
                        Some(value) => changed.insert(name.to_string(), value.clone()),
                        None => changed.remove(name),
                    };
                } else {
                    return Err(SnapshotterError::InvalidArgument(format!(
                        "cannot update field {path:?} of snapshot {key} (only labels)"
                    )));
                }
            }
        }
        snapshot.labels = changed;
        snapshot.updated_ns = now_ns();
        let updated = snapshot.clone();
        self.save()?;
        Ok(updated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn records_follow_containerds_rules_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.json");
        let mut m = Metadata::open(&path).unwrap();
        m.create(Kind::Active, "a", "", labels(&[("x", "1")]), None)
            .unwrap();
        assert!(matches!(
            m.create(Kind::Active, "a", "", BTreeMap::new(), None),
            Err(SnapshotterError::AlreadyExists(_))
        ));
        assert!(matches!(
            m.create(Kind::Active, "b", "a", BTreeMap::new(), None),
            Err(SnapshotterError::InvalidArgument(_))
        ));
        let committed = m.commit("base", "a", labels(&[("y", "2")])).unwrap();
        assert_eq!(committed.kind, Kind::Committed);
        assert!(matches!(m.get("a"), Err(SnapshotterError::NotFound(_))));
        m.create(Kind::View, "v", "base", BTreeMap::new(), None)
            .unwrap();
        assert!(matches!(
            m.commit("again", "v", BTreeMap::new()),
            Err(SnapshotterError::FailedPrecondition(_))
        ));
        assert!(matches!(
            m.remove("base"),
            Err(SnapshotterError::FailedPrecondition(_))
        ));
        let mut reopened = Metadata::open(&path).unwrap();
        assert_eq!(reopened.get("base").unwrap(), &committed);
        assert_eq!(reopened.chain("v").unwrap().len(), 2);
        reopened.remove("v").unwrap();
        reopened.remove("base").unwrap();
        assert_eq!(Metadata::open(&path).unwrap().all().count(), 0);
    }

    #[test]
    fn label_updates_replace_or_touch_one_label() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Metadata::open(&dir.path().join("m.json")).unwrap();
        m.create(
            Kind::Active,
            "a",
            "",
            labels(&[("x", "1"), ("y", "2")]),
            None,
        )
        .unwrap();
        let one = m
            .update_labels("a", labels(&[("x", "9")]), &["labels.x".into()])
            .unwrap();
        assert_eq!(one.labels, labels(&[("x", "9"), ("y", "2")]));
        let cleared = m
            .update_labels("a", BTreeMap::new(), &["labels.y".into()])
            .unwrap();
        assert_eq!(cleared.labels, labels(&[("x", "9")]));
        let replaced = m.update_labels("a", labels(&[("z", "3")]), &[]).unwrap();
        assert_eq!(replaced.labels, labels(&[("z", "3")]));
        assert!(matches!(
            m.update_labels("a", BTreeMap::new(), &["parent".into()]),
            Err(SnapshotterError::InvalidArgument(_))
        ));
        assert!(m.update_labels("nope", BTreeMap::new(), &[]).is_err());
    }

    #[test]
    fn a_malformed_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.json");
        std::fs::write(&path, b"{not json").unwrap();
        let e = Metadata::open(&path).unwrap_err().to_string();
        assert!(e.contains("metadata.json"), "{e}");
    }
}
