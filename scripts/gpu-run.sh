#!/usr/bin/env bash
# One device-machine run: the nvml backend against a real NVIDIA GPU.
#   scripts/gpu-run.sh OUT_DIR
# Expects build/release/gpucluster and build/release/lib (libfmt, libspdlog) carried
# from a Debian 12 build. Writes OUT_DIR/log.txt and OUT_DIR/gpu-check.tgz.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?OUT_DIR}
work=$(mktemp -d)
export LD_LIBRARY_PATH="$PWD/build/release/lib:${LD_LIBRARY_PATH:-}"
bin=build/release/gpucluster
{
  echo "== environment"; uname -a; nvidia-smi -L
  ldconfig -p | grep -i nvidia-ml || echo "libnvidia-ml not in ldconfig"
  ls /usr/local/nvidia/lib64 2>/dev/null | grep nvidia-ml
  echo "== status (auto)"; "$bin" status --log-level info
  echo "== devices (nvml, table)"; "$bin" devices --backend nvml --log-level info
  echo "== devices (auto, json)"; "$bin" devices --json
  echo "== select 8GiB"; "$bin" select --backend nvml --min-memory 8GiB --explain
  echo "== select 1TiB (expect exit 3)"; "$bin" select --backend nvml --min-memory 1TiB; echo "exit $?"
  echo "== plan memory 80 layers x 1GiB"; "$bin" plan --backend nvml --strategy memory --layers 80 --layer-bytes 1GiB
  echo "== plan memory 80 layers x 4GiB (expect shortfall)"; "$bin" plan --backend nvml --strategy memory --layers 80 --layer-bytes 4GiB; echo "exit $?"
  echo "== gpu-check"; GPU_CHECK_SECONDS=${GPU_CHECK_SECONDS:-30} bash scripts/gpu-check.sh "$work"
} 2>&1 | tee "$out/log.txt"
tar czf "$out/gpu-check.tgz" -C "$work" .
