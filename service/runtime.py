"""Wiring for `serve` and `sync`: build the clients, attach the event source, run resyncs, stop cleanly.

Start-up order matters to Marathon users: the HTTP server listens before we subscribe (Marathon
posts to us immediately and backs off a subscriber that does not answer), the cluster identity is
known before anything is read back from Consul (so another cluster's registrations are never taken
for ours), the first resync runs as soon as this instance is the writer and the event source is
attached (events that happened before are only visible in state), and a SIGTERM releases the lock
and unsubscribes before the process goes (a dead URL left subscribed costs Marathon a timeout per
event). With several instances only the holder of the Consul lock works the queue and resyncs;
standbys keep their event source attached and write nothing (`service.leadership`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from service import version
from service.backoff import Backoff
from service.config import Config
from service.connect import ssl_context
from service.consul.agents import ConsulAgents
from service.consul.lock import ConsulLockClient
from service.docker.lookup import ContainerLookup
from service.intake import EventIntake
from service.leadership import Leadership, LockSettings, Role, alive_check, holder_value, lock_key
from service.marathon.client import MarathonClient
from service.marathon.events import EventError
from service.marathon.sse import EventStream
from service.marathon.subscription import CallbackSubscription
from service.metrics import Metrics
from service.reconcile import Drift, Reconciler, ReconcileSettings
from service.reconcile.settings import ttl_floor_for
from service.redact import redact, register
from service.tokens import TokenFile, TokenSource, read_token, static
from service.web import Readiness, make_app

log = logging.getLogger("service")
T = TypeVar("T")

# Start-up loops (transport pick, callback subscription) retry for as long as it takes.
STARTUP_BACKOFF = Backoff(initial=0.5, cap=30.0)

SSE_EVENT_TYPES = (
    "status_update_event", "instance_health_changed_event", "health_status_changed_event", "api_post_event",
    "app_terminated_event", "deployment_info", "deployment_success", "deployment_failed",
    "deployment_step_success", "deployment_step_failure",
    # the expunge of an unreachable instance comes only as this (issue 19), and pods' definitions
    "instance_changed_event", "pod_created_event", "pod_updated_event", "pod_deleted_event",
)


@dataclass
class Components:
    metrics: Metrics
    session: aiohttp.ClientSession
    marathon: MarathonClient
    lookup: ContainerLookup
    agents: ConsulAgents
    reconciler: Reconciler

    async def close(self) -> None:
        await self.reconciler.stop()
        await self.lookup.close()
        await self.agents.close()
        await self.session.close()


def consul_token(config: Config) -> TokenSource:
    """The Consul token as of now: from --consul-token-file (re-read when it changes) if given, as
    Consul's own API client prefers the file, else the fixed --consul-token."""
    if config.consul_token_file:
        return TokenFile(config.consul_token_file, what="consul token")
    return static(config.consul_token)


def build(config: Config, consul_token_source: TokenSource | None = None) -> Components:
    metrics = Metrics()
    connector = aiohttp.TCPConnector(ssl=ssl_context(config.marathon_tls, "marathon")) if config.marathon_tls else None
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5), connector=connector)
    marathon_token = None
    if config.marathon_token_file:
        marathon_token = TokenFile(config.marathon_token_file, what="marathon token")
    marathon = MarathonClient(list(config.marathon), session=session, metrics=metrics, token=marathon_token)
    lookup = ContainerLookup(config.docker, config.networks, metrics=metrics, overlay_cidrs=config.overlay_cidrs,
                             weave_exec=config.weave_exec_lookup, tls=config.docker_tls)
    agents = ConsulAgents(config.consul, token=consul_token_source or consul_token(config), metrics=metrics,
                          tls=config.consul_tls)
    settings = ReconcileSettings(naming=config.naming, name_override=config.allow_name_override,
                                 address_mode=config.address_mode, networks=config.networks,
                                 overlay_cidrs=config.overlay_cidrs,
                                 workers=config.workers, health_checks=config.health_checks,
                                 ttl_floor_seconds=ttl_floor_for(config.resync_interval))
    reconciler = Reconciler(marathon=marathon, lookup=lookup, agents=agents, metrics=metrics, settings=settings)
    return Components(metrics, session, marathon, lookup, agents, reconciler)


class Service:
    """The running registrar."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._consul_token = consul_token(config)  # one source: the lock and the agents rotate together
        self.c = build(config, self._consul_token)
        self._callback_secret = read_token(config.callback_secret_file) if config.callback_secret_file else None
        register([self._callback_secret])
        self.readiness = Readiness()
        self.intake = EventIntake(self.c.reconciler, self.c.metrics)
        self._resync_now = asyncio.Event()
        self._stopping = asyncio.Event()
        self._stream: EventStream | None = None
        self._subscription: CallbackSubscription | None = None
        self._runner: web.AppRunner | None = None
        self.leadership: Leadership | None = None
        self.cluster_id: str | None = None
        self._resync_lock = asyncio.Lock()  # the periodic resync and a new writer's never overlap

    async def _on_sse_event(self, obj: dict[str, Any]) -> None:
        try:
            self.intake.accept(obj)
        except EventError as exc:
            log.warning("event stream: rejected event: %s", exc)

    async def _on_sse_connect(self) -> None:
        self.readiness.source_attached = True
        self._resync_now.set()  # no replay on the stream: whatever happened meanwhile is only in state

    async def _attach_callbacks(self) -> None:
        assert self.config.callback_url is not None
        self._subscription = CallbackSubscription(self.c.marathon, self._callback_url(), self.c.metrics)
        failures = 0
        while not self._stopping.is_set():
            try:
                await self._subscription.ensure()
                self.readiness.source_attached = True
                return
            except Exception as exc:
                failures += 1
                delay = STARTUP_BACKOFF.delay(failures)
                self.readiness.source_detail = f"cannot subscribe {self.config.callback_url}: {exc}"
                log.warning("%s; retrying in %.1fs", self.readiness.source_detail, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)

    def _callback_url(self) -> str:
        """The URL Marathon posts to: --callback-url, plus /<secret> with --callback-secret-file."""
        assert self.config.callback_url is not None
        if self._callback_secret is None:
            return self.config.callback_url
        return f"{self.config.callback_url.rstrip('/')}/{self._callback_secret}"

    def _writer(self) -> bool:
        return self.leadership is None or self.leadership.may_write()

    async def _resync_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._resync_now.wait(), self._next_resync_in(failures))
            if self._stopping.is_set():
                return
            self._resync_now.clear()
            if not self._writer():
                continue  # a standby resyncs when it becomes the writer
            try:
                await self._resync_once()
                failures = 0
            except Exception as exc:
                failures += 1
                log.error("resync failed (%d in a row): %s", failures, exc)

    async def _resync_once(self) -> None:
        async with self._resync_lock:
            if self._subscription is not None and await self._subscription.ensure():
                log.warning("callback subscription was gone; re-subscribed %s", self.config.callback_url)
            drift = await self.c.reconciler.resync()
            self.readiness.first_resync_done = True
            counts = drift.counts()
            if any(counts.values()) or drift.unreachable:
                log.info("resync repaired %s; unreachable agents: %s", counts, sorted(drift.unreachable))

    # ---------------------------------------------------------------- the lock
    async def _became_writer(self) -> None:
        """A new writer trusts nothing it saw as standby: full resync before (with) any event work."""
        self.c.metrics.leader.set(1)
        self.c.metrics.lock_acquired.inc()
        self.readiness.role = Role.WRITER
        self.c.reconciler.resume()
        await self._resync_once()

    def _standing_by(self) -> None:
        """Another instance holds the lock: this one is a ready standby."""
        if self.readiness.role != Role.WRITER:
            self.readiness.role = Role.STANDBY

    async def _stopped_writing(self, reason: str) -> None:
        self.c.metrics.leader.set(0)
        self.c.metrics.lock_lost.inc()
        self.readiness.role = Role.STANDBY
        self.c.reconciler.pause()

    def _start_lock(self, background: list[asyncio.Task[None]]) -> None:
        if self.config.lock == "off":
            self.c.metrics.leader.set(1)
            return
        assert self.cluster_id is not None
        alive = None
        if self.config.lock_check_interval > 0:  # the session is also bound to a check of our /health
            alive = alive_check(cluster_id=self.cluster_id, listen_host=self.config.listen_host,
                                listen_port=self.config.listen_port, https=bool(self.config.listen_tls_cert),
                                interval_seconds=self.config.lock_check_interval, host=os.environ.get("HOST"))
        settings = LockSettings(key=lock_key(self.cluster_id), ttl_seconds=self.config.lock_ttl,
                                lock_delay_seconds=self.config.lock_delay, alive=alive)
        self._lock_client = ConsulLockClient(self.config.lock_agent, token=self._consul_token,
                                             wait_seconds=settings.watch_wait_seconds, tls=self.config.consul_tls,
                                             metrics=self.c.metrics)
        value = holder_value(host=os.environ.get("HOST") or socket.gethostname(), port=self.config.listen_port,
                             version=version())
        self.leadership = Leadership(self._lock_client, settings, value=value, on_acquired=self._became_writer,
                                     on_lost=self._stopped_writing, optional=self.config.lock == "auto",
                                     on_standby=self._standing_by)
        self.c.reconciler.writer.may_write = self.leadership.may_write
        self.c.reconciler.pause()
        # not ready until it is known who writes: a lone instance is ready once it holds the lock
        # and has resynced, so nothing that happens right after /ready turns 200 falls between
        self.readiness.role = "contending"
        background.append(asyncio.create_task(self.leadership.run(), name="lock"))

    def leadership_view(self) -> dict[str, Any]:
        """What /v1/registrations says about who writes."""
        if self.leadership is None:
            return {"role": Role.WRITER.value, "lock": "off", "cluster_id": self.cluster_id}
        lead = self.leadership
        return {"role": lead.role.value, "lock": "none (no sessions)" if lead.unlocked else lead.settings.key,
                "since": lead.since, "holder": lead.holder, "detail": lead.detail, "cluster_id": self.cluster_id}

    async def _identify(self) -> str:
        """This cluster's identity: --cluster-id, else Marathon's frameworkId (asked until it answers)."""
        cluster_id = self.config.cluster_id
        if cluster_id is None:
            cluster_id = await self._until_marathon_answers("cannot read Marathon's frameworkId from /v2/info",
                                                            self.c.marathon.framework_id)
        log.info("cluster identity: %s", cluster_id)
        self.c.reconciler.identify(cluster_id)
        return cluster_id

    async def _until_marathon_answers(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Start-up reads of Marathon retry for as long as it takes, saying why in /ready."""
        failures = 0
        while True:
            try:
                return await call()
            except Exception as exc:
                failures += 1
                delay = STARTUP_BACKOFF.delay(failures)
                self.readiness.source_detail = f"{what}: {exc}"
                log.warning("%s; retrying in %.1fs", self.readiness.source_detail, delay)
                await asyncio.sleep(delay)

    def _next_resync_in(self, failures: int) -> float:
        """After a failed resync, try again sooner than the interval: 2 s, 4 s, ... up to it. The
        ceiling, not a jittered delay: one process schedules this, there is no crowd to spread."""
        if failures:
            interval = self.config.resync_interval
            return Backoff(initial=min(2.0, interval), cap=interval).ceiling(failures)
        return self.config.resync_interval

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        events_path = "/v1/events" if self._callback_secret is None else f"/v1/events/{self._callback_secret}"
        app = make_app(intake=self.intake, reconciler=self.c.reconciler, metrics=self.c.metrics,
                       readiness=self.readiness, extra_state=lambda: {"leadership": self.leadership_view()},
                       events_path=events_path)
        if self._callback_secret is not None:
            app.middlewares.append(_wrong_events_path(events_path, self.c.metrics))
        app.middlewares.append(_redacting)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        server_tls = None
        if self.config.listen_tls_cert and self.config.listen_tls_key:
            server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_tls.load_cert_chain(self.config.listen_tls_cert, self.config.listen_tls_key)
        await web.TCPSite(self._runner, self.config.listen_host, self.config.listen_port,
                          ssl_context=server_tls).start()
        log.info("listening on %s:%d%s", self.config.listen_host, self.config.listen_port,
                 " (HTTPS)" if server_tls else "")
        self.c.reconciler.start()
        background: list[asyncio.Task[None]] = []
        try:
            self.cluster_id = await self._identify()
            self._start_lock(background)
            transport = await self._transport()
            log.info("event transport: %s", transport)
            if transport == "callback":
                await self._attach_callbacks()
                self._resync_now.set()
            else:
                self._stream = EventStream(self.c.marathon, session=self.c.session, metrics=self.c.metrics,
                                           on_event=self._on_sse_event, on_connect=self._on_sse_connect,
                                           event_types=SSE_EVENT_TYPES)
                background.append(asyncio.create_task(self._stream.run(), name="event-stream"))
            background.append(asyncio.create_task(self._resync_loop(), name="resync"))
            await self._stopping.wait()
        finally:
            log.info("stopping")
            self._stopping.set()
            if self.leadership is not None:  # release first: the standby takes over while we tidy up
                await self.leadership.stop()
                await self._lock_client.close()
            if self._stream is not None:
                self._stream.stop()
            if self._subscription is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._subscription.remove(), 5.0)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self._runner.cleanup()
            await self.c.close()

    async def _transport(self) -> str:
        if self.config.events != "auto":
            return self.config.events
        transport = await self._until_marathon_answers("cannot reach Marathon to pick the event transport",
                                                       self.c.marathon.event_transport)
        if transport == "callback" and not self.config.callback_url:
            log.warning("Marathon offers callbacks but no --callback-url is set; using the SSE stream")
            return "sse"
        return transport


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
    if isinstance(resp, web.Response) and isinstance(resp.body, bytes) and resp.body:
        text = resp.body.decode("utf-8", errors="replace")
        clean = redact(text)
        if clean != text:
            resp.body = clean.encode()
    return resp


async def sync_once(config: Config, *, dry_run: bool) -> Drift:
    """`marathon-consul-registrar sync`: one resync (repairing unless dry_run), then exit."""
    c = build(config)
    c.reconciler.start()
    try:
        # never take another cluster's registrations for ours, in a one-off sync least of all
        c.reconciler.identify(config.cluster_id or await c.marathon.framework_id())
        drift = await c.reconciler.resync(dry_run=dry_run)
        if not dry_run:
            async with asyncio.timeout(120):
                await c.reconciler.wait_idle()
        return drift
    finally:
        await c.close()
