"""The registrar's HTTP face: Marathon's callback endpoint plus health, readiness, metrics and state.

The callback handler only parses, validates and queues (docs/architecture.md §6.1): Marathon ≤ 1.4 puts a
subscriber that answers slowly or with non-2xx into back-off and drops its events meanwhile, so
the handler must never wait on Consul or Docker. Marathon posts JSON with `application/json`, but
1.3.10+ sends `text/plain`; the body is parsed as JSON whatever the Content-Type says.

The same back-off makes a 5xx the worst answer a hostile or broken body can get: the endpoint is
unauthenticated, so anyone who can reach it could otherwise make Marathon drop our events. Every
way a body can be wrong (size, Content-Encoding, UTF-8, JSON, nesting, number of values, event shape) therefore ends
as a 4xx whose `error` is one of `events.REASONS`, counted in `events_rejected_total{reason}`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from service.leadership import Role
from service.marathon.events import EventError, decode_event_body
from service.metrics import Metrics

MAX_EVENT_BYTES = 4 * 1024 * 1024  # a heavy 1.4 deployment_info carries whole root groups


class Intake(Protocol):
    def accept(self, obj: object) -> str:
        """"queued" or "ignored"; raises EventError for a body that is no event."""
        ...


class StateView(Protocol):
    def snapshot(self) -> dict[str, object] | None:
        """What /v1/registrations shows; None while the registrar is still starting."""
        ...


@dataclass
class Readiness:
    """Why the registrar is not ready yet (README "HTTP endpoints": event source attached, first resync done)."""

    source_attached: bool = False
    first_resync_done: bool = False
    source_detail: str = "event source not attached yet"
    notes: list[str] = field(default_factory=list)
    role: Role | None = None  # with a lock: CONTENDING until known, then WRITER / STANDBY; None without

    def reasons(self) -> list[str]:
        """A standby is ready once its event source is attached: it resyncs when it becomes the
        writer, and Marathon's rolling upgrade must not wait for a lock another instance holds."""
        out = []
        if not self.source_attached:
            out.append(self.source_detail)
        if self.role == Role.CONTENDING:
            out.append("not known yet which instance writes (contending for the Consul lock)")
        elif not self.first_resync_done and self.role != Role.STANDBY:
            out.append("first resync not finished yet")
        return out


class _MalformedRequestsAreWarnings(logging.Filter):
    """aiohttp answers a request it cannot parse (bad headers, a Content-Encoding it has no codec
    for, such as `br` without Brotli) with a 400 itself, before any handler, and logs it at ERROR
    with a traceback. On an unauthenticated endpoint that is a log flood anyone can trigger, and
    not our error: it becomes one WARNING line naming the client and the problem."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500:
            record.msg, record.args = "malformed HTTP request: %s (answered %d)", (exc.message, exc.code)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


_QUIET = _MalformedRequestsAreWarnings()


def _answer(status: int, outcome: str) -> Callable[[], web.Response]:
    """The answer to an accepted event, rendered once: one is sent per event (a burst sends
    thousands a second), and `json_response` encoded the same two bodies every time. Its body is
    one of `SAFE_BODIES`, which the redacting middleware passes as they are."""
    body = json.dumps({"status": outcome}).encode()
    SAFE_BODIES.add(body)
    return lambda: web.Response(body=body, status=status, content_type="application/json", charset="utf-8")


SAFE_BODIES: set[bytes] = set()  # bodies of our own making that quote nothing from outside
_QUEUED = _answer(202, "queued")
_IGNORED = _answer(200, "ignored")


def _error(status: int, reason: str, message: str) -> web.Response:
    return web.json_response({"error": reason, "message": message}, status=status)


def make_app(*, intake: Intake, reconciler: StateView, metrics: Metrics, readiness: Readiness,
             max_event_bytes: int = MAX_EVENT_BYTES,
             extra_state: Callable[[], dict[str, Any]] | None = None,
             events_path: str = "/v1/events") -> web.Application:
    async def events(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > max_event_bytes:
            metrics.events_rejected.labels("too-large").inc()
            return _error(413, "too-large", f"event body of {request.content_length} bytes exceeds "
                                            f"the limit of {max_event_bytes} bytes")
        body = bytearray()
        try:
            # The limit counts decoded bytes: aiohttp inflates a gzip/deflate body as it arrives.
            async for chunk in request.content.iter_any():
                body += chunk
                if len(body) > max_event_bytes:
                    metrics.events_rejected.labels("too-large").inc()
                    return _error(413, "too-large", f"event body exceeds the limit of {max_event_bytes} bytes")
        except web.RequestPayloadError as exc:  # a Content-Encoding that does not decode, a cut-off body
            metrics.events_rejected.labels("bad-encoding").inc()
            # The rest of this body cannot be read either: end it here, or aiohttp's lingering read
            # after the response re-raises the error and logs it as an unhandled exception. The
            # connection is in an unknown state, so it is not kept alive.
            request.content.feed_eof()
            resp = _error(400, "bad-encoding", f"body cannot be read: {exc}")
            resp.force_close()
            return resp
        try:
            obj = decode_event_body(body)
        except EventError as exc:
            metrics.events_rejected.labels(exc.reason).inc()
            return _error(400, exc.reason, str(exc))
        del body  # a body of up to max_event_bytes need not live as long as the event it became
        try:
            outcome = intake.accept(obj)
        except EventError as exc:  # intake counted it
            return _error(400, exc.reason, str(exc))
        return _QUEUED() if outcome == "queued" else _IGNORED()

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(_: web.Request) -> web.Response:
        reasons = readiness.reasons()
        if reasons:
            return web.json_response({"ready": False, "reasons": reasons, "role": readiness.role}, status=503)
        return web.json_response({"ready": True, "role": readiness.role})

    async def metrics_view(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def registrations(_: web.Request) -> web.Response:
        state = reconciler.snapshot()
        if state is None:
            return web.json_response({"error": "starting", "reasons": readiness.reasons()}, status=503)
        if extra_state is not None:
            state.update(extra_state())
        return web.json_response(state)

    logging.getLogger("aiohttp.server").addFilter(_QUIET)  # idempotent: the same filter object
    app = web.Application(client_max_size=max_event_bytes + 1)
    app.router.add_post(events_path, events)  # /v1/events/<secret> with --callback-secret-file
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/v1/registrations", registrations)
    return app
