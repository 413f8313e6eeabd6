#!/usr/bin/env bash
# containerd benchmark (issue: containerd remote snapshotter). Time to a container's first output
# through a real containerd, on a node that starts empty each time (containerd's root and state,
# the snapshotter's root and thaw's disk cache removed, page cache dropped):
#
#  1. containerd's own overlayfs snapshotter: `ctr image pull` (download + unpack every layer)
#     then `ctr run` (the baseline);
#  2. thaw's snapshotter, cold: `thaw containerd pull` (manifest and config only; layers are lazy
#     mounts of the indexed image) then `ctr run --snapshotter thaw`, with no access trace stored;
#  3. the same with the trace that run 2 left in the store (saved when containerd removed the
#     image and its lazy mount ended), so the mount prefetches what the container reads.
#
# The image is benches/image.sh's (a Python install with numpy, its libraries and a 384 MiB
# model file nobody reads; the command imports numpy and prints), pushed to a local registry on
# loopback and indexed into a local folder store once.
#
#   benches/containerd.sh   needs root, containerd, ctr, runc, docker-registry, umoci and skopeo
#                           (scripts/setup installs them)
# Env: RUNS (default 3, medians), BENCH_DIR (default ./.thaw-bench), PYTHON_PREFIX (as image.sh).
set -euo pipefail
source "$(dirname "$0")/common.sh"
[ "$can_drop" = yes ] || { echo "benches/containerd.sh needs root" >&2; exit 1; }
require_tools scripts/setup containerd ctr containerd-shim-runc-v2 runc docker-registry umoci skopeo
PYTHON_PREFIX=${PYTHON_PREFIX:-$(python3 -c 'import sys; print(sys.base_prefix)')}
python3 -c 'import numpy' 2>/dev/null || { echo "python3 needs numpy" >&2; exit 1; }

build_numpy_image "$BENCH_DIR/image"
layout="$BENCH_DIR/image/layout"
work="$BENCH_DIR/containerd"
node="$work/node"
mkdir -p "$work"
start_registry "$work/registry"
skopeo copy --dest-tls-verify=false "oci:$layout:py" "docker://$registry_addr/bench/py:latest" > /dev/null
image="$registry_addr/bench/py:latest"
image_bytes=$(du -sb "$layout/blobs" | cut -f1)
export THAW_STORE="$work/store" THAW_CACHE_DIR="$node/cache" THAW_RUNTIME_DIR="$node/run"
rm -rf "$THAW_STORE"
"$THAW" index image "docker://$image" --insecure --tag py -q
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), $(containerd --version | awk '{print $1, $3}'); image $(mib "$image_bytes") MiB compressed in 3 layers"

containerd_pid=""; snapshotter_pid=""
ctr_() { ctr -a "$node/containerd.sock" -n bench "$@"; }

# Every mount under the node's directory, deepest first, lazily unmounted.
unmount_node() {
  awk -v p="$node" 'index($2, p) == 1 {print length($2), $2}' /proc/self/mounts | sort -rn |
    while read -r _ point; do umount -l "$point" 2>/dev/null || true; done
}

# A node with nothing on it: containerd (its own root, state and socket, CRI off, the thaw
# snapshotter as a proxy plugin) and `thaw snapshotter`, both fresh.
start_node() {
  unmount_node; rm -rf "$node"; mkdir -p "$node"
  cat > "$node/config.toml" <<EOF
version = 2
root = "$node/containerd-root"
state = "$node/containerd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$node/containerd.sock"
[ttrpc]
  address = "$node/containerd.sock.ttrpc"
[proxy_plugins]
  [proxy_plugins.thaw]
    type = "snapshot"
    address = "$node/snapshotter.sock"
EOF
  "$THAW" snapshotter --address "$node/snapshotter.sock" --root "$node/snapshotter" \
    > "$node/snapshotter.log" 2>&1 &
  snapshotter_pid=$!
  containerd --config "$node/config.toml" > "$node/containerd.log" 2>&1 &
  containerd_pid=$!
  until [ -S "$node/snapshotter.sock" ] && [ -S "$node/containerd.sock" ]; do sleep 0.05; done
  until ctr_ version > /dev/null 2>&1; do sleep 0.05; done
  drop_page_cache
}

# Removes the image (containerd's synchronous GC removes its snapshots, which ends the lazy
# mounts and saves their traces), then stops both daemons.
stop_node() {
  ctr_ image rm --sync "$image" > /dev/null 2>&1 || true
  kill "$containerd_pid" "$snapshotter_pid" 2>/dev/null || true
  wait "$containerd_pid" "$snapshotter_pid" 2>/dev/null || true
  pkill -f "containerd-shim-runc-v2 .*-address $node/containerd.sock" 2>/dev/null || true
  unmount_node
}
trap 'stop_node; kill $registry_pid 2>/dev/null || true' EXIT

# first_output PULL...: runs the pull command, then `ctr run` of the image (with $run_flags);
# sets t (seconds from the pull's start to the container's first line), p (seconds the pull
# took) and line (that line).
first_output() {
  local t0
  t0=$(now)
  "$@" > "$node/pull.log" 2>&1 || { cat "$node/pull.log" >&2; exit 1; }
  p=$(since "$t0")
  line=$(ctr_ run --rm $run_flags "$image" "bench-$RANDOM" 2>&1 | head -n1)
  t=$(since "$t0")
}

overlay=(); cold=(); traced=(); outputs=(); read_cold=(); read_traced=()
pull_overlay=(); pull_cold=(); pull_traced=()
lazy_store_bytes() {
  local total=0 dir bytes
  for dir in "$node"/snapshotter/lazy/*; do
    bytes=$("$THAW" mount status "$dir" --json 2>/dev/null |
      python3 -c 'import json,sys; print(json.load(sys.stdin).get("store_bytes", 0))' 2>/dev/null || echo 0)
    total=$((total + bytes))
  done
  echo "$total"
}
for _ in $(seq "$RUNS"); do
  start_node
  run_flags=""
  first_output ctr_ image pull --plain-http "$image"
  overlay+=("$t"); pull_overlay+=("$p"); outputs+=("$line")
  stop_node

  rm -rf "$THAW_STORE/trace-runs"
  start_node
  run_flags="--snapshotter thaw"
  first_output "$THAW" containerd pull "$image" --insecure --address "$node/containerd.sock" -n bench
  cold+=("$t"); pull_cold+=("$p"); outputs+=("$line"); read_cold+=("$(lazy_store_bytes)")
  stop_node
  [ -n "$(ls -A "$THAW_STORE/trace-runs" 2>/dev/null)" ] || { echo "the cold run left no trace" >&2; exit 1; }

  start_node
  first_output "$THAW" containerd pull "$image" --insecure --address "$node/containerd.sock" -n bench
  traced+=("$t"); pull_traced+=("$p"); outputs+=("$line"); read_traced+=("$(lazy_store_bytes)")
  stop_node
done
for out in "${outputs[@]}"; do
  [[ "$out" == ready* ]] || { echo "a run printed: $out" >&2; exit 1; }
done
ov=$(median_of "${overlay[@]}"); co=$(median_of "${cold[@]}")
tr=$(median_of "${traced[@]}")
po=$(median_of "${pull_overlay[@]}"); pc=$(median_of "${pull_cold[@]}")
pt=$(median_of "${pull_traced[@]}")
rc=$(median_of "${read_cold[@]}"); rt=$(median_of "${read_traced[@]}")
echo "first output of every run: ${outputs[0]}"
echo "time to the container's first output through containerd (median of $RUNS, empty node, page cache dropped):"
echo "  overlayfs: ctr image pull + ctr run                 ${ov}s   (pull ${po}s)"
echo "  thaw: thaw containerd pull + ctr run, no trace      ${co}s   $(ratio "$ov" "$co")x faster   (pull ${pc}s; $(mib "$rc") MiB read from the store by the first output)"
echo "  thaw: the same with the stored trace prefetched     ${tr}s   $(ratio "$ov" "$tr")x faster   (pull ${pt}s; $(mib "$rt") MiB read from the store by the first output)"
