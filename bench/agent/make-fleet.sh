#!/usr/bin/env bash
# Writes a simulated fleet of N devices (default 64) as JSON on stdout, in the
# format of examples/fleet-8x-h100.json, for `gpucluster agent --fleet FILE`.
#   bench/agent/make-fleet.sh 64 > /tmp/fleet-64.json
set -euo pipefail
count=${1:-64}
host=${2:-load-node-01}
if ! [[ $count =~ ^[0-9]+$ ]] || (( count < 1 || count > 4096 )); then
  echo "usage: $0 [COUNT 1..4096] [HOST]" >&2
  exit 2
fi
printf '{\n  "host": "%s",\n  "devices": [\n' "$host"
for ((i = 0; i < count; i++)); do
  used=$(( 40000000000 + (i * 613566757) % 40000000000 ))
  util=$(( (i * 37) % 101 ))
  power=$(( 300 + (i * 53) % 390 ))
  temp=$(( 45 + (i * 7) % 35 ))
  sep=$([[ $i -lt $((count - 1)) ]] && echo "," || echo "")
  cat <<DEVICE
    {
      "device_id": "cuda:$i",
      "name": "NVIDIA H100 80GB HBM3",
      "vendor": "nvidia",
      "device_type": "cuda",
      "memory_bytes": 85899345920,
      "compute_units": 132,
      "memory_bandwidth_gbps": 3350.0,
      "compute_capability": "9.0",
      "max_clock_mhz": 1980,
      "driver_version": "550.54.15",
      "power_limit_watts": 700,
      "temperature_slowdown_celsius": 87,
      "temperature_shutdown_celsius": 92,
      "supports_fp64": true,
      "supports_tensor_cores": true,
      "uuid": "GPU-$(printf '%08x' "$i")-0000-4000-8000-$(printf '%012x' "$i")",
      "pci_bus_id": "00000000:$(printf '%02X' $(( i % 256 ))):$(printf '%02X' $(( i / 256 ))).0",
      "metrics": {
        "memory_used_bytes": $used,
        "memory_total_bytes": 85899345920,
        "compute_utilization_percent": $util,
        "power_watts": $power,
        "temperature_celsius": $temp,
        "clock_rate_mhz": 1980
      }
    }$sep
DEVICE
done
printf '  ]\n}\n'
