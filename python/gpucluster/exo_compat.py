"""Drop-in replacement for the seed's GPU-clustering API, on gpucluster's C++ core.

    import gpucluster.exo_compat as clustering   # instead of the seed's module

Same names, keyword names and return shapes as the seed (``GPUClusteringManager``,
``TelemetryCollector``, ``DeviceSelector``, ``WorkloadDistributor``, ``GPUMetrics``,
``GPUDevice``, ``DeviceCapabilities``, ``DeviceType``, ``DistributionStrategy``,
``TelemetryProtocol`` ...): dicts keyed by device id, lists of the caller's own items,
``None`` when no device qualifies, ``async`` ``record_metrics``/``shutdown``, and the
exception classes the seed documents (``KeyError`` for an unregistered device,
``ValueError`` for invalid metrics or capacities, ``RuntimeError`` after shutdown),
raised as gpucluster's subclasses of them, which carry device/field/value/rule.

What behaves differently, on purpose (the seed's bugs, fixed):

* Items are never lost. Items past ``max_per_device``, or with no device to go to,
  raise ``UnplacedItemsError`` (a ``ValueError``) carrying ``.distribution`` (what
  was placed) and ``.unplaced`` (the caller's items that were not).
* ``distribute_by_capacity`` uses largest-remainder apportionment: each device gets
  within one item of its exact share, zero capacity gets nothing, integral shares
  are exact (19 items over 10 equal devices: 2,2,...,2,1, not 10,1,...,1).
* Every number is validated: NaN/inf metrics or capacities raise ``ValueError``; a
  sample older than the device's newest is rejected (``reason == "out_of_order"``).
* Shutdown waits for calls in flight (no sleep) and every later call raises
  ``RuntimeError`` (``ShutDownError``), never ``AttributeError``.
* Scores use the live sample's memory total; a metric given as ``None`` is
  unavailable and left out of scores and averages (never read as 0).

Storage: history is kept in the C++ core (bounded ring buffer per device); gauges
are stored as 32-bit floats and read back as their shortest decimal (41.3 stays
41.3), so ``get_metrics`` returns an equal ``GPUMetrics``, not the same object.
Device ids must be 1-256 characters without ``/``.

Additions for high-rate producers: ``record_metrics_batch`` (columns: ``array.array``,
numpy arrays or sequences; many samples in one call, the GIL released while storing)
and ``record_metrics_many`` (an iterable of ``GPUMetrics``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from . import _native
from .errors import (
    InputError,
    PlanError,
    ShutDownError,
    UnknownDeviceError,
    UnplacedItemsError,
    UnregisteredDeviceError,
    ValidationError,
)

__all__ = [
    "DeviceType",
    "GPUMetrics",
    "DeviceCapabilities",
    "DeviceRegistration",
    "Heartbeat",
    "TelemetryProtocol",
    "DeviceScorer",
    "GPUDevice",
    "TelemetryCollector",
    "DeviceSelector",
    "WorkloadDistributor",
    "DistributionStrategy",
    "GPUClusteringManager",
    # errors, re-exported for callers that want to catch the specific class
    "ValidationError",
    "UnregisteredDeviceError",
    "UnknownDeviceError",
    "PlanError",
    "UnplacedItemsError",
    "ShutDownError",
    "REGISTRATION_MESSAGE_EXAMPLE",
    "HEARTBEAT_MESSAGE_EXAMPLE",
]

Number = Union[int, float]
Column = Union[Sequence[Optional[Number]], Any]  # a sequence, or a buffer (array.array, numpy)


# ---------------------------------------------------------------------------
# Data model and wire protocol (the seed's telemetry_protocol)
# ---------------------------------------------------------------------------


class DeviceType(Enum):
    """GPU device types for cross-platform identification (the seed's values)."""

    CUDA = "cuda"
    ROCM = "rocm"
    METAL = "metal"
    VULKAN_ANDROID = "vulkan_android"
    VULKAN_LINUX = "vulkan_linux"
    INTEL_XE = "intel_xe"
    DIRECTML = "directml"
    CPU = "cpu"


def _check_finite(obj: Any, fields: Sequence[str], device: str) -> None:
    for name in fields:
        value = getattr(obj, name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValidationError(
                f"{device}: {name} = {value} must be a finite number",
                device=device, field=name, value=str(value), rule="must be a finite number",
                reason="not_finite")


_METRIC_NUMBERS = ("timestamp", "memory_used_bytes", "memory_total_bytes", "compute_utilization_percent",
                   "power_watts", "temperature_celsius", "clock_rate_mhz")


class _JsonMessage:
    """to_json/from_json of the protocol's data classes, from their to_dict/_from_dict."""

    def to_json(self) -> str:
        """JSON text; NaN/inf are rejected (ValueError), as strict JSON requires."""
        return json.dumps(self.to_dict(), allow_nan=False)  # type: ignore[attr-defined]

    @classmethod
    def from_json(cls, json_str: str):
        """From JSON text; NaN/inf values raise ValidationError (a ValueError)."""
        return cls._from_dict(json.loads(json_str))  # type: ignore[attr-defined]


@dataclass
class GPUMetrics(_JsonMessage):
    """Real-time GPU performance metrics (one sample).

    A gauge given as ``None`` is unavailable (an addition: the seed required every field).
    """

    device_id: str
    timestamp: float  # Unix timestamp (seconds since epoch)
    memory_used_bytes: int
    memory_total_bytes: int
    compute_utilization_percent: Optional[float]  # 0.0 to 100.0
    power_watts: Optional[float]
    temperature_celsius: Optional[float]
    clock_rate_mhz: Optional[int]

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def _from_dict(cls, data: Dict[str, Any]) -> "GPUMetrics":
        metrics = cls(**data)
        _check_finite(metrics, _METRIC_NUMBERS, str(metrics.device_id))
        return metrics


@dataclass
class DeviceCapabilities(_JsonMessage):
    """Static device properties and capabilities (the protocol's ``capabilities``)."""

    device_id: str
    device_type: DeviceType
    device_name: str
    vendor: str
    compute_units: int
    memory_bandwidth_gbps: float
    max_memory_bytes: int
    driver_version: str
    supports_fp64: bool = False
    supports_tensor_cores: bool = False

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["device_type"] = DeviceType(self.device_type).value
        return data

    @classmethod
    def _from_dict(cls, data: Dict[str, Any]) -> "DeviceCapabilities":
        data = dict(data)
        data["device_type"] = DeviceType(data["device_type"])
        caps = cls(**data)
        _check_finite(caps, ("compute_units", "memory_bandwidth_gbps", "max_memory_bytes"), str(caps.device_id))
        return caps


@dataclass
class DeviceRegistration(_JsonMessage):
    """Register a device in the cross-device cluster."""

    hostname: str
    port: int
    device_id: str
    capabilities: DeviceCapabilities
    timestamp: float = field(default_factory=time.time)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "hostname": self.hostname,
            "port": self.port,
            "device_id": self.device_id,
            "capabilities": self.capabilities.to_dict(),
            "timestamp": self.timestamp,
        }

    @classmethod
    def _from_dict(cls, data: Dict[str, Any]) -> "DeviceRegistration":
        data = dict(data)
        capabilities = DeviceCapabilities._from_dict(data.pop("capabilities"))
        registration = cls(capabilities=capabilities, **data)
        _check_finite(registration, ("timestamp",), str(registration.device_id))
        return registration


@dataclass
class Heartbeat(_JsonMessage):
    """Periodic device status heartbeat (``metrics`` may be None: no sample with it)."""

    device_id: str
    metrics: Optional[GPUMetrics]
    timestamp: float = field(default_factory=time.time)
    is_available: bool = True
    error_message: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "device_id": self.device_id,
            "metrics": self.metrics.to_dict() if self.metrics is not None else None,
            "timestamp": self.timestamp,
            "is_available": self.is_available,
            "error_message": self.error_message,
        }

    @classmethod
    def _from_dict(cls, data: Dict[str, Any]) -> "Heartbeat":
        data = dict(data)
        metrics_data = data.pop("metrics", None)
        metrics = GPUMetrics._from_dict(metrics_data) if metrics_data is not None else None
        heartbeat = cls(metrics=metrics, **data)
        _check_finite(heartbeat, ("timestamp",), str(heartbeat.device_id))
        return heartbeat


class TelemetryProtocol:
    """The seed's JSON envelope: ``{"type", "version": "1.0", "timestamp", "payload"}``."""

    MSG_TYPE_REGISTRATION = "device_registration"
    MSG_TYPE_HEARTBEAT = "heartbeat"
    MSG_TYPE_METRICS = "metrics"
    MSG_TYPE_TOPOLOGY = "topology"
    VERSION = "1.0"

    @staticmethod
    def _envelope(message_type: str, payload: Dict[str, Any]) -> Dict[str, Any]:
        return {"type": message_type, "version": TelemetryProtocol.VERSION, "timestamp": time.time(),
                "payload": payload}

    @staticmethod
    def create_registration_message(reg: DeviceRegistration) -> Dict[str, Any]:
        return TelemetryProtocol._envelope(TelemetryProtocol.MSG_TYPE_REGISTRATION, reg.to_dict())

    @staticmethod
    def create_heartbeat_message(heartbeat: Heartbeat) -> Dict[str, Any]:
        return TelemetryProtocol._envelope(TelemetryProtocol.MSG_TYPE_HEARTBEAT, heartbeat.to_dict())

    @staticmethod
    def create_metrics_message(metrics: GPUMetrics) -> Dict[str, Any]:
        return TelemetryProtocol._envelope(TelemetryProtocol.MSG_TYPE_METRICS, metrics.to_dict())

    @staticmethod
    def serialize_message(message: Dict[str, Any]) -> str:
        """JSON text; NaN/inf raise ValueError (strict JSON, as the agent requires)."""
        return json.dumps(message, allow_nan=False)

    @staticmethod
    def deserialize_message(json_str: str) -> Dict[str, Any]:
        return json.loads(json_str)

    @staticmethod
    def parse_registration(payload: Dict[str, Any]) -> DeviceRegistration:
        return DeviceRegistration._from_dict(payload)

    @staticmethod
    def parse_heartbeat(payload: Dict[str, Any]) -> Heartbeat:
        return Heartbeat._from_dict(payload)

    @staticmethod
    def parse_metrics(payload: Dict[str, Any]) -> GPUMetrics:
        return GPUMetrics._from_dict(payload)


class DeviceScorer:
    """The seed's score, 0.0 to 1.0: (0.6 * free/total + 0.4 * (1 - util/100)) * thermal penalty.

    Computed by the C++ core from the live sample (its memory total, not the static
    maximum); an unavailable gauge is left out and the weights renormalised; NaN raises.
    """

    @staticmethod
    def score_device(metrics: GPUMetrics, capabilities: Optional[DeviceCapabilities] = None) -> float:
        return _native._score_metrics(metrics)

    @staticmethod
    def rank_devices(devices: Dict[str, Tuple[GPUMetrics, DeviceCapabilities]]) -> List[Tuple[str, float]]:
        scores = [(device_id, _native._score_metrics(metrics)) for device_id, (metrics, _caps) in devices.items()]
        return sorted(scores, key=lambda pair: pair[1], reverse=True)

    @staticmethod
    def find_best_device(devices: Dict[str, Tuple[GPUMetrics, DeviceCapabilities]],
                         min_memory_bytes: int = 0) -> Optional[str]:
        return DeviceSelector(devices).select_best_device(min_memory_bytes)


REGISTRATION_MESSAGE_EXAMPLE: Dict[str, Any] = {
    "type": "device_registration",
    "version": "1.0",
    "timestamp": 1707043200.0,
    "payload": {
        "hostname": "device-001",
        "port": 5000,
        "device_id": "vulkan:0",
        "capabilities": {
            "device_id": "vulkan:0",
            "device_type": "vulkan_android",
            "device_name": "Qualcomm Adreno 650",
            "vendor": "Qualcomm",
            "compute_units": 128,
            "memory_bandwidth_gbps": 160.0,
            "max_memory_bytes": 8589934592,
            "driver_version": "1.2.0",
            "supports_fp64": False,
            "supports_tensor_cores": True,
        },
        "timestamp": 1707043200.0,
    },
}

HEARTBEAT_MESSAGE_EXAMPLE: Dict[str, Any] = {
    "type": "heartbeat",
    "version": "1.0",
    "timestamp": 1707043210.0,
    "payload": {
        "device_id": "vulkan:0",
        "metrics": {
            "device_id": "vulkan:0",
            "timestamp": 1707043210.0,
            "memory_used_bytes": 2147483648,
            "memory_total_bytes": 8589934592,
            "compute_utilization_percent": 45.5,
            "power_watts": 12.3,
            "temperature_celsius": 65.0,
            "clock_rate_mhz": 750,
        },
        "timestamp": 1707043210.0,
        "is_available": True,
        "error_message": None,
    },
}


# ---------------------------------------------------------------------------
# Devices (the seed's exo.gpu.backend.GPUDevice)
# ---------------------------------------------------------------------------


@dataclass
class GPUDevice:
    """A GPU device as a backend describes it (the seed's fields, in the seed's order)."""

    device_id: str
    name: str
    vendor: str
    backend: str
    compute_capability: str
    memory_bytes: int
    memory_available: int
    compute_units: int
    tensor_core_count: int
    max_threads_per_block: int
    clock_rate_mhz: int
    bandwidth_gbps: float
    support_level: str
    driver_version: str
    backend_name: str


def _kind_of(device: GPUDevice) -> str:
    for text in (device.backend, device.backend_name):
        if isinstance(text, str):
            try:
                return _native.parse_device_kind(text).name
            except InputError:
                continue
    return "unknown"


def _optional_int(value: Any) -> Optional[int]:
    return int(value) if isinstance(value, (int, float)) and math.isfinite(value) and value >= 0 else None


def _metrics_from_tuple(device_id: str, values: Tuple[Any, ...]) -> GPUMetrics:
    return GPUMetrics(device_id, *values)


# _native_record_metrics: on an instance, ``record_metrics`` is the native
# ``_core.record_later``, which returns an awaitable that validates and stores the
# sample when it is awaited (or stepped by a Task), as the seed's coroutine did,
# without a Python frame and coroutine per call. It is a collections.abc.Coroutine
# (``asyncio.create_task``, ``ensure_future``, ``gather`` and ``run`` take it), runs
# once, and warns (RuntimeWarning) if dropped unawaited. The class attribute stays
# the ``async def`` below (``GPUClusteringManager.record_metrics`` is a coroutine
# function); a subclass that overrides ``record_metrics`` keeps its override.


# ---------------------------------------------------------------------------
# Telemetry
# ---------------------------------------------------------------------------


class TelemetryCollector:
    """Current metrics and a bounded per-device history (``max_history`` samples).

    Standalone, it learns a device from its first metrics, as the seed's did. Every
    sample is validated (ValueError, nothing stored) and must not be older than the
    device's newest.
    """

    def __init__(self, max_history: int = 100) -> None:
        if not isinstance(max_history, int) or max_history < 1:
            raise InputError(f"max_history must be a positive integer, got {max_history!r}",
                             field="max_history", value=repr(max_history), rule="must be >= 1")
        self._max_history = max_history
        self._core = _native._CompatCore(max_history, True, None)
        self._record = self._core.fast_record
        if type(self).record_metrics is TelemetryCollector.record_metrics:  # not overridden
            self.record_metrics = self._core.record_later  # see _native_record_metrics

    async def record_metrics(self, metrics: GPUMetrics) -> None:
        self._record(metrics)

    def record_metrics_many(self, metrics: Iterable[GPUMetrics]) -> int:
        """Records many samples in one call; returns how many. On a bad one raises its
        error with ``.index``: those before it are stored, none after."""
        return self._core.record_many(metrics)

    def record_metrics_batch(self, device_id: str, timestamps: Column, memory_used_bytes: Column,
                             memory_total_bytes: Column, compute_utilization_percent: Optional[Column] = None,
                             power_watts: Optional[Column] = None, temperature_celsius: Optional[Column] = None,
                             clock_rate_mhz: Optional[Column] = None) -> int:
        """Many samples of one device as columns (buffers are read in place; ``None``
        for a column the device does not report). Returns how many were stored."""
        return self._core.record_columns(device_id, timestamps, memory_used_bytes, memory_total_bytes,
                                         compute_utilization_percent, power_watts, temperature_celsius,
                                         clock_rate_mhz)

    def get_metrics(self, device_id: str) -> Optional[GPUMetrics]:
        values = self._core.latest(device_id)
        return None if values is None else _metrics_from_tuple(device_id, values)

    def get_metrics_history(self, device_id: str) -> List[GPUMetrics]:
        return [_metrics_from_tuple(device_id, values) for values in self._core.history(device_id)]

    def get_aggregated_metrics(self) -> Dict[str, Any]:
        """The seed's aggregate ({} before any metrics). Averages are over the devices that
        report the gauge, and None when none does."""
        aggregate = self._core.aggregate()
        if aggregate:
            aggregate["timestamp"] = datetime.now(tz=timezone.utc).isoformat()
        return aggregate


# ---------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------


class DeviceSelector:
    """Selects the best device among ``{device_id: (metrics, capabilities)}``."""

    def __init__(self, devices: Dict[str, Tuple[GPUMetrics, DeviceCapabilities]]) -> None:
        self._devices = devices

    def rank_devices(self) -> List[Tuple[str, float]]:
        """(device_id, score), highest first (ties keep the given order)."""
        return DeviceScorer.rank_devices(self._devices)

    def select_best_device(self, min_memory_bytes: int = 0) -> Optional[str]:
        """The best-scored device with score > 0 and at least ``min_memory_bytes`` free, or None
        (ties go to the earlier device). Eligibility is the core's scoring, as everywhere."""
        ids = list(self._devices)
        metrics = [metrics for metrics, _caps in self._devices.values()]
        # Past 2**63 - 1 bytes no device qualifies either way; the core takes 64-bit counts.
        index = _native._select_metrics(metrics, min(int(min_memory_bytes), (1 << 63) - 1))
        return None if index is None else ids[index]


# ---------------------------------------------------------------------------
# Distribution
# ---------------------------------------------------------------------------


class DistributionStrategy(Enum):
    """Type-safe distribution strategies."""

    UNIFORM = "uniform"
    CAPACITY = "capacity"


def _raise_unplaced(distribution: Dict[Any, List[Any]], unplaced: List[Any], why: str) -> None:
    raise UnplacedItemsError(
        f"{len(unplaced)} item(s) could not be placed: {why}",
        distribution=distribution, unplaced=unplaced, rule=why)


class WorkloadDistributor:
    """Splits the caller's items into per-device lists of contiguous slices; never drops one."""

    def distribute_uniform(self, devices: List[str], workload_items: Sequence[Any],
                           max_per_device: Optional[int] = None) -> Dict[str, List[Any]]:
        """Even split in the given device order (the first devices get one more).

        Raises UnplacedItemsError (a ValueError) for items past ``max_per_device`` or
        when there is no device, with the partial distribution and the unplaced items.
        """
        distribution, unplaced = _native._distribute_uniform(devices, workload_items, max_per_device)
        if unplaced:
            why = ("no device to place them on" if not devices
                   else f"every device is full at max_per_device={max_per_device}")
            _raise_unplaced(distribution, unplaced, why)
        return distribution

    def distribute_by_capacity(self, capacities: Dict[str, float],
                               workload_items: Sequence[Any]) -> Dict[str, List[Any]]:
        """Proportional to capacity by largest remainder: each device within one item of its
        exact share, zero capacity gets nothing. Slices follow sorted device ids; the dict
        keeps the caller's key order.

        Raises PlanError (ValueError) for a negative, NaN or infinite capacity or a zero
        total; UnplacedItemsError when there are items but no devices.
        """
        distribution, unplaced = _native._distribute_by_capacity(capacities, workload_items)
        if unplaced:
            _raise_unplaced(distribution, unplaced, "no device to place them on")
        return distribution


# ---------------------------------------------------------------------------
# Manager
# ---------------------------------------------------------------------------


class GPUClusteringManager:
    """Registers devices, records validated telemetry, selects a device, distributes work.

    ``staleness_seconds``: when given, a device whose newest sample is older than that
    (by its timestamp, against the wall clock) is never selected. The default, None,
    keeps the seed's behaviour of never ageing metrics out.
    """

    def __init__(self, *, max_history: int = 100, staleness_seconds: Optional[float] = None) -> None:
        if not isinstance(max_history, int) or max_history < 1:
            raise InputError(f"max_history must be a positive integer, got {max_history!r}",
                             field="max_history", value=repr(max_history), rule="must be >= 1")
        self._devices: Dict[str, GPUDevice] = {}
        self._core = _native._CompatCore(max_history, False, staleness_seconds)
        self._record = self._core.fast_record
        if type(self).record_metrics is GPUClusteringManager.record_metrics:  # not overridden
            self.record_metrics = self._core.record_later  # see _native_record_metrics
        self._distributor = WorkloadDistributor()

    def _check_open(self, operation: str) -> None:
        if self._core.is_shut_down:
            raise ShutDownError(f"cannot {operation}: the manager is shut down")

    # devices -------------------------------------------------------------------
    def register_device(self, device: GPUDevice) -> None:
        """Registers (or replaces) a device under its ``device_id``."""
        self._check_open("register a device")
        self._core.register_device(
            device.device_id, name=str(device.name), vendor=str(device.vendor), device_type=_kind_of(device),
            memory_bytes=_optional_int(device.memory_bytes) or 0,
            compute_units=_optional_int(device.compute_units),
            driver_version=device.driver_version if isinstance(device.driver_version, str) else None,
            bandwidth_gbps=(float(device.bandwidth_gbps) if isinstance(device.bandwidth_gbps, (int, float))
                            else None),
            compute_capability=(device.compute_capability if isinstance(device.compute_capability, str)
                                else None))
        self._devices[device.device_id] = device

    def unregister_device(self, device_id: str) -> bool:
        self._check_open("unregister a device")
        removed = self._devices.pop(device_id, None) is not None
        self._core.unregister_device(device_id)
        return removed

    def get_device(self, device_id: str) -> Optional[GPUDevice]:
        self._check_open("read a device")
        return self._devices.get(device_id)

    def list_devices(self) -> List[GPUDevice]:
        self._check_open("list devices")
        return list(self._devices.values())

    # telemetry -----------------------------------------------------------------
    async def record_metrics(self, metrics: GPUMetrics) -> None:
        """Validates and records one sample.

        Raises KeyError (UnregisteredDeviceError) for an unregistered device, ValueError
        (ValidationError) for invalid metrics, RuntimeError (ShutDownError) after shutdown.
        """
        self._record(metrics)

    def record_metrics_many(self, metrics: Iterable[GPUMetrics]) -> int:
        """Records many samples in one call; returns how many. On a bad one raises its
        error with ``.index``: those before it are stored, none after."""
        return self._core.record_many(metrics)

    def record_metrics_batch(self, device_id: str, timestamps: Column, memory_used_bytes: Column,
                             memory_total_bytes: Column, compute_utilization_percent: Optional[Column] = None,
                             power_watts: Optional[Column] = None, temperature_celsius: Optional[Column] = None,
                             clock_rate_mhz: Optional[Column] = None) -> int:
        """Many samples of one registered device, as columns (``array.array``, numpy arrays,
        or sequences; ``None`` for a column the device does not report). Buffers are read in
        place with the GIL released. Returns how many were stored; on a bad sample raises its
        ValidationError with ``.index`` (those before it are stored, none after)."""
        return self._core.record_columns(device_id, timestamps, memory_used_bytes, memory_total_bytes,
                                         compute_utilization_percent, power_watts, temperature_celsius,
                                         clock_rate_mhz)

    def get_device_metrics(self, device_id: str) -> Optional[GPUMetrics]:
        values = self._core.latest(device_id)
        return None if values is None else _metrics_from_tuple(device_id, values)

    def get_metrics_history(self, device_id: str) -> List[GPUMetrics]:
        return [_metrics_from_tuple(device_id, values) for values in self._core.history(device_id)]

    def get_aggregated_metrics(self) -> Dict[str, Any]:
        """The seed's aggregate ({} before any metrics); averages over reporting devices."""
        aggregate = self._core.aggregate()
        if aggregate:
            aggregate["timestamp"] = datetime.now(tz=timezone.utc).isoformat()
        return aggregate

    # selection -------------------------------------------------------------------
    def select_best_device(self, min_memory_bytes: int = 0) -> Optional[str]:
        """The best-scored device with metrics, score > 0 and at least ``min_memory_bytes``
        free, or None. Ties go to the smaller device id."""
        return self._core.select(min_memory_bytes)

    def rank_devices(self) -> List[Tuple[str, float]]:
        """(device_id, score) of every device with metrics, highest first."""
        return self._core.rank()

    # distribution ----------------------------------------------------------------
    def distribute_workload(self, tasks: Sequence[Any],
                            strategy: Union[DistributionStrategy, str] = DistributionStrategy.UNIFORM,
                            capacities: Optional[Dict[str, float]] = None,
                            max_per_device: Optional[int] = None) -> Dict[str, List[Any]]:
        """Splits ``tasks`` over the registered devices: ``"uniform"`` (even, registration
        order) or ``"capacity"`` (``capacities``, default each device's compute units).

        Raises ValueError for an unknown strategy or invalid capacities, and
        UnplacedItemsError (a ValueError, with ``.distribution`` and ``.unplaced``) when
        items cannot all be placed.
        """
        self._check_open("distribute work")
        try:
            chosen = DistributionStrategy(strategy)
        except ValueError:
            raise InputError(f"Unknown distribution strategy: {strategy}", field="strategy",
                             value=str(strategy), rule="must be 'uniform' or 'capacity'") from None
        if chosen is DistributionStrategy.CAPACITY:
            if not capacities:
                capacities = {device_id: float(_optional_int(device.compute_units) or 0)
                              for device_id, device in self._devices.items()}
            if max_per_device is not None:
                raise InputError("max_per_device applies to the uniform strategy only", field="max_per_device",
                                 value=str(max_per_device), rule="uniform strategy only")
            return self._distributor.distribute_by_capacity(capacities, tasks)
        return self._distributor.distribute_uniform(list(self._devices), tasks, max_per_device)

    # lifecycle -------------------------------------------------------------------
    async def shutdown(self) -> None:
        """Refuses new calls, waits for the ones in flight (no sleep), frees every device
        and sample. Idempotent; every later call raises RuntimeError (ShutDownError)."""
        self._core.shutdown()
        self._devices.clear()

    @property
    def is_shut_down(self) -> bool:
        return self._core.is_shut_down
