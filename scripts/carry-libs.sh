#!/usr/bin/env bash
# Prepares build/release/lib for a run on another machine (the lent GPU
# machine, which lacks Debian's fmt, spdlog, cpp-httplib…): a copy of the
# gpucluster binary with RPATH $ORIGIN beside the shared libraries it needs,
# glibc and libstdc++ excepted. Needs patchelf (Debian package patchelf).
#   scripts/carry-libs.sh [BUILD_DIR]   (default build/release)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/release}
command -v patchelf >/dev/null || { echo "carry-libs: needs patchelf (apt-get install patchelf)" >&2; exit 1; }
rm -rf "$build/lib" && mkdir -p "$build/lib"
ldd "$build/gpucluster" | awk '/=>/ {print $1, $3}' |
  grep -Ev '^(libc\.so|libm\.so|libgcc_s|libstdc\+\+|ld-linux|libpthread|libdl)' |
  while read -r name path; do cp -L "$path" "$build/lib/$name"; done
cp "$build/gpucluster" "$build/lib/gpucluster"
patchelf --force-rpath --set-rpath '$ORIGIN' "$build/lib/gpucluster"
env -i "$build/lib/gpucluster" --version >/dev/null
du -sh "$build/lib"
