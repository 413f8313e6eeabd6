#!/usr/bin/env bash
# Snapshot benchmarks (issue: process snapshots). Each row compares thaw with a named baseline
# measured in the same run and prints the ratio; docs/benchmarks.md quotes them.
#
#  1. Time to a ready Python process that imported numpy, pandas, scikit-learn and jax and built
#     a model, started normally (cold and warm page cache) against restored from a thaw snapshot
#     (cold thaw cache + cold page cache, and warm thaw cache). Goal: restore >= 5x faster than a
#     cold start.
#  2. Restore throughput of the page images: the extract part of a cold restore against reading
#     the same image bytes from the local disk (`cat` of the dumped folder, cold page cache).
#
#   benches/snapshot.sh           needs root (CRIU, page-cache drops) and criu >= 4.1
# Env: RUNS (default 3, medians), BENCH_DIR (default ./.thaw-bench), PYENV (a venv with the
#      libraries; default the mount benchmark's $BENCH_DIR/pyenv, built by benches/mount.sh).
set -euo pipefail
source "$(dirname "$0")/common.sh"
[ "$can_drop" = yes ] || { echo "benches/snapshot.sh needs root" >&2; exit 1; }
command -v criu >/dev/null || { echo "missing criu: run scripts/install-criu" >&2; exit 1; }
PYENV=${PYENV:-$BENCH_DIR/pyenv}
[ -x "$PYENV/bin/python" ] || { echo "no venv at $PYENV: run benches/mount.sh once (it builds it)" >&2; exit 1; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f\n", b - a}'; }

work="$BENCH_DIR/snapshot"
rm -rf "$work"; mkdir -p "$work/state"
export THAW_STORE="$work/store" THAW_CACHE_DIR="$work/cache"
cat > "$work/app.py" <<'PY'
import os, sys, time
state = sys.argv[1]
import numpy, pandas, sklearn.linear_model, jax.numpy as jnp
rng = numpy.random.default_rng(0)
x = rng.normal(size=(20000, 50)); y = x @ rng.normal(size=50)
model = sklearn.linear_model.Ridge().fit(x, y)
frame = pandas.DataFrame(x[:1000])
jnp.dot(jnp.ones((256, 256)), jnp.ones((256, 256))).block_until_ready()
open(os.path.join(state, "ready"), "w").write(str(model.coef_[0]))
while True:
    if os.path.exists(os.path.join(state, "ping")):
        os.remove(os.path.join(state, "ping"))
        open(os.path.join(state, "pong"), "w").write(str(model.predict(x[:1])[0]))
    time.sleep(0.01)
PY
wait_file() { while [ ! -e "$1" ]; do sleep 0.005; done; }
start_app() { # start_app -> pid; the app runs in its own session
  rm -f "$work/state/ready"
  setsid "$PYENV/bin/python" "$work/app.py" "$work/state" < /dev/null > /dev/null 2>&1 &
  echo $!
}
# The app answers a request: proves a restored process works, not just exists.
ping_app() { rm -f "$work/state/pong"; touch "$work/state/ping"; wait_file "$work/state/pong"; }
stop_pid() { kill -9 "$1" 2>/dev/null || true; pkill -9 -P "$1" 2>/dev/null || true; while [ -e "/proc/$1" ]; do sleep 0.01; done; }

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), $(criu --version | head -n1)"
# The snapshot: started once, dumped when ready.
pid=$(start_app); wait_file "$work/state/ready"
"$THAW" snapshot create --pid "$pid" --tag app --work-dir "$work" -q > /dev/null 2> "$work/create.log"
wait "$pid" 2>/dev/null || true
image_bytes=$("$THAW" snapshot ls --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["bytes"])')
# A plain copy of the images on local disk, for the throughput baseline.
"$THAW" extract snapshot/app "$work/images-on-disk" -q 2>/dev/null
echo "snapshot: $(mib "$image_bytes") MiB of CRIU images; $(tail -n1 "$work/create.log" | sed 's/^thaw: //')"

for run in $(seq "$RUNS"); do
  # Normal start, cold page cache.
  drop_page_cache; t0=$(now); pid=$(start_app); wait_file "$work/state/ready"; ping_app; t1=$(now)
  stop_pid "$pid"; secs "$t0" "$t1" >> "$work/start-cold"
  # Normal start, warm page cache.
  t0=$(now); pid=$(start_app); wait_file "$work/state/ready"; ping_app; t1=$(now)
  stop_pid "$pid"; secs "$t0" "$t1" >> "$work/start-warm"
  # Restore, cold thaw cache and page cache.
  rm -rf "$THAW_CACHE_DIR"; drop_page_cache
  t0=$(now); pid=$("$THAW" snapshot restore app --work-dir "$work" -q 2> "$work/restore.log"); ping_app; t1=$(now)
  stop_pid "$pid"; secs "$t0" "$t1" >> "$work/restore-cold"
  # Lazy restore (CRIU reads through a mount), cold thaw cache and page cache; its trace is
  # saved on unmount, so runs after the first prefetch.
  rm -rf "$THAW_CACHE_DIR"; drop_page_cache
  t0=$(now); pid=$("$THAW" snapshot restore app --lazy --work-dir "$work" -q 2> "$work/restore.log"); ping_app; t1=$(now)
  stop_pid "$pid"; secs "$t0" "$t1" >> "$work/restore-lazy-cold"
  # Restore, warm thaw cache (filled by an extracting restore).
  "$THAW" snapshot restore app --work-dir "$work" -q > "$work/pid" 2> "$work/restore.log"; stop_pid "$(cat "$work/pid")"
  t0=$(now); pid=$("$THAW" snapshot restore app --work-dir "$work" -q 2> "$work/restore.log"); ping_app; t1=$(now)
  stop_pid "$pid"; secs "$t0" "$t1" >> "$work/restore-warm"
  # Throughput: cold extract of the images against reading them from local disk.
  rm -rf "$THAW_CACHE_DIR" "$work/images-extract"; drop_page_cache
  t0=$(now); "$THAW" extract snapshot/app "$work/images-extract" -q 2>/dev/null; t1=$(now)
  secs "$t0" "$t1" >> "$work/extract-cold"
  drop_page_cache
  t0=$(now); cat "$work"/images-on-disk/* > /dev/null; t1=$(now)
  secs "$t0" "$t1" >> "$work/read-disk"
done
m() { median < "$work/$1"; }
echo "time to a ready, answering process (median of $RUNS):"
printf '  %-44s %7.2f s\n' "normal start, cold page cache" "$(m start-cold)"
printf '  %-44s %7.2f s\n' "normal start, warm page cache" "$(m start-warm)"
printf '  %-44s %7.2f s   %sx faster than a cold start\n' "thaw restore, cold cache + page cache" "$(m restore-cold)" "$(ratio "$(m start-cold)" "$(m restore-cold)")"
printf '  %-44s %7.2f s   %sx faster than a cold start\n' "thaw restore --lazy, cold cache + page cache" "$(m restore-lazy-cold)" "$(ratio "$(m start-cold)" "$(m restore-lazy-cold)")"
printf '  %-44s %7.2f s   %sx faster than a cold start, %sx than a warm one\n' "thaw restore, warm thaw cache" "$(m restore-warm)" "$(ratio "$(m start-cold)" "$(m restore-warm)")" "$(ratio "$(m start-warm)" "$(m restore-warm)")"
echo "image throughput (cold): thaw extract $(awk -v b="$image_bytes" -v s="$(m extract-cold)" 'BEGIN {printf "%.0f", b/1048576/s}') MiB/s vs cat from local disk $(awk -v b="$image_bytes" -v s="$(m read-disk)" 'BEGIN {printf "%.0f", b/1048576/s}') MiB/s: $(ratio "$(m read-disk)" "$(m extract-cold)")x"
