"""gpucluster: every GPU of a machine or a cluster, from Python.

The C++ core (``gpucluster._native``, built with pybind11) behind a Pythonic API:

    import gpucluster
    with gpucluster.Manager(fleet="examples/fleet-8x-h100.json") as manager:
        manager.start()
        best = manager.select(min_free_memory_bytes=40 << 30)    # Selection (falsy if none)
        plan = manager.plan("capacity", items=len(jobs))          # Plan: ranges per device
        parts = plan.apply(jobs)                                  # {device id: [jobs...]}

``gpucluster.Client`` (and ``AsyncClient``) talks to a running agent or coordinator over
HTTP: ``gpucluster.Client("http://127.0.0.1:9420").devices()``.

``gpucluster.exo_compat`` is a drop-in replacement for the seed project's clustering
API. Errors are the classes of ``gpucluster.errors`` (``ValidationError`` is a
``ValueError`` carrying device, field, value and rule). Every object is safe to use
from several threads; calls that scan, wait or ingest in bulk release the GIL.
"""

from . import errors
from .errors import (
    AgentError,
    AgentUnreachableError,
    BackendUnavailableError,
    BadResponseError,
    ConflictError,
    Error,
    InputError,
    InsufficientMemoryError,
    InvalidRequestError,
    MemoryShortfall,
    NotFoundError,
    PlanError,
    ProtocolError,
    ShutDownError,
    UnauthorizedError,
    UnavailableError,
    UnknownDeviceError,
    UnplacedItemsError,
    UnregisteredDeviceError,
    ValidationError,
)
from ._native import (
    HAVE_PROTOCOL,
    Assignment,
    Backend,
    BackendReport,
    ClusterAggregate,
    Device,
    DeviceInfo,
    DeviceKey,
    DeviceKind,
    Eligibility,
    Fleet,
    FleetDevice,
    Manager,
    ManagerState,
    Plan,
    RankedDevice,
    RejectReason,
    Sample,
    ScoreBreakdown,
    Selection,
    Strategy,
    WindowStats,
    apportion,
    load_fleet,
    parse_device_kind,
    parse_fleet,
    plan_capacity,
    plan_memory,
    plan_uniform,
    score_sample,
    validate_sample,
)
from . import backends
from .client import AsyncClient, Client

if HAVE_PROTOCOL:
    from ._native import (  # noqa: F401
        PROTOCOL_VERSION,
        DeviceRegistration,
        Heartbeat,
        MetricsReport,
        parse_telemetry_message,
        to_protocol_json,
    )

__version__ = "0.1.0"

__all__ = [
    "errors", "backends",
    "Error", "InputError", "ValidationError", "UnknownDeviceError", "UnregisteredDeviceError", "PlanError",
    "InsufficientMemoryError", "MemoryShortfall", "UnplacedItemsError", "ShutDownError", "ProtocolError",
    "BackendUnavailableError",
    "AgentUnreachableError", "AgentError", "UnauthorizedError", "NotFoundError", "ConflictError",
    "InvalidRequestError", "UnavailableError", "BadResponseError", "Client", "AsyncClient",
    "Assignment", "Backend", "BackendReport", "ClusterAggregate", "Device", "DeviceInfo", "DeviceKey",
    "DeviceKind", "Eligibility", "Fleet", "FleetDevice", "Manager", "ManagerState", "Plan", "RankedDevice",
    "RejectReason", "Sample", "ScoreBreakdown", "Selection", "Strategy", "WindowStats", "apportion",
    "load_fleet", "parse_device_kind", "parse_fleet", "plan_capacity", "plan_memory", "plan_uniform",
    "score_sample", "validate_sample", "HAVE_PROTOCOL", "__version__",
]
if HAVE_PROTOCOL:
    __all__ += ["PROTOCOL_VERSION", "DeviceRegistration", "Heartbeat", "MetricsReport",
                "parse_telemetry_message", "to_protocol_json"]
