use super::*;
use crate::tier::test_support::chunk;

fn file_of(parts: &[(VerifiedChunk, ChunkRef)]) -> (Vec<FileSlice>, Vec<u8>) {
    let mut slices = Vec::new();
    let mut bytes = Vec::new();
    for (data, chunk) in parts {
        slices.push(FileSlice {
            file_offset: bytes.len() as u64,
            chunk: *chunk,
            chunk_offset: 0,
            len: chunk.raw_len,
        });
        bytes.extend_from_slice(data.bytes());
    }
    (slices, bytes)
}

fn objects_on_disk(dir: &Path) -> (usize, u64) {
    let scan = Layout::create(dir).unwrap().scan().unwrap();
    (
        scan.objects.len(),
        scan.objects.iter().map(|(_, _, size)| size).sum(),
    )
}

#[tokio::test]
async fn survives_restart_and_evicts_oldest_over_budget_deleting_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (chunk(1, 100_000), chunk(2, 100_000), chunk(3, 100_000));
    {
        let cache = DiskCache::open(dir.path(), 250_000).unwrap();
        cache.insert(a.0.clone()).await.unwrap();
        cache.insert(b.0.clone()).await.unwrap();
        assert_eq!(&cache.fetch(&a.1).await.unwrap().unwrap(), a.0.bytes());
    }
    let cache = DiskCache::open(dir.path(), 250_000).unwrap();
    assert_eq!(cache.used_bytes(), 200_000, "accounting survives restart");
    assert_eq!(&cache.fetch(&b.1).await.unwrap().unwrap(), b.0.bytes());
    // a was used after b before the restart... but b was just read, so a is now the oldest.
    cache.insert(c.0.clone()).await.unwrap();
    assert!(cache.fetch(&a.1).await.unwrap().is_none());
    assert!(cache.fetch(&b.1).await.unwrap().is_some());
    assert!(cache.fetch(&c.1).await.unwrap().is_some());
    assert_eq!(cache.len(), 2);
    assert_eq!(
        objects_on_disk(dir.path()),
        (2, 200_000),
        "the evicted chunk's file is deleted"
    );
    let status = cache.status();
    assert_eq!(
        (status.hits, status.misses),
        (4, 1),
        "hits count across restarts"
    );
    drop(cache);
    let smaller = DiskCache::open(dir.path(), 150_000).unwrap();
    assert_eq!(
        smaller.len(),
        1,
        "a smaller budget on reopen evicts down to it"
    );
    assert_eq!(objects_on_disk(dir.path()).0, 1);
    drop(smaller);
    let status = CacheStatus::read(dir.path()).unwrap();
    assert_eq!((status.chunk_files, status.bytes), (1, 100_000));
    assert!(!status.in_use, "closed cleanly");
}

#[tokio::test]
async fn a_file_whose_chunks_are_cached_is_assembled_once_and_held_once() {
    let dir = tempfile::tempdir().unwrap();
    let parts = [chunk(1, 300_000), chunk(2, 200_000), chunk(3, 50_000)];
    let (slices, expected) = file_of(&parts);
    let content = FileContent {
        size: expected.len() as u64,
        slices: &slices,
    };
    let cache = DiskCache::open(dir.path(), 10 << 20).unwrap();
    cache.insert(parts[0].0.clone()).await.unwrap();
    assert!(matches!(cache.whole_file(&content), WholeFile::Missing));
    for part in &parts[1..] {
        cache.insert(part.0.clone()).await.unwrap();
    }
    assert!(matches!(cache.whole_file(&content), WholeFile::Preparable));
    assert!(cache.prepare_whole(&content).unwrap());
    let WholeFile::Ready(file) = cache.whole_file(&content) else {
        panic!("the file is ready after preparing it");
    };
    let mut held = Vec::new();
    std::io::Read::read_to_end(&mut &file, &mut held).unwrap();
    assert_eq!(held, expected);
    assert_eq!(cache.used_bytes(), expected.len() as u64, "held once");
    assert_eq!(objects_on_disk(dir.path()), (1, expected.len() as u64));
    for (data, chunk) in &parts {
        assert_eq!(&cache.fetch(chunk).await.unwrap().unwrap(), data.bytes());
    }
    drop(cache);
    let cache = DiskCache::open(dir.path(), 10 << 20).unwrap();
    assert!(
        matches!(cache.whole_file(&content), WholeFile::Ready(_)),
        "survives restart"
    );
    assert_eq!(
        &cache.fetch(&parts[1].1).await.unwrap().unwrap(),
        parts[1].0.bytes()
    );
}

#[tokio::test]
async fn a_one_chunk_file_is_its_chunk_object() {
    let dir = tempfile::tempdir().unwrap();
    let part = [chunk(7, 4096)];
    let (slices, expected) = file_of(&part);
    let content = FileContent {
        size: 4096,
        slices: &slices,
    };
    let cache = DiskCache::open(dir.path(), 1 << 20).unwrap();
    cache.insert(part[0].0.clone()).await.unwrap();
    let WholeFile::Ready(file) = cache.whole_file(&content) else {
        panic!("a cached one-chunk file is ready at once");
    };
    let mut held = Vec::new();
    std::io::Read::read_to_end(&mut &file, &mut held).unwrap();
    assert_eq!(held, expected);
}

#[tokio::test]
async fn check_finds_a_flipped_byte_and_drops_the_object() {
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = (chunk(1, 10_000), chunk(2, 10_000));
    let cache = DiskCache::open(dir.path(), 1 << 20).unwrap();
    cache.insert(good.0.clone()).await.unwrap();
    cache.insert(bad.0.clone()).await.unwrap();
    let path = Layout::create(dir.path())
        .unwrap()
        .path(ObjectKind::Chunk, &bad.1.id);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[5000] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let checked = std::sync::atomic::AtomicU64::new(0);
    let report = cache
        .check(|n| {
            checked.fetch_add(n, Ordering::Relaxed);
        })
        .unwrap();
    assert_eq!((report.objects, report.bytes), (2, 20_000));
    assert_eq!(checked.load(Ordering::Relaxed), 20_000);
    assert_eq!(report.bad.len(), 1, "{report:?}");
    assert_eq!(report.bad[0].path, path);
    assert!(
        report.bad[0].reason.contains("hashes to"),
        "{:?}",
        report.bad[0]
    );
    assert!(!cache.contains(&bad.1.id) && cache.contains(&good.1.id));
    assert!(!path.exists());
}

#[tokio::test]
async fn after_an_unclean_shutdown_leftovers_go_and_nothing_is_handed_out_unverified() {
    let dir = tempfile::tempdir().unwrap();
    let (kept, rotten) = (chunk(1, 10_000), chunk(2, 10_000));
    let layout = {
        let cache = DiskCache::open(dir.path(), 1 << 20).unwrap();
        cache.insert(kept.0.clone()).await.unwrap();
        Layout::create(dir.path()).unwrap()
    };
    // What a process killed mid-fill leaves: its marker, a half-written temporary file, a
    // chunk file renamed into place whose record never reached the index (here with rotted
    // bytes, which only verification can tell), and a whole file without a record.
    std::fs::write(layout.open_marker(), "12345").unwrap();
    std::fs::write(layout.root().join("tmp/partial"), b"half").unwrap();
    let rotten_path = layout.path(ObjectKind::Chunk, &rotten.1.id);
    std::fs::create_dir_all(rotten_path.parent().unwrap()).unwrap();
    std::fs::write(&rotten_path, vec![9u8; 10_000]).unwrap();
    let orphan = layout.path(ObjectKind::File, &ChunkId::of(b"orphan"));
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"no record").unwrap();

    let cache = DiskCache::open(dir.path(), 1 << 20).unwrap();
    assert!(!layout.root().join("tmp/partial").exists());
    assert!(!orphan.exists());
    assert!(cache.contains(&rotten.1.id), "chunk files are adopted");
    let (slices, _) = file_of(std::slice::from_ref(&rotten));
    let content = FileContent {
        size: 10_000,
        slices: &slices,
    };
    assert!(
        matches!(cache.whole_file(&content), WholeFile::Preparable),
        "an object from the crashed run is not handed out before it is verified"
    );
    assert!(
        !cache.prepare_whole(&content).unwrap(),
        "verification fails"
    );
    assert!(!cache.contains(&rotten.1.id) && !rotten_path.exists());
    let (slices, _) = file_of(std::slice::from_ref(&kept));
    let content = FileContent {
        size: 10_000,
        slices: &slices,
    };
    assert!(cache.prepare_whole(&content).unwrap());
    assert!(matches!(cache.whole_file(&content), WholeFile::Ready(_)));
}

#[tokio::test]
async fn an_old_format_cache_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut options = Options::default();
        options.create_if_missing(true);
        let db = DB::open(&options, dir.path()).unwrap();
        db.put(b"c0123", vec![0u8; 100_000]).unwrap();
    }
    let cache = DiskCache::open(dir.path(), 1 << 20).unwrap();
    assert!(cache.is_empty());
    assert!(!dir.path().join("CURRENT").exists());
}
