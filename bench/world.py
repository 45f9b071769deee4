"""The bench's own world, as separate processes on addresses the test world never uses.

20 simulated slaves 127.0.1.1 ... 127.0.1.20, each with a Consul agent (one `consul_sim` process,
`--no-checks --registration-log`) on :8500 and a Docker engine (one `docker_sim` process, with the
real engine's listing cost model) on :2375; a Marathon simulator whose slaves are those docker_sim
engines (`dockersim+http://...`, so its deployments create docker_sim containers); the registrar or
the floor; and, inside the bench process, the *relay*: the callback URL Marathon posts its events
to. The relay either holds TASK_RUNNING events (burst: delivered later, as fast as possible) or
forwards RUNNING/KILLED ones at once (steady); either way it stamps the CLOCK_MONOTONIC time each
event was sent to the system under test, and consul_sim stamps each registration with the same
clock, so event-to-registration latency is a subtraction, not an estimate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from bench.poster import Poster
from bench.procs import Proc, free_port, wait_http

SLAVES = tuple(f"127.0.1.{i}" for i in range(1, 21))
CONSUL_PORT = 8500
DOCKER_PORT = 2375
# docker_sim's model of the test world's 20.10 engine (measured: ~45 us per container held, ~150 us
# per container returned by a listing); `python -m bench real` re-measures the engine.
LIST_COST_PER_CONTAINER_US = 45.0
LIST_COST_PER_RESULT_US = 150.0
CONCURRENCY = 16  # the registrar's --workers and the floor's requests in flight
DELIVERY_CONCURRENCY = 64  # Marathon posts every event at once; cap the bench's own sockets
MANAGED_BY = "marathon-consul-registrar"


def service_id(task_id: str) -> str:
    """The registrar's deterministic id for port index 0 (service/ownership.py); the floor uses it too."""
    return f"mcr-{task_id}-0"


@dataclass
class Relay:
    """Marathon's callback target inside the bench process (see the module docstring)."""

    mode: str = "hold"  # hold | forward | off
    target: str | None = None
    held: dict[str, bytes] = field(default_factory=dict)  # task id -> TASK_RUNNING event body
    sent: dict[tuple[str, str], float] = field(default_factory=dict)  # (task id, state) -> monotonic
    counts: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    _session: aiohttp.ClientSession | None = None
    _posters: dict[str, Poster] = field(default_factory=dict)  # target URL -> its kept-alive connections
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _runner: web.AppRunner | None = None
    url: str = ""
    streaming: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/v1/events", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/v1/events"
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=DELIVERY_CONCURRENCY),
                                              timeout=aiohttp.ClientTimeout(total=30))

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for poster in self._posters.values():
            await poster.close()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        """Callbacks land here only until the bench unsubscribes the URL (see `Sims.events_via_sse`)."""
        self._on_event(await request.read())
        return web.Response(status=200)

    def _on_event(self, body: bytes) -> None:
        obj = json.loads(body)
        kind = obj.get("eventType", "")
        if kind == "status_update_event":
            state = obj.get("taskStatus", "")
            kind = f"{kind}:{state}"
            if self.mode == "hold" and state == "TASK_RUNNING":
                self.held[obj["taskId"]] = body
            elif self.mode == "forward" and state in ("TASK_RUNNING", "TASK_KILLED"):
                task = asyncio.create_task(self._deliver(obj["taskId"], state, body))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        self.counts[kind] = self.counts.get(kind, 0) + 1

    async def follow(self, marathon_url: str) -> None:
        """Read Marathon's SSE stream (status updates only) into `_on_event`. One stream costs
        Marathon far less than a POST per event: at 5,000 tasks the simulator's unbounded callback
        POSTs timed out and it dropped the subscriber, exactly as Marathon does to a slow one."""
        assert self._session is not None
        url = f"{marathon_url}/v2/events?event_type=status_update_event"
        async with self._session.get(url, headers={"Accept": "text/event-stream"},
                                     timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as r:
            self.streaming.set()
            async for line in r.content:
                if line.startswith(b"data: "):
                    self._on_event(line[6:].strip())

    async def _deliver(self, task_id: str, state: str, body: bytes) -> None:
        assert self.target is not None
        poster = self._posters.get(self.target)
        if poster is None:
            poster = self._posters[self.target] = Poster(self.target, limit=DELIVERY_CONCURRENCY)

        def stamp() -> None:
            self.sent[(task_id, state)] = time.monotonic()

        try:
            if await poster.post(body, on_send=stamp) >= 300:
                self.errors += 1
        except (OSError, TimeoutError, ValueError, EOFError, asyncio.LimitOverrunError):
            self.errors += 1

    async def blast(self, bodies: Iterable[tuple[str, bytes]], state: str = "TASK_RUNNING") -> None:
        """Deliver held events as fast as the target takes them (DELIVERY_CONCURRENCY in flight)."""
        await asyncio.gather(*(self._deliver(tid, state, body) for tid, body in bodies))

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


class Sims:
    """consul_sim + docker_sim (+ marathon_sim) processes for one scenario; `close()` stops them all."""

    def __init__(self, tag: str, *, slaves: tuple[str, ...] = SLAVES, marathon_version: str = "1.4",
                 docker: str = "sim", consul_port: int = CONSUL_PORT) -> None:
        self.tag = tag
        self.slaves = slaves
        self.version = marathon_version
        self.docker = docker  # "sim" or "real" (the test world's engines, via unix sockets)
        self.consul_port = consul_port
        self.procs: list[Proc] = []
        self.marathon_url = ""
        self.relay = Relay()
        self.http: aiohttp.ClientSession | None = None
        self._follow: asyncio.Task[None] | None = None

    def consul(self, host: str) -> str:
        return f"http://{host}:{self.consul_port}"

    async def start(self, *, real_slaves: dict[str, str] | None = None) -> None:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120),
                                          connector=aiohttp.TCPConnector(limit=32))
        await self.relay.start()
        consul = Proc(f"{self.tag}-consul-sim", [
            "devcluster.consul_sim", "--no-checks", "--registration-log", "--log-level", "WARNING",
            *(a for i, h in enumerate(self.slaves) for a in ("--agent", f"{h}:{self.consul_port}=bench-{i + 1}"))])
        self.procs.append(consul)
        slave_args: list[str] = []
        if self.docker == "sim":
            dsim = Proc(f"{self.tag}-docker-sim", [
                "devcluster.docker_sim", "--list-cost-per-container-us", str(LIST_COST_PER_CONTAINER_US),
                "--list-cost-per-result-us", str(LIST_COST_PER_RESULT_US),
                *(a for h in self.slaves for a in ("--listen", f"{h}:{DOCKER_PORT}"))])
            self.procs.append(dsim)
            for h in self.slaves:
                await wait_http(f"http://{h}:{DOCKER_PORT}/_ping", dsim)
                slave_args += ["--slave", f"{h}=dockersim+http://{h}:{DOCKER_PORT}:weave"]
        else:
            assert real_slaves is not None
            for h, spec in real_slaves.items():
                slave_args += ["--slave", f"{h}={spec}"]
        for h in self.slaves:
            await wait_http(f"{self.consul(h)}/v1/agent/self", consul)
        port = free_port()
        self.marathon_url = f"http://127.0.0.1:{port}"
        extra: list[str] = []
        marathon = Proc(f"{self.tag}-marathon-sim", [
            "devcluster.marathon_sim", "--listen", f"127.0.0.1:{port}", "--marathon-version", self.version,
            "--log-level", "WARNING", *extra, *slave_args])
        self.procs.append(marathon)
        await wait_http(f"{self.marathon_url}/v2/info", marathon)

    async def events_via_sse(self) -> None:
        """Unsubscribe the relay's callback URL (the registrar subscribed it) and follow Marathon's
        SSE stream instead; the relay still delivers each event to the target as a callback POST."""
        await self.unsubscribe_relay()
        self._follow = asyncio.create_task(self.relay.follow(self.marathon_url))
        await asyncio.wait_for(self.relay.streaming.wait(), 10)

    async def unsubscribe_relay(self) -> None:
        """Marathon posts no callbacks to the relay from now on (Jersey wants a JSON content type)."""
        await self._req("DELETE", f"{self.marathon_url}/v2/eventSubscriptions?callbackUrl={self.relay.url}", {})
        subs = await self._req("GET", f"{self.marathon_url}/v2/eventSubscriptions")
        if subs["callbackUrls"]:
            raise RuntimeError(f"still subscribed: {subs}")

    async def running_events(self) -> dict[str, bytes]:
        """A TASK_RUNNING `status_update_event` per running task, in the simulator's exact event shape
        (devcluster/marathon_sim/events.py `status_update`), built from its task list."""
        out = {}
        for t in await self.running_tasks():
            out[t["id"]] = json.dumps({
                "slaveId": t.get("slaveId", ""), "taskId": t["id"], "taskStatus": "TASK_RUNNING", "message": "",
                "appId": t["appId"], "host": t["host"], "ipAddresses": t.get("ipAddresses", []),
                "ports": t.get("ports", []), "version": t.get("version", ""), "eventType": "status_update_event",
                "timestamp": t.get("startedAt", "")}, separators=(",", ":")).encode()
        return out

    async def close(self) -> None:
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(BaseException):
                await self._follow
        # Marathon first: on SIGTERM it removes every container it launched.
        for p in reversed(self.procs):
            with contextlib.suppress(Exception):
                await asyncio.to_thread(p.stop)
        await self.relay.close()
        if self.http is not None:
            await self.http.close()

    # ---- Marathon ---------------------------------------------------------------------------

    async def _req(self, method: str, url: str, body: Any = None) -> Any:
        assert self.http is not None
        async with self.http.request(method, url, json=body) as r:
            text = await r.text()
            if r.status >= 300:
                raise RuntimeError(f"{method} {url}: {r.status} {text[:300]}")
            return json.loads(text) if text else None

    async def deploy(self, apps: dict[str, int], *, limit_s: float = 240.0, network: str = "bridge") -> None:
        """Create apps (id -> instances) and wait until that many tasks run in total."""
        slots = asyncio.Semaphore(8)

        async def create(app_id: str, n: int) -> None:
            async with slots:
                await self._req("POST", f"{self.marathon_url}/v2/apps",
                                bench_app(app_id, n, self.version, network=network))

        await asyncio.gather(*(create(a, n) for a, n in apps.items()))
        await self.wait_running(sum(apps.values()), limit_s=limit_s)

    async def scale(self, app_id: str, instances: int) -> None:
        await self._req("PUT", f"{self.marathon_url}/v2/apps{app_id}", {"instances": instances})

    async def running_tasks(self) -> list[dict[str, Any]]:
        body = await self._req("GET", f"{self.marathon_url}/v2/tasks")
        return [t for t in body["tasks"] if t.get("state") == "TASK_RUNNING"]

    async def wait_running(self, n: int, *, limit_s: float) -> None:
        """Wait for Marathon's deployments to finish (a cheap poll: rendering 10,000 tasks every
        second slowed the simulator's own deployment down), then check the task count once."""
        deadline = time.monotonic() + limit_s
        while await self._req("GET", f"{self.marathon_url}/v2/deployments"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"deployments still running after {limit_s:.0f} s")
            await asyncio.sleep(1.0)
        got = len(await self.running_tasks())
        if got < n:
            raise RuntimeError(f"only {got}/{n} tasks running after the deployments finished")

    # ---- Consul -----------------------------------------------------------------------------

    async def consul_log(self, since: int = 0) -> tuple[int, list[list[Any]]]:
        body = await self._req("GET", f"{self.consul(self.slaves[0])}/_sim/registrations?since={since}")
        return body["next"], body["entries"]

    async def consul_reset(self) -> None:
        await self._req("POST", f"{self.consul(self.slaves[0])}/_sim/reset")
        await self._req("POST", f"{self.consul(self.slaves[0])}/_sim/registrations/reset")
        await self._req("POST", f"{self.consul(self.slaves[0])}/_sim/stats/reset")

    async def consul_writes(self) -> dict[str, int]:
        """Write calls since the last stats reset, summed over every agent, by kind."""
        stats = await self._req("GET", f"{self.consul(self.slaves[0])}/_sim/stats")
        out: dict[str, int] = {}
        for calls in stats.values():
            for call, n in calls.items():
                if call.startswith("PUT "):
                    kind = re.sub(r"^PUT /v1/agent/", "", call).split("/")[:2]
                    key = "/".join(kind)
                    out[key] = out.get(key, 0) + n
        return out

    async def consul_reads(self) -> int:
        stats = await self._req("GET", f"{self.consul(self.slaves[0])}/_sim/stats")
        return sum(n for calls in stats.values() for call, n in calls.items() if call.startswith("GET "))

    async def wait_registered(self, ids: set[str], *, limit_s: float, op: str = "register",
                              since: int = 0) -> dict[str, float]:
        """Poll consul_sim's log until every service id in `ids` had `op`; first time of each."""
        seen: dict[str, float] = {}
        deadline = time.monotonic() + limit_s
        cursor = since
        while True:
            cursor, entries = await self.consul_log(cursor)
            for e_op, sid, _agent, mono, _wall in entries:
                if e_op == op and sid in ids and sid not in seen:
                    seen[sid] = mono
            if len(seen) >= len(ids) or time.monotonic() > deadline:
                return seen
            await asyncio.sleep(0.1)


def bench_app(app_id: str, instances: int, version: str, *, network: str = "bridge") -> dict[str, Any]:
    """A one-port BRIDGE app without health checks (docker_sim containers answer no probes; >80% of
    Allegro's apps register one port, peers.md §4). `network="weave"` (1.5+): on the Weave container
    network without a host port, which the registrar registers the same way (overlay IP, container
    port); `scale` uses it because 2,000 tasks per slave would not fit Mesos' 1,001 default host ports."""
    mapping: dict[str, Any] = {"containerPort": 80, "hostPort": 0, "protocol": "tcp", "name": "http"}
    body: dict[str, Any] = {"id": app_id, "instances": instances, "cpus": 0.01, "mem": 16,
                            "cmd": "sleep 100000", "healthChecks": [], "backoffSeconds": 3600}
    if network == "weave":
        del mapping["hostPort"]
        body["networks"] = [{"mode": "container", "name": "weave"}]
        body["container"] = {"type": "DOCKER", "docker": {"image": "local/busybox:1"}, "portMappings": [mapping]}
    elif version == "1.4":
        body["container"] = {"type": "DOCKER", "docker": {"image": "local/busybox:1", "network": "BRIDGE",
                                                          "portMappings": [mapping]}}
    else:
        body["networks"] = [{"mode": "container/bridge"}]
        body["container"] = {"type": "DOCKER", "docker": {"image": "local/busybox:1"}, "portMappings": [mapping]}
    return body


def app_ids(n_apps: int, prefix: str = "bench") -> list[str]:
    """`/<group>/<prefix><i>`: 50 groups, so Consul holds 50 service names with many tags, not one."""
    return [f"/g{i % 50:02d}/{prefix}{i:04d}" for i in range(n_apps)]


class Target:
    """The system under test as a process: the registrar or the floor."""

    def __init__(self, proc: Proc, url: str) -> None:
        self.proc = proc
        self.url = url

    @property
    def events_url(self) -> str:
        return f"{self.url}/v1/events"


async def start_registrar(sims: Sims, tag: str, *, events: str = "callback", docker_template: str | None = None,
                          ready_timeout: float = 180.0) -> Target:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = ["service", "serve", "--marathon", sims.marathon_url, "--events", events, "--listen", f"127.0.0.1:{port}",
            "--consul", "http://{host}:" + str(sims.consul_port),
            "--docker", docker_template or ("tcp://{host}:" + str(DOCKER_PORT)),
            "--resync-interval", "3600", "--workers", str(CONCURRENCY), "--log-level", "WARNING",
            # one instance, and the scenarios reset the Consul simulator between runs (which ends every
            # session): with a lock the reset would make each run a lost-lock resync, not the event
            # path being measured. The lock's own costs are measured by `python -m bench.failover`.
            "--lock", "off"]
    if events == "callback":
        argv += ["--callback-url", sims.relay.url]
    proc = Proc(f"{tag}-registrar", argv)
    await wait_http(f"{url}/ready", proc, limit_s=ready_timeout)
    return Target(proc, url)


async def start_floor(tag: str, *, consul_port: int = CONSUL_PORT, docker_template: str | None = None) -> Target:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = Proc(f"{tag}-floor", ["bench.floor", "serve", "--listen", f"127.0.0.1:{port}",
                                 "--consul", "http://{host}:" + str(consul_port),
                                 "--docker", docker_template or ("http://{host}:" + str(DOCKER_PORT)),
                                 "--concurrency", str(CONCURRENCY)])
    await wait_http(f"{url}/health", proc)
    return Target(proc, url)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]
