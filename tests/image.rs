//! End to end: container images built with umoci (several layers, whiteouts, an opaque
//! directory, hard links into a lower layer, owners, modes, xattrs), pushed with skopeo to a real
//! registry on loopback, indexed with `thaw index image` from the registry, the OCI layout and a
//! docker-archive, mounted lazily and compared with what `umoci unpack` produces.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::oci::{oci_tools_available, run_tool, Layout, Registry};
use common::*;

/// Writes a tar with Python's tarfile: `script` adds members to `tar` (a TarFile open for
/// writing) with the helpers `add_dir(name)`, `add_file(name, data)`, `add_link(name, target)`.
fn python_tar(path: &Path, script: &str) {
    let program = format!(
        r#"
import io, tarfile, sys
tar = tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT)
def info(name, kind):
    t = tarfile.TarInfo(name); t.type = kind; t.mtime = 1700000000; t.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return t
def add_dir(name):
    tar.addfile(info(name, tarfile.DIRTYPE))
def add_file(name, data):
    t = info(name, tarfile.REGTYPE); t.size = len(data); tar.addfile(t, io.BytesIO(data))
def add_link(name, target):
    t = info(name, tarfile.LNKTYPE); t.linkname = target; tar.addfile(t)
def add_symlink(name, target):
    t = info(name, tarfile.SYMTYPE); t.linkname = target; tar.addfile(t)
{script}
tar.close()
"#
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(program)
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    xattr::set(path, name, value).unwrap();
}

/// Builds image `app` in a new layout under `root`: three layers with every change a runtime
/// must apply.
fn build_app(root: &Path) -> Layout {
    let layout = Layout::new(&root.join("layout"), "app");
    let bundle = root.join("bundle");
    layout.add_layer("app", &bundle, |rootfs| {
        for dir in [
            "etc/conf.d",
            "app/lib",
            "usr/bin",
            "home/user",
            "var/cache/old",
        ] {
            fs::create_dir_all(rootfs.join(dir)).unwrap();
        }
        fs::write(rootfs.join("etc/greeting"), b"hello\n").unwrap();
        fs::write(rootfs.join("etc/conf.d/a.conf"), b"a=1\n").unwrap();
        fs::write(rootfs.join("etc/conf.d/b.conf"), b"b=2\n").unwrap();
        fs::write(rootfs.join("app/main.py"), b"print('v1')\n").unwrap();
        fs::write(rootfs.join("app/big.bin"), random_bytes(3 << 20, 11)).unwrap();
        for i in 0..30 {
            fs::write(rootfs.join(format!("app/lib/m{i}.py")), text_bytes(1500, i)).unwrap();
        }
        fs::write(rootfs.join("usr/bin/tool"), b"#!/bin/sh\necho tool\n").unwrap();
        fs::set_permissions(
            rootfs.join("usr/bin/tool"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        fs::write(rootfs.join("usr/bin/setuid"), b"x").unwrap();
        fs::set_permissions(
            rootfs.join("usr/bin/setuid"),
            fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        std::os::unix::fs::symlink("main.py", rootfs.join("app/current")).unwrap();
        fs::hard_link(
            rootfs.join("usr/bin/tool"),
            rootfs.join("usr/bin/tool-alias"),
        )
        .unwrap();
        fs::write(rootfs.join("home/user/data"), b"mine").unwrap();
        std::os::unix::fs::chown(rootfs.join("home/user/data"), Some(1000), Some(1000)).unwrap();
        std::os::unix::fs::chown(rootfs.join("home/user"), Some(1000), Some(1000)).unwrap();
        set_xattr(&rootfs.join("app/main.py"), "user.thaw", b"kept");
        fs::write(rootfs.join("var/cache/old/junk"), b"junk").unwrap();
    });
    layout.add_layer("app", &bundle, |rootfs| {
        fs::remove_file(rootfs.join("etc/conf.d/b.conf")).unwrap();
        fs::remove_dir_all(rootfs.join("var/cache/old")).unwrap();
        fs::write(rootfs.join("app/main.py"), b"print('v2')\n").unwrap();
        fs::write(rootfs.join("app/new.txt"), b"new in layer 2\n").unwrap();
    });
    let tar = root.join("layer3.tar");
    python_tar(
        &tar,
        r#"
add_dir("etc/")
add_dir("etc/conf.d/")
add_file("etc/conf.d/.wh..wh..opq", b"")
add_file("etc/conf.d/c.conf", b"c=3\n")
add_file("etc/.wh.greeting", b"")
add_dir("app/")
add_link("app/new-link.txt", "app/new.txt")
"#,
    );
    layout.add_raw_layer("app", &tar);
    layout.configure(
        "app",
        &[
            "--config.cmd=/usr/bin/tool",
            "--config.env=MODE=test",
            "--config.workingdir=/app",
        ],
    );
    layout
}

fn index_json(w: &World, image: &str, tag: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["index", "image", image, "--tag", tag, "--json", "--quiet"];
    args.extend_from_slice(extra);
    serde_json::from_str(w.ok(&args).trim()).unwrap()
}

#[test]
fn an_image_mounts_exactly_as_umoci_unpacks_it() {
    if !oci_tools_available("image mount") || !fuse_available("image mount") || !is_root() {
        return;
    }
    let w = World::local();
    let layout = build_app(&w.path("build"));
    let report = index_json(&w, &format!("oci:{}", layout.image("app")), "app", &[]);
    assert_eq!(report["layers"], 3);
    assert_eq!(report["layers_reused"], 0);

    let reference = layout.unpack("app", &w.path("unpacked"));
    // The runtime's view: the whiteouts, the opaque directory and the links applied.
    assert!(!reference.join("etc/greeting").exists());
    assert!(!reference.join("etc/conf.d/a.conf").exists());
    assert!(reference.join("etc/conf.d/c.conf").exists());
    assert!(!reference.join("var/cache/old").exists());

    let mount = w.mount("app", &w.path("mnt"), &[]);
    assert_same_tree(&reference, &mount.dir);
    use std::os::unix::fs::MetadataExt;
    let new = fs::metadata(mount.dir.join("app/new.txt")).unwrap();
    let link = fs::metadata(mount.dir.join("app/new-link.txt")).unwrap();
    assert_eq!(
        new.ino(),
        link.ino(),
        "a hard link into a lower layer stays a link"
    );
    assert_eq!(
        xattr::get(mount.dir.join("app/main.py"), "user.thaw")
            .unwrap()
            .unwrap(),
        b"kept"
    );
    drop(mount);

    // The image config is kept with the manifest.
    let manifest = w.ok(&["stats", "app", "--json"]);
    assert!(!manifest.is_empty());
}

#[test]
fn registry_layout_and_archive_give_the_same_manifest_and_layers_are_indexed_once() {
    if !oci_tools_available("image sources") {
        return;
    }
    let build = World::local();
    let layout = build_app(&build.path("build"));
    let registry = Registry::start(&build.path("registry"), None);
    registry.push(&layout.dir, "app", "team/app", None);
    let archive = build.path("app.tar");
    run_tool(
        "skopeo",
        &[
            "copy",
            &format!("oci:{}", layout.image("app")),
            &format!("docker-archive:{}:team/app:app", archive.display()),
        ],
    );
    let sources = [
        format!("oci:{}", layout.image("app")),
        format!("docker://{}/team/app:app", registry.addr),
        format!("docker-archive:{}", archive.display()),
    ];
    let mut ids = Vec::new();
    for source in &sources {
        // A fresh store each time: the ids are computed independently.
        let w = World::local();
        let report = index_json(&w, source, "app", &["--insecure"]);
        assert_eq!(report["layers_reused"], 0, "{source}");
        ids.push(report["manifest"].as_str().unwrap().to_string());
    }
    assert!(ids.iter().all(|id| id == &ids[0]), "{sources:?} -> {ids:?}");

    // A second image on the same base: only its new layer is read.
    let w = World::local();
    index_json(&w, &sources[1], "app", &["--insecure"]);
    let bundle = build.path("bundle2");
    layout.add_layer("app", &bundle, |rootfs| {
        fs::write(rootfs.join("app/v3.txt"), b"third version\n").unwrap();
    });
    registry.push(&layout.dir, "app", "team/app", None);
    let second = index_json(&w, &sources[1], "app-v3", &["--insecure"]);
    assert_eq!(second["layers"], 4);
    assert_eq!(second["layers_reused"], 3, "{second}");
    assert!(second["bytes_read"].as_u64().unwrap() < 100, "{second}");
    assert_eq!(w.ok(&["cat", "app-v3", "app/v3.txt"]), "third version\n");
}
