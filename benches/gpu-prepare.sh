#!/usr/bin/env bash
# Builds what benches/gpu.sh runs on a GPU machine without a Rust toolchain and bundles it into
# .gpu/bundle.tar.gz (git-ignored; the device tool carries .gpu): thaw, the safetensors baseline,
# the Python module, the e2e and lib test binaries that hold the CUDA tests, criu, and the shared
# libraries they load that are not glibc's or the C++ runtime's. Every binary gets an RPATH of
# /opt/thaw-gpu/lib, where gpu.sh unpacks them, so nothing needs LD_LIBRARY_PATH there.
#
#   benches/gpu-prepare.sh      (needs patchelf: apt-get install patchelf)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v patchelf > /dev/null || { echo "gpu-prepare: needs patchelf (apt-get install patchelf)" >&2; exit 1; }
jobs=${THAW_BUILD_JOBS:-2}
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
cargo build --release --quiet --jobs "$jobs" -p thaw -p thaw-weights-py
cargo build --release --quiet --jobs "$jobs" -p thaw-weights --example safetensors_load
# test_executable ARGS...: builds the release test binary ARGS select and prints its path.
test_executable() {
  cargo test --release --quiet --jobs "$jobs" --no-run --message-format=json "$@" |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["executable"])' | tail -1
}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
cp "$target_dir/release/thaw" "$stage/bin/thaw"
cp "$target_dir/release/examples/safetensors_load" "$stage/bin/"
cp "$target_dir/release/libthaw_weights.so" "$stage/bin/thaw_weights.so"
cp "$(test_executable -p thaw --test tests)" "$stage/bin/tests"
cp "$(test_executable -p thaw-weights --lib)" "$stage/bin/weights-lib"
cp "$(test_executable -p thaw-snapshot --lib)" "$stage/bin/snapshot-lib"
cp "$(command -v criu)" "$stage/bin/criu"
# Shared libraries outside glibc and the C++ runtime, which every target machine has.
ldd "$stage"/bin/* 2>/dev/null | awk '/=> \// {print $3}' | sort -u |
  grep -vE '/(libc|libm|libdl|librt|libpthread|libgcc_s|libstdc\+\+|ld-linux[^/]*)\.so' |
  while read -r lib; do cp -L "$lib" "$stage/lib/"; done
for f in "$stage"/bin/* "$stage"/lib/*; do
  strip --strip-debug "$f" 2> /dev/null || true
  patchelf --force-rpath --set-rpath /opt/thaw-gpu/lib "$f"
done
echo "$target_dir/release/thaw" > "$stage/thaw_path"
pwd > "$stage/checkout"
mkdir -p .gpu
tar -C "$stage" -czf .gpu/bundle.tar.gz .
grep -qx '/.gpu/' .git/info/exclude 2> /dev/null || echo '/.gpu/' >> .git/info/exclude
echo "gpu-prepare: .gpu/bundle.tar.gz $(du -h .gpu/bundle.tar.gz | cut -f1) ($(ls "$stage/lib" | wc -l) libraries)"
