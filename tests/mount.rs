//! Real FUSE mounts of indexed trees: content and metadata, concurrency, lazy fetching, bad
//! chunks, a daemon that dies, and trace prefetch.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;

const GET_RANGE: &str = "thaw_store_requests_total{op=\"get_range\"}";

/// Runs `f` on a thread and fails the test if it does not finish in `limit` (a hung mount).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).expect("the operation hung")
}

#[test]
fn a_mounted_tree_matches_its_source_and_metadata_needs_no_chunk() {
    if !fuse_available("a_mounted_tree_matches_its_source_and_metadata_needs_no_chunk") {
        return;
    }
    let w = World::local();
    let src = w.rich_src();
    w.index("dir", &src, "rich", &[]);
    let mnt = w.path("mnt");
    // No background fetching (listing a directory would fetch its small files ahead).
    let m = w.mount("rich", &mnt, &["--metrics", "127.0.0.1:0", "--no-prefetch"]);

    // Walk every entry's metadata (stat, readlink, xattrs) first: answered from the manifest.
    let facts_without_content = {
        let mut n = 0;
        let mut stack = vec![mnt.clone()];
        while let Some(p) = stack.pop() {
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            }
            if meta.file_type().is_symlink() {
                fs::read_link(&p).unwrap();
            }
            let _ = xattr::list(&p).unwrap().count();
            n += 1;
        }
        n
    };
    assert!(facts_without_content > 50);
    assert_eq!(m.metric(GET_RANGE), 0.0, "metadata fetched chunks");

    assert_same_tree(&src, &mnt);
    let diff = std::process::Command::new("diff")
        // diff reports special files as different even when they match; tree facts cover them.
        .args(["-r", "--no-dereference", "-x", "fifo", "-x", "null-dev"])
        .arg(&src)
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(diff.status.success(), "diff -r: {}", describe(&diff));
    assert!(m.metric(GET_RANGE) > 0.0, "content came from the store");
    // The kernel keeps the pages: reading a file again (new open) sends no read to thaw.
    let reads = m.metric("thaw_fs_reads_total");
    assert!(reads > 0.0);
    fs::read(mnt.join("lib/python/text.py")).unwrap();
    assert_eq!(
        m.metric("thaw_fs_reads_total"),
        reads,
        "page cache not kept"
    );

    // Hard links share an inode; inode numbers are stable across mounts of one manifest.
    let ino = |p: &Path| fs::metadata(p).unwrap().ino();
    assert_eq!(ino(&mnt.join("hard-a")), ino(&mnt.join("lib/hard-b")));
    let first = ino(&mnt.join("lib/python/text.py"));
    // statfs answers for the mount.
    let df = std::process::Command::new("df").arg(&mnt).output().unwrap();
    assert!(df.status.success(), "df: {}", describe(&df));
    // Writes are refused.
    assert!(fs::write(mnt.join("new-file"), b"x").is_err());
    m.unmount();
    assert!(!is_fuse_mount(&mnt), "still mounted after umount");

    let again = w.mount("rich", &mnt, &[]);
    assert_eq!(ino(&again.dir.join("lib/python/text.py")), first);
    again.unmount();
}

fn is_fuse_mount(path: &Path) -> bool {
    fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(path.to_str().unwrap()))
}

#[test]
fn many_concurrent_readers_get_the_right_bytes() {
    if !fuse_available("many_concurrent_readers_get_the_right_bytes") {
        return;
    }
    let w = World::local();
    let src = w.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..6u64 {
        fs::write(
            src.join(format!("f{i}")),
            random_bytes((3 << 20) + i as usize * 7777, i),
        )
        .unwrap();
    }
    w.index("dir", &src, "many", &[]);
    let mnt = w.path("mnt");
    let m = w.mount("many", &mnt, &[]);
    let readers: Vec<_> = (0..24u64)
        .map(|r| {
            let (src, mnt) = (src.clone(), m.dir.clone());
            std::thread::spawn(move || {
                // Readers 0..12 all read f0; the rest spread over the other files.
                let name = if r < 12 {
                    "f0".to_string()
                } else {
                    format!("f{}", r % 6)
                };
                let mut got = Vec::new();
                fs::File::open(mnt.join(&name))
                    .unwrap()
                    .read_to_end(&mut got)
                    .unwrap();
                assert!(
                    got == fs::read(src.join(&name)).unwrap(),
                    "reader {r}: {name} differs"
                );
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    m.unmount();
}

#[test]
fn random_reads_of_a_large_sparse_file_fetch_only_the_chunks_they_touch() {
    if !fuse_available("random_reads_of_a_large_sparse_file_fetch_only_the_chunks_they_touch") {
        return;
    }
    const ISLAND: u64 = 4 << 20;
    const STRIDE: u64 = 64 << 20;
    const SIZE: u64 = 2 << 30;
    let w = World::local();
    let src = w.path("src");
    fs::create_dir_all(&src).unwrap();
    let file = fs::File::create(src.join("disk.img")).unwrap();
    file.set_len(SIZE).unwrap();
    let islands = SIZE / STRIDE;
    for i in 0..islands {
        file.write_all_at(&random_bytes(ISLAND as usize, 1000 + i), i * STRIDE)
            .unwrap();
    }
    drop(file);
    // Fixed 4 MiB chunks: every island is exactly one chunk.
    w.index("dir", &src, "disk", &["--chunker", "fixed:4194304"]);
    let mnt = w.path("mnt");
    let m = w.mount(
        "disk",
        &mnt,
        &["--metrics", "127.0.0.1:0", "--no-disk-cache"],
    );
    let source = fs::File::open(src.join("disk.img")).unwrap();
    let mounted = fs::File::open(mnt.join("disk.img")).unwrap();

    let touched = [3u64, 17, 9, 30, 22];
    for (n, island) in touched.iter().enumerate() {
        // Reads inside the island, across its end into the hole, and inside the hole.
        for (offset, len) in [
            (island * STRIDE + 12_345 * n as u64, 4096usize),
            (island * STRIDE + ISLAND - 1000, 9000),
            (island * STRIDE + ISLAND + (8 << 20), 65536),
        ] {
            let mut want = vec![0u8; len];
            let mut got = vec![0u8; len];
            source.read_exact_at(&mut want, offset).unwrap();
            mounted.read_exact_at(&mut got, offset).unwrap();
            assert!(want == got, "bytes differ at {offset}+{len}");
        }
    }
    assert_eq!(
        m.metric(GET_RANGE),
        touched.len() as f64,
        "the store saw requests for chunks no read touched"
    );

    // Every byte of the whole file.
    let hash = |f: &fs::File| {
        let mut h = blake3::Hasher::new();
        let mut buf = vec![0u8; 4 << 20];
        let mut offset = 0;
        while offset < SIZE {
            let n = f.read_at(&mut buf, offset).unwrap();
            assert!(n > 0, "short file at {offset}");
            h.update(&buf[..n]);
            offset += n as u64;
        }
        h.finalize()
    };
    assert_eq!(hash(&source), hash(&mounted));
    assert_eq!(
        m.metric("thaw_chunk_tier_hits_total{tier=\"store\"}"),
        islands as f64,
        "each chunk fetched from the store once"
    );
    assert!(
        m.metric(GET_RANGE) <= islands as f64,
        "at most one request per chunk"
    );
    drop(mounted);
    m.unmount();
}

#[test]
fn a_corrupted_chunk_fails_its_file_with_eio_and_the_mount_keeps_serving() {
    if !fuse_available("a_corrupted_chunk_fails_its_file_with_eio_and_the_mount_keeps_serving") {
        return;
    }
    let w = World::local();
    let src = w.path("src");
    fs::create_dir_all(&src).unwrap();
    let victim = random_bytes(2 << 20, 77);
    fs::write(src.join("victim.bin"), &victim).unwrap();
    fs::write(src.join("healthy.bin"), random_bytes(2 << 20, 78)).unwrap();
    fs::write(src.join("note.txt"), b"still readable").unwrap();
    w.index("dir", &src, "bad", &[]);
    // Random bytes are stored raw: find the victim's first bytes in the pack and flip one.
    let packs = store_files(&w.store_dir(), "packs", ".pack");
    let mut flipped = false;
    for pack in &packs {
        let mut bytes = fs::read(pack).unwrap();
        if let Some(at) = bytes.windows(64).position(|win| win == &victim[..64]) {
            bytes[at + 10] ^= 0xff;
            fs::write(pack, bytes).unwrap();
            flipped = true;
        }
    }
    assert!(flipped, "victim bytes not found in any pack");

    let mnt = w.path("mnt");
    let m = w.mount("bad", &mnt, &[]);
    for _ in 0..2 {
        let err = fs::read(mnt.join("victim.bin")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    }
    assert_eq!(
        fs::read(mnt.join("healthy.bin")).unwrap(),
        fs::read(src.join("healthy.bin")).unwrap()
    );
    assert_eq!(fs::read(mnt.join("note.txt")).unwrap(), b"still readable");
    let log = fs::read_to_string(
        w.path("run")
            .read_dir()
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "log"))
            .unwrap(),
    )
    .unwrap();
    assert!(
        log.contains("path=/victim.bin") && log.contains("tier=store") && log.contains("chunk="),
        "log names the file and tier:\n{log}"
    );
    m.unmount();
}

/// The rich tree indexed as `rich` in `w`; its mount point.
fn rich_tag(w: &World) -> std::path::PathBuf {
    let src = w.rich_src();
    w.index("dir", &src, "rich", &[]);
    w.path("mnt")
}

#[test]
fn a_mount_whose_daemon_was_killed_answers_enotconn_and_umount_recovers_it() {
    if !fuse_available("a_mount_whose_daemon_was_killed_answers_enotconn_and_umount_recovers_it") {
        return;
    }
    let w = World::local();
    let mnt = rich_tag(&w);
    let m = w.mount("rich", &mnt, &[]);
    m.signal(libc::SIGKILL);
    let probe = mnt.join("big.bin");
    let err = within(Duration::from_secs(20), move || loop {
        match fs::metadata(&probe) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => break e,
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    });
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN));
    let out = w
        .thaw()
        .args(["umount", mnt.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no daemon answered"));
    assert!(!is_fuse_mount(&mnt));
    m.ended();
    // The mount point works again.
    let again = w.mount("rich", &mnt, &[]);
    assert_eq!(fs::read(mnt.join("secret")).unwrap(), b"private");
    again.unmount();
}

#[test]
fn sigterm_unmounts_cleanly_and_saves_the_trace() {
    if !fuse_available("sigterm_unmounts_cleanly_and_saves_the_trace") {
        return;
    }
    let w = World::local();
    let mnt = rich_tag(&w);
    let m = w.mount("rich", &mnt, &[]);
    // The daemon serves sockets (control, metrics): a client hanging up must not kill it.
    assert!(
        ignores_sigpipe(m.pid as u32),
        "the mount daemon dies on SIGPIPE"
    );
    fs::read(mnt.join("lib/python/text.py")).unwrap();
    m.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(20);
    while is_fuse_mount(&mnt) || Path::new(&format!("/proc/{}", m.pid)).exists() {
        assert!(Instant::now() < deadline, "still mounted after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    m.ended();
    let shown = w.ok(&["trace", "show", "rich"]);
    assert!(shown.contains("/lib/python/text.py"), "{shown}");
}

#[test]
fn a_trace_profile_keeps_its_own_trace_beside_the_default_one() {
    if !fuse_available("a_trace_profile_keeps_its_own_trace_beside_the_default_one") {
        return;
    }
    let w = World::local();
    let mnt = rich_tag(&w);
    let restore = ["--trace-profile", "restore"];
    let m = w.mount("rich", &mnt, &restore);
    fs::read(mnt.join("secret")).unwrap();
    m.unmount();
    let err = w.fails(&["trace", "show", "rich"]);
    assert!(err.contains("no access trace"), "{err}");
    let m = w.mount("rich", &mnt, &[]);
    fs::read(mnt.join("lib/python/text.py")).unwrap();
    m.unmount();
    // Each mount recorded into its own trace, and each trace names only what its mount read.
    let profiled = w.ok(&["trace", "show", "rich", "--profile", "restore"]);
    let default = w.ok(&["trace", "show", "rich"]);
    assert!(
        profiled.contains("/secret") && !profiled.contains("text.py"),
        "{profiled}"
    );
    assert!(
        default.contains("text.py") && !default.contains("/secret"),
        "{default}"
    );
    // A profile mount replays its own trace: it prefetches the one chunk of /secret.
    let m = w.mount(
        "rich",
        &mnt,
        &["--trace-profile", "restore", "--metrics", "127.0.0.1:0"],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while m.metric("thaw_prefetch_chunks_total") < 1.0 {
        assert!(Instant::now() < deadline, "no prefetch: {:?}", m.metrics());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(m.metric("thaw_prefetch_chunks_total"), 1.0);
    m.unmount();
    for bad in ["Restore", "-x", "a/b", ""] {
        let err = w.fails(&["trace", "show", "rich", &format!("--profile={bad}")]);
        assert!(err.contains("trace profile"), "{bad}: {err}");
    }
}

#[test]
fn a_second_mount_prefetches_what_the_first_one_read_before_the_program_asks() {
    if !fuse_available("a_second_mount_prefetches_what_the_first_one_read_before_the_program_asks")
    {
        return;
    }
    let w = World::local();
    let src = w.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..40u64 {
        fs::write(
            src.join(format!("m{i:02}.py")),
            text_bytes(300_000 + i as usize * 1000, i),
        )
        .unwrap();
    }
    w.index("dir", &src, "app", &[]);
    let startup: Vec<String> = (0..40).step_by(3).map(|i| format!("m{i:02}.py")).collect();
    let run_startup = |mnt: &Path| {
        for name in &startup {
            assert_eq!(
                fs::read(mnt.join(name)).unwrap(),
                fs::read(src.join(name)).unwrap()
            );
        }
    };
    // A distant store: 20 ms per request; no disk cache, so each mount starts cold.
    let opts = [
        "--metrics",
        "127.0.0.1:0",
        "--no-disk-cache",
        "--store-read-latency-ms",
        "20",
    ];
    let mnt = w.path("mnt");
    let first = w.mount("app", &mnt, &opts);
    run_startup(&mnt);
    let recorded = first.metric(GET_RANGE);
    assert!(recorded >= startup.len() as f64);
    let said = first.unmount();
    assert!(said.contains("trace saved"), "{said}");
    let shown = w.ok(&["trace", "show", "app"]);
    // Entry lines start with their position; the run history follows them.
    let mut order: Vec<&str> = shown
        .lines()
        .skip(1)
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|t| t.parse::<u64>().is_ok())
        })
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    order.dedup(); // a file of several chunks has one entry per chunk
    let expected: Vec<String> = startup.iter().map(|n| format!("/{n}")).collect();
    assert_eq!(order, expected, "trace keeps the first-read order");

    let second = w.mount("app", &mnt, &opts);
    // Prefetch starts at mount; give it the time it needs, then run the same start-up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while second.metric("thaw_prefetch_chunks_total") < recorded {
        assert!(
            Instant::now() < deadline,
            "prefetch did not finish: {:?}",
            second.metrics()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    run_startup(&mnt);
    let hits = second.metric("thaw_prefetch_hits_total");
    let all_first_reads = hits
        + second.metric("thaw_prefetch_late_total")
        + second.metric("thaw_prefetch_missed_total")
        + second.metric("thaw_unpredicted_reads_total");
    assert!(all_first_reads >= startup.len() as f64);
    assert!(
        hits / all_first_reads >= 0.95,
        "prefetch hit ratio {hits}/{all_first_reads}"
    );
    assert_eq!(
        second.metric("thaw_unpredicted_reads_total"),
        0.0,
        "a start-up read the trace did not predict"
    );

    second.unmount();
}

#[test]
fn mounting_an_unknown_tag_or_unmounting_a_plain_directory_fails_clearly() {
    if !fuse_available("mounting_an_unknown_tag_or_unmounting_a_plain_directory_fails_clearly") {
        return;
    }
    let w = World::local();
    let mnt = w.path("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let said = w.fails(&["mount", "no-such-tag", mnt.to_str().unwrap(), "--daemon"]);
    assert!(
        said.contains("no-such-tag") && said.contains("before the mount answered"),
        "{said}"
    );
    assert!(!is_fuse_mount(&mnt));
    let said = w.fails(&["umount", mnt.to_str().unwrap()]);
    assert!(said.contains("unmount failed"), "{said}");
    let src = w.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    w.index("dir", &src, "small", &[]);
    let missing = w.path("missing");
    let said = w.fails(&["mount", "small", missing.to_str().unwrap()]);
    assert!(
        said.contains("missing") && said.contains("not a directory"),
        "{said}"
    );
}
