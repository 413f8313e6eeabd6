"""Writes an OCI image layout from layer folders, without unpacking anything again.

    python3 benches/oci_layout.py LAYOUT TAG CONFIG.json LAYER_DIR...

Each LAYER_DIR holds one layer's files at their paths in the image. Layers are tarred in a
stable order (sorted names, numeric owners, mtime 0), gzip-compressed with pigz (all cores;
gzip when pigz is missing), and written as blobs; an unchanged layer folder gives the same
digest, so two images built from the same folders share those layers. CONFIG.json is the
image config's `config` object (Cmd, Env, WorkingDir). A second call with another TAG adds an
image to the same layout.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys


def blob(layout, data=None, path=None):
    """Stores bytes (or moves a file) as a blob; returns its descriptor fields."""
    os.makedirs(f"{layout}/blobs/sha256", exist_ok=True)
    if data is not None:
        digest = hashlib.sha256(data).hexdigest()
        with open(f"{layout}/blobs/sha256/{digest}", "wb") as out:
            out.write(data)
        return digest, len(data)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    digest = h.hexdigest()
    shutil.move(path, f"{layout}/blobs/sha256/{digest}")
    return digest, os.path.getsize(f"{layout}/blobs/sha256/{digest}")


def layer(layout, folder):
    """Tars and compresses one layer folder; returns (diff id, digest, size)."""
    tmp = f"{layout}/layer.tmp"
    tar = subprocess.Popen(
        ["tar", "-C", folder, "--sort=name", "--numeric-owner", "--mtime=@0", "-cf", "-", "."],
        stdout=subprocess.PIPE,
    )
    gzip = "pigz" if shutil.which("pigz") else "gzip"
    with open(tmp, "wb") as out:
        zipper = subprocess.Popen([gzip, "-n", "-c"], stdin=subprocess.PIPE, stdout=out)
        diff = hashlib.sha256()
        while chunk := tar.stdout.read(1 << 20):
            diff.update(chunk)
            zipper.stdin.write(chunk)
        zipper.stdin.close()
        assert zipper.wait() == 0 and tar.wait() == 0, f"packing {folder} failed"
    digest, size = blob(layout, path=tmp)
    return "sha256:" + diff.hexdigest(), digest, size


def main():
    layout, tag, config_file, folders = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    os.makedirs(layout, exist_ok=True)
    with open(f"{layout}/oci-layout", "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    layers = [layer(layout, folder) for folder in folders]
    with open(config_file) as f:
        runtime = json.load(f)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": runtime,
        "rootfs": {"type": "layers", "diff_ids": [diff for diff, _, _ in layers]},
    }
    config_digest, config_size = blob(layout, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": f"sha256:{config_digest}",
            "size": config_size,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": f"sha256:{digest}",
                "size": size,
            }
            for _, digest, size in layers
        ],
    }
    manifest_digest, manifest_size = blob(layout, json.dumps(manifest).encode())
    index_path = f"{layout}/index.json"
    index = {"schemaVersion": 2, "manifests": []}
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
    index["manifests"] = [
        m
        for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag
    ]
    index["manifests"].append(
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": f"sha256:{manifest_digest}",
            "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }
    )
    with open(index_path, "w") as f:
        json.dump(index, f)
    total = sum(size for _, _, size in layers)
    print(f"{layout}:{tag}: {len(layers)} layers, {total / 2**20:.0f} MiB compressed")


if __name__ == "__main__":
    main()
