//! `thaw bench coldstart` on a tiny image from a real registry (every path run, its output, its
//! byte counts and table checked) and `thaw bench utilisation` with the shipped bursty trace.

use std::fs;
use std::path::Path;

use crate::common::oci::{copy_with_libraries, oci_tools_available, Layout, Registry};
use crate::common::*;

fn trace() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/traces/bursty.csv")
        .display()
        .to_string()
}

/// `bench utilisation --coldstart-json COLDSTART --trace TRACE EXTRA...`
fn utilisation<'a>(coldstart: &'a Path, trace: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "bench",
        "utilisation",
        "--coldstart-json",
        coldstart.to_str().unwrap(),
        "--trace",
        trace,
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn faster_cold_starts_give_higher_utilisation_and_shorter_waits() {
    let w = World::local();
    let coldstart = w.path("coldstart.json");
    fs::write(
        &coldstart,
        r#"{"paths": [{"name": "naive", "ready_seconds": 33.1}, {"name": "lazy", "ready_seconds": 1.5}, {"name": "snapshot", "ready_seconds": 0.4}]}"#,
    )
    .unwrap();
    let trace = trace();
    let out = w.ok(&utilisation(
        &coldstart,
        &trace,
        &["--idle-timeout", "10", "--json"],
    ));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let requests = fs::read_to_string(&trace).unwrap().lines().count() - 1;
    assert_eq!(json["requests"], requests);
    let paths = json["paths"].as_array().unwrap();
    assert_eq!(paths.len(), 3);
    let busy = paths[0]["gpu_seconds_busy"].as_f64().unwrap();
    for pair in paths.windows(2) {
        let (slow, fast) = (&pair[0], &pair[1]);
        assert!(
            fast["utilisation"].as_f64() > slow["utilisation"].as_f64(),
            "{json}"
        );
        assert!(
            fast["p99_delay"].as_f64() < slow["p99_delay"].as_f64(),
            "{json}"
        );
        // The same work, whatever the cold start.
        assert!((fast["gpu_seconds_busy"].as_f64().unwrap() - busy).abs() < 1e-6);
    }
    for p in paths {
        let utilisation = p["utilisation"].as_f64().unwrap();
        assert!(utilisation > 0.0 && utilisation < 1.0, "{p}");
        // Nobody waits longer than a cold start when replicas are unlimited.
        let ready = p["ready_seconds"].as_f64().unwrap();
        assert!(p["max_delay"].as_f64().unwrap() <= ready + 1e-6, "{p}");
    }

    let table = w.ok(&utilisation(&coldstart, &trace, &[]));
    assert!(
        table.contains("utilisation") && table.contains("snapshot"),
        "{table}"
    );
}

#[test]
fn bad_traces_and_results_are_refused_naming_file_and_line() {
    let w = World::local();
    let coldstart = w.path("coldstart.json");
    fs::write(
        &coldstart,
        r#"{"paths": [{"name": "x", "ready_seconds": 1}]}"#,
    )
    .unwrap();
    let bad_trace = w.path("bad.csv");
    let bad = bad_trace.to_str().unwrap();
    fs::write(&bad_trace, "arrival_s,service_s\n1.0,2.0\n3.0,-1\n").unwrap();
    let err = w.fails(&utilisation(&coldstart, bad, &[]));
    assert!(err.contains("bad.csv: line 3"), "{err}");
    fs::write(&bad_trace, "time,duration\n1,2\n").unwrap();
    let err = w.fails(&utilisation(&coldstart, bad, &[]));
    assert!(err.contains("arrival_s,service_s"), "{err}");
    fs::write(&coldstart, r#"{"paths": [{"name": "x"}]}"#).unwrap();
    let err = w.fails(&utilisation(&coldstart, &trace(), &[]));
    assert!(err.contains("paths[0].ready_seconds"), "{err}");
}

/// Whether an OCI runtime is installed; says so when not.
fn runtime_available(test: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", "command -v crun || command -v runc"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        thaw_sys::skip::skipped(test, "no crun or runc");
    }
    found
}

/// Whether criu and runc are installed (the snapshot path checkpoints the container with them).
fn criu_and_runc_installed() -> bool {
    std::process::Command::new("sh")
        .args([
            "-c",
            "(command -v criu || test -x /usr/local/sbin/criu || test -x /usr/sbin/criu) && command -v runc",
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Total size of the regular files under `dir`.
fn file_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                file_bytes(&e.path())
            } else if t.is_file() {
                e.metadata().unwrap().len()
            } else {
                0
            }
        })
        .sum()
}

/// Bytes a pull of `tag` from `layout` moves: its manifest, config and layers.
fn image_bytes(layout: &Path, tag: &str) -> u64 {
    let blob = |digest: &str| {
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap();
    let digest = manifest["digest"].as_str().unwrap();
    let body: serde_json::Value = serde_json::from_slice(&fs::read(blob(digest)).unwrap()).unwrap();
    let parts = body["layers"]
        .as_array()
        .unwrap()
        .iter()
        .chain([&body["config"]])
        .map(|d| d["size"].as_u64().unwrap())
        .sum::<u64>();
    parts + manifest["size"].as_u64().unwrap()
}

const GREETING: &str = "hello from the image";

#[test]
fn coldstart_measures_every_path_of_a_tiny_image_from_a_registry() {
    let test = "bench coldstart";
    if !oci_tools_available(test) || !fuse_available(test) || !is_root() || !runtime_available(test)
    {
        return;
    }
    let w = World::local();
    let layout = Layout::new(&w.path("build/layout"), "tiny");
    let model_bytes = 6u64 << 20;
    layout.add_layer("tiny", &w.path("build/bundle"), |rootfs| {
        for binary in ["/bin/sh", "/bin/cat", "/bin/sleep"] {
            copy_with_libraries(binary, rootfs);
        }
        fs::create_dir_all(rootfs.join("app")).unwrap();
        fs::create_dir_all(rootfs.join("etc")).unwrap();
        fs::write(rootfs.join("etc/greeting"), format!("{GREETING}\n")).unwrap();
        fs::write(rootfs.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        fs::write(
            rootfs.join("app/model.bin"),
            random_bytes(model_bytes as usize, 11),
        )
        .unwrap();
    });
    layout.configure(
        "tiny",
        &[
            "--config.entrypoint=/bin/sh",
            "--config.cmd=-c",
            "--config.cmd=echo the image's own command",
            "--config.workingdir=/app",
        ],
    );
    let unpacked_bytes = file_bytes(&layout.unpack("tiny", &w.path("build/check")));
    let pulled_bytes = image_bytes(&layout.dir, "tiny");
    let registry = Registry::start(&w.path("registry"), None);
    registry.push(&layout.dir, "tiny", "bench/tiny", None);
    let image = format!("docker://{}/bench/tiny:tiny", registry.addr);

    // A server-like command: it reads its model, says hello, marks itself ready and stays up.
    let svg = w.path("coldstart.svg");
    let work = w.path("bench-work");
    let out = w.ok(&[
        "bench",
        "coldstart",
        &image,
        "--insecure",
        "--ready-file",
        "/app/ready",
        "--expect-output",
        GREETING,
        "--json",
        "--plot",
        svg.to_str().unwrap(),
        "--work-dir",
        work.to_str().unwrap(),
        "--",
        "-c",
        "cat /app/model.bin > /dev/null; read g < /etc/greeting; echo \"$g\"; echo ok > /app/ready; exec sleep 600",
    ]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let paths = json["paths"].as_array().unwrap();
    let names: Vec<&str> = paths.iter().map(|p| p["name"].as_str().unwrap()).collect();
    let mut expected = vec![
        "naive",
        "thaw-first",
        "thaw-lazy",
        "thaw-trace",
        "thaw-peer",
    ];
    if criu_and_runc_installed() {
        expected.push("thaw-snapshot");
    } else {
        assert_eq!(json["skipped"][0]["name"], "thaw-snapshot", "{json}");
    }
    assert_eq!(names, expected, "{json}");
    let naive_seconds = paths[0]["ready_seconds"].as_f64().unwrap();
    for path in paths {
        let name = path["name"].as_str().unwrap();
        // Every path ran the command given after `--`, not the image's own.
        let output = path["output"].as_str().unwrap();
        assert!(output.contains(GREETING), "{name} printed {output:?}");
        assert!(!output.contains("own command"), "{name} printed {output:?}");
        // The stages add up to the start.
        let stages = &path["stages_seconds"];
        let sum: f64 = ["fetch", "mount", "start", "ready"]
            .iter()
            .map(|s| {
                let v = stages[s].as_f64().unwrap();
                assert!(v >= 0.0, "{name}: {s} = {v}");
                v
            })
            .sum();
        let total = path["ready_seconds"].as_f64().unwrap();
        assert!(
            (sum - total).abs() < 1e-6,
            "{name}: stages {sum} vs {total}"
        );
        let ratio = path["speedup_vs_naive"].as_f64().unwrap();
        assert!((ratio - naive_seconds / total).abs() < 1e-6, "{name}");
        // Where the bytes came from.
        let bytes = &path["bytes"];
        let (registry, store, peers) = (
            bytes["registry"].as_u64().unwrap(),
            bytes["store"].as_u64().unwrap(),
            bytes["peers"].as_u64().unwrap(),
        );
        assert_eq!(
            path["bytes_total"].as_u64().unwrap(),
            registry + store + peers
        );
        match name {
            // The whole image, exactly as the registry holds it.
            "naive" => assert_eq!((registry, store, peers), (pulled_bytes, 0, 0), "{json}"),
            // Everything the command read (the model at least), never more than the image.
            "thaw-first" | "thaw-lazy" | "thaw-trace" => {
                assert_eq!((registry, peers), (0, 0), "{name}: {json}");
                assert!(
                    store >= model_bytes && store <= unpacked_bytes,
                    "{name}: {json}"
                );
            }
            // The warm peer delivers it all; the object store is not asked.
            "thaw-peer" => {
                assert_eq!((registry, store), (0, 0), "{json}");
                assert!(peers >= model_bytes && peers <= unpacked_bytes, "{json}");
            }
            // The process images come from the store; the model is never read again.
            "thaw-snapshot" => {
                assert_eq!((registry, peers), (0, 0), "{json}");
                assert!(store > 0, "{json}");
            }
            other => panic!("unexpected path {other}"),
        }
    }
    assert_eq!(paths[0]["speedup_vs_naive"], 1.0);
    let plot = fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg"), "{plot}");
    for label in [
        "naive: pull + unpack + run",
        "thaw: + warm peer cache",
        "process start",
    ] {
        assert!(plot.contains(label), "the plot lacks {label}");
    }
    // Nothing is left mounted or running.
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        !mounts.contains(&w.path("").display().to_string()),
        "{mounts}"
    );

    // The result feeds the utilisation model as it is.
    let coldstart = w.path("coldstart.json");
    fs::write(&coldstart, &out).unwrap();
    let trace = trace();
    let model = w.ok(&utilisation(&coldstart, &trace, &["--json"]));
    let model: serde_json::Value = serde_json::from_str(&model).unwrap();
    assert_eq!(model["paths"].as_array().unwrap().len(), paths.len());

    // The table; a command whose readiness is its exit; a path that cannot be snapshotted.
    let table = w.ok(&[
        "bench",
        "coldstart",
        &image,
        "--insecure",
        "--paths",
        "lazy,snapshot",
        "--",
        "-c",
        "cat /etc/greeting",
    ]);
    let header = table
        .lines()
        .find(|l| l.starts_with("PATH"))
        .unwrap_or_else(|| panic!("no header in {table}"));
    let columns: Vec<&str> = header
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        columns,
        [
            "PATH",
            "FETCH",
            "UNPACK/MOUNT",
            "PROCESS START",
            "TO READY",
            "TOTAL",
            "VS NAIVE",
            "FROM REGISTRY",
            "FROM STORE",
            "FROM PEERS"
        ],
        "{table}"
    );
    let lazy = table
        .lines()
        .find(|l| l.starts_with("thaw: lazy mount, cold cache"))
        .unwrap_or_else(|| panic!("no lazy row in {table}"));
    assert_eq!(lazy.split_whitespace().count(), 15, "{lazy}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("thaw: snapshot restore")
                && l.contains("skipped: readiness is the command's exit")),
        "{table}"
    );
    assert!(
        table.contains("ready when the command exits with status 0"),
        "{table}"
    );

    // A command that does not print what is expected fails, naming the path.
    let err = w.fails(&[
        "bench",
        "coldstart",
        &image,
        "--insecure",
        "--paths",
        "lazy",
        "--expect-output",
        "goodbye",
        "--",
        "-c",
        "cat /etc/greeting",
    ]);
    assert!(
        err.contains("thaw: lazy mount, cold cache")
            && err.contains("goodbye")
            && err.contains(GREETING),
        "{err}"
    );
}
