//! Fuzz targets for every parser of untrusted bytes in core: manifests (and every accessor a
//! mount uses on one), pack indexes, chunk maps, packs scanned for their frames, single frames,
//! tags, safetensors headers. Each starts from valid objects; `scripts/test` runs a bounded
//! number of cases per target and `benches/fuzz.sh` a long campaign (`THAW_FUZZ_CASES`).

use bytes::Bytes;

use crate::chunk_map::ChunkMap;
use crate::chunker::Chunker;
use crate::fuzz::{cases, run};
use crate::manifest::{ExtentSpec, FileKind, Manifest, ManifestBuilder, NodeMeta};
use crate::pack::{decode_frame, Codec, EncodedChunk, PackBuilder, PackIndex, ZSTD_LEVEL};
use crate::store::parse_tag;
use crate::ChunkId;

/// Cases per target in `scripts/test`.
const TEST_CASES: u64 = 3000;

fn file(extents: Vec<ExtentSpec>, size: u64) -> NodeMeta {
    let mut meta = NodeMeta::directory(0o644);
    meta.kind = FileKind::Regular;
    meta.mode = 0o100644;
    meta.size = size;
    meta.extents = extents;
    meta.xattrs = vec![(b"user.k".to_vec(), b"v".to_vec())];
    meta
}

fn sample_manifest() -> Bytes {
    let mut b = ManifestBuilder::new(Chunker::default(), NodeMeta::directory(0o755));
    b.insert(b"a", NodeMeta::directory(0o755)).unwrap();
    b.insert(b"a/b", NodeMeta::directory(0o700)).unwrap();
    let (c1, c2) = (ChunkId::of(b"one"), ChunkId::of(b"two"));
    let extent = |file_offset, chunk, len| ExtentSpec {
        file_offset,
        chunk,
        chunk_raw_len: 100,
        chunk_offset: 0,
        len,
    };
    b.insert(
        b"a/f",
        file(vec![extent(0, c1, 100), extent(200, c2, 50)], 250),
    )
    .unwrap();
    b.insert(b"a/b/g", file(vec![extent(0, c2, 100)], 100))
        .unwrap();
    let mut link = NodeMeta::directory(0o777);
    link.kind = FileKind::Symlink;
    link.mode = 0o120777;
    link.symlink_target = b"../f".to_vec();
    link.size = 4;
    b.insert(b"a/b/l", link).unwrap();
    b.link(b"a/hard", b"a/f").unwrap();
    b.annotate("org.thaw.source.kind", "directory");
    b.finish().unwrap().1
}

/// Everything a mount or extract does with a manifest.
fn use_manifest(manifest: &Manifest) {
    let _ = manifest.annotations();
    let _ = manifest.chunks();
    let _ = manifest.walk();
    let _ = manifest.lookup("/a/b/g");
    for ino in 0..manifest.inode_count().min(10_000) {
        let Ok(inode) = manifest.inode(ino) else {
            continue;
        };
        match inode.kind {
            FileKind::Directory => {
                let _ = manifest.read_dir(&inode);
                let _ = manifest.lookup_in(&inode, b"f");
            }
            FileKind::Regular => {
                let _ = manifest.extents(&inode);
            }
            FileKind::Symlink => {
                let _ = manifest.symlink_target(&inode);
            }
            _ => {}
        }
        let _ = manifest.xattrs(&inode);
    }
}

#[test]
fn fuzz_manifest() {
    let seeds = vec![sample_manifest().to_vec()];
    run("manifest", &seeds, cases(TEST_CASES), |input| {
        if let Ok(manifest) = Manifest::open(Bytes::copy_from_slice(input), "fuzz") {
            use_manifest(&manifest);
        }
    });
}

fn sample_pack() -> crate::pack::SealedPack {
    let mut builder = PackBuilder::new();
    for chunk in [&b"alpha"[..], &[3u8; 20_000][..], &b"omega omega omega"[..]] {
        builder.append(&EncodedChunk::encode(chunk, ZSTD_LEVEL));
    }
    builder.seal()
}

#[test]
fn fuzz_pack_index_and_pack_scan() {
    let pack = sample_pack();
    run(
        "pack index",
        &[pack.index.to_vec()],
        cases(TEST_CASES),
        |input| {
            let _ = PackIndex::decode(input, "fuzz");
        },
    );
    run(
        "pack scan",
        &[pack.bytes.to_vec()],
        cases(TEST_CASES),
        |input| {
            let _ = PackIndex::scan(pack.id, input, "fuzz");
        },
    );
}

#[test]
fn fuzz_frames() {
    let pack = sample_pack();
    let frames: Vec<Vec<u8>> = pack
        .locations()
        .map(|(_, l)| {
            pack.bytes[l.frame_range().start as usize..l.frame_range().end as usize].to_vec()
        })
        .collect();
    let locations: Vec<_> = pack.locations().collect();
    run("frame", &frames, cases(TEST_CASES), |input| {
        for (id, location) in &locations {
            let mut location = *location;
            location.stored_len = input.len().saturating_sub(48) as u32;
            let _ = decode_frame(input, id, &location);
        }
    });
}

#[test]
fn a_frame_claiming_a_huge_raw_size_is_refused_before_decoding() {
    let pack = sample_pack();
    let (id, mut location) = pack
        .locations()
        .find(|(_, l)| l.codec == Codec::Zstd)
        .unwrap();
    let range = location.frame_range();
    let mut frame = pack.bytes[range.start as usize..range.end as usize].to_vec();
    frame[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
    location.raw_len = u32::MAX;
    let err = decode_frame(&frame, &id, &location)
        .unwrap_err()
        .to_string();
    assert!(err.contains("largest chunk"), "{err}");
}

#[test]
fn fuzz_chunk_map_and_tag() {
    let pack = sample_pack();
    let map = ChunkMap {
        manifest: ChunkId::of(b"m"),
        locations: pack.locations().map(|(_, l)| l).collect(),
    };
    run(
        "chunk map",
        &[map.encode().to_vec()],
        cases(TEST_CASES),
        |input| {
            let _ = ChunkMap::decode(input, "fuzz");
        },
    );
    let tag = format!(
        "{} 1796170009283\n{}\n",
        ChunkId::of(b"a").to_hex(),
        ChunkId::of(b"b").to_hex()
    );
    run("tag", &[tag.into_bytes()], cases(TEST_CASES), |input| {
        let _ = parse_tag("tags/fuzz", input);
    });
}

#[test]
fn fuzz_safetensors_header() {
    let json = br#"{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]}}"#;
    let mut file = (json.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(json);
    file.extend_from_slice(&[0u8; 32]);
    run("safetensors", &[file], cases(TEST_CASES), |input| {
        let len = input.len() as u64;
        if let Ok(n) = crate::safetensors::header_len("fuzz", input, len) {
            let end = (8 + n as usize).min(input.len());
            let _ = crate::safetensors::parse_header("fuzz", &input[8..end], len);
        }
    });
}

/// Found by `fuzz_manifest`: a file inode claiming billions of extents made `extents` reserve them (48 GiB in the case found)
/// before reading the first one.
#[test]
fn a_file_claiming_four_billion_extents_is_refused_without_reserving_them() {
    let mut bytes = sample_manifest().to_vec();
    let word = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let (inodes_at, inodes_len) = (word(&bytes, 32) as usize, word(&bytes, 40) as usize);
    let file = (inodes_at..inodes_at + inodes_len)
        .step_by(64)
        .find(|&at| bytes[at] == 2)
        .expect("a regular file");
    bytes[file + 52..file + 56].copy_from_slice(&u32::MAX.to_le_bytes());
    let manifest = Manifest::open(Bytes::from(bytes), "fuzz").unwrap();
    let inode = manifest.inode(((file - inodes_at) / 64) as u32).unwrap();
    // Before the fix this aborted the process (the reservation failed); now it is an error
    // naming the manifest and offset.
    let err = manifest.extents(&inode).unwrap_err().to_string();
    assert!(err.starts_with("fuzz at offset"), "{err}");
}
