//! The containerd remote snapshotter against a real containerd, a real registry and runc: an
//! image thaw indexed runs through `ctr run --snapshotter thaw` from lazy layers, with no layer
//! blob in containerd's content store and a small part of the image read from the store; a
//! container keeps reading its files while the snapshotter is killed and started again; an
//! image with a layer thaw does not hold is unpacked the ordinary way; and the snapshots API
//! keeps containerd's rules across a restart of the snapshotter.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use crate::common::oci::{copy_with_libraries, oci_tools_available, Layout, Registry};
use crate::common::*;

/// An image with sh, sleep, a greeting, 64 small files and a 32 MiB file nobody reads.
fn build_image(w: &World) -> Layout {
    let layout = Layout::new(&w.path("build/layout"), "app");
    layout.add_layer("app", &w.path("build/bundle"), |rootfs| {
        copy_with_libraries("/bin/sh", rootfs);
        copy_with_libraries("/bin/sleep", rootfs);
        fs::create_dir_all(rootfs.join("etc")).unwrap();
        fs::write(rootfs.join("etc/greeting"), b"hello through containerd\n").unwrap();
    });
    layout.add_layer("app", &w.path("build/bundle"), |rootfs| {
        fs::create_dir_all(rootfs.join("data")).unwrap();
        for i in 0..64 {
            fs::write(rootfs.join(format!("data/f{i}")), format!("file {i}\n")).unwrap();
        }
        let big: Vec<u8> = (0..32u32 << 20)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        fs::write(rootfs.join("data/unread.bin"), big).unwrap();
    });
    layout.configure(
        "app",
        &[
            "--config.entrypoint=/bin/sh",
            "--config.cmd=-c",
            "--config.cmd=read l < /etc/greeting; echo $l",
        ],
    );
    layout
}

/// The remote snapshots' lazy mounts: bytes each read from the store so far.
fn store_bytes_of_lazy_mounts(w: &World, root: &Path) -> u64 {
    let mut total = 0;
    for entry in fs::read_dir(root.join("lazy")).unwrap().flatten() {
        let out = w
            .thaw()
            .args(["mount", "status"])
            .arg(entry.path())
            .arg("--json")
            .output()
            .unwrap();
        if !out.status.success() {
            continue;
        }
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        total += status["store_bytes"].as_u64().unwrap_or(0);
    }
    total
}

#[test]
fn an_indexed_image_runs_through_ctr_from_lazy_layers_and_survives_a_snapshotter_kill() {
    let test = "ctr run --snapshotter thaw";
    if !containerd_available(test) || !oci_tools_available(test) || !fuse_available(test) {
        return;
    }
    let w = World::local();
    let layout = build_image(&w);
    let registry = Registry::start(&w.path("registry"), None);
    registry.push(&layout.dir, "app", "app", None);
    let image = format!("{}/app:app", registry.addr);
    w.ok(&[
        "index",
        "image",
        &format!("docker://{image}"),
        "--insecure",
        "--tag",
        "app",
    ]);

    let (socket, root) = (w.path("snap/thaw.sock"), w.path("snap/root"));
    let options = ["--mount-option=--fetch-all-below=0"];
    let snapshotter = Snapshotter::start(&w, &socket, &root, &options);
    let containerd = Containerd::start(&w.path("containerd"), &socket);
    let address = containerd.socket.display().to_string();
    let pulled = w.ok(&[
        "containerd",
        "pull",
        &image,
        "--insecure",
        "--address",
        &address,
    ]);
    assert!(pulled.contains("2 layers from thaw's store"), "{pulled}");

    // containerd's content store holds the manifest and the config, no layer blob.
    let content = containerd.ctr_ok(&["content", "ls", "-q"]);
    assert_eq!(content.lines().count(), 2, "{content}");
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(layout.dir.join("index.json")).unwrap()).unwrap();
    let digest = manifest["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.dir.join("blobs/sha256").join(digest)).unwrap())
            .unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let d = layer["digest"].as_str().unwrap();
        assert!(
            !content.contains(d),
            "layer blob {d} in the content store:\n{content}"
        );
    }

    let out = containerd
        .ctr(&["run", "--rm", "--snapshotter", "thaw", &image, "first"])
        .output()
        .unwrap();
    containerd.check(&out, &["run"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello through containerd\n"
    );
    let read = store_bytes_of_lazy_mounts(&w, &root);
    let image_bytes = 32u64 << 20;
    assert!(
        read > 0 && read < image_bytes / 4,
        "{read} bytes from the store of an {image_bytes}-byte image"
    );

    // A container reading a new file every 50 ms while the snapshotter is killed and started
    // again: its lazy layer is a daemon of its own, so no read fails.
    let script = "i=0; while [ $i -lt 64 ]; do read l < /data/f$i || exit 3; i=$((i+1)); sleep 0.05; done; echo read $l";
    let reader = containerd
        .ctr(&[
            "run",
            "--rm",
            "--snapshotter",
            "thaw",
            &image,
            "reader",
            "/bin/sh",
            "-c",
            script,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    snapshotter.kill();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let snapshotter = Snapshotter::start(&w, &socket, &root, &options);
    let out = reader.wait_with_output().unwrap();
    containerd.check(&out, &["run", "reader"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "read file 63\n");
    // The restarted snapshotter knows the image and runs it again.
    let out = containerd
        .ctr(&["run", "--rm", "--snapshotter", "thaw", &image, "again"])
        .output()
        .unwrap();
    containerd.check(&out, &["run", "again"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello through containerd\n"
    );

    // A layer thaw does not hold (added after indexing): `ctr image pull` fetches and unpacks it
    // into an ordinary snapshot over the lazy ones, and the container sees both.
    layout.add_layer("app", &w.path("build/bundle"), |rootfs| {
        fs::write(rootfs.join("etc/extra"), b"unpacked by containerd\n").unwrap();
    });
    registry.push(&layout.dir, "app", "app2", None);
    let image2 = format!("{}/app2:app", registry.addr);
    containerd.ctr_ok(&[
        "image",
        "pull",
        "--plain-http",
        "--snapshotter",
        "thaw",
        &image2,
    ]);
    let out = containerd
        .ctr(&[
            "run",
            "--rm",
            "--snapshotter",
            "thaw",
            &image2,
            "mixed",
            "/bin/sh",
            "-c",
            "read a < /etc/extra; read b < /etc/greeting; echo $a/$b",
        ])
        .output()
        .unwrap();
    containerd.check(&out, &["run", "mixed"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "unpacked by containerd/hello through containerd\n"
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("metadata.json")).unwrap()).unwrap();
    let snapshots = metadata["snapshots"].as_object().unwrap();
    let remote = snapshots
        .values()
        .filter(|s| s["layers"]["remote"].is_string())
        .count();
    assert_eq!(remote, 2, "{metadata}");
    assert!(snapshots.len() > remote, "no ordinary snapshot: {metadata}");

    // In a namespace where containerd has not unpacked it, the layer thaw does not hold makes
    // the pull fail, naming it.
    let err = w.fails(&[
        "containerd",
        "pull",
        &image2,
        "--insecure",
        "--address",
        &address,
        "-n",
        "fresh",
    ]);
    assert!(err.contains("not in thaw's store"), "{err}");
    drop(snapshotter);
    drop(containerd);
}

/// The gRPC code of a failed call, `None` for success.
fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Option<tonic::Code> {
    r.err().map(|s| s.code())
}

/// The snapshots API straight over gRPC, as containerd's snapshotter test suite drives it.
#[test]
fn the_snapshots_api_keeps_containerds_rules_across_a_restart() {
    use thaw_snapshotter::api::snapshots::{self as pb, snapshots_client::SnapshotsClient};
    let test = "snapshots API";
    if !is_root() || !fuse_available(test) {
        if !is_root() {
            thaw_sys::skip::skipped(test, "overlay mounts need root");
        }
        return;
    }
    let w = World::local();
    let (socket, root) = (w.path("snap/thaw.sock"), w.path("snap/root"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = |socket: &Path| {
        let channel = runtime
            .block_on(thaw_snapshotter::server::connect(socket))
            .unwrap();
        SnapshotsClient::new(channel)
    };
    let mount_all = |mounts: &[thaw_snapshotter::api::types::Mount], at: &Path| {
        fs::create_dir_all(at).unwrap();
        let m = &mounts[0];
        let status = std::process::Command::new("mount")
            .args(["-t", &m.r#type, &m.source])
            .arg(at)
            .args(["-o", &m.options.join(",")])
            .status()
            .unwrap();
        assert!(status.success(), "mount {m:?}");
    };
    let umount = |at: &Path| thaw_sys::mount::unmount(at, false).unwrap();
    let labels = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };

    let snapshotter = Snapshotter::start(&w, &socket, &root, &[]);
    let mut c = client(&socket);
    let prepare = |c: &mut SnapshotsClient<_>, key: &str, parent: &str| {
        runtime.block_on(c.prepare(pb::PrepareSnapshotRequest {
            snapshotter: "thaw".into(),
            key: key.into(),
            parent: parent.into(),
            labels: labels(&[("l", key)]),
        }))
    };
    let mounts = prepare(&mut c, "a", "").unwrap().into_inner().mounts;
    let at = w.path("mnt");
    mount_all(&mounts, &at);
    fs::write(at.join("base-file"), b"base").unwrap();
    fs::write(at.join("gone"), b"x").unwrap();
    umount(&at);
    runtime
        .block_on(c.commit(pb::CommitSnapshotRequest {
            snapshotter: "thaw".into(),
            name: "base".into(),
            key: "a".into(),
            labels: labels(&[("committed", "yes")]),
        }))
        .unwrap();
    assert_eq!(code(prepare(&mut c, "b", "a")), Some(tonic::Code::NotFound));
    assert_eq!(
        code(prepare(&mut c, "base", "")),
        Some(tonic::Code::AlreadyExists)
    );

    // A restart between steps: the chain is still there and still mounts.
    snapshotter.kill();
    let snapshotter = Snapshotter::start(&w, &socket, &root, &[]);
    let mut c = client(&socket);
    let mounts = prepare(&mut c, "b", "base").unwrap().into_inner().mounts;
    assert_eq!(mounts[0].r#type, "overlay");
    mount_all(&mounts, &at);
    assert_eq!(fs::read(at.join("base-file")).unwrap(), b"base");
    fs::remove_file(at.join("gone")).unwrap();
    fs::write(at.join("top-file"), b"top").unwrap();
    umount(&at);
    runtime
        .block_on(c.commit(pb::CommitSnapshotRequest {
            snapshotter: "thaw".into(),
            name: "top".into(),
            key: "b".into(),
            labels: HashMap::new(),
        }))
        .unwrap();
    let view = runtime
        .block_on(c.view(pb::ViewSnapshotRequest {
            snapshotter: "thaw".into(),
            key: "v".into(),
            parent: "top".into(),
            labels: HashMap::new(),
        }))
        .unwrap()
        .into_inner()
        .mounts;
    mount_all(&view, &at);
    assert_eq!(fs::read(at.join("top-file")).unwrap(), b"top");
    assert_eq!(fs::read(at.join("base-file")).unwrap(), b"base");
    assert!(
        !at.join("gone").exists(),
        "a file removed in the top layer shows through"
    );
    assert!(
        fs::write(at.join("nope"), b"x").is_err(),
        "a view is writable"
    );
    umount(&at);

    let stat = |c: &mut SnapshotsClient<_>, key: &str| {
        runtime.block_on(c.stat(pb::StatSnapshotRequest {
            snapshotter: "thaw".into(),
            key: key.into(),
        }))
    };
    let info = stat(&mut c, "top").unwrap().into_inner().info.unwrap();
    assert_eq!(
        (info.parent.as_str(), info.kind),
        ("base", pb::Kind::Committed as i32)
    );
    assert_eq!(
        code(stat(&mut c, "no-such-key")),
        Some(tonic::Code::NotFound)
    );
    let usage = runtime
        .block_on(c.usage(pb::UsageRequest {
            snapshotter: "thaw".into(),
            key: "base".into(),
        }))
        .unwrap()
        .into_inner();
    assert!(usage.size >= 4 && usage.inodes >= 3, "{usage:?}");
    let updated = runtime
        .block_on(c.update(pb::UpdateSnapshotRequest {
            snapshotter: "thaw".into(),
            info: Some(pb::Info {
                name: "base".into(),
                labels: labels(&[("extra", "1")]),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["labels.extra".into()],
            }),
        }))
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(
        updated.labels,
        labels(&[("committed", "yes"), ("extra", "1")])
    );
    let list = |c: &mut SnapshotsClient<_>, filter: &str| -> Vec<String> {
        let mut stream = runtime
            .block_on(c.list(pb::ListSnapshotsRequest {
                snapshotter: "thaw".into(),
                filters: vec![filter.into()],
            }))
            .unwrap()
            .into_inner();
        let mut names = Vec::new();
        while let Some(batch) = runtime.block_on(stream.message()).unwrap() {
            names.extend(batch.info.into_iter().map(|i| i.name));
        }
        names.sort();
        names
    };
    assert_eq!(list(&mut c, ""), vec!["base", "top", "v"]);
    assert_eq!(
        list(&mut c, "kind==committed,labels.extra==1"),
        vec!["base"]
    );
    assert_eq!(list(&mut c, r#"parent=="top""#), vec!["v"]);

    let remove = |c: &mut SnapshotsClient<_>, key: &str| {
        runtime.block_on(c.remove(pb::RemoveSnapshotRequest {
            snapshotter: "thaw".into(),
            key: key.into(),
        }))
    };
    assert_eq!(
        code(remove(&mut c, "base")),
        Some(tonic::Code::FailedPrecondition)
    );
    for key in ["v", "top", "base"] {
        remove(&mut c, key).unwrap();
    }
    assert!(list(&mut c, "").is_empty());
    assert_eq!(
        fs::read_dir(root.join("snapshots")).unwrap().count(),
        0,
        "directories left behind"
    );
    drop(snapshotter);
}
