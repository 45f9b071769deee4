"""The registrar once its cluster identity is known: who writes (the Consul lock, if any), the
reconcile core behind that write gate, the intake of events, and the resyncs.

Built in one go, in that order: the lock's `Leadership` first, so the reconciler is made with its
gate (`may_write`); the lock's callbacks are this object's methods, called only once `run` starts
the lock. One loop runs every full resync (periodic, after a (re)connect of the event stream, and
the one a new writer runs before any event work), so two never overlap.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from service.backoff import Backoff
from service.config import Config
from service.consul.lock import ConsulLockClient
from service.intake import EventIntake
from service.leadership import Leadership, Role
from service.retry import Stop, Stopped
from service.runtime.lock import lock_for
from service.runtime.parts import Outside, build_reconciler
from service.runtime.sources import EventSource
from service.web import Readiness

log = logging.getLogger("service")


def _answer(waiters: list[asyncio.Future[None]], error: Exception | None) -> None:
    for waiter in waiters:
        if waiter.done():
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)


class Core:
    def __init__(self, config: Config, outside: Outside, *, cluster_id: str, readiness: Readiness) -> None:
        self.config = config
        self.cluster_id = cluster_id
        self.metrics = outside.metrics
        self.readiness = readiness
        self.leadership: Leadership | None = None
        self._lock_client: ConsulLockClient | None = None
        lock = lock_for(config, outside, cluster_id=cluster_id, serving=True, on_acquired=self._became_writer,
                        on_lost=self._stopped_writing, on_standby=self._standing_by)
        if lock is not None:
            self.leadership, self._lock_client = lock
        self.parts = build_reconciler(config, outside, cluster_id=cluster_id,
                                      may_write=self.leadership.may_write if self.leadership else None)
        self.reconciler = self.parts.reconciler
        self.intake = EventIntake(self.reconciler, outside.metrics)
        self._resync_now = asyncio.Event()
        self._writer_resyncs: list[asyncio.Future[None]] = []  # new writers waiting for their resync
        self._lock_task: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- starting and stopping
    def start(self) -> None:
        """Workers start; with a lock, paused until this instance is the writer, and not ready
        until it is known who writes (a lone instance is ready once it holds the lock and has
        resynced, so nothing that happens right after /ready turns 200 falls between)."""
        self.reconciler.start()
        if self.leadership is None:
            self.metrics.leader.set(1)
            return
        self.reconciler.pause()
        self.readiness.role = Role.CONTENDING
        self._lock_task = asyncio.create_task(self.leadership.run(), name="lock")

    async def release(self, grace: float) -> None:
        """Give the lock back (release the key, destroy the session) within `grace` seconds: the
        standby takes over while we tidy up. A lock agent that does not answer in time costs the
        next holder the session's TTL, not our exit."""
        if self.leadership is None or self._lock_task is None:
            return
        await self.leadership.stop(grace=grace)
        self._lock_task.cancel()
        await asyncio.gather(self._lock_task, return_exceptions=True)
        assert self._lock_client is not None
        await self._lock_client.close()

    async def close(self) -> None:
        for waiter in self._writer_resyncs:
            waiter.cancel()
        await self.parts.close()

    # ---------------------------------------------------------------- resyncs
    def resync_now(self) -> None:
        self._resync_now.set()

    async def resync_loop(self, source: EventSource, stop: Stop) -> None:
        """Every full resync runs here, until stop: a standby resyncs when it becomes the writer."""
        failures = 0
        try:
            while True:
                await stop.wait_event(self._resync_now, self._next_resync_in(failures))
                self._resync_now.clear()
                waiters, self._writer_resyncs = self._writer_resyncs, []
                error: Exception | None = None
                if self._writing():
                    try:
                        await self._resync_once(source)
                        failures = 0
                    except Stopped:
                        raise
                    except Exception as exc:
                        failures += 1
                        error = exc
                        log.error("resync failed (%d in a row): %s", failures, exc)
                _answer(waiters, error)
        except Stopped:
            return

    async def _resync_once(self, source: EventSource) -> None:
        await source.before_resync()
        drift = await self.reconciler.resync()
        self.readiness.first_resync_done = True
        counts = drift.counts()
        if any(counts.values()) or drift.unreachable:
            log.info("resync repaired %s; unreachable agents: %s", counts, sorted(drift.unreachable))

    def _next_resync_in(self, failures: int) -> float:
        """After a failed resync, try again sooner than the interval: 2 s, 4 s, ... up to it. The
        ceiling, not a jittered delay: one process schedules this, there is no crowd to spread."""
        interval = self.config.resync_interval
        if failures:
            return Backoff(initial=min(2.0, interval), cap=interval).ceiling(failures)
        return interval

    def _writing(self) -> bool:
        return self.leadership is None or self.leadership.may_write()

    # ---------------------------------------------------------------- the lock's callbacks
    async def _became_writer(self) -> None:
        """A new writer trusts nothing it saw as standby: full resync before (with) any event work."""
        self.metrics.leader.set(1)
        self.metrics.lock_acquired.inc()
        self.readiness.role = Role.WRITER
        self.reconciler.resume()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._writer_resyncs.append(done)
        self._resync_now.set()
        await done

    def _standing_by(self) -> None:
        """Another instance holds the lock: this one is a ready standby."""
        if self.readiness.role != Role.WRITER:
            self.readiness.role = Role.STANDBY

    async def _stopped_writing(self, reason: str) -> None:
        self.metrics.leader.set(0)
        self.metrics.lock_lost.inc()
        self.readiness.role = Role.STANDBY
        self.reconciler.pause()

    # ---------------------------------------------------------------- what /v1/registrations shows
    def state(self) -> dict[str, Any]:
        state = self.reconciler.snapshot()
        state["leadership"] = self.leadership_view()
        return state

    def leadership_view(self) -> dict[str, Any]:
        """Who writes."""
        if self.leadership is None:
            return {"role": Role.WRITER.value, "lock": "off", "cluster_id": self.cluster_id}
        lead = self.leadership
        return {"role": lead.role.value, "lock": "none (no sessions)" if lead.unlocked else lead.settings.key,
                "since": lead.since, "holder": lead.holder, "detail": lead.detail, "cluster_id": self.cluster_id}
