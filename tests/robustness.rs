//! A store stays valid when an indexer is killed mid-run, and two indexers can share a store.

use std::fs;
use std::time::{Duration, Instant};

use crate::common::*;

#[test]
fn an_indexer_killed_mid_run_leaves_tags_on_complete_manifests() {
    let w = World::local();
    let old = w.path("old");
    fs::create_dir_all(&old).unwrap();
    fs::write(old.join("f"), b"old version").unwrap();
    w.index("dir", &old, "app", &[]);
    let old_manifest = w.manifest_of("app").unwrap();

    let big = w.path("big");
    fs::create_dir_all(&big).unwrap();
    for i in 0..12 {
        fs::write(
            big.join(format!("part{i}")),
            random_bytes(24 << 20, 100 + i),
        )
        .unwrap();
    }
    let mut child = w
        .thaw()
        .args([
            "index",
            "dir",
            big.to_str().unwrap(),
            "--tag",
            "app",
            "--pack-bytes",
            "4MiB",
            "--threads",
            "1",
            "--quiet",
        ])
        .spawn()
        .unwrap();
    // Kill it once it has written a few packs but long before it can finish.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if store_files(&w.store_dir(), "packs", ".idx").len() >= 4 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the indexer finished before it could be killed"
        );
        assert!(Instant::now() < deadline, "no packs appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();

    assert_eq!(
        w.manifest_of("app").as_deref(),
        Some(old_manifest.as_str()),
        "the tag still names the old manifest"
    );
    w.ok(&["verify", "app", "--quiet"]);
    // Every manifest in the store is complete: it opens, and its chunk map is there.
    for manifest in store_files(&w.store_dir(), "manifests", "") {
        let id = manifest.file_name().unwrap().to_string_lossy().to_string();
        w.ok(&["verify", &id, "--quiet"]);
    }
    // A rerun reuses the packs the killed run left and completes.
    let report = w.index("dir", &big, "app", &["--pack-bytes", "4MiB"]);
    assert!(
        report["new_chunks"].as_u64().unwrap() < report["chunks"].as_u64().unwrap(),
        "{report}"
    );
    w.ok(&["verify", "app", "--quiet"]);
    let out = w.path("out");
    w.ok(&["extract", "app", out.to_str().unwrap(), "--quiet"]);
    assert_same_tree(&big, &out);
}

#[test]
fn two_indexers_writing_one_store_at_once_both_succeed() {
    let w = World::local();
    let shared = random_bytes(6 << 20, 7);
    let mut children = Vec::new();
    for name in ["one", "two"] {
        let dir = w.path(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("shared.bin"), &shared).unwrap();
        fs::write(
            dir.join("own.bin"),
            random_bytes(5 << 20, name.len() as u64 * 31),
        )
        .unwrap();
        for i in 0..50 {
            fs::write(dir.join(format!("small{i}.txt")), text_bytes(3000, i)).unwrap();
        }
        let child = w
            .thaw()
            .args([
                "index",
                "dir",
                dir.to_str().unwrap(),
                "--tag",
                name,
                "--pack-bytes",
                "2MiB",
                "--quiet",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        children.push(child);
    }
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", describe(&out));
    }
    for name in ["one", "two"] {
        w.ok(&["verify", name, "--quiet"]);
        let out = w.path(&format!("{name}-out"));
        w.ok(&["extract", name, out.to_str().unwrap(), "--quiet"]);
        assert_same_tree(&w.path(name), &out);
    }
}

#[test]
fn a_disk_cache_filled_by_a_killed_process_still_serves_only_right_bytes() {
    let w = World::local();
    let src = w.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..8 {
        fs::write(src.join(format!("f{i}")), random_bytes(16 << 20, 300 + i)).unwrap();
    }
    w.index("dir", &src, "t", &[]);
    let mut child = w
        .thaw()
        .args([
            "extract",
            "t",
            w.path("partial").to_str().unwrap(),
            "--fill-cache",
            "--quiet",
            "--concurrency",
            "1",
        ])
        .spawn()
        .unwrap();
    // Kill it once the cache has started to fill.
    let cache = w.path("cache");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let cached = object_bytes(&cache);
        if cached > 8 << 20 || child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the cache never filled");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        child.wait().unwrap().signal(),
        Some(libc::SIGKILL),
        "the extract finished before it could be killed"
    );
    assert!(
        cache.join("in-use").exists(),
        "a killed holder leaves its marker"
    );
    let status = w.ok(&["cache", "status"]);
    assert!(status.contains("in use:"), "{status}");
    // The next open reconciles the index with the files; everything kept verifies, nothing
    // half-written is left.
    let checked = w.ok(&["cache", "check", "--quiet"]);
    assert!(checked.contains(": 0 bad"), "{checked}");
    assert!(fs::read_dir(cache.join("tmp")).unwrap().next().is_none());
    assert!(!cache.join("in-use").exists(), "closed cleanly this time");
    // The reopened cache serves what it kept (verified) and the store the rest: all bytes right.
    let out = w.path("out");
    w.ok(&[
        "extract",
        "t",
        out.to_str().unwrap(),
        "--quiet",
        "--fill-cache",
    ]);
    assert_same_tree(&src, &out);
    // And with every pack gone, the cache alone now holds everything.
    for pack in store_files(&w.store_dir(), "packs", ".pack") {
        fs::remove_file(pack).unwrap();
    }
    let again = w.path("again");
    w.ok(&["extract", "t", again.to_str().unwrap(), "--quiet"]);
    assert_same_tree(&src, &again);
}
