"""Exceptions raised by gpucluster.

Every error that comes from bad input names what was wrong, as attributes, so a
caller can report it without parsing the message:

* ``InputError(ValueError)``: ``field``, ``value``, ``rule``.
* ``ValidationError(InputError)``: a rejected telemetry sample; adds ``device`` and
  ``reason`` (``"not_finite"``, ``"out_of_range"``, ``"used_exceeds_total"``,
  ``"out_of_order"``, ``"unknown_device"``, ``"future_timestamp"``, ``"conflict"``).
  Nothing was stored.
* ``UnregisteredDeviceError(ValidationError, UnknownDeviceError)``: a sample for a
  device nobody registered; both a ``ValueError`` and a ``KeyError``.
* ``PlanError(InputError)``: an invalid work plan request (weights, caps, no devices).
* ``InsufficientMemoryError(PlanError)``: a model that does not fit; ``shortfalls``.
* ``UnplacedItemsError(PlanError)``: items that no device could take (the
  ``exo_compat`` distributors); carries ``distribution`` (what was placed) and
  ``unplaced`` (the caller's items that were not).
* ``BackendUnavailableError(InputError)``: a backend given to ``Manager(backends=...)``
  cannot be used (library missing, driver not initialised, discovery failed or
  missed ``discovery_timeout_seconds``); ``backends`` names them. The message says
  which library was tried and how to point at another.
* ``UnknownDeviceError(KeyError)``: an operation named a device that is not registered.
* ``ShutDownError(RuntimeError)``: the manager is shut down.
* ``ProtocolError(InputError)``: a telemetry protocol message was refused; ``kind``
  is ``"malformed"`` or ``"invalid"``.

From ``gpucluster.Client`` / ``AsyncClient`` (a running agent or coordinator over HTTP):

* ``AgentUnreachableError(Error, ConnectionError)``: no answer: the connection was
  refused, timed out, or was lost mid-answer; ``url`` and ``reason``.
* ``AgentError(Error)``: the agent answered with an error status; ``status`` (HTTP),
  ``code``, ``message``, ``field``, ``value``, ``rule`` (its ``{"error": {...}}`` body),
  ``method``, ``path``. By status: ``UnauthorizedError`` (401), ``NotFoundError``
  (404, also a ``LookupError``), ``ConflictError`` (409), ``InvalidRequestError``
  (400, 413, 422; also a ``ValueError``), ``UnavailableError`` (503; ``retry_after``
  seconds from the ``Retry-After`` header, or ``None``). Other statuses are ``AgentError``.
* ``BadResponseError(Error)``: what came back is not an answer a gpucluster agent gives
  (not HTTP/1.x, no ``Content-Length``, not JSON): the URL points at something else.
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional

__all__ = [
    "Error",
    "InputError",
    "ValidationError",
    "UnknownDeviceError",
    "UnregisteredDeviceError",
    "PlanError",
    "InsufficientMemoryError",
    "MemoryShortfall",
    "UnplacedItemsError",
    "BackendUnavailableError",
    "ShutDownError",
    "ProtocolError",
    "AgentUnreachableError",
    "AgentError",
    "UnauthorizedError",
    "NotFoundError",
    "ConflictError",
    "InvalidRequestError",
    "UnavailableError",
    "BadResponseError",
]


class Error(Exception):
    """Base of every error gpucluster raises on purpose."""

    def __str__(self) -> str:  # KeyError would otherwise print repr(message)
        return str(self.args[0]) if self.args else ""


class InputError(Error, ValueError):
    """Bad input: ``field`` broke ``rule`` with ``value``."""

    def __init__(self, message: str, field: str = "", value: str = "", rule: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.value = value
        self.rule = rule


class ValidationError(InputError):
    """A telemetry sample failed validation; nothing was stored."""

    def __init__(self, message: str, device: str = "", field: str = "", value: str = "", rule: str = "",
                 reason: str = "") -> None:
        super().__init__(message, field, value, rule)
        self.device = device
        self.reason = reason


class UnknownDeviceError(Error, KeyError):
    """An operation named a device that is not registered."""

    def __init__(self, message: str, device: str = "") -> None:
        super().__init__(message)
        self.device = device


class UnregisteredDeviceError(ValidationError, UnknownDeviceError):
    """A sample for a device that is not registered (a ValueError and a KeyError)."""

    def __init__(self, message: str, device: str = "", field: str = "device_id", value: str = "", rule: str = "",
                 reason: str = "unknown_device") -> None:
        ValidationError.__init__(self, message, device, field, value, rule, reason)


class PlanError(InputError):
    """An invalid request for a work plan."""


class MemoryShortfall(NamedTuple):
    device: str
    layers: int
    needed_bytes: int
    free_bytes: int

    @property
    def short_bytes(self) -> int:
        return self.needed_bytes - self.free_bytes


class InsufficientMemoryError(PlanError):
    """A model split that cannot fit; ``shortfalls`` names each device and by how much."""

    def __init__(self, message: str, field: str = "", value: str = "", rule: str = "",
                 shortfalls: Optional[List[MemoryShortfall]] = None) -> None:
        super().__init__(message, field, value, rule)
        self.shortfalls: List[MemoryShortfall] = list(shortfalls or [])


class UnplacedItemsError(PlanError):
    """Items that no device could take. Nothing is dropped silently: ``distribution`` is
    the partial result (device id -> items placed) and ``unplaced`` the items left over,
    in their original order."""

    def __init__(self, message: str, distribution: Dict[Any, List[Any]], unplaced: List[Any],
                 field: str = "workload_items", value: str = "", rule: str = "") -> None:
        super().__init__(message, field, value or str(len(unplaced)), rule)
        self.distribution = distribution
        self.unplaced = unplaced


class BackendUnavailableError(InputError):
    """Backends the caller named cannot be used; ``backends`` lists them. The manager is stopped."""

    def __init__(self, message: str, field: str = "backends", value: str = "", rule: str = "",
                 backends: Optional[List[str]] = None) -> None:
        super().__init__(message, field, value, rule)
        self.backends: List[str] = list(backends or [])


class ShutDownError(Error, RuntimeError):
    """The manager is shut down (or shutting down) and refuses new work."""


class ProtocolError(InputError):
    """A telemetry protocol message was refused (``kind``: ``"malformed"`` or ``"invalid"``)."""

    def __init__(self, message: str, field: str = "", value: str = "", rule: str = "", kind: str = "malformed") -> None:
        super().__init__(message, field, value, rule)
        self.kind = kind


class AgentUnreachableError(Error, ConnectionError):
    """No answer from the agent at ``url``: ``reason`` says why (refused, timed out, closed)."""

    def __init__(self, message: str, url: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.url = url
        self.reason = reason


class AgentError(Error):
    """The agent answered ``method path`` with the error ``status``; its body's fields as attributes."""

    def __init__(self, message: str, status: int = 0, code: str = "", field: Optional[str] = None,
                 value: Optional[str] = None, rule: Optional[str] = None, method: str = "", path: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.value = value
        self.rule = rule
        self.method = method
        self.path = path


class UnauthorizedError(AgentError):
    """401: the route needs ``Authorization: Bearer <token>`` (``Client(token=...)``) and got none or another."""


class NotFoundError(AgentError, LookupError):
    """404: no such device, node or route (``code`` says which: ``unknown_device``, ``unknown_node``, ...)."""


class ConflictError(AgentError):
    """409: the request clashes with what the agent holds, or the agent is shutting down."""


class InvalidRequestError(AgentError, ValueError):
    """400, 413 or 422: the request broke a rule; ``field``, ``value`` and ``rule`` say which."""


class UnavailableError(AgentError):
    """503: the agent cannot answer now; ``retry_after`` is the seconds it asked to wait, or None."""

    def __init__(self, message: str, status: int = 503, code: str = "", field: Optional[str] = None,
                 value: Optional[str] = None, rule: Optional[str] = None, method: str = "", path: str = "",
                 retry_after: Optional[float] = None) -> None:
        super().__init__(message, status, code, field, value, rule, method, path)
        self.retry_after = retry_after


class BadResponseError(Error):
    """The answer is not one a gpucluster agent gives (not HTTP/1.x, no Content-Length, not JSON)."""

    def __init__(self, message: str, url: str = "", status: Optional[int] = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
