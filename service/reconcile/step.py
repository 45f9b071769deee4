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

The run never raises: it returns `Done`, `Retry` with the work still left (tasks whose container
is not up yet, agents that could not be read, tasks whose write failed, or all of it when Marathon
could not be read) and the reason, or `Parked` when all that is left hit a REPORT answer (a refusal:
left to the next resync, docs/architecture.md §8). Registrations of a task that must be retried or
that hit a refusal are left as they are: their new truth is not known.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from service.errors import CallError
from service.metrics import Metrics
from service.model import OwnedService, Registration, Task, TaskState
from service.reconcile.diff import in_place
from service.reconcile.ledger import Ledger
from service.reconcile.work import (
    AppWork,
    Done,
    FromAgents,
    FromLedger,
    FromSnapshot,
    Outcome,
    Parked,
    Retry,
    StateSource,
)
from service.reconcile.world import Prefetched, WorldReader
from service.reconcile.writer import ConsulWriter
from service.retry import Stopped

REASON_CHARS = 500


def _no_late_hints(_app_id: str) -> Mapping[str, float]:
    return {}


class AppStep:
    def __init__(self, *, reader: WorldReader, ledger: Ledger, writer: ConsulWriter, metrics: Metrics,
                 late_running: Callable[[str], Mapping[str, float]] = _no_late_hints) -> None:
        """`late_running(app_id)`: the tasks events reported running since this run began (task id
        -> when the event came), still queued for the app's next run (see `_with_late_hints`)."""
        self.reader = reader
        self.ledger = ledger
        self.writer = writer
        self.metrics = metrics
        self.late_running = late_running

    async def run(self, app_id: str, work: AppWork, source: StateSource) -> Outcome:
        try:
            return await self._run(app_id, work, source)
        except CallError as exc:  # Marathon could not be read (or a bug's CallError): the whole work
            if exc.reported:
                return Parked(reason=str(exc)[:REASON_CHARS])
            return Retry(remaining=work, reason=str(exc)[:REASON_CHARS])
        except Stopped:  # the process is stopping: the work is left, not failed
            raise
        except Exception as exc:  # a bug of ours: the whole work is retried, never lost
            return Retry(remaining=work, reason=str(exc)[:REASON_CHARS])

    async def _run(self, app_id: str, work: AppWork, source: StateSource) -> Outcome:
        prefetched: Prefetched = {}
        unreachable: dict[str, CallError] = {}
        owned: dict[str, OwnedService] = {}
        if isinstance(source, FromSnapshot):
            app, tasks, owned = source.snapshot.app, list(source.snapshot.tasks), dict(source.snapshot.owned)
        else:
            prefetched = self.reader.prefetch(work, app_id)
            found = await self.reader.run_spec(app_id)
            app, tasks = found if found is not None else (None, [])
            self.reader.known_hosts.update(t.host for t in tasks)
            if app is None:
                self.reader.known_apps.discard(app_id)
            else:
                self.reader.known_apps.add(app_id)
            work = self._with_late_hints(app_id, work, tasks)
        all_task_ids = {t.id for t in tasks}
        if work.task_ids is not None:
            tasks = [t for t in tasks if t.id in work.task_ids]
        if isinstance(source, FromLedger):
            owned = self.ledger.owned_for(work.task_ids or ())
        elif isinstance(source, FromAgents):
            read, failed = await self.reader.read_agents({t.host for t in tasks} | source.hosts, app_id)
            owned = self.reader.claimed(read, all_task_ids)
            unreachable.update(failed)
        if work.task_ids is not None:
            owned = {k: v for k, v in owned.items() if v.registration.task_id in work.task_ids}
        desired, skips = await self.reader.desired(app, tasks, prefetched=prefetched)
        retry_tasks = {s.task_id for s in skips if s.retry and not s.reported}
        held_tasks = {s.task_id for s in skips if s.reported}
        kept_tasks = {s.task_id for s in skips if s.keep}  # TASK_UNREACHABLE: left as they are, and done
        owned = {k: v for k, v in owned.items()
                 if v.registration.task_id not in retry_tasks | held_tasks | kept_tasks}
        desired = {k: v for k, v in desired.items() if v.task_id not in held_tasks | kept_tasks}
        failed_writes = await self._apply(app_id, desired, owned, work, tasks)
        reasons = [f"task {s.task_id}: {s.reason} {s.detail}".strip() for s in skips if s.retry]
        for task_id, exc in failed_writes.items():
            (held_tasks if exc.reported else retry_tasks).add(task_id)
            reasons.append(f"task {task_id}: {exc}")
        reasons[:0] = [f"agent {h}: {e}" for h, e in unreachable.items()]
        retry_agents = {h for h, e in unreachable.items() if not e.reported}
        if not retry_agents and not retry_tasks:
            if held_tasks or unreachable:  # only refusals are left: the next resync has them
                return Parked(reason="; ".join(reasons)[:REASON_CHARS])
            return Done()
        remaining = AppWork(
            task_ids=set(retry_tasks) if not retry_agents else (None if work.task_ids is None else set(work.task_ids)),
            hosts=retry_agents | work.hosts, received=dict(work.received),
            running_on={t: h for t, h in work.running_on.items() if t in retry_tasks})
        return Retry(remaining=remaining, reason="; ".join(reasons)[:REASON_CHARS])

    def _with_late_hints(self, app_id: str, work: AppWork, tasks: list[Task]) -> AppWork:
        """`work` plus the tasks that events reported running while Marathon was being read, where
        the answer shows them running too.

        Marathon's tasks start a few milliseconds apart and each announces itself: the first event
        starts a run, the rest arrive while it reads Marathon and wait for a second run (another
        read, another lookup) after it. Where this run's answer already shows such a task running,
        writing it now is what that second run would do from its own answer: only Marathon's
        answer decides, the events still only say where to look. Anything else (a task the answer
        does not show running yet, a kill, whole-app work) waits for the next run as before, and
        the next run still happens (for the tasks taken here it compares and writes nothing)."""
        if work.task_ids is None:
            return work
        late = self.late_running(app_id)
        if not late:
            return work
        extra = {t.id: late[t.id] for t in tasks
                 if t.state == TaskState.RUNNING and t.id in late and t.id not in work.task_ids}
        if not extra:
            return work
        return AppWork(task_ids=work.task_ids | extra.keys(), hosts=set(work.hosts),
                       received={**extra, **work.received}, running_on=dict(work.running_on))

    async def _apply(self, app_id: str, desired: dict[str, Registration], owned: dict[str, OwnedService],
                     work: AppWork, tasks: list[Task]) -> dict[str, CallError]:
        """Write the difference: register what is missing or not in place, deregister what Marathon
        no longer asks for (or asks for on another agent), refresh TTL mirrors that differ. Returns
        the failed writes' errors by task id: one task's failure (an agent down, a refusal) never
        stops the others' writes, and only the failed tasks are retried or left to the resync."""
        by_id = {t.id: t for t in tasks}
        jobs: list[tuple[str, Awaitable[None]]] = []
        for sid, want in desired.items():
            have = owned.get(sid)
            task = by_id[want.task_id]
            if have is None or not in_place(have, want):
                jobs.append((want.task_id, self._register(want, work.received.get(want.task_id), task, have)))
            else:
                jobs.append((want.task_id, self.writer.sync_ttl(want, task, have)))
        for sid, have in owned.items():
            if sid not in desired or desired[sid].agent_host != have.registration.agent_host:
                jobs.append((have.registration.task_id, self.writer.deregister(have.registration)))
        failed: dict[str, CallError] = {}
        if jobs:
            results = await asyncio.gather(*(job for _, job in jobs), return_exceptions=True)
            for (task_id, _), result in zip(jobs, results, strict=True):
                if isinstance(result, CallError):
                    failed.setdefault(task_id, result)
                elif isinstance(result, BaseException):
                    raise result  # a bug of ours: run() turns it into a retry of the whole work
        self.ledger.settle_locations(app_id, {r.agent_host for r in desired.values()},
                                     partial=work.task_ids is not None or bool(failed))
        self.metrics.managed.set(len(self.ledger))
        return failed

    async def _register(self, want: Registration, received: float | None, task: Task,
                        had: OwnedService | None) -> None:
        await self.writer.register(want, replacing=had is not None, received=received)
        await self.writer.sync_ttl(want, task, None)
