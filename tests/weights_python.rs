//! The Python module (weights/python): built by cargo, loaded by python3, it streams a model
//! from a real local store and hands every tensor to NumPy through DLPack, compared byte for byte
//! with the files (and to torch on cuda:0 where a GPU exists).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// Builds the extension into the target dir the tests run from and copies it to `dir` as
/// `thaw_weights.so`, so `import thaw_weights` finds it.
/// `THAW_WEIGHTS_PY_MODULE` names a prebuilt module instead (a machine without a toolchain,
/// such as the GPU machine benches/gpu.sh runs on).
fn build_module(dir: &Path) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let module = dir.join("thaw_weights.so");
    if let Some(prebuilt) = std::env::var_os("THAW_WEIGHTS_PY_MODULE") {
        fs::copy(&prebuilt, &module).unwrap();
        return module;
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_thaw"));
    let profile_dir = bin.parent().unwrap();
    let target_dir = profile_dir.parent().unwrap();
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args([
        "build",
        "-p",
        "thaw-weights-py",
        "--jobs",
        "2",
        "--target-dir",
    ]);
    cargo.arg(target_dir);
    if profile_dir.file_name().unwrap() == "release" {
        cargo.arg("--release");
    }
    let out = cargo.output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    fs::copy(profile_dir.join("libthaw_weights.so"), &module).unwrap();
    module
}

fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn python_receives_every_tensor_through_dlpack() {
    if !python_has("numpy") {
        thaw_sys::skip::skipped(
            "python DLPack",
            "python3 has no numpy (scripts/setup installs it)",
        );
        return;
    }
    let w = World::local();
    let model = w.path("model");
    fs::create_dir_all(&model).unwrap();
    let bools: Vec<u8> = random_bytes(999, 7).iter().map(|b| b & 1).collect();
    write_safetensors(
        &model.join("model-00001-of-00002.safetensors"),
        &[
            ("w", "F32", vec![1024, 1500], random_bytes(6_144_000, 1)),
            ("half", "F16", vec![33, 7], random_bytes(462, 2)),
            ("bf", "BF16", vec![4096], random_bytes(8192, 3)),
        ],
    );
    write_safetensors(
        &model.join("model-00002-of-00002.safetensors"),
        &[
            ("ids", "I64", vec![5, 100], random_bytes(4000, 4)),
            ("mask", "BOOL", vec![999], bools),
            ("bytes", "U8", vec![3_000_001], random_bytes(3_000_001, 5)),
        ],
    );
    w.index("model", &model, "m", &[]);
    let module_dir = w.path("python");
    build_module(&module_dir);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/python/tests/check_module.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg("m")
        .arg(&model)
        .env("PYTHONPATH", &module_dir)
        .env("THAW_STORE", &w.store)
        .env("THAW_CACHE_DIR", w.path("cache"))
        .output()
        .unwrap();
    let text = describe(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("cpu: 6 tensors equal (5 through numpy DLPack)"),
        "{text}"
    );
    if text.contains("SKIPPED") {
        thaw_sys::skip::skipped(
            "python DLPack on cuda:0",
            "torch with CUDA is not available",
        );
    }
}

#[test]
fn the_module_reads_the_configuration_thaw_reads() {
    let w = World::local();
    let module_dir = w.path("python");
    build_module(&module_dir);
    let home = w.path("home");
    fs::create_dir_all(home.join(".config/thaw")).unwrap();
    fs::write(
        home.join(".config/thaw/config.toml"),
        "[store]\nurl = \"/from/the/file\"\ns3_allow_http = true\n[cache]\nmemory_bytes = \"1MiB\"\n\
         [runtime]\ndir = \"/run/from-file\"\n[peers]\nlist = \"http://file-peer:7070\"\n",
    )
    .unwrap();
    let show = |env: &[(&str, &str)]| -> serde_json::Value {
        let mut command = Command::new("python3");
        command
            .args([
                "-c",
                "import json, thaw_weights; print(json.dumps(thaw_weights.config()))",
            ])
            .env("PYTHONPATH", &module_dir)
            .env("HOME", &home)
            .env_remove("XDG_CONFIG_HOME");
        for name in thaw_client::variable_names() {
            command.env_remove(name);
        }
        command.env_remove("THAW_CONFIG");
        for (k, v) in env {
            command.env(k, v);
        }
        let out = command.output().unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // The config file alone.
    let config = show(&[]);
    assert_eq!(config["store"]["url"], "/from/the/file");
    assert_eq!(config["store"]["s3_allow_http"], true);
    assert_eq!(config["cache"]["memory_bytes"], 1 << 20);
    assert_eq!(config["runtime"]["dir"], "/run/from-file");
    assert_eq!(config["peers"]["list"], "http://file-peer:7070");
    // The environment beats the file; "false" is false.
    let config = show(&[
        ("THAW_S3_ALLOW_HTTP", "false"),
        ("THAW_NO_DISK_CACHE", "1"),
        ("THAW_CACHE_BYTES", "1GiB"),
        ("THAW_PEERS", "http://env-peer:7070"),
        ("THAW_PEER_REFRESH_SECS", "3"),
    ]);
    assert_eq!(config["store"]["s3_allow_http"], false);
    assert_eq!(config["cache"]["disk"], false);
    assert_eq!(config["cache"]["bytes"], 1u64 << 30);
    assert_eq!(config["peers"]["list"], "http://env-peer:7070");
    assert_eq!(config["peers"]["refresh_secs"], 3);
    assert_eq!(config["store"]["url"], "/from/the/file");
    // An empty THAW_CONFIG reads no file.
    let config = show(&[("THAW_CONFIG", "")]);
    assert_eq!(config["store"]["url"], serde_json::Value::Null);

    // A load with THAW_NO_DISK_CACHE leaves the disk cache alone.
    let model = w.path("model");
    fs::create_dir_all(&model).unwrap();
    write_safetensors(
        &model.join("model.safetensors"),
        &[("w", "F32", vec![256], random_bytes(1024, 9))],
    );
    w.index("model", &model, "m", &[]);
    let cache = w.path("python-cache");
    let out = Command::new("python3")
        .args([
            "-c",
            "import thaw_weights; m = thaw_weights.load('m', device='cpu'); print(len(m))",
        ])
        .env("PYTHONPATH", &module_dir)
        .env("HOME", &home)
        .env("THAW_CONFIG", "")
        .env("THAW_STORE", &w.store)
        .env("THAW_CACHE_DIR", &cache)
        .env("THAW_NO_DISK_CACHE", "true")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    assert!(
        !cache.exists(),
        "THAW_NO_DISK_CACHE still opened {}",
        cache.display()
    );
}
