"""Type stubs of gpucluster._native (the C++ extension). Use the gpucluster package."""

from enum import Enum
from typing import Any, Callable, Coroutine, Dict, Generator, Iterable, List, Optional, Sequence, Tuple, Union

HAVE_PROTOCOL: bool
PROTOCOL_VERSION: str

KeyLike = Union[str, "DeviceKey"]
ColumnLike = Any  # a buffer (array.array, numpy array, memoryview) or a sequence of numbers / None

class DeviceKind(Enum):
    cuda: int
    rocm: int
    metal: int
    vulkan: int
    intel_xe: int
    directml: int
    cpu: int
    unknown: int

class Strategy(Enum):
    uniform: int
    capacity: int
    memory: int

class Eligibility(Enum):
    eligible: int
    unavailable: int
    no_sample: int
    stale: int
    insufficient_memory: int
    zero_score: int

class RejectReason(Enum):
    not_finite: int
    out_of_range: int
    used_exceeds_total: int
    out_of_order: int
    unknown_device: int
    future_timestamp: int
    conflict: int

class ManagerState(Enum):
    created: int
    running: int
    draining: int
    stopped: int

def parse_device_kind(text: str) -> DeviceKind: ...

class DeviceKey:
    host: str
    local_id: str
    def __init__(self, host_or_text: str, local_id: str = ...) -> None: ...
    def __hash__(self) -> int: ...
    def __eq__(self, other: object) -> bool: ...
    def __lt__(self, other: "DeviceKey") -> bool: ...

class DeviceInfo:
    key: DeviceKey
    name: str
    vendor: str
    kind: DeviceKind
    backend: str
    uuid: Optional[str]
    pci_bus_id: Optional[str]
    memory_total_bytes: int
    compute_units: Optional[int]
    compute_capability: Optional[str]
    max_clock_mhz: Optional[float]
    memory_bandwidth_gbps: Optional[float]
    driver_version: Optional[str]
    power_limit_watts: Optional[float]
    temperature_slowdown_celsius: Optional[float]
    temperature_shutdown_celsius: Optional[float]
    supports_fp64: Optional[bool]
    supports_tensor_cores: Optional[bool]
    def __init__(self, key: KeyLike, *, name: str = "", vendor: str = "", kind: DeviceKind = ...,
                 backend: str = "python", memory_total_bytes: int = 0, compute_units: Optional[int] = None,
                 compute_capability: Optional[str] = None, max_clock_mhz: Optional[float] = None,
                 memory_bandwidth_gbps: Optional[float] = None, driver_version: Optional[str] = None,
                 uuid: Optional[str] = None, pci_bus_id: Optional[str] = None,
                 power_limit_watts: Optional[float] = None, temperature_slowdown_celsius: Optional[float] = None,
                 temperature_shutdown_celsius: Optional[float] = None, supports_fp64: Optional[bool] = None,
                 supports_tensor_cores: Optional[bool] = None) -> None: ...
    @property
    def id(self) -> str: ...
    def to_dict(self) -> Dict[str, Any]: ...

class Sample:
    timestamp: float
    timestamp_ns: int
    memory_used_bytes: int
    memory_total_bytes: int
    utilization_percent: Optional[float]
    power_watts: Optional[float]
    temperature_celsius: Optional[float]
    clock_mhz: Optional[float]
    fan_speed_percent: Optional[float]
    energy_joules: Optional[float]  # a counter
    def __init__(self, *, timestamp: Optional[float] = None, memory_used_bytes: int = 0,
                 memory_total_bytes: int = 0, utilization_percent: Optional[float] = None,
                 power_watts: Optional[float] = None, temperature_celsius: Optional[float] = None,
                 clock_mhz: Optional[float] = None, fan_speed_percent: Optional[float] = None,
                 energy_joules: Optional[float] = None) -> None: ...
    @property
    def memory_free_bytes(self) -> int: ...
    def to_dict(self) -> Dict[str, Any]: ...

class ScoreBreakdown:
    score: float
    memory_free_ratio: float
    compute_idle_ratio: Optional[float]
    thermal_penalty: float
    temperature_known: bool
    thermal_threshold_celsius: float

class Device:
    info: DeviceInfo
    key: DeviceKey
    id: str
    available: bool
    unavailable_reason: str
    latest: Optional[Sample]
    def to_dict(self) -> Dict[str, Any]: ...

class RankedDevice:
    key: DeviceKey
    id: str
    eligibility: Eligibility
    reason: str
    breakdown: Optional[ScoreBreakdown]
    score: Optional[float]
    memory_free_bytes: int
    def to_dict(self) -> Dict[str, Any]: ...

class Selection:
    device: Optional[DeviceKey]
    id: Optional[str]
    score: float
    reason: str
    def __bool__(self) -> bool: ...
    def to_dict(self) -> Dict[str, Any]: ...

class ClusterAggregate:
    device_count: int
    devices_with_samples: int
    total_memory_bytes: int
    used_memory_bytes: int
    available_memory_bytes: int
    average_utilization_percent: Optional[float]
    average_temperature_celsius: Optional[float]
    total_power_watts: Optional[float]
    timestamp: Optional[float]
    def to_dict(self) -> Dict[str, Any]: ...

class WindowStats:
    samples: int
    first: Optional[float]
    last: Optional[float]
    memory_used_bytes: Dict[str, float]
    utilization_percent: Dict[str, float]
    power_watts: Dict[str, float]
    temperature_celsius: Dict[str, float]
    clock_mhz: Dict[str, float]
    def to_dict(self) -> Dict[str, Any]: ...

class Assignment:
    device: DeviceKey
    id: str
    start: int
    count: int
    stop: int

class Plan:
    strategy: Strategy
    total_items: int
    assignments: List[Assignment]
    unassigned: int
    assigned: int
    left_out: List[Tuple[str, str]]
    def ranges(self) -> Dict[str, Tuple[int, int]]: ...
    def counts(self) -> Dict[str, int]: ...
    def apply(self, items: Iterable[Any]) -> Dict[str, List[Any]]: ...
    def unassigned_items(self, items: Sequence[Any]) -> List[Any]: ...
    def to_dict(self) -> Dict[str, Any]: ...

class FleetDevice:
    info: DeviceInfo
    metrics: Optional[Sample]
    available: bool
    error_message: str

class Fleet:
    host: str
    devices: List[FleetDevice]

def load_fleet(path: str) -> Fleet: ...
def parse_fleet(json_text: str) -> Fleet: ...
def validate_sample(sample: Sample, device: str = "") -> None: ...
def score_sample(info: DeviceInfo, sample: Sample) -> ScoreBreakdown: ...
def apportion(weights: Sequence[float], n: int, caps: Optional[Sequence[int]] = None) -> List[int]: ...
def plan_uniform(devices: Sequence[KeyLike], items: int, max_per_device: Optional[int] = None) -> Plan: ...
def plan_capacity(weights: Sequence[Tuple[KeyLike, float]], items: int,
                  max_per_device: Optional[int] = None) -> Plan: ...
def plan_memory(free_memory: Sequence[Tuple[KeyLike, int]], layers: int,
                layer_bytes: Optional[int] = None) -> Plan: ...

class Backend:
    name: str
    consumed: bool

def host_backend() -> Backend: ...
def simulated_backend(fleet: Union[str, Fleet]) -> Backend: ...
def nvml_backend(library_path: str = "") -> Backend: ...
def rocm_backend(library_path: str = "") -> Backend: ...
def sysfs_backend(root: Optional[str] = None) -> Backend: ...

class BackendReport:
    backend: str
    devices: int
    note: str
    error: str
    unavailable: bool
    @property
    def status(self) -> str: ...  # "ok", "none", "unavailable" or "failed"
    @property
    def implausible_readings(self) -> Dict[str, int]: ...  # per quantity name, dropped as out of range

class Manager:
    def __init__(self, *, backends: Union[str, Sequence[Backend]] = ..., fleet: Optional[str] = None, host: Optional[str] = None,
                 max_history: int = 100, max_age_seconds: Optional[float] = None,
                 sample_interval_seconds: float = 1.0, backend_timeout_seconds: float = 5.0,
                 discovery_timeout_seconds: float = 30.0, require_backends: bool = True,
                 staleness_seconds: float = 10.0, memory_weight: float = 0.6, compute_weight: float = 0.4,
                 thermal_threshold_celsius: float = 80.0, thermal_span_celsius: float = 40.0,
                 min_thermal_penalty: float = 0.1, clock: Optional[Callable[[], float]] = None) -> None: ...
    def start(self, background_sampling: bool = True) -> None: ...
    def sample_now(self) -> None: ...
    def shutdown(self) -> None: ...
    def __enter__(self) -> "Manager": ...
    def __exit__(self, *args: Any) -> bool: ...
    @property
    def state(self) -> ManagerState: ...
    @property
    def host(self) -> str: ...
    @property
    def backend_errors(self) -> int: ...
    def now(self) -> float: ...
    def register_device(self, info: DeviceInfo) -> None: ...
    def unregister_device(self, device: KeyLike) -> bool: ...
    def record(self, device: KeyLike, sample: Sample) -> None: ...
    def record_batch(self, device: KeyLike, timestamps: ColumnLike, memory_used_bytes: ColumnLike,
                     memory_total_bytes: ColumnLike, utilization_percent: Optional[ColumnLike] = None,
                     power_watts: Optional[ColumnLike] = None, temperature_celsius: Optional[ColumnLike] = None,
                     clock_mhz: Optional[ColumnLike] = None, fan_speed_percent: Optional[ColumnLike] = None,
                     energy_joules: Optional[ColumnLike] = None) -> int: ...
    def set_availability(self, device: KeyLike, available: bool, reason: str = "") -> None: ...
    def devices(self) -> List[Device]: ...
    def device(self, device: KeyLike) -> Device: ...
    def history(self, device: KeyLike, limit: Optional[int] = None) -> List[Sample]: ...
    def window_stats(self, device: KeyLike) -> WindowStats: ...
    def aggregate(self) -> ClusterAggregate: ...
    def rank(self, min_free_memory_bytes: int = 0) -> List[RankedDevice]: ...
    def select(self, min_free_memory_bytes: int = 0) -> Selection: ...
    def plan(self, strategy: Union[str, Strategy] = "uniform", *, items: Optional[int] = None,
             weights: Optional[Union[Dict[str, float], Sequence[Tuple[str, float]]]] = None,
             max_per_device: Optional[int] = None, layers: Optional[int] = None,
             layer_bytes: Optional[int] = None) -> Plan: ...
    def resolve_key(self, text: str) -> DeviceKey: ...
    def backend_reports(self) -> List[BackendReport]: ...
    def rejected_samples(self) -> Dict[str, int]: ...

# Protocol (present when HAVE_PROTOCOL)
class DeviceRegistration:
    info: DeviceInfo
    port: Optional[int]
    timestamp: float

class Heartbeat:
    device_id: str
    hostname: Optional[str]
    sample: Optional[Sample]
    is_available: bool
    error_message: str
    timestamp: float

class MetricsReport:
    device_id: str
    hostname: Optional[str]
    sample: Sample

def parse_telemetry_message(body: Union[str, bytes]) -> Union[DeviceRegistration, Heartbeat, MetricsReport]: ...
def to_protocol_json(message: Union[DeviceRegistration, Heartbeat, MetricsReport],
                     envelope_timestamp: Optional[float] = None) -> str: ...

# Internal: the native half of gpucluster.exo_compat
class _PendingRecord(Coroutine[Any, Any, None]):
    """What _CompatCore.record_later returns: records its sample when first awaited."""
    def __await__(self) -> Generator[Any, None, None]: ...
    def send(self, value: None) -> Any: ...
    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any: ...
    def close(self) -> None: ...

class _CompatCore:
    def __init__(self, max_history: int = 100, auto_register: bool = False,
                 staleness_seconds: Optional[float] = None) -> None: ...
    fast_record: Callable[[Any], None]
    record_later: Callable[[Any], _PendingRecord]
    is_shut_down: bool
    def record(self, metrics: Any) -> None: ...
    def record_many(self, metrics: Iterable[Any]) -> int: ...
    def record_columns(self, device_id: str, timestamps: ColumnLike, memory_used_bytes: ColumnLike,
                       memory_total_bytes: ColumnLike, compute_utilization_percent: Optional[ColumnLike] = None,
                       power_watts: Optional[ColumnLike] = None, temperature_celsius: Optional[ColumnLike] = None,
                       clock_rate_mhz: Optional[ColumnLike] = None) -> int: ...
    def register_device(self, device_id: str, name: str = "", vendor: str = "", device_type: str = "",
                        memory_bytes: int = 0, compute_units: Optional[int] = None,
                        driver_version: Optional[str] = None, bandwidth_gbps: Optional[float] = None,
                        compute_capability: Optional[str] = None) -> None: ...
    def unregister_device(self, device_id: str) -> bool: ...
    def latest(self, device_id: str) -> Optional[Tuple[Any, ...]]: ...
    def history(self, device_id: str) -> List[Tuple[Any, ...]]: ...
    def aggregate(self) -> Dict[str, Any]: ...
    def select(self, min_memory_bytes: int = 0) -> Optional[str]: ...
    def rank(self) -> List[Tuple[str, float]]: ...
    def shutdown(self) -> bool: ...

def _distribute_by_capacity(capacities: Dict[Any, float], workload_items: Iterable[Any]) -> Tuple[Dict[Any, List[Any]], List[Any]]: ...
def _distribute_uniform(devices: Iterable[Any], workload_items: Iterable[Any],
                        max_per_device: Optional[int] = None) -> Tuple[Dict[Any, List[Any]], List[Any]]: ...
def _score_metrics(metrics: Any) -> float: ...
def _select_metrics(metrics: List[Any], min_memory_bytes: int = 0) -> Optional[int]: ...
