#!/usr/bin/env bash
# Installs the mount benchmark's baselines: squashfuse and squashfs-tools (Debian packages), and
# erofsfuse + mkfs.erofs built from Debian trixie's erofs-utils source (bookworm's 1.5 has no
# erofsfuse and no zstd). Run as root (or with sudo) once before benches/mount.sh.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

$SUDO apt-get install -y -qq squashfuse squashfs-tools fuse3 bc nginx-light wrk >/dev/null

if ! command -v erofsfuse >/dev/null 2>&1; then
  echo "setup-baselines: building erofs-utils (erofsfuse) from Debian trixie's source package"
  sources=/etc/apt/thaw-trixie-src
  $SUDO mkdir -p "$sources/sources.list.d"
  echo "deb-src http://deb.debian.org/debian trixie main" | $SUDO tee "$sources/sources.list.d/trixie-src.list" >/dev/null
  apt_src=(-o "Dir::Etc::sourcelist=$sources/sources.list.d/trixie-src.list" -o "Dir::Etc::sourceparts=-" -o "APT::Get::List-Cleanup=0")
  $SUDO apt-get "${apt_src[@]}" update -qq
  $SUDO apt-get install -y -qq build-essential autoconf automake libtool pkg-config \
    libfuse3-3 liblz4-dev libzstd-dev uuid-dev zlib1g-dev >/dev/null
  build=$(mktemp -d)
  # libfuse3-dev's headers and pkg-config file, unpacked beside the build: installing the package
  # drags in libselinux1-dev, whose dependencies some bookworm snapshots cannot satisfy.
  (cd "$build" && apt-get download libfuse3-dev >/dev/null && dpkg-deb -x libfuse3-dev_*.deb fuse-dev)
  export PKG_CONFIG_PATH="$build/fuse-dev/usr/lib/x86_64-linux-gnu/pkgconfig"
  sed -i "s|^prefix=.*|prefix=$build/fuse-dev/usr|" "$PKG_CONFIG_PATH/fuse3.pc"
  ln -sf /usr/lib/x86_64-linux-gnu/libfuse3.so.3 "$build/fuse-dev/usr/lib/x86_64-linux-gnu/libfuse3.so"
  (cd "$build" && apt-get "${apt_src[@]}" source --download-only erofs-utils >/dev/null)
  tar -C "$build" -xf "$build"/erofs-utils_*.orig.tar.*
  src=$(find "$build" -maxdepth 1 -type d -name 'erofs-utils-*' | head -n1)
  (cd "$src" && ./autogen.sh >/dev/null 2>&1 \
     && ./configure --quiet --enable-fuse --with-libzstd \
        LDFLAGS="-L$build/fuse-dev/usr/lib/x86_64-linux-gnu" \
     && make -j"$(nproc)" >/dev/null && $SUDO make install >/dev/null)
  rm -rf "$build"
fi
for tool in squashfuse mksquashfs erofsfuse mkfs.erofs; do
  command -v "$tool" >/dev/null || { echo "setup-baselines: $tool missing" >&2; exit 1; }
done
echo "setup-baselines: ok ($(mkfs.erofs --version 2>&1 | head -n1))"
