#!/usr/bin/env bash
# Memory of a mount daemon under parallel readers (issue: bounded memory). A mount with a small
# memory tier (--memory-cache-bytes, default 16MiB) is read by READERS (16) parallel readers
# through a tree of FILES (16) incompressible files of FILE_MIB (128) MiB each: once cold (chunks
# from the store) and once warm (from the disk cache, read through thaw: --no-passthrough).
# The daemon's resident anonymous memory (RssAnon) and threads are sampled every 0.1 s; the
# baseline is the memory budget the mount was given.
#
#   benches/memory.sh
# Env: BENCH_DIR (default ./.thaw-bench), READERS, FILES, FILE_MIB, MEMORY (default 16MiB).
# Needs root (mounts, dropping the page cache).
set -euo pipefail
source "$(dirname "$0")/common.sh"
[ "$can_drop" = yes ] || { echo "benches/memory.sh needs root (mounts, page-cache drops)" >&2; exit 1; }
READERS=${READERS:-16}
FILES=${FILES:-16}
FILE_MIB=${FILE_MIB:-128}
MEMORY=${MEMORY:-16MiB}

dir="$BENCH_DIR/memory"
src="$dir/src"; store="$dir/store"; cache="$dir/cache"; mnt="$dir/mnt"; run="$dir/run"
mkdir -p "$src" "$mnt"
for i in $(seq 1 "$FILES"); do
  f="$src/f$i"
  [ "$(stat -c %s "$f" 2>/dev/null || echo 0)" = $((FILE_MIB << 20)) ] ||
    head -c $((FILE_MIB << 20)) /dev/urandom > "$f"
done
thaw() { "$THAW" --store "$store" --cache-dir "$cache" --memory-cache-bytes "$MEMORY" "$@"; }
rm -rf "$store" "$cache" "$run"
THAW_RUNTIME_DIR="$run" thaw -q index dir "$src" --tag mem > /dev/null
budget=$(python3 -c "
import re,sys
m=re.fullmatch(r'(\d+)\s*([KMG]i?B)?', sys.argv[1]); n=int(m.group(1)); u=(m.group(2) or 'B')[0]
print(n * {'B':1,'K':1<<10,'M':1<<20,'G':1<<30}[u])" "$MEMORY")

# kib_of PID FIELD: a /proc/PID/status field in KiB (Threads: a count).
kib_of() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# pass NAME MOUNT-OPTIONS...: mounts, reads every file with READERS readers, samples the daemon.
pass() {
  local name=$1 pid peak=0 peak_threads=0 started took idle idle_threads
  shift
  mountpoint -q "$mnt" && THAW_RUNTIME_DIR="$run" thaw umount "$mnt" >/dev/null 2>&1 || true
  drop_page_cache
  said=$(THAW_RUNTIME_DIR="$run" thaw mount mem "$mnt" --daemon --no-prefetch --no-trace "$@" 2>&1)
  pid=$(sed -n 's/.*(pid \([0-9]*\),.*/\1/p' <<< "$said")
  local base; base=$(kib_of "$pid" RssAnon)
  started=$(now)
  (
    for r in $(seq 0 $((READERS - 1))); do
      (for i in $(seq 1 "$FILES"); do
         [ $(( (i + r) % READERS )) -lt $(( (FILES + READERS - 1) / READERS )) ] &&
           dd if="$mnt/f$i" of=/dev/null bs=1M status=none
       done) &
    done
    wait
  ) &
  local readers=$!
  while kill -0 "$readers" 2>/dev/null; do
    local rss threads
    rss=$(kib_of "$pid" RssAnon); threads=$(kib_of "$pid" Threads)
    [ "$rss" -gt "$peak" ] && peak=$rss
    [ "$threads" -gt "$peak_threads" ] && peak_threads=$threads
    sleep 0.1
  done
  took=$(since "$started")
  sleep 5
  idle=$(kib_of "$pid" RssAnon); idle_threads=$(kib_of "$pid" Threads)
  THAW_RUNTIME_DIR="$run" thaw umount "$mnt" >/dev/null
  local read_mib=$((FILES * FILE_MIB))
  printf '%-5s %5d MiB in %6.2f s | RssAnon: start %4d MiB, peak %5d MiB (%s x the %d MiB budget), 5 s idle %5d MiB | threads: peak %3d, idle %3d\n' \
    "$name" "$read_mib" "$took" $((base / 1024)) $((peak / 1024)) "$(ratio $((peak * 1024)) "$budget")" \
    $((budget >> 20)) $((idle / 1024)) "$peak_threads" "$idle_threads"
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
echo "tree: $FILES files x $FILE_MIB MiB (incompressible), $READERS readers, --memory-cache-bytes $MEMORY"
pass cold
pass warm --no-passthrough
