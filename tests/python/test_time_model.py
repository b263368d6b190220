"""One time model (model/time.hpp): the same float gives the same nanoseconds through the core
(gpucluster.Sample), the wire protocol's decoder (parse_telemetry_message), gpucluster.Manager's
record and the seed's API (exo_compat, one sample and a batch), and one range is refused by all."""

import array
import asyncio
import json
import math
from fractions import Fraction

import pytest

import gpucluster
from gpucluster.exo_compat import GPUMetrics, TelemetryCollector

MAX_SECONDS = 4102444800.0  # kMaxTimestampSeconds: 2100-01-01
SMALLEST_REJECTED = math.nextafter(MAX_SECONDS, math.inf)

# Quarter seconds, decimal fractions a double cannot hold, fractions whose ·10⁹ lies
# just below a half (a single rounding of fraction·1e9 made them one nanosecond late),
# and the range's ends.
AWKWARD = [0.0, 5e-324, 1e-9, 0.1, 0.3, 0.7637746185, 0.4954350875, 12.125, 1_000_000.0000000005,
           1717171721.25, 1717171721.1, 1717171721.123456789, 1795753864.396683,
           math.nextafter(MAX_SECONDS, 0.0), MAX_SECONDS]


def exact_ns(seconds: float) -> int:
    """The nanosecond nearest to the float's exact value, halves up (a float is an exact Fraction)."""
    value = Fraction(seconds) * 10**9
    floor = value.numerator // value.denominator
    return floor + 1 if value - floor >= Fraction(1, 2) else floor


def core_ns(seconds: float) -> int:
    return gpucluster.Sample(timestamp=seconds, memory_used_bytes=1, memory_total_bytes=2).timestamp_ns


def protocol_ns(seconds: float) -> int:
    body = json.dumps({"type": "metrics", "version": "1.0", "timestamp": 1.0,
                       "payload": {"device_id": "cuda:0", "timestamp": seconds, "memory_used_bytes": 1,
                                   "memory_total_bytes": 2}})
    return gpucluster.parse_telemetry_message(body).sample.timestamp_ns


def manager_ns(seconds: float) -> int:
    # The clock sits at the range's end so that no accepted timestamp is "from the future".
    with gpucluster.Manager(host="lab", clock=lambda: MAX_SECONDS) as manager:
        manager.register_device(gpucluster.DeviceInfo("lab/cuda:0", name="GPU", vendor="nvidia",
                                                      kind=gpucluster.DeviceKind.cuda, memory_total_bytes=2))
        manager.record("cuda:0", gpucluster.Sample(timestamp=seconds, memory_used_bytes=1, memory_total_bytes=2))
        return manager.history("lab/cuda:0")[-1].timestamp_ns


def compat_seconds(seconds: float) -> float:
    collector = TelemetryCollector()
    asyncio.run(collector.record_metrics(GPUMetrics(
        device_id="cuda:0", timestamp=seconds, memory_used_bytes=1, memory_total_bytes=2,
        compute_utilization_percent=None, power_watts=None, temperature_celsius=None, clock_rate_mhz=None)))
    return collector.get_metrics("cuda:0").timestamp


def compat_batch_seconds(seconds: float) -> float:
    collector = TelemetryCollector()
    collector.record_metrics_batch("cuda:0", array.array("d", [seconds]), array.array("q", [1]),
                                   array.array("q", [2]))
    return collector.get_metrics("cuda:0").timestamp


needs_protocol = pytest.mark.skipif(not gpucluster.HAVE_PROTOCOL, reason="built without the protocol")


@pytest.mark.parametrize("seconds", AWKWARD, ids=repr)
def test_core_gives_the_exact_nanosecond(seconds):
    assert core_ns(seconds) == exact_ns(seconds)


@needs_protocol
@pytest.mark.parametrize("seconds", AWKWARD, ids=repr)
def test_protocol_decoder_gives_the_core_nanosecond(seconds):
    assert protocol_ns(seconds) == core_ns(seconds)


@pytest.mark.parametrize("seconds", AWKWARD, ids=repr)
def test_manager_record_gives_the_core_nanosecond(seconds):
    assert manager_ns(seconds) == core_ns(seconds)


# The seed's API reads timestamps back as seconds; core's to_seconds is the double that
# converts back to the same nanosecond, so the round trip through the core shows what was stored.
# Its samples may not be ahead of the wall clock, so the range's far end is left to the others.
@pytest.mark.parametrize("seconds", [s for s in AWKWARD if s < 2e9], ids=repr)
def test_exo_compat_stores_the_core_nanosecond(seconds):
    assert core_ns(compat_seconds(seconds)) == core_ns(seconds)
    assert core_ns(compat_batch_seconds(seconds)) == core_ns(seconds)


def test_one_range_refused_by_every_path():
    # Infinity is out of the range too, but named by its own reason (not_finite), as NaN is.
    for bad in (SMALLEST_REJECTED, -5e-324, math.inf):
        reason = "not_finite" if math.isinf(bad) else "out_of_range"
        with pytest.raises(gpucluster.ValidationError) as raised:
            core_ns(bad)
        assert raised.value.reason == reason and raised.value.field == "timestamp"
        if reason == "out_of_range":
            assert "[0, 4102444800]" in raised.value.rule
        with pytest.raises(gpucluster.ValidationError) as raised:
            manager_ns(bad)
        assert raised.value.reason == reason
        with pytest.raises(ValueError):
            compat_seconds(bad)
        with pytest.raises(ValueError):
            compat_batch_seconds(bad)
    if gpucluster.HAVE_PROTOCOL:
        with pytest.raises(gpucluster.ProtocolError) as raised:
            protocol_ns(SMALLEST_REJECTED)
        assert raised.value.kind == "invalid" and raised.value.field == "payload.timestamp"
        assert "[0, 4102444800]" in raised.value.rule
