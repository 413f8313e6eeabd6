//! Opening a cache: loading the index's records, reconciling them with the files after an
//! unclean shutdown, and discarding a cache of the old format.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{IteratorMode, Options, WriteBatch, DB};

use super::index::{self, Object};
use super::layout::ObjectKind;
use super::{db_error, no_wal, Inner};
use crate::{ChunkId, Error, Result};

/// Object records loaded from the index: key and object.
pub(super) type Records = Vec<(ChunkId, Object)>;

/// Deletes the RocksDB files of the cache format before file objects (values in the cache
/// directory itself), so an upgrade does not leave them unaccounted on disk.
pub(super) fn discard_old_format(dir: &Path) -> Result<()> {
    if !dir.join("CURRENT").exists() {
        return Ok(());
    }
    tracing::warn!(path = %dir.display(), "discarding a disk cache of the old format (RocksDB values)");
    DB::destroy(&Options::default(), dir).map_err(|e| db_error(dir, e))
}

/// The object records and lifetime hit counts of an index.
pub(super) fn load_records(db: &DB, dir: &Path) -> Result<(Records, (u64, u64))> {
    let mut ages = std::collections::HashMap::new();
    for item in db.iterator(IteratorMode::From(b"a", rocksdb::Direction::Forward)) {
        let (key, value) = item.map_err(|e| db_error(dir, e))?;
        if key.first() != Some(&b'a') {
            break;
        }
        if key.len() == 33 && value.len() == 8 {
            let seq = u64::from_le_bytes(value[..].try_into().expect("8 bytes"));
            ages.insert(ChunkId::from_slice(&key[1..]), seq);
        }
    }
    let mut objects = Vec::new();
    for item in db.iterator(IteratorMode::From(b"o", rocksdb::Direction::Forward)) {
        let (key, value) = item.map_err(|e| db_error(dir, e))?;
        if key.first() != Some(&b'o') {
            break;
        }
        let Some((kind, size, content, chunks)) = index::decode_object(&value) else {
            continue;
        };
        if key.len() != 33 {
            continue;
        }
        let key = ChunkId::from_slice(&key[1..]);
        objects.push((
            key,
            Object {
                kind,
                size,
                content,
                chunks: Arc::from(chunks),
                seq: ages.get(&key).copied().unwrap_or(0),
                trusted: false,
            },
        ));
    }
    let past = db
        .get(index::STATS_KEY)
        .map_err(|e| db_error(dir, e))?
        .and_then(|v| index::decode_pair(&v))
        .unwrap_or_default();
    Ok((objects, past))
}

impl Inner {
    /// After an unclean shutdown: drops records whose file is gone or has another size,
    /// deletes leftovers (temporary files, whole files without a record, strays) and adopts
    /// chunk files the index forgot (they were complete when renamed into place; each is
    /// verified before use like every other object from that run).
    pub(super) fn reconcile(&self, records: Records) -> Result<Records> {
        let root = self.layout.root();
        let cleared = self.layout.clear_tmp().map_err(|e| Error::io(root, e))?;
        let scan = self.layout.scan().map_err(|e| Error::io(root, e))?;
        let on_disk: std::collections::HashMap<(ObjectKind, ChunkId), u64> = scan
            .objects
            .iter()
            .map(|(kind, key, size)| ((*kind, *key), *size))
            .collect();
        let mut kept = Vec::new();
        let mut batch = WriteBatch::default();
        let mut recorded = std::collections::HashSet::new();
        for (key, object) in records {
            if on_disk.get(&(object.kind, key)) == Some(&object.size) {
                recorded.insert((object.kind, key));
                kept.push((key, object));
            } else {
                batch.delete(index::object_key(&key));
                batch.delete(index::age_key(&key));
            }
        }
        let mut adopted = 0;
        let mut deleted = 0;
        for (kind, key, size) in scan.objects {
            if recorded.contains(&(kind, key)) {
                continue;
            }
            if kind == ObjectKind::Chunk && size <= crate::chunker::MAX_CHUNK_BYTES as u64 {
                let object = Object::chunk(size, false);
                batch.put(index::object_key(&key), index::encode_object(&object));
                kept.push((key, object));
                adopted += 1;
            } else {
                self.layout
                    .remove(kind, &key)
                    .map_err(|e| Error::io(root, e))?;
                deleted += 1;
            }
        }
        for stray in scan.strays {
            let _ = std::fs::remove_file(&stray);
            deleted += 1;
        }
        self.db
            .write_opt(batch, &no_wal())
            .map_err(|e| self.db_error(e))?;
        tracing::info!(
            kept = kept.len(),
            adopted,
            deleted,
            temporary = cleared,
            "disk cache reconciled"
        );
        Ok(kept)
    }
}
