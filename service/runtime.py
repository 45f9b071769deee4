"""Wiring for `serve` and `sync`: build the clients, attach the event source, run resyncs, stop cleanly.

Start-up order matters to Marathon users: the HTTP server listens before we subscribe (Marathon
posts to us immediately and backs off a subscriber that does not answer), the first resync runs
as soon as the event source is attached (events that happened before are only visible in state),
and a SIGTERM unsubscribes before the process goes (a dead URL left subscribed costs Marathon a
timeout per event).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from service.backoff import Backoff
from service.config import Config
from service.consul_registry import ConsulAgents
from service.docker_lookup import ContainerLookup
from service.intake import EventIntake
from service.marathon.client import MarathonClient
from service.marathon.events import EventError
from service.marathon.sse import EventStream
from service.marathon.subscription import CallbackSubscription
from service.metrics import Metrics
from service.reconcile import Drift, Reconciler, ReconcileSettings
from service.web import Readiness, make_app

log = logging.getLogger("service")

# Start-up loops (transport pick, callback subscription) retry for as long as it takes.
STARTUP_BACKOFF = Backoff(initial=0.5, cap=30.0)

SSE_EVENT_TYPES = (
    "status_update_event", "instance_health_changed_event", "health_status_changed_event", "api_post_event",
    "app_terminated_event", "deployment_info", "deployment_success", "deployment_failed",
    "deployment_step_success", "deployment_step_failure",
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


def build(config: Config) -> Components:
    metrics = Metrics()
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
    marathon = MarathonClient(list(config.marathon), session=session, metrics=metrics)
    lookup = ContainerLookup(config.docker, config.networks, metrics=metrics, overlay_cidrs=config.overlay_cidrs,
                             weave_exec=config.weave_exec_lookup)
    agents = ConsulAgents(config.consul, token=config.consul_token, metrics=metrics)
    settings = ReconcileSettings(naming=config.naming, address_mode=config.address_mode, networks=config.networks,
                                 overlay_cidrs=config.overlay_cidrs,
                                 workers=config.workers, health_checks=config.health_checks,
                                 ttl_floor_seconds=max(180, int(3 * config.resync_interval)))
    reconciler = Reconciler(marathon=marathon, lookup=lookup, agents=agents, metrics=metrics, settings=settings)
    return Components(metrics, session, marathon, lookup, agents, reconciler)


class Service:
    """The running registrar."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.c = build(config)
        self.readiness = Readiness()
        self.intake = EventIntake(self.c.reconciler, self.c.metrics)
        self._resync_now = asyncio.Event()
        self._stopping = asyncio.Event()
        self._stream: EventStream | None = None
        self._subscription: CallbackSubscription | None = None
        self._runner: web.AppRunner | None = None

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
        self._subscription = CallbackSubscription(self.c.marathon, self.config.callback_url, self.c.metrics)
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

    async def _resync_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._resync_now.wait(), self._next_resync_in(failures))
            if self._stopping.is_set():
                return
            self._resync_now.clear()
            try:
                if self._subscription is not None and await self._subscription.ensure():
                    log.warning("callback subscription was gone; re-subscribed %s", self.config.callback_url)
                drift = await self.c.reconciler.resync()
                self.readiness.first_resync_done = True
                failures = 0
                counts = drift.counts()
                if any(counts.values()) or drift.unreachable:
                    log.info("resync repaired %s; unreachable agents: %s", counts, sorted(drift.unreachable))
            except Exception as exc:
                failures += 1
                log.error("resync failed (%d in a row): %s", failures, exc)

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
        app = make_app(intake=self.intake, reconciler=self.c.reconciler, metrics=self.c.metrics,
                       readiness=self.readiness)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.config.listen_host, self.config.listen_port).start()
        log.info("listening on %s:%d", self.config.listen_host, self.config.listen_port)
        self.c.reconciler.start()
        background: list[asyncio.Task[None]] = []
        try:
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
        failures = 0
        while True:
            try:
                transport = await self.c.marathon.event_transport()
                break
            except Exception as exc:
                failures += 1
                delay = STARTUP_BACKOFF.delay(failures)
                self.readiness.source_detail = f"cannot reach Marathon to pick the event transport: {exc}"
                log.warning("%s; retrying in %.1fs", self.readiness.source_detail, delay)
                await asyncio.sleep(delay)
        if transport == "callback" and not self.config.callback_url:
            log.warning("Marathon offers callbacks but no --callback-url is set; using the SSE stream")
            return "sse"
        return transport


async def sync_once(config: Config, *, dry_run: bool) -> Drift:
    """`marathon-consul-registrar sync`: one resync (repairing unless dry_run), then exit."""
    c = build(config)
    c.reconciler.start()
    try:
        drift = await c.reconciler.resync(dry_run=dry_run)
        if not dry_run:
            async with asyncio.timeout(120):
                await c.reconciler.wait_idle()
        return drift
    finally:
        await c.close()
