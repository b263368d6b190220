"""The drop-in's fast paths behave as the plain ones: the native awaitable behind
``record_metrics``, the column batch (checked in chunks, stored under one lock) and
the capacity split (lazy error text, placeholders, sorted slices)."""

import array
import asyncio
import collections.abc
import gc
import math
import sys
import threading
import warnings

import pytest

import gpucluster.exo_compat as clustering
from gpucluster.exo_compat import GPUClusteringManager, GPUDevice, GPUMetrics, TelemetryCollector

GIB = 1 << 30


def device(device_id: str) -> GPUDevice:
    return GPUDevice(device_id=device_id, name="GPU", vendor="nvidia", backend="cuda", compute_capability="9.0",
                     memory_bytes=80 * GIB, memory_available=80 * GIB, compute_units=132, tensor_core_count=528,
                     max_threads_per_block=1024, clock_rate_mhz=1980, bandwidth_gbps=3350.0, support_level="full",
                     driver_version="550.00", backend_name="cuda")


def sample(t: float, device_id: str = "cuda:0", used: int = 1, temp=60.0) -> GPUMetrics:
    return GPUMetrics(device_id, t, used, 10 * GIB, 50.0, 100.0, temp, 1500)


def manager_with(*ids: str, **kwargs) -> GPUClusteringManager:
    manager = GPUClusteringManager(**kwargs)
    for device_id in ids:
        manager.register_device(device(device_id))
    return manager


def timestamps(manager, device_id="cuda:0"):
    return [m.timestamp for m in manager.get_metrics_history(device_id)]


# ---------------------------------------------------------------------------
# record_metrics: the native awaitable
# ---------------------------------------------------------------------------


def test_record_metrics_is_a_native_coroutine_stand_in():
    manager = manager_with("cuda:0")
    pending = manager.record_metrics(sample(1.0))
    assert isinstance(pending, collections.abc.Coroutine) and isinstance(pending, collections.abc.Awaitable)
    assert asyncio.iscoroutine(pending)
    assert manager.get_device_metrics("cuda:0") is None  # nothing happens before it is awaited
    with pytest.raises(StopIteration) as stopped:
        pending.send(None)
    assert stopped.value.value is None
    assert manager.get_device_metrics("cuda:0").timestamp == 1.0
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        pending.send(None)
    # The class attribute stays the documented coroutine function.
    assert asyncio.iscoroutinefunction(GPUClusteringManager.record_metrics)
    assert asyncio.iscoroutinefunction(TelemetryCollector.record_metrics)


@pytest.mark.asyncio
async def test_record_metrics_in_tasks_gather_and_with_errors():
    manager = manager_with("cuda:0")
    await manager.record_metrics(sample(1.0))
    await asyncio.create_task(manager.record_metrics(sample(2.0)))
    await asyncio.ensure_future(manager.record_metrics(sample(3.0)))
    await asyncio.gather(manager.record_metrics(sample(4.0)), manager.record_metrics(sample(4.0)))
    assert timestamps(manager) == [1.0, 2.0, 3.0, 4.0]  # the second is a retransmission: not stored twice

    bad = manager.record_metrics(sample(5.0, temp=math.nan))  # raises when awaited, not when called
    with pytest.raises(ValueError) as raised:
        await bad
    assert raised.value.field == "temperature_celsius" and raised.value.device == "cuda:0"
    results = await asyncio.gather(manager.record_metrics(sample(0.5)), manager.record_metrics(sample(6.0, "x")),
                                   return_exceptions=True)
    assert isinstance(results[0], ValueError) and results[0].reason == "out_of_order"
    assert isinstance(results[1], KeyError)
    assert timestamps(manager)[-1] == 4.0

    await manager.shutdown()
    with pytest.raises(RuntimeError):
        await manager.record_metrics(sample(7.0))


def test_record_metrics_runs_with_asyncio_run():
    collector = TelemetryCollector(max_history=3)
    assert asyncio.run(collector.record_metrics(sample(1.0, "gpu-a"))) is None
    assert collector.get_metrics("gpu-a").timestamp == 1.0


def test_unawaited_record_warns_and_records_nothing():
    manager = manager_with("cuda:0")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manager.record_metrics(sample(1.0))
        gc.collect()
    assert any(issubclass(w.category, RuntimeWarning) and "never awaited" in str(w.message) for w in caught)
    assert manager.get_device_metrics("cuda:0") is None


def test_close_and_throw_drop_the_sample():
    manager = manager_with("cuda:0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither warns
        closed = manager.record_metrics(sample(1.0))
        closed.close()
        with pytest.raises(RuntimeError, match="reuse"):
            closed.send(None)
        thrown = manager.record_metrics(sample(2.0))
        with pytest.raises(KeyError, match="stop"):
            thrown.throw(KeyError("stop"))
        with pytest.raises(ValueError):
            manager.record_metrics(sample(3.0)).throw(ValueError, "why")
        unstarted = manager.record_metrics(sample(4.0))
        with pytest.raises(TypeError):
            unstarted.send(1)  # like a just-started coroutine, it is still pending
        unstarted.close()
        del closed, thrown, unstarted
        gc.collect()
    assert manager.get_device_metrics("cuda:0") is None


@pytest.mark.asyncio
async def test_a_subclass_override_of_record_metrics_is_kept():
    seen = []

    class Recording(GPUClusteringManager):
        async def record_metrics(self, metrics):
            seen.append(metrics.timestamp)
            await super().record_metrics(metrics)

    manager = Recording()
    manager.register_device(device("cuda:0"))
    await manager.record_metrics(sample(1.0))
    assert seen == [1.0] and manager.get_device_metrics("cuda:0").timestamp == 1.0


@pytest.mark.asyncio
async def test_record_metrics_follows_registration_changes_and_equal_ids():
    manager = manager_with("cuda:0", "cuda:1")
    same_id = "".join(["cuda", ":0"])  # an equal str, another object
    await manager.record_metrics(sample(1.0, "cuda:0"))
    await manager.record_metrics(sample(2.0, same_id))
    await manager.record_metrics(sample(3.0, "cuda:1"))
    assert timestamps(manager) == [1.0, 2.0]
    manager.unregister_device("cuda:0")
    with pytest.raises(KeyError):
        await manager.record_metrics(sample(4.0, "cuda:0"))
    manager.register_device(device("cuda:0"))
    await manager.record_metrics(sample(5.0, "cuda:0"))
    assert timestamps(manager) == [5.0]


def test_records_from_many_threads():
    manager = manager_with(*[f"cuda:{i}" for i in range(4)])
    errors = []

    def work(index):
        try:
            async def produce():
                for k in range(500):
                    await manager.record_metrics(sample(1000.0 + k, f"cuda:{index % 4}"))
            asyncio.run(produce())
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(4):
        assert manager.get_device_metrics(f"cuda:{i}").timestamp == 1499.0


# ---------------------------------------------------------------------------
# record_metrics_batch: checked in chunks, stored under one lock
# ---------------------------------------------------------------------------


def columns(n, start=1000.0):
    return (array.array("d", [start + i for i in range(n)]), array.array("q", range(n)),
            array.array("q", [10 * GIB]) * n)


@pytest.mark.parametrize("n", [1, 99, 100, 101, 511, 512, 513, 2000])
def test_batch_leaves_the_history_of_recording_in_turn(n):
    batched = manager_with("cuda:0", max_history=100)
    one_by_one = manager_with("cuda:0", max_history=100)
    ts, used, total = columns(n)
    temp = [None if i % 7 == 0 else 40.0 + i % 50 for i in range(n)]
    assert batched.record_metrics_batch("cuda:0", ts, used, total, temperature_celsius=temp) == n
    assert one_by_one.record_metrics_batch("cuda:0", ts[:0], used[:0], total[:0]) == 0
    for i in range(n):
        one_by_one._record(GPUMetrics("cuda:0", ts[i], used[i], total[i], None, None, temp[i], None))
    assert batched.get_metrics_history("cuda:0") == one_by_one.get_metrics_history("cuda:0")


@pytest.mark.parametrize("bad", [0, 1, 511, 512, 513, 1500])
def test_batch_failure_index_is_exact_across_chunks(bad):
    manager = manager_with("cuda:0", max_history=10)
    ts, used, total = columns(2000)
    util = array.array("d", [50.0]) * 2000
    util[bad] = 100.5
    with pytest.raises(ValueError) as raised:
        manager.record_metrics_batch("cuda:0", ts, used, total, compute_utilization_percent=util)
    assert raised.value.index == bad and raised.value.recorded == bad
    assert raised.value.field == "compute_utilization_percent" and raised.value.reason == "out_of_range"
    history = timestamps(manager)
    assert history == [1000.0 + i for i in range(max(0, bad - 10), bad)]


def test_batch_failures_name_the_first_bad_sample():
    manager = manager_with("cuda:0", max_history=1000)
    ts, used, total = columns(1200)
    # A byte count that is not a whole number, deep inside a chunk: exactly that index.
    floats = array.array("d", [float(i) for i in range(1200)])
    floats[700] = 1.5
    with pytest.raises(ValueError) as raised:
        manager.record_metrics_batch("cuda:0", ts, floats, total)
    assert raised.value.index == 700 and timestamps(manager)[-1] == 1699.0
    # A None byte count in a sequence column, likewise.
    seq = [i for i in range(1200)]
    seq[900] = None
    ts2 = array.array("d", [5000.0 + i for i in range(1200)])
    with pytest.raises(ValueError) as raised:
        manager.record_metrics_batch("cuda:0", ts2, seq, total)
    assert raised.value.index == 900 and timestamps(manager)[-1] == 5899.0
    # Older than the device's newest at 0 wins over a NaN later on; nothing stored.
    ts3 = array.array("d", [10.0 + i for i in range(600)])
    temp = [60.0] * 600
    temp[550] = math.nan
    with pytest.raises(ValueError) as raised:
        manager.record_metrics_batch("cuda:0", ts3, used[:600], total[:600], temperature_celsius=temp)
    assert raised.value.index == 0 and raised.value.reason == "out_of_order"
    assert timestamps(manager)[-1] == 5899.0
    # Out of order inside the batch, after a chunk boundary.
    ts4 = array.array("d", [9000.0 + i for i in range(1200)])
    ts4[1000] = 1.0
    with pytest.raises(ValueError) as raised:
        manager.record_metrics_batch("cuda:0", ts4, used[:1200], total[:1200])
    assert raised.value.index == 1000 and raised.value.reason == "out_of_order"
    assert timestamps(manager)[-1] == 9999.0
    # Bad timestamps and bad byte counts: validation errors with the field.
    for bad_ts, reason in ((math.nan, "not_finite"), (-1.0, "out_of_range"), (1e10, "out_of_range")):
        with pytest.raises(ValueError) as raised:
            manager.record_metrics_batch("cuda:0", [20000.0, bad_ts], [1, 1], [10, 10])
        assert raised.value.index == 1 and raised.value.reason == reason and raised.value.field == "timestamp"
    with pytest.raises(ValueError) as raised:
        manager.record_metrics_batch("cuda:0", [30000.0, 30001.0], [1, 11], [10, 10])
    assert raised.value.index == 1 and raised.value.reason == "used_exceeds_total"


def record_in_turn(manager, ts, used, total):
    """What recording each sample in turn gives: (accepted count, reason of the first rejection or None)."""
    for i in range(len(ts)):
        try:
            manager._record(GPUMetrics("cuda:0", ts[i], used[i], total[i], None, None, None, None))
        except ValueError as error:
            return i, error.reason
    return len(ts), None


@pytest.mark.parametrize("seed", range(12))
def test_batch_settles_retransmissions_conflicts_and_the_future_as_in_turn(seed):
    """Retransmitted samples (of the newest, of older held ones, inside the batch)
    are acknowledged and not stored twice; the same timestamp with other values
    is a conflict; a sample from far in the future is refused. The batch gives
    the same index, reason and history as recording in turn, across chunks."""
    import random
    rng = random.Random(seed)
    batched = manager_with("cuda:0", max_history=100)
    one_by_one = manager_with("cuda:0", max_history=100)
    t = 1000.0
    for _ in range(4):
        n = rng.choice([1, 5, 600, 1500])
        ts, used = [], []
        for _ in range(n):
            kind = rng.random()
            if ts and kind < 0.01:
                j = rng.randrange(max(0, len(ts) - 50), len(ts))  # retransmit one sent before
                ts.append(ts[j]), used.append(used[j])
            elif ts and kind < 0.012:
                ts.append(ts[-1]), used.append(used[-1] + 1)  # same time, other values
            elif kind < 0.013:
                ts.append(4_070_908_800.0), used.append(1)  # 2099
            else:
                t += rng.choice([1.0, 2.0])
                ts.append(t), used.append(rng.randrange(3))
        total = [10 * GIB] * n
        expected_index, expected_reason = record_in_turn(one_by_one, ts, used, total)
        try:
            assert batched.record_metrics_batch("cuda:0", ts, used, total) == n
            assert expected_reason is None
        except ValueError as error:
            assert (error.index, error.reason) == (expected_index, expected_reason)
        assert batched.get_metrics_history("cuda:0") == one_by_one.get_metrics_history("cuda:0")


def test_batch_retransmission_is_acknowledged_and_conflict_named():
    manager = manager_with("cuda:0")
    manager.record_metrics_batch("cuda:0", [1.0, 2.0, 3.0], [1, 2, 3], [10] * 3)
    assert manager.record_metrics_batch("cuda:0", [2.0, 3.0, 4.0], [2, 3, 4], [10] * 3) == 3
    assert timestamps(manager) == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ValueError) as raised:
        manager.record_metrics_batch("cuda:0", [5.0, 4.0], [5, 9], [10, 10])
    assert raised.value.index == 1 and raised.value.reason == "conflict"
    assert raised.value.field == "memory_used_bytes" and raised.value.value == "9"
    with pytest.raises(ValueError) as raised:
        manager.record_metrics_batch("cuda:0", [6.0, 4_070_908_800.0], [1, 1], [10, 10])
    assert raised.value.index == 1 and raised.value.reason == "future_timestamp"
    assert timestamps(manager) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def test_batch_gauges_are_checked_as_stored_floats():
    manager = manager_with("cuda:0")
    # 100.000000001 is 100.0 as a float: accepted, as record_metrics accepts it.
    manager.record_metrics_batch("cuda:0", [1.0, 2.0], [1, 1], [10, 10], compute_utilization_percent=[100.000000001, 0.0],
                                 temperature_celsius=[-273.15, 250.0], power_watts=[0.0, 1e5], clock_rate_mhz=[0, 1e5])
    for field, value in (("compute_utilization_percent", 100.01), ("temperature_celsius", 250.1),
                         ("power_watts", math.inf), ("clock_rate_mhz", -1.0)):
        with pytest.raises(ValueError) as raised:
            manager.record_metrics_batch("cuda:0", [3.0], [1], [10], **{field: [value]})
        assert raised.value.field == field and raised.value.index == 0
    assert timestamps(manager) == [1.0, 2.0]


def test_batches_and_records_from_threads_share_a_device():
    manager = manager_with("cuda:0", "cuda:1", max_history=50)
    errors = []

    def batches():
        try:
            for r in range(200):
                ts = array.array("d", [r * 10.0 + i for i in range(10)])
                manager.record_metrics_batch("cuda:0", ts, array.array("q", [1] * 10), array.array("q", [10] * 10))
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    def singles():
        try:
            for k in range(2000):
                manager._record(sample(float(k), "cuda:1"))
                manager.get_metrics_history("cuda:0")
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=batches), threading.Thread(target=singles)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(timestamps(manager)) == 50 and timestamps(manager)[-1] == 1999.0
    assert manager.get_device_metrics("cuda:1").timestamp == 1999.0


# ---------------------------------------------------------------------------
# distribute_by_capacity
# ---------------------------------------------------------------------------


def test_capacity_split_keeps_the_callers_order_and_sorted_slices():
    distributor = clustering.WorkloadDistributor()
    items = [object() for _ in range(10)]
    plan = distributor.distribute_by_capacity({"b": 1.0, "c": 0.0, "a": 4}, items)
    assert list(plan) == ["b", "c", "a"]
    assert plan["a"] == items[:8] and plan["b"] == items[8:] and plan["c"] == []
    assert all(x is y for x, y in zip(plan["a"] + plan["b"], items))


def test_capacity_split_of_a_dict_subclass_and_errors():
    class Capacities(dict):
        pass

    distributor = clustering.WorkloadDistributor()
    plan = distributor.distribute_by_capacity(Capacities(y=1, x=1), list(range(3)))
    assert plan == {"y": [2], "x": [0, 1]} and list(plan) == ["y", "x"]
    with pytest.raises(ValueError) as raised:
        distributor.distribute_by_capacity({"a": 1.0, "b": -1.0}, [1])
    assert raised.value.field == "capacities['b']"
    with pytest.raises(TypeError):
        distributor.distribute_by_capacity({"a": "x"}, [1])
    assert distributor.distribute_by_capacity({"a": 1, "b": 2}, ()) == {"a": [], "b": []}


def test_large_slices_hold_a_reference_to_every_item_and_are_tracked():
    distributor = clustering.WorkloadDistributor()
    shared = object()
    before = sys.getrefcount(shared)
    items = [shared] * 150_000 + [object() for _ in range(50_000)]
    after_list = sys.getrefcount(shared)
    plan = distributor.distribute_by_capacity({"b": 1.0, "a": 3.0}, items)
    assert plan["a"] == items[:150_000] and plan["b"] == items[150_000:]
    assert sys.getrefcount(shared) == after_list + 150_000
    assert gc.is_tracked(plan["a"]) and gc.is_tracked(plan["b"])
    plan["a"].append(1)  # an ordinary list
    assert len(plan["a"]) == 150_001
    del plan
    del items
    assert sys.getrefcount(shared) == before
    many = distributor.distribute_by_capacity({f"d{i}": 1 for i in range(1000)}, tuple(range(100_000)))
    assert all(gc.is_tracked(part) for part in many.values())
    assert [x for key in sorted(many) for x in many[key]] == list(range(100_000))  # slices in sorted-id order
