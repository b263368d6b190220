"""The Python baseline reproduces the seed's documented behaviour, bugs included.

Run: python3 -m pytest -q bench/python   (plain asyncio.run, no pytest-asyncio)
"""

from __future__ import annotations

import asyncio
import math
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from seed_clustering import (  # noqa: E402
    DeviceScorer,
    DeviceSelector,
    DistributionStrategy,
    GPUClusteringManager,
    GPUDevice,
    GPUMetrics,
    TelemetryCollector,
    WorkloadDistributor,
)


def device(device_id: str, memory: int = 10_000) -> GPUDevice:
    return GPUDevice(device_id, "cuda", "Test GPU", "nvidia", 80, 900.0, memory, "550", True, True)


def metrics(device_id: str = "cuda:0", timestamp: float = 0.0, used: int = 1000, total: int = 10_000,
            util: float = 50.0, power: float = 100.0, temp: float = 65.0, clock: int = 2500) -> GPUMetrics:
    return GPUMetrics(device_id, timestamp, used, total, util, power, temp, clock)


def manager_with(*ids: str) -> GPUClusteringManager:
    manager = GPUClusteringManager()
    for i in ids:
        manager.register_device(device(i))
    return manager


# --- review verification snippets ------------------------------------------------------------


def test_history_keeps_last_10_of_20():  # history keeps the newest max_history samples
    async def run() -> None:
        collector = TelemetryCollector(max_history=10)
        for i in range(20):
            await collector.record_metrics(metrics(timestamp=float(i)))
        history = collector.get_metrics_history("cuda:0")
        assert len(history) == 10
        assert history[0].timestamp == 10.0
        assert history[-1].timestamp == 19.0

    asyncio.run(run())


def test_metrics_validation():  # invalid metrics are rejected
    manager = manager_with("cuda:0")

    async def run() -> None:
        await manager.record_metrics(metrics())
        with pytest.raises(ValueError):
            await manager.record_metrics(metrics(util=150))
        with pytest.raises(ValueError):
            await manager.record_metrics(metrics(used=-1000))
        with pytest.raises(ValueError):
            await manager.record_metrics(metrics(used=20_000))
        with pytest.raises(ValueError):
            await manager.record_metrics(metrics(total=0))
        with pytest.raises(ValueError):
            await manager.record_metrics(metrics(temp=-300.0))
        with pytest.raises(KeyError):
            await manager.record_metrics(metrics(device_id="cuda:999"))

    asyncio.run(run())
    assert len(manager.get_metrics_history("cuda:0")) == 1


def test_capacity_validation():  # invalid capacities are rejected
    distributor = WorkloadDistributor()
    assert len(distributor.distribute_by_capacity({"cuda:0": 1.0, "cuda:1": 2.0}, [1, 2, 3])) == 2
    with pytest.raises(ValueError):
        distributor.distribute_by_capacity({"cuda:0": 0.0, "cuda:1": 0.0}, [1, 2, 3])
    with pytest.raises(ValueError):
        distributor.distribute_by_capacity({"cuda:0": -1.0}, [1, 2, 3])


def test_aggregated_metrics_keys_and_values():
    async def run() -> dict:
        collector = TelemetryCollector()
        await collector.record_metrics(metrics("cuda:0", used=1000, util=20.0, temp=60.0, power=100.0))
        await collector.record_metrics(metrics("cuda:1", used=3000, util=40.0, temp=70.0, power=200.0))
        return collector.get_aggregated_metrics()

    agg = asyncio.run(run())
    assert set(agg) == {
        "device_count", "total_memory_bytes", "used_memory_bytes", "available_memory_bytes",
        "average_utilization_percent", "average_temperature_celsius", "total_power_watts", "timestamp",
    }
    assert agg["device_count"] == 2
    assert agg["total_memory_bytes"] == 20_000
    assert agg["used_memory_bytes"] == 4000
    assert agg["available_memory_bytes"] == 16_000
    assert agg["average_utilization_percent"] == pytest.approx(30.0)
    assert agg["average_temperature_celsius"] == pytest.approx(65.0)
    assert agg["total_power_watts"] == pytest.approx(300.0)


# --- scoring and selection --------------------------------------------------------------------


def test_score_formula_and_thermal_penalty():
    # 0.6 * 0.9 + 0.4 * 0.5 = 0.74, no penalty at or below 80 degC
    assert DeviceScorer.score(metrics(temp=80.0)) == pytest.approx(0.74)
    # 100 degC -> penalty 1 - 20/40 = 0.5
    assert DeviceScorer.score(metrics(temp=100.0)) == pytest.approx(0.37)
    # very hot -> penalty floored at 0.1
    assert DeviceScorer.score(metrics(temp=200.0)) == pytest.approx(0.074)
    # fully used and busy -> 0
    assert DeviceScorer.score(metrics(used=10_000, util=100.0)) == 0.0


def test_select_best_device_respects_min_memory_and_zero_score():
    manager = manager_with("cuda:0", "cuda:1", "cuda:2")

    async def run() -> None:
        await manager.record_metrics(metrics("cuda:0", used=9000, util=0.0))    # 0.46, 1000 free
        await manager.record_metrics(metrics("cuda:1", used=5000, util=50.0))   # 0.50, 5000 free
        await manager.record_metrics(metrics("cuda:2", used=10_000, util=100.0))  # 0.0

    asyncio.run(run())
    assert manager.select_best_device() == "cuda:1"
    assert manager.select_best_device(min_memory_bytes=6000) is None
    ranked = DeviceSelector(manager._telemetry).rank_devices(["cuda:0", "cuda:1", "cuda:2"])
    assert [d for d, _ in ranked] == ["cuda:1", "cuda:0", "cuda:2"]


# --- the seed's bugs, which the C++ must fix ---------------------------------------------------


def test_capacity_19_items_over_10_equal_devices_piles_leftovers_on_one():
    capacities = {f"cuda:{i}": 1.0 for i in range(10)}
    plan = WorkloadDistributor().distribute_by_capacity(capacities, list(range(19)))
    assert [len(plan[f"cuda:{i}"]) for i in range(10)] == [10, 1, 1, 1, 1, 1, 1, 1, 1, 1]


def test_capacity_float_truncation_loses_an_item():
    assert int(100 * 0.29) == 28
    plan = WorkloadDistributor().distribute_by_capacity({"a": 0.29, "b": 0.71}, list(range(100)))
    assert len(plan["a"]) == 28  # exact quota is 29
    assert len(plan["b"]) == 72  # leftover dumped on the largest device


def test_capacity_zero_weight_device_still_gets_work():
    plan = WorkloadDistributor().distribute_by_capacity({"a": 0.0, "b": 1.0}, list(range(10)))
    assert len(plan["a"]) == 1


def test_capacity_nan_crashes_with_unrelated_message():
    with pytest.raises(ValueError, match="NaN"):
        WorkloadDistributor().distribute_by_capacity({"a": math.nan, "b": 1.0}, [1, 2, 3])


def test_uniform_no_devices_loses_every_task_and_cap_drops_items():
    distributor = WorkloadDistributor()
    assert distributor.distribute_uniform([], [1, 2, 3]) == {}
    plan = distributor.distribute_uniform(["a", "b"], list(range(10)), max_per_device=2)
    assert sum(len(v) for v in plan.values()) == 4  # 6 items silently dropped


def test_nan_temperature_passes_validation_and_older_sample_overwrites_newer():
    manager = manager_with("cuda:0")

    async def run() -> None:
        await manager.record_metrics(metrics(timestamp=10.0, temp=math.nan))
        await manager.record_metrics(metrics(timestamp=5.0))

    asyncio.run(run())
    assert math.isnan(manager.get_metrics_history("cuda:0")[0].temperature_celsius)
    assert manager.get_device_metrics("cuda:0").timestamp == 5.0


def test_shutdown_then_calls_fail_with_unclear_errors():
    manager = manager_with("cuda:0")
    asyncio.run(manager.shutdown())
    with pytest.raises(AttributeError):
        manager.get_aggregated_metrics()
    with pytest.raises(RuntimeError):
        manager.select_best_device()


def test_distribute_workload_dispatch():
    manager = manager_with("cuda:0", "cuda:1")
    uniform = manager.distribute_workload(list(range(4)))
    assert uniform == {"cuda:0": [0, 2], "cuda:1": [1, 3]}
    by_cap = manager.distribute_workload(list(range(4)), "capacity", {"cuda:0": 1.0, "cuda:1": 3.0})
    assert by_cap == {"cuda:0": [0], "cuda:1": [1, 2, 3]}
    assert DistributionStrategy("uniform") is DistributionStrategy.UNIFORM
