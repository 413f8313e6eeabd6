//! Bad input, each case against the real binary: corrupt, truncated and lying store objects, and
//! unreadable sources. Each must give an error naming the object (and offset) and never panic.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::*;

/// A store holding two single-chunk random files, "a" and "b".
fn two_file_store() -> (World, PathBuf) {
    let w = World::local();
    let src = w.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), random_bytes(200_000, 1)).unwrap();
    fs::write(src.join("b"), random_bytes(200_000, 2)).unwrap();
    w.index("dir", &src, "t", &[]);
    (w, src)
}

fn only_pack(w: &World) -> PathBuf {
    let packs = store_files(&w.store_dir(), "packs", ".pack");
    assert_eq!(packs.len(), 1, "{packs:?}");
    packs.into_iter().next().unwrap()
}

fn pack_name(pack: &Path) -> String {
    format!("packs/{}", pack.file_name().unwrap().to_string_lossy())
}

/// The chunk id in the frame header at `offset` of a pack.
fn frame_chunk(pack: &Path, offset: usize) -> String {
    let bytes = fs::read(pack).unwrap();
    bytes[offset..offset + 32]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `cat`s both files without the disk cache; returns (outputs of the failures, count of successes).
fn cat_both(w: &World, src: &Path) -> (Vec<String>, usize) {
    let mut failures = Vec::new();
    let mut good = 0;
    for file in ["a", "b"] {
        let out = w
            .thaw()
            .args(["--no-disk-cache", "cat", "t", file])
            .output()
            .unwrap();
        assert_no_panic(&out);
        if out.status.success() {
            assert_eq!(
                out.stdout,
                fs::read(src.join(file)).unwrap(),
                "a successful read must be right"
            );
            good += 1;
        } else {
            failures.push(describe(&out));
        }
    }
    (failures, good)
}

#[test]
fn a_flipped_byte_inside_a_pack_is_reported_with_chunk_pack_and_offset() {
    let (w, src) = two_file_store();
    let pack = only_pack(&w);
    let chunk = frame_chunk(&pack, 16);
    let mut bytes = fs::read(&pack).unwrap();
    bytes[16 + 48 + 1000] ^= 0x01;
    fs::write(&pack, &bytes).unwrap();

    let report = w.fails(&["verify", "t", "--quiet"]);
    let expected = format!("BAD chunk {chunk} in {} at offset 16", pack_name(&pack));
    assert!(report.contains(&expected), "{report}");
    assert!(report.contains("FAILED: 1 of 2 chunks bad"), "{report}");

    // Only the file holding that chunk fails; the other still reads, and right.
    let (failures, good) = cat_both(&w, &src);
    assert_eq!(good, 1);
    assert_eq!(failures.len(), 1);
    assert!(failures[0].contains(&chunk), "{}", failures[0]);
}

#[test]
fn a_truncated_pack_is_reported_not_read() {
    let (w, src) = two_file_store();
    let pack = only_pack(&w);
    let len = fs::metadata(&pack).unwrap().len();
    fs::File::options()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(len - 5000)
        .unwrap();
    let report = w.fails(&["verify", "t", "--quiet"]);
    assert!(
        report.contains(&pack_name(&pack)) && report.contains("truncated"),
        "{report}"
    );
    let (failures, good) = cat_both(&w, &src);
    assert_eq!((failures.len(), good), (1, 1));
    assert!(failures[0].contains(&pack_name(&pack)), "{}", failures[0]);
}

#[test]
fn a_pack_index_pointing_past_the_end_is_reported_and_not_trusted() {
    let (w, src) = two_file_store();
    let index = store_files(&w.store_dir(), "packs", ".idx").remove(0);
    let mut bytes = fs::read(&index).unwrap();
    bytes.truncate(bytes.len() - 32);
    // Entry 0's frame offset (index header 56 bytes, then id 32 bytes): far past the end.
    bytes[56 + 32..56 + 40].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let sum = blake3::hash(&bytes);
    bytes.extend_from_slice(sum.as_bytes());
    fs::write(&index, &bytes).unwrap();

    let index_name = format!("packs/{}", index.file_name().unwrap().to_string_lossy());
    let report = w.fails(&["verify", "t", "--quiet"]);
    assert!(
        report.contains(&format!("BAD {index_name} at offset 56"))
            && report.contains("past the end"),
        "{report}"
    );

    // Indexing again must not dedup against the lying index: chunks are stored anew.
    let again = w
        .thaw()
        .args([
            "index",
            "dir",
            src.to_str().unwrap(),
            "--tag",
            "t2",
            "--json",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", describe(&again));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains(&index_name),
        "the skipped index is named: {stderr}"
    );
    let json: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(json["new_chunks"], 2, "{json}");
    w.ok(&["verify", "t2", "--quiet"]);
}

#[test]
fn a_missing_pack_lists_every_chunk_it_held() {
    let (w, _) = two_file_store();
    let pack = only_pack(&w);
    fs::remove_file(&pack).unwrap();
    let report = w.fails(&["verify", "t", "--quiet"]);
    assert_eq!(report.matches("pack is missing").count(), 2, "{report}");
    assert!(report.contains(&pack_name(&pack)), "{report}");
    let err = w.fails(&["--no-disk-cache", "cat", "t", "a"]);
    assert!(err.contains("pack is missing"), "{err}");
}

/// Stores `bytes` as a manifest under their own hash and tags it; returns the manifest key.
fn plant_manifest(w: &World, bytes: &[u8], tag: &str) -> String {
    let id = blake3::hash(bytes).to_hex().to_string();
    fs::write(w.store_dir().join("manifests").join(&id), bytes).unwrap();
    fs::write(w.store_dir().join("tags").join(tag), format!("{id}\n")).unwrap();
    format!("manifests/{id}")
}

#[test]
fn manifests_with_wrong_magic_unknown_version_or_truncated_body_are_refused() {
    let (w, _) = two_file_store();
    let id = w.manifest_of("t").unwrap();
    let good = fs::read(w.store_dir().join("manifests").join(&id)).unwrap();

    let mut magic = good.clone();
    magic[..8].copy_from_slice(b"NOTTHAW!");
    let key = plant_manifest(&w, &magic, "bad-magic");
    let err = w.fails(&["ls", "bad-magic"]);
    assert!(
        err.contains(&format!("{key} at offset 0")) && err.contains("wrong magic"),
        "{err}"
    );

    let mut version = good.clone();
    version[8] = 2;
    let key = plant_manifest(&w, &version, "bad-version");
    let err = w.fails(&["ls", "bad-version"]);
    assert!(
        err.contains(&format!("{key} at offset 8")) && err.contains("unknown format version 2"),
        "{err}"
    );

    let key = plant_manifest(&w, &good[..good.len() / 2], "truncated");
    let err = w.fails(&["ls", "truncated"]);
    assert!(err.contains(&key) && err.contains("truncated"), "{err}");

    // Edited in place under its old name: the id check catches it before any decoding.
    let mut edited = good.clone();
    let last = edited.len() - 1;
    edited[last] ^= 0x20;
    fs::write(w.store_dir().join("manifests").join(&id), &edited).unwrap();
    let err = w.fails(&["verify", "t"]);
    assert!(
        err.contains(&format!("manifests/{id}")) && err.contains("not to its name"),
        "{err}"
    );

    // A tag naming a manifest that is not there.
    fs::write(
        w.store_dir().join("tags").join("dangling"),
        format!("{}\n", "ab".repeat(32)),
    )
    .unwrap();
    let err = w.fails(&["extract", "dangling", w.path("out").to_str().unwrap()]);
    assert!(
        err.contains(&format!("manifests/{}", "ab".repeat(32))) && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn an_unreadable_source_file_fails_the_index_naming_it_and_tags_nothing() {
    let w = World::local();
    let src = w.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("fine"), b"fine").unwrap();
    fs::write(src.join("locked"), random_bytes(100_000, 4)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads anything; drop the capabilities that let it, as an unprivileged user would be.
    let mut cmd = if is_root() {
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--bounding-set",
            "-dac_override,-dac_read_search",
            env!("CARGO_BIN_EXE_thaw"),
        ]);
        c
    } else {
        std::process::Command::new(env!("CARGO_BIN_EXE_thaw"))
    };
    let template = w.thaw();
    for (k, v) in template.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let out = cmd
        .args(["index", "dir", src.to_str().unwrap(), "--tag", "t"])
        .output()
        .unwrap();
    assert_no_panic(&out);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = describe(&out);
    assert!(
        err.contains(&format!(
            "{}: Permission denied",
            src.join("locked").display()
        )),
        "{err}"
    );
    assert!(
        w.ok(&["tags"]).trim().is_empty(),
        "a failed index sets no tag"
    );
}
