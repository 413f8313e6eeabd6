//! End-to-end: index real trees with the `thaw` binary into a local folder store, then read them
//! back with extract, cat, ls, stats and verify.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::common::*;

#[test]
fn extract_restores_every_file_kind_with_its_metadata() {
    let w = World::local();
    let src = w.rich_src();
    let report = w.index("dir", &src, "rich", &[]);
    assert!(report["new_chunks"].as_u64().unwrap() > 0);

    let out = w.path("out");
    w.ok(&["extract", "rich", out.to_str().unwrap(), "--quiet"]);
    assert_same_tree(&src, &out);

    // Holes stay holes: the 64 MiB sparse file holds little more than its data.
    let meta = fs::metadata(out.join("sparse.img")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.len(), 64 << 20);
    assert!(
        meta.blocks() * 512 < 4 << 20,
        "sparse file allocated {} bytes",
        meta.blocks() * 512
    );

    // Extraction refuses a non-empty destination.
    let err = w.fails(&["extract", "rich", out.to_str().unwrap()]);
    assert!(err.contains("not empty"), "{err}");
}

#[test]
fn cat_and_ls_read_single_files_and_directories() {
    let w = World::local();
    let src = w.rich_src();
    w.index("dir", &src, "rich", &[]);

    for file in [
        "big.bin",
        "lib/python/pkg/mod7.py",
        "sparse.img",
        "lib/hard-b",
        "empty-file",
    ] {
        let out = w.thaw().args(["cat", "rich", file]).output().unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(out.stdout, fs::read(src.join(file)).unwrap(), "cat {file}");
    }
    let listing = w.ok(&["ls", "rich", "lib/python"]);
    assert!(listing.contains("/lib/python/text.py"), "{listing}");
    assert!(listing.contains("drwx"), "{listing}");
    let recursive = w.ok(&["ls", "rich", "-R"]);
    assert!(
        recursive.contains("/lib/python/pkg/mod39.py"),
        "{recursive}"
    );
    assert!(
        recursive.contains("/link-rel -> lib/python/text.py"),
        "{recursive}"
    );
    let err = w.fails(&["cat", "rich", "no/such/file"]);
    assert!(err.contains("no/such/file"), "{err}");
    let err = w.fails(&["ls", "nosuchtag"]);
    assert!(err.contains("nosuchtag"), "{err}");
    let tags = w.ok(&["tags"]);
    assert!(tags.trim().ends_with(" rich"), "{tags}");
}

#[test]
fn the_same_tree_gives_the_same_manifest_and_stores_nothing_new() {
    let w = World::local();
    let src = w.rich_src();
    let first = w.index("dir", &src, "a", &[]);
    let second = w.index("dir", &src, "b", &[]);
    assert_eq!(first["manifest"], second["manifest"]);
    assert_eq!(second["new_chunks"], 0);
    assert_eq!(second["packs"], 0);
    // A different chunker is recorded in the manifest and so gives a different id.
    let fixed = w.index("dir", &src, "c", &["--chunker", "fixed:1048576"]);
    assert_ne!(first["manifest"], fixed["manifest"]);
}

#[test]
fn stats_report_dedup_between_two_versions_of_a_tree() {
    let w = World::local();
    let v1 = w.path("v1");
    build_rich_tree(&v1);
    let v2 = w.path("v2");
    build_rich_tree(&v2);
    // Version 2 changes one byte in the middle of the big file and adds a package.
    let mut big = fs::read(v2.join("big.bin")).unwrap();
    big[4 << 20] ^= 0xff;
    fs::write(v2.join("big.bin"), big).unwrap();
    fs::create_dir(v2.join("lib/python/newpkg")).unwrap();
    fs::write(
        v2.join("lib/python/newpkg/__init__.py"),
        text_bytes(5000, 77),
    )
    .unwrap();
    w.index("dir", &v1, "v1", &[]);
    let second = w.index("dir", &v2, "v2", &[]);
    let stats: serde_json::Value =
        serde_json::from_str(w.ok(&["stats", "v1", "v2", "--json"]).trim()).unwrap();
    let combined = &stats["combined"];
    let ratio = combined["dedup_ratio"].as_f64().unwrap();
    assert!(
        ratio < 0.65,
        "two near-identical versions should share most bytes: {stats}"
    );
    let v1_stored = stats["manifests"][0]["stored_bytes"].as_u64().unwrap();
    assert!(
        second["new_stored_bytes"].as_u64().unwrap() < v1_stored / 2,
        "{second}"
    );
    let human = w.ok(&["stats", "v1", "v2"]);
    assert!(human.contains("dedup ratio"), "{human}");
}

#[test]
fn verify_passes_on_a_sound_store() {
    let w = World::local();
    let src = w.rich_src();
    w.index("dir", &src, "rich", &[]);
    let out = w.ok(&["verify", "rich", "--quiet"]);
    assert!(out.starts_with("ok: "), "{out}");
}

#[test]
fn model_folders_are_indexed_with_their_safetensors_validated() {
    let w = World::local();
    let model = w.path("model");
    fs::create_dir_all(&model).unwrap();
    let header = br#"{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[1024,1024],"data_offsets":[0,4194304]},"b":{"dtype":"F16","shape":[8],"data_offsets":[4194304,4194320]}}"#;
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header);
    file.extend_from_slice(&random_bytes(4194320, 5));
    fs::write(model.join("model.safetensors"), &file).unwrap();
    fs::write(model.join("config.json"), br#"{"hidden_size": 1024}"#).unwrap();
    fs::write(model.join("tokenizer.json"), text_bytes(50_000, 3)).unwrap();
    w.index("model", &model, "m", &[]);
    let out = w.path("out");
    w.ok(&["extract", "m", out.to_str().unwrap(), "--quiet"]);
    assert_same_tree(&model, &out);

    // A lying header: a tensor past the end of the data.
    let bad_header = br#"{"w":{"dtype":"F32","shape":[1024,1024],"data_offsets":[0,8388608]}}"#;
    let mut bad = (bad_header.len() as u64).to_le_bytes().to_vec();
    bad.extend_from_slice(bad_header);
    bad.extend_from_slice(&[0u8; 4096]);
    fs::write(model.join("broken.safetensors"), &bad).unwrap();
    let err = w.fails(&["index", "model", model.to_str().unwrap(), "--tag", "m2"]);
    assert!(
        err.contains("broken.safetensors: tensor w.data_offsets"),
        "{err}"
    );
    // An absurd header length.
    fs::write(model.join("broken.safetensors"), u64::MAX.to_le_bytes()).unwrap();
    let err = w.fails(&["index", "model", model.to_str().unwrap(), "--tag", "m2"]);
    assert!(err.contains("broken.safetensors: header length"), "{err}");
    assert!(!w.ok(&["tags"]).contains("m2"), "no tag for a failed index");

    // A folder without safetensors is not a model.
    let err = w.fails(&["index", "model", w.path("src-none").to_str().unwrap()]);
    assert!(err.contains("src-none"), "{err}");
}

#[test]
fn a_warm_disk_cache_serves_extracts_when_the_store_is_gone() {
    let w = World::local();
    let src = w.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("data"), random_bytes(3 << 20, 8)).unwrap();
    w.index("dir", &src, "t", &[]);
    // Without --fill-cache an extract leaves the disk cache as it was (here: empty)...
    w.ok(&["extract", "t", w.path("plain").to_str().unwrap(), "--quiet"]);
    // ...with it, the fetched chunks are kept.
    w.ok(&[
        "extract",
        "t",
        w.path("first").to_str().unwrap(),
        "--quiet",
        "--fill-cache",
    ]);
    // Remove every pack: only the disk cache (a new process, so it survived a restart) can serve.
    for pack in store_files(&w.store_dir(), "packs", ".pack") {
        fs::remove_file(pack).unwrap();
    }
    let second = w.path("second");
    w.ok(&["extract", "t", second.to_str().unwrap(), "--quiet"]);
    assert_eq!(
        fs::read(second.join("data")).unwrap(),
        fs::read(src.join("data")).unwrap()
    );
    // Without the cache the same read fails, naming the missing pack.
    let err = w.fails(&["--no-disk-cache", "cat", "t", "data"]);
    assert!(err.contains("pack is missing"), "{err}");
}

#[test]
fn a_config_file_supplies_defaults_that_the_environment_and_flags_override() {
    let w = World::local();
    let src = w.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"configured").unwrap();
    let from_config = w.path("config-store");
    let config_dir = w.dir.path().join(".config/thaw");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(
        config_dir.join("config.toml"),
        format!("[store]\nurl = \"{}\"\n", from_config.display()),
    )
    .unwrap();
    let run = |args: &[&str], store_env: bool| {
        let mut cmd = w.thaw();
        if !store_env {
            cmd.env_remove("THAW_STORE");
        }
        let out = cmd.args(args).output().unwrap();
        assert!(out.status.success(), "thaw {args:?}: {}", describe(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    // The default config file names the store.
    run(
        &["index", "dir", src.to_str().unwrap(), "--tag", "cfg", "-q"],
        false,
    );
    assert!(
        from_config.join("tags/cfg").is_file(),
        "written to the configured store"
    );
    assert!(run(&["tags"], false).contains(" cfg"));
    // The environment (the world's own THAW_STORE) wins over the file.
    assert!(!run(&["tags"], true).contains(" cfg"));
    // A flag wins over both.
    let flag = format!("--store={}", from_config.display());
    assert!(run(&["tags", &flag], true).contains(" cfg"));

    // A named config file must exist; unknown keys are refused naming the file and key.
    let bad = w.path("bad.toml");
    std::fs::write(&bad, "[cache]\nsize = 3\n").unwrap();
    let said = w.fails(&["--config", bad.to_str().unwrap(), "tags"]);
    assert!(said.contains("bad.toml") && said.contains("size"), "{said}");
    let said = w.fails(&["--config", "/nonexistent/thaw.toml", "tags"]);
    assert!(said.contains("/nonexistent/thaw.toml"), "{said}");
}

#[test]
fn a_full_cache_disk_fails_no_read_and_keeps_what_it_holds_sound() {
    if !is_root() {
        thaw_sys::skip::skipped("a full cache disk", "mounting a small tmpfs needs root");
        return;
    }
    let w = World::local();
    let src = w.path("src");
    fs::create_dir_all(&src).unwrap();
    // 120 MiB of chunks for a cache on a 16 MiB disk.
    for n in 0..3 {
        fs::write(src.join(format!("part{n}")), random_bytes(40 << 20, 20 + n)).unwrap();
    }
    w.index("dir", &src, "big", &[]);
    let cache = w.path("small-disk");
    fs::create_dir_all(&cache).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&cache)
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a tmpfs at {}", cache.display());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = thaw_sys::mount::unmount(&self.0, true);
        }
    }
    let _unmount = Unmount(cache.clone());
    let cache_dir = cache.join("chunks");
    let extract = |to: &str| {
        let out = w
            .thaw()
            .env("THAW_CACHE_DIR", &cache_dir)
            .args([
                "extract",
                "big",
                w.path(to).to_str().unwrap(),
                "--quiet",
                "--fill-cache",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "a read failed on a full cache disk: {}",
            describe(&out)
        );
        for n in 0..3 {
            let name = format!("part{n}");
            assert!(
                fs::read(w.path(to).join(&name)).unwrap() == fs::read(src.join(&name)).unwrap(),
                "{to}/{name} differs from the source"
            );
        }
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let said = extract("first");
    // 120 MiB cannot fit on 16 MiB: fills fail, and that is said once.
    let warnings = said.matches("could not keep a chunk in the cache").count();
    assert_eq!(warnings, 1, "a full disk is logged once:\n{said}");
    // Whatever the cache kept is still served and sound (every chunk read is verified).
    extract("second");
}

#[test]
fn the_help_names_every_configuration_variable() {
    let help = World::local().ok(&["--help"]);
    for name in thaw_client::variable_names() {
        // The injected store latency is for benchmarks and stays out of the help.
        if name != "THAW_STORE_READ_LATENCY_MS" {
            assert!(help.contains(name), "thaw --help does not name {name}");
        }
    }
}
