#!/usr/bin/env bash
# Installs the Debian packages gpucluster needs to build, test and benchmark.
# Idempotent: installs only what is missing. Needs root (uses sudo if present).
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libcli11-dev libfmt-dev libspdlog-dev
  libboost-dev rapidjson-dev libcpp-httplib-dev libssl-dev zlib1g-dev libbrotli-dev
  clang-format python3 python3-pytest python3-pytest-asyncio python3-dev pybind11-dev python3-pybind11 python3-setuptools python3-pip python3-venv
  prometheus wrk curl clang-14 libclang-rt-14-dev patchelf systemd
  librocm-smi64-1 librocm-smi-dev
  faketime etcd-server
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "bootstrap: all ${#packages[@]} packages already installed"
  exit 0
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "bootstrap: run as root (or install sudo) to install: ${missing[*]}" >&2; exit 1; }
  as_root=(sudo)
fi
echo "bootstrap: installing ${missing[*]}"
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
