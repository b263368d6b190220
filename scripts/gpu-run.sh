#!/usr/bin/env bash
# One device-machine run: the nvml backend against a real NVIDIA GPU.
#   scripts/gpu-run.sh OUT_DIR
# Expects build/release/gpucluster and build/release/lib (libfmt, libspdlog) carried
# from a Debian 12 build. Writes OUT_DIR/log.txt and OUT_DIR/gpu-check.tgz.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?OUT_DIR}
work=$(mktemp -d)
bin=build/release/gpucluster
# Carried from a Debian 12 build: a copy whose RPATH ($ORIGIN) finds the libraries beside it,
# so nothing else on the machine (python, torch, nvidia-smi) sees them.
[ -x build/release/lib/gpucluster ] && bin=build/release/lib/gpucluster
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
  echo "== agent with the nvml backend"
  "$bin" agent --backend nvml,host --listen 127.0.0.1:0 --interval 500ms >"$work/agent.out" 2>"$work/agent.err" &
  agent=$!
  for _ in $(seq 50); do grep -q "^ready: " "$work/agent.out" 2>/dev/null && break; sleep 0.2; done
  url=$(grep -o "http://127.0.0.1:[0-9]*" "$work/agent.out" | head -1)
  echo "agent at $url"; sleep 2
  python3 - "$url" "$work" <<'PY'
import json, sys, urllib.request
url, work = sys.argv[1], sys.argv[2]
import urllib.error
def fetch(req):
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
def get(path):
    return fetch(url + path)
def post(path, body):
    return fetch(urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST"))
status, metrics = get("/metrics"); open(f"{work}/metrics.txt", "w").write(metrics)
print("GET /metrics", status, len(metrics), "bytes"); print("\n".join(l for l in metrics.splitlines() if "cuda" in l))
print("GET /v1/devices", *get("/v1/devices"))
print("POST /v1/select", *post("/v1/select", {"min_memory_bytes": 8 << 30}))
print("POST /v1/plan", *post("/v1/plan", {"strategy": "memory", "layers": 80, "layer_bytes": 1 << 30}))
print("GET /v1/devices/cuda:0/history", *get("/v1/devices/cuda:0/history?limit=3"))
PY
  kill -TERM "$agent"; wait "$agent"; echo "agent exit status $?"; cat "$work/agent.err"
  echo "== gpu-check"; GPU_CHECK_SECONDS=${GPU_CHECK_SECONDS:-30} bash scripts/gpu-check.sh "$work"
} 2>&1 | tee "$out/log.txt"
tar czf "$out/gpu-check.tgz" -C "$work" .
