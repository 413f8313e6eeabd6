//! Test data: deterministic bytes, a tree with every kind of entry, tree comparisons and safetensors files.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::{RngCore, SeedableRng};

use super::*;

/// Deterministic pseudo-random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut buf = vec![0u8; len];
    rng.fill_bytes(&mut buf);
    buf
}

/// Compressible text-like bytes.
pub fn text_bytes(len: usize, seed: u64) -> Vec<u8> {
    let words = [
        "import", "torch", "def", "return", "self", "model", "layer", "weight", "\n", "    ",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        out.extend_from_slice(words[(rng.next_u32() % words.len() as u32) as usize].as_bytes());
        out.push(b' ');
    }
    out.truncate(len);
    out
}

fn set_mtime(path: &Path, sec: i64, nsec: u32) {
    let t = filetime::FileTime::from_unix_time(sec, nsec);
    filetime::set_symlink_file_times(path, t, t).unwrap();
}

/// A tree with every kind of entry the indexer supports. Device nodes and foreign owners only
/// when running as root.
pub fn build_rich_tree(root: &Path) {
    fs::create_dir_all(root.join("lib/python/pkg")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::write(root.join("big.bin"), random_bytes(9 << 20, 1)).unwrap();
    fs::write(root.join("lib/python/text.py"), text_bytes(3 << 20, 2)).unwrap();
    for i in 0..40 {
        fs::write(
            root.join(format!("lib/python/pkg/mod{i}.py")),
            text_bytes(100 + i * 997, i as u64),
        )
        .unwrap();
    }
    fs::write(root.join("empty-file"), b"").unwrap();
    fs::write(
        root.join("lib/python/pkg/setuid-tool"),
        b"#!/bin/sh\necho hi\n",
    )
    .unwrap();
    fs::set_permissions(
        root.join("lib/python/pkg/setuid-tool"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    fs::write(root.join("secret"), b"private").unwrap();
    fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("lib/python/text.py", root.join("link-rel")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("link-dangling")).unwrap();
    fs::write(root.join("hard-a"), text_bytes(200_000, 9)).unwrap();
    fs::hard_link(root.join("hard-a"), root.join("lib/hard-b")).unwrap();
    fs::write(root.join("small-hard"), b"tiny").unwrap();
    fs::hard_link(root.join("small-hard"), root.join("empty-dir/small-hard-2")).unwrap();
    // A sparse file: 64 MiB with two islands of data.
    let sparse = fs::File::create(root.join("sparse.img")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    sparse
        .write_all_at(&random_bytes(300_000, 3), 5 << 20)
        .unwrap();
    sparse.write_all_at(b"tail", (64 << 20) - 4).unwrap();
    xattr::set(
        root.join("lib/python/text.py"),
        "user.thaw.test",
        b"value-1",
    )
    .unwrap();
    xattr::set(root.join("empty-dir"), "user.dir", b"d").unwrap();
    let fifo = std::ffi::CString::new(root.join("fifo").to_str().unwrap()).unwrap();
    // SAFETY: valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    if is_root() {
        let dev = std::ffi::CString::new(root.join("null-dev").to_str().unwrap()).unwrap();
        // SAFETY: valid NUL-terminated path.
        assert_eq!(
            unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) },
            0
        );
        std::os::unix::fs::lchown(root.join("secret"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(root.join("link-rel"), Some(42), Some(43)).unwrap();
    }
    set_mtime(&root.join("big.bin"), 1_600_000_000, 123_456_789);
    set_mtime(&root.join("link-rel"), 1_500_000_000, 1);
    set_mtime(&root.join("empty-dir"), 1_400_000_000, 999);
}

/// Everything about one entry that extraction must preserve.
#[derive(Debug, PartialEq, Eq)]
pub struct EntryFacts {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: (i64, i64),
    pub nlink: u64,
    pub rdev: u64,
    pub link_target: Option<PathBuf>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    pub content: Option<blake3::Hash>,
}

/// Facts of every entry under `root`, keyed by relative path.
pub fn tree_facts(root: &Path) -> BTreeMap<PathBuf, EntryFacts> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            for e in fs::read_dir(&path).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
        let xattrs = xattr::list(&path)
            .map(|names| {
                names
                    .map(|n| {
                        (
                            n.to_string_lossy().into_owned(),
                            xattr::get(&path, &n).unwrap().unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let content = meta.is_file().then(|| {
            let mut h = blake3::Hasher::new();
            let mut f = fs::File::open(&path).unwrap();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            h.finalize()
        });
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        out.insert(
            rel,
            EntryFacts {
                mode: meta.mode(),
                uid: meta.uid(),
                gid: meta.gid(),
                size: if meta.is_dir() { 0 } else { meta.size() },
                mtime: (meta.mtime(), meta.mtime_nsec()),
                nlink: meta.nlink(),
                rdev: meta.rdev(),
                link_target: meta
                    .file_type()
                    .is_symlink()
                    .then(|| fs::read_link(&path).unwrap()),
                xattrs,
                content,
            },
        );
    }
    out
}

/// Asserts two trees are equal in content and metadata, naming the first difference.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let (fa, fb) = (tree_facts(a), tree_facts(b));
    assert_eq!(
        fa.keys().collect::<Vec<_>>(),
        fb.keys().collect::<Vec<_>>(),
        "different entries"
    );
    for (path, facts) in &fa {
        assert_eq!(facts, &fb[path], "entry {} differs", path.display());
    }
}

/// (name, dtype, shape, bytes) of one safetensors tensor.
pub type Tensor = (&'static str, &'static str, Vec<u64>, Vec<u8>);

/// Writes a safetensors file; returns each tensor's blake3 by name.
pub fn write_safetensors(path: &Path, tensors: &[Tensor]) -> BTreeMap<String, String> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    let mut digests = BTreeMap::new();
    for (name, dtype, shape, bytes) in tensors {
        let begin = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [begin, data.len()]}),
        );
        digests.insert(name.to_string(), blake3::hash(bytes).to_hex().to_string());
    }
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let json = serde_json::to_vec(&header).unwrap();
    let mut file = (json.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&json);
    file.extend_from_slice(&data);
    fs::write(path, file).unwrap();
    digests
}

/// Every regular file under `root`, relative, sorted.
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path().strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}
