"""Pure-Python baseline of the seed's GPU-clustering design, *after* the Phase 6 review fixes.

This module re-implements, from the code review document
(``shared/seed/phase6-code-review-fixes.md``), the Python design that gpucluster replaces.
It exists only so that ``seed_bench.py`` / ``compare.py`` can measure the C++ implementation
against the design it replaces, on the same workloads.

It is a *design baseline*, not a corrected version. It deliberately keeps the seed's
behaviour, including the bugs that the review did not catch and that the C++ code must fix:

* ``WorkloadDistributor.distribute_by_capacity`` gives ``max(1, int(n * p))`` items per device:
  zero-capacity devices still get work, float truncation loses items
  (``int(100 * 0.29) == 28``), and every leftover goes to the single largest device
  (19 items over 10 equal devices -> 10, 1, 1, ..., 1).
* ``WorkloadDistributor.distribute_uniform`` silently drops items past ``max_per_device`` and
  returns ``{}`` (every task vanishes) when there are no devices.
* NaN / inf capacities reach ``int()`` and fail with an unrelated message.
* Validation (fix #3) lets NaN temperatures / NaN power through (``nan < -273.15`` is False).
* Samples are never checked for order: an older sample overwrites a newer one; nothing goes stale.
* Shutdown sleeps 100 ms and hopes in-flight calls have finished (fix #5); methods that the review
  did not guard fail with ``AttributeError`` after shutdown.
* Devices are keyed by their local id (``cuda:0`` on two hosts collide) and every field is required.

Standard library only; Python 3.11.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any, Deque, Dict, List, Optional, Tuple, Union

logger = logging.getLogger("seed_clustering")

__all__ = [
    "GPUMetrics",
    "GPUDevice",
    "TelemetryCollector",
    "DeviceScorer",
    "DeviceSelector",
    "WorkloadDistributor",
    "DistributionStrategy",
    "GPUClusteringManager",
]


# ---------------------------------------------------------------------------
# Data model
# ---------------------------------------------------------------------------


@dataclass
class GPUMetrics:
    """One telemetry sample, as in the seed's ``metrics`` message. Every field is required."""

    device_id: str
    timestamp: float
    memory_used_bytes: int
    memory_total_bytes: int
    compute_utilization_percent: float
    power_watts: float
    temperature_celsius: float
    clock_rate_mhz: int


@dataclass
class GPUDevice:
    """Static device description, as in the seed's ``capabilities`` payload."""

    device_id: str
    device_type: str
    device_name: str
    vendor: str
    compute_units: int
    memory_bandwidth_gbps: float
    max_memory_bytes: int
    driver_version: str
    supports_fp64: bool
    supports_tensor_cores: bool


# ---------------------------------------------------------------------------
# Telemetry (fix #1: deque history)
# ---------------------------------------------------------------------------


class TelemetryCollector:
    """Current metrics and a bounded per-device history (``deque(maxlen=max_history)``).

    No validation and no ordering check: the last call wins, even with an older timestamp.
    """

    def __init__(self, max_history: int = 100) -> None:
        self._max_history = max_history
        self._current_metrics: Dict[str, GPUMetrics] = {}
        self._metrics_history: Dict[str, Deque[GPUMetrics]] = {}

    async def record_metrics(self, metrics: GPUMetrics) -> None:
        device_id = metrics.device_id
        self._current_metrics[device_id] = metrics

        if device_id not in self._metrics_history:
            self._metrics_history[device_id] = deque(maxlen=self._max_history)

        self._metrics_history[device_id].append(metrics)
        logger.debug(f"Recorded metrics for {device_id}")  # f-string built on every call, as in the seed

    def get_metrics(self, device_id: str) -> Optional[GPUMetrics]:
        return self._current_metrics.get(device_id)

    def get_metrics_history(self, device_id: str) -> List[GPUMetrics]:
        history = self._metrics_history.get(device_id)
        return list(history) if history else []

    def get_aggregated_metrics(self) -> Dict[str, Any]:
        """Aggregate over the current sample of every device that has one."""
        current = list(self._current_metrics.values())
        count = len(current)
        total_memory = sum(m.memory_total_bytes for m in current)
        used_memory = sum(m.memory_used_bytes for m in current)
        return {
            "device_count": count,
            "total_memory_bytes": total_memory,
            "used_memory_bytes": used_memory,
            "available_memory_bytes": total_memory - used_memory,
            "average_utilization_percent": (
                sum(m.compute_utilization_percent for m in current) / count if count else 0.0
            ),
            "average_temperature_celsius": (
                sum(m.temperature_celsius for m in current) / count if count else 0.0
            ),
            "total_power_watts": sum(m.power_watts for m in current),
            "timestamp": time.time(),
        }


# ---------------------------------------------------------------------------
# Scoring and selection
# ---------------------------------------------------------------------------


class DeviceScorer:
    """The seed's score: (0.6 * free/total + 0.4 * (1 - util/100)) * thermal penalty, in [0, 1].

    Thermal penalty: 1 up to 80 degC, then max(0.1, 1 - (T - 80) / 40).
    """

    MEMORY_WEIGHT = 0.6
    COMPUTE_WEIGHT = 0.4
    THERMAL_THRESHOLD_C = 80.0
    THERMAL_RANGE_C = 40.0
    MIN_THERMAL_PENALTY = 0.1

    @staticmethod
    def score(metrics: GPUMetrics) -> float:
        total = metrics.memory_total_bytes
        free_ratio = (total - metrics.memory_used_bytes) / total if total > 0 else 0.0
        compute_ratio = 1.0 - metrics.compute_utilization_percent / 100.0
        score = DeviceScorer.MEMORY_WEIGHT * free_ratio + DeviceScorer.COMPUTE_WEIGHT * compute_ratio
        temp = metrics.temperature_celsius
        if temp > DeviceScorer.THERMAL_THRESHOLD_C:
            penalty = max(
                DeviceScorer.MIN_THERMAL_PENALTY,
                1.0 - (temp - DeviceScorer.THERMAL_THRESHOLD_C) / DeviceScorer.THERMAL_RANGE_C,
            )
            score *= penalty
        return max(0.0, min(1.0, score))


class DeviceSelector:
    """Ranks devices by the seed's score, from their current telemetry."""

    def __init__(self, telemetry: TelemetryCollector) -> None:
        self._telemetry = telemetry

    def rank_devices(self, device_ids: List[str]) -> List[Tuple[str, float]]:
        """(device_id, score) for every device with metrics, best first (stable for ties)."""
        ranked: List[Tuple[str, float]] = []
        for device_id in device_ids:
            metrics = self._telemetry.get_metrics(device_id)
            if metrics is None:
                continue
            ranked.append((device_id, DeviceScorer.score(metrics)))
        ranked.sort(key=lambda pair: pair[1], reverse=True)
        return ranked

    def select_best(self, device_ids: List[str], min_memory_bytes: int = 0) -> Optional[str]:
        """Best-scored device with score > 0 and at least ``min_memory_bytes`` free.

        A single linear scan (no sort), so the baseline is not handicapped by an O(n log n)
        ranking; the first device wins ties (registration order).
        """
        best_id: Optional[str] = None
        best_score = 0.0
        get = self._telemetry.get_metrics
        score = DeviceScorer.score
        for device_id in device_ids:
            metrics = get(device_id)
            if metrics is None:
                continue
            if metrics.memory_total_bytes - metrics.memory_used_bytes < min_memory_bytes:
                continue
            s = score(metrics)
            if s > best_score:
                best_id, best_score = device_id, s
        return best_id


# ---------------------------------------------------------------------------
# Workload distribution (fix #4)
# ---------------------------------------------------------------------------


class DistributionStrategy(Enum):
    UNIFORM = "uniform"
    CAPACITY = "capacity"


class WorkloadDistributor:
    """The seed's distributor, kept with its behaviour (bugs included) as the comparison baseline."""

    def distribute_uniform(
        self,
        device_ids: List[str],
        workload_items: List[Any],
        max_per_device: Optional[int] = None,
    ) -> Dict[str, List[Any]]:
        """Round-robin. Baseline bugs kept: no devices -> ``{}`` (every item vanishes);
        items that would exceed ``max_per_device`` are silently dropped."""
        if not device_ids:
            return {}
        distribution: Dict[str, List[Any]] = {d: [] for d in device_ids}
        n = len(device_ids)
        for i, item in enumerate(workload_items):
            device_id = device_ids[i % n]
            if max_per_device is not None and len(distribution[device_id]) >= max_per_device:
                continue  # dropped, not reported
            distribution[device_id].append(item)
        return distribution

    def distribute_by_capacity(
        self,
        capacities: Dict[str, float],
        workload_items: List[Any],
    ) -> Dict[str, List[Any]]:
        """Exactly the review's fix #4 code, bugs included (this is the design we compare against).

        Each device in sorted-id order gets ``max(1, int(n * capacity / total))`` items as a list
        slice, and whatever is left goes to the single largest-capacity device. Consequences the
        C++ apportionment fixes: zero-capacity devices get an item, float truncation
        (``int(100 * 0.29) == 28``), leftovers piled on one device (19 items over 10 equal devices
        -> 10, 1, 1, ...), counts that overshoot n when many devices round up to 1 (later devices
        get short or empty slices), and NaN/inf capacities crash inside ``int()``.
        """
        distribution: Dict[str, List[Any]] = {d: [] for d in capacities.keys()}

        if not capacities or not workload_items:
            return distribution

        if any(cap < 0 for cap in capacities.values()):
            raise ValueError("All capacity values must be non-negative")

        total_capacity = sum(capacities.values())

        if total_capacity <= 0:
            raise ValueError(f"Total capacity must be positive, got {total_capacity}")

        item_idx = 0
        for device_id in sorted(capacities.keys()):
            capacity = capacities[device_id]
            proportion = capacity / total_capacity
            count = max(1, int(len(workload_items) * proportion))

            distribution[device_id] = workload_items[item_idx : item_idx + count]
            item_idx += count

        if item_idx < len(workload_items):
            largest_device = max(capacities.keys(), key=lambda d: capacities[d])
            distribution[largest_device].extend(workload_items[item_idx:])

        return distribution


# ---------------------------------------------------------------------------
# Manager (fixes #2, #3, #5, #6, #7)
# ---------------------------------------------------------------------------


class GPUClusteringManager:
    """Registers devices, records validated telemetry, selects a device, distributes work."""

    def __init__(self) -> None:
        self._devices: Dict[str, GPUDevice] = {}
        self._telemetry: Optional[TelemetryCollector] = None
        self._workload_distributor: Optional[WorkloadDistributor] = None
        self._backend: Optional[Any] = None
        self._telemetry_task: Optional[asyncio.Task] = None
        self._initialized = False
        self._shutdown_event = asyncio.Event()
        self._metrics_lock = asyncio.Lock()
        self._init_components()

    # fix #2 ---------------------------------------------------------------
    def _init_components(self) -> None:
        try:
            if self._telemetry is None:
                self._telemetry = TelemetryCollector()
            if self._workload_distributor is None:
                self._workload_distributor = WorkloadDistributor()
            self._initialized = True
            logger.info("GPU clustering components initialized")
        except Exception as e:  # pragma: no cover - exercised only with a failing collector
            logger.error(f"Failed to initialize clustering components: {e}")
            self._initialized = False
            raise RuntimeError(f"Clustering component initialization failed: {e}") from e

    def _check_initialized(self) -> None:
        if not self._initialized:
            raise RuntimeError("GPUClusteringManager not properly initialized")

    # devices ----------------------------------------------------------------
    def register_device(self, device: GPUDevice) -> None:
        """Keyed by the local device id: ``cuda:0`` from two hosts overwrite each other."""
        self._devices[device.device_id] = device
        logger.info(f"Registered device {device.device_id}")

    def unregister_device(self, device_id: str) -> None:
        self._devices.pop(device_id, None)

    def get_devices(self) -> List[GPUDevice]:
        return list(self._devices.values())

    # fix #3 / #5 -------------------------------------------------------------
    async def record_metrics(self, metrics: GPUMetrics) -> None:
        """Validated record (review fix #3). NaN passes every range check, as in the seed."""
        self._check_initialized()

        if self._shutdown_event.is_set():
            raise RuntimeError("Cannot record metrics: manager shutting down")

        if metrics.device_id not in self._devices:
            raise KeyError(f"Device {metrics.device_id} not registered")

        if not 0 <= metrics.compute_utilization_percent <= 100:
            raise ValueError(
                f"Utilization out of range [0, 100]: {metrics.compute_utilization_percent}%"
            )

        if metrics.memory_used_bytes < 0:
            raise ValueError(f"Memory used cannot be negative: {metrics.memory_used_bytes}")

        if metrics.memory_total_bytes <= 0:
            raise ValueError(f"Total memory must be positive: {metrics.memory_total_bytes}")

        if metrics.memory_used_bytes > metrics.memory_total_bytes:
            raise ValueError(
                f"Used memory ({metrics.memory_used_bytes}) exceeds total "
                f"({metrics.memory_total_bytes})"
            )

        if metrics.temperature_celsius < -273.15:
            raise ValueError(
                f"Temperature below absolute zero: {metrics.temperature_celsius}°C"
            )

        async with self._metrics_lock:
            await self._telemetry.record_metrics(metrics)  # type: ignore[union-attr]

    # Not guarded by _check_initialized in the review: AttributeError after shutdown.
    def get_device_metrics(self, device_id: str) -> Optional[GPUMetrics]:
        return self._telemetry.get_metrics(device_id)  # type: ignore[union-attr]

    def get_metrics_history(self, device_id: str) -> List[GPUMetrics]:
        return self._telemetry.get_metrics_history(device_id)  # type: ignore[union-attr]

    def get_aggregated_metrics(self) -> Dict[str, Any]:
        return self._telemetry.get_aggregated_metrics()  # type: ignore[union-attr]

    # selection ---------------------------------------------------------------
    def select_best_device(self, min_memory_bytes: int = 0) -> Optional[str]:
        self._check_initialized()
        selector = DeviceSelector(self._telemetry)  # type: ignore[arg-type]
        return selector.select_best(list(self._devices.keys()), min_memory_bytes)

    def rank_devices(self) -> List[Tuple[str, float]]:
        self._check_initialized()
        return DeviceSelector(self._telemetry).rank_devices(list(self._devices.keys()))  # type: ignore[arg-type]

    # distribution (fix #7 types) ---------------------------------------------
    def distribute_workload(
        self,
        tasks: List[Any],
        strategy: Union[DistributionStrategy, str] = DistributionStrategy.UNIFORM,
        capacities: Optional[Dict[str, float]] = None,
        max_per_device: Optional[int] = None,
    ) -> Dict[str, List[Any]]:
        self._check_initialized()
        strategy = DistributionStrategy(strategy) if isinstance(strategy, str) else strategy
        distributor = self._workload_distributor
        assert distributor is not None
        if strategy is DistributionStrategy.CAPACITY:
            if capacities is None:
                capacities = {d.device_id: float(d.max_memory_bytes) for d in self._devices.values()}
            return distributor.distribute_by_capacity(capacities, tasks)
        return distributor.distribute_uniform(list(self._devices.keys()), tasks, max_per_device)

    # fix #5 / #6 ---------------------------------------------------------------
    async def shutdown(self) -> None:
        """Sets the event, sleeps 100 ms hoping in-flight calls finished, then clears everything."""
        try:
            self._shutdown_event.set()
            logger.info("GPU clustering manager shutting down...")
            await asyncio.sleep(0.1)

            if self._telemetry_task and not self._telemetry_task.done():
                self._telemetry_task.cancel()
                try:
                    await self._telemetry_task
                except asyncio.CancelledError:
                    logger.debug("Telemetry task cancelled")

            if self._backend:
                try:
                    await self._backend.shutdown()
                except Exception as e:
                    logger.error(f"Error shutting down backend: {e}")
                finally:
                    self._backend = None

            if self._telemetry:
                try:
                    self._telemetry._current_metrics.clear()
                    self._telemetry._metrics_history.clear()
                except Exception as e:  # pragma: no cover
                    logger.error(f"Error clearing telemetry: {e}")
                finally:
                    self._telemetry = None

            self._workload_distributor = None
            self._devices.clear()
            self._initialized = False
            logger.info("GPU clustering manager shutdown complete")
        except Exception as e:  # pragma: no cover
            logger.error(f"Error during clustering manager shutdown: {e}")
            raise

