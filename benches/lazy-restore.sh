#!/usr/bin/env bash
# Container snapshots (issue 21): `thaw run --from-snapshot` with memory paged in lazily by
# thaw's lazy-pages server (a window of pages per fault from a lazy mount of the images, the
# rest in 4 MiB steps), and by CRIU's own daemon (`--lazy-pages-daemon criu`: a page per fault),
# against the full restore (`--no-lazy-pages`: every page read before the container runs), for
# a Python server holding
# SIZES MiB of memory (seeded pseudo-random bytes: incompressible, identical between runs) whose
# first request touches every tenth page (10 %). Each restore runs on a fresh node (its own
# empty cache and runtime directory, page cache dropped); the time is from the restore command
# to the first request's answer. Also the store's growth per snapshot against the raw CRIU
# images, and for a second snapshot of the same server (dedup).
#
#   benches/lazy-restore.sh     needs root, umoci, runc, criu (scripts/setup, scripts/install-criu)
# Env: RUNS (default 3), SIZES (MiB, default "1024 4096"), STORE_LATENCY_MS (default 0),
#      BENCH_DIR.
set -euo pipefail
source "$(dirname "$0")/common.sh"
[ "$can_drop" = yes ] || { echo "benches/lazy-restore.sh needs root" >&2; exit 1; }
require_tools scripts/setup umoci runc curl
SIZES=${SIZES:-"1024 4096"}
LATENCY=${STORE_LATENCY_MS:-0}
PORT=${PORT:-18741}
work="$BENCH_DIR/lazy-restore"
layout="$work/layout"
export THAW_STORE="$work/store"
mkdir -p "$work"

if [ ! -e "$layout/.complete" ]; then
  rm -rf "$layout" "$work/bundle"
  umoci init --layout "$layout" && umoci new --image "$layout:server"
  umoci unpack --image "$layout:server" "$work/bundle" > /dev/null
  system_python_root "$work/bundle/rootfs"
  mkdir -p "$work/bundle/rootfs/app"
  cat > "$work/bundle/rootfs/app/server.py" <<'PY'
import http.server, os, random, signal, sys
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 ignores signals it does not handle
mib, port = int(os.environ["MIB"]), int(os.environ["PORT"])
generator, mem = random.Random(7), bytearray()
for _ in range(mib):  # randbytes takes at most 256 MiB at once
    mem += generator.randbytes(1 << 20)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        # /work touches every tenth page; /ready nothing.
        total = sum(mem[i] for i in range(0, len(mem), 40960)) if self.path == "/work" else 0
        body = str(total).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
PY
  umoci repack --image "$layout:server" "$work/bundle" && rm -rf "$work/bundle"
  umoci config --image "$layout:server" --config.entrypoint=/usr/bin/python3 \
    --config.cmd=/app/server.py --config.env=PYTHONDONTWRITEBYTECODE=1 > /dev/null
  touch "$layout/.complete"
fi
# A fresh store: the first snapshot's growth is then every chunk of it.
rm -rf "$THAW_STORE"
"$THAW" index image "oci:$layout:server" --tag lazy-server --quiet > /dev/null

store_bytes() { du -sb "$THAW_STORE" | cut -f1; }
on_node() { THAW_CACHE_DIR="$1/cache" THAW_RUNTIME_DIR="$1/run" "${@:2}"; }

# snapshot NAME MIB: prints "raw stored" (bytes of the tree indexed, bytes the store grew).
snapshot() {
  local before after raw
  before=$(store_bytes)
  raw=$(on_node "$work/first" "$THAW" run lazy-server -e "MIB=$2" -e "PORT=$PORT" --snapshot "$1" \
    --snapshot-when-ready --ready-url "http://127.0.0.1:$PORT/ready" --ready-timeout 600 --quiet 2>&1 >/dev/null |
    python3 -c 'import re, sys; t = sys.stdin.read(); m = re.search(r"(\d+(?:\.\d+)?) (B|KiB|MiB|GiB) stored", t) or sys.exit(t); print(int(float(m[1]) * {"B": 1, "KiB": 1024, "MiB": 1 << 20, "GiB": 1 << 30}[m[2]]))')
  after=$(store_bytes)
  echo "$raw $((after - before))"
}

# restore NAME MODE RUN: seconds from `thaw run --from-snapshot` to the first /work answer.
restore() {
  local node="$work/node-$1-$2-$3" flags=() t0 pid seconds
  [ "$2" = whole ] && flags=(--no-lazy-pages)
  [ "$2" = criu ] && flags=(--lazy-pages-daemon criu)
  rm -rf "$node"; drop_page_cache
  t0=$(now)
  # env, not on_node: $! must be thaw itself for the kill below.
  env THAW_STORE_READ_LATENCY_MS="$LATENCY" THAW_CACHE_DIR="$node/cache" THAW_RUNTIME_DIR="$node/run" \
    "$THAW" run --from-snapshot "$1" "${flags[@]}" > /dev/null 2> "$node.log" &
  pid=$!
  until curl -fs -m 30 "http://127.0.0.1:$PORT/work" > /dev/null; do
    kill -0 $pid 2>/dev/null || { echo "restore of $1 ($2) failed:" >&2; cat "$node.log" >&2; exit 1; }
    sleep 0.005
  done
  seconds=$(since "$t0")
  kill -TERM $pid; wait $pid || true
  rm -rf "$node"
  echo "$seconds"
}

echo "lazy-pages restore vs full restore, time to the first answer (median of $RUNS, fresh node, store latency ${LATENCY} ms)"
printf '%-8s %10s %12s %10s %12s %12s %12s %14s\n' memory lazy_s criu_lazy_s whole_s "whole/lazy" raw_images stored second_stored
for mib in $SIZES; do
  name="lazy-$mib-$$"
  read -r raw stored < <(snapshot "$name" "$mib")
  read -r _ second < <(snapshot "$name-b" "$mib")
  lazy=(); criu=(); whole=()
  for run in $(seq "$RUNS"); do
    lazy+=("$(restore "$name" lazy "$run")")
    criu+=("$(restore "$name" criu "$run")")
    whole+=("$(restore "$name" whole "$run")")
  done
  l=$(median_of "${lazy[@]}"); c=$(median_of "${criu[@]}"); w=$(median_of "${whole[@]}")
  printf '%-8s %10s %12s %10s %11sx %10sMi %10sMi %12sMi\n' "${mib}MiB" "$l" "$c" "$w" "$(ratio "$w" "$l")" \
    "$(mib "$raw")" "$(mib "$stored")" "$(mib "$second")"
  echo "  runs lazy: ${lazy[*]}; criu daemon: ${criu[*]}; whole: ${whole[*]}"
  "$THAW" snapshot rm "$name" > /dev/null 2>&1; "$THAW" snapshot rm "$name-b" > /dev/null 2>&1
done
