#!/usr/bin/env python3
"""Compares gpucluster's NVML samples with nvidia-smi's taken at the same moments.

usage: gpu_compare.py WATCH_JSONL NVIDIA_SMI_CSV WATCH_STDERR
WATCH_JSONL: `gpucluster watch --backend nvml --json` output (one object per tick).
NVIDIA_SMI_CSV: nvidia-smi --query-gpu=timestamp,index,memory.used,utilization.gpu,
                power.draw,temperature.gpu,clocks.sm,memory.reserved --format=csv,noheader,nounits -lms 1000
Our memory_used_bytes is NVML's total - free, which includes the memory the driver
reserves; nvidia-smi's memory.used leaves it out, so the reserved column is added back.
Prints, per field, the median and maximum absolute difference between each of our
samples and the nvidia-smi reading of the same GPU nearest in time, and the
sampler's CPU time per device per tick from the watch summary.
"""
import csv
import datetime
import json
import re
import statistics
import sys

FIELDS = [  # (ours, nvidia-smi column, scale from smi units to ours, unit)
    ("memory_used_bytes", 2, 1024 * 1024, "MiB"),
    ("compute_utilization_percent", 3, 1, "%"),
    ("power_watts", 4, 1, "W"),
    ("temperature_celsius", 5, 1, "C"),
    ("clock_rate_mhz", 6, 1, "MHz"),
]


def load_smi(path):
    rows = []
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if len(row) < 7:
                continue
            stamp = datetime.datetime.strptime(row[0].strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
            values = []
            for cell in row[2:8]:
                try:
                    values.append(float(cell))
                except ValueError:
                    values.append(None)  # "[N/A]"
            while len(values) < 6:
                values.append(None)  # an older nvidia-smi query without memory.reserved
            if values[0] is not None and values[5] is not None:
                values[0] += values[5]  # used + reserved = total - free, as NVML v1 reports it
            rows.append((stamp, int(row[1]), values))
    return rows


def main():
    watch_path, smi_path, stderr_path = sys.argv[1:4]
    smi = load_smi(smi_path)
    diffs = {name: [] for name, *_ in FIELDS}
    ticks = 0
    with open(watch_path) as f:
        for line in f:
            tick = json.loads(line)
            ticks += 1
            for device in tick["devices"]:
                metrics = device.get("metrics")
                if not metrics or not device["device_id"].startswith("cuda:"):
                    continue
                index = int(device["device_id"].split(":")[1])
                same_gpu = [r for r in smi if r[1] == index]
                if not same_gpu:
                    continue
                # nvidia-smi prints local time; compare by nearest moment.
                nearest = min(same_gpu, key=lambda r: abs(r[0] - metrics["timestamp"]))
                for k, (name, column, scale, _unit) in enumerate(FIELDS):
                    ours, theirs = metrics.get(name), nearest[2][k]
                    if ours is None or theirs is None:
                        continue
                    diffs[name].append(abs(ours / scale - theirs))
    print(f"{ticks} ticks compared with {len(smi)} nvidia-smi rows")
    print(f"{'field':<30} {'n':>4} {'median |diff|':>14} {'max |diff|':>12}")
    for name, _column, _scale, unit in FIELDS:
        d = diffs[name]
        if d:
            print(f"{name:<30} {len(d):>4} {statistics.median(d):>12.2f} {unit:<3}{max(d):>10.2f} {unit}")
        else:
            print(f"{name:<30} {0:>4} {'n/a':>14} {'n/a':>12}")
    summary = open(stderr_path).read()
    m = re.search(r"watch: (\d+) device\(s\), (\d+) tick\(s\).*process CPU ([0-9.]+) s", summary)
    if m and int(m.group(1)) and int(m.group(2)):
        devices, ticks_run, cpu = int(m.group(1)), int(m.group(2)), float(m.group(3))
        print(f"sampler process CPU: {cpu:.3f} s over {ticks_run} ticks x {devices} devices = "
              f"{cpu / ticks_run / devices * 1e6:.1f} us per device per tick (includes JSON printing)")


if __name__ == "__main__":
    main()
