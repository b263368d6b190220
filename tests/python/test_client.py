"""gpucluster.Client and AsyncClient against the real agent binary: a coordinator with a
fleet, a node joined to it, and an agent with a token (loopback only).

The binary: $GPUCLUSTER_CLI (CTest sets it to the build's), else <build>/gpucluster next
to the imported package's <build>/python/gpucluster; skipped when neither exists and
GPUCLUSTER_CLI is unset (a build of the module alone, e.g. pip's).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, List, Optional

import pytest

import gpucluster
from gpucluster import errors

REPO = os.environ.get("GPUCLUSTER_SOURCE_DIR") or os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

START_TIMEOUT_S = 15.0  # for the listening and ready lines (2 busy cores)
STOP_TIMEOUT_S = 20.0  # above the agent's default --drain-timeout (10 s)
CONVERGE_TIMEOUT_S = 15.0  # nodes joined and reporting; with a 200 ms interval it takes < 1 s idle


def agent_binary() -> str:
    configured = os.environ.get("GPUCLUSTER_CLI")
    if configured:
        assert os.access(configured, os.X_OK), f"GPUCLUSTER_CLI={configured} is not an executable (build it)"
        return configured
    build = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(gpucluster.__file__))))
    candidate = os.path.join(build, "gpucluster")
    if not os.access(candidate, os.X_OK):
        pytest.skip(f"no agent binary at {candidate} and GPUCLUSTER_CLI is unset")
    return candidate


class Agent:
    """A `gpucluster agent --json` process; url from its first stdout line."""

    def __init__(self, binary: str, args: List[str], workdir: str, name: str) -> None:
        self.stdout_path = os.path.join(workdir, f"{name}.out")
        self.stderr_path = os.path.join(workdir, f"{name}.err")
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen([binary, "agent", "--listen", "127.0.0.1:0", "--json", *args],
                                            stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        events = self.wait_events(2)
        assert events[0]["event"] == "listening", events
        assert events[1]["event"] == "ready", events
        self.url: str = events[0]["url"]
        self.node_id: Optional[str] = events[0]["node"]["id"]

    def wait_events(self, count: int) -> List[Dict[str, Any]]:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            with open(self.stdout_path, encoding="utf-8") as out:
                lines = [line for line in out.read().splitlines() if line.strip()]
            if len(lines) >= count:
                return [json.loads(line) for line in lines[:count]]
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise AssertionError(f"the agent did not print {count} event lines within {START_TIMEOUT_S} s; "
                             f"exit {self.process.returncode}; stderr:\n{self.stderr()[-2000:]}")

    def stderr(self) -> str:
        with open(self.stderr_path, encoding="utf-8", errors="replace") as err:
            return err.read()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def raw(url: str, method: str = "GET", body: Optional[Dict[str, Any]] = None, token: Optional[str] = None) -> Any:
    """The agent's JSON through urllib, for comparison with the client's."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def assert_same_as_raw(call: Callable[[], Any], fetch_raw: Callable[[], Any], attempts: int = 50) -> Any:
    """call() equals the raw answer fetched just before and just after it. The agent's
    state moves on (samples every 200 ms), so a pair of equal raw answers brackets a
    moment when nothing changed; the client's answer from within must then be equal."""
    for _ in range(attempts):
        before = fetch_raw()
        ours = call()
        after = fetch_raw()
        if before == after:
            assert ours == before
            return ours
    raise AssertionError(f"the agent's answer changed during each of {attempts} attempts")


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def nodes_by_name(listing: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {node["name"]: node for node in listing["nodes"]}


@pytest.fixture(scope="module")
def binary() -> str:
    return agent_binary()


@pytest.fixture(scope="module")
def cluster(binary: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A coordinator (fleet-home: 3 devices) and node n1 (fleet-8x-h100: 8 devices), converged."""
    work = str(tmp_path_factory.mktemp("cluster"))
    agents: List[Agent] = []
    try:
        coord = Agent(binary, ["--coordinator", "--state-dir", os.path.join(work, "coord"), "--node-name", "coord",
                               "--fleet", os.path.join(REPO, "examples", "fleet-home.json"),
                               "--report-interval", "200ms", "--suspect-after", "600ms", "--evict-after", "2s"],
                      work, "coord")
        agents.append(coord)
        n1 = Agent(binary, ["--state-dir", os.path.join(work, "n1"), "--node-name", "n1",
                            "--fleet", os.path.join(REPO, "examples", "fleet-8x-h100.json"), "--join", coord.url],
                   work, "n1")
        agents.append(n1)

        def converged() -> bool:
            nodes = nodes_by_name(raw(coord.url + "/v1/nodes"))
            return ("n1" in nodes and nodes["n1"]["state"] == "alive" and nodes["n1"]["devices"] == 8
                    and nodes["coord"]["state"] == "alive")
        wait_until(converged, CONVERGE_TIMEOUT_S, "n1 joined the coordinator with 8 devices")
        yield {"coord": coord, "n1": n1, "work": work, "binary": binary}
    finally:
        for agent in reversed(agents):
            agent.stop()


TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def secured(binary: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A plain agent with --token-file, closing idle connections after 1 s."""
    work = str(tmp_path_factory.mktemp("secured"))
    token_file = os.path.join(work, "token")
    with open(token_file, "w", encoding="utf-8") as out:
        out.write(TOKEN + "\n")
    os.chmod(token_file, 0o600)
    agent = Agent(binary, ["--token-file", token_file, "--idle-timeout", "1s",
                           "--fleet", os.path.join(REPO, "examples", "fleet-8x-h100.json")], work, "secured")
    try:
        yield agent
    finally:
        agent.stop()


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the blocking client --------------------------------------------------------------------


def test_devices_is_the_agents_json(cluster: Any) -> None:
    url = cluster["coord"].url
    with gpucluster.Client(url) as client:
        devices = assert_same_as_raw(client.devices, lambda: raw(url + "/v1/devices"))
    ids = {device["id"] for device in devices}
    assert {"home/cuda:0", "home/cuda:1", "home/metal:0"} <= ids
    assert {f"n1/cuda:{i}" for i in range(8)} <= ids


def test_device_history_cluster_health(cluster: Any) -> None:
    url = cluster["coord"].url
    with gpucluster.Client(url) as client:
        device = client.device("n1/cuda:3")
        assert device["id"] == "n1/cuda:3" and "window" in device
        history = client.history("n1/cuda:3", limit=1)
        assert history["device"] == "n1/cuda:3" and len(history["samples"]) == 1
        full = client.history("home/cuda:0")
        assert full["device"] == "home/cuda:0" and len(full["samples"]) >= 1
        aggregate = client.cluster()
        assert aggregate["device_count"] == 11 and aggregate["nodes"]["total"] == 2
        health = client.health()
        assert health["status"] == "ok" and health["node"]["name"] == "coord"


def test_nodes_lists_the_coordinator_and_the_joined_node(cluster: Any) -> None:
    coord = cluster["coord"]
    with gpucluster.Client(coord.url) as client:
        listing = client.nodes()
        assert listing["coordinator"] is True and listing["self"] == coord.node_id
        assert isinstance(listing["epoch"], str) and listing["epoch"]
        nodes = nodes_by_name(listing)
        assert set(nodes) == {"coord", "n1"}
        assert nodes["coord"]["state"] == "alive" and nodes["coord"]["kind"] == "self"
        assert nodes["n1"]["state"] == "alive" and nodes["n1"]["devices"] == 8
        assert nodes["n1"]["id"] == cluster["n1"].node_id
        assert sorted(nodes["n1"]["device_ids"]) == [f"n1/cuda:{i}" for i in range(8)]
        # One node by name and by id; the fields that do not age are the listing's.
        for key in ("n1", cluster["n1"].node_id):
            one = client.node(key)
            for field in ("id", "name", "host", "kind", "address", "incarnation", "devices", "device_ids"):
                assert one[field] == nodes["n1"][field], field


def test_select_and_plan_are_the_agents_json(cluster: Any) -> None:
    url = cluster["coord"].url
    with gpucluster.Client(url) as client:
        selection = assert_same_as_raw(lambda: client.select(min_memory_bytes=1 << 30),
                                       lambda: raw(url + "/v1/select", "POST", {"min_memory_bytes": 1 << 30}))
        assert isinstance(selection["device"], str) and selection["device"]
        none = client.select(min_memory_bytes=1 << 50)
        assert none["device"] is None and none["reason"]
        request = {"strategy": "uniform", "items": 22}
        plan = assert_same_as_raw(lambda: client.plan(**request), lambda: raw(url + "/v1/plan", "POST", request))
        assert sum(a["count"] for a in plan["assignments"]) + plan["unassigned"] == 22


def test_typed_errors(cluster: Any) -> None:
    with gpucluster.Client(cluster["coord"].url) as client:
        with pytest.raises(errors.NotFoundError) as unknown:
            client.device("n1/cuda:99")
        assert unknown.value.status == 404 and unknown.value.code == "unknown_device"
        assert unknown.value.value == "n1/cuda:99" and unknown.value.path == "/v1/devices/n1/cuda:99"
        assert isinstance(unknown.value, LookupError) and isinstance(unknown.value, gpucluster.Error)

        with pytest.raises(errors.NotFoundError) as no_node:
            client.node("nope")
        assert no_node.value.code == "unknown_node" and no_node.value.field == "id"

        with pytest.raises(errors.InvalidRequestError) as bad_plan:
            client.plan(strategy="bogus", items=3)
        error = bad_plan.value
        assert (error.status, error.code, error.field, error.value) == (422, "invalid_value", "strategy", "bogus")
        assert error.rule and isinstance(error, ValueError)

        with pytest.raises(errors.InvalidRequestError) as bad_limit:
            client.history("n1/cuda:0", limit=0)
        assert bad_limit.value.field == "limit" and bad_limit.value.status == 422

        with pytest.raises(errors.ConflictError) as self_forget:
            client.forget_node("coord")
        assert self_forget.value.status == 409 and self_forget.value.code == "self"

        # Checked here, before anything is sent.
        with pytest.raises(errors.InputError) as bad_limit_type:
            client.history("n1/cuda:0", limit="3")
        assert bad_limit_type.value.field == "limit"
        with pytest.raises(errors.InputError) as not_json:
            client.plan(strategy="uniform", items=object())
        assert not_json.value.field == "request"

        # The connection survives error answers.
        assert len(client.devices()) == 11


def test_forget_node(cluster: Any) -> None:
    coord = cluster["coord"]
    n2 = Agent(cluster["binary"], ["--state-dir", os.path.join(cluster["work"], "n2"), "--node-name", "n2",
                                   "--fleet", os.path.join(REPO, "examples", "fleet-home.json"), "--join", coord.url],
               cluster["work"], "n2")
    try:
        with gpucluster.Client(coord.url) as client:
            wait_until(lambda: nodes_by_name(client.nodes()).get("n2", {}).get("state") == "alive",
                       CONVERGE_TIMEOUT_S, "n2 alive")
            assert n2.stop() == 0  # leaves: down (reason "left"), still listed
            wait_until(lambda: nodes_by_name(client.nodes())["n2"]["state"] == "down", CONVERGE_TIMEOUT_S, "n2 down")
            forgotten = client.forget_node("n2")
            assert forgotten["forgotten"] == n2.node_id and forgotten["name"] == "n2"
            assert sorted(forgotten["devices"]) == ["n2/cuda:0", "n2/cuda:1", "n2/metal:0"]
            assert "n2" not in nodes_by_name(client.nodes())
            with pytest.raises(errors.NotFoundError):
                client.forget_node("n2")
    finally:
        n2.stop()


def test_token(secured: Agent) -> None:
    with gpucluster.Client(secured.url) as anonymous:
        with pytest.raises(errors.UnauthorizedError) as refused:
            anonymous.select()
        error = refused.value
        assert (error.status, error.code, error.field, error.value) == (401, "unauthorized", "Authorization",
                                                                          "(absent)")
        # The agent closed that connection (the body was not read); the next call reconnects.
        assert len(anonymous.devices()) == 8
    with gpucluster.Client(secured.url, token="wrong") as wrong:
        with pytest.raises(errors.UnauthorizedError) as refused:
            wrong.plan(strategy="uniform", items=4)
        assert refused.value.value == "Bearer (wrong token)"
    with gpucluster.Client(secured.url, token=TOKEN) as client:
        assert client.select()["device"].startswith("dgx-h100-01/cuda:")
        assert client.plan(strategy="uniform", items=8)["unassigned"] == 0
    with pytest.raises(errors.InputError) as bad_token:
        gpucluster.Client(secured.url, token="a\r\nX-Injected: 1")
    assert bad_token.value.field == "token"


def test_reconnects_once_after_the_agent_closed_an_idle_connection(secured: Agent) -> None:
    with gpucluster.Client(secured.url) as client:
        first = client.devices()
        sock = client._sock
        assert sock is not None
        # --idle-timeout 1s (+ up to 1 s for the sweep): wait until the agent has closed it.
        def closed_by_agent() -> bool:
            try:
                return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
            except BlockingIOError:
                return False
        wait_until(closed_by_agent, 10.0, "the agent closed the idle connection")
        assert [d["id"] for d in client.devices()] == [d["id"] for d in first]
        assert client._sock is not sock


def test_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with gpucluster.Client(url, timeout=2.0) as client:
        with pytest.raises(errors.AgentUnreachableError) as refused:
            client.devices()
    assert refused.value.reason == "refused" and refused.value.url == url
    assert isinstance(refused.value, ConnectionError)


def test_timeout_is_unreachable() -> None:
    """A listener that never answers: the read times out."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        with gpucluster.Client(url, timeout=0.5) as client:
            with pytest.raises(errors.AgentUnreachableError) as silent:
                client.health()
        assert silent.value.reason == "timeout"
        assert time.monotonic() - started < 5.0


def test_url_validation() -> None:
    with pytest.raises(ValueError, match="plain HTTP") as https:
        gpucluster.Client("https://127.0.0.1:9420")
    assert https.value.field == "url" and https.value.value == "https://127.0.0.1:9420"
    for bad in ("127.0.0.1:9420", "http://127.0.0.1", "http://127.0.0.1:9420/v1", "http://127.0.0.1:99999",
                "http://user:pw@127.0.0.1:9420", "http://127.0.0.1:9420?x=1", "ftp://127.0.0.1:9420"):
        with pytest.raises(errors.InputError) as error:
            gpucluster.Client(bad)
        assert error.value.field == "url", bad
    assert gpucluster.Client("http://127.0.0.1:9420/").url == "http://127.0.0.1:9420"
    assert gpucluster.Client("http://[::1]:9420").url == "http://[::1]:9420"
    with pytest.raises(errors.InputError):
        gpucluster.AsyncClient("https://127.0.0.1:9420")
    with pytest.raises(errors.InputError) as timeout:
        gpucluster.Client("http://127.0.0.1:9420", timeout=0)
    assert timeout.value.field == "timeout"


class CannedServer:
    """Answers every connection with fixed bytes (what a non-agent might send)."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5.0)
            try:
                conn.recv(65536)
                conn.sendall(self.answer)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
        self.thread.join(10)


@pytest.mark.parametrize("answer, words", [
    (b"SSH-2.0-OpenSSH_9.2\r\n", "HTTP/1.x"),
    (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n",
     "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 6\r\n\r\n<html>", "not JSON"),
])
def test_bad_response(answer: bytes, words: str) -> None:
    server = CannedServer(answer)
    try:
        with gpucluster.Client(server.url) as client:
            with pytest.raises(errors.BadResponseError, match=words):
                client.devices()
    finally:
        server.close()


def test_unavailable_carries_retry_after() -> None:
    body = b'{"error":{"code":"overloaded","message":"busy","field":"(body)","value":"9","rule":"at most 1"}}'
    server = CannedServer(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\nRetry-After: 2\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    try:
        with gpucluster.Client(server.url) as client:
            with pytest.raises(errors.UnavailableError) as busy:
                client.select()
        assert busy.value.retry_after == 2.0 and busy.value.code == "overloaded" and busy.value.status == 503
    finally:
        server.close()


def test_threads_share_one_client(cluster: Any) -> None:
    with gpucluster.Client(cluster["coord"].url) as client:
        results: List[int] = []
        failures: List[BaseException] = []

        def work() -> None:
            try:
                for _ in range(10):
                    results.append(len(client.devices()))
            except BaseException as error:  # noqa: BLE001 (reported below)
                failures.append(error)
        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not failures and results == [11] * 40


# -- the asyncio client ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_async_client(cluster: Any) -> None:
    url = cluster["coord"].url
    async with gpucluster.AsyncClient(url) as client:
        devices = await client.devices()
        assert {d["id"] for d in devices} == {d["id"] for d in raw(url + "/v1/devices")}
        nodes = nodes_by_name(await client.nodes())
        assert nodes["n1"]["devices"] == 8 and nodes["coord"]["state"] == "alive"
        assert (await client.node("n1"))["id"] == cluster["n1"].node_id
        assert (await client.device("home/cuda:0"))["id"] == "home/cuda:0"
        assert len((await client.history("home/cuda:0", limit=1))["samples"]) == 1
        assert (await client.cluster())["device_count"] == 11
        assert (await client.health())["status"] == "ok"
        assert isinstance((await client.select())["device"], str)
        plan = await client.plan(strategy="capacity", items=30)
        assert sum(a["count"] for a in plan["assignments"]) + plan["unassigned"] == 30
        with pytest.raises(errors.NotFoundError) as unknown:
            await client.device("n1/cuda:99")
        assert unknown.value.code == "unknown_device"
        with pytest.raises(errors.InvalidRequestError) as bad:
            await client.plan(strategy="bogus", items=1)
        assert bad.value.field == "strategy"


@pytest.mark.asyncio
async def test_async_gather_on_one_client(cluster: Any) -> None:
    async with gpucluster.AsyncClient(cluster["coord"].url) as client:
        calls = [client.devices() if i % 2 == 0 else client.node("n1") for i in range(20)]
        results = await asyncio.gather(*calls)
        for i, result in enumerate(results):
            if i % 2 == 0:
                assert len(result) == 11
            else:
                assert result["name"] == "n1"
        # Serialized on one kept-alive connection: all 20 answers came over it.
        assert client._served == 20


@pytest.mark.asyncio
async def test_async_errors(secured: Agent) -> None:
    async with gpucluster.AsyncClient(secured.url) as anonymous:
        with pytest.raises(errors.UnauthorizedError):
            await anonymous.select()
        assert len(await anonymous.devices()) == 8  # reconnected after the agent closed
    async with gpucluster.AsyncClient(secured.url, token=TOKEN) as client:
        assert (await client.select(min_memory_bytes=1 << 30))["device"]
    async with gpucluster.AsyncClient(f"http://127.0.0.1:{free_port()}") as nowhere:
        with pytest.raises(errors.AgentUnreachableError) as refused:
            await nowhere.devices()
        assert refused.value.reason == "refused"


@pytest.mark.asyncio
async def test_async_reconnects_after_idle_close(secured: Agent) -> None:
    async with gpucluster.AsyncClient(secured.url) as client:
        await client.devices()
        reader = client._reader
        assert reader is not None
        deadline = time.monotonic() + 10.0
        while not reader.at_eof() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert reader.at_eof(), "the agent did not close the idle connection"
        assert len(await client.devices()) == 8
        assert client._reader is not reader
