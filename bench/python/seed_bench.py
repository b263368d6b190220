#!/usr/bin/env python3
"""Time the seed's Python clustering design (seed_clustering.py) on the comparison workloads.

Prints one JSON object to stdout:

  record_metrics_ns        per-call median of GPUClusteringManager.record_metrics (one validated
                           sample, awaited inside one running event loop; includes the await,
                           the asyncio lock and the deque append)
  select_64_ns             select_best_device() among 64 devices that all have metrics
  select_10000_ns          select_best_device() among 10,000 devices
  capacity_plan_1e7_items_1000_devices_ns
                           distribute_by_capacity(list(range(10**7))) over 1,000 devices
                           (list creation not timed; the seed slices lists, so this is O(items))
  history_bytes_per_sample tracemalloc'd memory of a TelemetryCollector holding
                           100 samples x 100 devices, divided by 10,000
  meta                     interpreter, repeats and iteration counts used

Each timing is the median over several repeats of time.perf_counter_ns().

Usage: python3 bench/python/seed_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
import tracemalloc
from typing import Callable, Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from seed_clustering import (  # noqa: E402
    GPUClusteringManager,
    GPUDevice,
    GPUMetrics,
    TelemetryCollector,
    WorkloadDistributor,
)

GIB = 1 << 30


def make_device(device_id: str, memory_bytes: int = 80 * GIB) -> GPUDevice:
    return GPUDevice(
        device_id=device_id,
        device_type="cuda",
        device_name="Simulated GPU",
        vendor="nvidia",
        compute_units=132,
        memory_bandwidth_gbps=3350.0,
        max_memory_bytes=memory_bytes,
        driver_version="550.00",
        supports_fp64=True,
        supports_tensor_cores=True,
    )


def make_metrics(device_id: str, rng: random.Random, timestamp: float) -> GPUMetrics:
    total = 80 * GIB
    return GPUMetrics(
        device_id=device_id,
        timestamp=timestamp,
        memory_used_bytes=rng.randrange(0, total),
        memory_total_bytes=total,
        compute_utilization_percent=rng.uniform(0.0, 100.0),
        power_watts=rng.uniform(50.0, 700.0),
        temperature_celsius=rng.uniform(30.0, 95.0),
        clock_rate_mhz=rng.randrange(1000, 2000),
    )


def drive(coro) -> None:
    """Run a coroutine that never suspends, without an event loop (no loop allocations)."""
    try:
        coro.send(None)
    except StopIteration:
        return
    raise RuntimeError("coroutine suspended unexpectedly")


def median_per_call(run_once: Callable[[], int], iterations: int, repeats: int) -> float:
    """run_once() returns elapsed ns for `iterations` calls; median of per-call ns over repeats."""
    samples: List[float] = []
    for _ in range(repeats):
        gc.collect()
        samples.append(run_once() / iterations)
    return statistics.median(samples)


def manager_with_devices(count: int, seed: int = 12345) -> GPUClusteringManager:
    manager = GPUClusteringManager()
    rng = random.Random(seed)
    ids = [f"cuda:{i}" for i in range(count)]
    for device_id in ids:
        manager.register_device(make_device(device_id))

    async def fill() -> None:
        for device_id in ids:
            await manager.record_metrics(make_metrics(device_id, rng, 1.0))

    asyncio.run(fill())
    return manager


# ---------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------


def bench_record(iterations: int, repeats: int) -> float:
    manager = GPUClusteringManager()
    manager.register_device(make_device("cuda:0"))
    rng = random.Random(1)
    pool = [make_metrics("cuda:0", rng, float(i)) for i in range(256)]
    mask = len(pool) - 1
    record = manager.record_metrics

    async def main() -> float:
        for m in pool:  # warm up: history deque full (steady-state eviction)
            await record(m)

        samples: List[float] = []
        for _ in range(repeats):
            gc.collect()
            t0 = time.perf_counter_ns()
            for i in range(iterations):
                await record(pool[i & mask])
            t1 = time.perf_counter_ns()
            samples.append((t1 - t0) / iterations)
        return statistics.median(samples)

    return asyncio.run(main())


def bench_select(devices: int, iterations: int, repeats: int) -> float:
    manager = manager_with_devices(devices)
    select = manager.select_best_device
    if select() is None:
        raise RuntimeError("no device selected")

    def run_once() -> int:
        t0 = time.perf_counter_ns()
        for _ in range(iterations):
            select()
        return time.perf_counter_ns() - t0

    return median_per_call(run_once, iterations, repeats)


def bench_capacity_plan(items: int, devices: int, repeats: int) -> float:
    distributor = WorkloadDistributor()
    capacities: Dict[str, float] = {f"dev-{i:04d}": float(1 + i % 8) for i in range(devices)}
    workload = list(range(items))  # not timed
    samples: List[float] = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter_ns()
        plan = distributor.distribute_by_capacity(capacities, workload)
        t1 = time.perf_counter_ns()
        samples.append(float(t1 - t0))
        del plan  # freeing the slices is not timed
    return statistics.median(samples)


def bench_history_bytes(devices: int = 100, samples_per_device: int = 100) -> float:
    rng = random.Random(7)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        collector = TelemetryCollector(max_history=samples_per_device)
        ids = [f"cuda:{i}" for i in range(devices)]
        for t in range(samples_per_device):
            for device_id in ids:
                drive(collector.record_metrics(make_metrics(device_id, rng, float(t))))
        del ids
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    held = sum(len(collector.get_metrics_history(f"cuda:{i}")) for i in range(devices))
    if held != devices * samples_per_device:
        raise RuntimeError(f"collector holds {held} samples")
    return (after - before) / (devices * samples_per_device)


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations and repeats")
    args = parser.parse_args(argv)

    if args.quick:
        cfg = dict(rec_iter=20_000, rec_rep=3, s64_iter=2_000, s64_rep=3,
                   s10k_iter=5, s10k_rep=3, cap_rep=1)
    else:
        cfg = dict(rec_iter=200_000, rec_rep=7, s64_iter=5_000, s64_rep=7,
                   s10k_iter=40, s10k_rep=7, cap_rep=3)

    started = time.perf_counter()
    result: Dict[str, object] = {}
    result["record_metrics_ns"] = bench_record(cfg["rec_iter"], cfg["rec_rep"])
    result["select_64_ns"] = bench_select(64, cfg["s64_iter"], cfg["s64_rep"])
    result["select_10000_ns"] = bench_select(10_000, cfg["s10k_iter"], cfg["s10k_rep"])
    result["capacity_plan_1e7_items_1000_devices_ns"] = bench_capacity_plan(
        10**7, 1000, cfg["cap_rep"])
    result["history_bytes_per_sample"] = bench_history_bytes()
    result["meta"] = {
        "python": platform.python_implementation() + " " + platform.python_version(),
        "executable": sys.executable,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "quick": args.quick,
        "config": cfg,
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
