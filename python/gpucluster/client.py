"""Clients of a running gpucluster agent or coordinator over its HTTP API (docs/agent.md).

    client = gpucluster.Client("http://127.0.0.1:9420", token=None)
    client.devices()          # GET /v1/devices: a list of dicts
    client.select(min_memory_bytes=40 << 30)

``Client`` is blocking, ``AsyncClient`` has the same methods as coroutines. Both return
the agent's JSON as plain ``dict``/``list`` objects, exactly as the API gives them (no
wrapper types: a field the agent adds shows up without a new release of this module).
Errors are the classes of ``gpucluster.errors``: ``AgentUnreachableError`` when there is
no answer, an ``AgentError`` subclass chosen by the HTTP status otherwise.

Pure Python, standard library only: plain HTTP/1.1 on one kept-alive connection per
client. A request is retried once, on a new connection, only when a connection that had
already served requests turned out closed before any byte of the answer came back (the
agent closes idle connections, see its ``--idle-timeout``); that request never reached a
handler. The agent speaks plain HTTP only: put TLS in front of it (a proxy) if needed.

This module is the one place that builds requests and maps answers to results and errors
(``_Call``, ``_encode_request``, ``_parse_head``, ``_result``); the two clients only move
the bytes, over a blocking socket or asyncio streams.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import threading
import urllib.parse
from typing import Any, Dict, List, NamedTuple, Optional

from .errors import (
    AgentError,
    AgentUnreachableError,
    BadResponseError,
    ConflictError,
    InputError,
    InvalidRequestError,
    NotFoundError,
    UnauthorizedError,
    UnavailableError,
)

__all__ = ["Client", "AsyncClient"]


_MAX_HEAD_LINE_BYTES = 65536  # a status line or header longer than this is not an agent's
_MAX_HEAD_LINES = 100
_USER_AGENT = "gpucluster-python"


# -- what every client shares: URL, requests, answers -------------------------------------


class _Endpoint(NamedTuple):
    url: str  # normalized: http://HOST:PORT
    host: str  # for connect(): no brackets around an IPv6 address
    port: int
    host_header: str  # HOST:PORT, brackets kept


def _parse_url(url: Any) -> _Endpoint:
    rule = "http://HOST:PORT (e.g. http://127.0.0.1:9420)"
    if not isinstance(url, str):
        raise InputError(f"url: must be a string {rule}, not {type(url).__name__}", "url", repr(url), rule)
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme.lower() == "https":
        raise InputError(f"url {url!r}: gpucluster agents speak plain HTTP, not HTTPS; use http://HOST:PORT "
                         "(put a TLS proxy in front of the agent when the network needs encryption)",
                         "url", url, rule)
    if parts.scheme.lower() != "http":
        raise InputError(f"url {url!r}: must be {rule}", "url", url, rule)
    if parts.username is not None or parts.password is not None:
        raise InputError(f"url {url!r}: no user or password in the URL (the token is Client(token=...)); "
                         f"must be {rule}", "url", url, rule)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InputError(f"url {url!r}: no path, query or fragment; must be {rule}", "url", url, rule)
    try:
        port = parts.port
    except ValueError:  # not a number, or out of range
        raise InputError(f"url {url!r}: the port must be 1 to 65535; must be {rule}", "url", url, rule) from None
    host = parts.hostname
    if not host or port is None or port == 0:
        raise InputError(f"url {url!r}: needs a host and a port (the agent's default is 9420); must be {rule}",
                         "url", url, rule)
    try:
        bracketed = ipaddress.ip_address(host).version == 6
    except ValueError:
        bracketed = False
    host_header = f"[{host}]:{port}" if bracketed else f"{host}:{port}"
    return _Endpoint(f"http://{host_header}", host, port, host_header)


def _check_token(token: Any) -> Optional[str]:
    if token is None:
        return None
    rule = "a non-empty string without control characters (the agent's --token-file contents)"
    if not isinstance(token, str) or not token or any(ord(c) < 0x20 or ord(c) == 0x7F for c in token):
        shown = "(empty)" if token == "" else ("(has control characters)" if isinstance(token, str)
                                               else type(token).__name__)
        raise InputError(f"token: must be {rule}", "token", shown, rule)
    return token


def _check_timeout(timeout: Any) -> float:
    rule = "a number of seconds > 0"
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0 \
            or timeout == float("inf"):
        raise InputError(f"timeout: must be {rule}, not {timeout!r}", "timeout", repr(timeout), rule)
    return float(timeout)


def _id_segment(name: str, value: Any) -> str:
    """A device or node id as a path segment; '/' stays (the agent takes it as is or as %2F)."""
    rule = "a non-empty string"
    if not isinstance(value, str) or not value:
        raise InputError(f"{name}: must be {rule}, not {value!r}", name, repr(value), rule)
    return urllib.parse.quote(value, safe="/:")


class _Call(NamedTuple):
    """One API request, before it is encoded."""

    method: str
    path: str  # with the query, percent-encoded
    body: Optional[bytes] = None  # JSON
    answer_on_503: bool = False  # /healthz: a 503 carries the health object, not an error


def _json_body(name: str, value: Any) -> bytes:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as error:
        raise InputError(f"{name}: cannot be sent as JSON: {error}", name, repr(value)[:200],
                         "JSON values: dict, list, str, int, finite float, bool, None") from None


def _calls_health() -> _Call:
    return _Call("GET", "/healthz", answer_on_503=True)


def _calls_devices() -> _Call:
    return _Call("GET", "/v1/devices")


def _calls_device(device_id: Any) -> _Call:
    return _Call("GET", "/v1/devices/" + _id_segment("id", device_id))


def _calls_history(device_id: Any, limit: Any) -> _Call:
    path = "/v1/devices/" + _id_segment("id", device_id) + "/history"
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise InputError(f"limit: must be a whole number or None, not {limit!r}", "limit", repr(limit),
                             "a whole number (the agent takes 1 to 10,000)")
        path += f"?limit={limit}"  # the range is the agent's rule: it answers 422 outside it
    return _Call("GET", path)


def _calls_cluster() -> _Call:
    return _Call("GET", "/v1/cluster")


def _calls_nodes() -> _Call:
    return _Call("GET", "/v1/nodes")


def _calls_node(node_id: Any) -> _Call:
    return _Call("GET", "/v1/nodes/" + _id_segment("id", node_id))


def _calls_forget_node(node_id: Any) -> _Call:
    return _Call("DELETE", "/v1/nodes/" + _id_segment("id", node_id))


def _calls_select(min_memory_bytes: Any) -> _Call:
    return _Call("POST", "/v1/select", _json_body("min_memory_bytes", {"min_memory_bytes": min_memory_bytes}))


def _calls_plan(request: Dict[str, Any]) -> _Call:
    return _Call("POST", "/v1/plan", _json_body("request", request))


def _encode_request(call: _Call, endpoint: _Endpoint, token: Optional[str]) -> bytes:
    lines = [f"{call.method} {call.path} HTTP/1.1", f"Host: {endpoint.host_header}", f"User-Agent: {_USER_AGENT}",
             "Accept: application/json"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if call.body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(call.body)}"]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    # Head and body in one write: the agent then has the body as soon as the head
    # (it refuses a POST without the token on its head, and a body left unread on a
    # closed socket would turn its answer into a reset).
    return head + (call.body or b"")


class _Answer(NamedTuple):
    status: int
    headers: Dict[str, str]  # lower-case names
    body: bytes


def _parse_status_line(line: bytes, url: str) -> int:
    parts = line.rstrip(b"\r\n").split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise BadResponseError(f"{url} did not answer HTTP/1.x (first line {line[:80]!r}): is it a gpucluster "
                               "agent? (gpucluster speaks plain HTTP)", url)
    return int(parts[1])


def _parse_header_line(line: bytes, headers: Dict[str, str], url: str) -> None:
    name, colon, value = line.rstrip(b"\r\n").partition(b":")
    if not colon or not name.strip():
        raise BadResponseError(f"{url}: malformed header line {line[:80]!r}", url)
    headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")


def _body_length(status: int, headers: Dict[str, str], url: str) -> int:
    if "transfer-encoding" in headers:
        raise BadResponseError(f"{url}: answered with Transfer-Encoding {headers['transfer-encoding']!r}; "
                               "gpucluster agents send Content-Length bodies only", url, status)
    length = headers.get("content-length")
    if length is None or not length.isdigit():
        raise BadResponseError(f"{url}: the answer has no valid Content-Length ({length!r}); gpucluster agents "
                               "always send one", url, status)
    return int(length)


def _closes(headers: Dict[str, str]) -> bool:
    return "close" in [token.strip().lower() for token in headers.get("connection", "").split(",")]


def _retry_after_seconds(headers: Dict[str, str]) -> Optional[float]:
    value = headers.get("retry-after", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date; the agent sends seconds
    return seconds if seconds >= 0 else None


_ERROR_CLASSES = {401: UnauthorizedError, 404: NotFoundError, 409: ConflictError, 400: InvalidRequestError,
                  413: InvalidRequestError, 422: InvalidRequestError, 503: UnavailableError}


def _result(call: _Call, answer: _Answer, url: str) -> Any:
    """The decoded JSON of a success, or the typed error of an error answer."""
    try:
        decoded = json.loads(answer.body.decode("utf-8")) if answer.body else None
    except (UnicodeDecodeError, ValueError):
        decoded = None
        if 200 <= answer.status < 300:
            raise BadResponseError(f"{call.method} {url}{call.path}: {answer.status} with a body that is not JSON "
                                   f"({answer.body[:80]!r})", url, answer.status) from None
    if 200 <= answer.status < 300 or (answer.status == 503 and call.answer_on_503 and isinstance(decoded, dict)
                                      and "error" not in decoded):
        return decoded
    error = decoded.get("error") if isinstance(decoded, dict) else None
    if not isinstance(error, dict):
        error = {"code": "", "message": answer.body[:200].decode("utf-8", errors="replace").strip()
                 or f"HTTP {answer.status}"}

    def text(key: str) -> Optional[str]:
        value = error.get(key)
        return None if value is None else str(value)

    message = text("message") or f"HTTP {answer.status}"
    cls = _ERROR_CLASSES.get(answer.status, AgentError)
    args = dict(status=answer.status, code=text("code") or "", field=text("field"), value=text("value"),
                rule=text("rule"), method=call.method, path=call.path)
    if cls is UnavailableError:
        raise UnavailableError(message, retry_after=_retry_after_seconds(answer.headers), **args)
    raise cls(message, **args)


class _ClosedBeforeAnswer(Exception):
    """The connection ended before any byte of the answer (retryable on a reused connection)."""


def _unreachable(endpoint: _Endpoint, call: _Call, error: BaseException) -> AgentUnreachableError:
    if isinstance(error, (socket.timeout, asyncio.TimeoutError, TimeoutError)):
        reason = "timeout"
    elif isinstance(error, ConnectionRefusedError):
        reason = "refused"
    elif isinstance(error, (_ClosedBeforeAnswer, ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError)):
        reason = "closed"
    elif isinstance(error, socket.gaierror):
        reason = "unresolved"
    else:
        reason = type(error).__name__
    detail = {"timeout": "no answer in time", "refused": "connection refused (is the agent running there?)",
              "closed": "the agent closed the connection before answering",
              "unresolved": f"cannot resolve host {endpoint.host!r}"}.get(reason, str(error) or reason)
    return AgentUnreachableError(f"{call.method} {endpoint.url}{call.path}: {detail}", endpoint.url, reason)


def _check_limit_lines(count: int, url: str) -> None:
    if count > _MAX_HEAD_LINES:
        raise BadResponseError(f"{url}: more than {_MAX_HEAD_LINES} header lines", url)


# -- the blocking client ------------------------------------------------------------------


class Client:
    """A blocking client of one agent or coordinator at ``url`` (``http://HOST:PORT``).

    ``token``: the agent's Bearer token (its ``--token-file``), sent with every request;
    needed for ``select``, ``plan`` and ``forget_node`` when the agent has one.
    ``timeout``: seconds for the connection and for each read or write on it.

    One kept-alive connection; safe to use from several threads (their calls take turns
    on it). Use as a context manager, or call ``close()``. Every method returns the
    agent's JSON as plain dicts and lists (docs/agent.md describes the fields).
    """

    def __init__(self, url: str, token: Optional[str] = None, timeout: float = 10.0) -> None:
        self._endpoint = _parse_url(url)
        self._token = _check_token(token)
        self._timeout = _check_timeout(timeout)
        self._lock = threading.Lock()
        self._sock: Optional[socket.socket] = None
        self._reader: Any = None  # the socket's buffered reader
        self._served = 0  # answers received on the current connection

    @property
    def url(self) -> str:
        return self._endpoint.url

    def __repr__(self) -> str:
        return f"gpucluster.Client({self._endpoint.url!r}{', token=...' if self._token else ''})"

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection (a later call opens a new one)."""
        with self._lock:
            self._disconnect()

    # The API, one method per route.
    def health(self) -> Dict[str, Any]:
        """GET /healthz: the health object, also while the agent is starting or draining (its 503)."""
        return self._call(_calls_health())

    def devices(self) -> List[Dict[str, Any]]:
        """GET /v1/devices: every device the agent (or the coordinator's cluster) knows."""
        return self._call(_calls_devices())

    def device(self, id: str) -> Dict[str, Any]:  # noqa: A002 (the API's name)
        """GET /v1/devices/{id}: one device and its window statistics; NotFoundError if unknown."""
        return self._call(_calls_device(id))

    def history(self, id: str, limit: Optional[int] = None) -> Dict[str, Any]:  # noqa: A002
        """GET /v1/devices/{id}/history[?limit=N]: ``{"device", "samples": [...]}``, oldest first."""
        return self._call(_calls_history(id, limit))

    def cluster(self) -> Dict[str, Any]:
        """GET /v1/cluster: the aggregate over the devices (and node counts)."""
        return self._call(_calls_cluster())

    def nodes(self) -> Dict[str, Any]:
        """GET /v1/nodes: ``{"self", "coordinator", "epoch", "nodes": [...]}``."""
        return self._call(_calls_nodes())

    def node(self, id: str) -> Dict[str, Any]:  # noqa: A002
        """GET /v1/nodes/{id}: one node by id, name or host; NotFoundError if unknown."""
        return self._call(_calls_node(id))

    def forget_node(self, id: str) -> Dict[str, Any]:  # noqa: A002
        """DELETE /v1/nodes/{id} (token): ``{"forgotten", "name", "devices"}``."""
        return self._call(_calls_forget_node(id))

    def select(self, min_memory_bytes: int = 0) -> Dict[str, Any]:
        """POST /v1/select: ``{"device", "score", "reason"}``; ``device`` is None when none qualifies."""
        return self._call(_calls_select(min_memory_bytes))

    def plan(self, **request: Any) -> Dict[str, Any]:
        """POST /v1/plan with ``request`` as the body (``items``, ``strategy``, ``weights``,
        ``max_per_device``, ``layers``, ``layer_bytes``): the plan's ``assignments`` etc."""
        return self._call(_calls_plan(request))

    # Transport.
    def _call(self, call: _Call) -> Any:
        data = _encode_request(call, self._endpoint, self._token)
        with self._lock:
            answer = self._exchange(call, data)
        return _result(call, answer, self._endpoint.url)

    def _exchange(self, call: _Call, data: bytes) -> _Answer:
        while True:
            reused = self._sock is not None and self._served > 0
            try:
                if self._sock is None:
                    self._connect()
                assert self._sock is not None
                self._sock.sendall(data)
                status = self._read_status()
            except (_ClosedBeforeAnswer, ConnectionResetError, BrokenPipeError) as error:
                self._disconnect()
                if reused:
                    continue  # the agent closed the idle connection: once more on a new one
                raise _unreachable(self._endpoint, call, error) from None
            except OSError as error:  # refused, timeout, unresolved, ...
                self._disconnect()
                raise _unreachable(self._endpoint, call, error) from None
            except BaseException:
                self._disconnect()
                raise
            try:
                answer = self._read_rest(status)
            except OSError as error:  # timeout or reset mid-answer: not retried (the agent handled it)
                self._disconnect()
                raise _unreachable(self._endpoint, call, error) from None
            except BaseException:
                self._disconnect()
                raise
            self._served += 1
            if _closes(answer.headers):
                self._disconnect()
            return answer

    def _connect(self) -> None:
        sock = socket.create_connection((self._endpoint.host, self._endpoint.port), timeout=self._timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._reader = sock.makefile("rb")
        self._served = 0

    def _disconnect(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._served = 0

    def _readline(self) -> bytes:
        line = self._reader.readline(_MAX_HEAD_LINE_BYTES + 1)
        if len(line) > _MAX_HEAD_LINE_BYTES:
            raise BadResponseError(f"{self._endpoint.url}: a header line longer than {_MAX_HEAD_LINE_BYTES} bytes",
                                   self._endpoint.url)
        return line

    def _read_status(self) -> int:
        line = self._readline()
        if not line:
            raise _ClosedBeforeAnswer()
        return _parse_status_line(line, self._endpoint.url)

    def _read_rest(self, status: int) -> _Answer:
        url = self._endpoint.url
        headers: Dict[str, str] = {}
        count = 0
        while True:
            line = self._readline()
            if not line:
                raise ConnectionResetError("closed in the answer's head")
            if line in (b"\r\n", b"\n"):
                break
            count += 1
            _check_limit_lines(count, url)
            _parse_header_line(line, headers, url)
        length = _body_length(status, headers, url)
        body = self._reader.read(length) if length else b""
        if len(body) != length:
            raise ConnectionResetError(f"closed after {len(body)} of {length} body bytes")
        return _Answer(status, headers, body)


# -- the asyncio client -------------------------------------------------------------------


class AsyncClient:
    """The asyncio twin of ``Client``: the same methods, as coroutines.

    One kept-alive connection (asyncio streams). Concurrent calls on one client (e.g.
    ``asyncio.gather``) are serialized on that connection by a lock, in the order they
    were awaited; for parallel requests, use several clients. ``timeout`` bounds the
    connection and each answer. Use ``async with``, or ``await client.aclose()``.
    """

    def __init__(self, url: str, token: Optional[str] = None, timeout: float = 10.0) -> None:
        self._endpoint = _parse_url(url)
        self._token = _check_token(token)
        self._timeout = _check_timeout(timeout)
        self._lock: Optional[asyncio.Lock] = None  # made in the loop that first uses it
        self._reader: Optional[asyncio.StreamReader] = None
        self._writer: Optional[asyncio.StreamWriter] = None
        self._served = 0

    @property
    def url(self) -> str:
        return self._endpoint.url

    def __repr__(self) -> str:
        return f"gpucluster.AsyncClient({self._endpoint.url!r}{', token=...' if self._token else ''})"

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the connection (a later call opens a new one)."""
        async with self._get_lock():
            await self._disconnect()

    async def health(self) -> Dict[str, Any]:
        """GET /healthz (see ``Client.health``)."""
        return await self._call(_calls_health())

    async def devices(self) -> List[Dict[str, Any]]:
        """GET /v1/devices."""
        return await self._call(_calls_devices())

    async def device(self, id: str) -> Dict[str, Any]:  # noqa: A002
        """GET /v1/devices/{id}."""
        return await self._call(_calls_device(id))

    async def history(self, id: str, limit: Optional[int] = None) -> Dict[str, Any]:  # noqa: A002
        """GET /v1/devices/{id}/history[?limit=N]."""
        return await self._call(_calls_history(id, limit))

    async def cluster(self) -> Dict[str, Any]:
        """GET /v1/cluster."""
        return await self._call(_calls_cluster())

    async def nodes(self) -> Dict[str, Any]:
        """GET /v1/nodes."""
        return await self._call(_calls_nodes())

    async def node(self, id: str) -> Dict[str, Any]:  # noqa: A002
        """GET /v1/nodes/{id}."""
        return await self._call(_calls_node(id))

    async def forget_node(self, id: str) -> Dict[str, Any]:  # noqa: A002
        """DELETE /v1/nodes/{id} (token)."""
        return await self._call(_calls_forget_node(id))

    async def select(self, min_memory_bytes: int = 0) -> Dict[str, Any]:
        """POST /v1/select."""
        return await self._call(_calls_select(min_memory_bytes))

    async def plan(self, **request: Any) -> Dict[str, Any]:
        """POST /v1/plan."""
        return await self._call(_calls_plan(request))

    def _get_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _call(self, call: _Call) -> Any:
        data = _encode_request(call, self._endpoint, self._token)
        async with self._get_lock():
            answer = await self._exchange(call, data)
        return _result(call, answer, self._endpoint.url)

    async def _exchange(self, call: _Call, data: bytes) -> _Answer:
        while True:
            reused = self._writer is not None and self._served > 0
            try:
                if self._writer is None:
                    await asyncio.wait_for(self._connect(), self._timeout)
                assert self._writer is not None
                self._writer.write(data)
                status = await asyncio.wait_for(self._send_and_read_status(), self._timeout)
            except (_ClosedBeforeAnswer, ConnectionResetError, BrokenPipeError) as error:
                await self._disconnect()
                if reused:
                    continue  # the agent closed the idle connection: once more on a new one
                raise _unreachable(self._endpoint, call, error) from None
            except (OSError, asyncio.TimeoutError) as error:
                await self._disconnect()
                raise _unreachable(self._endpoint, call, error) from None
            except BaseException:  # cancelled, or a bad answer: the connection's state is unknown
                await self._disconnect()
                raise
            try:
                answer = await asyncio.wait_for(self._read_rest(status), self._timeout)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as error:
                await self._disconnect()
                raise _unreachable(self._endpoint, call, error) from None
            except BaseException:
                await self._disconnect()
                raise
            self._served += 1
            if _closes(answer.headers):
                await self._disconnect()
            return answer

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self._endpoint.host, self._endpoint.port,
                                                                   limit=_MAX_HEAD_LINE_BYTES)
        self._served = 0

    async def _disconnect(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        self._served = 0
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, asyncio.CancelledError):
                pass  # closing anyway; a reset on close is no news

    async def _readline(self) -> bytes:
        assert self._reader is not None
        try:
            return await self._reader.readline()
        except (asyncio.LimitOverrunError, ValueError):  # readline() raises ValueError past the limit
            raise BadResponseError(f"{self._endpoint.url}: a header line longer than {_MAX_HEAD_LINE_BYTES} bytes",
                                   self._endpoint.url) from None

    async def _send_and_read_status(self) -> int:
        assert self._writer is not None
        await self._writer.drain()
        line = await self._readline()
        if not line:
            raise _ClosedBeforeAnswer()
        return _parse_status_line(line, self._endpoint.url)

    async def _read_rest(self, status: int) -> _Answer:
        assert self._reader is not None
        url = self._endpoint.url
        headers: Dict[str, str] = {}
        count = 0
        while True:
            line = await self._readline()
            if not line:
                raise ConnectionResetError("closed in the answer's head")
            if line in (b"\r\n", b"\n"):
                break
            count += 1
            _check_limit_lines(count, url)
            _parse_header_line(line, headers, url)
        length = _body_length(status, headers, url)
        body = await self._reader.readexactly(length) if length else b""
        return _Answer(status, headers, body)
