use super::*;

fn file(size: u64, extents: Vec<ExtentSpec>) -> NodeMeta {
    NodeMeta {
        kind: FileKind::Regular,
        mode: 0o100644,
        size,
        extents,
        ..NodeMeta::directory(0)
    }
}

fn slice_of(chunk: ChunkId, file_offset: u64, chunk_offset: u32, len: u32) -> Vec<ExtentSpec> {
    vec![ExtentSpec {
        file_offset,
        chunk,
        chunk_raw_len: 10,
        chunk_offset,
        len,
    }]
}

/// The sample tree's nodes, in an order where parents come first.
fn sample_nodes() -> Vec<(&'static [u8], NodeMeta)> {
    let chunk = ChunkId::of(b"0123456789");
    let mut link = NodeMeta {
        kind: FileKind::Symlink,
        mode: 0o120777,
        symlink_target: b"etc/hosts".to_vec(),
        ..NodeMeta::directory(0)
    };
    link.xattrs = vec![(b"user.k".to_vec(), b"v".to_vec())];
    let null = NodeMeta {
        kind: FileKind::CharDevice,
        mode: 0o020666,
        rdev: 0x103,
        ..NodeMeta::directory(0)
    };
    vec![
        (b"etc", NodeMeta::directory(0o755)),
        (b"etc/hosts", file(10, slice_of(chunk, 0, 0, 10))),
        (b"sparse", file(1 << 30, slice_of(chunk, 1 << 20, 2, 5))),
        (b"link", link),
        (b"null", null),
    ]
}

/// Builds the sample tree from its nodes in the given order, then the hard link.
fn build(order: &[usize]) -> ManifestBuilder {
    let nodes = sample_nodes();
    let mut b = ManifestBuilder::new(Chunker::default(), NodeMeta::directory(0o755));
    for &i in order {
        b.insert(nodes[i].0, nodes[i].1.clone()).unwrap();
    }
    b.link(b"hard", b"etc/hosts").unwrap();
    b.annotate("org.thaw.source", "test");
    b
}

fn sample() -> ManifestBuilder {
    build(&[0, 1, 2, 3, 4])
}

#[test]
fn tree_round_trips_with_lookup_links_and_sparse_extents() {
    let (id, bytes) = sample().finish().unwrap();
    let m = Manifest::open_verified(bytes, &id).unwrap();
    assert_eq!(m.id(), id);
    let hosts = m.lookup("/etc/hosts").unwrap().unwrap();
    let hard = m.lookup("hard").unwrap().unwrap();
    assert_eq!(hosts.ino, hard.ino, "hard links share an inode");
    assert_eq!(hosts.nlink, 2);
    assert_eq!(m.extents(&hosts).unwrap()[0].len, 10);
    let sparse = m.lookup("sparse").unwrap().unwrap();
    assert_eq!(sparse.size, 1 << 30);
    assert_eq!(m.extents(&sparse).unwrap()[0].file_offset, 1 << 20);
    let link = m.lookup("link").unwrap().unwrap();
    assert_eq!(m.symlink_target(&link).unwrap(), b"etc/hosts");
    assert_eq!(m.xattrs(&link).unwrap(), vec![(&b"user.k"[..], &b"v"[..])]);
    assert_eq!(m.lookup("null").unwrap().unwrap().rdev, 0x103);
    assert!(m.lookup("etc/missing").unwrap().is_none());
    assert_eq!(m.chunk_count(), 1);
    assert_eq!(m.annotations()["org.thaw.source"], "test");
    let paths: Vec<String> = m
        .walk()
        .unwrap()
        .iter()
        .map(|(p, _)| String::from_utf8_lossy(p).into_owned())
        .collect();
    assert_eq!(
        paths,
        ["", "etc", "etc/hosts", "hard", "link", "null", "sparse"]
    );
    assert_eq!(m.inode(0).unwrap().nlink, 3);
}

#[test]
fn same_tree_in_another_order_has_the_same_id() {
    let (a, _) = sample().finish().unwrap();
    let (b, _) = build(&[4, 0, 3, 2, 1]).finish().unwrap();
    assert_eq!(a, b);
    let mut fewer = sample();
    fewer.remove(b"null");
    assert_ne!(
        fewer.finish().unwrap().0,
        a,
        "removing a node changes the id"
    );
}

#[test]
fn wrong_magic_unknown_version_and_truncation_name_the_offset() {
    let (_, bytes) = sample().finish().unwrap();
    let mut bad = bytes.to_vec();
    bad[0] = b'X';
    let err = Manifest::open(Bytes::from(bad), "manifests/m")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("manifests/m at offset 0") && err.contains("wrong magic"),
        "{err}"
    );

    let mut bad = bytes.to_vec();
    bad[8] = 9;
    let err = Manifest::open(Bytes::from(bad), "manifests/m")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("at offset 8") && err.contains("unknown format version 9"),
        "{err}"
    );

    let truncated = bytes.slice(..bytes.len() - 20);
    let err = Manifest::open(truncated, "manifests/m")
        .unwrap_err()
        .to_string();
    assert!(err.contains("truncated"), "{err}");

    let err = Manifest::open(bytes.slice(..10), "manifests/m")
        .unwrap_err()
        .to_string();
    assert!(err.contains("manifests/m at offset 10"), "{err}");

    let id = ChunkId::of(b"other");
    let err = Manifest::open_verified(bytes, &id).unwrap_err().to_string();
    assert!(err.contains("not to its name"), "{err}");
}

#[test]
fn lying_references_are_errors_not_panics() {
    let (_, bytes) = sample().finish().unwrap();
    let m = Manifest::open(bytes.clone(), "m").unwrap();
    let inodes_at = m.sections[Section::Inodes as usize].0 as usize;
    // Point the root directory's first dirent far past the dirent table.
    let mut bad = bytes.to_vec();
    bad[inodes_at + 48..inodes_at + 52].copy_from_slice(&u32::MAX.to_le_bytes());
    let m = Manifest::open(Bytes::from(bad), "m").unwrap();
    assert!(m.lookup("etc").is_err());
    assert!(m.walk().is_err());
    assert!(m.inode(999).is_err());
    assert!(m.chunk(999).is_err());
}

#[test]
fn insert_refuses_missing_parents_and_dotdot() {
    let mut b = ManifestBuilder::new(Chunker::default(), NodeMeta::directory(0o755));
    assert!(b.insert(b"a/b", NodeMeta::directory(0o755)).is_err());
    assert!(b.insert(b"../x", NodeMeta::directory(0o755)).is_err());
    assert!(b.link(b"x", b"nope").is_err());
}

#[test]
fn a_hundred_thousand_files_open_and_resolve_without_decoding_the_tree() {
    let chunk = ChunkId::of(b"0123456789");
    let mut b = ManifestBuilder::new(Chunker::default(), NodeMeta::directory(0o755));
    for d in 0..100 {
        b.insert(format!("dir{d:03}").as_bytes(), NodeMeta::directory(0o755))
            .unwrap();
        for f in 0..1000 {
            let path = format!("dir{d:03}/file{f:04}.py");
            b.insert(path.as_bytes(), file(10, slice_of(chunk, 0, 0, 10)))
                .unwrap();
        }
    }
    let (id, bytes) = b.finish().unwrap();
    let m = Manifest::open_verified(bytes, &id).unwrap();
    assert_eq!(m.inode_count(), 1 + 100 + 100_000);
    let found = m.lookup("dir057/file0999.py").unwrap().unwrap();
    assert_eq!(found.size, 10);
    assert!(m.lookup("dir057/file1000.py").unwrap().is_none());
    assert!(m.lookup("dir100/file0000.py").unwrap().is_none());
}
