#!/usr/bin/env bash
# The first start without a trace (issue 18): a torch inference image in two versions, started
# from a cold node with `thaw bench coldstart` against a distant store.
#
#   layer 1  the host's CPython (its prefix without site-packages) and the libraries it loads
#   layer 2  torch and its dependencies from PyPI (the CUDA build: PyPI has no CPU-only wheel;
#            it imports and runs on a CPU), pip install --target /opt/site
#   layer 3  server.py: imports torch, builds a small MLP, runs one inference, answers HTTP
# Version 2 rebuilds layer 2 with one package at another version (filelock) and changes
# server.py: what a new deploy of the same service looks like.
#
# Rows, for each STORE_LATENCY_MS (default "20 50"), each start from an empty local cache:
#   naive          skopeo copy of version 2 + umoci unpack + run
#   first (v1)     version 2 mounted with no trace of its own: version 1's trace carried over
#   lazy           version 2, nothing fetched ahead (records version 2's own trace)
#   trace          version 2 with its own trace
#   first (none)   version 2 in a store where no related trace exists: fetching on open and
#                  the full background fetch only
#
#   benches/firststart.sh    needs root, umoci, skopeo, runc, pigz, PyPI (once, for the wheels)
# Env: RUNS (default 1), BENCH_DIR, STORE_LATENCY_MS, WHEELS (a folder of pre-downloaded
#      wheels for `pip install --no-index --find-links`).
set -euo pipefail
RUNS=${RUNS:-1}
source "$(dirname "$0")/common.sh"
[ "$can_drop" = yes ] || { echo "benches/firststart.sh needs root" >&2; exit 1; }
require_tools scripts/setup umoci skopeo runc
PYTHON_PREFIX=${PYTHON_PREFIX:-$(python3 -c 'import sys; print(sys.base_prefix)')}
PORT=${PORT:-18741}
work="$BENCH_DIR/firststart"
layout="$work/layout"
mkdir -p "$work"
pip_from=()
[ -n "${WHEELS:-}" ] && pip_from=(--no-index --find-links "$WHEELS")

if [ ! -e "$layout/.complete" ]; then
  rm -rf "$layout"
  [ -e "$work/layers/site-v1/.installed" ] || rm -rf "$work/layers"
  mkdir -p "$work/layers"
  echo "building the torch reference image, two versions (once)"
  python=$work/layers/python
  rm -rf "$python" "$work/layers/site-v2" "$work/layers/filelock" "$work/layers"/app-v*
  python_root "$python"

  site1=$work/layers/site-v1
  if [ ! -e "$site1/.installed" ]; then
    python3 -m pip install --quiet --no-warn-script-location "${pip_from[@]}" --target "$site1/opt/site" torch numpy
    touch "$site1/.installed"
  fi
  # The shared libraries the interpreter and the extension modules load, from the host.
  host_libraries "$python" "$python$PYTHON_PREFIX" "$site1/opt/site"

  # Version 2: the same install with one package at another version.
  site2=$work/layers/site-v2
  cp -al "$site1" "$site2"
  rm -f "$site2/.installed"
  rm -rf "$site2"/opt/site/filelock "$site2"/opt/site/filelock-*.dist-info
  python3 -m pip install --quiet --no-deps --no-warn-script-location --target "$work/layers/filelock" 'filelock<4'
  cp -a "$work/layers/filelock/." "$site2/opt/site/"

  for version in 1 2; do
    app=$work/layers/app-v$version
    mkdir -p "$app/app"
    cat > "$app/app/server.py" <<PY
"""Inference server, version $version: a small torch MLP, one answer per GET."""
import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

import torch

torch.manual_seed(7)
model = torch.nn.Sequential(
    torch.nn.Linear(512, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 512)
).eval()


def infer(text):
    x = torch.tensor([[float(b) for b in text.encode()[:512].ljust(512, b" ")]])
    with torch.no_grad():
        return {"version": $version, "norm": float(model(x).norm())}


infer("warm up")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(infer(self.path)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


port = int(os.environ.get("PORT", "8080"))
print(f"ready on {port}: torch {torch.__version__}, version $version", flush=True)
HTTPServer(("127.0.0.1", port), Handler).serve_forever()
PY
    cat > "$work/layers/config.json" <<JSON
{"Cmd": ["python3", "/app/server.py"], "WorkingDir": "/app",
 "Env": ["PYTHONPATH=/opt/site", "PATH=/usr/bin:/bin", "PORT=$PORT"]}
JSON
    python3 "$(dirname "$0")/oci_layout.py" "$layout" "v$version" "$work/layers/config.json" \
      "$python" "$work/layers/site-v$version" "$app"
  done
  du -sb "$site1" | awk '{printf "layer 2 unpacked: %.0f MiB\n", $1 / 1048576}'
  rm -rf "$work/layers"
  touch "$layout/.complete"
fi

ready=(--ready-url "http://127.0.0.1:$PORT/ready" --expect-output "version 2" --runs "$RUNS")
for latency in ${STORE_LATENCY_MS:-20 50}; do
  echo "== store latency ${latency} ms"
  export THAW_STORE="$work/store"
  rm -rf "$THAW_STORE"
  "$THAW" bench coldstart "oci:$layout:v2" --previous-image "oci:$layout:v1" \
    --paths naive,first,lazy,trace --store-latency-ms "$latency" --tag bench/torch \
    "${ready[@]}" --work-dir "$work/bench" --save-json "$work/carried-${latency}ms.json"
  echo "-- the same version 2 in a store with no related trace"
  rm -rf "$THAW_STORE"
  "$THAW" bench coldstart "oci:$layout:v2" --paths first --store-latency-ms "$latency" \
    --tag bench/torch "${ready[@]}" --work-dir "$work/bench" --save-json "$work/none-${latency}ms.json"
done

# What the full fetch costs the application's own reads: 40 cold reads of torch's .py files
# (median and slowest, ms) on a mount that fetches everything in the background, against the
# same reads on a mount that fetches nothing ahead. Fetching on open is off in both, so every
# read is a demand read of its own.
probe() {
  rm -rf "$work/probe-cache"; mkdir -p "$work/probe-mnt"; drop_page_cache
  "$THAW" --cache-dir "$work/probe-cache" --store-read-latency-ms "$latency" mount bench/torch \
    "$work/probe-mnt" --daemon --no-trace --no-fetch-on-open "$@" 2>/dev/null
  python3 - "$work/probe-mnt/opt/site/torch" <<'PY'
import os, sys, time
files = sorted(os.path.join(d, f) for d, _, names in os.walk(sys.argv[1]) for f in names if f.endswith(".py"))
picked = files[:: max(1, len(files) // 40)][:40]
times = []
for path in picked:
    started = time.perf_counter()
    with open(path, "rb") as f:
        f.read()
    times.append(1000 * (time.perf_counter() - started))
times.sort()
print(f"{times[len(times) // 2]:.1f} {times[-1]:.1f}")
PY
  "$THAW" umount "$work/probe-mnt" 2>/dev/null
}
for latency in ${STORE_LATENCY_MS:-20 50}; do
  during=$(probe --fetch-all)
  alone=$(probe --no-prefetch)
  echo "demand reads at ${latency} ms, median / slowest: during the full fetch ${during/ / / } ms, with nothing in the background ${alone/ / / } ms" \
    "(median ratio $(awk -v a="${during%% *}" -v b="${alone%% *}" 'BEGIN {printf "%.2f", a / b}')x)"
done
