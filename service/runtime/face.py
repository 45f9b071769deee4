"""The registrar's HTTP face: listening from the first second (Marathon's health check and /ready
must answer while Marathon, Consul or the lock are still being waited for, and Marathon posts to us
as soon as we subscribe), serving the core once it exists.

Until `serve(core)`, /v1/events checks and counts what it gets and leaves it to the first resync,
and /v1/registrations answers 503 with the reasons of /ready.
"""

from __future__ import annotations

import hmac
import logging
import ssl

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from service.config import Config
from service.intake import EventIntake
from service.metrics import Metrics
from service.redact import redact
from service.runtime.core import Core
from service.web import SAFE_BODIES, Readiness, make_app

log = logging.getLogger("service")


class HttpFace:
    def __init__(self, config: Config, metrics: Metrics, readiness: Readiness, callback_secret: str | None) -> None:
        self._config = config
        self._core: Core | None = None
        self._starting = EventIntake(None, metrics)
        events_path = "/v1/events" if callback_secret is None else f"/v1/events/{callback_secret}"
        app = make_app(intake=self, reconciler=self, metrics=metrics, readiness=readiness, events_path=events_path)
        if callback_secret is not None:
            app.middlewares.append(_wrong_events_path(events_path, metrics))
        app.middlewares.append(_redacting)
        # on stop, requests in flight get a second: Marathon's posts take milliseconds
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)

    def serve(self, core: Core) -> None:
        """From now on events go to the core's intake and /v1/registrations shows its state."""
        self._core = core

    # what make_app asks of its intake and state view
    def accept(self, obj: object) -> str:
        return (self._core.intake if self._core is not None else self._starting).accept(obj)

    def snapshot(self) -> dict[str, object] | None:
        return self._core.state() if self._core is not None else None

    async def start(self) -> None:
        await self._runner.setup()
        server_tls = None
        if self._config.listen_tls_cert and self._config.listen_tls_key:
            server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_tls.load_cert_chain(self._config.listen_tls_cert, self._config.listen_tls_key)
        await web.TCPSite(self._runner, self._config.listen_host, self._config.listen_port,
                          ssl_context=server_tls).start()
        log.info("listening on %s:%d%s", self._config.listen_host, self._config.listen_port,
                 " (HTTPS)" if server_tls else "")

    async def stop(self) -> None:
        await self._runner.cleanup()


def _wrong_events_path(events_path: str, metrics: Metrics) -> Middleware:
    """With --callback-secret-file, a POST to any /v1/events path but ours is someone without the
    secret (or a stale subscription): 404, counted as events_rejected_total{reason="wrong-path"}.
    The path is compared in constant time, so the secret cannot be guessed byte by byte."""
    expected = events_path.encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path == "/v1/events" or path.startswith("/v1/events/"):
            if not hmac.compare_digest(path.encode(), expected):
                metrics.events_rejected.labels("wrong-path").inc()
                return web.json_response({"error": "wrong-path", "message": "no such event endpoint"}, status=404)
        return await handler(request)

    return middleware


@web.middleware
async def _redacting(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer of the HTTP server passes `service.redact`: /ready reasons and /v1/registrations
    carry error texts from Marathon, Docker and Consul, which may quote what we sent them."""
    resp = await handler(request)
    if isinstance(resp, web.Response) and isinstance(resp.body, bytes) and resp.body and resp.body not in SAFE_BODIES:
        text = resp.body.decode("utf-8", errors="replace")
        clean = redact(text)
        if clean != text:
            resp.body = clean.encode()
    return resp
