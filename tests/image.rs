//! End to end: container images built with umoci (several layers, whiteouts, an opaque
//! directory, hard links into a lower layer, owners, modes, xattrs), pushed with skopeo to a real
//! registry on loopback, indexed with `thaw index image` from the registry, the OCI layout and a
//! docker-archive, mounted lazily and compared with what `umoci unpack` produces.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::common::oci::{copy_with_libraries, oci_tools_available, run_tool, Layout, Registry};
use crate::common::*;

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

/// Adds tag `multi` to the layout: an image index holding `amd64` (tag `app`) and `arm64`.
fn make_index(layout: &Layout, entries: &[(&str, &str)], tag: &str) {
    let script = r#"
import hashlib, json, os, sys
layout, tag, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]
index = json.load(open(os.path.join(layout, "index.json")))
by_tag = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in index["manifests"]}
manifests = []
for pair in pairs:
    image, arch = pair.split("=")
    m = dict(by_tag[image]); m.pop("annotations", None)
    m["platform"] = {"architecture": arch, "os": "linux"}
    manifests.append(m)
blob = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}).encode()
digest = hashlib.sha256(blob).hexdigest()
open(os.path.join(layout, "blobs/sha256", digest), "wb").write(blob)
index["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": "sha256:" + digest, "size": len(blob), "annotations": {"org.opencontainers.image.ref.name": tag}})
json.dump(index, open(os.path.join(layout, "index.json"), "w"))
"#;
    let mut args = vec![
        "-c".to_string(),
        script.to_string(),
        layout.dir.display().to_string(),
        tag.to_string(),
    ];
    args.extend(
        entries
            .iter()
            .map(|(image, arch)| format!("{image}={arch}")),
    );
    let out = Command::new("python3").args(&args).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn a_multi_platform_index_gives_the_platform_asked_for() {
    if !oci_tools_available("image platforms") {
        return;
    }
    let w = World::local();
    let layout = build_app(&w.path("build"));
    run_tool("umoci", &["new", "--image", &layout.image("arm")]);
    layout.add_layer("arm", &w.path("bundle-arm"), |rootfs| {
        fs::write(rootfs.join("arch.txt"), b"arm64\n").unwrap();
    });
    layout.configure("arm", &["--architecture=arm64"]);
    make_index(&layout, &[("app", "amd64"), ("arm", "arm64")], "multi");
    let registry = Registry::start(&w.path("registry"), None);
    registry.push(&layout.dir, "multi", "team/multi", None);
    let image = format!("docker://{}/team/multi:multi", registry.addr);

    let amd = index_json(&w, &image, "multi-amd", &["--insecure"]);
    let amd_from_layout = index_json(&w, &format!("oci:{}", layout.image("app")), "app", &[]);
    assert_eq!(
        amd["manifest"], amd_from_layout["manifest"],
        "linux/amd64 is the default"
    );
    index_json(
        &w,
        &image,
        "multi-arm",
        &["--insecure", "--platform", "linux/arm64"],
    );
    assert_eq!(w.ok(&["cat", "multi-arm", "arch.txt"]), "arm64\n");
    let err = w.fails(&[
        "index",
        "image",
        &image,
        "--insecure",
        "--platform",
        "linux/s390x",
        "--tag",
        "none",
    ]);
    assert!(err.contains("no manifest for linux/s390x"), "{err}");
    assert!(
        err.contains("linux/amd64") && err.contains("linux/arm64"),
        "{err}"
    );
    // The same selection from the layout's index.
    let layout_arm = index_json(
        &w,
        &format!("oci:{}", layout.image("multi")),
        "layout-arm",
        &["--platform", "linux/arm64"],
    );
    assert_eq!(
        layout_arm["manifest"],
        w.manifest_of("multi-arm").unwrap().as_str()
    );
}

#[test]
fn a_registry_with_basic_auth_takes_the_right_credentials_only() {
    if !oci_tools_available("image auth") {
        return;
    }
    let w = World::local();
    let layout = build_app(&w.path("build"));
    let registry = Registry::start(&w.path("registry"), Some(("thaw", "s3cret-pass")));
    registry.push(&layout.dir, "app", "private/app", Some("thaw:s3cret-pass"));
    let image = format!("docker://{}/private/app:app", registry.addr);

    let anonymous = w.fails(&["index", "image", &image, "--insecure", "--tag", "a"]);
    assert!(anonymous.contains(&image), "{anonymous}");
    assert!(anonymous.contains("Not authorized"), "{anonymous}");

    let with_password = |password: &str| {
        let mut child = w
            .thaw()
            .args([
                "index",
                "image",
                &image,
                "--insecure",
                "--tag",
                "b",
                "-q",
                "--username",
                "thaw",
                "--password-stdin",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let wrong = with_password("not-it");
    assert!(!wrong.status.success());
    let text = describe(&wrong);
    assert!(
        text.contains(&image) && text.contains("--username"),
        "{text}"
    );
    assert!(
        !w.ok(&["tags"]).contains("  b"),
        "no tag after a refused pull"
    );
    let right = with_password("s3cret-pass");
    assert!(right.status.success(), "{}", describe(&right));

    // Credentials from ~/.docker/config.json (HOME is the world's directory).
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode("thaw:s3cret-pass");
    fs::create_dir_all(w.path(".docker")).unwrap();
    fs::write(
        w.path(".docker/config.json"),
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#,
            registry.addr
        ),
    )
    .unwrap();
    index_json(&w, &image, "c", &["--insecure"]);
    assert_eq!(w.manifest_of("b"), w.manifest_of("c"));
}

/// A layout whose image `bad` has one layer, the tar `script` writes.
fn layout_with_layer(root: &Path, script: &str) -> Layout {
    let layout = Layout::new(&root.join("layout"), "bad");
    let tar = root.join("layer.tar");
    python_tar(&tar, script);
    layout.add_raw_layer("bad", &tar);
    layout
}

/// The one layer blob of image `bad`.
fn layer_blob(layout: &Layout) -> std::path::PathBuf {
    let mut largest = None;
    for entry in fs::read_dir(layout.dir.join("blobs/sha256")).unwrap() {
        let path = entry.unwrap().path();
        let bytes = fs::read(&path).unwrap();
        if !bytes.starts_with(b"{") {
            largest = Some(path);
        }
    }
    largest.expect("a layer blob")
}

#[test]
fn names_real_builders_write_are_applied_as_containerd_applies_them() {
    if !oci_tools_available("layer names") {
        return;
    }
    let w = World::local();
    // umoci's `insert` writes a root entry named `/`; others write `/x`, `./x` or `d/../x`.
    let script = "add_dir(\"/\")\nadd_file(\"/abs\", b\"a\")\nadd_file(\"./dot\", b\"b\")\n\
                  add_dir(\"d\")\nadd_file(\"d/../up\", b\"c\")\nadd_file(\"d//in\", b\"d\")";
    let layout = layout_with_layer(&w.path("names"), script);
    w.ok(&[
        "index",
        "image",
        &format!("oci:{}", layout.image("bad")),
        "--tag",
        "names",
    ]);
    for (path, content) in [("abs", "a"), ("dot", "b"), ("up", "c"), ("d/in", "d")] {
        assert_eq!(w.ok(&["cat", "names", path]), content, "{path}");
    }
}

#[test]
fn hostile_layers_are_refused_naming_the_layer_and_entry() {
    if !oci_tools_available("hostile images") {
        return;
    }
    let w = World::local();
    let cases = [
        (
            "dotdot",
            r#"add_file("../escape", b"x")"#,
            "entry ../escape: path escapes the root",
        ),
        (
            "dotdot-inside",
            r#"add_file("a/../../escape", b"x")"#,
            "entry a/../../escape: path escapes the root",
        ),
        (
            "symlink",
            "add_symlink(\"evil\", \"/etc\")\nadd_file(\"evil/passwd\", b\"x\")",
            "entry evil/passwd: parent evil is not a directory",
        ),
        (
            "size",
            "t = info(\"huge\", tarfile.REGTYPE); t.size = 1 << 41; tar.addfile(t)",
            "entry huge: claims 2199023255552 bytes",
        ),
    ];
    for (name, script, expected) in cases {
        let layout = layout_with_layer(&w.path(name), script);
        let err = w.fails(&[
            "index",
            "image",
            &format!("oci:{}", layout.image("bad")),
            "--tag",
            name,
        ]);
        assert!(err.contains("layer sha256:"), "{name}: {err}");
        assert!(err.contains(expected), "{name}: {err}");
        assert!(
            !w.ok(&["tags"]).contains(name),
            "{name}: no tag for a refused image"
        );
    }
    assert!(!w.dir.path().parent().unwrap().join("escape").exists());

    // A blob that is not what the manifest says, and a truncated gzip stream.
    let layout = Layout::new(&w.path("digest/layout"), "bad");
    layout.add_layer("bad", &w.path("digest/bundle"), |rootfs| {
        fs::write(rootfs.join("file"), random_bytes(200_000, 3)).unwrap();
    });
    let blob = layer_blob(&layout);
    let good = fs::read(&blob).unwrap();
    let image = format!("oci:{}", layout.image("bad"));

    fs::write(&blob, &good[..good.len() / 2]).unwrap();
    let err = w.fails(&["index", "image", &image, "--tag", "truncated"]);
    assert!(
        err.contains("layer sha256:") && err.contains("truncated"),
        "{err}"
    );

    let mut other = Vec::new();
    {
        let mut encoder = flate2::write::GzEncoder::new(&mut other, flate2::Compression::fast());
        let mut tar = tar::Builder::new(&mut encoder);
        let mut header = tar::Header::new_gnu();
        header.set_size(4);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "swapped", &b"evil"[..])
            .unwrap();
        tar.finish().unwrap();
        drop(tar);
        encoder.finish().unwrap();
    }
    fs::write(&blob, &other).unwrap();
    let err = w.fails(&["index", "image", &image, "--tag", "swapped"]);
    assert!(
        err.contains("layer sha256:") && err.contains("digest"),
        "{err}"
    );
    let tags = w.ok(&["tags"]);
    assert!(
        !tags.contains("truncated") && !tags.contains("swapped"),
        "{tags}"
    );
}

#[test]
fn thaw_run_starts_a_container_from_the_lazy_mount() {
    let has_runtime = Command::new("sh")
        .args(["-c", "command -v crun || command -v runc"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !oci_tools_available("thaw run") || !fuse_available("thaw run") || !is_root() || !has_runtime
    {
        if !has_runtime {
            thaw_sys::skip::skipped("thaw run", "no crun or runc");
        }
        return;
    }
    let w = World::local();
    let layout = Layout::new(&w.path("build/layout"), "sh");
    layout.add_layer("sh", &w.path("build/bundle"), |rootfs| {
        copy_with_libraries("/bin/sh", rootfs);
        fs::create_dir_all(rootfs.join("app")).unwrap();
        fs::create_dir_all(rootfs.join("etc")).unwrap();
        fs::write(rootfs.join("etc/greeting"), b"hello from the image\n").unwrap();
        fs::write(
            rootfs.join("etc/passwd"),
            b"root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n",
        )
        .unwrap();
    });
    layout.configure(
        "sh",
        &[
            "--config.entrypoint=/bin/sh",
            "--config.cmd=-c",
            "--config.cmd=read line < /etc/greeting; echo \"$line|$MODE|$(pwd)\"",
            "--config.env=MODE=image",
            "--config.workingdir=/app",
        ],
    );
    index_json(&w, &format!("oci:{}", layout.image("sh")), "sh", &[]);

    let out = w.thaw().args(["run", "sh"]).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from the image|image|/app\n"
    );

    // Arguments replace Cmd, -e overrides the image's env, --user takes a name from the
    // image's /etc/passwd (that user may not write the root-owned /app), and the exit code
    // comes through.
    let out = w
        .thaw()
        .args([
            "run", "sh", "-e", "MODE=flag", "--user", "app", "--",
            "-c", "echo data > /tmp/x; read a < /tmp/x; (echo y > /app/new) 2>/dev/null || echo denied; echo \"$MODE $a\"; exit 7",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "denied\nflag data\n");
    // Root may write anywhere: the overlay takes it, the image stays as indexed.
    let out = w
        .thaw()
        .args([
            "run",
            "sh",
            "--",
            "-c",
            "echo data > /app/new && read a < /app/new && echo $a",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "data\n");
    assert!(w
        .ok(&["ls", "sh", "app"])
        .lines()
        .all(|l| !l.contains("new")));
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        !mounts.contains(&w.path("run").display().to_string()),
        "mounts left behind:\n{mounts}"
    );

    let err = w.fails(&["run", "no-such-image"]);
    assert!(err.contains("no-such-image"), "{err}");
}

/// Adds tag `to` to the layout: image `from` with every layer recompressed with zstd
/// (`application/vnd.oci.image.layer.v1.tar+zstd`).
fn recompress_with_zstd(layout: &Layout, from: &str, to: &str) {
    let script = r#"
import gzip, hashlib, json, os, subprocess, sys
layout, src, dst = sys.argv[1:4]
blob = lambda d: os.path.join(layout, "blobs/sha256", d.split(":")[1])
def put(data):
    digest = hashlib.sha256(data).hexdigest()
    open(os.path.join(layout, "blobs/sha256", digest), "wb").write(data)
    return "sha256:" + digest
index = json.load(open(os.path.join(layout, "index.json")))
entry = next(m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == src)
manifest = json.load(open(blob(entry["digest"])))
for layer in manifest["layers"]:
    raw = open(blob(layer["digest"]), "rb").read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    packed = subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True, check=True).stdout
    layer["digest"], layer["size"] = put(packed), len(packed)
    layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd"
data = json.dumps(manifest).encode()
index["manifests"].append({"mediaType": entry["mediaType"], "digest": put(data), "size": len(data), "annotations": {"org.opencontainers.image.ref.name": dst}})
json.dump(index, open(os.path.join(layout, "index.json"), "w"))
"#;
    let out = Command::new("python3")
        .args(["-c", script, &layout.dir.display().to_string(), from, to])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn zstd_and_gzip_layers_of_one_image_give_one_manifest() {
    if !oci_tools_available("zstd layers") {
        return;
    }
    let w = World::local();
    let layout = build_app(&w.path("build"));
    recompress_with_zstd(&layout, "app", "app-zstd");
    let gzip = index_json(&w, &format!("oci:{}", layout.image("app")), "gzip", &[]);
    let other = World::local();
    let zstd = index_json(
        &other,
        &format!("oci:{}", layout.image("app-zstd")),
        "zstd",
        &[],
    );
    assert_eq!(zstd["layers_reused"], 0);
    assert_eq!(gzip["manifest"], zstd["manifest"]);
}
