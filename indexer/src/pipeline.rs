//! The indexing pipeline: as the parallel scan finds each directory's files, chunk + hash +
//! compress them on the same thread pool, append new chunks to packs on one writer thread, then
//! write chunk map and manifest (and the caller the tag).
//!
//! Memory stays bounded: workers stream files through the chunker into the shared
//! [`crate::sink`], whose channel and upload queue are bounded.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;
use thaw_core::chunker::Chunker;
use thaw_core::manifest::{ExtentSpec, FileKind, ManifestBuilder};
use thaw_core::store::Store;
use thaw_core::ChunkId;

use crate::sink::{seal_manifest, with_sink, ChunkSink, KnownChunks, StoreWrites};
use crate::walk::{self, DirVisitor, Entry};
use crate::{model, IndexError, IndexOptions, Progress, SourceKind, BATCH_BYTES, SMALL_FILE_BYTES};

/// What an indexing run did.
#[derive(Clone, Debug)]
pub struct IndexReport {
    /// Id of the manifest written.
    pub manifest: ChunkId,
    /// Entries in the tree.
    pub entries: u64,
    /// Bytes of regular file content read.
    pub bytes_read: u64,
    /// Distinct chunks in the manifest.
    pub chunks: u64,
    /// What was added to the store.
    pub writes: StoreWrites,
    /// Pack indexes in the store that were unreadable and therefore not trusted for dedup.
    pub skipped_indexes: Vec<String>,
}

/// A unit of parallel work inside one directory: one large file, or a batch of small files that
/// share one chunk (indexes into the directory's children).
enum Unit {
    Large(usize),
    Batch(Vec<usize>),
}

/// Splits one directory's children (sorted by name) into units. Small files are batched in name
/// order up to [`BATCH_BYTES`]; batches never span directories, so a change in one package leaves
/// the other packages' chunk ids alone. Files with several names always get their own chunks, so
/// their chunk ids do not depend on which name the scan reached first.
fn plan_dir(children: &[Entry]) -> Vec<Unit> {
    let mut units = Vec::new();
    let mut batch: Vec<usize> = Vec::new();
    let mut batch_bytes = 0u64;
    for (i, e) in children.iter().enumerate() {
        if e.meta.kind != FileKind::Regular || e.meta.size == 0 {
            continue;
        }
        if e.meta.size >= SMALL_FILE_BYTES || e.link_key.is_some() {
            units.push(Unit::Large(i));
            continue;
        }
        if !batch.is_empty() && batch_bytes + e.meta.size > BATCH_BYTES {
            units.push(Unit::Batch(std::mem::take(&mut batch)));
            batch_bytes = 0;
        }
        batch.push(i);
        batch_bytes += e.meta.size;
    }
    if !batch.is_empty() {
        units.push(Unit::Batch(batch));
    }
    units
}

/// Extents of files with several names, by (device, inode); `None` while being chunked.
type LinkedExtents = HashMap<(u64, u64), Option<Vec<ExtentSpec>>>;

/// Shared state of the workers.
struct Workers<'a> {
    chunker: Chunker,
    kind: SourceKind,
    /// Files with several names whose content a worker has taken on, and their extents.
    linked: Mutex<LinkedExtents>,
    /// Summaries of validated safetensors files (model folders).
    model_files: Mutex<BTreeMap<String, serde_json::Value>>,
    sink: &'a ChunkSink,
    abort: &'a AtomicBool,
    progress: &'a dyn Progress,
}

impl Workers<'_> {
    fn offer(&self, raw: &[u8]) -> ChunkId {
        self.sink.offer(raw)
    }

    fn large(&self, entry: &Entry) -> Result<Vec<ExtentSpec>, IndexError> {
        let path = &entry.abs;
        let mut file = File::open(path).map_err(|e| IndexError::io(path, e))?;
        let mut extents = Vec::new();
        let mut read = 0u64;
        for (start, end) in data_regions(&file, entry.meta.size, path)? {
            if self.abort.load(Ordering::Relaxed) {
                return Ok(extents);
            }
            file.seek(SeekFrom::Start(start))
                .map_err(|e| IndexError::io(path, e))?;
            self.chunker.chunk_stream(
                (&mut file).take(end - start),
                |offset, data| {
                    let id = self.offer(&data);
                    extents.push(ExtentSpec {
                        file_offset: start + offset,
                        chunk: id,
                        chunk_raw_len: data.len() as u32,
                        chunk_offset: 0,
                        len: data.len() as u32,
                    });
                    read += data.len() as u64;
                    self.progress.advance(data.len() as u64);
                    Ok(())
                },
                |e| IndexError::io(path, e),
            )?;
            let covered = extents
                .last()
                .map(|e| e.file_offset + e.len as u64)
                .unwrap_or(start);
            if covered != end {
                return Err(IndexError::Changed {
                    path: path.clone(),
                    expected: entry.meta.size,
                    read,
                });
            }
        }
        // A file that grew past its scanned size would be stored cut short: refuse that too.
        let now = file.metadata().map_err(|e| IndexError::io(path, e))?.len();
        if now != entry.meta.size {
            return Err(IndexError::Changed {
                path: path.clone(),
                expected: entry.meta.size,
                read: now,
            });
        }
        Ok(extents)
    }

    fn batch(
        &self,
        entries: &[Entry],
        members: &[usize],
    ) -> Result<Vec<(usize, ExtentSpec)>, IndexError> {
        // Exactly the batch's size (+1 so a file that grew is noticed without a reallocation).
        let total: u64 = members.iter().map(|&i| entries[i].meta.size).sum();
        let mut buf = Vec::with_capacity(total as usize + 1);
        let mut placed = Vec::with_capacity(members.len());
        for &i in members {
            let entry = &entries[i];
            let path = &entry.abs;
            let before = buf.len();
            File::open(path)
                .and_then(|f| f.take(entry.meta.size + 1).read_to_end(&mut buf))
                .map_err(|e| IndexError::io(path, e))?;
            let read = (buf.len() - before) as u64;
            if read != entry.meta.size {
                return Err(IndexError::Changed {
                    path: path.clone(),
                    expected: entry.meta.size,
                    read,
                });
            }
            placed.push((i, before as u32, read as u32));
        }
        let id = self.offer(&buf);
        self.progress.advance(buf.len() as u64);
        Ok(placed
            .into_iter()
            .map(|(i, offset, len)| {
                (
                    i,
                    ExtentSpec {
                        file_offset: 0,
                        chunk: id,
                        chunk_raw_len: buf.len() as u32,
                        chunk_offset: offset,
                        len,
                    },
                )
            })
            .collect())
    }
}

impl DirVisitor for Workers<'_> {
    fn visit(&self, children: &mut [Entry]) -> Result<(), IndexError> {
        if self.abort.load(Ordering::Relaxed) {
            // Another worker or the pack writer failed; its error is the one reported.
            return Ok(());
        }
        if self.kind == SourceKind::Model {
            for child in children.iter().filter(|c| model::is_safetensors(c)) {
                let (name, summary) = model::summarize(child)?;
                self.model_files
                    .lock()
                    .expect("model lock")
                    .insert(name, summary);
            }
        }
        let units = plan_dir(children);
        let results: Vec<Vec<(usize, ExtentSpec)>> = units
            .par_iter()
            .map(|unit| {
                let result = match unit {
                    Unit::Large(i) => self
                        .large_once(&children[*i])
                        .map(|x| x.into_iter().map(|e| (*i, e)).collect()),
                    Unit::Batch(members) => self.batch(children, members),
                };
                if result.is_err() {
                    self.abort.store(true, Ordering::Relaxed);
                }
                result
            })
            .collect::<Result<_, IndexError>>()?;
        for (i, extent) in results.into_iter().flatten() {
            children[i].meta.extents.push(extent);
        }
        Ok(())
    }
}

impl Workers<'_> {
    /// Chunks a large file; a file with several names is chunked once, by whoever gets there
    /// first, and its extents are handed out after the scan.
    fn large_once(&self, entry: &Entry) -> Result<Vec<ExtentSpec>, IndexError> {
        let Some(key) = entry.link_key else {
            return self.large(entry);
        };
        // Claim the inode without overwriting a claim (or the extents) of another name.
        match self.linked.lock().expect("linked lock").entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => return Ok(Vec::new()),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(None);
            }
        }
        let extents = self.large(entry)?;
        self.linked
            .lock()
            .expect("linked lock")
            .insert(key, Some(extents));
        Ok(Vec::new())
    }
}

/// The data regions of a file as (start, end) pairs, skipping holes (SEEK_DATA / SEEK_HOLE).
fn data_regions(file: &File, size: u64, path: &Path) -> Result<Vec<(u64, u64)>, IndexError> {
    let fd = file.as_raw_fd();
    let mut regions = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        // SAFETY: lseek on a valid, owned file descriptor; no memory is passed.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ENXIO) => Ok(regions), // only a hole remains
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Ok(vec![(0, size)]),
                _ => Err(IndexError::io(path, err)),
            };
        }
        let data = (data as u64).min(size);
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(IndexError::io(path, std::io::Error::last_os_error()));
        }
        let hole = (hole as u64).min(size);
        if hole > data {
            regions.push((data, hole));
        }
        pos = hole.max(data + 1);
    }
    Ok(regions)
}

/// Runs the whole pipeline for a scanned tree and writes chunk map and manifest.
#[allow(clippy::too_many_arguments)]
pub fn run(
    store: &Store,
    runtime: &tokio::runtime::Handle,
    pool: &rayon::ThreadPool,
    root: &Path,
    chunker: Chunker,
    kind: SourceKind,
    options: &IndexOptions,
    progress: &dyn Progress,
) -> Result<IndexReport, IndexError> {
    let known = KnownChunks::load(store, runtime)?;
    // The total is unknown until the scan ends: the bar counts bytes and rate.
    progress.start("indexing", 0);
    let abort = AtomicBool::new(false);
    let started = std::time::Instant::now();
    let ((tree, linked, model_files), written) =
        with_sink(store, runtime, &known, options, &abort, |sink| {
            let workers = Workers {
                chunker,
                kind,
                linked: Mutex::new(HashMap::new()),
                model_files: Mutex::new(BTreeMap::new()),
                sink,
                abort: &abort,
                progress,
            };
            let tree = pool.install(|| walk::scan(root, &workers))?;
            Ok((tree, workers.linked, workers.model_files))
        })?;
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        "scanned, chunked, compressed and packed"
    );
    let entries = tree.entries;
    progress.finish();

    let mut builder = ManifestBuilder::new(chunker, entries[0].meta.clone());
    builder.annotate("org.thaw.source.kind", kind.name());
    if kind == SourceKind::Model {
        let files = model_files.into_inner().expect("model lock");
        if files.is_empty() {
            return Err(IndexError::Unsupported {
                path: root.to_path_buf(),
                reason: "no .safetensors files: not a model folder (use `thaw index dir` for other trees)".into(),
            });
        }
        builder.annotate(
            model::ANNOTATION,
            serde_json::to_string(&files).expect("summary serialises"),
        );
    }
    let mut linked = linked.into_inner().expect("linked lock");
    let mut bytes_read = 0;
    for entry in entries.iter().skip(1) {
        if let Some(first) = &entry.hardlink_of {
            builder.link(&entry.rel, first)?;
            continue;
        }
        let mut meta = entry.meta.clone();
        if let Some(extents) = entry.link_key.and_then(|key| linked.remove(&key)).flatten() {
            meta.extents = extents;
        }
        meta.extents.sort_by_key(|e| e.file_offset);
        bytes_read += meta.extents.iter().map(|e| e.len as u64).sum::<u64>();
        builder.insert(&entry.rel, meta)?;
    }
    let (manifest, _map) = seal_manifest(store, runtime, builder, &written, &known.locations)?;
    tracing::info!(
        bytes = manifest.bytes().len(),
        seconds = started.elapsed().as_secs_f64(),
        "manifest built"
    );
    Ok(IndexReport {
        manifest: manifest.id(),
        entries: entries.len() as u64,
        bytes_read,
        chunks: manifest.chunk_count() as u64,
        writes: written.summary(),
        skipped_indexes: known.skipped_indexes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use thaw_core::manifest::NodeMeta;

    fn file(name: &str, size: u64, linked: bool) -> Entry {
        Entry {
            rel: name.as_bytes().to_vec(),
            abs: name.into(),
            meta: NodeMeta {
                kind: FileKind::Regular,
                size,
                ..NodeMeta::directory(0o644)
            },
            hardlink_of: None,
            link_key: linked.then_some((1, 2)),
        }
    }

    #[test]
    fn small_files_are_batched_in_order_up_to_the_batch_size() {
        let children = vec![
            file("a", 40_000, false),
            file("b", 0, false),
            file("c", SMALL_FILE_BYTES, false),
            file("d", 600_000 / 10, false),
            file("e", 10, true),
        ];
        let mut many = children.clone();
        for i in 0..30 {
            many.push(file(&format!("s{i:02}"), 60_000, false));
        }
        let units = plan_dir(&many);
        let larges: Vec<usize> = units
            .iter()
            .filter_map(|u| match u {
                Unit::Large(i) => Some(*i),
                _ => None,
            })
            .collect();
        assert_eq!(
            larges,
            vec![2, 4],
            "files >= the small limit and linked files get their own chunks"
        );
        let batches: Vec<&Vec<usize>> = units
            .iter()
            .filter_map(|u| match u {
                Unit::Batch(m) => Some(m),
                _ => None,
            })
            .collect();
        let flat: Vec<usize> = batches.iter().flat_map(|b| b.iter().copied()).collect();
        let expected: Vec<usize> = [0, 3].into_iter().chain(5..35).collect();
        assert_eq!(
            flat, expected,
            "empty files have no data; the rest keep name order"
        );
        for b in &batches {
            let bytes: u64 = b.iter().map(|&i| many[i].meta.size).sum();
            assert!(bytes <= BATCH_BYTES, "batch of {bytes} bytes");
        }
        assert!(batches.len() >= 2);
    }

    #[test]
    fn data_regions_skip_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let f = File::create(&path).unwrap();
        f.set_len(32 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&[1u8; 4096], 16 << 20).unwrap();
        let regions = data_regions(&File::open(&path).unwrap(), 32 << 20, &path).unwrap();
        let data: u64 = regions.iter().map(|(s, e)| e - s).sum();
        assert!(
            regions
                .iter()
                .any(|(s, e)| *s <= 16 << 20 && *e >= (16 << 20) + 4096),
            "{regions:?}"
        );
        assert!(data < 4 << 20, "holes are skipped: {regions:?}");
    }
}
