//! End-to-end: the store's lifecycle with the real binary. gc frees what no tag reaches and
//! rewrites mostly-garbage packs while every tag keeps verifying: beside indexers started at the
//! same moment (local folder and S3), when killed at any of its steps, and under a running
//! mount. `check` finds damage, `repair` rebuilds what can be rebuilt, and tags move.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;

use crate::common::*;

/// Version `v` of a tree: `files` files of 200 KiB; a quarter of them are the same in every
/// version and the rest are new in each one (so old packs become mostly garbage).
fn version_tree(root: &Path, v: u64, files: u64) -> PathBuf {
    let dir = root.join(format!("v{v}"));
    fs::create_dir_all(&dir).unwrap();
    for i in 0..files {
        let seed = if i % 4 == 0 { i } else { 1000 * v + i };
        fs::write(dir.join(format!("f{i}")), random_bytes(200 << 10, seed)).unwrap();
    }
    fs::write(dir.join("version"), format!("{v}\n")).unwrap();
    dir
}

/// `thaw gc` keeping only the newest `app:` tag, with no grace period.
const GC_NEWEST_APP: [&str; 7] = [
    "gc",
    "--grace",
    "0s",
    "--keep-last",
    "1",
    "--prefix",
    "app:",
];

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Every tag of the store verifies.
fn assert_every_tag_verifies(w: &World) {
    let tags = w.ok(&["tags"]);
    for line in tags.lines() {
        let name = line.split_whitespace().nth(1).unwrap();
        let out = w.ok(&["verify", name, "--quiet"]);
        assert!(out.starts_with("ok"), "tag {name}: {out}");
    }
}

/// Whether `thaw check`'s output ends in its "ok" verdict (notes about garbage may precede it).
fn check_passed(out: &str) -> bool {
    out.lines().last().is_some_and(|l| l.starts_with("ok"))
}

fn store_bytes(dir: &Path) -> u64 {
    files_under(dir)
        .iter()
        .map(|f| fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0))
        .sum()
}

#[test]
fn gc_frees_old_versions_keeps_every_tag_whole_and_applies_retention() {
    let w = World::local();
    for v in 1..=5 {
        let tree = version_tree(&w.path("trees"), v, 16);
        w.index("dir", &tree, &format!("app:{v}"), &["--pack-bytes", "2MiB"]);
    }
    let base = version_tree(&w.path("trees"), 99, 4);
    w.index("dir", &base, "base", &[]);
    let before = store_bytes(&w.store_dir());

    // With the default grace period nothing this young goes, even with retention.
    let young = json(&w.ok(&[
        "gc",
        "--keep-last",
        "2",
        "--prefix",
        "app:",
        "--json",
        "--dry-run",
    ]));
    assert_eq!(
        young["tags_removed"],
        serde_json::json!(["app:1", "app:2", "app:3"])
    );
    assert!(
        young["kept_young"]["objects"].as_u64().unwrap() > 0,
        "{young}"
    );
    assert!(young["deleted"].get("packs").is_none(), "{young}");
    assert_eq!(
        w.ok(&["tags"]).lines().count(),
        6,
        "a dry run changes nothing"
    );

    let report = json(&w.ok(&[
        "gc",
        "--grace",
        "0s",
        "--keep-last",
        "2",
        "--prefix",
        "app:",
        "--json",
    ]));
    assert_eq!(
        report["tags_removed"],
        serde_json::json!(["app:1", "app:2", "app:3"])
    );
    assert!(
        report["deleted"]["packs"]["objects"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(
        report["deleted"]["manifests"]["objects"].as_u64().unwrap() == 3,
        "{report}"
    );
    let tags: Vec<String> = w
        .ok(&["tags"])
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
        .collect();
    assert_eq!(tags, ["app:4", "app:5", "base"]);
    assert_every_tag_verifies(&w);
    let check = w.ok(&["check", "--read-data"]);
    assert!(check_passed(&check), "{check}");
    let after = store_bytes(&w.store_dir());
    assert!(after * 2 < before, "{before} -> {after} bytes");
    let out = w.path("out");
    w.ok(&["extract", "app:4", out.to_str().unwrap(), "--quiet"]);
    assert_same_tree(&w.path("trees/v4"), &out);

    // A second run finds nothing more.
    let again = json(&w.ok(&["gc", "--grace", "0s", "--json"]));
    assert_eq!(again["deleted"], serde_json::json!({}), "{again}");
    assert_eq!(again["repacked"]["packs"], 0, "{again}");
}

/// Indexes version `v` into tag `tag` in the background.
fn spawn_index(w: &World, tree: &Path, tag: &str) -> Child {
    w.thaw()
        .args([
            "index",
            "dir",
            tree.to_str().unwrap(),
            "--tag",
            tag,
            "--quiet",
        ])
        .args(["--pack-bytes", "1MiB"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_ok(child: Child, what: &str) {
    let out = child.wait_with_output().unwrap();
    assert_no_panic(&out);
    assert!(out.status.success(), "{what}: {}", describe(&out));
}

/// Rounds of: an old version's tag is dropped by retention while two indexers write trees
/// made of that version's chunks (they deduplicate against exactly the packs gc wants to
/// delete), all three started at once. Every round every tag must verify.
fn gc_races_indexers(w: &World, rounds: u64) {
    let trees = w.path("trees");
    for v in 0..2 {
        let tree = version_tree(&trees, v, 8);
        w.index("dir", &tree, &format!("app:{v}"), &["--pack-bytes", "1MiB"]);
    }
    for round in 0..rounds {
        let old = version_tree(&trees, round, 8);
        let copy = trees.join(format!("copy{round}"));
        fs::create_dir_all(&copy).unwrap();
        for entry in fs::read_dir(&old).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
        }
        let next = version_tree(&trees, round + 2, 8);
        let a = spawn_index(w, &copy, &format!("copy:{round}"));
        let b = spawn_index(w, &next, &format!("app:{}", round + 2));
        let gc = w
            .thaw()
            .args(GC_NEWEST_APP)
            .arg("--quiet")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_ok(a, "indexer of the copy");
        wait_ok(b, "indexer of the next version");
        wait_ok(gc, "gc");
        assert_every_tag_verifies(w);
    }
    let check = w.ok(&["check"]);
    assert!(check_passed(&check), "{check}");
    let locks = fs::read_dir(w.store_dir().join("locks"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(locks, 0, "every lock was released");
}

#[test]
fn gc_and_indexers_started_together_never_leave_a_broken_tag() {
    gc_races_indexers(&World::local(), 8);
}

#[test]
fn gc_and_indexers_started_together_on_s3_never_leave_a_broken_tag() {
    let server = S3Server::start();
    let w = World::s3(&server, "thaw-gc-race");
    gc_races_indexers(&w, 3);
    let report = json(&w.ok(&["gc", "--grace", "0s", "--json"]));
    assert!(report["requests"]["gets"].as_u64().unwrap() > 0, "{report}");
}

/// A store where gc has a pack to rewrite, an old version to drop and a tag to keep.
fn repackable_store(w: &World) {
    let trees = w.path("trees");
    for v in 1..=2 {
        let tree = version_tree(&trees, v, 12);
        w.index("dir", &tree, &format!("app:{v}"), &[]);
    }
}

#[test]
fn gc_killed_at_any_step_leaves_every_tag_whole_and_a_rerun_finishes_the_job() {
    let clean = World::local();
    repackable_store(&clean);
    let expected = json(&clean.ok(&[&GC_NEWEST_APP[..], &["--json"]].concat()));
    assert_eq!(
        expected["repacked"]["packs"], 1,
        "the setup repacks: {expected}"
    );
    let clean_packs = store_files(&clean.store_dir(), "packs", ".pack").len();
    for point in [
        "marked",
        "repack-packs-written",
        "repack-maps-half",
        "repack-maps-written",
        "deleting-packs",
    ] {
        let w = World::local();
        repackable_store(&w);
        let out = w
            .thaw()
            .args(GC_NEWEST_APP)
            .arg("--quiet")
            .env("THAW_MAINTENANCE_CRASH_AT", point)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point}: {}", describe(&out));
        assert!(
            describe(&out).contains(point),
            "{point}: {}",
            describe(&out)
        );
        assert_every_tag_verifies(&w);
        let check = w.ok(&["check"]);
        assert!(check_passed(&check), "after a crash at {point}: {check}");
        // The killed gc's lock belongs to a dead process: the rerun is not blocked by it.
        w.ok(&["gc", "--grace", "0s", "--quiet"]);
        assert_every_tag_verifies(&w);
        let check = w.ok(&["check", "--read-data"]);
        assert!(check_passed(&check), "after the rerun ({point}): {check}");
        assert_eq!(
            store_files(&w.store_dir(), "packs", ".pack").len(),
            clean_packs,
            "after a crash at {point} and a rerun, the store holds what one clean gc leaves"
        );
    }
}

#[test]
fn check_finds_damage_and_repair_rebuilds_indexes_and_maps_and_drops_lost_tags() {
    let w = World::local();
    let trees = w.path("trees");
    let (a, b) = (version_tree(&trees, 1, 6), version_tree(&trees, 2, 6));
    w.index("dir", &a, "a", &[]);
    w.index("dir", &b, "b", &[]);
    assert!(check_passed(&w.ok(&["check", "--read-data"])));
    let store = w.store_dir();
    for index in store_files(&store, "packs", ".idx") {
        fs::remove_file(index).unwrap();
    }
    let map_a = store.join("maps").join(w.manifest_of("a").unwrap());
    fs::write(&map_a, b"not a chunk map").unwrap();
    fs::remove_file(store.join("manifests").join(w.manifest_of("b").unwrap())).unwrap();
    let report = w.fails(&["check"]);
    assert!(
        report.contains("has no index") && report.contains("thaw repair"),
        "{report}"
    );
    assert!(
        report.contains(map_a.file_name().unwrap().to_str().unwrap()),
        "{report}"
    );
    assert!(report.contains("tags/b: names manifest"), "{report}");

    let dry = w.ok(&["repair", "--dry-run"]);
    assert!(dry.contains("would be rebuilt"), "{dry}");
    assert!(
        store_files(&store, "packs", ".idx").is_empty(),
        "a dry run changes nothing"
    );
    let repaired = json(&w.ok(&["repair", "--json"]));
    assert!(
        !repaired["indexes_rebuilt"].as_array().unwrap().is_empty(),
        "{repaired}"
    );
    assert_eq!(
        repaired["maps_rebuilt"].as_array().unwrap().len(),
        1,
        "{repaired}"
    );
    assert_eq!(repaired["tags_dropped"][0]["name"], "b", "{repaired}");
    let check = w.ok(&["check", "--read-data"]);
    assert!(check_passed(&check), "{check}");
    assert_every_tag_verifies(&w);
    let out = w.path("out");
    w.ok(&["extract", "a", out.to_str().unwrap(), "--quiet"]);
    assert_same_tree(&a, &out);

    // A flipped byte in a pack is found by the data check, named by pack and offset.
    let pack = store_files(&store, "packs", ".pack").remove(0);
    let mut bytes = fs::read(&pack).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x20;
    fs::write(&pack, bytes).unwrap();
    assert!(
        check_passed(&w.ok(&["check"])),
        "structure alone does not read data"
    );
    let report = w.fails(&["check", "--read-data"]);
    let name = pack.file_name().unwrap().to_str().unwrap();
    assert!(
        report.contains(name) && report.contains("offset"),
        "{report}"
    );
}

#[test]
fn tags_are_listed_with_times_renamed_with_history_and_removed() {
    let w = World::local();
    let trees = w.path("trees");
    w.index("dir", &version_tree(&trees, 1, 2), "app", &[]);
    w.index("dir", &version_tree(&trees, 2, 2), "app", &[]);
    let listing = w.ok(&["tag", "ls"]);
    assert!(
        listing.contains("Z  ") && listing.trim_end().ends_with("app"),
        "{listing}"
    );
    w.ok(&["tag", "mv", "app", "service"]);
    let raw = fs::read_to_string(w.store_dir().join("tags/service")).unwrap();
    assert_eq!(raw.lines().count(), 2, "the history came along: {raw}");
    w.index("dir", &version_tree(&trees, 3, 2), "other", &[]);
    let err = w.fails(&["tag", "mv", "service", "other"]);
    assert!(err.contains("already exists"), "{err}");
    w.ok(&["tag", "rm", "service", "other"]);
    assert!(w.ok(&["tags"]).is_empty());
    let err = w.fails(&["tag", "rm", "service"]);
    assert!(err.contains("tags/service"), "{err}");
}

#[test]
fn a_running_mount_keeps_reading_after_gc_rewrites_its_packs() {
    if !fuse_available("lifecycle::a_running_mount_keeps_reading_after_gc_rewrites_its_packs") {
        return;
    }
    let w = World::local();
    repackable_store(&w);
    let dir = w.path("mnt");
    let mount = w.mount("app:2", &dir, &["--no-prefetch", "--no-trace"]);
    let report = json(&w.ok(&[&GC_NEWEST_APP[..], &["--json"]].concat()));
    assert_eq!(report["repacked"]["packs"], 1, "{report}");
    // Nothing was read before the gc: every chunk comes from the store now, the kept ones from
    // the new pack its chunk map does not know about.
    for i in 0..12 {
        let name = format!("f{i}");
        assert_eq!(
            fs::read(dir.join(&name)).unwrap(),
            fs::read(w.path("trees/v2").join(&name)).unwrap(),
            "{name}"
        );
    }
    drop(mount);
}

#[test]
fn a_disk_cache_evicts_what_gc_freed_first() {
    let w = World::local();
    let trees = w.path("trees");
    let (old, new) = (version_tree(&trees, 1, 8), version_tree(&trees, 2, 8));
    w.index("dir", &old, "old", &[]);
    w.index("dir", &new, "new", &[]);
    for (tag, dir) in [("old", "x-old"), ("new", "x-new")] {
        let out = w.path(dir);
        w.ok(&[
            "extract",
            tag,
            out.to_str().unwrap(),
            "--fill-cache",
            "--quiet",
        ]);
    }
    let chunks = |w: &World| -> u64 {
        let status = json(&w.ok(&["cache", "status", "--json"]));
        status["chunk_files"].as_u64().unwrap()
    };
    let cached = chunks(&w);
    w.ok(&["tag", "rm", "old"]);
    let report = json(&w.ok(&["gc", "--grace", "0s", "--json"]));
    let freed = report["chunks_freed"].as_u64().unwrap();
    assert!(freed >= 6, "six of old's files are its own: {report}");
    let pruned = w.ok(&["cache", "prune", "--to", "100GiB"]);
    assert!(
        pruned.contains(&format!("evicted {freed} chunks")),
        "{pruned}"
    );
    assert_eq!(chunks(&w), cached - freed, "only the freed chunks went");
    // What is left still serves the live tag.
    let out = w.path("again");
    w.ok(&["extract", "new", out.to_str().unwrap(), "--quiet"]);
    assert_same_tree(&new, &out);
}
