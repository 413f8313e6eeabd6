#!/usr/bin/env bash
# Peer cache benchmarks (issue: peer cache cluster). Each row compares thaw with a named baseline
# measured in the same run and prints the ratio; docs/benchmarks.md quotes them.
#
#  1. Chunk serving: one `thaw cache-server` against nginx serving the same chunks as files from
#     disk (page cache), on the same machine, with the same clients: `thaw peers load-test` and,
#     when installed, wrk. Goal: >= 0.9x nginx's requests/s.
#  2. Start burst: 8 clients extract the same tag at once from an S3-compatible server (moto, which
#     logs every request), first straight from the store, then through 8 `thaw cache-server`s.
#     Reported: object-store pack reads per chunk and bytes read per stored byte. Goal: <= 1.05.
#
#   benches/setup-baselines.sh        once: nginx, wrk (and the mount baselines)
#   benches/cluster.sh
# Env: RUNS (default 3, medians), BENCH_DIR (default ./.thaw-bench), SERVE_MIB (size of the
#      served tag, default 256), BURST_MIB (size of the burst tag, default 64), NODES (default 8),
#      DURATION (seconds per wrk run, default 10), REQUESTS (per load-test run, default 20000).
set -euo pipefail
SERVE_MIB=${SERVE_MIB:-256}
BURST_MIB=${BURST_MIB:-64}
NODES=${NODES:-8}
DURATION=${DURATION:-10}
REQUESTS=${REQUESTS:-20000}
source "$(dirname "$0")/common.sh"
require_tools benches/setup-baselines.sh nginx moto_server curl openssl
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 200); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.05; done; echo "no answer from $1" >&2; exit 1; }

work="$BENCH_DIR/cluster"
rm -rf "$work"; mkdir -p "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true; }
trap cleanup EXIT
openssl rand -hex 32 > "$work/token"
export THAW_PEER_TOKEN_FILE="$work/token"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"

# --- 1. chunk serving: one peer against nginx -------------------------------------------------
export THAW_STORE="$work/store"
mkdir -p "$work/serve"
head -c $((SERVE_MIB * 3 / 4 * 1048576)) /dev/urandom > "$work/serve/weights.bin"
head -c $((SERVE_MIB / 4 * 1048576 * 3 / 4)) /dev/urandom | base64 > "$work/serve/vocab.txt"
"$THAW" index dir "$work/serve" --tag serve -q >/dev/null
chunks=$("$THAW" stats serve --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["combined"]["chunks"])')
peer_port=$(free_port)
"$THAW" cache-server --listen "127.0.0.1:$peer_port" --cache-dir "$work/peer-cache" \
  --memory-cache-bytes 2GiB > "$work/peer.out" 2> "$work/peer.log" &
pids+=($!)
wait_http "http://127.0.0.1:$peer_port/healthz"
peer="http://127.0.0.1:$peer_port"
# The warm-up writes every chunk, as the peer served and the client verified it, for nginx.
"$THAW" peers load-test serve --target "$peer" --requests 1 --save-chunks "$work/chunks" >/dev/null
ls "$work/chunks" > "$work/ids"
nginx_port=$(free_port)
cat > "$work/nginx.conf" <<CONF
worker_processes $(nproc);
pid $work/nginx.pid;
error_log $work/nginx.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$nginx_port;
    root $work/chunks;
    location / { default_type application/octet-stream; }
  }
}
CONF
nginx -c "$work/nginx.conf" -p "$work"
wait_http "http://127.0.0.1:$nginx_port/$(head -n1 "$work/ids")"
echo "serving: tag of $(mib "$(du -sb "$work/serve" | cut -f1)") MiB in $chunks chunks; one peer (memory cache) vs nginx $(nginx -v 2>&1 | cut -d/ -f2) (page cache), median of $RUNS runs"

load() { # load TARGET-ARGS... -> "rps p99_ms"
  "$THAW" peers load-test serve "$@" --requests "$REQUESTS" --concurrency 32 --no-verify --json \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["errors"]==0, r; print(r["requests_per_second"], r["p99_ms"])'
}
cat > "$work/wrk.lua" <<'LUA'
local ids = {}
for line in io.lines(os.getenv("IDS")) do ids[#ids + 1] = line end
local prefix = os.getenv("PREFIX")
local token = os.getenv("TOKEN")
local i = math.random(#ids)
request = function()
  i = i % #ids + 1
  local headers = {}
  if token ~= "" then headers["Authorization"] = "Bearer " .. token end
  return wrk.format("GET", prefix .. ids[i], headers)
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.1f %.3f %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(99) / 1000, summary.errors.status + summary.errors.read + summary.errors.connect + summary.errors.timeout))
end
LUA
wrk_load() { # wrk_load BASE PREFIX TOKEN -> "rps p99_ms"
  IDS="$work/ids" PREFIX="$2" TOKEN="$3" wrk -t "$(nproc)" -c 32 -d "${DURATION}s" -s "$work/wrk.lua" "$1" \
    | awk '/^RESULT/ { if ($4 != 0) { print "wrk saw " $4 " errors" > "/dev/stderr"; exit 1 } print $2, $3 }'
}
for run in $(seq "$RUNS"); do
  load --target "$peer" >> "$work/thaw-client-peer"
  load --url-template "http://127.0.0.1:$nginx_port/{id}" >> "$work/thaw-client-nginx"
  if command -v wrk >/dev/null; then
    wrk_load "$peer" "/v1/chunks/" "$(cat "$work/token")" >> "$work/wrk-peer"
    wrk_load "http://127.0.0.1:$nginx_port" "/" "" >> "$work/wrk-nginx"
  fi
done
row() { # row LABEL PEER-FILE NGINX-FILE
  local peer_rps nginx_rps peer_p99 nginx_p99
  peer_rps=$(cut -d' ' -f1 "$2" | median); nginx_rps=$(cut -d' ' -f1 "$3" | median)
  peer_p99=$(cut -d' ' -f2 "$2" | median); nginx_p99=$(cut -d' ' -f2 "$3" | median)
  printf '%-26s peer %8.0f req/s (p99 %6.2f ms)   nginx %8.0f req/s (p99 %6.2f ms)   ratio %sx\n' \
    "$1" "$peer_rps" "$peer_p99" "$nginx_rps" "$nginx_p99" "$(ratio "$peer_rps" "$nginx_rps")"
}
row "client thaw load-test" "$work/thaw-client-peer" "$work/thaw-client-nginx"
[ -f "$work/wrk-peer" ] && row "client wrk" "$work/wrk-peer" "$work/wrk-nginx"
kill "$(cat "$work/nginx.pid")"; rm -f "$work/nginx.pid"

# --- 2. start burst: NODES clients, with and without peers ------------------------------------
s3_port=$(free_port)
MOTO_ENABLE_RECORDING=1 MOTO_RECORDER_FILEPATH="$work/s3-requests.jsonl" \
  moto_server -H 127.0.0.1 -p "$s3_port" > "$work/moto.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$s3_port/" && break; sleep 0.1; done
curl -fsS -X PUT "http://127.0.0.1:$s3_port/burst" >/dev/null
export THAW_STORE="s3://burst/thaw" THAW_S3_ENDPOINT="http://127.0.0.1:$s3_port" THAW_S3_ALLOW_HTTP=true \
  AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
mkdir -p "$work/burst"
head -c $((BURST_MIB / 2 * 1048576)) /dev/urandom > "$work/burst/model.bin"
head -c $((BURST_MIB / 2 * 1048576 * 3 / 4)) /dev/urandom | base64 > "$work/burst/data.txt"
"$THAW" index dir "$work/burst" --tag burst -q >/dev/null
read -r burst_chunks burst_stored < <("$THAW" stats burst --json | python3 -c 'import json,sys; c=json.load(sys.stdin)["combined"]; print(c["chunks"], c["stored_bytes"])')
store_reads() { # pack GETs and bytes since the last reset
  python3 - "$work/s3-requests.jsonl" <<'PY'
import json, sys
n = b = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["method"] == "GET" and "/packs/" in r["url"]:
        n += 1
        rng = r["headers"].get("Range") or r["headers"].get("range")
        if rng:
            start, end = rng.split("=")[1].split("-")
            b += int(end) - int(start) + 1
print(n, b)
PY
}
burst() { # burst [GLOBAL-ARGS...] -> seconds
  local start end clients=()
  start=$(now)
  for i in $(seq "$NODES"); do
    "$THAW" "$@" --no-disk-cache -q extract burst "$work/out-$i" > /dev/null 2> "$work/client-$i.log" &
    clients+=($!)
  done
  for c in "${clients[@]}"; do wait "$c"; done
  end=$(now)
  rm -rf "$work"/out-*
  awk -v a="$start" -v b="$end" 'BEGIN {printf "%.2f", b - a}'
}
peer_list=""
for i in $(seq "$NODES"); do
  port=$(free_port)
  "$THAW" cache-server --listen "127.0.0.1:$port" --cache-dir "$work/node$i-cache" > /dev/null 2> "$work/node$i.log" &
  pids+=($!)
  wait_http "http://127.0.0.1:$port/healthz"
  peer_list="$peer_list${peer_list:+,}http://127.0.0.1:$port"
done
curl -fsS -X POST "http://127.0.0.1:$s3_port/moto-api/recorder/reset-recording" >/dev/null
direct_s=$(burst)
read -r direct_reads direct_bytes < <(store_reads)
curl -fsS -X POST "http://127.0.0.1:$s3_port/moto-api/recorder/reset-recording" >/dev/null
peers_s=$(burst --peers "$peer_list")
read -r peer_reads peer_bytes < <(store_reads)
echo "burst: $NODES clients extract a $BURST_MIB MiB tag ($burst_chunks chunks, $(mib "$burst_stored") MiB stored) at once from moto S3"
printf '%-26s %6s pack reads = %5.2f per chunk, %7.1f MiB = %5.2fx stored bytes, %6.2f s\n' \
  "straight from the store" "$direct_reads" "$(ratio "$direct_reads" "$burst_chunks")" \
  "$(awk -v b="$direct_bytes" 'BEGIN {print b/1048576}')" "$(ratio "$direct_bytes" "$burst_stored")" "$direct_s"
printf '%-26s %6s pack reads = %5.2f per chunk, %7.1f MiB = %5.2fx stored bytes, %6.2f s\n' \
  "through $NODES peers" "$peer_reads" "$(ratio "$peer_reads" "$burst_chunks")" \
  "$(awk -v b="$peer_bytes" 'BEGIN {print b/1048576}')" "$(ratio "$peer_bytes" "$burst_stored")" "$peers_s"
