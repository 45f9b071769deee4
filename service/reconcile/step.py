"""The per-app step: make Consul hold exactly what Marathon's current view of one app asks for.

One run handles one app's pending work (`AppWork`): the whole app, or only the tasks events named.
Where "what Consul holds" comes from is the caller's choice (`StateSource`), made explicit so the
step has one path whatever the source:

- `FromSnapshot`: a resync's reads of the app, used as they are (no read at all);
- `FromLedger`: Marathon is read, Consul's state is the ledger's (task-level work after the first
  resync: a burst costs no agent reads, only its writes);
- `FromAgents`: Marathon is read, and the agents where the app's tasks are or were.

Marathon is read once per run (`GET /v2/apps/{id}` embeds the tasks); the containers of tasks an
event reported running are looked up while it answers. Only Marathon's answer decides what is
registered. The writes of different tasks run concurrently (bounded by the writer).

The run never raises: it returns `Done`, or `Retry` with the work still left (tasks whose container
is not up yet, agents that could not be read, or all of it when a call failed) and the reason.
Registrations of a task that must be retried are left as they are: their new truth is not known.
"""

from __future__ import annotations

import asyncio

from service.consul_registry import OwnedService
from service.metrics import Metrics
from service.model import Registration, Task
from service.reconcile.diff import in_place
from service.reconcile.ledger import Ledger
from service.reconcile.work import (
    AppWork,
    Done,
    FromAgents,
    FromLedger,
    FromSnapshot,
    Outcome,
    Retry,
    StateSource,
)
from service.reconcile.world import Prefetched, WorldReader
from service.reconcile.writer import ConsulWriter

REASON_CHARS = 500


class AppStep:
    def __init__(self, *, reader: WorldReader, ledger: Ledger, writer: ConsulWriter, metrics: Metrics) -> None:
        self.reader = reader
        self.ledger = ledger
        self.writer = writer
        self.metrics = metrics

    async def run(self, app_id: str, work: AppWork, source: StateSource) -> Outcome:
        try:
            return await self._run(app_id, work, source)
        except Exception as exc:  # any failed call: the whole work is retried, never lost
            return Retry(remaining=work, reason=str(exc)[:REASON_CHARS])

    async def _run(self, app_id: str, work: AppWork, source: StateSource) -> Outcome:
        prefetched: Prefetched = {}
        unreachable: dict[str, str] = {}
        owned: dict[str, OwnedService] = {}
        if isinstance(source, FromSnapshot):
            app, tasks, owned = source.snapshot.app, list(source.snapshot.tasks), dict(source.snapshot.owned)
        else:
            prefetched = self.reader.prefetch(work)
            found = await self.reader.marathon.app_with_tasks(app_id)
            app, tasks = found if found is not None else (None, [])
            self.reader.known_hosts.update(t.host for t in tasks)
        all_task_ids = {t.id for t in tasks}
        if work.task_ids is not None:
            tasks = [t for t in tasks if t.id in work.task_ids]
        if isinstance(source, FromLedger):
            owned = self.ledger.owned_for(work.task_ids or ())
        elif isinstance(source, FromAgents):
            owned, unreachable = await self.reader.read_agents({t.host for t in tasks} | source.hosts, app_id)
            owned = self.reader.claimed(owned, all_task_ids)
        if work.task_ids is not None:
            owned = {k: v for k, v in owned.items() if v.registration.task_id in work.task_ids}
        desired, skips = await self.reader.desired(app, tasks, prefetched=prefetched)
        retry_tasks = {s.task_id for s in skips if s.retry}
        owned = {k: v for k, v in owned.items() if v.registration.task_id not in retry_tasks}
        await self._apply(app_id, desired, owned, work, tasks)
        if not unreachable and not retry_tasks:
            return Done()
        remaining = AppWork(
            task_ids=set(retry_tasks) if not unreachable else (None if work.task_ids is None else set(work.task_ids)),
            hosts=set(unreachable) | work.hosts, received=dict(work.received),
            running_on={t: h for t, h in work.running_on.items() if t in retry_tasks})
        reasons = [f"agent {h}: {e}" for h, e in unreachable.items()]
        reasons += [f"task {s.task_id}: {s.reason} {s.detail}".strip() for s in skips if s.retry]
        return Retry(remaining=remaining, reason="; ".join(reasons)[:REASON_CHARS])

    async def _apply(self, app_id: str, desired: dict[str, Registration], owned: dict[str, OwnedService],
                     work: AppWork, tasks: list[Task]) -> None:
        """Write the difference: register what is missing or not in place, deregister what Marathon
        no longer asks for (or asks for on another agent), refresh TTL mirrors that differ."""
        by_id = {t.id: t for t in tasks}
        jobs = []
        for sid, want in desired.items():
            have = owned.get(sid)
            task = by_id[want.task_id]
            if have is None or not in_place(have, want):
                jobs.append(self._register(want, work.received.get(want.task_id), task, have))
            else:
                jobs.append(self.writer.sync_ttl(want, task, have))
        for sid, have in owned.items():
            if sid not in desired or desired[sid].agent_host != have.registration.agent_host:
                jobs.append(self.writer.deregister(have.registration))
        if jobs:
            results = await asyncio.gather(*jobs, return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]
        self.ledger.settle_locations(app_id, {r.agent_host for r in desired.values()},
                                     partial=work.task_ids is not None)
        self.metrics.managed.set(len(self.ledger))

    async def _register(self, want: Registration, received: float | None, task: Task,
                        had: OwnedService | None) -> None:
        await self.writer.register(want, replacing=had is not None, received=received)
        await self.writer.sync_ttl(want, task, None)
