#!/usr/bin/env bash
# Store garbage collection, measured.
#
#  1. gc of a store holding 20 versions of a real tree: botocore 1.35.0 ... 1.35.19 (pip
#     wheels, unpacked: ~80 MiB and ~1,900 files each, mostly JSON service models that change a
#     little per release), indexed as tags bc:0 ... bc:19 into an S3-compatible server (moto) on
#     loopback. `thaw gc --keep-last 1 --prefix bc: --grace 0s` keeps the newest: time, objects and
#     bytes freed, GETs/PUTs/DELETEs (thaw's own request counters), peak memory (GNU time).
#     Baseline, in the same run: what getting the space back costs without gc, a fresh bucket
#     with only the newest version indexed into it. The same gc on a local folder store is shown too.
#  2. The mark phase on a 1M-chunk store (thaw bench mark: synthetic manifests, no pack data, the
#     mark reads none): time and peak memory, against reading the same manifests and maps alone.
#
# Usage: benches/gc.sh   (GC_WHEELS=DIR reuses downloaded wheels; MARK_CHUNKS=N)
set -euo pipefail
source "$(dirname "$0")/common.sh"
require_tools benches/setup-baselines.sh moto_server curl pip /usr/bin/time
work="$BENCH_DIR/gc"
wheels=${GC_WHEELS:-$work/wheels}
mkdir -p "$work" "$wheels"
for i in $(seq 0 19); do
  ls "$wheels"/botocore-1.35.$i-*.whl >/dev/null 2>&1 ||
    pip download "botocore==1.35.$i" --no-deps -d "$wheels" -q
done
rm -rf "$work/trees"; mkdir -p "$work/trees"
for i in $(seq 0 19); do
  python3 -m zipfile -e "$wheels"/botocore-1.35.$i-*.whl "$work/trees/v$i"
done
echo "tree: $(du -sm "$work/trees/v19" | cut -f1) MiB, $(find "$work/trees/v19" -type f | wc -l) files per version"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
s3_port=$(free_port)
moto_server -H 127.0.0.1 -p "$s3_port" > "$work/moto.log" 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null || true' EXIT
for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$s3_port/" && break; sleep 0.1; done
export THAW_S3_ENDPOINT="http://127.0.0.1:$s3_port" THAW_S3_ALLOW_HTTP=true \
  AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 THAW_NO_DISK_CACHE=1

field() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, d))' "$@"; }

# gc_run STORE LABEL: index the 20 versions into STORE, then gc; prints one row.
gc_run() {
  local store=$1 label=$2
  export THAW_STORE=$store
  for i in $(seq 0 19); do "$THAW" -q index dir "$work/trees/v$i" --tag "bc:$i" > /dev/null; sleep 0.01; done
  /usr/bin/time -v "$THAW" -q gc --grace 0s --keep-last 1 --prefix bc: --json \
    > "$work/gc-$label.json" 2> "$work/time-$label.txt"
  "$THAW" -q verify bc:19 > /dev/null
  "$THAW" -q check > /dev/null
  local rss
  rss=$(awk -F: '/Maximum resident/ {print $2}' "$work/time-$label.txt")
  local j="$work/gc-$label.json"
  printf '%-6s before %5s objects %6s MiB | freed %5s objects %6s MiB | repacked %s packs | %6.2f s | %5s GETs %4s PUTs %5s DELETEs %3s lists | peak RSS %s MiB\n' \
    "$label" "$(field "$j" 'before["objects"]')" "$(mib "$(field "$j" 'before["bytes"]')")" \
    "$(field "$j" 'sum(c["objects"] for c in deleted.values())')" \
    "$(mib "$(field "$j" 'sum(c["bytes"] for c in deleted.values())')")" \
    "$(field "$j" 'repacked["packs"]')" "$(field "$j" 'seconds')" \
    "$(field "$j" 'requests["gets"]')" "$(field "$j" 'requests["puts"]')" \
    "$(field "$j" 'requests["deletes"]')" "$(field "$j" 'requests["other"]')" "$((rss / 1024))"
}

curl -fsS -X PUT "http://127.0.0.1:$s3_port/gc-bench" > /dev/null
gc_run "s3://gc-bench/thaw" moto
rm -rf "$work/local-store"
gc_run "$work/local-store" local
gc_s=$(field "$work/gc-moto.json" 'seconds')

# Baseline: a fresh bucket holding only the newest version.
curl -fsS -X PUT "http://127.0.0.1:$s3_port/fresh" > /dev/null
export THAW_STORE="s3://fresh/thaw"
start=$(now)
"$THAW" -q index dir "$work/trees/v19" --tag bc:19 > /dev/null
fresh_s=$(awk -v a="$start" -v b="$(now)" 'BEGIN {print b - a}')
printf 'baseline: a fresh bucket with the newest version indexed: %.2f s; gc / baseline: %.2fx\n' \
  "$fresh_s" "$(awk -v a="$gc_s" -v b="$fresh_s" 'BEGIN {print a / b}')"

# 2. The mark phase on a million chunks (local folder store).
export THAW_STORE="$work/mark-store"
"$THAW" bench mark --chunks "${MARK_CHUNKS:-1000000}" --manifests 100 > /dev/null 2>&1 || true
/usr/bin/time -v "$THAW" bench mark --chunks "${MARK_CHUNKS:-1000000}" --manifests 100 \
  2> "$work/time-mark.txt"
echo "mark process peak RSS (GNU time): $(( $(awk -F: '/Maximum resident/ {print $2}' "$work/time-mark.txt") / 1024 )) MiB"
