//! The file-backed disk cache on real mounts and real processes: FUSE passthrough of files
//! complete in the cache, `thaw cache status|check|prune`, a flipped byte in a cache file, the
//! byte budget on disk and content shared by two images (a fill killed with SIGKILL: in
//! robustness.rs).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;

/// A tree of large (many-chunk) and small (batched) files.
fn mixed_tree(w: &World) -> PathBuf {
    let src = w.path("src");
    fs::create_dir_all(src.join("lib/small")).unwrap();
    fs::write(src.join("lib/big.so"), random_bytes(9 << 20, 1)).unwrap();
    fs::write(src.join("weights.bin"), random_bytes(3 << 20, 2)).unwrap();
    for n in 0..40 {
        fs::write(
            src.join(format!("lib/small/m{n}.py")),
            text_bytes(500 + n * 700, 100 + n as u64),
        )
        .unwrap();
    }
    fs::write(src.join("empty"), b"").unwrap();
    src
}

/// What `thaw mount status` says of passthrough on the mount at `mnt`.
fn passthrough_mode(w: &World, mnt: &Path) -> String {
    let status = w.ok(&["mount", "status", mnt.to_str().unwrap(), "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    status["passthrough"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Reads every file of `src` through `mnt` and checks it against the source.
fn read_and_compare(src: &Path, mnt: &Path) {
    for file in files_under(src) {
        assert!(
            fs::read(mnt.join(&file)).unwrap() == fs::read(src.join(&file)).unwrap(),
            "{} differs through the mount",
            file.display()
        );
    }
}

#[test]
fn files_complete_in_the_cache_are_read_by_the_kernel_directly() {
    let test = "files_complete_in_the_cache_are_read_by_the_kernel_directly";
    if !fuse_available(test) {
        return;
    }
    if !is_root() {
        thaw_sys::skip::skipped(
            test,
            "FUSE passthrough needs root (registering backing files)",
        );
        return;
    }
    let w = World::local();
    let src = mixed_tree(&w);
    w.index("dir", &src, "mixed", &[]);
    let mnt = w.path("mnt");
    let with_files = files_under(&src)
        .into_iter()
        .filter(|f| fs::metadata(src.join(f)).unwrap().len() > 0)
        .count() as f64;

    // First mount: nothing cached, every open reads through thaw; closing a file whose chunks
    // are now all cached prepares its whole-file object in the background.
    let first = w.mount("mixed", &mnt, &["--no-trace", "--metrics", "127.0.0.1:0"]);
    read_and_compare(&src, &mnt);
    assert_eq!(first.metric("thaw_fs_passthrough_opens_total"), 0.0);
    assert!(first.metric("thaw_fs_reads_total") > 0.0);
    // Open again until every file is handed to the kernel (preparation is asynchronous).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mode = passthrough_mode(&w, &mnt);
        if mode != "on" {
            // Off only where the kernel does not offer it (or refuses the backing file).
            thaw_sys::skip::skipped(test, &format!("FUSE passthrough here: {mode}"));
            return;
        }
        let before = first.metric("thaw_fs_passthrough_opens_total");
        for file in files_under(&src) {
            fs::File::open(mnt.join(file)).unwrap();
        }
        if first.metric("thaw_fs_passthrough_opens_total") - before == with_files {
            break;
        }
        assert!(Instant::now() < deadline, "files never became passthrough");
        std::thread::sleep(Duration::from_millis(100));
    }
    first.unmount();

    // Second mount, page cache dropped by the new mount: every byte comes from cache files
    // through the kernel; no read request reaches thaw, and the bytes are right.
    let second = w.mount("mixed", &mnt, &["--no-trace", "--metrics", "127.0.0.1:0"]);
    read_and_compare(&src, &mnt);
    assert_eq!(second.metric("thaw_fs_passthrough_opens_total"), with_files);
    assert_eq!(
        second.metric("thaw_fs_reads_total"),
        0.0,
        "a read reached thaw"
    );
    let status = w.ok(&["mount", "status", mnt.to_str().unwrap()]);
    assert!(status.contains("passthrough:  on"), "{status}");
    assert!(
        status.contains(&format!("{with_files} passthrough")),
        "{status}"
    );
    second.unmount();

    // Opted out: the same files read through thaw.
    let third = w.mount(
        "mixed",
        &mnt,
        &["--no-trace", "--no-passthrough", "--metrics", "127.0.0.1:0"],
    );
    read_and_compare(&src, &mnt);
    assert_eq!(third.metric("thaw_fs_passthrough_opens_total"), 0.0);
    assert!(third.metric("thaw_fs_reads_total") > 0.0);
    assert_eq!(passthrough_mode(&w, &mnt), "off (--no-passthrough)");
    third.unmount();

    // While a trace is recorded, opens read through thaw so the trace sees every read.
    let recording = w.mount("mixed", &mnt, &["--metrics", "127.0.0.1:0"]);
    read_and_compare(&src, &mnt);
    assert_eq!(recording.metric("thaw_fs_passthrough_opens_total"), 0.0);
    recording.unmount();

    let status = w.ok(&["cache", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(status["whole_files"].as_u64().unwrap() >= 2, "{status}");
    assert_eq!(status["in_use"], false);
    assert!(status["hits"].as_u64().unwrap() > 0, "{status}");
}

#[test]
fn cache_check_finds_a_flipped_byte_in_a_cache_file_and_the_next_read_is_right() {
    let w = World::local();
    let src = mixed_tree(&w);
    w.index("dir", &src, "mixed", &[]);
    w.ok(&[
        "extract",
        "mixed",
        w.path("first").to_str().unwrap(),
        "--quiet",
        "--fill-cache",
    ]);
    let cache = w.path("cache");
    let clean = w.ok(&["cache", "check", "--quiet"]);
    assert!(clean.contains(": 0 bad"), "{clean}");

    // Flip one byte in the middle of the largest chunk file.
    let victim = largest_chunk_file(&cache);
    let mut bytes = fs::read(&victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    fs::write(&victim, &bytes).unwrap();

    let out = w
        .thaw()
        .args(["cache", "check", "--quiet"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(victim.to_str().unwrap()), "{said}");
    assert!(said.contains(": 1 bad"), "{said}");
    assert!(!victim.exists(), "the bad file is dropped");
    let again = w.ok(&["cache", "check", "--quiet"]);
    assert!(again.contains(": 0 bad"), "{again}");
    // The dropped chunk comes from the store again, right.
    w.ok(&[
        "extract",
        "mixed",
        w.path("second").to_str().unwrap(),
        "--quiet",
        "--fill-cache",
    ]);
    assert_same_tree(&src, &w.path("second"));
}

#[test]
fn the_budget_holds_on_disk_and_shared_content_is_cached_once() {
    let w = World::local();
    let src = w.path("src");
    fs::create_dir_all(&src).unwrap();
    for n in 0..8 {
        fs::write(src.join(format!("part{n}")), random_bytes(4 << 20, 60 + n)).unwrap();
    }
    w.index("dir", &src, "big", &[]);
    let cache = w.path("cache");
    let budget = 6u64 << 20;
    w.ok(&[
        "--cache-bytes",
        "6MiB",
        "extract",
        "big",
        w.path("out").to_str().unwrap(),
        "--quiet",
        "--fill-cache",
    ]);
    assert_same_tree(&src, &w.path("out"));
    let held = object_bytes(&cache);
    assert!(
        held <= budget,
        "{held} bytes of cache files over a {budget}-byte budget"
    );
    assert!(held > 0);
    let pruned = w.ok(&["cache", "prune", "--to", "1MiB"]);
    assert!(pruned.contains("pruned"), "{pruned}");
    assert!(object_bytes(&cache) <= 1 << 20);
    w.ok(&["cache", "prune"]);
    assert_eq!(object_bytes(&cache), 0);

    // Two images holding the same file: its chunks are cached once.
    let other = w.path("other");
    fs::create_dir_all(other.join("nested")).unwrap();
    fs::copy(src.join("part0"), other.join("nested/renamed")).unwrap();
    w.index("dir", &other, "other", &[]);
    let only = w.path("only");
    fs::create_dir_all(&only).unwrap();
    fs::copy(src.join("part0"), only.join("part0")).unwrap();
    w.index("dir", &only, "only", &[]);
    for (tag, to) in [("only", "o1"), ("other", "o2")] {
        w.ok(&[
            "extract",
            tag,
            w.path(to).to_str().unwrap(),
            "--quiet",
            "--fill-cache",
        ]);
    }
    assert_eq!(object_bytes(&cache), 4 << 20, "one copy of the shared file");
    let status = w.ok(&["cache", "status"]);
    assert!(
        status.contains("4.0 MiB of a 20480.0 MiB budget"),
        "{status}"
    );
}
