"""Every Consul write the reconciler makes, through one small object.

Register, deregister and TTL updates all pass here, for three reasons: writes share one bound on
concurrency (`write_concurrency`: a 5,000-task burst must not open 5,000 connections to an agent),
each successful write is recorded in the `Ledger` at once (so the ledger never lags our own
writes), and the leadership gate sits in exactly this one place: only the holder of the Consul
lock writes, and a holder that lost it stops before its next write (`service.leadership`: the gate
also shuts when the lock's lease runs out, so a paused process that resumes writes nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator

from service.clients import ConsulAgentDirectory
from service.desired import ttl_check_statuses
from service.errors import CallError
from service.metrics import Metrics
from service.model import OwnedService, Registration, Task
from service.reconcile.ledger import Ledger
from service.retry import ATTEMPT_GATE


class NotWriter(CallError):
    """This instance does not hold the Consul lock (any more): the write was not made. A RETRY (the
    default verdict): a standby's queue is cleared anyway, and a writer again resyncs first."""


def _always() -> bool:
    return True


class ConsulWriter:
    def __init__(self, *, agents: ConsulAgentDirectory, ledger: Ledger, metrics: Metrics, concurrency: int,
                 may_write: Callable[[], bool] | None = None) -> None:
        self._agents = agents
        self._ledger = ledger
        self._metrics = metrics
        self._slots = asyncio.Semaphore(concurrency)
        self._may_write = may_write or _always  # asked right before every write, after waiting for a slot

    def _gate(self) -> None:
        if not self._may_write():
            self._metrics.writes_refused.inc()
            raise NotWriter("not the writer: this instance does not hold the Consul lock")

    @contextlib.contextmanager
    def _gated(self) -> Iterator[None]:
        """The gate before every attempt of the call, retries too (after their back-off): a lease
        that ran out meanwhile stops the retry from being sent (`NotWriter`, as at the first)."""
        token = ATTEMPT_GATE.set(self._gate)
        try:
            yield
        finally:
            ATTEMPT_GATE.reset(token)

    async def register(self, reg: Registration, *, replacing: bool, received: float | None) -> None:
        """Write `reg` (replacing its checks); `received` is when the event that caused it came in."""
        async with self._slots:
            self._gate()
            try:
                with self._gated():
                    await self._agents.agent(reg.agent_host).register(reg)
            except NotWriter:
                raise
            except CallError:
                self._metrics.registrations.labels("error").inc()
                raise
        self._metrics.labelled(self._metrics.registrations, "updated" if replacing else "created").inc()
        if received is not None:
            self._metrics.event_to_registration.observe(time.monotonic() - received)
        self._ledger.remember(reg)

    async def deregister(self, reg: Registration) -> None:
        async with self._slots:
            self._gate()
            try:
                with self._gated():
                    await self._agents.agent(reg.agent_host).deregister(reg.service_id)
            except NotWriter:
                raise
            except CallError:
                self._metrics.deregistrations.labels("error").inc()
                raise
        self._metrics.labelled(self._metrics.deregistrations, "ok").inc()
        self._ledger.forget(reg)

    async def set_ttl(self, reg: Registration, check_id: str, status: str) -> None:
        """Set a mirrored TTL check to Marathon's verdict (`passing` or `critical`)."""
        output = f"Marathon reports this health check {'alive' if status == 'passing' else 'failing'}"
        async with self._slots:
            self._gate()
            try:
                with self._gated():
                    await self._agents.agent(reg.agent_host).set_ttl(check_id, status, output)
            except NotWriter:
                raise
            except CallError as exc:
                if exc.cause == "gone":  # the check, so the registration, was removed behind our back:
                    self._ledger.forget(reg)  # the task's retry compares with a ledger without it
                raise
        self._ledger.set_ttl(check_id, status)

    async def sync_ttl(self, reg: Registration, task: Task, have: OwnedService | None, *,
                       refresh: bool = False) -> None:
        """Checks Consul cannot run (Marathon COMMAND checks, or all with --health-checks marathon|both)
        mirror Marathon's verdict as TTL checks. Pushed when it differs from the agent's (`have`;
        None: just registered, state unknown), and on `refresh` (every resync) so that the TTL does
        not run out while Marathon's verdict stands."""
        self._ledger.remember(reg)
        for check_id, want in ttl_check_statuses(reg, task):
            if not refresh and have is not None and have.check_status.get(check_id) == want:
                continue
            await self.set_ttl(reg, check_id, want)
