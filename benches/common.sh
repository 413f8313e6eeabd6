# Sourced by the benchmark scripts: builds thaw in release mode and defines the shared helpers.
# Sets RUNS (default 3), BENCH_DIR (default ./.thaw-bench, created), THAW (the release binary)
# and can_drop (whether the page cache can be dropped: needs root). THAW_PREBUILT=DIR takes the
# binaries from DIR instead of building them (a machine without a Rust toolchain: benches/gpu.sh).
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS=${RUNS:-3}
BENCH_DIR=$(realpath -m "${BENCH_DIR:-.thaw-bench}")
mkdir -p "$BENCH_DIR"
if [ -n "${THAW_PREBUILT:-}" ]; then
  THAW="$THAW_PREBUILT/thaw"
else
  cargo build --release --quiet --jobs "${THAW_BUILD_JOBS:-2}"
  target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  THAW="$target_dir/release/thaw"
fi

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# median_of X...: the median of the arguments.
median_of() { printf '%s\n' "$@" | median; }
# ratio A B: A / B to two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
# since T0: seconds from T0 (a `now`) to now, to the millisecond.
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}'; }
drop_page_cache() { sync; { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null || true; }
mib() { awk -v b="$1" 'BEGIN {printf "%.0f", b / 1048576}'; }
can_drop=no; { echo 1 > /proc/sys/vm/drop_caches; } 2>/dev/null && can_drop=yes

# start_registry DIR: a docker-registry on a free loopback port storing under DIR (emptied),
# stopped when the script exits; sets registry_addr (127.0.0.1:PORT).
start_registry() {
  local dir=$1 port
  rm -rf "$dir"; mkdir -p "$dir"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$dir/data" "$port" > "$dir/config.yml"
  docker-registry serve "$dir/config.yml" > "$dir/log" 2>&1 &
  registry_pid=$!
  trap 'kill $registry_pid 2>/dev/null || true' EXIT
  registry_addr="127.0.0.1:$port"
  until curl -fs "http://$registry_addr/v2/" > /dev/null; do sleep 0.1; done
}

# require_tools SETUP TOOL...: exits naming the first TOOL missing and the SETUP script that
# installs it.
require_tools() {
  local setup=$1 tool
  shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run $setup" >&2; exit 1; }
  done
}

# python_root ROOT: the host's CPython ($PYTHON_PREFIX, without site-packages and tests) under
# ROOT, with /usr/bin/python3 and a passwd file: an image's interpreter layer.
python_root() {
  local root=$1 pyver
  pyver=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  mkdir -p "$root$PYTHON_PREFIX"
  tar -C "$PYTHON_PREFIX" --exclude="./lib/python$pyver/site-packages" --exclude='./lib/python*/test' -cf - . |
    tar -C "$root$PYTHON_PREFIX" -xf -
  mkdir -p "$root$PYTHON_PREFIX/lib/python$pyver/site-packages" "$root/usr/bin" "$root/tmp" "$root/etc"
  ln -sf "$PYTHON_PREFIX/bin/python3" "$root/usr/bin/python3"
  echo 'root:x:0:0::/root:/bin/sh' > "$root/etc/passwd"
}

# system_python_root ROOT: Debian's /usr/bin/python3 under ROOT at the same paths: the
# interpreter, its standard library without tests, packages and the larger unused parts, the
# extension modules and the shared libraries they load; /usr/bin/python3 and a passwd file.
system_python_root() {
  local root=$1 exe stdlib dynload lib
  read -r exe stdlib dynload < <(/usr/bin/python3 -c 'import os, sys, sysconfig; print(os.path.realpath(sys.executable), sysconfig.get_paths()["stdlib"], sysconfig.get_config_var("DESTSHARED"))')
  mkdir -p "$root$stdlib" "$root/usr/bin" "$root/etc" "$root/tmp"
  tar -C "$stdlib" --exclude=./test --exclude=site-packages --exclude=dist-packages --exclude=idlelib \
    --exclude=tkinter --exclude=turtledemo --exclude=ensurepip --exclude=lib2to3 --exclude='./config-*' \
    --exclude=__pycache__ -cf - . | tar -C "$root$stdlib" -xf -
  for lib in $( { echo "$exe"; ls "$dynload"/*.so; } | xargs ldd 2>/dev/null | awk '/=> \// {print $3}' | sort -u) "$exe"; do
    mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"
  done
  mkdir -p "$root/lib64"; cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
  ln -sf "$exe" "$root/usr/bin/python3"
  echo 'root:x:0:0::/root:/bin/sh' > "$root/etc/passwd"
}

# host_libraries ROOT DIR...: copies into ROOT, at their host paths, the shared libraries that
# the interpreter and every *.so under DIR... load (ldd), except those found under $PYTHON_PREFIX
# or the DIRs themselves, plus the dynamic loader.
host_libraries() {
  local root=$1 pyver libs lib; shift
  pyver=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  local keep=(-e "^$PYTHON_PREFIX")
  for dir in "$@"; do keep+=(-e "^$dir"); done
  libs=$( { find "$@" -name '*.so*' -type f -print0
            printf '%s\0' "$PYTHON_PREFIX/bin/python$pyver"; } |
    { xargs -0 ldd 2>/dev/null || true; } | awk '/=> \// {print $3}' | sort -u |
    { grep -v "${keep[@]}" || true; })
  for lib in $libs; do mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"; done
  mkdir -p "$root/lib64"; cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
}

# build_numpy_image WORK: the image benches/image.sh and benches/containerd.sh run, as the OCI
# layout WORK/layout (tag py), built once (WORK/layout/.complete marks it done): the Python
# install at $PYTHON_PREFIX with numpy (layer 1), the shared libraries it loads (layer 2) and a
# 384 MiB model file (layer 3); its command imports numpy and prints "ready VERSION".
build_numpy_image() {
  local work=$1 layout=$1/layout
  mkdir -p "$work"
  [ -e "$layout/.complete" ] && return 0
  rm -rf "$layout" "$work/bundle"
  echo "building the image from $PYTHON_PREFIX (once)"
  umoci init --layout "$layout" && umoci new --image "$layout:py"
  umoci unpack --image "$layout:py" "$work/bundle" > /dev/null
  mkdir -p "$work/bundle/rootfs$PYTHON_PREFIX"
  cp -a "$PYTHON_PREFIX/." "$work/bundle/rootfs$PYTHON_PREFIX/"
  mkdir -p "$work/bundle/rootfs/tmp" "$work/bundle/rootfs/usr/bin"
  ln -sf "$PYTHON_PREFIX/bin/python3" "$work/bundle/rootfs/usr/bin/python3"
  umoci repack --image "$layout:py" "$work/bundle"
  rm -rf "$work/bundle"
  umoci unpack --image "$layout:py" "$work/bundle" > /dev/null
  host_libraries "$work/bundle/rootfs" "$PYTHON_PREFIX"
  umoci repack --image "$layout:py" "$work/bundle"
  rm -rf "$work/bundle"
  umoci unpack --image "$layout:py" "$work/bundle" > /dev/null
  mkdir -p "$work/bundle/rootfs/models"
  head -c $((384 << 20)) /dev/urandom > "$work/bundle/rootfs/models/model.bin"
  umoci repack --image "$layout:py" "$work/bundle"
  rm -rf "$work/bundle"
  umoci config --image "$layout:py" --config.cmd=python3 --config.cmd=-c \
    --config.cmd="import numpy; print('ready', numpy.__version__)" > /dev/null
  touch "$layout/.complete"
}
