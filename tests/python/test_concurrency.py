"""Several Python threads on one manager: recording, reading, selecting, planning, shutting down."""

import asyncio
import threading
import time

import pytest

import gpucluster
from gpucluster.exo_compat import GPUClusteringManager, GPUDevice, GPUMetrics

GIB = 1 << 30
THREADS = 8


def seed_device(device_id):
    return GPUDevice(device_id, device_id, "nvidia", "cuda", "9.0", 80 * GIB, 80 * GIB, 132, 528, 1024, 1980,
                     3350.0, "full", "550", "cuda")


def run_threads(target, count=THREADS):
    errors = []
    start = threading.Barrier(count)

    def wrapped(index):
        try:
            start.wait()
            target(index)
        except BaseException as e:  # collected and re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return errors


def test_compat_manager_from_many_threads():
    manager = GPUClusteringManager(max_history=1000)
    for i in range(THREADS):
        manager.register_device(seed_device(f"cuda:{i}"))
    per_thread = 500

    def work(index):
        device_id = f"cuda:{index}"
        for k in range(per_thread):
            sample = GPUMetrics(device_id, 1000.0 + k, k, 10 * GIB, 50.0, 100.0, 60.0, 1500)
            if k % 100 == 0:
                asyncio.run(manager.record_metrics(sample))  # the public coroutine, in this thread's own loop
            else:
                manager._record(sample)  # what record_metrics awaits, without a loop per call
            if k % 50 == 0:
                assert manager.select_best_device() is not None
                manager.distribute_workload(list(range(100)), "capacity")

    assert run_threads(work) == []
    for i in range(THREADS):
        history = manager.get_metrics_history(f"cuda:{i}")
        assert len(history) == per_thread
        assert [m.timestamp for m in history] == sorted(m.timestamp for m in history)


def test_compat_shutdown_while_threads_record():
    manager = GPUClusteringManager()
    for i in range(THREADS):
        manager.register_device(seed_device(f"cuda:{i}"))
    stop = threading.Event()
    outcomes = {"ok": 0, "refused": 0}
    lock = threading.Lock()

    def work(index):
        k = 0
        while not stop.is_set():
            try:
                if index % 2:
                    manager._record(GPUMetrics(f"cuda:{index}", 1000.0 + k, 1, GIB, 1.0, 1.0, 1.0, 1))
                else:
                    manager.record_metrics_batch(f"cuda:{index}", [2000.0 + k], [1], [GIB])
                result = "ok"
            except gpucluster.ShutDownError:
                result = "refused"
            with lock:
                outcomes[result] += 1
            k += 1
            if result == "refused" and k > 10:
                return

    def stopper(_):
        time.sleep(0.2)
        asyncio.run(manager.shutdown())
        time.sleep(0.05)
        stop.set()

    errors = []
    threads = [threading.Thread(target=lambda i=i: (work(i))) for i in range(THREADS)]
    for t in threads:
        t.start()
    errors += run_threads(stopper, 1)
    for t in threads:
        t.join(30)
    assert errors == []
    assert outcomes["ok"] > 0 and outcomes["refused"] > 0
    with pytest.raises(RuntimeError):
        manager.select_best_device()


def test_native_manager_from_many_threads():
    with gpucluster.Manager(host="lab", staleness_seconds=1e9) as manager:
        for i in range(THREADS):
            manager.register_device(gpucluster.DeviceInfo(f"lab/cuda:{i}", memory_total_bytes=80 * GIB,
                                                          compute_units=100))

        base = time.time()

        def work(index):
            for k in range(300):
                manager.record(f"cuda:{index}", gpucluster.Sample(timestamp=base + k * 1e-3, memory_used_bytes=k,
                                                                 memory_total_bytes=80 * GIB,
                                                                 utilization_percent=float(k % 100)))
                if k % 30 == 0:
                    manager.select()
                    manager.plan("capacity", items=1000)
                    manager.devices()
                    manager.aggregate()

        assert run_threads(work) == []
        assert all(len(manager.history(f"cuda:{i}")) == 100 for i in range(THREADS))


def test_native_shutdown_from_many_threads_at_once():
    manager = gpucluster.Manager(host="lab")
    assert run_threads(lambda _: manager.shutdown()) == []
    assert manager.state == gpucluster.ManagerState.stopped


def test_long_calls_release_the_gil():
    # A batch ingest of many samples runs while another Python thread keeps counting.
    manager = GPUClusteringManager(max_history=10)
    manager.register_device(seed_device("cuda:0"))
    import array
    n = 2_000_000
    ts = array.array("d", range(n))
    used = array.array("q", [1]) * n
    total = array.array("q", [GIB]) * n
    ticks = [0]
    done = threading.Event()

    def counter():
        while not done.is_set():
            ticks[0] += 1

    t = threading.Thread(target=counter)
    t.start()
    try:
        before = ticks[0]
        manager.record_metrics_batch("cuda:0", ts, used, total)
        during = ticks[0] - before
    finally:
        done.set()
        t.join()
    assert during > 0  # the other thread ran while the batch was stored
