#!/usr/bin/env bash
# Container image benchmarks (issue: OCI images). Each row compares thaw with a named baseline
# measured in the same run and prints the ratio; docs/benchmarks.md quotes them.
#
#  1. Index throughput of a >= 1 GiB multi-layer image from a registry on loopback:
#     `thaw index image docker://...` against `skopeo copy` to an OCI layout plus `umoci unpack`
#     of the same image (what a node does before it can run it).
#  2. Time to a container's first output: `thaw run` from a cold cache (image indexed, nothing
#     local, page cache dropped) against pull (skopeo copy) + unpack (umoci) + runc run.
#
# The image: a Python 3.11 install with numpy and its libraries (layer 1), the shared libraries it
# needs (layer 2) and a 384 MiB model file (layer 3), 1.1 GiB in all; the command imports numpy
# and prints.
#
#   benches/image.sh        needs root (mounts, runc, page-cache drops), docker-registry, umoci,
#                           skopeo and runc (scripts/setup installs them)
# Env: RUNS (default 3, medians), BENCH_DIR (default ./.thaw-bench), PYTHON_PREFIX (the Python
#      install copied into the image; default: the one python3 runs from).
set -euo pipefail
source "$(dirname "$0")/common.sh"
[ "$can_drop" = yes ] || { echo "benches/image.sh needs root" >&2; exit 1; }
require_tools scripts/setup docker-registry umoci skopeo runc
PYTHON_PREFIX=${PYTHON_PREFIX:-$(python3 -c 'import sys; print(sys.base_prefix)')}
python3 -c 'import numpy' 2>/dev/null || { echo "python3 needs numpy" >&2; exit 1; }
timed() { local t0; t0=$(now); "$@" > /dev/null 2>&1; since "$t0"; }

work="$BENCH_DIR/image"
layout="$work/layout"
build_numpy_image "$work"
image_bytes=$(du -sb "$layout/blobs" | cut -f1)

start_registry "$work/registry"
skopeo copy --dest-tls-verify=false "oci:$layout:py" "docker://$registry_addr/bench/py:latest" > /dev/null
ref="docker://$registry_addr/bench/py:latest"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); image $(mib "$image_bytes") MiB compressed in 3 layers"

export THAW_STORE="$work/store" THAW_CACHE_DIR="$work/cache"
cmd_out=()
pull_unpack=(); index=(); naive_first=(); thaw_first=(); warm_first=()
for _ in $(seq "$RUNS"); do
  # 1. Pull + unpack against index.
  rm -rf "$work/pulled" "$work/unpacked"; drop_page_cache
  t0=$(now)
  skopeo copy --src-tls-verify=false "$ref" "oci:$work/pulled:py" > /dev/null
  umoci unpack --image "$work/pulled:py" "$work/unpacked" > /dev/null
  t_pull=$(since "$t0")
  pull_unpack+=("$t_pull")
  rm -rf "$THAW_STORE" "$THAW_CACHE_DIR"; drop_page_cache
  index+=("$(timed "$THAW" index image "$ref" --insecure --tag py -q)")

  # 2. First output: pull + unpack + runc run, against thaw run from a cold cache.
  rm -rf "$work/pulled" "$work/unpacked"; drop_page_cache
  t0=$(now)
  skopeo copy --src-tls-verify=false "$ref" "oci:$work/pulled:py" > /dev/null
  umoci unpack --image "$work/pulled:py" "$work/unpacked" > /dev/null
  python3 - "$work/unpacked/config.json" <<'PY'
import json, sys
path = sys.argv[1]; spec = json.load(open(path))
spec["process"]["terminal"] = False
spec["process"].pop("rlimits", None)
spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]
json.dump(spec, open(path, "w"))
PY
  out=$(runc run --bundle "$work/unpacked" "bench-$$" 2>&1 | head -n1)
  naive_first+=("$(since "$t0")")
  cmd_out+=("$out")
  rm -rf "$THAW_CACHE_DIR"; drop_page_cache
  t0=$(now)
  out=$("$THAW" run py 2>&1 | head -n1)
  thaw_first+=("$(since "$t0")")
  cmd_out+=("$out")
  drop_page_cache
  t0=$(now)
  out=$("$THAW" run py 2>&1 | head -n1)
  warm_first+=("$(since "$t0")")
  cmd_out+=("$out")
done
for out in "${cmd_out[@]}"; do
  [[ "$out" == ready* ]] || { echo "a run printed: $out" >&2; exit 1; }
done
pu=$(printf '%s\n' "${pull_unpack[@]}" | median); ix=$(printf '%s\n' "${index[@]}" | median)
nf=$(printf '%s\n' "${naive_first[@]}" | median); tf=$(printf '%s\n' "${thaw_first[@]}" | median)
wf=$(printf '%s\n' "${warm_first[@]}" | median)
echo "first output of every run: ${cmd_out[0]}"
echo "index throughput (median of $RUNS):"
echo "  skopeo copy + umoci unpack          ${pu}s"
echo "  thaw index image (from the registry) ${ix}s   $(ratio "$pu" "$ix")x the pull + unpack rate"
echo "time to the container's first output (median of $RUNS, page cache dropped):"
echo "  pull + unpack + runc run            ${nf}s"
echo "  thaw run, cold thaw cache           ${tf}s   $(ratio "$nf" "$tf")x faster"
echo "  thaw run again: warm thaw cache + trace, page cache dropped ${wf}s   $(ratio "$nf" "$wf")x faster"
