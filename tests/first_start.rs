//! The first start of a manifest that has no trace of its own, on real mounts: related traces
//! carried over (the previous version of a tag, an image sharing layers, by path where a file's
//! chunks changed), the traces of concurrent mounts merged, opened files and listed directories
//! fetched ahead, and the full fetch that leaves every chunk in the local cache.

use std::fs;
use std::path::Path;

use crate::common::oci::{oci_tools_available, run_tool, Layout};
use crate::common::*;

/// A distant store, each mount cold: what a first start on a new node sees.
const COLD: [&str; 5] = [
    "--metrics",
    "127.0.0.1:0",
    "--no-disk-cache",
    "--store-read-latency-ms",
    "20",
];

/// Prefetch hits / first reads of a mount so far.
fn hit_ratio(m: &MountGuard<'_>) -> f64 {
    let hits = m.metric("thaw_prefetch_hits_total");
    let all = hits
        + m.metric("thaw_prefetch_late_total")
        + m.metric("thaw_prefetch_missed_total")
        + m.metric("thaw_unpredicted_reads_total");
    hits / all.max(1.0)
}

/// An application tree: 24 modules of 120-150 KB; `version` 2 rewrites m05 (same path, new
/// chunks) and adds new.py.
fn app_tree(root: &Path, version: u64) {
    fs::create_dir_all(root.join("lib")).unwrap();
    for i in 0..24u64 {
        let seed = if i == 5 { i + 1000 * version } else { i };
        fs::write(
            root.join(format!("lib/m{i:02}.py")),
            text_bytes(120_000 + i as usize * 1000, seed),
        )
        .unwrap();
    }
    if version == 2 {
        fs::write(root.join("lib/new.py"), text_bytes(50_000, 77)).unwrap();
    }
}

/// What the application reads at start-up.
const STARTUP: [&str; 6] = ["m00", "m02", "m05", "m09", "m13", "m20"];

fn run_startup(mnt: &Path, src: &Path) {
    for name in STARTUP {
        let path = format!("lib/{name}.py");
        assert_eq!(
            fs::read(mnt.join(&path)).unwrap(),
            fs::read(src.join(&path)).unwrap(),
            "{path}"
        );
    }
}

#[test]
fn a_new_version_prefetches_what_the_previous_version_read() {
    if !fuse_available("a_new_version_prefetches_what_the_previous_version_read") {
        return;
    }
    let w = World::local();
    let (v1, v2) = (w.path("v1"), w.path("v2"));
    app_tree(&v1, 1);
    app_tree(&v2, 2);
    w.index("dir", &v1, "app", &[]);
    let mnt = w.path("mnt");
    let first = w.mount("app", &mnt, &COLD);
    run_startup(&mnt, &v1);
    assert!(first.unmount().contains("trace saved"));

    // Version 2 under the same tag: the tag remembers version 1, whose trace applies.
    w.index("dir", &v2, "app", &[]);
    let shown = w.ok(&["trace", "show", "app"]);
    assert!(
        shown.contains("no trace of its own") && shown.contains("previous version 1 of tag app"),
        "{shown}"
    );
    let second = w.mount(
        "app",
        &mnt,
        &[&COLD[..], &["--fetch-all-below", "0"]].concat(),
    );
    let now = mount_status(&w, &mnt);
    let source = &now["prefetch_sources"][0];
    assert_eq!(
        source["relation"], "previous version 1 of tag app",
        "{now:#}"
    );
    assert!(
        source["by_path"].as_u64().unwrap() >= 1,
        "m05 changed: mapped by path: {now:#}"
    );
    assert!(source["by_id"].as_u64().unwrap() >= 5, "{now:#}");
    wait_for_status(&w, &mnt, "the carried-over prefetch", |s| {
        settled(s, "trace")
    });
    run_startup(&mnt, &v2);
    assert!(
        hit_ratio(&second) >= 0.9,
        "version 2 read what version 1's trace predicted: {:?}",
        second.metrics()
    );
    second.unmount();

    // Version 2 has its own trace now, and its run says where its prefetch came from.
    let shown = w.ok(&["trace", "show", "app"]);
    assert!(!shown.contains("no trace of its own"), "{shown}");
    let run = shown
        .lines()
        .find(|l| l.contains("run saved at"))
        .unwrap_or_else(|| panic!("no run history: {shown}"));
    assert!(
        run.contains("previous version 1 of tag app") && run.contains("hit ratio"),
        "{run}"
    );
}

#[test]
fn concurrent_mounts_of_one_tag_merge_their_traces() {
    if !fuse_available("concurrent_mounts_of_one_tag_merge_their_traces") {
        return;
    }
    let w = World::local();
    let src = w.path("src");
    app_tree(&src, 1);
    w.index("dir", &src, "app", &[]);
    let (a, b) = (w.path("a"), w.path("b"));
    let opts = ["--no-disk-cache", "--no-prefetch"];
    let on_a = w.mount("app", &a, &opts);
    let on_b = w.mount("app", &b, &opts);
    fs::read(a.join("lib/m01.py")).unwrap();
    fs::read(b.join("lib/m22.py")).unwrap();
    // Both nodes save at the same moment: neither may lose the other's run.
    std::thread::scope(|scope| {
        scope.spawn(|| assert!(on_a.unmount().contains("trace saved")));
        scope.spawn(|| assert!(on_b.unmount().contains("trace saved")));
    });
    let shown = w.ok(&["trace", "show", "app"]);
    assert!(
        shown.contains("/lib/m01.py") && shown.contains("/lib/m22.py"),
        "{shown}"
    );
    assert!(shown.lines().next().unwrap().contains("runs 2"), "{shown}");
}

#[test]
fn images_sharing_a_layer_prefetch_each_others_reads() {
    if !oci_tools_available("images_sharing_a_layer_prefetch_each_others_reads")
        || !fuse_available("images_sharing_a_layer_prefetch_each_others_reads")
        || !is_root()
    {
        return;
    }
    let w = World::local();
    let layout = Layout::new(&w.path("layout"), "a");
    let bundle = w.path("bundle");
    layout.add_layer("a", &bundle, |root| app_tree(&root.join("base"), 1));
    run_tool("umoci", &["tag", "--image", &layout.image("a"), "b"]);
    layout.add_layer("a", &bundle, |root| {
        fs::write(root.join("app-a.txt"), b"a\n").unwrap();
    });
    layout.add_layer("b", &bundle, |root| {
        fs::write(root.join("app-b.txt"), b"b\n").unwrap();
    });
    for tag in ["a", "b"] {
        w.ok(&[
            "index",
            "image",
            &format!("oci:{}", layout.image(tag)),
            "--tag",
            tag,
            "-q",
        ]);
    }
    let mnt = w.path("mnt");
    let on_a = w.mount("a", &mnt, &COLD);
    run_startup(&mnt.join("base"), &bundle_free_copy(&w));
    on_a.unmount();
    let shown = w.ok(&["trace", "show", "b"]);
    assert!(shown.contains("shares 1 layer"), "{shown}");
    let on_b = w.mount(
        "b",
        &mnt,
        &[&COLD[..], &["--fetch-all-below", "0"]].concat(),
    );
    let now = mount_status(&w, &mnt);
    assert_eq!(
        now["prefetch_sources"][0]["relation"], "shares 1 layer",
        "{now:#}"
    );
    let queued = now["background"]["trace"]["queued"].as_u64().unwrap();
    assert!(queued >= STARTUP.len() as u64, "{now:#}");
    wait_for_status(&w, &mnt, "the prefetch of the shared layer", |s| {
        settled(s, "trace")
    });
    run_startup(&mnt.join("base"), &bundle_free_copy(&w));
    assert!(hit_ratio(&on_b) >= 0.9, "{:?}", on_b.metrics());
    on_b.unmount();
}

/// The base layer's tree, written again outside any bundle (to compare the mounts against).
fn bundle_free_copy(w: &World) -> std::path::PathBuf {
    let dir = w.path("base-copy");
    if !dir.exists() {
        app_tree(&dir, 1);
    }
    dir
}

#[test]
fn with_no_trace_opened_files_and_listed_directories_are_fetched_ahead() {
    if !fuse_available("with_no_trace_opened_files_and_listed_directories_are_fetched_ahead") {
        return;
    }
    let w = World::local();
    let src = w.path("src");
    fs::create_dir_all(src.join("small")).unwrap();
    fs::write(src.join("big.bin"), random_bytes(6 << 20, 3)).unwrap();
    for i in 0..20u64 {
        fs::write(src.join(format!("small/s{i:02}.py")), text_bytes(20_000, i)).unwrap();
    }
    w.index("dir", &src, "tree", &[]);
    let mnt = w.path("mnt");
    let opts = [&COLD[..], &["--fetch-all-below", "0", "--no-trace"]].concat();
    let m = w.mount("tree", &mnt, &opts);
    // Open the big file and read one byte: the rest of it comes in the background.
    let mut big = fs::File::open(mnt.join("big.bin")).unwrap();
    std::io::Read::read_exact(&mut big, &mut [0u8; 1]).unwrap();
    let now = mount_status(&w, &mnt);
    assert!(now["fetch_on_open"].as_bool().unwrap(), "{now:#}");
    let opened = now["background"]["opened"]["queued"].as_u64().unwrap();
    assert!(opened >= 2, "the whole file is queued: {now:#}");
    wait_for_status(&w, &mnt, "the opened file", |s| settled(s, "opened"));
    drop(big);
    // List the directory: its small files come before they are opened.
    let listed = fs::read_dir(mnt.join("small")).unwrap().count();
    assert_eq!(listed, 20);
    wait_for_status(&w, &mnt, "the listed directory", |s| settled(s, "listed"));
    let before = m.metric("thaw_prefetch_hits_total");
    for i in 0..20u64 {
        let name = format!("small/s{i:02}.py");
        assert_eq!(
            fs::read(mnt.join(&name)).unwrap(),
            fs::read(src.join(&name)).unwrap()
        );
    }
    assert!(
        m.metric("thaw_prefetch_hits_total") > before,
        "the listed files were prefetched: {:?}",
        m.metrics()
    );
    m.unmount();

    // Off: nothing is fetched at open.
    let m = w.mount("tree", &mnt, &[&opts[..], &["--no-fetch-on-open"]].concat());
    fs::File::open(mnt.join("big.bin")).unwrap();
    let now = mount_status(&w, &mnt);
    assert!(!now["fetch_on_open"].as_bool().unwrap(), "{now:#}");
    assert_eq!(now["background"]["opened"]["queued"], 0, "{now:#}");
    m.unmount();
}

#[test]
fn the_full_fetch_leaves_every_chunk_in_the_local_cache() {
    if !fuse_available("the_full_fetch_leaves_every_chunk_in_the_local_cache") {
        return;
    }
    let w = World::local();
    let src = w.path("src");
    app_tree(&src, 1);
    fs::write(src.join("model.bin"), random_bytes(3 << 20, 9)).unwrap();
    w.index("dir", &src, "app", &[]);
    let mnt = w.path("mnt");
    // No trace and a small tree: the full fetch starts by itself.
    let m = w.mount(
        "app",
        &mnt,
        &[
            "--metrics",
            "127.0.0.1:0",
            "--no-trace",
            "--store-read-latency-ms",
            "5",
        ],
    );
    wait_for_status(&w, &mnt, "the full fetch", |s| {
        s["fetching_all"] == false && s["background"]["all"]["fetched"].as_u64() > Some(0)
    });
    assert_eq!(mount_status(&w, &mnt)["background"]["all"]["failed"], 0);
    m.unmount();
    // Every chunk is local now: reading the whole tree asks the store for nothing.
    let m = w.mount("app", &mnt, &["--metrics", "127.0.0.1:0", "--no-prefetch"]);
    for rel in files_under(&src) {
        assert_eq!(
            fs::read(mnt.join(&rel)).unwrap(),
            fs::read(src.join(&rel)).unwrap()
        );
    }
    assert_eq!(
        m.metric("thaw_store_requests_total{op=\"get_range\"}"),
        0.0,
        "{:?}",
        m.metrics()
    );
    m.unmount();
}
