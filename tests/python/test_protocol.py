"""Protocol messages between the drop-in module's helpers and the agent's JSON (byte-compatible names)."""

import json

import pytest

import gpucluster
from gpucluster.exo_compat import (
    DeviceCapabilities,
    DeviceRegistration,
    DeviceType,
    GPUMetrics,
    Heartbeat,
    TelemetryProtocol,
)

pytestmark = pytest.mark.skipif(not gpucluster.HAVE_PROTOCOL,
                                reason="built without the agent's protocol (src/wire/protocol_decode.cpp)")

GIB = 1 << 30


def same_shape(a, b, path="$"):
    """Identical keys at every level; numbers equal (floats to float32 precision); the rest equal."""
    assert type(a) is type(b) or (isinstance(a, (int, float)) and isinstance(b, (int, float))), path
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), f"{path}: {sorted(a)} != {sorted(b)}"
        for k in a:
            same_shape(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-6), path
    else:
        assert a == b, path


def round_trip(message):
    text = TelemetryProtocol.serialize_message(message)
    parsed = gpucluster.parse_telemetry_message(text)
    back = json.loads(gpucluster.to_protocol_json(parsed, message["timestamp"]))
    return parsed, back


def test_metrics_round_trip():
    m = GPUMetrics("cuda:0", 1707043210.25, 2 * GIB, 8 * GIB, 45.5, 12.3, 65.0, 750)
    message = TelemetryProtocol.create_metrics_message(m)
    parsed, back = round_trip(message)
    assert isinstance(parsed, gpucluster.MetricsReport) and parsed.device_id == "cuda:0"
    assert parsed.sample.power_watts == 12.3 and parsed.sample.memory_used_bytes == 2 * GIB
    same_shape(message, back)
    again = TelemetryProtocol.parse_metrics(back["payload"])
    assert again.timestamp == pytest.approx(m.timestamp, abs=1e-6)  # seconds -> ns -> seconds: within an ulp
    again.timestamp = m.timestamp
    assert again == m


def test_heartbeat_round_trip():
    hb = Heartbeat("vulkan:0", GPUMetrics("vulkan:0", 1707043210.0, GIB, 8 * GIB, 45.5, 12.3, 65.0, 750),
                   timestamp=1707043210.0, is_available=True, error_message=None)
    message = TelemetryProtocol.create_heartbeat_message(hb)
    parsed, back = round_trip(message)
    assert isinstance(parsed, gpucluster.Heartbeat) and parsed.is_available
    same_shape(message, back)
    again = TelemetryProtocol.parse_heartbeat(back["payload"])
    assert again.metrics == hb.metrics and again.is_available and again.error_message is None


def test_registration_round_trip():
    caps = DeviceCapabilities("vulkan:0", DeviceType.VULKAN_ANDROID, "Qualcomm Adreno 650", "Qualcomm", 128, 160.0,
                              8 * GIB, "1.2.0", supports_fp64=False, supports_tensor_cores=True)
    reg = DeviceRegistration("device-001", 5000, "vulkan:0", caps, timestamp=1707043200.0)
    message = TelemetryProtocol.create_registration_message(reg)
    parsed, back = round_trip(message)
    assert isinstance(parsed, gpucluster.DeviceRegistration)
    assert parsed.info.key.host == "device-001" and parsed.port == 5000
    assert sorted(back["payload"]["capabilities"]) == sorted(message["payload"]["capabilities"])
    assert back["payload"]["capabilities"]["device_name"] == "Qualcomm Adreno 650"
    assert TelemetryProtocol.parse_registration(back["payload"]).capabilities.max_memory_bytes == 8 * GIB


def test_agent_refuses_what_the_module_refuses():
    with pytest.raises(gpucluster.ProtocolError) as raised:
        gpucluster.parse_telemetry_message('{"type": "metrics"')
    assert raised.value.kind == "malformed" and isinstance(raised.value, ValueError)
    bad = TelemetryProtocol.create_metrics_message(GPUMetrics("cuda:0", 1.0, -5, 2, 50.0, 1.0, 1.0, 1))
    with pytest.raises(gpucluster.ProtocolError) as raised:
        gpucluster.parse_telemetry_message(json.dumps(bad))
    assert raised.value.kind == "invalid" and "memory_used_bytes" in raised.value.field
    with pytest.raises(ValueError):  # and the drop-in's serializer refuses NaN before it reaches the wire
        TelemetryProtocol.serialize_message(
            TelemetryProtocol.create_metrics_message(GPUMetrics("cuda:0", 1.0, 1, 2, float("nan"), 1.0, 1.0, 1)))


def test_example_messages_reproduce_exactly():
    """docs/protocol.md: to_protocol_json of each example file gives the file back (up to key order and
    whitespace), the envelope timestamp included: one float, one nanosecond count, on every path."""
    import pathlib
    examples = pathlib.Path(__file__).resolve().parents[2] / "examples" / "protocol"
    files = sorted(examples.glob("*.json"))
    assert len(files) == 5
    for path in files:
        original = json.loads(path.read_text())
        parsed = gpucluster.parse_telemetry_message(path.read_text())
        back = json.loads(gpucluster.to_protocol_json(parsed, original["timestamp"]))
        assert back == original, path.name


@pytest.mark.parametrize("seconds", [1717171721.25, 1717171720.5, 0.1, 1.000000001, 1796000000.999999])
def test_the_same_float_is_the_same_timestamp_over_the_wire_and_through_the_drop_in(seconds):
    from gpucluster.exo_compat import GPUClusteringManager, GPUDevice
    wire = TelemetryProtocol.create_metrics_message(GPUMetrics("cuda:0", seconds, 1, 2, None, None, None, None))
    parsed = gpucluster.parse_telemetry_message(json.dumps(wire))
    manager = GPUClusteringManager()
    manager.register_device(GPUDevice(device_id="cuda:0", name="GPU", vendor="nvidia", backend="cuda",
                                      compute_capability="9.0", memory_bytes=2, memory_available=2, compute_units=1,
                                      tensor_core_count=0, max_threads_per_block=1024, clock_rate_mhz=1,
                                      bandwidth_gbps=1.0, support_level="full", driver_version="1",
                                      backend_name="cuda"))
    manager._record(GPUMetrics("cuda:0", seconds, 1, 2, None, None, None, None))
    manager.record_metrics_batch("cuda:0", [seconds], [1], [2])  # the same sample again: a duplicate
    assert len(manager.get_metrics_history("cuda:0")) == 1
    # The native Sample's conversion is the wire's too.
    assert gpucluster.Sample(timestamp=seconds).timestamp_ns == parsed.sample.timestamp_ns
