//! End to end: `thaw weights load` streams a model indexed into a real local store into host
//! memory (and into a GPU where one is present), compared tensor by tensor with the files; bad
//! headers are refused naming the file and tensor.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::common::*;

/// A two-file model (tensors that straddle the 4 MiB chunks, odd sizes, an empty tensor) plus
/// a config file; returns "file:tensor" -> blake3.
fn two_file_model(dir: &Path) -> BTreeMap<String, String> {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("config.json"), br#"{"hidden_size": 1024}"#).unwrap();
    let mut all = BTreeMap::new();
    let files: [(&str, Vec<Tensor>); 2] = [
        (
            "model-00001-of-00002.safetensors",
            vec![
                (
                    "embed.weight",
                    "BF16",
                    vec![1500, 1024],
                    random_bytes(3_072_000, 1),
                ),
                ("layers.0.norm", "F32", vec![1024], random_bytes(4096, 2)),
                (
                    "layers.0.mlp",
                    "F16",
                    vec![2048, 1999],
                    random_bytes(8_187_904, 3),
                ),
                ("empty", "F32", vec![0], Vec::new()),
                ("scale", "U8", vec![3], random_bytes(3, 4)),
            ],
        ),
        (
            "model-00002-of-00002.safetensors",
            vec![(
                "lm_head.weight",
                "F32",
                vec![1024, 1500],
                random_bytes(6_144_000, 5),
            )],
        ),
    ];
    for (file, tensors) in files {
        for (name, digest) in write_safetensors(&dir.join(file), &tensors) {
            all.insert(format!("{file}:{name}"), digest);
        }
    }
    all
}

fn load_json(w: &World, tag: &str, device: &str) -> serde_json::Value {
    let out = w.ok(&[
        "weights",
        "load",
        tag,
        "--device",
        device,
        "--json",
        "--digests",
        "--lanes",
        "3",
    ]);
    serde_json::from_str(&out).unwrap()
}

fn loaded_digests(report: &serde_json::Value) -> BTreeMap<String, String> {
    report["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                format!(
                    "{}:{}",
                    t["file"].as_str().unwrap(),
                    t["name"].as_str().unwrap()
                ),
                t["blake3"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_model_streams_into_host_memory_byte_for_byte_then_warm_from_the_cache() {
    let w = World::local();
    let model = w.path("model");
    let expected = two_file_model(&model);
    w.index("model", &model, "m", &[]);

    let cold = load_json(&w, "m", "cpu");
    assert_eq!(loaded_digests(&cold), expected);
    let report = &cold["report"];
    assert_eq!(report["files"], 2);
    assert_eq!(report["tensors"], 6);
    let tensor_bytes: u64 = 3_072_000 + 4096 + 8_187_904 + 3 + 6_144_000;
    assert_eq!(report["tensor_bytes"], tensor_bytes);
    for t in cold["tensors"].as_array().unwrap() {
        assert_eq!(t["offset"].as_u64().unwrap() % 256, 0, "{t}");
    }
    // Cold: the tensor chunks came from the store (the header chunks were already cached by
    // the header reads), each once.
    let store_chunks = report["sources"]["store_chunks"].as_u64().unwrap();
    let chunks = report["chunks"].as_u64().unwrap();
    assert!(store_chunks >= 1 && store_chunks <= chunks, "{report}");
    assert!(cold["reference"]["bytes"].as_u64().unwrap() == tensor_bytes);
    assert!(cold["ratio_to_reference"].as_f64().unwrap() > 0.0);

    // Warm: the same bytes, nothing from the store.
    let warm = load_json(&w, "m", "cpu");
    assert_eq!(loaded_digests(&warm), expected);
    assert_eq!(
        warm["report"]["sources"]["store_chunks"], 0,
        "{}",
        warm["report"]
    );

    // Warm chunks are read from the disk cache's files straight into place: disk hits.
    let disk_hits = warm["report"]["sources"]["cache_hits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|hit| hit[0] == "disk")
        .map(|hit| hit[1].as_u64().unwrap());
    assert_eq!(disk_hits, Some(chunks), "{}", warm["report"]);

    // After an unclean shutdown the cache files are not trusted: a byte rotted in one of them
    // is caught while it is read into place, the file dropped and the chunk fetched again.
    let cache = w.path("cache");
    // A tensor chunk, not a file's first chunk: headers are read (and a rotted one replaced)
    // through the tiers before streaming starts.
    let chunks = cache.join("chunks");
    let victim = files_under(&chunks)
        .into_iter()
        .map(|f| chunks.join(f))
        .filter(|p| fs::read(p).unwrap().get(8) != Some(&b'{'))
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .expect("a tensor chunk in the cache");
    let mut bytes = fs::read(&victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    fs::write(&victim, &bytes).unwrap();
    fs::write(cache.join("in-use"), "1").unwrap();
    let after_crash = load_json(&w, "m", "cpu");
    assert_eq!(loaded_digests(&after_crash), expected);
    assert_eq!(after_crash["report"]["sources"]["store_chunks"], 1);
    let kept = fs::read(&victim).unwrap();
    assert_ne!(
        kept, bytes,
        "the rotten copy was dropped (and the fetched chunk kept)"
    );

    // The table names both rows and a ratio.
    let table = w.ok(&["weights", "load", "m", "--device", "cpu", "--quiet"]);
    assert!(table.contains("thaw tiers -> cpu"), "{table}");
    assert!(table.contains("host memcpy"), "{table}");
    assert!(table.contains("1.00x"), "{table}");
}

#[test]
fn lying_headers_are_refused_naming_the_file_and_tensor() {
    let w = World::local();
    let cases: [(&str, &[u8], u64, &str); 5] = [
        (
            "past-end",
            br#"{"w":{"dtype":"F32","shape":[1024],"data_offsets":[0,4096]}}"#,
            100,
            "past-end.safetensors: tensor w.data_offsets",
        ),
        (
            "overlap",
            br#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#,
            24,
            "overlap.safetensors: tensor b.data_offsets",
        ),
        (
            "dtype",
            br#"{"q":{"dtype":"Q4_K","shape":[4],"data_offsets":[0,2]}}"#,
            2,
            "dtype.safetensors: tensor q.dtype",
        ),
        (
            "shape",
            br#"{"s":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#,
            16,
            "shape.safetensors: tensor s.data_offsets",
        ),
        ("big-header", b"", 0, "big-header.safetensors: header length"),
    ];
    for (name, header, data_len, expected) in cases {
        let dir = w.path(name);
        fs::create_dir_all(&dir).unwrap();
        let mut file = if name == "big-header" {
            // Claims a 1 MiB header in a 64-byte file.
            let mut f = (1u64 << 20).to_le_bytes().to_vec();
            f.extend_from_slice(&[b'{'; 56]);
            f
        } else {
            let mut f = (header.len() as u64).to_le_bytes().to_vec();
            f.extend_from_slice(header);
            f
        };
        file.extend(random_bytes(data_len as usize, 9));
        fs::write(dir.join(format!("{name}.safetensors")), &file).unwrap();
        // `index dir` stores any file as it is; the loader must check the header itself.
        w.index("dir", &dir, name, &[]);
        let err = w.fails(&["weights", "load", name, "--device", "cpu", "--quiet"]);
        assert!(err.contains(expected), "{name}: {err}");
    }
    let dir = w.path("no-model");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("README"), b"hello").unwrap();
    w.index("dir", &dir, "no-model", &[]);
    let err = w.fails(&["weights", "load", "no-model", "--device", "cpu"]);
    assert!(err.contains("no-model: no .safetensors files"), "{err}");
    let err = w.fails(&["weights", "load", "no-model", "--device", "tpu"]);
    assert!(err.contains("expected cpu, cuda or cuda:N"), "{err}");
}

/// On a machine with a GPU the same model goes into device memory and reads back identical;
/// elsewhere the command refuses with the reason, and the GPU half is skipped visibly.
#[test]
fn a_model_streams_into_gpu_memory_where_a_gpu_exists() {
    let w = World::local();
    let model = w.path("model");
    let expected = two_file_model(&model);
    w.index("model", &model, "m", &[]);
    let probe = w
        .thaw()
        .args([
            "weights",
            "load",
            "m",
            "--device",
            "cuda:0",
            "--quiet",
            "--no-reference",
        ])
        .output()
        .unwrap();
    assert_no_panic(&probe);
    let stderr = String::from_utf8_lossy(&probe.stderr);
    if !probe.status.success() && stderr.contains("no CUDA driver") {
        thaw_sys::skip::skipped(
            "weights load --device cuda",
            "no CUDA driver on this machine",
        );
        return;
    }
    assert!(probe.status.success(), "{}", describe(&probe));
    let loaded = load_json(&w, "m", "cuda:0");
    assert_eq!(loaded_digests(&loaded), expected);
    assert_eq!(loaded["reference"]["name"], "pinned H2D copy");
}
