//! One image layer, streamed: blob bytes -> (gzip | zstd | plain) -> tar entries -> a layer tree
//! whose files are chunked into the sink as they pass. Nothing is written to disk.
//!
//! The layer tree keeps the layer as it is, whiteouts included (`.wh.NAME` and `.wh..wh..opq`
//! stay entries); [`crate::image::flatten`] applies them. Hard links to files of lower layers
//! cannot be links inside this tree; they are kept aside as `external_links`.
//!
//! Hostile input is refused with the layer and entry named: a `..` above the root, entries whose
//! parent is not a directory, absurd sizes, unknown entry types, truncated streams, and blobs or
//! uncompressed layers whose digest is not the one the image declares.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};

use thaw_core::chunker::Chunker;
use thaw_core::manifest::{ExtentSpec, FileKind, ManifestBuilder, NodeMeta};

use super::digest::HashingReader;
use super::source::Layer;
use crate::sink::ChunkSink;
use crate::{IndexError, Progress, BATCH_BYTES, SMALL_FILE_BYTES};

/// Annotation of a layer tree whose tar held an entry for the root directory itself (only then
/// does the layer change the root's metadata).
pub const ROOT_ANNOTATION: &str = "org.thaw.layer.root";
/// Annotation of a layer tree listing (JSON, hex paths) the directories its tar did not hold
/// but its entries needed as parents: they must not change a lower layer's directory.
pub const IMPLICIT_ANNOTATION: &str = "org.thaw.layer.implicit-dirs";

/// Largest file a layer may hold.
pub const MAX_FILE_BYTES: u64 = 1 << 40;

/// A layer's tree, ready to be sealed as a manifest.
pub struct LayerTree {
    /// The entries (whiteouts included).
    pub builder: ManifestBuilder,
    /// Hard links whose target lies in a lower layer: (path, target).
    pub external_links: Vec<(Vec<u8>, Vec<u8>)>,
    /// Tar entries read.
    pub entries: u64,
    /// Bytes of file content read.
    pub bytes: u64,
}

fn layer_error(layer: &Layer, entry: impl AsRef<[u8]>, reason: impl Into<String>) -> IndexError {
    IndexError::Layer {
        layer: layer.name.clone(),
        entry: String::from_utf8_lossy(entry.as_ref()).into_owned(),
        reason: reason.into(),
    }
}

/// A tar path as a clean relative path (`a/b`), or why it is refused. The empty path is the
/// root. Names are cleaned as containerd's tar applier cleans them (joined under the root):
/// a leading `/` (umoci's `insert` writes a root entry named `/`), `./` and empty parts are
/// dropped and `x/../y` is `y`; only a `..` that would leave the root is refused.
pub fn clean_path(raw: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => continue,
            b".." => {
                if parts.pop().is_none() {
                    return Err("path escapes the root ('..' above it)");
                }
            }
            _ => parts.push(part),
        }
    }
    Ok(parts.join(&b'/'))
}

/// Small files waiting to share one chunk.
#[derive(Default)]
struct Batch {
    data: Vec<u8>,
    files: Vec<(Vec<u8>, NodeMeta, u32, u32)>,
    dir: Vec<u8>,
}

fn parent_of(path: &[u8]) -> &[u8] {
    path.iter()
        .rposition(|b| *b == b'/')
        .map_or(&path[..0], |i| &path[..i])
}

struct LayerBuilder<'a> {
    layer: &'a Layer,
    chunker: Chunker,
    sink: &'a ChunkSink,
    progress: &'a dyn Progress,
    tree: LayerTree,
    /// Non-directory paths added by this layer (hard link targets).
    files: HashSet<Vec<u8>>,
    /// Directories created only as parents of entries.
    implicit_dirs: HashSet<Vec<u8>>,
    batch: Batch,
}

impl LayerBuilder<'_> {
    /// Creates missing parent directories (tar streams may omit them).
    fn ensure_parents(&mut self, path: &[u8]) -> Result<(), IndexError> {
        let mut at = 0;
        while let Some(i) = path[at..].iter().position(|b| *b == b'/') {
            let dir = &path[..at + i];
            match self.tree.builder.get(dir) {
                Some(meta) if meta.kind == FileKind::Directory => {}
                Some(_) => {
                    return Err(layer_error(
                        self.layer,
                        path,
                        format!(
                            "parent {} is not a directory (refusing to write through a symlink or file)",
                            String::from_utf8_lossy(dir)
                        ),
                    ))
                }
                None => {
                    self.tree
                        .builder
                        .insert(dir, NodeMeta::directory(0o755))
                        .map_err(|e| layer_error(self.layer, path, e.to_string()))?;
                    self.implicit_dirs.insert(dir.to_vec());
                }
            }
            at += i + 1;
        }
        Ok(())
    }

    fn insert(&mut self, path: &[u8], meta: NodeMeta) -> Result<(), IndexError> {
        // Batched files all live in the batch's directory: only a path there can be pending.
        if parent_of(path) == self.batch.dir.as_slice()
            && self.batch.files.iter().any(|(p, ..)| p == path)
        {
            self.flush_batch()?;
        }
        self.ensure_parents(path)?;
        if meta.kind == FileKind::Directory {
            self.files.remove(path);
            self.implicit_dirs.remove(path);
        } else {
            self.files.insert(path.to_vec());
        }
        self.tree
            .builder
            .insert(path, meta)
            .map_err(|e| layer_error(self.layer, path, e.to_string()))
    }

    fn read_error(&self, path: &[u8], e: std::io::Error) -> IndexError {
        layer_error(
            self.layer,
            path,
            format!("reading its content: {e} (truncated or corrupt layer?)"),
        )
    }

    fn flush_batch(&mut self) -> Result<(), IndexError> {
        let batch = std::mem::take(&mut self.batch);
        if batch.files.is_empty() {
            return Ok(());
        }
        let id = self.sink.offer(&batch.data);
        self.progress.advance(batch.data.len() as u64);
        for (path, mut meta, offset, len) in batch.files {
            meta.extents = vec![ExtentSpec {
                file_offset: 0,
                chunk: id,
                chunk_raw_len: batch.data.len() as u32,
                chunk_offset: offset,
                len,
            }];
            self.insert(&path, meta)?;
        }
        Ok(())
    }

    fn regular(
        &mut self,
        path: Vec<u8>,
        mut meta: NodeMeta,
        content: &mut dyn Read,
    ) -> Result<(), IndexError> {
        let size = meta.size;
        if size == 0 {
            return self.insert(&path, meta);
        }
        let short = |read: u64| {
            layer_error(
                self.layer,
                &path,
                format!("truncated: the header says {size} bytes, the stream ended after {read}"),
            )
        };
        if size < SMALL_FILE_BYTES {
            let dir = parent_of(&path).to_vec();
            if !self.batch.files.is_empty()
                && (self.batch.dir != dir || self.batch.data.len() as u64 + size > BATCH_BYTES)
            {
                self.flush_batch()?;
            }
            let before = self.batch.data.len();
            content
                .take(size)
                .read_to_end(&mut self.batch.data)
                .map_err(|e| self.read_error(&path, e))?;
            let read = (self.batch.data.len() - before) as u64;
            if read != size {
                return Err(short(read));
            }
            self.batch.dir = dir;
            self.batch
                .files
                .push((path, meta, before as u32, size as u32));
            self.tree.bytes += size;
            return Ok(());
        }
        let mut extents = Vec::new();
        let mut read = 0u64;
        let sink = self.sink;
        let progress = self.progress;
        self.chunker.chunk_stream(
            content.take(size),
            |offset, data| {
                extents.push(ExtentSpec {
                    file_offset: offset,
                    chunk: sink.offer(&data),
                    chunk_raw_len: data.len() as u32,
                    chunk_offset: 0,
                    len: data.len() as u32,
                });
                read += data.len() as u64;
                progress.advance(data.len() as u64);
                Ok(())
            },
            |e| self.read_error(&path, e),
        )?;
        if read != size {
            return Err(short(read));
        }
        self.tree.bytes += size;
        meta.extents = extents;
        self.insert(&path, meta)
    }

    fn entry(&mut self, mut entry: tar::Entry<'_, impl Read>) -> Result<(), IndexError> {
        let raw_path = entry.path_bytes().into_owned();
        let path = clean_path(&raw_path).map_err(|r| layer_error(self.layer, &raw_path, r))?;
        let header = entry.header().clone();
        let kind = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => FileKind::Regular,
            tar::EntryType::Directory => FileKind::Directory,
            tar::EntryType::Symlink => FileKind::Symlink,
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                return self.hard_link(path, &target);
            }
            tar::EntryType::Char => FileKind::CharDevice,
            tar::EntryType::Block => FileKind::BlockDevice,
            tar::EntryType::Fifo => FileKind::Fifo,
            other => {
                return Err(layer_error(
                    self.layer,
                    &raw_path,
                    format!("unsupported tar entry type {other:?}"),
                ))
            }
        };
        let mut meta = NodeMeta::directory(0);
        meta.kind = kind;
        let type_bits = match kind {
            FileKind::Regular => libc::S_IFREG,
            FileKind::Directory => libc::S_IFDIR,
            FileKind::Symlink => libc::S_IFLNK,
            FileKind::CharDevice => libc::S_IFCHR,
            FileKind::BlockDevice => libc::S_IFBLK,
            FileKind::Fifo => libc::S_IFIFO,
            FileKind::Socket => libc::S_IFSOCK,
        };
        let mode = header
            .mode()
            .map_err(|e| layer_error(self.layer, &raw_path, e.to_string()))?;
        meta.mode = type_bits | (mode & 0o7777);
        meta.uid = header.uid().unwrap_or(0) as u32;
        meta.gid = header.gid().unwrap_or(0) as u32;
        meta.mtime_sec = header.mtime().unwrap_or(0) as i64;
        if let Some(extensions) = entry
            .pax_extensions()
            .map_err(|e| layer_error(self.layer, &raw_path, e.to_string()))?
        {
            for ext in extensions {
                let ext = ext.map_err(|e| layer_error(self.layer, &raw_path, e.to_string()))?;
                let key = ext.key_bytes();
                let text = || std::str::from_utf8(ext.value_bytes()).ok();
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    meta.xattrs
                        .push((name.to_vec(), ext.value_bytes().to_vec()));
                } else if key == b"uid" {
                    meta.uid = text().and_then(|v| v.parse().ok()).unwrap_or(meta.uid);
                } else if key == b"gid" {
                    meta.gid = text().and_then(|v| v.parse().ok()).unwrap_or(meta.gid);
                } else if key == b"mtime" {
                    if let Some((sec, frac)) = text().map(|v| v.split_once('.').unwrap_or((v, "")))
                    {
                        meta.mtime_sec = sec.parse().unwrap_or(meta.mtime_sec);
                        let digits: String = frac.chars().take(9).collect();
                        meta.mtime_nsec = format!("{digits:0<9}").parse().unwrap_or(0);
                    }
                }
            }
            meta.xattrs.sort();
        }
        self.tree.entries += 1;
        match kind {
            FileKind::Symlink => {
                meta.symlink_target =
                    entry
                        .link_name_bytes()
                        .map(|t| t.into_owned())
                        .ok_or_else(|| {
                            layer_error(self.layer, &raw_path, "symlink without a target")
                        })?;
            }
            FileKind::CharDevice | FileKind::BlockDevice => {
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                meta.rdev = libc::makedev(major, minor);
            }
            _ => {}
        }
        if path.is_empty() {
            if kind != FileKind::Directory {
                return Err(layer_error(
                    self.layer,
                    &raw_path,
                    "the root is not a directory",
                ));
            }
            self.tree.builder.set_root(meta);
            self.tree.builder.annotate(ROOT_ANNOTATION, "entry");
            return Ok(());
        }
        if kind == FileKind::Regular {
            let size = entry.size();
            if size > MAX_FILE_BYTES {
                return Err(layer_error(
                    self.layer,
                    &raw_path,
                    format!("claims {size} bytes, more than the {MAX_FILE_BYTES}-byte limit"),
                ));
            }
            meta.size = size;
            return self.regular(path, meta, &mut entry);
        }
        self.insert(&path, meta)
    }

    fn hard_link(&mut self, path: Vec<u8>, raw_target: &[u8]) -> Result<(), IndexError> {
        let target = clean_path(raw_target)
            .map_err(|r| layer_error(self.layer, &path, format!("hard link target: {r}")))?;
        if target.is_empty() || path.is_empty() {
            return Err(layer_error(
                self.layer,
                &path,
                "hard link to or from the root",
            ));
        }
        self.tree.entries += 1;
        self.flush_batch()?;
        if self.files.contains(&target) {
            self.ensure_parents(&path)?;
            self.files.insert(path.clone());
            self.tree
                .builder
                .link(&path, &target)
                .map_err(|e| layer_error(self.layer, &path, e.to_string()))
        } else {
            self.tree.external_links.push((path, target));
            Ok(())
        }
    }
}

/// Opens the decompressor the blob's first bytes call for (gzip, zstd, or none).
fn decompressed<'a>(blob: impl Read + 'a, layer: &Layer) -> Result<Box<dyn Read + 'a>, IndexError> {
    let mut buffered = BufReader::with_capacity(1 << 20, blob);
    let magic = buffered
        .fill_buf()
        .map_err(|e| layer_error(layer, "", format!("reading the blob: {e}")))?;
    Ok(if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered)
                .map_err(|e| layer_error(layer, "", format!("zstd: {e}")))?,
        )
    } else {
        Box::new(buffered)
    })
}

/// Streams one layer blob into a layer tree, chunking file contents into `sink`, and checks the
/// blob's digest (when the image declares one) and the uncompressed layer's digest (diff id).
pub fn index_layer(
    blob: impl Read,
    layer: &Layer,
    chunker: Chunker,
    sink: &ChunkSink,
    progress: &dyn Progress,
) -> Result<LayerTree, IndexError> {
    let mut compressed = HashingReader::new(blob);
    let mut plain = HashingReader::new(decompressed(&mut compressed, layer)?);
    let mut builder = LayerBuilder {
        layer,
        chunker,
        sink,
        progress,
        tree: LayerTree {
            builder: ManifestBuilder::new(chunker, NodeMeta::directory(0o755)),
            external_links: Vec::new(),
            entries: 0,
            bytes: 0,
        },
        files: HashSet::new(),
        implicit_dirs: HashSet::new(),
        batch: Batch::default(),
    };
    {
        let mut archive = tar::Archive::new(&mut plain);
        let entries = archive
            .entries()
            .map_err(|e| layer_error(layer, "", format!("not a tar stream: {e}")))?;
        for entry in entries {
            let entry = entry.map_err(|e| {
                layer_error(
                    layer,
                    "",
                    format!("reading the tar stream (truncated or corrupt?): {e}"),
                )
            })?;
            builder.entry(entry)?;
        }
    }
    builder.flush_batch()?;
    if !builder.implicit_dirs.is_empty() {
        let mut dirs: Vec<String> = builder.implicit_dirs.iter().map(hex::encode).collect();
        dirs.sort();
        builder.tree.builder.annotate(
            IMPLICIT_ANNOTATION,
            serde_json::to_string(&dirs).expect("paths serialise"),
        );
    }
    let (diff_id, _) = plain.finish().map_err(|e| {
        layer_error(
            layer,
            "",
            format!("reading to the end of the layer (truncated or corrupt?): {e}"),
        )
    })?;
    if diff_id != layer.diff_id {
        return Err(layer_error(
            layer,
            "",
            format!(
                "uncompressed content has digest {diff_id}, the image config says {}",
                layer.diff_id
            ),
        ));
    }
    let (blob_digest, blob_bytes) = compressed
        .finish()
        .map_err(|e| layer_error(layer, "", format!("reading the blob: {e}")))?;
    if let Some(expected) = &layer.digest {
        if &blob_digest != expected {
            return Err(layer_error(
                layer,
                "",
                format!("blob has digest {blob_digest} ({blob_bytes} bytes), the manifest says {expected}"),
            ));
        }
    }
    Ok(builder.tree)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{with_sink, KnownChunks};
    use crate::IndexOptions;

    /// A small layer tar: a directory, files, a symlink, a hard link, a whiteout.
    fn layer_tar() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut add = |path: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            if let Some(target) = link {
                header.set_link_name(target).unwrap();
            }
            builder.append_data(&mut header, path, data).unwrap();
        };
        add("usr/", tar::EntryType::Directory, b"", None);
        add("usr/a.txt", tar::EntryType::Regular, &[b'a'; 3000], None);
        add("usr/b.bin", tar::EntryType::Regular, &[7u8; 70_000], None);
        add("usr/link", tar::EntryType::Symlink, b"", Some("a.txt"));
        add("usr/hard", tar::EntryType::Link, b"", Some("usr/a.txt"));
        add("usr/.wh.gone", tar::EntryType::Regular, b"", None);
        builder.into_inner().unwrap()
    }

    /// Layer streams come from registries: a mutated tar, gzip or zstd stream must be refused
    /// or read, never panic, and never allocate what a header claims.
    #[test]
    fn fuzz_layer_streams() {
        let tar = layer_tar();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&tar[..], 1).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store =
            thaw_core::store::Store::open(&thaw_core::store::StoreConfig::local(dir.path()))
                .unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let known = KnownChunks {
            locations: Default::default(),
            skipped_indexes: Vec::new(),
        };
        let layer = Layer {
            name: "sha256:fuzz".into(),
            digest: None,
            diff_id: format!("sha256:{}", "0".repeat(64)),
        };
        let abort = std::sync::atomic::AtomicBool::new(false);
        let cases = thaw_core::fuzz::cases(1500);
        with_sink(
            &store,
            runtime.handle(),
            &known,
            &IndexOptions::default(),
            &abort,
            |sink| {
                for (name, seed) in [
                    ("layer tar", &tar),
                    ("layer tar.gz", &gz),
                    ("layer tar.zst", &zst),
                ] {
                    thaw_core::fuzz::run(name, std::slice::from_ref(seed), cases, |input| {
                        let _ = index_layer(input, &layer, Chunker::default(), sink, &());
                    });
                }
                Ok(())
            },
        )
        .unwrap();
    }

    #[test]
    fn paths_are_cleaned_or_refused() {
        assert_eq!(clean_path(b"./usr/bin/").unwrap(), b"usr/bin");
        assert_eq!(clean_path(b"usr//lib/./x").unwrap(), b"usr/lib/x");
        assert_eq!(clean_path(b"./").unwrap(), b"");
        assert_eq!(clean_path(b"/etc/passwd").unwrap(), b"etc/passwd");
        assert_eq!(clean_path(b"/").unwrap(), b"");
        assert_eq!(clean_path(b"x/../y").unwrap(), b"y");
        assert_eq!(
            clean_path(b"usr/../../etc"),
            Err("path escapes the root ('..' above it)")
        );
        assert!(clean_path(b"../escape").is_err());
        assert_eq!(parent_of(b"a/b/c"), b"a/b");
        assert_eq!(parent_of(b"c"), b"");
    }
}
