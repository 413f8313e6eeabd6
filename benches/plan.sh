#!/usr/bin/env bash
# The planner, measured.
#
#  1. `thaw plan buffer` on the shipped hour of bursty traffic (benches/traces/bursty.csv) and
#     the shipped offers (benches/offers.csv: one H100 kind in three clouds, $2.49-$4.10 an hour,
#     6/16/32 available, VMs booting in 120/90/45 s), planned from another day of the same
#     traffic (bursty-history.csv), for the reference workload's cold starts.
#  2. `thaw bench utilisation --offers`: the trace replayed per cold-start path with no buffer,
#     a fixed buffer (as many as the plan's peak) and the plan's buffer; keep-warm 10 s and 60 s.
#  3. `thaw bench place`: the placement program against random and least-loaded placement on
#     1,000 simulated nodes and 500 replicas, built from a real store (20 versions of botocore
#     as images, four 512 MiB models), each node's cache holding one tag it ran before; with the
#     program over all nodes beside the pruned one, and solve times.
#
# Usage: benches/plan.sh   (PLACE_TREES=DIR of trees v0..v19 to index as images, default the
# botocore trees benches/gc.sh unpacks)
set -euo pipefail
source "$(dirname "$0")/common.sh"
work="$BENCH_DIR/plan"
mkdir -p "$work"
# The reference workload's cold starts (docs/benchmarks.md, `thaw bench coldstart`, 02:25 run).
cat > "$work/coldstart.json" <<'JSON'
{"paths": [{"name": "naive", "ready_seconds": 14.61}, {"name": "thaw-lazy", "ready_seconds": 3.27},
           {"name": "thaw-trace", "ready_seconds": 3.55}, {"name": "thaw-peer", "ready_seconds": 3.32},
           {"name": "thaw-snapshot", "ready_seconds": 1.83}]}
JSON
trace=benches/traces/bursty.csv history=benches/traces/bursty-history.csv offers=benches/offers.csv

echo "== 1. thaw plan buffer (snapshot path, planned from bursty-history.csv)"
"$THAW" plan buffer --trace "$history" --offers "$offers" --coldstart-json "$work/coldstart.json" --path thaw-snapshot |
  awk 'NR <= 3 || /^ +(4|5|6|7|19|20|21) / || /^cost/'

for keep in 10 60; do
  echo "== 2. thaw bench utilisation --offers, keep-warm ${keep}s"
  "$THAW" bench utilisation --coldstart-json "$work/coldstart.json" --trace "$trace" \
    --plan-from "$history" --offers "$offers" --idle-timeout "$keep"
done

echo "== 3. thaw bench place"
trees=${PLACE_TREES:-$BENCH_DIR/gc/trees}
store="$work/store"
if [ ! -d "$store/tags" ]; then
  [ -d "$trees/v19" ] || { echo "no trees under $trees: run benches/gc.sh first or set PLACE_TREES" >&2; exit 1; }
  for i in $(seq 0 19); do
    THAW_STORE=$store "$THAW" index dir "$trees/v$i" --tag "botocore/v$i" --quiet --json > /dev/null
  done
  for i in 0 1 2 3; do
    mkdir -p "$work/models/m$i"
    python3 -c "import random, sys; r = random.Random($i); [sys.stdout.buffer.write(r.randbytes(1 << 20)) for _ in range(512)]" \
      > "$work/models/m$i/model.safetensors"
    THAW_STORE=$store "$THAW" index dir "$work/models/m$i" --tag "models/m$i" --quiet --json > /dev/null
  done
fi
THAW_STORE=$store "$THAW" bench place --nodes 1000 --replicas 500 --tags-per-node 1
