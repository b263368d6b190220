#!/usr/bin/env bash
# Real-GPU check for the nvml backend, prepared for a lent NVIDIA machine.
#   scripts/gpu-check.sh [OUT_DIR]
# 1. uses build/release/gpucluster (built here, or carried with its shared
#    libraries in build/release/lib: see scripts/carry-libs.sh) or builds it;
# 2. lists the GPUs: gpucluster devices --backend nvml --json;
# 3. samples for 30 s at 1 s while a PyTorch matmul loop loads GPU 0, with
#    nvidia-smi queried at the same moments;
# 4. prints per-field differences (scripts/gpu_compare.py) and the sampler's
#    CPU time per device per tick.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-docs/gpu-check}}
mkdir -p "$out"
seconds=${GPU_CHECK_SECONDS:-30}
bin=build/release/gpucluster
# Carried from a Debian 12 build: a copy whose RPATH ($ORIGIN) finds the libraries beside it.
[ -x build/release/lib/gpucluster ] && bin=build/release/lib/gpucluster
if ! "$bin" --version >/dev/null 2>&1; then
  echo "gpu-check: building (no usable $bin)"
  cmake --preset release -DGPUCLUSTER_BUILD_TESTS=OFF -DGPUCLUSTER_BUILD_BENCH=OFF >/dev/null
  cmake --build --preset release --target gpucluster
fi

{ nvidia-smi -L; nvidia-smi --query-gpu=driver_version,name,pci.bus_id --format=csv; } | tee "$out/nvidia-smi.txt"
"$bin" devices --backend nvml --json | tee "$out/devices.json"

echo "gpu-check: ${seconds}s of sampling under load"
python3 - "$seconds" >"$out/load.txt" 2>&1 <<'PY' &
import sys, time, torch
end = time.time() + float(sys.argv[1]) + 3
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
n = 0
while time.time() < end:
    c = a @ b
    n += 1
    if n % 50 == 0:
        torch.cuda.synchronize()
print(f"matmuls: {n}")
PY
load=$!
sleep 2  # let the load ramp up
nvidia-smi --query-gpu=timestamp,index,memory.used,utilization.gpu,power.draw,temperature.gpu,clocks.sm,memory.reserved \
  --format=csv,noheader,nounits -lms 1000 >"$out/nvidia-smi.csv" &
smi=$!
/usr/bin/time -f "time: user %U s, system %S s, elapsed %e s, max RSS %M KiB" \
  "$bin" watch --backend nvml --interval 1s --duration "${seconds}s" --json >"$out/watch.jsonl" 2>"$out/watch.stderr"
kill "$smi" 2>/dev/null || true
wait "$load" || true
cat "$out/watch.stderr"
python3 scripts/gpu_compare.py "$out/watch.jsonl" "$out/nvidia-smi.csv" "$out/watch.stderr" | tee "$out/compare.txt"
