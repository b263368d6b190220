"""gpucluster.exo_compat against the seed's documented API, its verification snippets
(shared/seed/phase6-code-review-fixes.md), and the behaviours it fixes."""

import array
import asyncio
import math
import random
import sys
import time
from fractions import Fraction

import pytest

import gpucluster.exo_compat as clustering
from gpucluster.exo_compat import (
    DeviceCapabilities,
    DeviceSelector,
    DeviceType,
    DistributionStrategy,
    GPUClusteringManager,
    GPUDevice,
    GPUMetrics,
    TelemetryCollector,
    TelemetryProtocol,
    WorkloadDistributor,
)

GIB = 1 << 30


def create_test_device(device_id: str, compute_units: int = 108, memory: int = 40 * GIB) -> GPUDevice:
    return GPUDevice(device_id=device_id, name=f"GPU {device_id}", vendor="nvidia", backend="cuda",
                     compute_capability="8.0", memory_bytes=memory, memory_available=memory,
                     compute_units=compute_units, tensor_core_count=432, max_threads_per_block=1024,
                     clock_rate_mhz=1410, bandwidth_gbps=1555.0, support_level="full", driver_version="550.54",
                     backend_name="cuda")


def metrics(device_id="cuda:0", timestamp=None, used=1000, total=10000, util=50.0, power=100.0, temp=65.0,
            clock=2500) -> GPUMetrics:
    return GPUMetrics(device_id=device_id, timestamp=time.time() if timestamp is None else timestamp,
                      memory_used_bytes=used, memory_total_bytes=total, compute_utilization_percent=util,
                      power_watts=power, temperature_celsius=temp, clock_rate_mhz=clock)


# ---------------------------------------------------------------------------
# The review's verification snippets, as written there (module names aside)
# ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_fixed_history():
    collector = TelemetryCollector(max_history=10)

    # Add 20 metrics (should keep only last 10)
    for i in range(20):
        m = GPUMetrics(
            device_id="cuda:0",
            timestamp=float(i),
            memory_used_bytes=1000,
            memory_total_bytes=10000,
            compute_utilization_percent=50.0,
            power_watts=100.0,
            temperature_celsius=65.0,
            clock_rate_mhz=2500,
        )
        await collector.record_metrics(m)

    history = collector.get_metrics_history("cuda:0")
    assert len(history) == 10, f"Expected 10, got {len(history)}"
    assert history[0].timestamp == 10.0, "Oldest should be from index 10"
    assert history[-1].timestamp == 19.0, "Newest should be from index 19"
    assert history[-1] == GPUMetrics("cuda:0", 19.0, 1000, 10000, 50.0, 100.0, 65.0, 2500)
    assert isinstance(history[-1].clock_rate_mhz, int)


def test_init_components():
    manager = GPUClusteringManager()
    assert manager.list_devices() == []
    assert manager.select_best_device() is None


@pytest.mark.asyncio
async def test_metrics_validation():
    manager = GPUClusteringManager()
    device = create_test_device("cuda:0")
    manager.register_device(device)

    valid = metrics()
    await manager.record_metrics(valid)  # no error

    with pytest.raises(ValueError):
        await manager.record_metrics(metrics(util=150))
    with pytest.raises(ValueError):
        await manager.record_metrics(metrics(used=-1000))
    with pytest.raises(KeyError):
        await manager.record_metrics(metrics(device_id="cuda:999"))
    # and the rest of fix #3's rules
    with pytest.raises(ValueError):
        await manager.record_metrics(metrics(total=0))
    with pytest.raises(ValueError):
        await manager.record_metrics(metrics(used=20000, total=10000))
    with pytest.raises(ValueError):
        await manager.record_metrics(metrics(temp=-300.0))


def test_capacity_validation():
    distributor = WorkloadDistributor()

    valid = {"cuda:0": 1.0, "cuda:1": 2.0}
    result = distributor.distribute_by_capacity(valid, [1, 2, 3])
    assert len(result) == 2

    with pytest.raises(ValueError):
        distributor.distribute_by_capacity({"cuda:0": 0.0, "cuda:1": 0.0}, [1, 2, 3])
    with pytest.raises(ValueError):
        distributor.distribute_by_capacity({"cuda:0": -1.0}, [1, 2, 3])


@pytest.mark.asyncio
async def test_shutdown_then_runtime_error_everywhere():
    manager = GPUClusteringManager()
    manager.register_device(create_test_device("cuda:0"))
    await manager.record_metrics(metrics())
    await manager.shutdown()
    await manager.shutdown()  # idempotent
    with pytest.raises(RuntimeError):
        await manager.record_metrics(metrics())
    for call in (manager.select_best_device, manager.get_aggregated_metrics, manager.list_devices,
                 lambda: manager.get_device("cuda:0"), lambda: manager.distribute_workload([1, 2]),
                 lambda: manager.register_device(create_test_device("cuda:1"))):
        with pytest.raises(RuntimeError) as raised:
            call()
        assert isinstance(raised.value, clustering.ShutDownError)


# ---------------------------------------------------------------------------
# The seed's API shapes
# ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_manager_api_shapes():
    manager = GPUClusteringManager()
    d0, d1 = create_test_device("cuda:0", compute_units=100), create_test_device("cuda:1", compute_units=300)
    manager.register_device(d0)
    manager.register_device(d1)
    assert manager.get_device("cuda:0") is d0 and manager.get_device("nope") is None
    assert manager.list_devices() == [d0, d1]

    await manager.record_metrics(metrics("cuda:0", util=90.0))
    await manager.record_metrics(metrics("cuda:1", util=10.0))
    assert manager.select_best_device() == "cuda:1"
    assert manager.select_best_device(min_memory_bytes=9000) == "cuda:1"
    assert manager.select_best_device(min_memory_bytes=10 ** 12) is None
    ranked = manager.rank_devices()
    assert [d for d, _ in ranked] == ["cuda:1", "cuda:0"] and ranked[0][1] > ranked[1][1]

    aggregate = manager.get_aggregated_metrics()
    assert aggregate["device_count"] == 2
    assert aggregate["total_memory_bytes"] == 20000 and aggregate["used_memory_bytes"] == 2000
    assert aggregate["available_memory_bytes"] == 18000
    assert aggregate["average_utilization_percent"] == pytest.approx(50.0)
    assert aggregate["total_power_watts"] == pytest.approx(200.0)
    assert "timestamp" in aggregate

    tasks = [f"task-{i}" for i in range(10)]
    uniform = manager.distribute_workload(tasks)
    assert uniform == {"cuda:0": tasks[:5], "cuda:1": tasks[5:]}
    assert manager.distribute_workload(tasks, strategy="uniform") == uniform
    by_units = manager.distribute_workload(tasks, strategy=DistributionStrategy.CAPACITY)
    assert by_units == {"cuda:0": tasks[:3], "cuda:1": tasks[3:]}  # 100:300 compute units -> 2.5 : 7.5
    explicit = manager.distribute_workload(tasks, "capacity", capacities={"cuda:0": 4, "cuda:1": 1})
    assert {k: len(v) for k, v in explicit.items()} == {"cuda:0": 8, "cuda:1": 2}
    with pytest.raises(ValueError):
        manager.distribute_workload(tasks, strategy="round-robin")

    assert manager.get_device_metrics("cuda:0").compute_utilization_percent == 90.0
    assert manager.get_device_metrics("cuda:5") is None
    assert len(manager.get_metrics_history("cuda:1")) == 1


@pytest.mark.asyncio
async def test_aggregate_is_empty_before_any_metrics_and_skips_unavailable_gauges():
    collector = TelemetryCollector()
    assert collector.get_aggregated_metrics() == {}
    assert collector.get_metrics("cuda:0") is None and collector.get_metrics_history("cuda:0") == []
    await collector.record_metrics(metrics("cuda:0", power=None))
    await collector.record_metrics(metrics("cuda:1", power=50.0))
    aggregate = collector.get_aggregated_metrics()
    assert aggregate["device_count"] == 2 and aggregate["total_power_watts"] == 50.0
    assert collector.get_metrics("cuda:0").power_watts is None


def test_device_selector_over_a_dict():
    caps = DeviceCapabilities("x", DeviceType.CUDA, "GPU", "nvidia", 100, 1000.0, 10000, "1")
    devices = {
        "busy": (metrics("busy", util=95.0), caps),
        "idle": (metrics("idle", util=5.0), caps),
        "full": (metrics("full", used=10000, util=100.0), caps),
    }
    selector = DeviceSelector(devices)
    ranked = selector.rank_devices()
    assert ranked[0][0] == "idle" and ranked[-1] == ("full", 0.0)
    assert selector.select_best_device() == "idle"
    assert selector.select_best_device(min_memory_bytes=9001) is None
    with pytest.raises(ValueError):
        DeviceSelector({"bad": (metrics("bad", temp=math.nan), caps)}).rank_devices()


def test_distributor_returns_the_callers_own_items():
    items = [object() for _ in range(7)]
    result = WorkloadDistributor().distribute_uniform(["a", "b", "c"], items)
    assert [len(v) for v in result.values()] == [3, 2, 2]
    assert result["a"][0] is items[0] and result["c"][-1] is items[-1]
    assert WorkloadDistributor().distribute_uniform(["a"], []) == {"a": []}
    assert WorkloadDistributor().distribute_by_capacity({"b": 1, "a": 1}, []) == {"b": [], "a": []}
    # tuples and ranges come back as lists
    assert WorkloadDistributor().distribute_uniform(["a", "b"], range(4)) == {"a": [0, 1], "b": [2, 3]}


# ---------------------------------------------------------------------------
# The seed's bugs, fixed
# ---------------------------------------------------------------------------


def test_capacity_uses_largest_remainder():
    distributor = WorkloadDistributor()
    ten = {f"d{i}": 1.0 for i in range(10)}
    counts = [len(v) for v in distributor.distribute_by_capacity(ten, list(range(19))).values()]
    assert counts == [2] * 9 + [1]  # the seed gave 10, 1, 1, ...
    exact = distributor.distribute_by_capacity({"a": 0.29, "b": 0.71}, list(range(100)))
    assert (len(exact["a"]), len(exact["b"])) == (29, 71)  # int(100 * 0.29) == 28 in the seed
    zero = distributor.distribute_by_capacity({"a": 0.0, "b": 1.0}, list(range(5)))
    assert zero == {"a": [], "b": [0, 1, 2, 3, 4]}  # the seed gave the zero device an item
    # contiguous slices in sorted-id order, the dict in the caller's key order
    result = distributor.distribute_by_capacity({"z": 1, "a": 1}, [1, 2, 3, 4])
    assert list(result) == ["z", "a"] and result == {"z": [3, 4], "a": [1, 2]}


def _exact_largest_remainder(weights, n):
    """Largest remainder in exact rationals (a float is an exact Fraction), ties to the earlier index."""
    total = sum(Fraction(w) for w in weights)
    quotas = [Fraction(w) * n / total for w in weights]
    counts = [q.numerator // q.denominator for q in quotas]
    order = sorted(range(len(weights)), key=lambda i: counts[i] - quotas[i])  # stable: ties by index
    for i in order[:n - sum(counts)]:
        counts[i] += 1
    return counts


def test_capacity_extreme_weights_place_every_item_exactly_once():
    # Before the fix, a subnormal total made counts near 2^63 (20 items came back for 10).
    distributor = WorkloadDistributor()
    items = list(range(10))
    assert distributor.distribute_by_capacity({"a": 1e-320, "b": 0.0, "c": 0.0}, items) == {
        "a": items, "b": [], "c": []}
    # Capacities whose float sum passes the largest float are valid: only the total must be > 0.
    assert distributor.distribute_by_capacity({"a": 1e308, "b": 1e308, "c": 1e-300}, items) == {
        "a": items[:5], "b": items[5:], "c": []}
    assert distributor.distribute_by_capacity({"a": sys.float_info.max, "b": 5e-324}, items) == {"a": items, "b": []}


def test_capacity_matches_exact_rationals_on_adversarial_capacities():
    rng = random.Random(12)
    styles = [
        lambda: rng.choice([5e-324, 1e-320, 2.5e-310, 1e-300, 1.0, 1e300, 1e308, sys.float_info.max]),
        lambda: rng.uniform(0.0, 1.0) * 10.0 ** rng.randint(-320, 308),
        lambda: 0.0 if rng.random() < 0.7 else rng.choice([5e-324, 1e308]),
        lambda: float(rng.randint(0, 100)),
    ]
    for trial in range(2000):
        count = rng.randint(1, 8) if trial % 10 else rng.randint(1, 200)
        draw = styles[trial % len(styles)]
        weights = [draw() for _ in range(count)]
        if not any(w > 0 for w in weights):
            weights[rng.randrange(count)] = rng.choice([5e-324, 1e-300, 1e308])
        n = rng.choice([0, 1, 2, 3, 10, 97, 1000])
        ids = [f"d{i:03d}" for i in range(count)]  # sorted order = index order
        result = WorkloadDistributor().distribute_by_capacity(dict(zip(ids, weights)), list(range(n)))
        counts = [len(result[i]) for i in ids]
        assert counts == _exact_largest_remainder(weights, n), (weights, n)
        assert sum(result.values(), []) == list(range(n))  # every item once, in contiguous slices


def test_capacity_rejects_nan_and_inf_naming_the_device():
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError) as raised:
            WorkloadDistributor().distribute_by_capacity({"cuda:0": 1.0, "cuda:1": bad}, [1, 2])
        assert isinstance(raised.value, clustering.PlanError) and "cuda:1" in raised.value.field


def test_items_past_the_cap_are_reported_not_dropped():
    items = list(range(10))
    with pytest.raises(ValueError) as raised:
        WorkloadDistributor().distribute_uniform(["a", "b"], items, max_per_device=3)
    e = raised.value
    assert isinstance(e, clustering.UnplacedItemsError)
    assert e.distribution == {"a": [0, 1, 2], "b": [3, 4, 5]} and e.unplaced == [6, 7, 8, 9]
    assert sorted(sum(e.distribution.values(), []) + e.unplaced) == items


def test_items_without_a_device_are_reported_not_dropped():
    with pytest.raises(clustering.UnplacedItemsError) as raised:
        WorkloadDistributor().distribute_uniform([], [1, 2, 3])
    assert raised.value.distribution == {} and raised.value.unplaced == [1, 2, 3]
    with pytest.raises(clustering.UnplacedItemsError) as raised:
        WorkloadDistributor().distribute_by_capacity({}, ["x"])
    assert raised.value.unplaced == ["x"]
    manager = GPUClusteringManager()
    with pytest.raises(clustering.UnplacedItemsError):
        manager.distribute_workload(["t"])
    assert manager.distribute_workload([]) == {}


@pytest.mark.asyncio
async def test_nan_and_out_of_order_metrics_are_rejected():
    manager = GPUClusteringManager()
    manager.register_device(create_test_device("cuda:0"))
    for field in ("temp", "power", "util"):
        with pytest.raises(ValueError) as raised:
            await manager.record_metrics(metrics(**{field: math.nan}))
        assert raised.value.reason == "not_finite" and raised.value.device == "cuda:0"
    await manager.record_metrics(metrics(timestamp=100.0))
    with pytest.raises(ValueError) as raised:
        await manager.record_metrics(metrics(timestamp=99.0, util=0.0))
    assert raised.value.reason == "out_of_order"
    assert manager.get_device_metrics("cuda:0").timestamp == 100.0  # the older sample did not overwrite it
    with pytest.raises(ValueError):
        await TelemetryCollector().record_metrics(metrics(temp=math.nan))


@pytest.mark.asyncio
async def test_retransmission_is_acknowledged_conflict_and_future_rejected():
    manager = GPUClusteringManager()
    manager.register_device(create_test_device("cuda:0"))
    await manager.record_metrics(metrics(timestamp=100.0))
    await manager.record_metrics(metrics(timestamp=100.0))  # the same sample again: acknowledged
    assert len(manager.get_metrics_history("cuda:0")) == 1
    with pytest.raises(ValueError) as raised:
        await manager.record_metrics(metrics(timestamp=100.0, util=1.0))
    assert raised.value.reason == "conflict" and raised.value.field == "compute_utilization_percent"
    with pytest.raises(ValueError) as raised:  # 2099: would block every true sample until then
        await manager.record_metrics(metrics(timestamp=4_070_908_800.0))
    assert raised.value.reason == "future_timestamp" and raised.value.field == "timestamp"
    await manager.record_metrics(metrics(timestamp=time.time()))
    assert len(manager.get_metrics_history("cuda:0")) == 2


@pytest.mark.asyncio
async def test_staleness_is_opt_in():
    fresh = GPUClusteringManager(staleness_seconds=10.0)
    fresh.register_device(create_test_device("cuda:0"))
    await fresh.record_metrics(metrics(timestamp=time.time() - 3600))
    assert fresh.select_best_device() is None
    seed_like = GPUClusteringManager()
    seed_like.register_device(create_test_device("cuda:0"))
    await seed_like.record_metrics(metrics(timestamp=1.0))
    assert seed_like.select_best_device() == "cuda:0"


@pytest.mark.asyncio
async def test_batch_ingest():
    manager = GPUClusteringManager(max_history=50)
    manager.register_device(create_test_device("cuda:0"))
    n = 500
    ts = array.array("d", [1000.0 + i for i in range(n)])
    used = array.array("q", [i for i in range(n)])
    total = array.array("q", [10000]) * n
    util = array.array("f", [50.0]) * n
    assert manager.record_metrics_batch("cuda:0", ts, used, total, compute_utilization_percent=util) == n
    history = manager.get_metrics_history("cuda:0")
    assert len(history) == 50 and history[-1].memory_used_bytes == n - 1 and history[-1].power_watts is None
    with pytest.raises(KeyError):
        manager.record_metrics_batch("cuda:7", ts, used, total)
    with pytest.raises(ValueError) as raised:  # older than the newest stored sample
        manager.record_metrics_batch("cuda:0", [1.0], [1], [10])
    assert raised.value.index == 0 and raised.value.reason == "out_of_order"
    with pytest.raises(ValueError) as raised:  # the third is NaN: the two before it are stored
        manager.record_metrics_batch("cuda:0", [2000.0, 2001.0, 2002.0, 2003.0], [1, 2, 3, 4], [10] * 4,
                                     temperature_celsius=[60.0, 61.0, math.nan, 62.0])
    assert raised.value.index == 2 and raised.value.field == "temperature_celsius"
    assert manager.get_device_metrics("cuda:0").timestamp == 2001.0
    with pytest.raises(ValueError) as raised:  # out of order inside the batch
        manager.record_metrics_batch("cuda:0", [3000.0, 2999.0], [1, 1], [10, 10])
    assert raised.value.index == 1 and raised.value.reason == "out_of_order"
    bad = [metrics(timestamp=5000.0), metrics(timestamp=5001.0, util=-1.0), metrics(timestamp=5002.0)]
    assert manager.get_device_metrics("cuda:0").timestamp == 3000.0
    with pytest.raises(ValueError) as raised:
        manager.record_metrics_many(bad)
    assert raised.value.index == 1 and manager.get_device_metrics("cuda:0").timestamp == 5000.0
    assert manager.record_metrics_many([metrics(timestamp=6000.0 + i) for i in range(3)]) == 3


# ---------------------------------------------------------------------------
# Protocol helpers (pure Python, the seed's envelope)
# ---------------------------------------------------------------------------


def test_protocol_helpers_round_trip():
    caps = DeviceCapabilities("vulkan:0", DeviceType.VULKAN_ANDROID, "Adreno", "Qualcomm", 128, 160.0, 8 * GIB,
                              "1.2.0", supports_tensor_cores=True)
    registration = clustering.DeviceRegistration("device-001", 5000, "vulkan:0", caps, timestamp=1707043200.0)
    message = TelemetryProtocol.create_registration_message(registration)
    assert message["type"] == "device_registration" and message["version"] == "1.0"
    text = TelemetryProtocol.serialize_message(message)
    back = TelemetryProtocol.deserialize_message(text)
    assert TelemetryProtocol.parse_registration(back["payload"]) == registration

    heartbeat = clustering.Heartbeat("vulkan:0", metrics("vulkan:0", timestamp=1707043210.0), timestamp=1707043210.0)
    parsed = TelemetryProtocol.parse_heartbeat(
        TelemetryProtocol.deserialize_message(
            TelemetryProtocol.serialize_message(TelemetryProtocol.create_heartbeat_message(heartbeat)))["payload"])
    assert parsed == heartbeat
    example = clustering.HEARTBEAT_MESSAGE_EXAMPLE
    assert TelemetryProtocol.parse_heartbeat(example["payload"]).metrics.clock_rate_mhz == 750
    assert TelemetryProtocol.parse_registration(clustering.REGISTRATION_MESSAGE_EXAMPLE["payload"]).capabilities \
        .device_type is DeviceType.VULKAN_ANDROID
    m = metrics(timestamp=1.5)
    assert GPUMetrics.from_json(m.to_json()) == m
    assert TelemetryProtocol.parse_metrics(TelemetryProtocol.create_metrics_message(m)["payload"]) == m


def test_protocol_rejects_nan():
    with pytest.raises(ValueError):
        TelemetryProtocol.serialize_message(TelemetryProtocol.create_metrics_message(metrics(temp=math.nan)))
    with pytest.raises(ValueError):
        GPUMetrics.from_json('{"device_id": "cuda:0", "timestamp": 1.0, "memory_used_bytes": 1, '
                             '"memory_total_bytes": 2, "compute_utilization_percent": NaN, "power_watts": 1.0, '
                             '"temperature_celsius": 1.0, "clock_rate_mhz": 1}')


def test_drop_in_names_exist():
    for name in ("GPUClusteringManager", "DeviceSelector", "TelemetryCollector", "WorkloadDistributor", "GPUMetrics",
                 "GPUDevice", "DeviceCapabilities", "DeviceType", "DistributionStrategy", "TelemetryProtocol"):
        assert hasattr(clustering, name), name
    assert [f for f in GPUDevice.__dataclass_fields__] == [
        "device_id", "name", "vendor", "backend", "compute_capability", "memory_bytes", "memory_available",
        "compute_units", "tensor_core_count", "max_threads_per_block", "clock_rate_mhz", "bandwidth_gbps",
        "support_level", "driver_version", "backend_name"]
    assert asyncio.iscoroutinefunction(GPUClusteringManager.record_metrics)
    assert asyncio.iscoroutinefunction(GPUClusteringManager.shutdown)
    assert asyncio.iscoroutinefunction(TelemetryCollector.record_metrics)
