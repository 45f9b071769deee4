"""The reconciler's face: events in as hints, workers draining the queue, resyncs, a view of state.

The concurrency model is docs/architecture.md §3: hints for an app coalesce in the keyed
`WorkQueue`, one worker per app at a time, failed runs retried by the policy and then left to the
resync, refusals (`Parked`) left to it at once (§8). This class only wires the parts together and
chooses, per run, where the step reads Consul's state from (`_source`); the four jobs live apart:
`workqueue` (the queue), `step` (one app), `resync` (read -> diff -> schedule) and `ledger` (what
we own). Hints for apps Marathon is not known to have are held to a read budget (`budget`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from service.clients import ConsulAgentDirectory, ContainerSource, MarathonApps
from service.heap import release_free_memory
from service.hints import POD_EVENTS, AppEvent, HealthEvent, InstanceEvent, TaskEvent
from service.metrics import Metrics
from service.model import TaskState
from service.reconcile.budget import UnlistedReads
from service.reconcile.diff import Drift
from service.reconcile.ledger import Ledger
from service.reconcile.resync import Resync
from service.reconcile.settings import ReconcileSettings
from service.reconcile.step import AppStep
from service.reconcile.work import (
    AppWork,
    Done,
    FromAgents,
    FromLedger,
    FromSnapshot,
    Parked,
    Repair,
    StateSource,
    merge_work,
)
from service.reconcile.workqueue import Clock, QueueHooks, ShutDown, WorkQueue
from service.reconcile.world import WorldReader
from service.reconcile.writer import ConsulWriter

log = logging.getLogger(__name__)

NOT_YET_RUNNING = frozenset({TaskState.STAGING, TaskState.STARTING})
# Instance conditions after which none of its tasks runs (Marathon's `Condition`, terminal ones):
# `Killed` is also how Marathon announces the expunge of an unreachable instance, with no
# status_update_event (reference/marathon-ucr-pods.md §3.3), so it must remove at once.
TERMINAL_CONDITIONS = frozenset({"Killed", "Gone", "Dropped", "Unknown", "Failed", "Finished", "Error"})
# A deployment's start and steps change nothing the registrar reads that the tasks' own status
# updates (which carry the new app version) and the deployment's end do not also announce.
DEPLOYMENT_PROGRESS = frozenset({"deployment_info", "deployment_step_success", "deployment_step_failure"})


class Reconciler:
    def __init__(self, *, marathon: MarathonApps, lookup: ContainerSource, agents: ConsulAgentDirectory,
                 metrics: Metrics, settings: ReconcileSettings | None = None, clock: Clock | None = None,
                 may_write: Callable[[], bool] | None = None) -> None:
        """`settings.cluster_id` is this Marathon cluster's identity, known before the reconciler is
        built; `may_write` is the leadership's write gate (None: a single instance, always writing)."""
        self.settings = settings or ReconcileSettings()
        self.agents = agents
        self.metrics = metrics
        self.ledger = Ledger()
        reader = WorldReader(marathon=marathon, lookup=lookup, agents=agents, metrics=metrics, settings=self.settings)
        self.reader = reader
        self.writer = writer = ConsulWriter(agents=agents, ledger=self.ledger, metrics=metrics,
                                            concurrency=self.settings.write_concurrency, may_write=may_write)
        self.step = AppStep(reader=reader, ledger=self.ledger, writer=writer, metrics=metrics,
                            late_running=self._late_running)
        self._resync = Resync(reader=reader, ledger=self.ledger, writer=writer, agents=agents, metrics=metrics,
                              schedule=self._schedule_repair)
        self.queue: WorkQueue[str, AppWork] = WorkQueue(
            merge=merge_work, retry_policy=self.settings.retry_policy, clock=clock,
            hooks=QueueHooks(depth=metrics.queue_depth.set, in_flight=metrics.in_flight.set))
        self._workers: list[asyncio.Task[None]] = []
        self._failing: dict[str, str] = {}  # app id -> last error, while retrying
        self._touched_at: dict[str, float] = {}  # app id -> when work for it was last hinted, begun or ended
        self._unlisted = UnlistedReads(limit=self.settings.unlisted_reads_limit,
                                       interval=self.settings.unlisted_reads_interval,
                                       on_skip=metrics.unlisted_reads_skipped.inc,
                                       clock=clock.now if clock is not None else time.monotonic)
        # A standby (not holding the Consul lock) takes no work: whatever happens meanwhile is
        # re-derived by the full resync it runs when it becomes the writer (docs/architecture.md).
        self.paused = False
        # the ledger holds a resync's read plus our writes since; not after a spell as standby
        self._ledger_fresh = False

    # ---------------------------------------------------------------- whether we write
    def pause(self) -> None:
        """Stop taking work (we are not the writer): queued and delayed work is dropped; a run in
        progress finishes, its writes refused by the writer's gate."""
        self.paused = True
        self._ledger_fresh = False  # others wrote meanwhile: task work reads the agents until a resync
        for work in self.queue.clear():
            if work.repair is not None:
                work.repair.finish(False)
        self._failing.clear()

    def resume(self) -> None:
        self.paused = False

    # ---------------------------------------------------------------- intake
    def hint_task(self, event: TaskEvent, received_at: float | None = None) -> None:
        if event.state in NOT_YET_RUNNING or event.state == TaskState.UNREACHABLE:
            # A task id is never reused and reaches Consul only once running: before that there is
            # nothing to register and nothing of it to remove, so the read would be wasted (2 of
            # the 5 status updates in a task's life). An unreachable task keeps what it holds, so
            # its read would change nothing either.
            return
        now = received_at if received_at is not None else time.monotonic()
        # The event's host is only a hint of where to look, taken only for a host Marathon named
        # before: a forged event must not send the registrar to a host of the sender's choosing.
        # (Marathon's answer to the step's read names the task's real host either way.) Until
        # Marathon has named any host (a cluster with no task yet) every hint is taken: the
        # lookups it starts while Marathon answers are what keeps a first deployment's burst fast.
        known = self.reader.known_hosts
        host = event.host if not known or event.host in known else ""
        if event.pod_instance:
            # a pod's registrations are per instance, and no Docker engine knows its containers
            if self._enqueue(event.app_id, AppWork(task_ids={event.pod_instance}, hosts={host} if host else set(),
                                                   received={event.pod_instance: now})):
                self.reader.pods.add(event.app_id)
            return
        running_on = {event.task_id: host} if host and event.state == TaskState.RUNNING else {}
        self._enqueue(event.app_id, AppWork(task_ids={event.task_id}, hosts={host} if host else set(),
                                            received={event.task_id: now}, running_on=running_on))

    def hint_instance(self, event: InstanceEvent, received_at: float | None = None) -> None:
        """A terminal instance condition removes the instance's registrations at once; the others
        (Running, Unreachable, ...) come with a status_update_event or change nothing we hold."""
        if event.condition not in TERMINAL_CONDITIONS:
            return
        now = received_at if received_at is not None else time.monotonic()
        task_ids = self.ledger.tasks_of_instance(event.instance_id)
        if event.app_id in self.reader.pods:
            task_ids.add(event.instance_id)
        if task_ids:
            self._enqueue(event.app_id, AppWork(task_ids=task_ids, received=dict.fromkeys(task_ids, now)))
        elif not self._ledger_fresh:  # nothing known of it, and the ledger may not know: read it all
            self.hint_app(event.app_id)

    def hint_app(self, app_id: str) -> bool:
        return self._enqueue(app_id, AppWork.whole_app())

    def hint(self, event: TaskEvent | AppEvent | HealthEvent | InstanceEvent,
             received_at: float | None = None) -> None:
        if isinstance(event, TaskEvent):
            self.hint_task(event, received_at)
        elif isinstance(event, AppEvent):
            if event.event_type in DEPLOYMENT_PROGRESS:
                return
            for app_id in event.app_ids:
                if self.hint_app(app_id) and event.event_type in POD_EVENTS:
                    self.reader.pods.add(app_id)  # only what was admitted: a forger's ids are not kept
        elif isinstance(event, InstanceEvent):
            self.hint_instance(event, received_at)
        elif isinstance(event, HealthEvent):
            self.hint_app(event.app_id)

    def _enqueue(self, app_id: str, work: AppWork) -> bool:
        """Queue `work` for `app_id`; False when it was not (paused, or over the unlisted-reads budget)."""
        if self.paused:
            return False
        if app_id not in self.reader.known_apps and not self._unlisted.admit(app_id):
            return False  # over the budget for apps Marathon is not known to have (forged events?)
        self._touched_at[app_id] = time.monotonic()
        self.queue.add(app_id, work)
        return True

    def _late_running(self, app_id: str) -> dict[str, float]:
        """Tasks events reported running that wait for the app's next run (see AppStep._with_late_hints)."""
        work = self.queue.peek(app_id)
        if work is None or work.task_ids is None:
            return {}
        now = time.monotonic()
        return {tid: work.received.get(tid, now) for tid in work.running_on}

    def _schedule_repair(self, app_id: str, repair: Repair) -> None:
        if self.queue.is_shut_down or self.paused:
            repair.finish(False)
            return
        self.queue.add(app_id, AppWork.whole_app(repair))

    # ---------------------------------------------------------------- workers
    def start(self) -> None:
        for i in range(self.settings.workers):
            self._workers.append(asyncio.create_task(self._worker(), name=f"reconcile-worker-{i}"))

    async def stop(self) -> None:
        for work in self.queue.shutdown():
            if work.repair is not None:
                work.repair.finish(False)
        for w in self._workers:
            w.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()

    async def wait_idle(self) -> None:
        """Wait until no work is queued, running or waiting for a retry (tests, `sync`, bench)."""
        await self.queue.wait_idle()

    async def _worker(self) -> None:
        while True:
            try:
                app_id, work = await self.queue.get()
            except ShutDown:
                return
            try:
                await self._process(app_id, work)
            finally:
                self.queue.done(app_id)

    async def _process(self, app_id: str, work: AppWork) -> None:
        repair, work.repair = work.repair, None
        source = self._source(app_id, work, repair)
        self._touched_at[app_id] = time.monotonic()
        try:
            outcome = await self.step.run(app_id, work, source)
        finally:
            self._touched_at[app_id] = time.monotonic()
        if repair is not None:
            repair.finish(isinstance(outcome, Done))
        if isinstance(outcome, Done):
            self._failing.pop(app_id, None)
            self.queue.forget(app_id)
            return
        if isinstance(outcome, Parked):
            # a refusal (docs/architecture.md §8): asking again soon would only repeat it, so the
            # work is not retried through the queue; the next resync re-derives it. The client
            # already counted the answer and logged its cause once.
            self._failing[app_id] = f"left to the next resync: {outcome.reason}"
            self.queue.forget(app_id)
            self.metrics.parked.inc()
            log.info("app %s: left to the next resync: %s", app_id, outcome.reason)
            return
        self._failing[app_id] = outcome.reason
        attempt = self.queue.failures(app_id) + 1
        delay = self.queue.retry(app_id, outcome.remaining)
        if delay is None:
            log.error("app %s: giving up after %d attempts, the next resync retries: %s", app_id, attempt,
                      outcome.reason)
            return
        log.warning("app %s: %s; retry %d in %.2fs", app_id, outcome.reason, attempt, delay)
        self.metrics.retries.labels("reconcile").inc()

    def _source(self, app_id: str, work: AppWork, repair: Repair | None) -> StateSource:
        """Where this run reads Consul's state from. A resync's snapshot serves unless work for the
        app was hinted, begun or ended since the resync's reads began: anything written for it since
        was written by such work, so an app without it has not changed under us as far as any event
        told (a change whose event was lost waits for the next resync, as it would anyway).
        Task-level work after the first resync compares with the ledger (a change behind our back is
        the resync's to find); the rest reads the agents where the app is, or was last seen."""
        if repair is not None and repair.snapshot is not None and \
                self._touched_at.get(app_id, 0.0) < repair.read_at:
            return FromSnapshot(repair.snapshot)
        if work.task_ids is not None and self._ledger_fresh:
            return FromLedger()
        hosts = set(work.hosts)
        hosts |= self.ledger.locations(app_id) if work.task_ids is None else self.ledger.hosts_of_tasks(work.task_ids)
        return FromAgents(frozenset(hosts))

    # ---------------------------------------------------------------- resync and views
    async def resync(self, *, dry_run: bool = False) -> Drift:
        """Compare everything Marathon runs with everything we own in Consul; repair through the
        work queue unless `dry_run`. Returns what was found."""
        if not dry_run and not self._workers:
            # the repairs it schedules would wait for workers that never come
            raise RuntimeError("start() the reconciler before a repairing resync")
        self._forget_touches_before(time.monotonic())
        drift = await self._resync.run(dry_run=dry_run)
        self._ledger_fresh = not self.paused
        release_free_memory()  # the resync's reads are garbage now; see service/heap.py
        return drift

    def _forget_touches_before(self, started: float) -> None:
        """`_source` compares a touch with a repair's `read_at`; this resync's reads begin after
        `started`, and no earlier resync's repair is still waiting (resyncs run one at a time and
        each waits for its repairs' first runs), so a touch before `started` decides like none at
        all. Dropping them bounds the table by the apps hinted since the last resync."""
        self._touched_at = {app_id: at for app_id, at in self._touched_at.items() if at >= started}

    @property
    def resync_count(self) -> int:
        return self._resync.count

    @property
    def last_resync(self) -> dict[str, object] | None:
        return self._resync.last

    def snapshot(self) -> dict[str, object]:
        return {
            "registrations": [
                {"service_id": r.service_id, "agent": self.agents.url_for(r.agent_host), "name": r.name,
                 "tags": list(r.tags), "address": r.address, "port": r.port, "meta": r.meta_dict,
                 "checks": [c.to_consul() for c in r.checks]}
                for r in self.ledger.registrations()
            ],
            "queued_apps": sorted(self.queue.pending_keys()),
            "running_apps": sorted(self.queue.processing_keys()),
            "retrying_apps": dict(sorted(self._failing.items())),
            "resyncs": self.resync_count,
            "last_resync": self.last_resync,
        }
