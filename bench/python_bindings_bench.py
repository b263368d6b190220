#!/usr/bin/env python3
"""The drop-in module (gpucluster.exo_compat, C++ core) against the pure-Python seed design
(bench/python/seed_clustering.py), on the same workloads, in the same process and run.

Workloads (medians over repeats, time.perf_counter_ns; for record_metrics and
distribute_by_capacity the two sides' repeats alternate, so that load from elsewhere on a
shared machine falls on both):
  record_metrics      one validated sample per call, awaited inside one running event loop
                      (the seed: validation + asyncio.Lock + deque; the drop-in: the C++ store)
  batch ingest        record_metrics_batch: N samples of one device per call, as array.array
                      columns (per sample), against the seed's per-call record_metrics
  record_metrics_many a list of GPUMetrics per call (per sample), against the same
  select_best_device  among 64 and 10,000 devices that all have metrics
  distribute_by_capacity  10^6 items over 1,000 and over 8 devices (weights 1..8), returning
                      per-device lists of the caller's items in both (the list creation is not timed)

Targets: record_metrics >= 3x, batch ingest >= 50x per sample, distribute_by_capacity
on 10^6 items >= 1x (as fast or faster; both device counts). Machine noise: compare only numbers
of one run, and look at the load average printed with them.

Usage: /usr/bin/python3 bench/python_bindings_bench.py [--build-dir build/release] [--quick] [--json]
(the interpreter must be the one the module was built for: Debian's /usr/bin/python3 by default)
"""

from __future__ import annotations

import argparse
import array
import asyncio
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from typing import Any, Callable, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
GIB = 1 << 30


def import_modules(build_dir: str):
    sys.path.insert(0, os.path.join(HERE, "python"))
    if build_dir:
        path = build_dir if os.path.isabs(build_dir) else os.path.join(REPO, build_dir)
        sys.path.insert(0, os.path.join(path, "python"))
    import seed_clustering as seed  # noqa: E402
    import gpucluster.exo_compat as compat  # noqa: E402
    return seed, compat


def median_ns(run: Callable[[], float], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        gc.collect()
        samples.append(run())
    return statistics.median(samples)


# ---------------------------------------------------------------------------
# Workloads. Both sides get the same values; every timestamp is equal so the
# drop-in's ordering check (older samples are rejected) accepts the cycled pool.
# ---------------------------------------------------------------------------


def values(rng: random.Random):
    total = 80 * GIB
    return dict(memory_used_bytes=rng.randrange(0, total), memory_total_bytes=total,
                compute_utilization_percent=rng.uniform(0.0, 100.0), power_watts=rng.uniform(50.0, 700.0),
                temperature_celsius=rng.uniform(30.0, 95.0), clock_rate_mhz=rng.randrange(1000, 2000))


def seed_device(seed, device_id):
    return seed.GPUDevice(device_id=device_id, device_type="cuda", device_name="Simulated GPU", vendor="nvidia",
                          compute_units=132, memory_bandwidth_gbps=3350.0, max_memory_bytes=80 * GIB,
                          driver_version="550.00", supports_fp64=True, supports_tensor_cores=True)


def compat_device(compat, device_id):
    return compat.GPUDevice(device_id=device_id, name="Simulated GPU", vendor="nvidia", backend="cuda",
                            compute_capability="9.0", memory_bytes=80 * GIB, memory_available=80 * GIB,
                            compute_units=132, tensor_core_count=528, max_threads_per_block=1024,
                            clock_rate_mhz=1980, bandwidth_gbps=3350.0, support_level="full",
                            driver_version="550.00", backend_name="cuda")


def alternating(sides: int, repeat: int) -> List[int]:
    """The order of the sides in one repeat: forwards, then backwards, and so on, so that
    the seed and the drop-in take turns and a burst of load on the shared VM hits both."""
    order = list(range(sides))
    return order if repeat % 2 == 0 else order[::-1]


def bench_record(sides, iterations: int, repeats: int) -> List[float]:
    """Median ns per awaited record_metrics of each (module, make_device) side.

    Every sample is a new reading (a later timestamp), as a collector sends them:
    a timestamp identifies a sample, so re-sending one is a retransmission (the
    drop-in acknowledges it without storing it again) or, with other values, a
    conflict. The GPUMetrics objects are made before each timed run."""
    rng = random.Random(1)
    readings = [values(rng) for _ in range(256)]
    mask = 255
    setups = []
    for module, make_device in sides:
        manager = module.GPUClusteringManager()
        manager.register_device(make_device(module, "cuda:0"))
        setups.append((module, manager.record_metrics))
    clock = [1.0] * len(setups)  # each side's next timestamp

    def fresh(k: int, count: int) -> list:
        module = setups[k][0]
        start = clock[k]
        clock[k] += count
        return [module.GPUMetrics(device_id="cuda:0", timestamp=start + i, **readings[i & mask])
                for i in range(count)]

    async def main() -> List[float]:
        for k, (_module, record) in enumerate(setups):
            for m in fresh(k, 256):  # warm up: history full (steady-state eviction)
                await record(m)
        samples: List[List[float]] = [[] for _ in setups]
        for repeat in range(repeats):
            for k in alternating(len(setups), repeat):
                record = setups[k][1]
                pool = fresh(k, iterations)
                gc.collect()
                t0 = time.perf_counter_ns()
                for m in pool:
                    await record(m)
                samples[k].append((time.perf_counter_ns() - t0) / iterations)
                del pool
        return [statistics.median(s) for s in samples]

    return asyncio.run(main())


def bench_batch(compat, batch: int, repeats: int) -> float:
    manager = compat.GPUClusteringManager()
    manager.register_device(compat_device(compat, "cuda:0"))
    rng = random.Random(2)
    rows = [values(rng) for _ in range(batch)]
    start = [1.0]  # each call's samples are new readings: timestamps after the last call's

    def timestamps() -> array.array:
        column = array.array("d", [start[0] + i for i in range(batch)])
        start[0] += batch
        return column

    used = array.array("q", [r["memory_used_bytes"] for r in rows])
    total = array.array("q", [r["memory_total_bytes"] for r in rows])
    util = array.array("d", [r["compute_utilization_percent"] for r in rows])
    power = array.array("d", [r["power_watts"] for r in rows])
    temp = array.array("d", [r["temperature_celsius"] for r in rows])
    clock = array.array("d", [float(r["clock_rate_mhz"]) for r in rows])
    record = manager.record_metrics_batch
    record("cuda:0", timestamps(), used, total, util, power, temp, clock)

    def once() -> float:
        ts = timestamps()  # not timed
        t0 = time.perf_counter_ns()
        record("cuda:0", ts, used, total, util, power, temp, clock)
        return (time.perf_counter_ns() - t0) / batch

    return median_ns(once, repeats)


def bench_many(compat, batch: int, repeats: int) -> float:
    manager = compat.GPUClusteringManager()
    manager.register_device(compat_device(compat, "cuda:0"))
    rng = random.Random(3)
    rows = [values(rng) for _ in range(batch)]
    start = [1.0]  # each call's samples are new readings: timestamps after the last call's

    def fresh() -> list:
        pool = [compat.GPUMetrics(device_id="cuda:0", timestamp=start[0] + i, **rows[i]) for i in range(batch)]
        start[0] += batch
        return pool

    many = manager.record_metrics_many
    many(fresh())

    def once() -> float:
        pool = fresh()  # not timed
        t0 = time.perf_counter_ns()
        many(pool)
        return (time.perf_counter_ns() - t0) / batch

    return median_ns(once, repeats)


def bench_select(module, make_device, devices: int, iterations: int, repeats: int) -> float:
    manager = module.GPUClusteringManager()
    rng = random.Random(12345)
    ids = [f"cuda:{i}" for i in range(devices)]
    for device_id in ids:
        manager.register_device(make_device(module, device_id))

    async def fill() -> None:
        for device_id in ids:
            await manager.record_metrics(module.GPUMetrics(device_id=device_id, timestamp=1.0, **values(rng)))

    asyncio.run(fill())
    select = manager.select_best_device
    if select() is None:
        raise RuntimeError("no device selected")

    def once() -> float:
        t0 = time.perf_counter_ns()
        for _ in range(iterations):
            select()
        return (time.perf_counter_ns() - t0) / iterations

    return median_ns(once, repeats)


def bench_capacity(modules, items: int, devices: int, repeats: int) -> List[float]:
    """Median ns per distribute_by_capacity call of each module; their repeats alternate."""
    capacities: Dict[str, float] = {f"dev-{i:04d}": float(1 + i % 8) for i in range(devices)}
    setups = [(module.WorkloadDistributor(), list(range(items))) for module in modules]  # lists not timed
    samples: List[List[float]] = [[] for _ in setups]
    for repeat in range(repeats):
        for k in alternating(len(setups), repeat):
            distributor, workload = setups[k]
            gc.collect()
            t0 = time.perf_counter_ns()
            plan = distributor.distribute_by_capacity(capacities, workload)
            samples[k].append(float(time.perf_counter_ns() - t0))
            del plan  # freeing the slices is not timed
    return [statistics.median(s) for s in samples]


# ---------------------------------------------------------------------------


def fmt_ns(ns: float) -> str:
    if ns < 1e3:
        return f"{ns:.1f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns / 1e6:.2f} ms"


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", default="",
                        help="build tree holding python/gpucluster (default: gpucluster as installed or on "
                             "PYTHONPATH, else build/release)")
    parser.add_argument("--quick", action="store_true", help="fewer iterations and repeats")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)

    build_dir = args.build_dir
    if not build_dir:
        try:
            import gpucluster  # noqa: F401
        except ImportError:
            build_dir = "build/release"
    seed, compat = import_modules(build_dir)

    q = args.quick
    cfg = dict(rec_iter=20_000 if q else 200_000, rec_rep=3 if q else 7, batch=100_000, batch_rep=5 if q else 31,
               s64_iter=2_000 if q else 20_000, s10k_iter=5 if q else 40, sel_rep=3 if q else 7,
               cap_rep=3 if q else 15)

    rows: List[Dict[str, Any]] = []
    load_before = os.getloadavg()  # the VM is shared: a busy machine skews one side or the other

    def row(label, python_ns, native_ns, target, unit="per call"):
        ratio = python_ns / native_ns
        rows.append(dict(workload=label, python_ns=python_ns, native_ns=native_ns, ratio=ratio,
                         target=target, met=ratio >= target, unit=unit))

    started = time.perf_counter()
    seed_record, compat_record = bench_record([(seed, seed_device), (compat, compat_device)], cfg["rec_iter"],
                                              cfg["rec_rep"])
    row("record_metrics (await, one sample)", seed_record, compat_record, 3.0)
    row(f"batch ingest, record_metrics_batch ({cfg['batch']:,} samples/call)", seed_record,
        bench_batch(compat, cfg["batch"], cfg["batch_rep"]), 50.0, "per sample")
    row(f"record_metrics_many ({cfg['batch']:,} GPUMetrics/call)", seed_record,
        bench_many(compat, cfg["batch"], cfg["batch_rep"]), 0.0, "per sample")
    row("select_best_device, 64 devices", bench_select(seed, seed_device, 64, cfg["s64_iter"], cfg["sel_rep"]),
        bench_select(compat, compat_device, 64, cfg["s64_iter"], cfg["sel_rep"]), 0.0)
    row("select_best_device, 10,000 devices",
        bench_select(seed, seed_device, 10_000, cfg["s10k_iter"], cfg["sel_rep"]),
        bench_select(compat, compat_device, 10_000, cfg["s10k_iter"], cfg["sel_rep"]), 0.0)
    row("distribute_by_capacity, 10^6 items / 1,000 devices",
        *bench_capacity([seed, compat], 10**6, 1000, cfg["cap_rep"]), 1.0)
    # Informational: with 8 devices both sides are 8 list slices in CPython's own C
    # code (the seed's `items[a:b]`, our PyList_GetSlice), so the ratio is ~1 by construction.
    row("distribute_by_capacity, 10^6 items / 8 devices", *bench_capacity([seed, compat], 10**6, 8, cfg["cap_rep"]),
        0.0)
    meta = dict(python=platform.python_implementation() + " " + platform.python_version(),
                executable=sys.executable, machine=platform.machine(), cpu_count=os.cpu_count(), quick=q,
                config=cfg, module=compat.__file__, wall_seconds=round(time.perf_counter() - started, 1),
                load_average_before=[round(x, 2) for x in load_before],
                load_average_after=[round(x, 2) for x in os.getloadavg()])

    if args.json:
        json.dump({"rows": rows, "meta": meta}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    header = ["workload", "seed (pure Python)", "gpucluster.exo_compat", "ratio", "target"]
    body = []
    for r in rows:
        unit = "" if r["unit"] == "per call" else f" {r['unit']}"
        target = "-" if r["target"] == 0 else f"≥ {r['target']:g}x ({'met' if r['met'] else 'NOT met'})"
        body.append([r["workload"], fmt_ns(r["python_ns"]) + unit, fmt_ns(r["native_ns"]) + unit,
                     f"{r['ratio']:.1f}x", target])
    widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]
    print(f"gpucluster.exo_compat vs the seed's pure-Python design — {meta['python']}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs{' (quick)' if q else ''}; medians; module {meta['module']}; load average "
          f"{meta['load_average_before'][0]:.2f} before, {meta['load_average_after'][0]:.2f} after")
    print("| " + " | ".join(h.ljust(widths[i]) for i, h in enumerate(header)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in body:
        print("| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(line)) + " |")
    print("ratio = seed time / drop-in time (per sample for the batch rows, against the seed's per-call "
          "record_metrics). The seed's capacity split is its buggy max(1, int(n*p)); the drop-in's is "
          "largest remainder; both return per-device lists of the caller's items.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
