#!/usr/bin/env bash
# GPU receipts in one run on a machine with a GPU and no Rust toolchain (the device tool's H200):
# the CUDA tests that skip elsewhere, `thaw weights load --device cuda:0` against the pinned H2D
# copy and safetensors/torch, copy lanes against cores, the Python module on the device, a load
# under a cgroup memory limit, and CUDA process checkpoint/restore timings.
#
#   benches/gpu-prepare.sh        (here: builds and bundles the binaries into .gpu/)
#   benches/gpu.sh                (there, as root; OUT=DIR for the logs, default .thaw-bench/gpu-out)
#   DEVICE=cpu benches/gpu.sh     (dry run on a machine without a GPU: the GPU rows skip)
# Env: MODEL_GIB (default 8), SNAP_CASES (default "1 model 8": GiB of device memory, or the model
# server), RUNS (default 3), BUDGET_S (default 540: no step runs past it), BENCH_DIR.
# Each step's output goes to OUT/STEP.log; OUT/summary.txt has one line per step and the rows.
set -uo pipefail
BIN=/opt/thaw-gpu/bin
# The shared helpers (now, since, median), with the binaries of the bundle instead of a build.
THAW_PREBUILT=$BIN source "$(dirname "$0")/common.sh"
ROOT=$PWD
START=$(date +%s)
BUDGET_S=${BUDGET_S:-540}
OUT=${OUT:-$ROOT/.thaw-bench/gpu-out}
DEVICE=${DEVICE:-cuda:0}
MODEL_GIB=${MODEL_GIB:-8}
SNAP_CASES=${SNAP_CASES:-1 model 8}
export RUNS BENCH_DIR
mkdir -p "$OUT" "$BENCH_DIR"
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
gpu() { [[ "$DEVICE" == cuda* ]]; }

# step NAME LIMIT_S COMMAND...: runs COMMAND into OUT/NAME.log with a timeout of LIMIT_S or what
# is left of the budget, whichever is less (not at all under 20 s); says how it ended.
step() {
  local name=$1 limit=$2 left t0 rc
  shift 2
  left=$((BUDGET_S - ($(date +%s) - START) - 5))
  if [ "$left" -lt 20 ]; then
    say "step $name: NOT RUN (${left}s of the budget left)"
    return 0
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  t0=$(now)
  # timeout runs programs, not functions: the functions and settings reach a child bash exported.
  timeout -k 5 "$limit" bash -c '"$@"' step "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  say "step $name: rc=$rc in $(since "$t0")s$([ $rc = 124 ] && echo ' (TIMED OUT)')"
}

# The bundle from benches/gpu-prepare.sh: binaries with their shared libraries under /opt/thaw-gpu.
install_bundle() {
  mkdir -p /opt/thaw-gpu
  tar -C /opt/thaw-gpu -xzf "$ROOT/.gpu/bundle.tar.gz" || return 1
  # The e2e tests start the thaw binary at the path cargo built it to, and read files under the
  # checkout they were built from.
  local built checkout
  built=$(cat /opt/thaw-gpu/thaw_path) checkout=$(cat /opt/thaw-gpu/checkout)
  [ -e "$checkout" ] || { mkdir -p "$(dirname "$checkout")"; ln -s "$ROOT" "$checkout"; }
  mkdir -p "$(dirname "$built")"
  [ -e "$built" ] || cp "$BIN/thaw" "$built"
  command -v criu > /dev/null || ln -sf "$BIN/criu" /usr/local/sbin/criu
}

machine() {
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
  df -h "$BENCH_DIR" | tail -1
  nvidia-smi --query-gpu=name,memory.total,driver_version,pcie.link.gen.current,pcie.link.width.current --format=csv,noheader 2>&1 | head -2
  python3 -c 'import torch, safetensors; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "safetensors", safetensors.__version__)' 2>&1 | tail -1
  echo "criu: $(criu --version 2>&1 | head -1)"
  criu check 2>&1 | tail -2
  "$BIN/thaw" --version
}

# The tests that skip without a GPU: weights into device memory, the Python module's cuda:0
# half, and the lib tests that touch the driver.
tests_weights() {
  THAW_WEIGHTS_PY_MODULE=$BIN/thaw_weights.so "$BIN/tests" --exact --nocapture --test-threads 1 \
    weights::a_model_streams_into_gpu_memory_where_a_gpu_exists \
    weights_python::python_receives_every_tensor_through_dlpack &&
    "$BIN/weights-lib" --nocapture cuda
}

tests_snapshot() {
  "$BIN/snapshot-lib" --nocapture cuda &&
    "$BIN/tests" --exact --nocapture --test-threads 1 \
      snapshot::a_cuda_process_is_checkpointed_and_restored_with_its_gpu_buffer
}

weights_store() { export THAW_STORE=$BENCH_DIR/weights/store THAW_CACHE_DIR=$BENCH_DIR/weights/cache; }
model_files() { ls "$BENCH_DIR/weights/model-${MODEL_GIB}g"/*.safetensors; }
seconds_of() { python3 -c 'import json, sys; print(json.load(sys.stdin)["report"]["seconds"])'; }

# Copy lanes against cores: the warm load's streaming rate for 1..16 lanes, against the pinned
# H2D reference; then the device's bytes against a host load's, by digest.
lanes() {
  weights_store
  local reference bytes
  reference=$("$BIN/thaw" weights load bench-model --device "$DEVICE" --json -q |
    python3 -c 'import json, sys; r = json.load(sys.stdin)["reference"]; print(r["bytes"] / r["seconds"] / 1e9)')
  bytes=$(cat $(model_files) | wc -c)
  echo "reference ($DEVICE pinned copy): $reference GB/s"
  printf '%-6s %-12s %-9s %-9s\n' lanes concurrency GB/s x_reference
  for l in 1 2 4 8 16; do
    local c=$((l * 2 > 8 ? l * 2 : 8)) runs=()
    for _ in $(seq "$RUNS"); do
      runs+=("$("$BIN/thaw" weights load bench-model --device "$DEVICE" --lanes "$l" --concurrency "$c" --json -q --no-reference | seconds_of)")
    done
    local s
    s=$(printf '%s\n' "${runs[@]}" | median)
    awk -v l="$l" -v c="$c" -v b="$bytes" -v s="$s" -v r="$reference" \
      'BEGIN {printf "%-6s %-12s %-9.2f %-9.2f\n", l, c, b / s / 1e9, b / s / 1e9 / r}'
  done
  local digests=()
  for device in "$DEVICE" cpu; do
    digests+=("$("$BIN/thaw" weights load bench-model --device "$device" --digests --json -q --no-reference |
      python3 -c 'import json, sys; r = json.load(sys.stdin); print(json.dumps([[t["file"], t["name"], t["blake3"]] for t in r["tensors"]]))' |
      sha256sum | cut -c1-16)")
  done
  [ "${digests[0]}" = "${digests[1]}" ] && echo "digests: $DEVICE equals cpu (${digests[0]})" ||
    { echo "digests DIFFER: $DEVICE ${digests[0]} cpu ${digests[1]}"; return 1; }
}

python_module() {
  weights_store
  PYTHONPATH=$BIN python3 benches/gpu_weights_check.py bench-model $(model_files)
}

# A warm load of the model with the command in a memory cgroup limited to 1.5 GiB (v2, or v1's
# memory controller): the device holds the tensors, so host memory is the staging budget and must
# fit. Prints the limit, the peak and the OOM events.
cgroup_limited() {
  weights_store
  local limit=$((1536 << 20)) cg max peak events
  if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
    cg=/sys/fs/cgroup/thaw-gpu-bench max=memory.max peak=memory.peak events=memory.events
    grep -qw memory /sys/fs/cgroup/cgroup.subtree_control || echo +memory > /sys/fs/cgroup/cgroup.subtree_control
  elif [ -d /sys/fs/cgroup/memory ]; then
    cg=/sys/fs/cgroup/memory/thaw-gpu-bench max=memory.limit_in_bytes peak=memory.max_usage_in_bytes events=memory.oom_control
  else
    echo "no memory cgroup on this machine"; return 1
  fi
  mkdir -p "$cg" && echo "$limit" > "$cg/$max" || return 1
  bash -c "echo \$\$ > $cg/cgroup.procs && exec $BIN/thaw weights load bench-model --device $DEVICE --no-reference -q"
  local rc=$?
  echo "limit $(($(cat "$cg/$max") >> 20)) MiB; peak $(($(cat "$cg/$peak") >> 20)) MiB; $(tr '\n' ' ' < "$cg/$events"); rc=$rc"
  rmdir "$cg"
  return $rc
}

# CUDA checkpoint and restore of N GiB of device memory, and a small torch model server started
# from scratch against its restore; each restore's checksum and a new kernel are checked.
snapshots() {
  rm -rf "$BENCH_DIR/weights"
  export THAW_STORE=$BENCH_DIR/gpu-snap/store THAW_CACHE_DIR=$BENCH_DIR/gpu-snap/cache
  local work=$BENCH_DIR/gpu-snap/work h2d
  h2d=$(sed -n 's/^reference (.*pinned copy): \([0-9.]*\) GB\/s.*/\1/p' "$OUT/lanes.log" 2>/dev/null | head -1)
  h2d=${h2d:-0}
  printf '%-12s %9s %10s %10s %13s %12s %s\n' what ready_s create_s restore_s first_answer reference check
  for what in $SNAP_CASES; do
    rm -rf "$BENCH_DIR/gpu-snap"; mkdir -p "$work" "$BENCH_DIR/gpu-snap/state"
    local state=$BENCH_DIR/gpu-snap/state args pid t0 ready create restore answer out restored result
    if [ "$what" = model ]; then args=(model); else args=(buffer "$what"); fi
    setsid python3 benches/gpu_holder.py "${args[@]}" "$state" < /dev/null > "$work/holder.log" 2>&1 &
    pid=$!
    for _ in $(seq 1200); do [ -e "$state/ready" ] && break; sleep 0.1; done
    [ -e "$state/ready" ] || { echo "$what: never ready"; cat "$work/holder.log"; kill "$pid"; return 1; }
    read -r checksum ready < "$state/ready"
    t0=$(now)
    "$BIN/thaw" snapshot create --pid "$pid" --tag "gpu-$what" --work-dir "$work" -q || return 1
    create=$(since "$t0")
    wait "$pid" 2>/dev/null
    t0=$(now)
    out=$("$BIN/thaw" snapshot restore "gpu-$what" --work-dir "$work" --json) || return 1
    restore=$(since "$t0")
    touch "$state/check"
    for _ in $(seq 6000); do [ -e "$state/result" ] && break; sleep 0.01; done
    answer=$(since "$t0")
    restored=$(echo "$out" | python3 -c 'import json, sys; print(json.load(sys.stdin)["pid"])')
    result=$(cat "$state/result" 2>/dev/null || echo "no answer")
    kill -9 "$restored" 2>/dev/null
    local reference=-
    [ "$what" != model ] && reference=$(awk -v g="$what" -v r="$h2d" 'BEGIN {if (r > 0) printf "%.2f", g * 1.073741824 / r; else print "-"}')
    local verdict=ok
    [ "$result" = "$checksum True" ] || verdict="MISMATCH (ready $checksum, after restore $result)"
    printf '%-12s %9s %10s %10s %13s %12s %s\n' "$what" "$ready" "$create" "$restore" "$answer" "$reference" "$verdict"
    echo "$what restore report: $out" | tr '\n' ' '; echo
    [ "$verdict" = ok ] || return 1
  done
}

export -f tests_weights tests_snapshot weights_store model_files seconds_of lanes python_module \
  cgroup_limited snapshots now since median
export ROOT OUT BIN DEVICE MODEL_GIB SNAP_CASES
say "gpu.sh: DEVICE=$DEVICE MODEL_GIB=$MODEL_GIB SNAP_CASES=$SNAP_CASES RUNS=$RUNS budget ${BUDGET_S}s"
install_bundle || { say "the bundle did not install (run benches/gpu-prepare.sh first)"; exit 1; }
machine 2>&1 | tee -a "$SUMMARY"
gpu && step tests-weights 120 tests_weights
step weights 240 env THAW_PREBUILT="$BIN" DEVICE="$DEVICE" MODEL_GIB="$MODEL_GIB" benches/weights.sh
step lanes 100 lanes
gpu && step python 60 python_module
step cgroup 40 cgroup_limited
gpu && step tests-snapshot 150 tests_snapshot
gpu && step snapshots 200 snapshots
for log in weights lanes python cgroup snapshots; do
  [ -f "$OUT/$log.log" ] || continue
  say "--- $log"
  case $log in
    weights) grep -E '^(machine|indexed|cold|warm|reference|safetensors|torch|page)' "$OUT/$log.log" | tee -a "$SUMMARY" ;;
    *) tail -12 "$OUT/$log.log" | tee -a "$SUMMARY" ;;
  esac
done
grep -h "SKIPPED\|test result\|panicked" "$OUT"/tests-*.log 2>/dev/null | tee -a "$SUMMARY"
say "gpu.sh: done in $(($(date +%s) - START))s"
