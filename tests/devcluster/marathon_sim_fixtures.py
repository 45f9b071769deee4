"""Fixtures and clients for the Marathon simulator's own tests.

The tests start their own simulator processes (1.10 on 127.0.0.1:18080, 1.4 on 127.0.0.1:18081,
heartbeat 1 s) against the test world's slaves, and stop them by pid. They need the slaves
(`python -m devcluster up` or `bash devcluster/slaves-up.sh`) and fail, never skip, without them.
Every container a test simulator launched carries the label `marathon-sim.pid=<its pid>`; teardown
checks that none is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import docker
import pytest
from aiohttp import web

from devcluster.__main__ import marathon_slave_args
from devcluster.topology import ALL_SLAVES
from tests.helpers import Process, http, wait_for

SIM10 = ("127.0.0.1", 18080)
SIM14 = ("127.0.0.1", 18081)
WEB_CMD = "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 80 -h /www"


def slave_args() -> list[str]:
    return marathon_slave_args()


def require_slaves() -> None:
    for s in ALL_SLAVES:
        try:
            client = docker.DockerClient(base_url=s.docker_local_url, timeout=5)
            client.ping()
            client.close()
        except Exception as exc:
            pytest.fail(f"slave {s.name} ({s.docker_local_url}) is not up: {exc}. Start the test world with "
                        "`python -m devcluster up` (or `bash devcluster/slaves-up.sh`).", pytrace=False)


def containers_of(pid: int) -> list[tuple[str, dict[str, Any]]]:
    """(slave host, container summary) for every container the simulator with this pid launched."""
    out = []
    for s in ALL_SLAVES:
        client = docker.DockerClient(base_url=s.docker_local_url)
        try:
            out += [(s.host, c) for c in client.api.containers(all=True, filters={"label": f"marathon-sim.pid={pid}"})]
        finally:
            client.close()
    return out


@dataclass
class Sim:
    """A simulator process of our own."""

    url: str
    version: str
    process: Process

    @property
    def pid(self) -> int:
        return self.process.proc.pid

    def post_app(self, body: dict[str, Any]) -> tuple[int, Any]:
        status, out, _ = http("POST", f"{self.url}/v2/apps", body)
        return status, out

    def tasks(self, app_id: str) -> list[dict[str, Any]]:
        status, body, _ = http("GET", f"{self.url}/v2/apps{app_id}/tasks")
        return body["tasks"] if status == 200 else []

    def running(self, app_id: str, n: int, timeout: float = 20) -> list[dict[str, Any]]:
        return wait_for(lambda: (r := [t for t in self.tasks(app_id) if t["state"] == "TASK_RUNNING"])
                        and len(r) == n and r, timeout, what=f"{n} running tasks of {app_id}")

    def delete_all(self) -> None:
        status, body, _ = http("GET", f"{self.url}/v2/apps")
        for app in body["apps"] if status == 200 else []:
            http("DELETE", f"{self.url}/v2/apps{app['id']}?force=true")
        status, pods, _ = http("GET", f"{self.url}/v2/pods")
        for pod in pods if status == 200 else []:
            http("DELETE", f"{self.url}/v2/pods{pod['id']}")
        wait_for(lambda: not http("GET", f"{self.url}/v2/apps")[1]["apps"], 20, what="all apps deleted")
        wait_for(lambda: not http("GET", f"{self.url}/v2/pods/::status")[1], 20, what="all pods deleted")
        wait_for(lambda: not containers_of(self.pid), 20, what="no containers left")


def start_sim(version: str, listen: tuple[str, int], *extra: str) -> Sim:
    argv = ["devcluster.marathon_sim", "--listen", f"{listen[0]}:{listen[1]}", "--marathon-version", version,
            "--heartbeat-interval", "1", *slave_args(), *extra]
    proc = Process(argv, f"marathon-sim-{version}-{listen[1]}")
    sim = Sim(f"http://{listen[0]}:{listen[1]}", version, proc)
    try:
        # the log line, not /ping: another process on the port would answer /ping too
        wait_for(lambda: not proc.alive() or "simulator on http://" in proc.tail(), 20, what="simulator up")
    except AssertionError:
        proc.stop()
        raise
    assert proc.alive(), f"simulator exited:\n{proc.tail()}"
    return sim


@contextlib.contextmanager
def running_sim(version: str, listen: tuple[str, int], *extra: str) -> Iterator[Sim]:
    require_slaves()
    sim = start_sim(version, listen, *extra)
    try:
        yield sim
        if sim.process.alive():
            sim.delete_all()
    finally:
        sim.process.stop()
        left = containers_of(sim.pid)
        for host, c in left:  # never leave anything behind, even when the assertion below fails
            client = docker.DockerClient(base_url=next(s.docker_local_url for s in ALL_SLAVES if s.host == host))
            client.api.remove_container(c["Id"], force=True)
            client.close()
        assert not left, f"simulator left containers behind: {[c['Names'] for _, c in left]}"


@pytest.fixture(scope="module")  # fixtures star-imported per module: one process per module
def sim10() -> Iterator[Sim]:
    with running_sim("1.10", SIM10) as sim:
        yield sim


@pytest.fixture(scope="module")  # fixtures star-imported per module: one process per module
def sim14() -> Iterator[Sim]:
    with running_sim("1.4", SIM14, "--http-event-request-timeout", "2",
                     "--http-event-callback-slow-consumer-timeout", "2") as sim:
        yield sim


def web_app(app_id: str, instances: int = 1, *, version: str = "1.10", network: str = "BRIDGE",
            **extra: Any) -> dict[str, Any]:
    """A busybox httpd app serving `ok` on port 80, in the input shape of the given version."""
    body: dict[str, Any] = {"id": app_id, "instances": instances, "cpus": 0.1, "mem": 32, "cmd": WEB_CMD,
                            "backoffSeconds": 1}
    mapping = {"containerPort": 80, "hostPort": 0, "protocol": "tcp", "name": "http"}
    if version == "1.4":
        body["container"] = {"type": "DOCKER", "docker": {"image": "local/busybox:1", "network": network,
                                                          "portMappings": [mapping]}}
    else:
        mode = {"BRIDGE": "container/bridge", "HOST": "host", "USER": "container"}[network]
        body["networks"] = [{"mode": mode, "name": "weave"} if mode == "container" else {"mode": mode}]
        if mode == "container":
            mapping.pop("hostPort")  # a container network port without a host port
        body["container"] = {"type": "DOCKER", "docker": {"image": "local/busybox:1"},
                             "portMappings": [] if mode == "host" else [mapping]}
    body.update(extra)
    return body


# ------------------------------------------------------------------------------------------------ SSE


@dataclass
class SseClient:
    """A plain SSE client on a raw socket, so the test sees the exact bytes (CRLF framing, bare-CRLF
    heartbeats). A reader thread keeps the raw bytes and the parsed (event, data) pairs."""

    url: str
    accept: str = "text/event-stream"
    raw: bytearray = field(default_factory=bytearray)
    events: queue.Queue[tuple[str, dict[str, Any]]] = field(default_factory=queue.Queue)
    seen: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    status_line: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    closed: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=5)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: {self.accept}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            head += chunk
        header_bytes, _, rest = head.partition(b"\r\n\r\n")
        lines = header_bytes.decode().split("\r\n")
        self.status_line = lines[0]
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        self.raw += rest
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    @property
    def status(self) -> int:
        return int(self.status_line.split()[1])

    def _read(self) -> None:
        try:
            self.sock.settimeout(None)
        except OSError:  # closed before the reader started
            self.closed.set()
            return
        buf = bytes(self.raw)
        self._parse(buf)
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            self.raw += chunk
            self._parse(bytes(self.raw))
        self.closed.set()

    _parsed_upto: int = 0

    def _parse(self, data: bytes) -> None:
        while True:
            end = data.find(b"\r\n\r\n", self._parsed_upto)
            if end < 0:
                return
            block = data[self._parsed_upto:end].decode()
            self._parsed_upto = end + 4
            name, payload = "", None
            for line in block.split("\r\n"):
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    payload = json.loads(line[6:])
            if name and payload is not None:
                self.seen.append((name, payload))
                self.events.put((name, payload))
            elif block.strip("\r\n"):
                raise AssertionError(f"unparseable SSE block {block!r}")

    def next(self, event_type: str | None = None, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {event_type or 'event'} {match} within {timeout}s")
            try:
                name, data = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if (event_type is None or name == event_type) and all(data.get(k) == v for k, v in match.items()):
                return data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@contextlib.contextmanager
def sse(url: str, **kw: Any) -> Iterator[SseClient]:
    client = SseClient(url, **kw)
    try:
        yield client
    finally:
        client.close()


# ------------------------------------------------------------------------------------------ callbacks


class Receiver:
    """A local aiohttp server (own loop, own thread) that records callback POSTs and answers with
    `self.status` after `self.delay` seconds."""

    def __init__(self) -> None:
        self.status = 200
        self.delay = 0.0
        self.posts: list[tuple[float, dict[str, str], dict[str, Any]]] = []
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            self.posts.append((time.monotonic(), dict(request.headers), json.loads(body)))
            if self.delay:
                await asyncio.sleep(self.delay)
            return web.Response(status=self.status)

        async def start() -> None:
            app = web.Application()
            app.router.add_post("/events", handle)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            port = self._runner.addresses[0][1]
            self.url = f"http://127.0.0.1:{port}/events"
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(start())
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)

    def types(self) -> list[str]:
        return [p[2]["eventType"] for p in self.posts]

    def close(self) -> None:
        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
