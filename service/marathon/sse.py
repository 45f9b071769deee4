"""Marathon's SSE event stream (`GET /v2/events`): a byte-level parser and a reconnecting reader.

Why it looks like this:

- **The parser is pure and incremental** (`SSEParser`): bytes in, `(event, data)` pairs out, no
  I/O, so the framing rules are unit-tested chunk by chunk. It follows the WHATWG rules: lines end
  at CR, LF or CRLF; an empty line dispatches the event; `:` lines are comments. Marathon's Jetty
  writes `event: X\\r\\ndata: {json}\\r\\n\\r\\n`, and its keep-alive is a bare CR, flushed, then
  a LF, flushed (marathon.md §2.2), so a CR ending one read and the LF starting the next must be
  one line end, not two. Lines are decoded only once complete: CR and LF never occur inside a
  UTF-8 sequence, so a character split across reads is never decoded half.
- **The reader never gives up** (`EventStream.run`): Marathon closes every stream when its leader
  steps down, closes slow consumers (1.8+), and a standby answers 302 to the leader (1.7+,
  followed by the rule of `redirect.py`). Any end of the stream (EOF, error, non-200) is followed
  by a reconnect with capped (5 s), fully jittered exponential back-off. A connection that
  delivered its `event_stream_attached` was a success, however short (a leader election cuts it
  within seconds): the back-off starts over, so three elections in a row do not make the fourth
  reconnect wait longer than the first. A refusal (a REPORT answer: 401, 403, 405) backs off up
  to 30 s: the same answer comes back until an operator acts. There is no replay (no
  `Last-Event-ID`), so every successful connect calls `on_connect()`, which is where the caller
  schedules a full resync (docs/architecture.md §2).
- **Silence watchdog instead of a timeout.** The stream is endless, so there is no total timeout;
  Jetty sends a heartbeat every 10 s, so no byte at all for 3 heartbeats means a dead peer (a
  half-open TCP connection after a master vanished) and the stream is dropped and reconnected.
- **Callbacks run on the reader's task**, in stream order, and must only enqueue: while they run
  the stream is not read, and Marathon 1.8+ drops a consumer that falls behind. A failing
  `on_event` is logged and the stream goes on; a failing `on_connect` drops the connection, so the
  resync it should have scheduled is attempted again on the next connect.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
from yarl import URL

from service.backoff import Backoff
from service.errors import REPORT, classify_status, record
from service.marathon.client import MarathonClient
from service.marathon.events import decode_event_text
from service.marathon.redirect import MAX_REDIRECTS, RedirectError, follow, is_redirect
from service.metrics import Metrics
from service.retry import Stop, Stopped, retry

log = logging.getLogger(__name__)

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = "\ufeff"
ATTACHED = "event_stream_attached"  # the stream's own first event: it is live
ACCEPT = "text/event-stream"  # Jetty compares it with == : anything else is a 405 (marathon.md §2.1)


class SSEError(Exception):
    """The byte stream cannot be an SSE stream (e.g. a line longer than the parser accepts)."""


class SSEParser:
    """Incremental `text/event-stream` parser: feed bytes, get complete `(event, data)` pairs.

    One parser per connection: an event cut off by the end of a connection is discarded, as the
    spec says, so after a reconnect start from a fresh parser (or call `reset()`).
    """

    def __init__(self, *, max_line_bytes: int = 16 * 1024 * 1024) -> None:
        self._max_line = max_line_bytes
        self.reset()

    def reset(self) -> None:
        self._partial: list[bytes] = []  # pieces of the line not ended yet, joined once it ends
        self._partial_len = 0
        self._skip_lf = False  # the previous chunk ended in CR: a LF starting the next one is its pair
        self._first_line = True
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        """Consume `chunk`; return the events it completed, in order.

        Only `chunk` is scanned for line ends, and a line's pieces are joined once, when it ends: a
        long line (Marathon's heavy deployment events are megabytes on one line) arriving in many
        reads costs time linear in its length, not in its length times the number of reads.
        """
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        events: list[tuple[str, str]] = []
        start = 0
        for m in _LINE_END.finditer(chunk):
            piece = chunk[start:m.start()]
            if self._partial:
                self._partial.append(piece)
                piece = b"".join(self._partial)
                self._partial, self._partial_len = [], 0
            self._line(piece, events)
            start = m.end()
        # Only a CR that is the chunk's very last byte may be the first half of a CRLF split across
        # reads; a CR inside the chunk has already been seen with what follows it.
        if start == len(chunk) and chunk.endswith(b"\r"):
            self._skip_lf = True
        elif start < len(chunk):
            self._partial.append(chunk[start:])
            self._partial_len += len(chunk) - start
            if self._partial_len > self._max_line:
                raise SSEError(f"SSE line longer than {self._max_line} bytes")
        return events

    def _line(self, raw: bytes, events: list[tuple[str, str]]) -> None:
        line = raw.decode("utf-8", errors="replace")
        if self._first_line:
            self._first_line = False
            line = line.removeprefix(_BOM)
        if not line:
            if self._data:
                events.append((self._event or "message", "\n".join(self._data)))
            self._event, self._data = "", []
            return
        if line.startswith(":"):
            return  # comment
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        # `id` and `retry` are not sent by Marathon and unusable without Last-Event-ID support;
        # unknown fields are ignored, as the spec says.


OnEvent = Callable[[dict[str, Any]], Awaitable[None] | None]
OnConnect = Callable[[], Awaitable[None] | None]


class _StreamFailed(Exception):
    """A connection attempt or a stream ended badly; `failover` says: try the next master."""

    def __init__(self, message: str, *, failover: bool) -> None:
        super().__init__(message)
        self.failover = failover


class _Ended(Exception):
    """The master closed a stream (leader change, slow consumer): reconnect."""


def _reconnects(exc: BaseException) -> bool:
    """Every end of a connection is followed by another, except a stop (or a cancellation)."""
    return isinstance(exc, Exception) and not isinstance(exc, Stopped)


class EventStream:
    """Reads Marathon's event stream forever, reconnecting, until `stop()`.

    `on_event` gets each event's decoded JSON object (with `eventType` filled from the SSE event
    name if the payload lacks it); `on_connect` is called after every successful (re)connect.
    `event_types` filters server-side (Marathon ≥ 1.3.7); None means every event. A filter always
    asks for `event_stream_attached` too: it is how the reader knows a connection succeeded.
    """

    def __init__(
        self,
        client: MarathonClient,
        *,
        session: aiohttp.ClientSession | None = None,
        metrics: Metrics,
        on_event: OnEvent,
        on_connect: OnConnect,
        event_types: Sequence[str] | None = None,
        heartbeat_interval: float = 10.0,
        backoff_initial: float = 0.5,
        backoff_cap: float = 5.0,
        refusal_cap: float = 30.0,
        stable_after: float | None = None,
        stop: Stop | None = None,
    ) -> None:
        """`stop`: the process's stop signal (its reconnect waits end on it), else one of its own."""
        self.client = client
        self.session = session or client.session
        self.metrics = metrics
        self.on_event = on_event
        self.on_connect = on_connect
        self.event_types = list(event_types) if event_types else []
        if self.event_types and ATTACHED not in self.event_types:
            self.event_types.append(ATTACHED)
        self.silence_timeout = 3 * heartbeat_interval
        self.backoff = Backoff(initial=backoff_initial, cap=backoff_cap)
        self.refusal_backoff = Backoff(initial=backoff_initial, cap=max(backoff_cap, refusal_cap))
        # A connection that delivered its event_stream_attached, or outlived one silence window,
        # was healthy: the next back-off starts over.
        self.stable_after = self.silence_timeout if stable_after is None else stable_after
        self.connected = False
        self.connects = 0  # successful connects so far (tests and /ready read it)
        self._index = client.current_index
        self._stop = stop if stop is not None else Stop()
        self._failures = 0
        self._connected_at: float | None = None
        self._attached = False  # this connection delivered an event_stream_attached
        self._refused = False  # this attempt ended in a refusal (a REPORT answer)
        self._started = False  # a connection was attempted: the next one is a reconnect
        self._reader: asyncio.Task[None] | None = None

    # -- control ---------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask `run()` to return; it does so promptly even mid-read or mid-back-off."""
        self._stop.set()
        if self._reader is not None:
            self._reader.cancel()

    def _set_connected(self, value: bool) -> None:
        self.connected = value
        self.metrics.event_source_connected.set(1 if value else 0)

    async def run(self) -> None:
        """Connect, read, reconnect, until `stop()`. Cancelling the task also ends it, cleanly.

        An EventStream runs once: `stop()` is final, even when it comes before `run()` starts.
        Every connection ends in an exception (`_Ended` when the master closed it), so the one
        retry rule (`service.retry.retry`, for ever, waiting on the stop signal) drives the
        reconnects; the delay is the stream's own (`_delay`): it starts over after a success.
        """
        try:
            await retry(self._connection, policy=self.backoff, stop=self._stop, retry_on=_reconnects,
                        wait_for=self._delay)
        except Stopped:
            pass  # our own stop()
        finally:
            self._set_connected(False)

    async def _connection(self) -> None:
        """One connection, from request to end; it always ends in an exception, logged here."""
        if self._started:
            self.metrics.reconnects.inc()
        self._started = True
        self._connected_at = None
        self._attached = self._refused = False
        # The connection runs in its own task so that stop() can cut a read short.
        self._reader = asyncio.create_task(self._read_once())
        try:
            await self._reader
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._stop.is_set() and not (current and current.cancelling()):
                raise Stopped() from None  # our own stop(), not a cancellation of run()
            raise
        except _StreamFailed as e:
            log.warning("Marathon event stream: %s", e)
            if e.failover:
                self._next_endpoint()
            raise
        except (aiohttp.ClientError, TimeoutError, OSError, SSEError) as e:
            log.warning("Marathon event stream from %s failed: %s: %s", self._display, type(e).__name__, e)
            if self._connected_at is None:
                self._next_endpoint()  # could not even connect: try the next master
            raise
        except Exception:
            # Never give up on the event source: a bug here must not silence the registrar
            # (the periodic resync would hide it); log it loudly and reconnect.
            log.exception("Marathon event stream from %s failed unexpectedly", self._display)
            raise
        finally:
            self._reader = None
            self._set_connected(False)
        # Same master again: a standby redirects (1.7+) or proxies (older) to the leader.
        log.warning("Marathon event stream closed by %s; reconnecting", self._display)
        raise _Ended()

    def _delay(self, _attempt: int, _exc: BaseException) -> float:
        """The wait before the next connection: a connection that attached (or stayed up a while)
        was a success, so the back-off starts over."""
        if self._attached or (self._connected_at is not None
                              and time.monotonic() - self._connected_at >= self.stable_after):
            self._failures = 0
        return self._backoff()

    def _backoff(self) -> float:
        """The next reconnect delay (full jitter, `service.backoff`); longer after a refusal."""
        self._failures += 1
        return (self.refusal_backoff if self._refused else self.backoff).delay(self._failures)

    def _next_endpoint(self) -> None:
        self._index = (self._index + 1) % len(self.client.endpoints)

    @property
    def _display(self) -> str:
        return self.client.endpoints[self._index].display

    # -- one connection --------------------------------------------------------------------------

    def _params(self) -> list[tuple[str, str]]:
        return [("plan-format", "light")] + [("event_type", t) for t in self.event_types]

    async def _read_once(self) -> None:
        """One connection, from request to end of stream."""
        endpoint = self.client.endpoints[self._index]
        url: URL = endpoint.url("/v2/events").with_query(self._params())
        stream_headers = {"Accept": ACCEPT, "Cache-Control": "no-cache"}
        credentials = endpoint.headers
        # No total timeout: the stream is endless. The connect and the response head are bounded;
        # the body is watched by the silence watchdog below.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.client.timeout, sock_read=None)
        for _ in range(MAX_REDIRECTS + 1):
            async with asyncio.timeout(self.client.timeout):
                resp = await self.session.get(url, headers={**stream_headers, **credentials}, timeout=timeout,
                                              allow_redirects=False, raise_for_status=False)
            async with resp:
                location = resp.headers.get("Location")
                if is_redirect(resp.status, location):
                    assert location is not None
                    try:  # the one rule for REST and the stream (redirect.py)
                        url, credentials = follow(url, location, sender=endpoint, masters=self.client.endpoints)
                    except RedirectError as e:
                        raise _StreamFailed(str(e), failover=True) from None
                    log.info("Marathon event stream: %s redirects to %s", self._display, url)
                    continue
                if resp.status != 200:
                    body = (await resp.content.read(500)).decode("utf-8", errors="replace")
                    # counted and, for a refusal (401, 403, 405), logged once by the error contract
                    # (docs/architecture.md §8); the stream still reconnects for ever, backing off
                    classified = classify_status(resp.status, body)
                    self._refused = classified.verdict is REPORT
                    record(self.metrics, system="marathon", call="events", target=self._display,
                           classified=classified,
                           message=f"Marathon event stream {url}: HTTP {resp.status}: {body}",
                           then="the stream reconnects, backing off")
                    hint = " (does Marathon see Accept: text/event-stream?)" if resp.status == 405 else ""
                    raise _StreamFailed(f"{url} answered HTTP {resp.status}{hint}: {body}",
                                        failover=resp.status >= 500)
                if resp.content_type != ACCEPT:
                    raise _StreamFailed(f"{url} answered 200 with Content-Type {resp.content_type!r}, "
                                        "not an event stream", failover=True)
                await self._consume(resp)
                return
        raise _StreamFailed(f"more than {MAX_REDIRECTS} redirects from {self._display}", failover=True)

    async def _consume(self, resp: aiohttp.ClientResponse) -> None:
        self._connected_at = time.monotonic()
        self._set_connected(True)
        self.connects += 1
        log.info("Marathon event stream attached to %s", resp.url.with_query(None))
        try:
            await _maybe_await(self.on_connect())
        except Exception as e:
            raise _StreamFailed(f"on_connect failed: {type(e).__name__}: {e}", failover=False) from e
        parser = SSEParser()
        while True:
            try:
                async with asyncio.timeout(self.silence_timeout):
                    chunk = await resp.content.readany()
            except TimeoutError:
                raise _StreamFailed(f"no byte from {resp.url.with_query(None)} for "
                                    f"{self.silence_timeout:g}s (3 heartbeats); dropping it",
                                    failover=False) from None
            if not chunk:
                break  # EOF: the master closed the stream (leader change, slow consumer)
            for name, data in parser.feed(chunk):
                await self._dispatch(name, data)

    async def _dispatch(self, name: str, data: str) -> None:
        try:
            obj = decode_event_text(data)  # depth-bounded: a deep `[[[…]]]` must not end the connection
        except ValueError:  # EventError included
            self.metrics.events_rejected.labels("bad-json").inc()
            log.warning("Marathon event %r with a data line that is not JSON: %.200s", name, data)
            return
        if not isinstance(obj, dict):
            self.metrics.events_rejected.labels("not-an-event").inc()
            log.warning("Marathon event %r whose data is not a JSON object: %.200s", name, data)
            return
        if name != "message":
            obj.setdefault("eventType", name)
        if obj.get("eventType") == ATTACHED:
            self._attached = True
        try:
            await _maybe_await(self.on_event(obj))
        except Exception:
            log.exception("handling Marathon event %r failed; the next resync repairs what it missed", name)


async def _maybe_await(result: Awaitable[None] | None) -> None:
    if inspect.isawaitable(result):
        await result
