"""The native API: gpucluster.Manager, devices, samples, validation errors, selection, plans, fleets."""

import array
import json
import math
import os
import time

import pytest

import gpucluster
from gpucluster import backends

GIB = 1 << 30
T0 = 1_700_000_000.0


def make_info(local_id="cuda:0", memory=80 * GIB, units=132, host="lab"):
    return gpucluster.DeviceInfo(f"{host}/{local_id}", name="Test GPU", vendor="nvidia",
                                 kind=gpucluster.DeviceKind.cuda, memory_total_bytes=memory, compute_units=units)


def sample(t=T0, used=10 * GIB, total=80 * GIB, util=50.0, power=300.0, temp=60.0, clock=1980.0):
    return gpucluster.Sample(timestamp=t, memory_used_bytes=used, memory_total_bytes=total, utilization_percent=util,
                             power_watts=power, temperature_celsius=temp, clock_mhz=clock)


@pytest.fixture
def clock():
    return [T0]


@pytest.fixture
def manager(clock):
    m = gpucluster.Manager(host="lab", clock=lambda: clock[0])
    yield m
    m.shutdown()


def test_sample_keeps_unavailable_as_none_and_floats_tidy():
    s = gpucluster.Sample(timestamp=T0, memory_used_bytes=1, memory_total_bytes=2, power_watts=41.3)
    assert s.utilization_percent is None and s.temperature_celsius is None
    assert s.power_watts == 41.3  # stored as float32, read back as its shortest decimal
    assert s.timestamp == T0
    assert s.to_dict()["compute_utilization_percent"] is None


def test_validation_error_is_a_value_error_with_device_field_value_rule():
    with pytest.raises(gpucluster.ValidationError) as raised:
        gpucluster.validate_sample(sample(temp=math.nan), device="lab/cuda:0")
    e = raised.value
    assert isinstance(e, ValueError)
    assert (e.device, e.field, e.value, e.reason) == ("lab/cuda:0", "temperature_celsius", "NaN", "not_finite")
    assert e.rule


def test_record_history_is_bounded_and_chronological(clock):
    with gpucluster.Manager(host="lab", max_history=10, clock=lambda: clock[0]) as m:
        m.register_device(make_info())
        for i in range(20):
            m.record("cuda:0", sample(t=T0 + i))
        history = m.history("cuda:0")
        assert [s.timestamp for s in history] == [T0 + i for i in range(10, 20)]
        assert len(m.history("lab/cuda:0", limit=3)) == 3
        assert m.window_stats("cuda:0").samples == 10


def test_invalid_sample_stores_nothing_and_is_counted(manager):
    manager.register_device(make_info())
    manager.record("cuda:0", sample())
    with pytest.raises(gpucluster.ValidationError) as raised:
        manager.record("cuda:0", sample(t=T0 + 1, util=150.0))
    assert raised.value.field == "utilization_percent"  # the native name (the seed's name is exo_compat's)
    assert raised.value.reason == "out_of_range"
    with pytest.raises(gpucluster.ValidationError) as raised:
        manager.record("cuda:0", sample(t=T0 - 1))
    assert raised.value.reason == "out_of_order"
    assert len(manager.history("cuda:0")) == 1
    assert manager.rejected_samples()["out_of_range"] == 1


def test_unregistered_device_is_both_key_error_and_value_error(manager):
    with pytest.raises(KeyError):
        manager.record("cuda:9", sample())
    with pytest.raises(ValueError) as raised:
        manager.record("cuda:9", sample())
    assert isinstance(raised.value, gpucluster.UnregisteredDeviceError)
    with pytest.raises(gpucluster.UnknownDeviceError) as unknown:
        manager.device("cuda:9")
    assert isinstance(unknown.value, KeyError) and unknown.value.device == "lab/cuda:9"
    assert "cuda:9" in str(unknown.value)


def test_select_with_breakdown_and_staleness(manager, clock):
    manager.register_device(make_info("cuda:0"))
    manager.register_device(make_info("cuda:1"))
    manager.record("cuda:0", sample(util=90.0))
    manager.record("cuda:1", sample(util=10.0))
    best = manager.select()
    assert best and best.id == "lab/cuda:1" and 0 < best.score <= 1
    ranked = manager.rank()
    assert [r.id for r in ranked] == ["lab/cuda:1", "lab/cuda:0"]
    assert ranked[0].eligibility == gpucluster.Eligibility.eligible
    assert ranked[0].breakdown.compute_idle_ratio == pytest.approx(0.9, abs=1e-6)
    assert not manager.select(min_free_memory_bytes=100 * GIB)
    clock[0] = T0 + 60  # both samples are now a minute old
    none = manager.select()
    assert none.device is None and none.id is None and "stale" in none.reason
    assert {r.eligibility for r in manager.rank()} == {gpucluster.Eligibility.stale}


def test_unavailable_gauge_is_not_zero(manager):
    manager.register_device(make_info())
    manager.record("cuda:0", gpucluster.Sample(timestamp=T0, memory_used_bytes=0, memory_total_bytes=80 * GIB))
    aggregate = manager.aggregate()
    assert aggregate.average_utilization_percent is None and aggregate.total_power_watts is None
    assert manager.rank()[0].breakdown.compute_idle_ratio is None


def test_plans_have_ranges_unassigned_and_apply(manager):
    for i in range(10):
        manager.register_device(make_info(f"cuda:{i}"))
        manager.record(f"cuda:{i}", sample())
    plan = manager.plan("capacity", items=19)
    assert [a.count for a in plan.assignments] == [2] * 9 + [1]
    assert plan.unassigned == 0 and plan.total_items == 19
    items = [object() for _ in range(19)]
    parts = plan.apply(items)
    assert list(parts) == [f"lab/cuda:{i}" for i in range(10)]
    assert sum(len(p) for p in parts.values()) == 19
    assert parts["lab/cuda:0"][0] is items[0]  # the caller's own objects
    assert plan.ranges()["lab/cuda:1"] == (2, 2)

    capped = manager.plan(gpucluster.Strategy.uniform, items=25, max_per_device=2)
    assert capped.unassigned == 5 and capped.assigned == 20
    assert capped.unassigned_items(list(range(25))) == [20, 21, 22, 23, 24]
    with pytest.raises(gpucluster.PlanError):
        capped.apply(range(3))
    # apply never drops an item silently: the unplaced ones are raised with what was placed.
    with pytest.raises(gpucluster.UnplacedItemsError) as raised:
        capped.apply(list(range(25)))
    assert raised.value.unplaced == [20, 21, 22, 23, 24]
    assert sum(len(part) for part in raised.value.distribution.values()) == 20

    weighted = manager.plan("capacity", items=100, weights={"cuda:0": 29, "cuda:1": 71})
    assert weighted.counts() == {"lab/cuda:0": 29, "lab/cuda:1": 71}
    with pytest.raises(gpucluster.PlanError) as raised:
        manager.plan("capacity", items=10, weights={"cuda:0": math.nan})
    assert isinstance(raised.value, ValueError) and "cuda:0" in raised.value.field
    layers = manager.plan("memory", layers=80, layer_bytes=GIB)
    assert sum(a.count for a in layers.assignments) == 80
    with pytest.raises(gpucluster.InsufficientMemoryError) as short:
        manager.plan("memory", layers=80, layer_bytes=100 * GIB)
    assert short.value.shortfalls and short.value.shortfalls[0].short_bytes > 0


def test_plan_without_usable_devices_is_an_error(manager):
    with pytest.raises(gpucluster.PlanError):
        manager.plan("uniform", items=5)


def test_free_functions():
    assert gpucluster.apportion([1.0] * 10, 19) == [2] * 9 + [1]
    assert gpucluster.apportion([0.29, 0.71], 100) == [29, 71]
    assert gpucluster.apportion([1.0, 0.0], 5) == [5, 0]
    plan = gpucluster.plan_uniform(["a", "b", "c"], 7, max_per_device=2)
    assert [a.count for a in plan.assignments] == [2, 2, 2] and plan.unassigned == 1
    plan = gpucluster.plan_capacity([("a", 1.0), ("b", 3.0)], 8)
    assert plan.counts() == {"a": 2, "b": 6}
    assert gpucluster.plan_memory([("a", 10 * GIB), ("b", 30 * GIB)], 8).counts() == {"a": 2, "b": 6}
    score = gpucluster.score_sample(make_info(), sample(used=0, util=0.0, temp=40.0))
    assert score.score == pytest.approx(1.0)
    assert gpucluster.parse_device_kind("vulkan_android") == gpucluster.DeviceKind.vulkan


def test_fleet_manager_selects_like_the_cli(fleet_8x_h100):
    with gpucluster.Manager(fleet=fleet_8x_h100) as m:
        m.start(background_sampling=False)
        devices = m.devices()
        assert len(devices) == 8 and all(d.info.kind == gpucluster.DeviceKind.cuda for d in devices)
        best = m.select(min_free_memory_bytes=40 * GIB)
        assert best.id == "dgx-h100-01/cuda:7"
        assert m.device("cuda:7").info.compute_units == 132
        report = m.backend_reports()[0]
        assert report.backend == "simulated" and report.devices == 8
        info = devices[0].to_dict()
        assert info["device_id"] == "cuda:0" and info["device_type"] == "cuda" and "memory_bytes" in info
    assert m.state == gpucluster.ManagerState.stopped


def test_load_fleet_and_simulated_backend(fleet_8x_h100):
    fleet = gpucluster.load_fleet(fleet_8x_h100)
    assert fleet.host == "dgx-h100-01" and len(fleet.devices) == 8
    with gpucluster.Manager(backends=[backends.simulated(fleet)]) as m:
        m.start(background_sampling=False)
        assert len(m.devices()) == 8
    with pytest.raises(gpucluster.InputError):
        gpucluster.parse_fleet('{"devices": [{"device_id": "x"}]}')


def test_host_backend_discovers_this_cpu():
    backend = backends.host()
    with gpucluster.Manager(backends=[backend], sample_interval_seconds=0.05) as m:
        m.start()
        ids = [d.info.key.local_id for d in m.devices()]
        assert "cpu:0" in ids
        assert m.device("cpu:0").latest is not None
    assert backend.consumed
    with pytest.raises(gpucluster.InputError):
        gpucluster.Manager(backends=[backend])


def test_shutdown_refuses_everything_after_and_is_idempotent(manager):
    manager.register_device(make_info())
    manager.shutdown()
    manager.shutdown()
    for call in (lambda: manager.record("lab/cuda:0", sample()), manager.devices, manager.select,
                 lambda: manager.register_device(make_info("cuda:1")), manager.aggregate):
        with pytest.raises(gpucluster.ShutDownError) as raised:
            call()
        assert isinstance(raised.value, RuntimeError)


def test_record_batch_columns(manager):
    manager.register_device(make_info())
    n = 1000
    ts = array.array("d", (T0 + i * 0.001 for i in range(n)))
    used = array.array("q", (i * 1024 for i in range(n)))
    total = array.array("q", [80 * GIB]) * n
    util = [float(i % 100) for i in range(n)]
    assert manager.record_batch("cuda:0", ts, used, total, utilization_percent=util) == n
    history = manager.history("cuda:0")
    assert len(history) == 100 and history[-1].memory_used_bytes == 999 * 1024
    assert history[-1].power_watts is None and history[-1].utilization_percent == 99.0

    bad = array.array("d", [50.0, 50.0, math.nan, 50.0])
    ts2 = array.array("d", [T0 + 10 + i for i in range(4)])
    with pytest.raises(gpucluster.ValidationError) as raised:
        manager.record_batch("cuda:0", ts2, [0] * 4, [GIB] * 4, utilization_percent=bad)
    assert raised.value.index == 2 and raised.value.reason == "not_finite"
    assert manager.history("cuda:0")[-1].timestamp == T0 + 11  # the two before it were stored
    with pytest.raises(gpucluster.InputError):
        manager.record_batch("cuda:0", [T0 + 20], [0, 1], [GIB])


def test_device_key_accepts_strings():
    key = gpucluster.DeviceKey("lab/cuda:0")
    assert key == gpucluster.DeviceKey("lab", "cuda:0") and str(key) == "lab/cuda:0"
    assert hash(key) == hash(gpucluster.DeviceKey("lab", "cuda:0"))


# ---- Backends named by the caller fail loudly; discovery runs under a deadline ----

def _fake_nvml_library():
    build = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(gpucluster.__file__))))
    path = os.path.join(build, "libfake_nvml.so")
    if not os.path.exists(path):
        pytest.skip(f"{path} not built")
    return path


def test_a_named_backend_that_cannot_load_raises_a_typed_error():
    m = gpucluster.Manager(backends=[backends.nvml("/nonexistent/libnvidia-ml.so.1"), backends.host()])
    with pytest.raises(gpucluster.BackendUnavailableError) as raised:
        m.start(background_sampling=False)
    error = raised.value
    assert isinstance(error, gpucluster.InputError)
    assert error.backends == ["nvml"]
    assert error.field == "backends" and error.value == "nvml"
    assert "cannot load /nonexistent/libnvidia-ml.so.1" in str(error)
    assert "the path was given by the caller" in str(error)
    assert m.state == gpucluster.ManagerState.stopped


def test_require_backends_false_skips_and_reports_an_unusable_backend():
    with gpucluster.Manager(backends=[backends.nvml("/nonexistent/libnvidia-ml.so.1"), backends.host()],
                            require_backends=False) as m:
        m.start(background_sampling=False)
        reports = {r.backend: r for r in m.backend_reports()}
        assert reports["nvml"].status == "unavailable" and reports["nvml"].unavailable
        assert "cannot load" in reports["nvml"].note
        assert reports["host"].status == "ok" and reports["host"].devices == 1


def test_backend_reports_count_implausible_readings(tmp_path, monkeypatch):
    library = _fake_nvml_library()
    scenario = tmp_path / "scenario.json"
    # 900 degrees: outside the field table's range, so unavailable and counted, never a rejected sample.
    scenario.write_text(json.dumps({"devices": [{"name": "GPU", "memory_total": 1 << 30, "temperature": 900}]}))
    monkeypatch.setenv("FAKE_NVML_SCENARIO", str(scenario))
    with gpucluster.Manager(backends=[backends.nvml(library)]) as m:
        m.start(background_sampling=False)
        m.sample_now()
        report = m.backend_reports()[0]
        assert report.implausible_readings["temperature_celsius"] >= 2  # the start's sample and this one
        assert report.implausible_readings["power_watts"] == 0
        assert "memory_used_bytes" not in report.implausible_readings  # required: never dropped
        assert m.devices()[0].latest.temperature_celsius is None


def test_a_discovery_that_hangs_misses_its_deadline(tmp_path, monkeypatch):
    library = _fake_nvml_library()
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps({"devices": [{"name": "GPU", "memory_total": 1 << 30}],
                                    "hang_ms": {"nvmlInit_v2": 1500}}))
    monkeypatch.setenv("FAKE_NVML_SCENARIO", str(scenario))
    calls = tmp_path / "calls.json"
    monkeypatch.setenv("FAKE_NVML_CALL_LOG", str(calls))
    with gpucluster.Manager(backends=[backends.nvml(library), backends.host()], discovery_timeout_seconds=0.3,
                            require_backends=False) as m:
        m.start(background_sampling=False)
        reports = {r.backend: r for r in m.backend_reports()}
        assert reports["nvml"].status == "failed"
        assert reports["nvml"].error == "backend nvml did not finish discovery within 300ms"
        assert [d.info.key.local_id for d in m.devices()] == ["cpu:0"]
    with gpucluster.Manager(backends=[backends.nvml(library)], discovery_timeout_seconds=0.3) as m:
        with pytest.raises(gpucluster.BackendUnavailableError, match="did not finish discovery within 300ms"):
            m.start(background_sampling=False)
    # Each late backend is shut down by its own thread once nvmlInit_v2 returns
    # (bounded wait), so no hung call outlives the test.
    deadline = time.monotonic() + 10
    shutdowns = 0
    while time.monotonic() < deadline and shutdowns < 2:
        time.sleep(0.02)
        try:
            shutdowns = json.loads(calls.read_text()).get("nvmlShutdown", 0)
        except (OSError, ValueError):  # being rewritten
            pass
    assert shutdowns == 2


def test_discovery_timeout_must_be_positive():
    with pytest.raises(gpucluster.InputError) as raised:
        gpucluster.Manager(discovery_timeout_seconds=0)
    assert raised.value.field == "discovery_timeout"


# ---- Backends by name: the library's registry, as the CLI's --backend ----

def _no_vendor_libraries(monkeypatch, tmp_path):
    monkeypatch.setenv("GPUCLUSTER_NVML_LIBRARY", "/nonexistent/libnvidia-ml.so.1")
    monkeypatch.setenv("GPUCLUSTER_ROCM_SMI_LIBRARY", "/nonexistent/librocm_smi64.so")
    monkeypatch.setenv("GPUCLUSTER_SYSFS_ROOT", str(tmp_path))


def test_backends_auto_tries_every_backend_richest_first_and_skips_unusable_ones(monkeypatch, tmp_path,
                                                                                 fleet_8x_h100):
    _no_vendor_libraries(monkeypatch, tmp_path)
    with gpucluster.Manager(backends="auto", fleet=fleet_8x_h100) as m:
        m.start(background_sampling=False)  # nvml and rocm cannot load: skipped, not raised
        reports = m.backend_reports()
        assert [r.backend for r in reports] == ["nvml", "rocm", "sysfs", "host", "simulated"]
        statuses = {r.backend: r.status for r in reports}
        assert statuses["nvml"] == "unavailable" and statuses["rocm"] == "unavailable"
        assert statuses["host"] == "ok" and statuses["simulated"] == "ok"
        ids = {d.info.key.local_id for d in m.devices()}
        assert "cpu:0" in ids and "cuda:7" in ids
    with gpucluster.Manager(backends="auto") as m:  # without a fleet, no simulated backend
        m.start(background_sampling=False)
        assert [r.backend for r in m.backend_reports()] == ["nvml", "rocm", "sysfs", "host"]


def test_backends_named_explicitly_must_work(monkeypatch, tmp_path):
    _no_vendor_libraries(monkeypatch, tmp_path)
    m = gpucluster.Manager(backends="auto,nvml")
    with pytest.raises(gpucluster.BackendUnavailableError) as raised:
        m.start(background_sampling=False)
    assert raised.value.backends == ["nvml"]
    with gpucluster.Manager(backends="host") as m:
        m.start(background_sampling=False)
        assert [r.backend for r in m.backend_reports()] == ["host"]
    with gpucluster.Manager(backends="nvml", require_backends=False) as m:
        m.start(background_sampling=False)
        assert m.backend_reports()[0].status == "unavailable"


def test_backends_by_name_refuse_unknown_names_and_simulated_without_a_fleet():
    with pytest.raises(gpucluster.InputError) as raised:
        gpucluster.Manager(backends="auto,cuda")
    assert raised.value.field == "backends" and raised.value.value == "cuda"
    assert raised.value.rule == "must be one of auto, nvml, rocm, sysfs, host, simulated"
    with pytest.raises(gpucluster.InputError) as raised:
        gpucluster.Manager(backends="simulated")
    assert raised.value.field == "backends" and "fleet=PATH" in raised.value.rule
    with pytest.raises(gpucluster.InputError) as raised:
        gpucluster.Manager(backends="")
    assert raised.value.field == "backends"


def test_fan_speed_and_energy_travel_from_a_fleet_and_through_record_batch(tmp_path):
    # The two quantities added as field-table rows: read (here by the simulated
    # backend from a fleet file), kept in history, recorded through the batch
    # columns, and None (never 0) where unknown.
    fleet = {"host": "lab", "devices": [
        {"device_id": "cuda:0", "memory_bytes": 80 * GIB,
         "metrics": {"memory_used_bytes": GIB, "fan_speed_percent": 40, "energy_joules": 1234.5}},
        {"device_id": "cuda:1", "memory_bytes": 80 * GIB, "metrics": {"memory_used_bytes": GIB}}]}
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(fleet))
    with gpucluster.Manager(backends=[backends.simulated(gpucluster.load_fleet(str(path)))]) as m:
        m.start(background_sampling=False)
        m.sample_now()
        first = m.history("lab/cuda:0")[-1]
        assert first.fan_speed_percent == 40.0 and first.energy_joules == 1234.5
        other = m.history("lab/cuda:1")[-1]
        assert other.fan_speed_percent is None and other.energy_joules is None
    manager = gpucluster.Manager(backends=[], clock=lambda: T0 + 100)
    manager.register_device(make_info())
    manager.record_batch("cuda:0", [T0, T0 + 1], [GIB, GIB], [80 * GIB, 80 * GIB],
                         fan_speed_percent=[30.0, None], energy_joules=[10.0, 12.5])
    samples = manager.history("cuda:0")
    assert [s.fan_speed_percent for s in samples] == [30.0, None]
    assert [s.energy_joules for s in samples] == [10.0, 12.5]
    with pytest.raises(gpucluster.ValidationError) as raised:
        manager.record_batch("cuda:0", [T0 + 2], [GIB], [80 * GIB], fan_speed_percent=[101.0])
    assert raised.value.field == "fan_speed_percent"
