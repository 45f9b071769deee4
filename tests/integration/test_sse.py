"""EventStream against raw-socket fake Marathons: byte-level control over what the wire carries."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import pytest
from yarl import URL

from service.marathon.client import MarathonClient
from service.marathon.sse import EventStream
from service.metrics import Metrics

SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream;charset=UTF-8\r\n"
            b"Connection: close\r\n\r\n")  # Jetty: no length, no chunking, the body ends at EOF


def sse_event(event_type: str, **fields: Any) -> bytes:
    """One event exactly as Jetty's Emitter writes it."""
    data = json.dumps({"eventType": event_type, **fields}, separators=(",", ":"))
    return f"event: {event_type}\r\ndata: {data}\r\n\r\n".encode()


def status(code: int, reason: str, body: bytes = b"", extra: str = "") -> bytes:
    return (f"HTTP/1.1 {code} {reason}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n"
            .encode() + body)


@dataclass
class Request:
    method: str
    target: str
    headers: list[tuple[str, str]] = field(default_factory=list)

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]

    @property
    def url(self) -> URL:
        return URL(self.target)


Behaviour = Callable[[int, Request, asyncio.StreamWriter], Awaitable[None]]


class RawMarathon:
    """A TCP server that reads one request head per connection and lets the test write bytes."""

    def __init__(self, behave: Behaviour) -> None:
        self.behave = behave
        self.requests: list[Request] = []
        self.url = ""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            first, *lines = head.split("\r\n")
            method, target, _ = first.split(" ", 2)
            req = Request(method, target)
            for line in lines:
                if line:
                    k, _, v = line.partition(":")
                    req.headers.append((k.strip().lower(), v.strip()))
            self.requests.append(req)
            await self.behave(len(self.requests), req, writer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # torn down by stop(); ending quietly keeps asyncio from logging the cancellation
        finally:
            writer.close()
            self._tasks.discard(task)

    async def stop(self) -> None:
        if self._server:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server:
            await self._server.wait_closed()


async def hold() -> None:
    await asyncio.sleep(3600)  # cancelled by RawMarathon.stop()


async def write(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


@asynccontextmanager
async def raw_marathon(behave: Behaviour) -> AsyncIterator[RawMarathon]:
    server = RawMarathon(behave)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.connect_times: list[float] = []

    async def on_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    async def on_connect(self) -> None:
        self.connect_times.append(time.monotonic())

    @property
    def connects(self) -> int:
        return len(self.connect_times)


async def eventually(pred: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@asynccontextmanager
async def running(urls: list[str], session: aiohttp.ClientSession, metrics: Metrics, rec: Recorder,
                  **kw: Any) -> AsyncIterator[EventStream]:
    kw.setdefault("backoff_initial", 0.01)
    kw.setdefault("backoff_cap", 0.05)
    client = MarathonClient(urls, session=session, metrics=metrics, timeout=2)
    stream = EventStream(client, metrics=metrics, on_event=rec.on_event, on_connect=rec.on_connect, **kw)
    task = asyncio.create_task(stream.run())
    try:
        yield stream
    finally:
        stream.stop()
        await asyncio.wait_for(task, 2)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels or None) or 0.0


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def jetty_accept_check(req: Request) -> bool:
    """Jetty's EventSourceServlet: one of the Accept values must *equal* text/event-stream."""
    return any(v.strip() == "text/event-stream" for h in req.values("accept") for v in h.split(","))


# --- request shape -----------------------------------------------------------------------------


async def test_request_shape_and_events_delivered(session: aiohttp.ClientSession) -> None:
    async def behave(n: int, req: Request, w: asyncio.StreamWriter) -> None:
        if not jetty_accept_check(req):
            await write(w, status(405, "Method Not Allowed", b"HTTP method GET is not supported by this URL"))
            return
        await write(w, SSE_HEAD)
        await write(w, sse_event("event_stream_attached", remoteAddress="127.0.0.1"))
        await write(w, sse_event("status_update_event", taskId="web.1", taskStatus="TASK_RUNNING"))
        await hold()

    m = Metrics()
    rec = Recorder()
    async with raw_marathon(behave) as s, running([s.url], session, m, rec,
                                                  event_types=["status_update_event", "api_post_event"]):
        await eventually(lambda: len(rec.events) == 2)
        req = s.requests[0]
        assert req.method == "GET"
        assert req.url.path == "/v2/events"
        assert req.values("accept") == ["text/event-stream"]  # exactly, and only once
        assert req.url.query.getall("plan-format") == ["light"]
        assert req.url.query.getall("event_type") == ["status_update_event", "api_post_event", "event_stream_attached"]
        assert "authorization" not in dict(req.headers)
        assert [e["eventType"] for e in rec.events] == ["event_stream_attached", "status_update_event"]
        assert rec.events[1]["taskId"] == "web.1"
        assert rec.connects == 1
        assert sample(m, "mcr_event_source_connected") == 1
        assert sample(m, "mcr_event_source_reconnects_total") == 0
    assert sample(m, "mcr_event_source_connected") == 0


async def test_no_event_types_means_no_filter(session: aiohttp.ClientSession) -> None:
    async def behave(n: int, req: Request, w: asyncio.StreamWriter) -> None:
        await write(w, SSE_HEAD)
        await hold()

    rec = Recorder()
    async with raw_marathon(behave) as s, running([s.url], session, Metrics(), rec):
        await eventually(lambda: rec.connects == 1)
        assert "event_type" not in s.requests[0].url.query


async def test_405_is_retried_and_not_fatal(session: aiohttp.ClientSession) -> None:
    async def behave(n: int, req: Request, w: asyncio.StreamWriter) -> None:
        if n == 1:  # as if the Accept header had been wrong
            await write(w, status(405, "Method Not Allowed", b"HTTP method GET is not supported by this URL"))
            return
        await write(w, SSE_HEAD)
        await write(w, sse_event("event_stream_attached"))
        await hold()

    m = Metrics()
    rec = Recorder()
    async with raw_marathon(behave) as s, running([s.url], session, m, rec):
        await eventually(lambda: len(rec.events) == 1)
        assert rec.connects == 1  # the 405 was not a connect
        assert len(s.requests) == 2
        assert sample(m, "mcr_event_source_reconnects_total") == 1


# --- redirects and failover --------------------------------------------------------------------


async def test_standby_302_to_leader_keeps_query_and_credentials(session: aiohttp.ClientSession) -> None:
    async def lead(n: int, req: Request, w: asyncio.StreamWriter) -> None:
        await write(w, SSE_HEAD)
        await write(w, sse_event("event_stream_attached"))
        await hold()

    async with raw_marathon(lead) as leader:
        async def standby_behave(n: int, req: Request, w: asyncio.StreamWriter) -> None:
            # Marathon 1.7+ LeaderProxyFilter: redirect to the same path and query on the leader
            await write(w, status(302, "Found", extra=f"Location: {leader.url}{req.target}\r\n"))

        async with raw_marathon(standby_behave) as standby:
            rec = Recorder()
            url = standby.url.replace("http://", "http://ops:pa%3Ass@")
            async with running([url], session, Metrics(), rec, event_types=["status_update_event"]):
                await eventually(lambda: len(rec.events) == 1)
            [req] = leader.requests
            assert req.values("accept") == ["text/event-stream"]
            assert req.url.query.getall("event_type") == ["status_update_event", "event_stream_attached"]
            assert req.url.query["plan-format"] == "light"
            assert req.values("authorization") == [aiohttp.encode_basic_auth("ops", "pa:ss")]
            assert rec.connects == 1
            assert len(standby.requests) == 1


async def test_relative_redirect(session: aiohttp.ClientSession) -> None:
    async def behave(n: int, req: Request, w: asyncio.StreamWriter) -> None:
        if req.url.path == "/v2/events":
            await write(w, status(307, "Temporary Redirect", extra="Location: /elsewhere/events\r\n"))
            return
        await write(w, SSE_HEAD)
        await write(w, sse_event("event_stream_attached"))
        await hold()

    rec = Recorder()
    async with raw_marathon(behave) as s, running([s.url], session, Metrics(), rec):
        await eventually(lambda: len(rec.events) == 1)
        assert [r.url.path for r in s.requests] == ["/v2/events", "/elsewhere/events"]


async def test_first_master_down_uses_the_next(session: aiohttp.ClientSession) -> None:
    async def behave(n: int, req: Request, w: asyncio.StreamWriter) -> None:
        await write(w, SSE_HEAD)
        await write(w, sse_event("event_stream_attached"))
        await hold()

    rec = Recorder()
    async with raw_marathon(behave) as s, running([dead_url(), s.url], session, Metrics(), rec):
        await eventually(lambda: len(rec.events) == 1)


async def test_5xx_moves_to_the_next_master(session: aiohttp.ClientSession) -> None:
    async def unavailable(n: int, req: Request, w: asyncio.StreamWriter) -> None:
        await write(w, status(503, "Service Unavailable", b'{"message":"Leader currently not available"}'))

    async def good(n: int, req: Request, w: asyncio.StreamWriter) -> None:
        await write(w, SSE_HEAD)
        await write(w, sse_event("event_stream_attached"))
        await hold()

    rec = Recorder()
    async with raw_marathon(unavailable) as bad, raw_marathon(good) as ok, \
            running([bad.url, ok.url], session, Metrics(), rec):
        await eventually(lambda: len(rec.events) == 1)
        assert len(bad.requests) == 1
        assert len(ok.requests) == 1


# --- liveness: EOF, silence, heartbeats --------------------------------------------------------


async def test_eof_reconnects_and_calls_on_connect_again(session: aiohttp.ClientSession) -> None:
    async def behave(n: int, req: Request, w: asyncio.StreamWriter) -> None:
        await write(w, SSE_HEAD)
        await write(w, sse_event("status_update_event", taskId=f"web.{n}"))
        if n >= 3:
            await hold()
        # else: return -> the connection closes, as on a leader abdication

    m = Metrics()
    rec = Recorder()
    async with raw_marathon(behave) as s, running([s.url], session, m, rec):
        await eventually(lambda: len(rec.events) == 3)
        assert [e["taskId"] for e in rec.events] == ["web.1", "web.2", "web.3"]
        assert rec.connects == 3
        assert sample(m, "mcr_event_source_reconnects_total") == 2
        assert sample(m, "mcr_event_source_connected") == 1


async def test_silent_stream_is_dropped_after_three_heartbeats(session: aiohttp.ClientSession) -> None:
    async def behave(n: int, req: Request, w: asyncio.StreamWriter) -> None:
        await write(w, SSE_HEAD)
        await write(w, sse_event("event_stream_attached"))
        await hold()  # then nothing at all, not even heartbeats: a dead peer

    m = Metrics()
    rec = Recorder()
    async with raw_marathon(behave) as s, running([s.url], session, m, rec, heartbeat_interval=0.1):
        await eventually(lambda: rec.connects >= 2, within=3)
        gap = rec.connect_times[1] - rec.connect_times[0]
        assert 0.3 <= gap < 2.0
        assert sample(m, "mcr_event_source_reconnects_total") >= 1
        assert len(s.requests) >= 2


async def test_heartbeats_keep_a_quiet_stream_alive(session: aiohttp.ClientSession) -> None:
    async def behave(n: int, req: Request, w: asyncio.StreamWriter) -> None:
        await write(w, SSE_HEAD)
        while True:  # Jetty's keep-alive: CR, flush, LF, flush; no events at all
            await write(w, b"\r")
            await asyncio.sleep(0.02)
            await write(w, b"\n")
            await asyncio.sleep(0.05)

    m = Metrics()
    rec = Recorder()
    async with raw_marathon(behave) as s, running([s.url], session, m, rec, heartbeat_interval=0.1):
        await eventually(lambda: rec.connects == 1)
        await asyncio.sleep(1.0)  # > 3 silence windows
        assert rec.connects == 1
        assert rec.events == []
        assert len(s.requests) == 1
        assert sample(m, "mcr_event_source_reconnects_total") == 0


async def test_event_split_across_packets_keeps_its_name(session: aiohttp.ClientSession) -> None:
    async def behave(n: int, req: Request, w: asyncio.StreamWriter) -> None:
        await write(w, SSE_HEAD)
        for piece in (b"\r", b"\n", b"event: deployment_info\r", b"\n", b'data: {"plan":{"id":"p1"}',
                      b"}\r", b"\n", b"\r", b"\n"):
            await write(w, piece)
            await asyncio.sleep(0.01)
        await hold()

    rec = Recorder()
    async with raw_marathon(behave) as s, running([s.url], session, Metrics(), rec):
        await eventually(lambda: len(rec.events) == 1)
        assert rec.events == [{"plan": {"id": "p1"}, "eventType": "deployment_info"}]
        assert len(s.requests) == 1


# --- payload problems and callbacks ------------------------------------------------------------


async def test_bad_json_is_counted_and_skipped(session: aiohttp.ClientSession) -> None:
    async def behave(n: int, req: Request, w: asyncio.StreamWriter) -> None:
        await write(w, SSE_HEAD)
        await write(w, b"event: status_update_event\r\ndata: {not json\r\n\r\n")
        await write(w, b"event: weird\r\ndata: [1,2]\r\n\r\n")
        await write(w, sse_event("status_update_event", taskId="web.2"))
        await hold()

    m = Metrics()
    rec = Recorder()
    async with raw_marathon(behave) as s, running([s.url], session, m, rec):
        await eventually(lambda: len(rec.events) == 1)
        assert rec.events[0]["taskId"] == "web.2"
        assert sample(m, "mcr_events_rejected_total", reason="bad-json") == 1
        assert sample(m, "mcr_events_rejected_total", reason="not-an-event") == 1
        assert len(s.requests) == 1


async def test_failing_on_event_does_not_stop_the_stream(session: aiohttp.ClientSession) -> None:
    async def behave(n: int, req: Request, w: asyncio.StreamWriter) -> None:
        await write(w, SSE_HEAD)
        await write(w, sse_event("a") + sse_event("b"))
        await hold()

    seen: list[str] = []

    def on_event(event: dict[str, Any]) -> None:  # a plain function is accepted too
        seen.append(event["eventType"])
        if event["eventType"] == "a":
            raise RuntimeError("boom")

    async def on_connect() -> None:
        return None

    async with raw_marathon(behave) as s:
        client = MarathonClient([s.url], session=session, metrics=Metrics())
        stream = EventStream(client, metrics=Metrics(), on_event=on_event, on_connect=on_connect)
        task = asyncio.create_task(stream.run())
        await eventually(lambda: seen == ["a", "b"])
        stream.stop()
        await asyncio.wait_for(task, 2)
        assert len(s.requests) == 1


async def test_failing_on_connect_reconnects(session: aiohttp.ClientSession) -> None:
    async def behave(n: int, req: Request, w: asyncio.StreamWriter) -> None:
        await write(w, SSE_HEAD)
        await hold()

    calls = 0

    async def on_connect() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("resync could not be scheduled")

    async with raw_marathon(behave) as s:
        m = Metrics()
        client = MarathonClient([s.url], session=session, metrics=m)
        stream = EventStream(client, metrics=m, on_event=lambda e: None, on_connect=on_connect,
                             backoff_initial=0.01, backoff_cap=0.02)
        task = asyncio.create_task(stream.run())
        await eventually(lambda: calls == 2)
        assert len(s.requests) == 2
        stream.stop()
        await asyncio.wait_for(task, 2)


# --- stopping ----------------------------------------------------------------------------------


async def test_stop_mid_read_returns_promptly(session: aiohttp.ClientSession) -> None:
    async def behave(n: int, req: Request, w: asyncio.StreamWriter) -> None:
        await write(w, SSE_HEAD)
        await hold()

    m = Metrics()
    rec = Recorder()
    async with raw_marathon(behave) as s:
        client = MarathonClient([s.url], session=session, metrics=m)
        stream = EventStream(client, metrics=m, on_event=rec.on_event, on_connect=rec.on_connect,
                             heartbeat_interval=60)
        task = asyncio.create_task(stream.run())
        await eventually(lambda: rec.connects == 1)
        started = time.monotonic()
        stream.stop()
        await asyncio.wait_for(task, 1)
        assert time.monotonic() - started < 0.5
        assert sample(m, "mcr_event_source_connected") == 0
        assert not stream.connected


async def test_stop_during_backoff_returns_promptly(session: aiohttp.ClientSession) -> None:
    m = Metrics()
    client = MarathonClient([dead_url()], session=session, metrics=m)
    stream = EventStream(client, metrics=m, on_event=lambda e: None, on_connect=lambda: None,
                         backoff_initial=30, backoff_cap=30)
    stream._failures = 10  # the next back-off is up to 30 s
    task = asyncio.create_task(stream.run())
    await asyncio.sleep(0.2)
    assert not task.done()
    stream.stop()
    await asyncio.wait_for(task, 1)


async def test_cancel_propagates_and_clears_the_gauge(session: aiohttp.ClientSession) -> None:
    async def behave(n: int, req: Request, w: asyncio.StreamWriter) -> None:
        await write(w, SSE_HEAD)
        await hold()

    m = Metrics()
    rec = Recorder()
    async with raw_marathon(behave) as s:
        client = MarathonClient([s.url], session=session, metrics=m)
        stream = EventStream(client, metrics=m, on_event=rec.on_event, on_connect=rec.on_connect)
        task = asyncio.create_task(stream.run())
        await eventually(lambda: sample(m, "mcr_event_source_connected") == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 1)
        assert sample(m, "mcr_event_source_connected") == 0


# --- back-off ----------------------------------------------------------------------------------


def test_backoff_is_full_jitter_and_capped() -> None:
    m = Metrics()
    client = MarathonClient(["http://127.0.0.1:1"], session=None, metrics=m)  # type: ignore[arg-type]
    stream = EventStream(client, session=None, metrics=m, on_event=lambda e: None,  # type: ignore[arg-type]
                         on_connect=lambda: None, backoff_initial=0.5, backoff_cap=30)
    delays = [stream._backoff() for _ in range(40)]
    assert all(0 <= d <= 30 for d in delays)
    assert delays[0] <= 0.5 and delays[1] <= 1.0 and delays[2] <= 2.0
    assert max(delays[10:]) > 2.0  # grows (40 uniform draws in [0, 30] all below 2 is ~never)


async def test_backoff_resets_after_a_connection_that_stayed_up(session: aiohttp.ClientSession) -> None:
    async def behave(n: int, req: Request, w: asyncio.StreamWriter) -> None:
        await write(w, SSE_HEAD)
        if n == 4:
            await asyncio.sleep(0.3)  # up longer than stable_after, then closed
        elif n >= 5:
            await hold()
        # n = 1..3: closed at once (e.g. Marathon 1.8 dropping a slow consumer)

    failures_at_connect: list[int] = []
    async with raw_marathon(behave) as s:
        m = Metrics()
        client = MarathonClient([s.url], session=session, metrics=m)
        stream = EventStream(client, metrics=m, on_event=lambda e: None,
                             on_connect=lambda: failures_at_connect.append(stream._failures),
                             stable_after=0.2, backoff_initial=0.001, backoff_cap=0.01)
        task = asyncio.create_task(stream.run())
        await eventually(lambda: len(failures_at_connect) == 5)
        stream.stop()
        await asyncio.wait_for(task, 2)
    # growing while connections die young; reset by connection 4, then one back-off before 5
    assert failures_at_connect == [0, 1, 2, 3, 1]


async def test_stop_before_run_is_final(session: aiohttp.ClientSession) -> None:
    m = Metrics()
    client = MarathonClient([dead_url()], session=session, metrics=m)
    stream = EventStream(client, metrics=m, on_event=lambda e: None, on_connect=lambda: None)
    stream.stop()
    await asyncio.wait_for(stream.run(), 1)
    assert sample(m, "mcr_event_source_reconnects_total") == 0


def top(_lo: float, hi: float) -> float:
    return hi


async def test_after_three_short_attachments_the_next_reconnect_waits_no_more_than_the_first(
        session: aiohttp.ClientSession) -> None:
    """Issue 18's third defect: three leader elections within seconds, each stream attached (its
    `event_stream_attached` delivered) and cut after a short while. Every one of them was a
    success, so the reconnect after each waits at most the initial back-off, not 2, 4, 8 times it."""
    closed_at: list[float] = []
    requested_at: list[float] = []

    async def behave(n: int, req: Request, w: asyncio.StreamWriter) -> None:
        requested_at.append(time.monotonic())
        await write(w, SSE_HEAD)
        await write(w, sse_event("event_stream_attached", remoteAddress="127.0.0.1"))
        if n >= 4:
            await hold()
        await asyncio.sleep(0.05)  # a short success, then the leader abdicates: the stream is cut
        closed_at.append(time.monotonic())

    initial = 0.3
    rec = Recorder()
    async with raw_marathon(behave) as s, running([s.url], session, Metrics(), rec,
                                                  backoff_initial=initial, backoff_cap=5.0) as stream:
        stream.backoff = replace(stream.backoff, uniform=top)  # every delay at its ceiling
        await eventually(lambda: len(s.requests) == 4, within=10)
    gaps = [requested_at[i + 1] - closed_at[i] for i in range(3)]
    assert all(gap <= initial + 0.25 for gap in gaps), gaps  # not 0.6, 1.2, 2.4 s


@pytest.mark.parametrize("answer,refusal", [
    (status(401, "Unauthorized", b"invalid username or password"), True),
    (status(403, "Forbidden", b"Not Authorized"), True),
    (status(503, "Service Unavailable", b'{"message":"Leader currently not available"}'), False),
])
async def test_a_refusal_backs_off_longer_than_an_outage(session: aiohttp.ClientSession, answer: bytes,
                                                         refusal: bool) -> None:
    """Reconnects after an outage are capped at `backoff_cap` (5 s by default); a refusal comes back
    the same until an operator acts, so it backs off up to `refusal_cap` (30 s)."""
    requested_at: list[float] = []

    async def behave(n: int, req: Request, w: asyncio.StreamWriter) -> None:
        requested_at.append(time.monotonic())
        await write(w, answer)

    async with raw_marathon(behave) as s, running([s.url], session, Metrics(), Recorder(),
                                                  backoff_initial=0.05, backoff_cap=0.05, refusal_cap=2.0) as stream:
        stream.backoff = replace(stream.backoff, uniform=top)
        stream.refusal_backoff = replace(stream.refusal_backoff, uniform=top)
        await eventually(lambda: len(s.requests) == 6, within=10)
    gaps = [b - a for a, b in itertools.pairwise(requested_at)]
    if refusal:  # 0.05, 0.1, 0.2, 0.4, 0.8: doubling past the outage cap
        assert gaps[-1] >= 0.7, gaps
    else:  # never more than the cap (0.05 s), give or take the reconnect itself
        assert max(gaps) <= 0.05 + 0.4, gaps


def test_reconnect_caps_are_seconds() -> None:
    m = Metrics()
    client = MarathonClient(["http://127.0.0.1:1"], session=None, metrics=m)  # type: ignore[arg-type]
    stream = EventStream(client, session=None, metrics=m, on_event=lambda e: None,  # type: ignore[arg-type]
                         on_connect=lambda: None)
    assert (stream.backoff.initial, stream.backoff.cap, stream.refusal_backoff.cap) == (0.5, 5.0, 30.0)
