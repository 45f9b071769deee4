"""`GET /v2/events`: Marathon's SSE stream, byte-for-byte as Jetty's EventSourceServlet writes it.

- Accept: each `Accept` header value must *equal* `text/event-stream`, else 405 (Jetty's loop).
- Response: 200, `Content-Type: text/event-stream;charset=UTF-8`, `Connection: close`, no chunked
  encoding (the body runs until the connection closes).
- Frames: `event: <type>\\r\\ndata: <json>\\r\\n\\r\\n`; heartbeat every `--heartbeat-interval` s as
  `\\r`, flush, `\\n`, flush.
- The handle subscribes to the bus *then* publishes its own `event_stream_attached`, so that is the
  first event a client sees; `event_stream_detached` on close.
- Per-client buffer: `event_stream_max_outstanding_messages` (50 in 1.4, 1024 from 1.5); beyond it
  events are dropped (<= 1.7) or the connection is closed (1.8+).
- Test hooks: `drop_all()` closes every stream, `silence()` stops all writing (events queue up,
  heartbeats stop) until `resume()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from aiohttp import web

from devcluster.marathon_sim import events as ev
from devcluster.marathon_sim.bus import EventBus
from devcluster.marathon_sim.config import SimConfig
from devcluster.marathon_sim.events import Event

log = logging.getLogger("marathon_sim.sse")


class _RawStreamResponse(web.StreamResponse):
    """A StreamResponse without length bookkeeping: aiohttp would otherwise switch HTTP/1.1 bodies of
    unknown length to chunked encoding, which Jetty's SSE never uses (aiohttp's WebSocketResponse
    uses the same switch)."""

    _length_check = False


def frame(event: Event, light: bool) -> bytes:
    data = json.dumps(event.payload(light), separators=(",", ":"), ensure_ascii=False)
    return f"event: {event.event_type}\r\ndata: {data}\r\n\r\n".encode()


class SseHandle:
    def __init__(self, *, types: set[str], light: bool, max_outstanding: int, close_when_full: bool) -> None:
        self.types = types
        self.light = light
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.max_outstanding = max_outstanding
        self.close_when_full = close_when_full
        self.closed = asyncio.Event()

    def offer(self, event: Event) -> None:
        if self.types and event.event_type not in self.types:
            return
        if self.queue.qsize() >= self.max_outstanding:
            if self.close_when_full:
                log.warning("Closing connection for slow event consumer")
                self.closed.set()
            return
        self.queue.put_nowait(event)


class EventStreams:
    def __init__(self, cfg: SimConfig, bus: EventBus) -> None:
        self.cfg = cfg
        self.bus = bus
        self.handles: set[SseHandle] = set()
        self.writable = asyncio.Event()
        self.writable.set()

    def drop_all(self) -> int:
        for h in self.handles:
            h.closed.set()
        return len(self.handles)

    def silence(self) -> None:
        self.writable.clear()

    def resume(self) -> None:
        self.writable.set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if "text/event-stream" not in request.headers.getall("Accept", []):
            return web.Response(status=405, text="HTTP method GET is not supported by this URL")
        types = set(request.query.getall("event_type", []))
        handle = SseHandle(types=types, light=self.cfg.light_plan(request.query.get("plan-format")),
                           max_outstanding=self.cfg.max_outstanding_messages,
                           close_when_full=self.cfg.close_slow_sse_consumers)
        resp = _RawStreamResponse(status=200, headers={"Content-Type": "text/event-stream;charset=UTF-8",
                                                       "Connection": "close"})
        resp.force_close()
        await resp.prepare(request)
        remote = request.remote or ""
        self.handles.add(handle)
        self.bus.attach(handle)
        self.bus.publish(ev.event_stream("event_stream_attached", remote))
        log.info("event stream attached: %s types=%s", remote, sorted(types) or "all")
        writer = asyncio.create_task(self._write_loop(handle, resp))
        closer = asyncio.create_task(handle.closed.wait())
        try:
            await asyncio.wait({writer, closer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (writer, closer):
                t.cancel()
            for t in (writer, closer):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            self.bus.detach(handle)
            self.handles.discard(handle)
            self.bus.publish(ev.event_stream("event_stream_detached", remote))
            log.info("event stream detached: %s", remote)
            if request.transport is not None:
                request.transport.close()
        return resp

    async def _write_loop(self, handle: SseHandle, resp: web.StreamResponse) -> None:
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self.cfg.heartbeat_interval
        while True:
            await self.writable.wait()
            timeout = max(0.0, next_beat - loop.time())
            try:
                event = await asyncio.wait_for(handle.queue.get(), timeout)
            except TimeoutError:
                await self.writable.wait()
                # Jetty's heartbeat: CR, flush, LF, flush
                await resp.write(b"\r")
                await resp.write(b"\n")
                next_beat = loop.time() + self.cfg.heartbeat_interval
                continue
            await self.writable.wait()
            await resp.write(frame(event, handle.light))
