#!/usr/bin/env bash
# Weight streaming benchmarks (issue: weight streaming). Each row compares thaw with a named
# baseline measured in the same run and prints the ratio; docs/benchmarks.md quotes them.
#
#  CPU (--device cpu): a multi-GiB bf16 model (two safetensors files, llama-like shapes) from
#  thaw's warm local cache into host memory, against `cat FILES > /dev/null` and against the
#  `safetensors` crate loading the same files from disk into host memory (mmap + copy,
#  weights/examples/safetensors_load.rs); once with the page cache warm and once dropped.
#  GPU (DEVICE=cuda:0, on a machine with a GPU): against the raw pinned H2D copy of the same
#  bytes (measured by `thaw weights load` itself) and `safetensors.torch.load_file(...,
#  device="cuda")` when python3 has torch and safetensors.
#
#   benches/weights.sh                      (root for the cold rows: page-cache drops)
# Env: RUNS (default 3, medians), BENCH_DIR (default ./.thaw-bench), MODEL_GIB (default 3),
#      DEVICE (default cpu).
set -euo pipefail
source "$(dirname "$0")/common.sh"
if [ -n "${THAW_PREBUILT:-}" ]; then
  BASELINE="$THAW_PREBUILT/safetensors_load"
else
  cargo build --release --quiet --jobs "${THAW_BUILD_JOBS:-2}" -p thaw-weights --example safetensors_load
  BASELINE="$target_dir/release/examples/safetensors_load"
fi
MODEL_GIB=${MODEL_GIB:-3}
DEVICE=${DEVICE:-cpu}
gbps() { awk -v b="$1" -v s="$2" 'BEGIN {printf "%.2f", b / s / 1e9}'; }

work="$BENCH_DIR/weights"
model="$work/model-${MODEL_GIB}g"
export THAW_STORE="$work/store" THAW_CACHE_DIR="$work/cache"
if [ ! -e "$model/.complete" ]; then
  rm -rf "$model"; mkdir -p "$model"
  echo "generating a ${MODEL_GIB} GiB bf16 model in $model"
  python3 - "$model" "$MODEL_GIB" <<'PY'
import json, multiprocessing, struct, sys
import numpy as np
out, gib = sys.argv[1], float(sys.argv[2])
hidden, per_layer = 4096, 4 * 4096 * 4096 * 2 + 2 * 4096 * 2   # q,k,v,o + two norms, bf16
layers = max(2, int(gib * (1 << 30) / per_layer))
def bf16(job):  # normal weights, rounded to bfloat16 (the upper half of float32), seeded per tensor
    seed, n, scale = job
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n, dtype=np.float32) * scale).view(np.uint32).__rshift__(16).astype(np.uint16).tobytes()
def write(path, tensors, first_seed, pool):
    header, offset = {}, 0
    for name, shape, _ in tensors:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode(); h += b" " * (-len(h) % 8)
    jobs = [(first_seed + i, int(np.prod(shape)), scale) for i, (_, shape, scale) in enumerate(tensors)]
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h))); f.write(h)
        for data in pool.imap(bf16, jobs, chunksize=1):
            f.write(data)
tensors = []
for i in range(layers):
    for p in ["q", "k", "v", "o"]:
        tensors.append((f"layers.{i}.attn.{p}.weight", [hidden, hidden], 0.02))
    tensors.append((f"layers.{i}.norm1.weight", [hidden], 1.0))
    tensors.append((f"layers.{i}.norm2.weight", [hidden], 1.0))
half = len(tensors) // 2
with multiprocessing.Pool() as pool:
    write(f"{out}/model-00001-of-00002.safetensors", tensors[:half], 0, pool)
    write(f"{out}/model-00002-of-00002.safetensors", tensors[half:], half, pool)
open(f"{out}/config.json", "w").write(json.dumps({"hidden_size": hidden, "num_layers": layers}))
PY
  touch "$model/.complete"
fi
files=("$model"/*.safetensors)
bytes=$(cat "${files[@]}" | wc -c)
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); model $(mib "$bytes") MiB in ${#files[@]} files; device $DEVICE"

rm -rf "$THAW_STORE" "$THAW_CACHE_DIR"
"$THAW" index model "$model" --tag bench-model -q > /dev/null
stored=$(du -sb "$THAW_STORE" | cut -f1)
echo "indexed: $(mib "$stored") MiB stored for $(mib "$bytes") MiB of files"

# One load: prints "wall_seconds stream_seconds tensor_bytes reference_gbps store_chunks
# peak_rss_kib".
thaw_load() {
  local t0 t1 json
  t0=$(now)
  json=$(/usr/bin/time -f %M -o "$work/rss" "$THAW" weights load bench-model --device "$DEVICE" --json -q "$@")
  t1=$(now)
  echo "$json" | python3 -c '
import json, sys
r = json.load(sys.stdin); t0, t1 = float(sys.argv[1]), float(sys.argv[2])
ref, rep = r["reference"], r["report"]
gbps = ref["bytes"] / ref["seconds"] / 1e9 if ref else 0
print("%.4f %.4f %d %.3f %d %s" % (t1 - t0, rep["seconds"], rep["tensor_bytes"], gbps, rep["sources"]["store_chunks"], sys.argv[3]))' "$t0" "$t1" "$(cat "$work/rss")"
}
timed() { local t0; t0=$(now); "$@" > /dev/null; awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.4f\n", b - a}'; }

# Cold store: empty thaw cache, page cache dropped (fills the disk cache for the warm rows).
drop_page_cache
read -r cold_wall cold_stream tensor_bytes _ cold_store_chunks _ < <(thaw_load --no-reference)
echo "cold (object store only, empty thaw cache): ${cold_wall}s wall, $(gbps "$tensor_bytes" "$cold_wall") GB/s, $cold_store_chunks chunks from the store"

read -r _ _ _ reference_gbps _ _ < <(thaw_load)
rows=()
for cache in warm cold; do
  [ "$cache" = cold ] && [ "$can_drop" != yes ] && { echo "(cold page cache rows need root: skipped)"; continue; }
  thaw_w=(); thaw_s=(); cat_w=(); st_w=(); rss_k=()
  for _ in $(seq "$RUNS"); do
    [ "$cache" = cold ] && drop_page_cache
    read -r w s _ _ store_chunks rss < <(thaw_load --no-reference)
    [ "$store_chunks" = 0 ] || echo "warning: a warm load read $store_chunks chunks from the store" >&2
    thaw_w+=("$w"); thaw_s+=("$s"); rss_k+=("$rss")
    [ "$cache" = cold ] && drop_page_cache
    cat_w+=("$(timed cat "${files[@]}")")
    [ "$cache" = cold ] && drop_page_cache
    st_w+=("$("$BASELINE" "${files[@]}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])')")
  done
  tw=$(printf '%s\n' "${thaw_w[@]}" | median); ts=$(printf '%s\n' "${thaw_s[@]}" | median)
  [ "$cache" = warm ] && warm_stream=$ts
  cw=$(printf '%s\n' "${cat_w[@]}" | median); sw=$(printf '%s\n' "${st_w[@]}" | median)
  rows+=("$(printf '%-5s %-44s %8s %7s   (x cat)' "$cache" "thaw weights load (warm thaw cache), wall" "$tw" "$(gbps "$tensor_bytes" "$tw")") $(ratio "$cw" "$tw")x  (x safetensors) $(ratio "$sw" "$tw")x")
  rows+=("$(printf '%-5s %-44s %8s %7s' "$cache" "  of which streaming (report.seconds)" "$ts" "$(gbps "$tensor_bytes" "$ts")")")
  rows+=("$(printf '%-5s %-44s %8s %7s' "$cache" "cat FILES > /dev/null" "$cw" "$(gbps "$bytes" "$cw")")")
  rows+=("$(printf '%-5s %-44s %8s %7s' "$cache" "safetensors crate: mmap + copy to host" "$sw" "$(gbps "$tensor_bytes" "$sw")")")
  rss=$(printf '%s\n' "${rss_k[@]}" | median)
  rows+=("$(printf '%-5s %-44s %8s MiB (model %s MiB)' "$cache" "thaw weights load: peak RSS" "$((rss / 1024))" "$(mib "$tensor_bytes")")")
done
echo
printf '%-5s %-44s %8s %7s\n' "page" "path" "seconds" "GB/s"
printf '%s\n' "${rows[@]}"
echo "reference ($DEVICE): $reference_gbps GB/s; warm streaming / reference = $(ratio "$(gbps "$tensor_bytes" "$warm_stream")" "$reference_gbps")x"

# GPU baselines, page cache warm, medians of RUNS: safetensors straight to the device, and torch
# loading to host memory, then copying to the device (what a plain `.to("cuda")` loader does).
if [[ "$DEVICE" == cuda* ]] && python3 -c "import torch, safetensors" 2>/dev/null; then
  python_gpu_load() {
    python3 - "$1" "${files[@]}" <<'PY'
import sys, time, torch
from safetensors.torch import load_file
how, files = sys.argv[1], sys.argv[2:]
torch.cuda.init(); torch.zeros(1, device="cuda"); torch.cuda.synchronize()
t0 = time.perf_counter()
for f in files:
    if how == "direct":
        load_file(f, device="cuda")
    else:
        {k: v.to("cuda") for k, v in load_file(f, device="cpu").items()}
torch.cuda.synchronize()
print(time.perf_counter() - t0)
PY
  }
  for how in direct host; do
    times=()
    for _ in $(seq "$RUNS"); do times+=("$(python_gpu_load "$how")"); done
    t=$(printf '%s\n' "${times[@]}" | median)
    label="safetensors.torch.load_file(device=cuda)"
    [ "$how" = host ] && label="torch: load_file(device=cpu), then .to(cuda)"
    echo "$label warm page cache: ${t}s ($(gbps "$tensor_bytes" "$t") GB/s), thaw warm streaming / it = $(ratio "$t" "$warm_stream")x faster"
  done
fi
