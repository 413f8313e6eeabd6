#!/usr/bin/env bash
# Cold-start receipts (issue: cold-start receipts): `thaw bench coldstart` on a reference
# inference server, every path against the naive pull + unpack + run, plus the utilisation model.
#
# The image is built from registry packages only (PyPI) and pushed to a local registry:
#   layer 1  the host's CPython (its prefix without site-packages) and the shared libraries it
#            and the wheels load
#   layer 2  numpy, onnxruntime, tokenizers, safetensors (pip install --target /opt/site)
#   layer 3  the model: a BPE tokenizer trained here, an embedding table (safetensors) and a
#            two-layer MLP (ONNX), random weights, about 330 MiB
#   layer 4  server.py: loads the tokenizer, the embeddings and the ONNX session, runs one
#            inference, then answers HTTP; ready when GET / answers (one more inference).
# The torch CPU wheel lives on download.pytorch.org, outside PyPI (PyPI's Linux torch needs the
# CUDA wheels); onnxruntime is the CPU inference runtime here. PACKAGES adds more wheels.
#
#   benches/coldstart.sh     needs root, docker-registry, umoci, skopeo, runc, criu (scripts/setup)
# Env: RUNS (default 3), BENCH_DIR, STORE_LATENCY_MS (e.g. 20: a remote object store),
#      PACKAGES (extra pip packages for layer 2), PYTHON_PREFIX (default: python3's),
#      PATHS (comma-separated paths of `thaw bench coldstart --paths`, default all),
#      WHOLE_MEMORY=1 (the snapshot path restores all memory first: --no-lazy-pages).
set -euo pipefail
source "$(dirname "$0")/common.sh"
[ "$can_drop" = yes ] || { echo "benches/coldstart.sh needs root" >&2; exit 1; }
require_tools scripts/setup docker-registry umoci skopeo runc
PYTHON_PREFIX=${PYTHON_PREFIX:-$(python3 -c 'import sys; print(sys.base_prefix)')}
PYVER=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
PORT=${PORT:-18731}

work="$BENCH_DIR/coldstart"
layout="$work/layout"
mkdir -p "$work"
if [ ! -e "$layout/.complete" ]; then
  rm -rf "$layout" "$work/bundle" "$work/build"
  echo "building the reference image from $PYTHON_PREFIX and PyPI (once)"
  umoci init --layout "$layout" && umoci new --image "$layout:server"
  add_layer() {  # add_layer FUNCTION: unpack, let FUNCTION change the rootfs, repack
    umoci unpack --image "$layout:server" "$work/bundle" > /dev/null
    "$1" "$work/bundle/rootfs"
    umoci repack --image "$layout:server" "$work/bundle"
    rm -rf "$work/bundle"
  }
  python_layer() { python_root "$1"; }
  packages_layer() {
    local root=$1
    python3 -m pip install --quiet --no-warn-script-location --target "$root/opt/site" \
      numpy onnxruntime tokenizers safetensors ${PACKAGES:-}
    # The shared libraries the interpreter and every extension module load, from the host.
    host_libraries "$root" "$root$PYTHON_PREFIX" "$root/opt/site"
  }
  model_layer() {
    local root=$1
    mkdir -p "$root/models" "$work/build"
    python3 -m pip install --quiet --no-warn-script-location --target "$work/build/site" \
      numpy onnx tokenizers safetensors
    PYTHONPATH="$work/build/site" python3 - "$root/models" "$PYTHON_PREFIX/lib/python$PYVER" <<'PY'
import glob, sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

out, stdlib = sys.argv[1], sys.argv[2]
# A byte-level BPE tokenizer trained on the standard library's sources.
corpus = sorted(glob.glob(f"{stdlib}/*.py"))[:200]
tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel()
tokenizer.train(corpus, trainers.BpeTrainer(vocab_size=8192, special_tokens=["[UNK]"]))
tokenizer.save(f"{out}/tokenizer.json")
rng = np.random.default_rng(7)
hidden, ffn = 2048, 16384
save_file({"embed": rng.standard_normal((8192, hidden), dtype=np.float32)},
          f"{out}/embeddings.safetensors")
w1 = numpy_helper.from_array(rng.standard_normal((hidden, ffn), dtype=np.float32) * 0.01, "w1")
w2 = numpy_helper.from_array(rng.standard_normal((ffn, hidden), dtype=np.float32) * 0.01, "w2")
graph = helper.make_graph(
    [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
     helper.make_node("MatMul", ["r", "w2"], ["y"])],
    "mlp",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, hidden])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, hidden])],
    initializer=[w1, w2])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.save(model, f"{out}/mlp.onnx")
PY
  }
  server_layer() {
    local root=$1
    mkdir -p "$root/app"
    cat > "$root/app/server.py" <<'PY'
"""A small inference server: tokenizer + embeddings + an ONNX MLP, one answer per GET."""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import onnxruntime as ort
from safetensors.numpy import load_file
from tokenizers import Tokenizer

tokenizer = Tokenizer.from_file("/models/tokenizer.json")
embed = load_file("/models/embeddings.safetensors")["embed"]
session = ort.InferenceSession("/models/mlp.onnx", providers=["CPUExecutionProvider"])


def infer(text):
    ids = tokenizer.encode(text).ids
    x = embed[ids].mean(axis=0, keepdims=True)
    y = session.run(None, {"x": x})[0]
    return {"tokens": len(ids), "norm": float(np.linalg.norm(y))}


infer("warm up")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(infer(self.path)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


port = int(os.environ.get("PORT", "8080"))
print(f"ready on {port}: numpy {np.__version__}, onnxruntime {ort.__version__}", flush=True)
HTTPServer(("127.0.0.1", port), Handler).serve_forever()
PY
  }
  add_layer python_layer
  add_layer packages_layer
  add_layer model_layer
  add_layer server_layer
  umoci config --image "$layout:server" --config.cmd=python3 --config.cmd=/app/server.py \
    --config.env=PYTHONPATH=/opt/site --config.env=PATH=/usr/bin:/bin \
    --config.env=PORT=$PORT --config.workingdir=/app > /dev/null
  touch "$layout/.complete"
fi

start_registry "$work/registry"
skopeo copy --dest-tls-verify=false "oci:$layout:server" "docker://$registry_addr/bench/server:latest" > /dev/null
echo "image: $(mib "$(du -sb "$layout/blobs" | cut -f1)") MiB compressed in 4 layers"

export THAW_STORE="$work/store"
rm -rf "$THAW_STORE"
latency=()
[ -n "${STORE_LATENCY_MS:-}" ] && latency=(--store-latency-ms "$STORE_LATENCY_MS")
result="$work/coldstart${STORE_LATENCY_MS:+-${STORE_LATENCY_MS}ms}.json"
"$THAW" bench coldstart "docker://$registry_addr/bench/server:latest" --insecure \
  --ready-url "http://127.0.0.1:$PORT/ready" --expect-output "ready on $PORT" \
  --runs "$RUNS" "${latency[@]}" ${PATHS:+--paths "$PATHS"} ${WHOLE_MEMORY:+--no-lazy-pages} --work-dir "$work/bench" \
  --save-json "$result" --plot "${result%.json}.svg"
# How much of the naive unpack is umoci's own cost: a plain `tar -xzf` of every layer (no whiteout
# handling, no mtree) is the least any runtime's unpack can take.
layers=$(python3 - "$layout" <<'PY'
import json, sys
layout = sys.argv[1]
blob = lambda d: f"{layout}/blobs/sha256/{d.split(':')[1]}"
index = json.load(open(f"{layout}/index.json"))
manifest = json.load(open(blob(index["manifests"][0]["digest"])))
print(" ".join(blob(layer["digest"]) for layer in manifest["layers"]))
PY
)
rm -rf "$work/untar"; mkdir -p "$work/untar"; drop_page_cache
t0=$(now)
for layer in $layers; do tar -xzf "$layer" -C "$work/untar"; done
echo "plain tar -xzf of the layers (the least an unpack takes): $(awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}')s"
rm -rf "$work/untar"
echo
echo "utilisation of benches/traces/bursty.csv under each path (keep-warm 10 s):"
"$THAW" bench utilisation --coldstart-json "$result" --trace benches/traces/bursty.csv --idle-timeout 10
echo "results: $result, plot: ${result%.json}.svg"
