#!/usr/bin/env bash
# Foundation benchmarks (issue: store format, indexer). Each line compares thaw with a named
# baseline measured in the same run and prints the ratio; docs/benchmarks.md quotes the output.
#
#   benches/foundation.sh [TREE]      TREE defaults to a copy of /usr/lib/x86_64-linux-gnu plus the
#                                     Python installation (>= 1 GiB of real files)
# Env: RUNS (default 3, the median is reported), BENCH_DIR (default ./.thaw-bench),
#      SKIP_DEDUP=1 to skip the pip-based dedup benchmark (needs PyPI).
set -euo pipefail
source "$(dirname "$0")/common.sh"

tree=${1:-}
if [ -z "$tree" ]; then
  tree="$BENCH_DIR/tree"
  if [ ! -d "$tree" ]; then
    echo "building the benchmark tree in $tree" >&2
    mkdir -p "$tree"
    cp -a /usr/lib/x86_64-linux-gnu "$tree/usr-lib"
    cp -a "$(python3 -c 'import sys; print(sys.base_prefix)')" "$tree/python"
  fi
fi
tree_bytes=$(du -sb --apparent-size "$tree" | cut -f1)
tree_files=$(find "$tree" -type f | wc -l)
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); page cache drop: $can_drop"
echo "tree: $tree ($(mib "$tree_bytes") MiB, $tree_files files), median of $RUNS runs"

# --- index throughput: thaw index dir vs tar -c | zstd -T0 -3, cold and warm page cache --------
index_row() { # $1 = cold|warm
  local thaw_t=() base_t=()
  run_thaw() {
    rm -rf "$BENCH_DIR/store"
    if [ "$1" = cold ]; then drop_page_cache; fi
    t0=$(now); "$THAW" --store "$BENCH_DIR/store" -q index dir "$tree" --tag bench >/dev/null; t1=$(now)
    thaw_t+=("$(echo "$t1 - $t0" | bc -l)")
  }
  run_base() {
    rm -f "$BENCH_DIR/base.tar.zst"
    if [ "$1" = cold ]; then drop_page_cache; fi
    t0=$(now); tar -c -C "$tree" . | zstd -T0 -3 -q > "$BENCH_DIR/base.tar.zst"; t1=$(now)
    base_t+=("$(echo "$t1 - $t0" | bc -l)")
  }
  for i in $(seq "$RUNS"); do
    # Alternate who goes first, so neither always inherits the other's cache and disk state.
    if [ $((i % 2)) = 1 ]; then run_thaw "$1"; run_base "$1"; else run_base "$1"; run_thaw "$1"; fi
  done
  local ti bi stored base_stored
  ti=$(printf '%s\n' "${thaw_t[@]}" | median); bi=$(printf '%s\n' "${base_t[@]}" | median)
  stored=$(du -sb "$BENCH_DIR/store" | cut -f1); base_stored=$(stat -c %s "$BENCH_DIR/base.tar.zst")
  printf 'index    (%s page cache) thaw index dir: %.2f s (%s MiB/s, %s MiB stored) | tar -c | zstd -T0 -3: %.2f s (%s MiB/s, %s MiB) | thaw speed / baseline = %.2fx\n' \
    "$1" "$ti" "$(mib "$(echo "$tree_bytes / $ti" | bc)")" "$(mib "$stored")" "$bi" "$(mib "$(echo "$tree_bytes / $bi" | bc)")" "$(mib "$base_stored")" "$(echo "$bi / $ti" | bc -l)"
}
index_row cold
tar -c -C "$tree" . | cat > /dev/null # warm the page cache (tar skips reads when writing to /dev/null)
index_row warm

# manifest size and the time to open it and resolve one path (fetch + id check + lookup)
manifest_bytes=$(stat -c %s "$BENCH_DIR/store/manifests/$("$THAW" --store "$BENCH_DIR/store" tags | awk '/ bench$/ {print $1}')")
deep=$(cd "$tree" && find . -type f | awk -F/ '{print NF, $0}' | sort -n | tail -1 | cut -d' ' -f2- | sed 's|^\./||')
ls_t=()
for _ in $(seq "$RUNS"); do
  t0=$(now); "$THAW" --store "$BENCH_DIR/store" ls bench "$deep" >/dev/null; t1=$(now)
  ls_t+=("$(echo "$t1 - $t0" | bc -l)")
done
printf 'manifest %s entries in %s KiB; thaw ls of one deep path (process start, fetch, verify, open, lookup): %.1f ms\n' \
  "$(find "$tree" | wc -l)" "$((manifest_bytes / 1024))" "$(echo "$(printf '%s\n' "${ls_t[@]}" | median) * 1000" | bc -l)"

# --- extract from a cold local cache: thaw extract vs zstd -d | tar -x -------------------------
# Into the benchmark directory's file system, and (when /dev/shm exists) into tmpfs, which takes the
# destination file system's allocator out of the comparison and leaves the tools' own costs.
extract_row() { # $1 = label, $2 = destination parent
  local thaw_t=() base_t=() tx bx
  run_thaw() {
    rm -rf "$BENCH_DIR/cache" "$2/out-thaw"
    drop_page_cache
    t0=$(now); "$THAW" --store "$BENCH_DIR/store" --cache-dir "$BENCH_DIR/cache" -q extract bench "$2/out-thaw" 2>/dev/null; t1=$(now)
    thaw_t+=("$(echo "$t1 - $t0" | bc -l)")
  }
  run_base() {
    rm -rf "$2/out-tar"; mkdir -p "$2/out-tar"
    drop_page_cache
    t0=$(now); zstd -d -q -c "$BENCH_DIR/base.tar.zst" | tar -x -C "$2/out-tar"; t1=$(now)
    base_t+=("$(echo "$t1 - $t0" | bc -l)")
  }
  for i in $(seq "$RUNS"); do
    # Alternate who goes first: ext4 skips recently deleted inodes when allocating, so whoever
    # creates files right after the previous run's outputs were deleted pays extra kernel time.
    if [ $((i % 2)) = 1 ]; then run_thaw "$1" "$2"; run_base "$1" "$2"; else run_base "$1" "$2"; run_thaw "$1" "$2"; fi
  done
  diff -r --no-dereference "$tree" "$2/out-thaw" >/dev/null || { echo "extracted tree differs from $tree" >&2; exit 1; }
  tx=$(printf '%s\n' "${thaw_t[@]}" | median); bx=$(printf '%s\n' "${base_t[@]}" | median)
  printf 'extract  (%s) thaw extract (cold cache): %.2f s | zstd -d | tar -x: %.2f s | thaw speed / baseline = %.2fx\n' "$1" "$tx" "$bx" "$(echo "$bx / $tx" | bc -l)"
  rm -rf "$2/out-thaw" "$2/out-tar" "$BENCH_DIR/cache"
}
extract_row "to $(stat -f -c %T "$BENCH_DIR")" "$BENCH_DIR"
if [ -d /dev/shm ]; then
  shm=$(mktemp -d /dev/shm/thaw-bench.XXXXXX)
  extract_row "to tmpfs" "$shm"
  rmdir "$shm"
fi

# --- dedup: two versions of a pip package set --------------------------------------------------
if [ "${SKIP_DEDUP:-0}" != 1 ]; then
  v1=(numpy==2.1.3 pandas==2.2.2 requests==2.32.3 pyyaml==6.0.2 jinja2==3.1.4)
  v2=(numpy==2.1.3 pandas==2.2.3 requests==2.32.3 pyyaml==6.0.2 jinja2==3.1.4 tqdm==4.67.1)
  for v in v1 v2; do
    if [ ! -d "$BENCH_DIR/pip-$v" ]; then
      declare -n pkgs=$v
      python3 -m pip install --quiet --no-compile --target "$BENCH_DIR/pip-$v" "${pkgs[@]}" >&2
    fi
  done
  rm -rf "$BENCH_DIR/dedup-store"
  for v in v1 v2; do
    "$THAW" --store "$BENCH_DIR/dedup-store" -q index dir "$BENCH_DIR/pip-$v" --tag "$v" >/dev/null
  done
  "$THAW" --store "$BENCH_DIR/dedup-store" stats v1 v2 --json | python3 -c '
import json, sys
s = json.load(sys.stdin)["combined"]
mib = lambda b: b / 1048576
print("dedup    %s -> %s: stored together %.1f MiB | each alone summed %.1f MiB | together / sum = %.3f"
      % ("v1 (numpy 2.1.3, pandas 2.2.2, requests, pyyaml, jinja2)", "v2 (pandas 2.2.3, + tqdm)",
         mib(s["stored_bytes"]), mib(s["stored_bytes_separately"]), s["dedup_ratio"]))'
  for v in v1 v2; do tar -c -C "$BENCH_DIR/pip-$v" . | zstd -T0 -3 -q > "$BENCH_DIR/pip-$v.tar.zst"; done
  printf 'dedup    baseline: tar | zstd -3 of each version: %s MiB + %s MiB (no sharing)\n' \
    "$(mib "$(stat -c %s "$BENCH_DIR/pip-v1.tar.zst")")" "$(mib "$(stat -c %s "$BENCH_DIR/pip-v2.tar.zst")")"
fi
