//! The same store operations against a real S3-compatible server (moto) on loopback.

use std::fs;

use crate::common::*;

#[test]
fn index_verify_extract_and_stats_work_against_s3() {
    let server = S3Server::start();
    let w = World::s3(&server, "thaw-test");
    let src = w.rich_src();
    let first = w.index("dir", &src, "rich", &["--pack-bytes", "4MiB"]);
    assert!(first["packs"].as_u64().unwrap() >= 2, "{first}");
    let again = w.index("dir", &src, "rich-again", &[]);
    assert_eq!(again["manifest"], first["manifest"]);
    assert_eq!(
        again["new_chunks"], 0,
        "dedup works against the S3 pack indexes"
    );

    assert!(w.ok(&["tags"]).contains(" rich-again"));
    w.ok(&["verify", "rich", "--quiet"]);
    let out = w.path("out");
    w.ok(&["extract", "rich", out.to_str().unwrap(), "--quiet"]);
    assert_same_tree(&src, &out);
    let stats: serde_json::Value =
        serde_json::from_str(w.ok(&["stats", "rich", "--json"]).trim()).unwrap();
    assert!(stats["manifests"][0]["stored_bytes"].as_u64().unwrap() > 0);
    let cat = w
        .thaw()
        .args(["--no-disk-cache", "cat", "rich", "lib/python/text.py"])
        .output()
        .unwrap();
    assert_eq!(
        cat.stdout,
        fs::read(src.join("lib/python/text.py")).unwrap()
    );
}

#[test]
fn a_pack_missing_from_s3_is_reported_by_name() {
    let server = S3Server::start();
    let w = World::s3(&server, "thaw-missing");
    let src = w.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("data"), random_bytes(1 << 20, 3)).unwrap();
    w.index("dir", &src, "t", &[]);
    let listing = w.ok(&["verify", "t"]);
    assert!(listing.starts_with("ok"), "{listing}");
    let manifest = w.manifest_of("t").unwrap();
    let deleted = server.delete_objects("thaw-missing", "thaw/packs/", ".pack");
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    let report = w.fails(&["verify", &manifest, "--quiet"]);
    assert!(
        report.contains(deleted[0].trim_start_matches("thaw/"))
            && report.contains("pack is missing"),
        "{report}"
    );
}

#[test]
fn unknown_schemes_and_missing_buckets_give_clear_errors() {
    let w = World::local();
    let err = w.fails(&["--store", "ftp://example/x", "tags"]);
    assert!(
        err.contains("unknown scheme") && err.contains("ftp://example/x"),
        "{err}"
    );
    let server = S3Server::start();
    let w = World::s3(&server, "thaw-nobucket");
    let err = w.fails(&["--store", "s3://no-such-bucket/x", "tags"]);
    assert!(
        err.contains("NoSuchBucket") && err.contains("no-such-bucket"),
        "{err}"
    );
}

#[test]
fn a_mount_reads_its_tree_from_s3_and_stores_the_trace_there() {
    if !fuse_available("a_mount_reads_its_tree_from_s3_and_stores_the_trace_there") {
        return;
    }
    let server = S3Server::start();
    let w = World::s3(&server, "thaw-mount");
    let src = w.rich_src();
    w.index("dir", &src, "rich", &[]);
    let mnt = w.path("mnt");
    let m = w.mount("rich", &mnt, &["--no-disk-cache"]);
    assert_same_tree(&src, &mnt);
    assert!(m.unmount().contains("trace saved"));
    let shown = w.ok(&["trace", "show", "rich"]);
    assert!(shown.contains("/big.bin"), "{shown}");
}
