"""Hostile callbacks and forged events (issue 9): the fuzz harness, shared by CI and `python -m bench fuzz`.

`POST /v1/events` is unauthenticated by nature, so whatever reaches it is hostile until proven
otherwise. This module drives the real aiohttp app (`service.web.make_app`, real request parsing
over a localhost socket) in front of the real reconciler, with the in-memory Marathon, Docker and
Consul of `tests/unit/fakes.py`, and checks after every body what docs/architecture.md §8 promises:

- never a 5xx, never an exception logged (a 5xx backs Marathon's delivery to us off, events dropped);
- every 4xx names a reason from `events.REASONS` (a bounded metric label);
- never a registration Marathon does not back: Consul holds exactly what the fake Marathon runs;
- bounded memory: what the run leaves allocated, measured with tracemalloc after a warm-up.

CI (`tests/integration/test_callback_fuzz.py`) runs 5,000 bodies; `python -m bench fuzz` runs
100,000 plus the SSE parser fuzz and the forged-event read counts (`forged_reads`). Bodies come from
hypothesis strategies (`request_family`): mutated real events (marathon.md §3) with wrong types,
missing and extra fields, unknown tasks and apps, traversal-looking ids, huge numbers, NaN,
invalid UTF-8, duplicate keys, deep nesting, empty bodies, odd Content-Types and encodings.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import gzip
import importlib
import json
import logging
import os
import threading
import time
import tracemalloc
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.intake import EventIntake
from service.marathon.events import REASONS
from service.metrics import Metrics
from service.model import Container, Task
from service.reconcile import Reconciler, ReconcileSettings
from service.web import Readiness, make_app
from tests.unit.fakes import FakeAgents, FakeLookup, FakeMarathon, web_app

MAX_BYTES = 1024 * 1024  # the harness's body limit: oversize bodies stay cheap to send
HOSTS = ("127.0.0.2", "127.0.0.3")
# The world Marathon runs: app id -> task ids. Ids in both formats (1.8+ instance, <= 1.7 legacy).
WORLD = {
    "/web/customer1/site1": ("web_customer1_site1.instance-1b4c6a2e-5f3d-11eb-8a3e-0242ac110002._app.1",
                             "web_customer1_site1.instance-2c5d7b3f-5f3d-11eb-8a3e-0242ac110002._app.3"),
    "/db/main": ("db_main.3d6e8c40-5f3d-11eb-8a3e-0242ac110002",),
}
KNOWN_TASKS = tuple(t for tasks in WORLD.values() for t in tasks)
OK_STATUSES = frozenset({200, 202, 400, 413})


# --------------------------------------------------------------------------- the world under test

class CountingLookup(FakeLookup):
    """FakeLookup that records which hosts the registrar asked Docker about."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: collections.Counter[str] = collections.Counter()

    async def find(self, host: str, task_id: str) -> Container | None:
        self.asked[host] += 1
        return await super().find(host, task_id)


class SlowMarathon(FakeMarathon):
    """FakeMarathon whose app read takes `latency` seconds, as a real `GET /v2/apps/{id}` does."""

    latency: float = 0.0

    async def app_with_tasks(self, app_id: str) -> tuple[Any, list[Task]] | None:
        if self.latency:
            await asyncio.sleep(self.latency)
        return await super().app_with_tasks(app_id)


@dataclass
class Harness:
    """The registrar's callback endpoint in front of a started reconciler over fakes."""

    marathon: SlowMarathon
    lookup: CountingLookup
    agents: FakeAgents
    reconciler: Reconciler
    metrics: Metrics
    client: aiohttp.ClientSession  # not TestClient: it keeps every response, which would read as our leak
    expected: dict[str, Any] = field(default_factory=dict)  # service id -> Registration after resync

    async def post(self, body: bytes, headers: dict[str, str], *, chunked: bool = False) -> tuple[int, bytes]:
        data: Any = body
        if chunked:
            async def pieces() -> AsyncIterator[bytes]:
                for i in range(0, len(body), 7919):
                    yield body[i:i + 7919]
            data = pieces()
        skip = () if "Content-Type" in headers else ("Content-Type",)
        # Marathon gives up on a callback after 10 s (`--http_event_request_timeout`) and counts a failure.
        async with asyncio.timeout(10), self.client.post("/v1/events", data=data, headers=headers,
                                                         skip_auto_headers=skip) as resp:
            return resp.status, await resp.read()

    async def settle(self) -> None:
        async with asyncio.timeout(10):
            await self.reconciler.wait_idle()

    def registrations(self) -> dict[str, Any]:
        return self.agents.managed()


@contextlib.asynccontextmanager
async def harness(*, marathon_latency: float = 0.0, max_event_bytes: int = MAX_BYTES) -> AsyncIterator[Harness]:
    marathon, lookup, agents = SlowMarathon(), CountingLookup(), FakeAgents()
    n = 0
    for app_id, task_ids in WORLD.items():
        marathon.apps[app_id] = web_app(app_id)
        marathon.tasks[app_id] = {}
        for task_id in task_ids:
            n += 1
            host = HOSTS[n % 2]
            marathon.tasks[app_id][task_id] = Task(id=task_id, app_id=app_id, host=host, ports=(31000 + n,),
                                                   app_version="v1")
            lookup.by_task[task_id] = Container(id=f"c{n}", task_id=task_id, network_ips={"weave": f"10.32.0.{n}"})
            lookup.hosts[task_id] = host
    metrics = Metrics()
    reconciler = Reconciler(marathon=marathon, lookup=lookup, agents=agents, metrics=metrics,
                            settings=ReconcileSettings(backoff_initial=0.001, backoff_max=0.01, max_attempts=3))
    reconciler.start()
    app = make_app(intake=EventIntake(reconciler, metrics), reconciler=reconciler, metrics=metrics,
                   readiness=Readiness(), max_event_bytes=max_event_bytes)
    server = TestServer(app)
    await server.start_server()
    client = aiohttp.ClientSession(base_url=server.make_url("/"))
    try:
        await reconciler.resync()
        h = Harness(marathon, lookup, agents, reconciler, metrics, client)
        await h.settle()
        h.expected = dict(h.registrations())
        assert len(h.expected) == len(KNOWN_TASKS), h.expected  # one port mapping per task
        marathon.latency = marathon_latency
        marathon.reads = 0
        yield h
    finally:
        await client.close()
        await server.close()
        await reconciler.stop()


# --------------------------------------------------------------------------- hostile bodies

HUGE, DEEP = "\x00HUGE\x00", "\x00DEEP\x00"  # placeholders, replaced after serialisation
HOSTILE_STRINGS = [
    "../../v2/leader", "/web/customer1/site1/../../../v2/apps", "/web/%2e%2e/x", "..", ".", "/", "", " ", "/WEB/x",
    "web_customer1_site1", "/web//x", "/web/x/", "\\..\\..\\", "/web/\x00", "/wéb", "\ud800", "{host}",
    "127.0.0.1:9999/x#", "http://evil.example/", "a" * 5000, "/" + "a/" * 2000 + "a", "TASK_RUNNING", "null", "0",
    "web_customer1_site1.instance-../../x._app.1", "%00", "\u202e", "/web/customer1/site1?embed=apps.tasks",
    HUGE, DEEP,
]
MESOS_STATES = ["TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING", "TASK_FINISHED", "TASK_FAILED",
                "TASK_KILLED", "TASK_ERROR", "TASK_LOST", "TASK_DROPPED", "TASK_UNREACHABLE", "TASK_GONE",
                "TASK_GONE_BY_OPERATOR", "TASK_UNKNOWN"]
# Hypothesis pays per draw, so most choices are one draw from a prepared list; the lists hold the
# hostile shapes, so little is lost to hand-picking, and a few strategies still draw freely.
segment = st.sampled_from(["web", "db", "main", "site1", "customer1", "x-1", "a.b", "9", "forged", "app-7", "z"])
unknown_app = st.lists(segment, min_size=1, max_size=3).map(lambda s: "/" + "/".join(s))
app_ids = st.one_of(st.sampled_from(list(WORLD)), unknown_app, st.sampled_from(HOSTILE_STRINGS))
uuids = st.integers(0, 2**32 - 1).map(lambda n: f"{n:08x}-5f3d-11eb-8a3e-0242ac110002")


def _safe(app_id: str) -> str:
    return app_id.strip("/").replace("/", "_")


task_ids = st.one_of(
    st.sampled_from(KNOWN_TASKS),
    st.builds(lambda a, u, n: f"{_safe(a)}.instance-{u}._app.{n}", app_ids, uuids, st.integers(1, 9)),
    st.builds(lambda a, u: f"{_safe(a)}.{u}", app_ids, uuids),
    st.sampled_from(HOSTILE_STRINGS),
)
hosts = st.sampled_from([*HOSTS, "unknown", "agent-3.dc1.example.net", "evil.example", "::1", *HOSTILE_STRINGS])
WRONG_TYPES: list[Any] = [
    None, True, False, 0, -1, 1.5, 2**63, -(2**64), 1e308, float("nan"), float("inf"), float("-inf"), "", "x",
    "TASK_RUNNING", [], [None], [[[]]], {}, {"id": "/web/customer1/site1"}, {"": {"": [1, "2", {"3": None}]}},
    ["/web/customer1/site1"], [31000, "31001", None, 1.0], [{"ipAddress": 1}], {"eventType": "status_update_event"},
    *HOSTILE_STRINGS,
]
json_values = st.one_of(st.sampled_from(WRONG_TYPES), st.integers(), st.floats(), st.text(max_size=6),
                        st.lists(st.sampled_from(WRONG_TYPES), max_size=3))
field_names = st.sampled_from(["", "eventType", "appId", "taskId", "x", "\u0000", "é", "__proto__", "constructor", "id",
                        "plan", "steps", "actions", "app", "host", "ports", "ipAddresses", "alive", "healthy"])


@st.composite
def real_event(draw: st.DrawFn) -> dict[str, Any]:
    """One event in a shape Marathon writes (marathon.md §3), naming known or unknown apps and tasks."""
    kind = draw(st.sampled_from(["status", "status", "status", "instance_health", "health_status", "terminated",
                                 "api_post", "deployment", "instance_changed", "failed_health", "group",
                                 "attached", "framework", "kill"]))
    app = draw(app_ids)
    task = draw(task_ids) if draw(st.booleans()) else f"{_safe(app)}.instance-{draw(uuids)}._app.1"
    instance = task.rsplit(".", 2)[0] if "._app." in task else f"{_safe(app)}.instance-{draw(uuids)}"
    ts = "2026-11-29T04:00:00.000Z"
    if kind == "status":
        return {"slaveId": "S1", "taskId": task, "taskStatus": draw(st.sampled_from(MESOS_STATES)), "message": "",
                "appId": app, "host": draw(hosts), "ipAddresses": [{"ipAddress": "10.32.0.9", "protocol": "IPv4"}],
                "ports": [31000], "version": ts, "eventType": "status_update_event", "timestamp": ts}
    if kind == "instance_health":
        return {"instanceId": instance, "runSpecId": app, "healthy": draw(st.sampled_from([True, False, None])),
                "runSpecVersion": ts, "timestamp": ts, "eventType": "instance_health_changed_event"}
    if kind == "health_status":
        return {"appId": app, "instanceId": instance, "version": ts, "alive": draw(st.booleans()),
                "eventType": "health_status_changed_event", "timestamp": ts}
    if kind == "terminated":
        return {"appId": app, "eventType": "app_terminated_event", "timestamp": ts}
    if kind == "api_post":
        return {"clientIp": "10.0.5.17", "uri": "/v2/apps" + str(app), "eventType": "api_post_event", "timestamp": ts,
                "appDefinition": {"id": app, "instances": 2, "container": {"type": "DOCKER", "portMappings": [
                    {"containerPort": 80, "hostPort": 0, "name": "http"}]}, "networks": [{"mode": "container/bridge"}]}}
    if kind == "deployment":
        step = {"actions": [{"action": draw(st.sampled_from(["StartApplication", "ScaleApplication",
                                                             "RestartApplication", "StopApplication"])),
                             "app": app}]}
        return {"id": draw(uuids), "plan": {"id": "p", "steps": [step], "version": ts}, "currentStep": step,
                "eventType": draw(st.sampled_from(["deployment_info", "deployment_success", "deployment_failed",
                                                   "deployment_step_success", "deployment_step_failure"])),
                "timestamp": ts}
    if kind == "instance_changed":
        return {"instanceId": instance, "condition": "Running", "runSpecId": app, "agentId": "S1",
                "host": draw(hosts), "runSpecVersion": ts, "timestamp": ts, "eventType": "instance_changed_event"}
    if kind == "failed_health":
        return {"appId": app, "eventType": "failed_health_check_event", "taskId": instance, "timestamp": ts,
                "healthCheck": {"path": "/health", "portIndex": 0, "protocol": "HTTP"}}
    if kind == "kill":
        return {"appId": app, "taskId": task, "instanceId": instance, "version": ts, "reason": "503",
                "host": draw(hosts), "eventType": "unhealthy_instance_kill_event", "timestamp": ts}
    if kind == "group":
        return {"groupId": app, "version": ts, "eventType": "group_change_success", "timestamp": ts}
    if kind == "attached":
        return {"remoteAddress": "10.0.5.17", "eventType": "event_stream_attached", "timestamp": ts}
    return {"executorId": "e", "slaveId": "S1", "message": [104, 105], "eventType": "framework_message_event",
            "timestamp": ts}


@st.composite
def mutated_event(draw: st.DrawFn) -> Any:
    """A real event with fields deleted, retyped or added, or replaced by a JSON value of another kind."""
    if draw(st.integers(0, 19)) == 0:
        return draw(json_values)  # not an object at all (or an object without eventType)
    event = draw(real_event())
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["delete", "retype", "retype", "extra", "id", "type"]))
        keys = sorted(event)
        if op == "delete" and keys:
            event.pop(draw(st.sampled_from(keys)))
        elif op == "retype" and keys:
            event[draw(st.sampled_from(keys))] = draw(json_values)
        elif op == "extra":
            event[draw(field_names)] = draw(json_values)
        elif op == "id":
            key = draw(st.sampled_from(["appId", "taskId", "instanceId", "runSpecId", "host"]))
            event[key] = draw(st.one_of(app_ids, task_ids, hosts))
        else:
            event["eventType"] = draw(st.sampled_from(
                ["status_update_event", "api_post_event", "deployment_success", "app_terminated_event", "",
                 "STATUS_UPDATE_EVENT", "brand_new_event", "x" * 300, "status_update_event\u0000"]))
    return event


def _serialise(draw: st.DrawFn, obj: Any) -> bytes:
    """JSON text of `obj` with the HUGE/DEEP placeholders filled; lone surrogates become invalid UTF-8."""
    text = json.dumps(obj, ensure_ascii=draw(st.booleans()), allow_nan=True)
    sign = draw(st.sampled_from(["", "-"]))
    huge = sign + "9" * draw(st.sampled_from([4299, 4300, 4301, 10_000]))
    if draw(st.booleans()):
        huge = "1" + "0" * draw(st.sampled_from([400, 5000])) + draw(st.sampled_from(["", ".5", "e999"]))
    depth = draw(st.sampled_from([255, 256, 257, 999, 5000, 30_000]))
    deep = ("[" * depth + "]" * depth) if draw(st.booleans()) else ('{"a":' * depth + "1" + "}" * depth)
    text = text.replace(json.dumps(HUGE), huge).replace(json.dumps(DEEP), deep)
    return text.encode("utf-8", errors="surrogatepass")


REPLACEMENTS = [b"", b" ", b"\r\n", b"null", b"[]", b'"x"', b"1e999", b"NaN", b"-Infinity", b"{}", b'{"eventType":{}}',
                b"\x00", b"{" * 50_000, b"[" * 1000 + b"1", b"\xfe\xff\x00{", b'{"eventType":"x",}', b"{'a': 1}"]


def _damage(draw: st.DrawFn, body: bytes) -> bytes:
    """One or two byte-level injuries: duplicate keys, invalid UTF-8, truncation, BOM, nesting, garbage."""
    for _ in range(draw(st.integers(1, 2))):
        op = draw(st.sampled_from(["dup", "invalid-utf8", "truncate", "bom", "nest", "replace"]))
        if op == "dup" and body.startswith(b"{"):
            key = draw(st.sampled_from(["eventType", "taskId", "appId", "host", "taskStatus", "runSpecId"]))
            value = json.dumps(draw(st.one_of(app_ids, task_ids, hosts, st.sampled_from(MESOS_STATES))))
            body = b"{" + f'"{key}": {value}, '.encode("utf-8", "surrogatepass") + body[1:]
        elif op == "invalid-utf8":
            at = draw(st.integers(0, len(body)))
            bad = draw(st.sampled_from([b"\x80", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf5\x80\x80\x80", b"\xc0\xaf"]))
            body = body[:at] + bad + body[at:]
        elif op == "truncate":
            body = body[:draw(st.integers(0, len(body)))]
        elif op == "bom":
            body = b"\xef\xbb\xbf" + body
        elif op == "nest":
            k = draw(st.sampled_from([10, 256, 257, 3000, 30_000]))
            body = b"[" * k + body + b"]" * k
        else:
            body = draw(st.sampled_from(REPLACEMENTS) | st.binary(max_size=32))
    return body


CONTENT_TYPES = [None, "application/json", "application/json; charset=UTF-8", "text/plain; charset=UTF-8",
                 "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz",
                 "application/json; charset=latin-1", "application/json; charset=utf-16", 'application/json; charset="',
                 ";;;=", "*/*", "application/json; " + "x" * 4000, "text/event-stream"]
ENCODINGS = ["gzip", "deflate", "gzip-garbage", "deflate-garbage", "identity", "x-unknown", "br"]


FAMILY = 10  # requests per hypothesis example


@dataclass(frozen=True)
class Request:
    body: bytes
    headers: dict[str, str]
    chunked: bool
    note: str = ""


@st.composite
def request_family(draw: st.DrawFn) -> list[Request]:
    """One mutated event, posted in `FAMILY` wire forms (hypothesis pays per draw and per example,
    so one example yields ten requests): as serialised; damaged six times (some chunked); under
    two Content-Encodings (real, garbage or unknown); and with a duplicate key, or, now and then,
    over the size limit as sent or only once inflated (a gzip bomb). Content-Types are odd throughout."""
    clean = _serialise(draw, draw(mutated_event()))

    def headers(**extra: str) -> dict[str, str]:
        ctype = draw(st.sampled_from(CONTENT_TYPES))
        return ({"Content-Type": ctype} if ctype else {}) | extra

    family = [Request(clean, headers(), False, "as serialised")]
    family += [Request(_damage(draw, clean), headers(), i % 3 == 0, "damaged") for i in range(FAMILY - 4)]
    for _ in range(2):
        encoding = draw(st.sampled_from(ENCODINGS))
        body = gzip.compress(clean) if encoding == "gzip" else zlib.compress(clean) if encoding == "deflate" else clean
        family.append(Request(body, headers(**{"Content-Encoding": encoding.removesuffix("-garbage")}), False,
                              encoding))
    roll = draw(st.integers(0, 49))
    if roll == 17:  # not 0: hypothesis favours bounds, and these are the slow ones
        family.append(Request(b" " * MAX_BYTES + b"{}", headers(), draw(st.booleans()), "too-large"))
    elif roll == 18:
        family.append(Request(gzip.compress(b" " * (MAX_BYTES + 1)), headers(**{"Content-Encoding": "gzip"}), False,
                              "gzip bomb"))
    else:
        body = clean
        if body.startswith(b"{"):
            key = draw(st.sampled_from(["eventType", "taskId", "appId", "host", "taskStatus", "runSpecId"]))
            value = json.dumps(draw(st.one_of(app_ids, task_ids, hosts, st.sampled_from(MESOS_STATES))))
            body = b"{" + f'"{key}": {value}, '.encode("utf-8", "surrogatepass") + body[1:]
        family.append(Request(body, headers(), False, "duplicate key"))
    return family


# --------------------------------------------------------------------------- the callback fuzz

class ErrorLog(logging.Handler):
    """Collects every ERROR (or worse) any logger emits: an unhandled exception is logged so."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


@dataclass
class FuzzFigures:
    bodies: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    checks: int = 0  # how many times Consul was compared with Marathon (after every body)
    marathon_reads: int = 0
    hosts_asked: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    rss_mb_before: float = 0.0
    rss_mb_after: float = 0.0
    traced_from: int | None = None
    traced_kb_retained: float = 0.0
    traced_kb_peak: float = 0.0
    top_retained: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"bodies": self.bodies, "statuses": dict(sorted(self.statuses.items())),
                "reasons": dict(self.reasons.most_common()), "consul_checks": self.checks,
                "marathon_reads": self.marathon_reads,
                "docker_lookups_by_host": dict(sorted(self.hosts_asked.items(), key=lambda kv: -kv[1])[:10]),
                "wall_s": round(self.wall_s, 1), "rss_mb_before": round(self.rss_mb_before, 1),
                "rss_mb_after": round(self.rss_mb_after, 1), "traced_from_body": self.traced_from,
                "traced_kb_retained": round(self.traced_kb_retained, 1),
                "traced_kb_peak": round(self.traced_kb_peak, 1), "top_retained": self.top_retained}


def _check_answer(status: int, payload: bytes, req: Request, figures: FuzzFigures) -> None:
    assert status in OK_STATUSES, f"HTTP {status} for {req!r:.300}: {payload[:500]!r}"
    try:
        answer = json.loads(payload)
    except ValueError:
        # aiohttp's own 400 for what it cannot parse at all (a Content-Encoding it has no codec for)
        assert status == 400, (status, payload[:300])
        figures.reasons["aiohttp:" + payload.decode(errors="replace")[:40]] += 1
        return
    if status in (200, 202):
        assert answer == {"status": "queued" if status == 202 else "ignored"}, answer
        figures.reasons["accepted" if status == 202 else "ignored"] += 1
    else:
        assert answer["error"] in REASONS and answer["message"], answer
        figures.reasons[answer["error"]] += 1


def fuzz_callbacks(bodies: int, *, trace_from: int | None = 300) -> FuzzFigures:
    """POST at least `bodies` hostile requests, checking each answer and Consul after each; the figures.

    Runs its own event loop (hypothesis drives the examples synchronously), so call it from a thread
    when a loop is already running. Raises (with hypothesis' smallest failing example, and the
    failing request in the message) on the first violation. Memory is traced from request
    `trace_from` on (tracemalloc makes each request ~5x dearer, so CI traces only the last part):
    what is still allocated at the end, outside hypothesis itself, is what the registrar (and the
    client side of the connection) kept from those requests.
    """
    loop = asyncio.new_event_loop()
    errors = ErrorLog()
    logging.getLogger().addHandler(errors)
    figures = FuzzFigures()
    h_cm = harness()
    try:
        h = loop.run_until_complete(h_cm.__aenter__())
        figures.rss_mb_before = rss_mb()
        started = time.monotonic()

        def check(req: Request) -> None:
            errors.records.clear()  # each request answers for its own log records (shrinking replays)
            status, payload = loop.run_until_complete(h.post(req.body, req.headers, chunked=req.chunked))
            figures.bodies += 1
            figures.statuses[status] += 1
            _check_answer(status, payload, req, figures)
            if status == 202:  # only a queued event can have started reconciler work
                loop.run_until_complete(h.settle())
            assert h.registrations() == h.expected, f"Consul now differs from Marathon after {req!r:.300}"
            figures.checks += 1
            assert not errors.records, f"logged {errors.records[0].getMessage()!r} for {req!r:.300}"

        @settings(max_examples=-(-bodies // FAMILY), deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(request_family())
        def one(family: list[Request]) -> None:
            if trace_from is not None and not tracemalloc.is_tracing() and figures.bodies >= trace_from:
                figures.traced_from = figures.bodies
                gc.collect()
                tracemalloc.start()
            for req in family:
                check(req)

        one()
        figures.wall_s = time.monotonic() - started
        if tracemalloc.is_tracing():
            gc.collect()
            snap = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, "*/hypothesis/*"), tracemalloc.Filter(False, tracemalloc.__file__)])
            figures.traced_kb_peak = tracemalloc.get_traced_memory()[1] / 1024
            stats = snap.statistics("lineno")
            figures.traced_kb_retained = sum(s.size for s in stats) / 1024
            figures.top_retained = [f"{s.traceback[0].filename.rsplit('/', 2)[-1]}:{s.traceback[0].lineno} "
                                    f"{s.size / 1024:.1f} KiB" for s in stats[:5]]
            tracemalloc.stop()
        figures.rss_mb_after = rss_mb()
        figures.marathon_reads = h.marathon.reads
        figures.hosts_asked = dict(h.lookup.asked)
        labels = {s.labels["reason"] for m in h.metrics.registry.collect() if m.name == "mcr_events_rejected"
                  for s in m.samples if "reason" in s.labels}
        assert labels <= set(REASONS), labels - set(REASONS)
    finally:
        tracemalloc.stop()
        logging.getLogger().removeHandler(errors)
        loop.run_until_complete(h_cm.__aexit__(None, None, None))
        loop.close()
    return figures


# --------------------------------------------------------------------------- forged events: reads

def _status(app_id: str, task_id: str, host: str = HOSTS[0]) -> bytes:
    return json.dumps({"eventType": "status_update_event", "taskId": task_id, "appId": app_id,
                       "taskStatus": "TASK_RUNNING", "host": host, "ports": [31000], "ipAddresses": [],
                       "slaveId": "S1", "version": "v", "timestamp": "t"}).encode()


def forged_bodies(case: str, n: int = 1000) -> Iterator[bytes]:
    """`n` forged events of one kind, as an attacker would post them."""
    for i in range(n):
        u = uuid.uuid1()
        if case == "same-app":  # one known app, a task Marathon does not run
            yield _status("/web/customer1/site1", f"web_customer1_site1.instance-{u}._app.1")
        elif case == "distinct-unknown-apps":
            yield _status(f"/forged/app-{i}", f"forged_app-{i}.instance-{u}._app.1")
        elif case == "known-apps-unknown-tasks":
            app = list(WORLD)[i % len(WORLD)]
            yield _status(app, f"{_safe(app)}.instance-{u}._app.1")
        elif case == "distinct-hosts":  # a known app's unknown task, "running" on a new host each time
            yield _status("/db/main", f"db_main.{u}", host=f"h{i}.forged.example")
        elif case == "app-events-same-app":
            yield json.dumps({"eventType": "app_terminated_event", "appId": "/web/customer1/site1"}).encode()
        else:
            raise ValueError(case)


async def forged_reads(case: str, *, n: int = 1000, latency: float = 0.02, concurrency: int = 8) -> dict[str, Any]:
    """Marathon reads caused by `n` forged events posted `concurrency` at a time, with Marathon
    answering an app read in `latency` s; also Consul writes (must be 0) and Docker lookups."""
    async with harness(marathon_latency=latency) as h:
        writes_before = h.agents.writes()
        lookups_before = sum(h.lookup.asked.values())
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        for body in forged_bodies(case, n):
            queue.put_nowait(body)
        statuses: collections.Counter[int] = collections.Counter()

        async def poster() -> None:
            while not queue.empty():
                status, _ = await h.post(queue.get_nowait(), {"Content-Type": "application/json"})
                statuses[status] += 1

        started = time.monotonic()
        await asyncio.gather(*(poster() for _ in range(concurrency)))
        posted = time.monotonic() - started
        async with asyncio.timeout(120):
            await h.reconciler.wait_idle()
        return {"case": case, "events": n, "marathon_latency_ms": latency * 1000, "concurrency": concurrency,
                "statuses": dict(statuses), "marathon_reads": h.marathon.reads,
                "reads_per_1000": round(h.marathon.reads * 1000 / n, 1),
                "consul_writes": h.agents.writes() - writes_before,
                "docker_lookups": sum(h.lookup.asked.values()) - lookups_before,
                "post_s": round(posted, 2), "drain_s": round(time.monotonic() - started, 2),
                "consul_matches_marathon": h.registrations() == h.expected}


async def forged_memory(case: str, *, n: int = 10_000) -> dict[str, Any]:
    """What `n` forged events leave allocated once the reconciler is idle again (tracemalloc), and
    where: a per-key table that never forgets grows with every distinct forged app id or host."""
    async with harness() as h:
        for body in forged_bodies(case, 200):  # warm every code path first
            await h.post(body, {})
        await h.settle()
        gc.collect()
        tracemalloc.start()
        try:
            for body in forged_bodies(case, n):
                await h.post(body, {})
            await h.settle()
            gc.collect()
            stats = tracemalloc.take_snapshot().statistics("lineno")
        finally:
            tracemalloc.stop()
        retained = sum(s.size for s in stats)
        return {"case": case, "events": n, "retained_kb": round(retained / 1024, 1),
                "bytes_per_event": round(retained / n, 1),
                "top": [f"{s.traceback[0].filename.rsplit('/', 2)[-1]}:{s.traceback[0].lineno} {s.size / 1024:.1f} KiB"
                        for s in stats[:4]]}


# --------------------------------------------------------------------------- the SSE parser, longer

def fuzz_sse(examples: int) -> dict[str, Any]:
    """The SSE parser properties of tests/unit/test_sse_fuzz.py, run `examples` times each."""
    os.environ["MCR_SSE_FUZZ_EXAMPLES"] = str(examples)
    # the model and its properties live with the CI test; (re)loaded so the count applies
    t = importlib.reload(importlib.import_module("tests.unit.test_sse_fuzz"))
    timings = {}
    for name in ("test_any_chunking_gives_the_modelled_events",
                 "test_a_stream_cut_anywhere_yields_a_prefix_and_nothing_half",
                 "test_random_bytes_never_raise_and_never_lose_the_next_event",
                 "test_decoding_any_data_line_is_an_object_or_an_event_error"):
        started = time.monotonic()
        getattr(t, name)()
        timings[name] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    t.test_a_10_mb_line_in_small_reads_is_one_event_in_linear_time(4096)
    timings["10 MB line in 4 KiB reads"] = round(time.monotonic() - started, 2)
    return {"examples_per_property": examples, "seconds": timings}


# --------------------------------------------------------------------------- `python -m bench fuzz`

async def run(bodies: int = 100_000, sse_examples: int = 5_000) -> dict[str, Any]:
    """The long run: 100,000 hostile callbacks (memory traced over the last 10,000), the SSE
    parser properties 5,000 times each, forged-event read counts and what forged events leave behind."""
    result: dict[str, Any] = {"scenario": "fuzz"}
    box: dict[str, Any] = {}

    def callbacks() -> None:
        box["figures"] = fuzz_callbacks(bodies, trace_from=max(0, bodies - 10_000)).as_dict()

    thread = threading.Thread(target=callbacks)
    thread.start()
    await asyncio.to_thread(thread.join)
    result["callbacks"] = box["figures"]
    result["sse"] = await asyncio.to_thread(fuzz_sse, sse_examples)
    reads = []
    for latency in (0.0, 0.02):
        for case in ("same-app", "known-apps-unknown-tasks", "distinct-unknown-apps", "app-events-same-app"):
            reads.append(await forged_reads(case, latency=latency))
    result["forged"] = reads
    result["forged_memory"] = [await forged_memory(case) for case in ("distinct-unknown-apps", "distinct-hosts",
                                                                       "same-app")]
    cb = result["callbacks"]
    result["targets"] = [
        {"target": f"{cb['bodies']:,} hostile callbacks: no 5xx", "value": cb["statuses"],
         "met": all(int(s) < 500 for s in cb["statuses"])},
        {"target": "Consul == Marathon after every body", "value": cb["consul_checks"],
         "met": cb["consul_checks"] == cb["bodies"]},
        {"target": "retained by the last 10,000 bodies < 2 MiB", "value": f"{cb['traced_kb_retained']:.0f} KiB",
         "met": cb["traced_kb_retained"] < 2 * 1024},
    ] + [{"target": f"forged {r['case']} ({r['marathon_latency_ms']:g} ms reads): reads/1000",
          "value": r["reads_per_1000"], "met": r["consul_writes"] == 0 and r["consul_matches_marathon"]}
         for r in reads]
    return result
