#!/usr/bin/env bash
# Mount benchmarks (issue: lazy FUSE mount with trace prefetch). Each line compares thaw with a
# named baseline measured in the same run and prints the ratio; docs/benchmarks.md quotes it.
#
#   benches/setup-baselines.sh        once: squashfuse, mksquashfs, erofsfuse, mkfs.erofs
#   benches/mount.sh [TREE]           TREE defaults to a Python venv with numpy, scipy, pandas,
#                                     pyarrow, scikit-learn, matplotlib, sympy, polars, opencv and
#                                     jax (about 1.5 GiB, built once with pip)
# Env: RUNS (default 3, the median is reported), BENCH_DIR (default ./.thaw-bench),
#      LATENCY_MS (store latency injected for the start-up rows, default 20),
#      PROGRAM (default: import numpy, pandas, sklearn from the venv and print a line).
# Needs root (mounts, dropping the page cache).
set -euo pipefail
LATENCY_MS=${LATENCY_MS:-20}
source "$(dirname "$0")/common.sh"
[ "$can_drop" = yes ] || { echo "benches/mount.sh needs root (mounts, page-cache drops)" >&2; exit 1; }
require_tools benches/setup-baselines.sh squashfuse mksquashfs erofsfuse mkfs.erofs bc

ratio() { echo "scale=2; $1 / $2" | bc -l; }

tree=${1:-}
if [ -z "$tree" ]; then
  tree="$BENCH_DIR/pyenv"
  if [ ! -x "$tree/bin/python" ]; then
    echo "building the benchmark venv in $tree (PyPI)" >&2
    python3 -m venv "$tree"
    "$tree/bin/pip" install -q numpy scipy pandas pyarrow scikit-learn matplotlib sympy polars \
      opencv-python-headless jax jaxlib
  fi
fi
tree=$(realpath "$tree")
PROGRAM=${PROGRAM:-'import numpy, pandas, sklearn; print("ok", numpy.__version__, pandas.__version__)'}
tree_bytes=$(du -sb --apparent-size "$tree" | cut -f1)
tree_files=$(find "$tree" -type f | wc -l)
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
echo "tree: $tree ($(mib "$tree_bytes") MiB, $tree_files files), median of $RUNS runs"

store="$BENCH_DIR/mount-store"; cache="$BENCH_DIR/mount-cache"; mnt="$BENCH_DIR/mnt"
mkdir -p "$mnt"
thaw() { "$THAW" --store "$store" --cache-dir "$cache" -q "$@" 2>/dev/null; }
cleanup() { umount -l "$mnt" 2>/dev/null || true; }
trap cleanup EXIT

# --- images of the same tree (zstd level 3 everywhere, as thaw's packs) --------------------------
rm -rf "$store" "$cache"
thaw index dir "$tree" --tag venv >/dev/null
if [ ! -f "$BENCH_DIR/venv.squashfs" ] || [ "$BENCH_DIR/venv.squashfs" -ot "$tree" ]; then
  rm -f "$BENCH_DIR/venv.squashfs"
  mksquashfs "$tree" "$BENCH_DIR/venv.squashfs" -comp zstd -Xcompression-level 3 -quiet -no-progress >/dev/null
fi
if [ ! -f "$BENCH_DIR/venv.erofs" ] || [ "$BENCH_DIR/venv.erofs" -ot "$tree" ]; then
  mkfs.erofs -zzstd,level=3 -C131072 --quiet "$BENCH_DIR/venv.erofs" "$tree" >/dev/null
fi
tar -C "$tree" -cf - . | zstd -T0 -3 -q -f -o "$BENCH_DIR/venv.tar.zst"
echo "images: thaw store $(mib "$(du -sb "$store" | cut -f1)") MiB, squashfs $(mib "$(stat -c %s "$BENCH_DIR/venv.squashfs")") MiB, erofs $(mib "$(stat -c %s "$BENCH_DIR/venv.erofs")") MiB, tar.zst $(mib "$(stat -c %s "$BENCH_DIR/venv.tar.zst")") MiB"

mount_as() { # $1 = native|thaw|squashfuse|erofsfuse; prints the directory to read
  case "$1" in
    native) echo "$tree" ;;
    thaw) thaw mount venv "$mnt" --daemon --no-trace --no-prefetch >/dev/null 2>&1; echo "$mnt" ;;
    squashfuse) squashfuse "$BENCH_DIR/venv.squashfs" "$mnt"; echo "$mnt" ;;
    erofsfuse) erofsfuse "$BENCH_DIR/venv.erofs" "$mnt" >/dev/null 2>&1; echo "$mnt" ;;
  esac
}
unmount_as() {
  case "$1" in
    native) ;;
    thaw) "$THAW" umount "$mnt" >/dev/null 2>&1 ;;
    *) umount "$mnt" ;;
  esac
}
read_all() { (cd "$1" && find . -type f -print0 | xargs -0 cat >/dev/null); }
# 3000 random 64 KiB reads over the 40 largest files, fixed seed: MiB read.
read_random() {
  python3 - "$1" <<'PY'
import os, random, sys
root = sys.argv[1]
files = []
for d, _, names in os.walk(root):
    for n in names:
        p = os.path.join(d, n)
        if os.path.isfile(p) and not os.path.islink(p):
            files.append((os.path.getsize(p), os.path.relpath(p, root)))
files = [p for s, p in sorted(files, reverse=True)[:40]]
rng = random.Random(42)
fds = [os.open(os.path.join(root, p), os.O_RDONLY) for p in files]
sizes = [os.fstat(fd).st_size for fd in fds]
total = 0
for _ in range(3000):
    i = rng.randrange(len(fds))
    off = rng.randrange(max(1, sizes[i] - 65536))
    total += len(os.pread(fds[i], 65536, off))
print(total)
PY
}

# Warm local data: thaw's disk cache holds every chunk (filled by one full read first), the
# images and the native tree are on local disk. The page cache is dropped before every read.
thaw mount venv "$mnt" --daemon --no-trace --no-prefetch >/dev/null; read_all "$mnt"; "$THAW" umount "$mnt" >/dev/null 2>&1
throughput_row() { # $1 = sequential|random
  declare -A times
  local order=(native thaw squashfuse erofsfuse)
  for i in $(seq "$RUNS"); do
    # Rotate the order each run so no one always goes first.
    for j in 0 1 2 3; do
      local who=${order[$(( (i + j) % 4 ))]}
      dir=$(mount_as "$who"); drop_page_cache
      t0=$(now)
      if [ "$1" = sequential ]; then read_all "$dir"; else read_random "$dir" >/dev/null; fi
      t1=$(now)
      unmount_as "$who"
      times[$who]+="$(echo "$t1 - $t0" | bc -l) "
    done
  done
  local bytes
  if [ "$1" = sequential ]; then bytes=$tree_bytes; else bytes=$((3000 * 65536)); fi
  declare -A mbps
  for who in "${order[@]}"; do
    t=$(printf '%s\n' ${times[$who]} | median)
    mbps[$who]=$(echo "$bytes / 1048576 / $t" | bc -l)
  done
  printf '%-22s native %6.0f MiB/s | thaw %6.0f MiB/s (%.2fx native) | squashfuse %6.0f MiB/s (thaw %.2fx) | erofsfuse %6.0f MiB/s (thaw %.2fx)\n' \
    "$1 read, warm" "${mbps[native]}" "${mbps[thaw]}" "$(ratio "${mbps[thaw]}" "${mbps[native]}")" \
    "${mbps[squashfuse]}" "$(ratio "${mbps[thaw]}" "${mbps[squashfuse]}")" \
    "${mbps[erofsfuse]}" "$(ratio "${mbps[thaw]}" "${mbps[erofsfuse]}")"
}
throughput_row sequential
throughput_row random

# Cold: thaw with an empty disk cache reading from its (local folder) store, against squashfuse
# and erofsfuse reading their images with the page cache dropped.
cold_row() {
  local thaw_t=() sq_t=() ero_t=()
  for i in $(seq "$RUNS"); do
    rm -rf "$cache"; dir=$(mount_as thaw); drop_page_cache
    t0=$(now); read_all "$dir"; t1=$(now); unmount_as thaw
    thaw_t+=("$(echo "$t1 - $t0" | bc -l)")
    dir=$(mount_as squashfuse); drop_page_cache
    t0=$(now); read_all "$dir"; t1=$(now); unmount_as squashfuse
    sq_t+=("$(echo "$t1 - $t0" | bc -l)")
    dir=$(mount_as erofsfuse); drop_page_cache
    t0=$(now); read_all "$dir"; t1=$(now); unmount_as erofsfuse
    ero_t+=("$(echo "$t1 - $t0" | bc -l)")
  done
  local t s e
  t=$(printf '%s\n' "${thaw_t[@]}" | median); s=$(printf '%s\n' "${sq_t[@]}" | median); e=$(printf '%s\n' "${ero_t[@]}" | median)
  printf '%-22s thaw %6.2fs | squashfuse %6.2fs (thaw %.2fx faster) | erofsfuse %6.2fs (thaw %.2fx faster)\n' \
    "sequential read, cold" "$t" "$s" "$(ratio "$s" "$t")" "$e" "$(ratio "$e" "$t")"
}
cold_row

# Start-up: from `thaw mount` to the program's output, cold cache, store with LATENCY_MS per
# request; against copying the tar.zst (same latency once) and unpacking it, then running.
startup_row() {
  local pre_t=() nopre_t=() copy_t=() hits=()
  thaw_startup() { # $1 = extra mount flags; prints seconds
    rm -rf "$cache"; drop_page_cache
    t0=$(now)
    thaw --store-read-latency-ms "$LATENCY_MS" mount venv "$mnt" --daemon --no-trace $1 >/dev/null 2>&1
    "$mnt/bin/python" -c "$PROGRAM" >/dev/null
    t1=$(now)
    "$THAW" umount "$mnt" >/dev/null 2>&1
    echo "$t1 - $t0" | bc -l
  }
  # Record the trace once (the first start-up in production), from a clean slate.
  rm -rf "$cache" "$store/traces"
  thaw mount venv "$mnt" --daemon --no-prefetch >/dev/null 2>&1
  "$mnt/bin/python" -c "$PROGRAM" >/dev/null
  "$THAW" umount "$mnt" >/dev/null 2>&1
  for i in $(seq "$RUNS"); do
    nopre_t+=("$(thaw_startup --no-prefetch)")
    pre_t+=("$(thaw_startup "")")
    rm -rf "$BENCH_DIR/unpacked" "$BENCH_DIR/copied.tar.zst"; drop_page_cache
    t0=$(now)
    sleep "$(echo "$LATENCY_MS / 1000" | bc -l)"
    cp "$BENCH_DIR/venv.tar.zst" "$BENCH_DIR/copied.tar.zst"
    mkdir "$BENCH_DIR/unpacked"
    zstd -d -q -c "$BENCH_DIR/copied.tar.zst" | tar -x -C "$BENCH_DIR/unpacked"
    "$BENCH_DIR/unpacked/bin/python" -c "$PROGRAM" >/dev/null
    t1=$(now)
    copy_t+=("$(echo "$t1 - $t0" | bc -l)")
  done
  local p n c
  p=$(printf '%s\n' "${pre_t[@]}" | median); n=$(printf '%s\n' "${nopre_t[@]}" | median); c=$(printf '%s\n' "${copy_t[@]}" | median)
  printf '%-22s copy+unpack %6.2fs | thaw no prefetch %6.2fs (%.2fx faster) | thaw prefetch %6.2fs (%.2fx faster; %.2fx no prefetch)\n' \
    "start-up, ${LATENCY_MS}ms store" "$c" "$n" "$(ratio "$c" "$n")" "$p" "$(ratio "$c" "$p")" "$(ratio "$n" "$p")"
  rm -rf "$BENCH_DIR/unpacked" "$BENCH_DIR/copied.tar.zst"
}
drop_page_cache; t0=$(now); "$tree/bin/python" -c "$PROGRAM" >/dev/null; t1=$(now)
t2=$(now); "$tree/bin/python" -c "$PROGRAM" >/dev/null; t3=$(now)
printf "program: python -c '%s' from the venv; natively %.2fs cold page cache, %.2fs warm\n" "$PROGRAM" "$(echo "$t1 - $t0" | bc -l)" "$(echo "$t3 - $t2" | bc -l)"
startup_row
