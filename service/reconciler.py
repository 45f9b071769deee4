"""Converge Consul to Marathon + Docker: the work queue, per-app workers, and the full resync.

Concurrency model (after kopf's queueing): events are hints, never instructions (DESIGN §2.1).
A hint marks an *app* as dirty, optionally narrowed to some of its tasks; hints for an app that is
already queued coalesce into one batch, so a deployment's burst of status updates costs one
Marathon read per app batch and one container listing per slave. Task-level batches compare the
desired registrations with what the last resync read from the agents plus our own writes since
(before the first resync they read the agents); whole-app batches read the agents. An app is worked
on by at most one worker at a time (per-key serial, so two writes for one task never race);
different apps run concurrently up to `workers`. Inside a batch, Consul writes for different tasks
run concurrently, bounded by `write_concurrency`.

A failed batch goes back into the queue after a capped exponential back-off with jitter, merged
with whatever hints arrived meanwhile; after `max_attempts` it is left to the next resync, which
re-derives everything from scratch, so nothing is dropped for good.

The resync reads the whole desired state (`GET /v2/apps?embed=apps.tasks`), everything we own on
every agent and every slave's containers, and reports missing / orphan / drifted registrations.
Each app with drift is then repaired under the same per-app lock as event work: from the resync's
own reads when no event work for the app was queued since they began, else from a fresh read of
the app (see `_repair`). Changes made to Consul behind our back are found here, at the latest one
`--resync-interval` after they happen.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from service.consul_registry import AgentClient, ConsulAgents, ConsulError, OwnedService
from service.desired import desired_registrations, ttl_check_statuses
from service.docker_lookup import ContainerLookup, DockerLookupError, consume_exception
from service.marathon.client import MarathonClient
from service.marathon.events import AppEvent, HealthEvent, TaskEvent
from service.metrics import Metrics
from service.model import (
    AddressMode,
    App,
    Container,
    Naming,
    Registration,
    Skip,
    Task,
)
from service.naming import service_identity

log = logging.getLogger(__name__)

NOT_YET_RUNNING = frozenset({"TASK_STAGING", "TASK_STARTING"})
# A deployment's start and steps change nothing the registrar reads that the tasks' own status
# updates (which carry the new app version) and the deployment's end do not also announce.
DEPLOYMENT_PROGRESS = frozenset({"deployment_info", "deployment_step_success", "deployment_step_failure"})


@dataclass(frozen=True)
class ReconcileSettings:
    naming: Naming = Naming.DNS
    address_mode: AddressMode = AddressMode.AUTO
    networks: tuple[str, ...] = ("weave", "bridge")
    health_checks: str = "consul"  # consul | marathon | both (which checks Consul runs itself)
    ttl_floor_seconds: int = 180  # TTL mirrors must outlive the gap between two resyncs refreshing them
    workers: int = 16
    write_concurrency: int = 64
    max_attempts: int = 8
    backoff_initial: float = 0.2
    backoff_max: float = 15.0


# What a resync read of one app: its definition (None if gone), its tasks, and our registrations of it.
AppSnapshot = tuple["App | None", "list[Task]", "dict[str, OwnedService]"]


@dataclass
class Batch:
    """What is known to be dirty for one app. `task_ids is None` means the whole app."""

    task_ids: set[str] | None = field(default_factory=set)
    hosts: set[str] = field(default_factory=set)
    received: dict[str, float] = field(default_factory=dict)  # task id -> first event time (latency)
    attempts: int = 0
    # task id -> host, for tasks an event reported running: their containers are looked up while
    # Marathon is read (a hint of where to look, never a reason to register)
    running_on: dict[str, str] = field(default_factory=dict)

    def merge(self, other: Batch) -> None:
        if self.task_ids is None or other.task_ids is None:
            self.task_ids = None
        else:
            self.task_ids |= other.task_ids
        self.hosts |= other.hosts
        self.running_on.update(other.running_on)
        for tid, t in other.received.items():
            self.received[tid] = min(t, self.received.get(tid, t))
        self.attempts = max(self.attempts, other.attempts)


class RetryLater(Exception):
    """Some tasks of a batch could not be settled yet (container not up, agent down)."""

    def __init__(self, message: str, remaining: Batch) -> None:
        super().__init__(message)
        self.remaining = remaining


@dataclass
class Drift:
    """What a resync found, per agent URL."""

    missing: dict[str, list[str]] = field(default_factory=dict)
    orphan: dict[str, list[str]] = field(default_factory=dict)
    drifted: dict[str, list[str]] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)  # agent -> error
    skipped: dict[str, str] = field(default_factory=dict)  # task id -> reason
    apps_to_repair: set[str] = field(default_factory=set)

    def add(self, kind: str, agent: str, service_id: str, app_id: str) -> None:
        getattr(self, kind).setdefault(agent, []).append(service_id)
        self.apps_to_repair.add(app_id)

    def counts(self) -> dict[str, int]:
        return {k: sum(len(v) for v in getattr(self, k).values()) for k in ("missing", "orphan", "drifted")}

    def as_dict(self) -> dict[str, object]:
        return {"missing": self.missing, "orphan": self.orphan, "drifted": self.drifted,
                "unreachable_agents": self.unreachable, "skipped_tasks": self.skipped, "counts": self.counts()}


class Reconciler:
    def __init__(self, *, marathon: MarathonClient, lookup: ContainerLookup, agents: ConsulAgents,
                 metrics: Metrics, settings: ReconcileSettings | None = None) -> None:
        self.marathon = marathon
        self.lookup = lookup
        self.agents = agents
        self.metrics = metrics
        self.settings = settings or ReconcileSettings()
        self._pending: dict[str, Batch] = {}
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._running: set[str] = set()
        self._delayed: set[asyncio.TimerHandle] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._write_slots = asyncio.Semaphore(self.settings.write_concurrency)
        self._workers: list[asyncio.Task[None]] = []
        self._locations: dict[str, set[str]] = {}  # app id -> hosts whose agent holds its registrations
        self._managed: dict[str, Registration] = {}  # service id -> what we last saw/wrote
        self._task_services: dict[str, set[str]] = {}  # task id -> ids of its registrations in _managed
        self._ttl_status: dict[str, str] = {}  # TTL check id -> the status we last saw or pushed
        self._failing: dict[str, str] = {}  # app id -> last error, while retrying
        self._hinted_at: dict[str, float] = {}  # app id -> when work for it was last queued
        self._idle = asyncio.Event()
        self._idle.set()
        self._logged_rewrites: set[str] = set()
        self.resync_count = 0
        self.last_resync: dict[str, object] | None = None

    # ------------------------------------------------------------------ intake
    def hint_task(self, event: TaskEvent, received_at: float | None = None) -> None:
        if event.state in NOT_YET_RUNNING:
            # A task id is never reused and reaches Consul only once running: before that there is
            # nothing to register and nothing of it to remove, so the read would be wasted (2 of
            # the 5 status updates in a task's life).
            return
        now = received_at if received_at is not None else time.monotonic()
        running_on = {event.task_id: event.host} if event.host and event.state == "TASK_RUNNING" else {}
        self._enqueue(event.app_id, Batch(task_ids={event.task_id}, hosts={event.host} if event.host else set(),
                                          received={event.task_id: now}, running_on=running_on))

    def hint_app(self, app_id: str) -> None:
        self._enqueue(app_id, Batch(task_ids=None))

    def hint(self, event: TaskEvent | AppEvent | HealthEvent, received_at: float | None = None) -> None:
        if isinstance(event, TaskEvent):
            self.hint_task(event, received_at)
        elif isinstance(event, AppEvent):
            if event.event_type in DEPLOYMENT_PROGRESS:
                return
            for app_id in event.app_ids:
                self.hint_app(app_id)
        elif isinstance(event, HealthEvent):
            self.hint_app(event.app_id)

    def _enqueue(self, app_id: str, batch: Batch) -> None:
        self._hinted_at[app_id] = time.monotonic()
        current = self._pending.get(app_id)
        if current is None:
            self._pending[app_id] = batch
        else:
            current.merge(batch)
        if app_id not in self._running and app_id not in self._queued:
            self._queued.add(app_id)
            self._ready.put_nowait(app_id)
        self._idle.clear()
        self.metrics.queue_depth.set(len(self._queued))

    # ------------------------------------------------------------------ workers
    def start(self) -> None:
        for i in range(self.settings.workers):
            self._workers.append(asyncio.create_task(self._worker(), name=f"reconcile-worker-{i}"))

    async def stop(self) -> None:
        for handle in self._delayed:
            handle.cancel()
        for w in self._workers:
            w.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()

    async def wait_idle(self) -> None:
        """Wait until no work is queued, running or waiting for a retry (tests, `sync`, bench)."""
        await self._idle.wait()

    def _check_idle(self) -> None:
        if not self._pending and not self._running and not self._delayed:
            self._idle.set()
        self.metrics.queue_depth.set(len(self._queued))
        self.metrics.in_flight.set(len(self._running))

    async def _worker(self) -> None:
        while True:
            app_id = await self._ready.get()
            self._queued.discard(app_id)
            batch = self._pending.pop(app_id, None)
            if batch is None:
                continue
            self._running.add(app_id)
            self.metrics.queue_depth.set(len(self._queued))
            self.metrics.in_flight.set(len(self._running))
            try:
                async with self._lock(app_id):
                    await self.reconcile_app(app_id, batch)
                self._failing.pop(app_id, None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure is retried, never lost
                remaining = exc.remaining if isinstance(exc, RetryLater) else batch
                self._retry_later(app_id, remaining, exc)
            finally:
                self._running.discard(app_id)
                if app_id in self._pending and app_id not in self._queued:
                    self._queued.add(app_id)
                    self._ready.put_nowait(app_id)
                self._check_idle()

    def _retry_later(self, app_id: str, batch: Batch, exc: Exception) -> None:
        batch.attempts += 1
        self._failing[app_id] = str(exc)
        if batch.attempts >= self.settings.max_attempts:
            log.error("app %s: giving up after %d attempts, the next resync retries: %s", app_id, batch.attempts, exc)
            return
        delay = min(self.settings.backoff_max, self.settings.backoff_initial * 2 ** (batch.attempts - 1))
        delay = delay / 2 + random.uniform(0, delay / 2)
        log.warning("app %s: %s; retry %d in %.2fs", app_id, exc, batch.attempts, delay)
        self.metrics.retries.labels("reconcile").inc()

        def fire() -> None:
            self._delayed.discard(handle)
            self._enqueue(app_id, batch)

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._delayed.add(handle)

    def _lock(self, app_id: str) -> asyncio.Lock:
        lock = self._locks.get(app_id)
        if lock is None:
            lock = self._locks[app_id] = asyncio.Lock()
        return lock

    # ------------------------------------------------------------------ one app
    async def reconcile_app(self, app_id: str, batch: Batch, snapshot: AppSnapshot | None = None) -> None:
        """Make Consul hold exactly what Marathon's current view of `app_id` asks for, limited to the
        batch's tasks unless the whole app is dirty. A resync may hand in its `snapshot` of the app
        (see `_repair` for when that is as good as a fresh read)."""
        unreachable: dict[str, str] = {}
        prefetched: dict[tuple[str, str], asyncio.Future[Container | Skip | None]] = {}
        if snapshot is not None:
            app, tasks, owned = snapshot
        else:
            # The containers of tasks reported running are looked up while Marathon answers, not
            # after: both reads happen after the event, and only Marathon's answer decides what is
            # registered (a lookup for a task it no longer lists is simply not used).
            prefetched = self._prefetch(batch)
            # one read gives the current definition with the tasks, so no definition cache is needed
            found = await self.marathon.app_with_tasks(app_id)
            app, tasks = found if found is not None else (None, [])
        if batch.task_ids is not None:
            tasks = [t for t in tasks if t.id in batch.task_ids]
        if snapshot is None and batch.task_ids is not None and self.resync_count:
            # Task-level work compares with what the last resync read and our writes since: a
            # change made behind our back is the resync's to find (it reads every agent), and a
            # burst then costs no Consul reads at all, only the writes it needs.
            owned = self._cached_owned(batch.task_ids)
        elif snapshot is None:
            hosts = {t.host for t in tasks} | batch.hosts
            if batch.task_ids is None:
                hosts |= self._locations.get(app_id, set())
            else:  # only where these tasks are, or were last seen registered
                for task_id in batch.task_ids:
                    hosts |= {self._managed[sid].agent_host for sid in self._task_services.get(task_id, ())}
            owned, unreachable = await self._read_agents(hosts, app_id)
        if batch.task_ids is not None:
            owned = {k: v for k, v in owned.items() if v.registration.task_id in batch.task_ids}
        desired, skips = await self._desired(app, tasks, prefetched=prefetched)
        retry_tasks = {s.task_id for s in skips if s.retry}
        # Registrations of a task we must retry stay as they are: we do not yet know their new truth.
        owned = {k: v for k, v in owned.items() if v.registration.task_id not in retry_tasks}
        await self._apply(app_id, desired, owned, batch, tasks)
        if unreachable or retry_tasks:
            remaining = Batch(task_ids=set(retry_tasks) if not unreachable else batch.task_ids,
                              hosts=set(unreachable) | batch.hosts,
                              received=dict(batch.received),
                              attempts=batch.attempts,
                              running_on={t: h for t, h in batch.running_on.items() if t in retry_tasks})
            reasons = [f"agent {h}: {e}" for h, e in unreachable.items()]
            reasons += [f"task {s.task_id}: {s.reason} {s.detail}".strip() for s in skips if s.retry]
            raise RetryLater("; ".join(reasons)[:500], remaining)

    async def _read_agents(self, hosts: Iterable[str], app_id: str | None
                           ) -> tuple[dict[str, OwnedService], dict[str, str]]:
        owned: dict[str, OwnedService] = {}
        unreachable: dict[str, str] = {}
        agents: dict[int, AgentClient] = {id(a): a for a in (self.agents.agent(h) for h in hosts)}

        async def read(agent: AgentClient) -> None:
            try:
                owned.update(await agent.owned(app_id))
            except ConsulError as exc:
                unreachable[agent.host] = str(exc)

        await asyncio.gather(*(read(a) for a in agents.values()))
        return owned, unreachable

    async def _container(self, host: str, task_id: str) -> Container | Skip | None:
        if self.settings.address_mode is AddressMode.HOST:
            return None
        try:
            return await self.lookup.find(host, task_id)
        except DockerLookupError as exc:
            return Skip(task_id=task_id, reason="docker-unreachable", detail=str(exc), retry=True)

    def _prefetch(self, batch: Batch) -> dict[tuple[str, str], asyncio.Future[Container | Skip | None]]:
        if self.settings.address_mode is AddressMode.HOST or batch.task_ids is None:
            return {}
        out: dict[tuple[str, str], asyncio.Future[Container | Skip | None]] = {}
        for task_id, host in batch.running_on.items():
            future = out[(host, task_id)] = asyncio.ensure_future(self._container(host, task_id))
            future.add_done_callback(consume_exception)  # an unused lookup must not log "never retrieved"
        return out

    async def _listings(self, hosts: set[str]) -> dict[str, dict[str, Container]]:
        """One container listing per slave for a whole resync (slaves whose listing fails are left
        out, and their tasks looked up one by one, which fails the same way and is retried)."""
        if self.settings.address_mode is AddressMode.HOST:
            return {}
        ordered = sorted(hosts)
        results = await asyncio.gather(*(self.lookup.containers(h) for h in ordered), return_exceptions=True)
        return {h: r for h, r in zip(ordered, results, strict=True) if not isinstance(r, BaseException)}

    async def _desired(self, app: App | None, tasks: list[Task],
                       listings: dict[str, dict[str, Container]] | None = None,
                       prefetched: dict[tuple[str, str], asyncio.Future[Container | Skip | None]] | None = None,
                       ) -> tuple[dict[str, Registration], list[Skip]]:
        desired: dict[str, Registration] = {}
        skips: list[Skip] = []
        if app is None:
            return desired, skips
        self._log_rewrites(app)
        running = [t for t in tasks if t.state == "TASK_RUNNING"]
        if listings is not None and all(t.host in listings for t in running):
            containers: list[Container | Skip | None] = [listings[t.host].get(t.id) for t in running]
        else:
            started = prefetched or {}
            containers = list(await asyncio.gather(
                *(started.get((t.host, t.id)) or self._container(t.host, t.id) for t in running)))
        for task, container in zip(running, containers, strict=True):
            if isinstance(container, Skip):
                skips.append(container)
                continue
            result = desired_registrations(
                app, task, container, naming=self.settings.naming, address_mode=self.settings.address_mode,
                networks=self.settings.networks, health_checks=self.settings.health_checks,
                ttl_floor_seconds=self.settings.ttl_floor_seconds)
            if isinstance(result, Skip):
                skips.append(result)
                self.metrics.skips.labels(result.reason).inc()
                continue
            for reg in result:
                desired[reg.service_id] = reg
        return desired, skips

    def _log_rewrites(self, app: App) -> None:
        """Names that are not valid DNS labels are registered rewritten; say so once per rewrite."""
        for port_index in range(max(1, len(app.port_mappings))):
            identity = service_identity(app, port_index, self.settings.naming)
            for message in identity.rewrites if identity is not None else ():
                if message not in self._logged_rewrites:
                    self._logged_rewrites.add(message)
                    log.warning("app %s: %s", app.id, message)

    async def _apply(self, app_id: str, desired: dict[str, Registration], owned: dict[str, OwnedService],
                     batch: Batch, tasks: list[Task]) -> None:
        by_id = {t.id: t for t in tasks}
        jobs = []
        for sid, reg in desired.items():
            have = owned.get(sid)
            task = by_id[reg.task_id]
            if have is None or have.registration.agent_host != reg.agent_host or not have.matches(reg):
                jobs.append(self._register(reg, batch.received.get(reg.task_id), task, have))
            else:
                jobs.append(self._sync_ttl(reg, task, have))
        for sid, have in owned.items():
            if sid not in desired or desired[sid].agent_host != have.registration.agent_host:
                jobs.append(self._deregister(have.registration))
        if jobs:
            results = await asyncio.gather(*jobs, return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]
        hosts = {r.agent_host for r in desired.values()}
        if batch.task_ids is not None:
            hosts |= self._locations.get(app_id, set())
        self._locations[app_id] = hosts
        if not hosts:
            self._locations.pop(app_id, None)
        self.metrics.managed.set(len(self._managed))

    async def _register(self, reg: Registration, received: float | None, task: Task,
                        had: OwnedService | None) -> None:
        agent = self.agents.agent(reg.agent_host)
        async with self._write_slots:
            try:
                await agent.register(reg)
            except ConsulError:
                self.metrics.registrations.labels("error").inc()
                raise
        self.metrics.registrations.labels("updated" if had else "created").inc()
        if received is not None:
            self.metrics.event_to_registration.observe(time.monotonic() - received)
        self._remember(reg)
        await self._sync_ttl(reg, task, None)

    async def _sync_ttl(self, reg: Registration, task: Task, have: OwnedService | None, *,
                        refresh: bool = False) -> None:
        """Checks Consul cannot run (Marathon COMMAND checks, or all with --health-checks marathon|both)
        mirror Marathon's verdict as TTL checks. Pushed when it differs from the agent's, and on
        `refresh` (every resync) so that the TTL does not run out while Marathon's verdict stands."""
        self._remember(reg)
        for check_id, want in ttl_check_statuses(reg, task):
            if not refresh and have is not None and have.check_status.get(check_id) == want:
                continue
            output = f"Marathon reports this health check {'alive' if want == 'passing' else 'failing'}"
            async with self._write_slots:
                await self.agents.agent(reg.agent_host).set_ttl(check_id, want, output)
            self._ttl_status[check_id] = want

    async def _deregister(self, reg: Registration) -> None:
        async with self._write_slots:
            try:
                await self.agents.agent(reg.agent_host).deregister(reg.service_id)
            except ConsulError:
                self.metrics.deregistrations.labels("error").inc()
                raise
        self.metrics.deregistrations.labels("ok").inc()
        self._forget(reg)

    def _cached_owned(self, task_ids: Iterable[str]) -> dict[str, OwnedService]:
        out: dict[str, OwnedService] = {}
        for task_id in task_ids:
            for sid in self._task_services.get(task_id, ()):
                reg = self._managed[sid]
                out[sid] = OwnedService(reg, {c.check_id: c.kind for c in reg.checks},
                                        {c.check_id: self._ttl_status.get(c.check_id, "") for c in reg.checks})
        return out

    def _remember(self, reg: Registration) -> None:
        self._managed[reg.service_id] = reg
        self._task_services.setdefault(reg.task_id, set()).add(reg.service_id)

    def _forget(self, reg: Registration) -> None:
        self._managed.pop(reg.service_id, None)
        for check in reg.checks:
            self._ttl_status.pop(check.check_id, None)
        sids = self._task_services.get(reg.task_id)
        if sids is not None:
            sids.discard(reg.service_id)
            if not sids:
                del self._task_services[reg.task_id]

    # ------------------------------------------------------------------ resync
    async def resync(self, *, dry_run: bool = False) -> Drift:
        """Compare everything Marathon runs with everything we own in Consul; repair through the
        per-app path unless `dry_run`. Returns what was found."""
        started = time.perf_counter()
        read_at = time.monotonic()
        drift = Drift()
        try:
            apps, owned, owner_agent, listings = await self._read_world(drift)
            tasks_by_app = {app.id: (app, tasks) for app, tasks in apps}
            desired: dict[str, Registration] = {}
            task_of: dict[str, Task] = {}
            for app, tasks in tasks_by_app.values():
                regs, skips = await self._desired(app, tasks, listings)
                desired.update(regs)
                task_of.update({t.id: t for t in tasks})
                for s in skips:
                    drift.skipped[s.task_id] = s.reason
                    if s.retry:
                        drift.apps_to_repair.add(app.id)
            ttl_refresh: list[tuple[Registration, Task, OwnedService]] = []
            for sid, reg in desired.items():
                have = owned.get(sid)
                url = self.agents.agent(reg.agent_host).url
                if have is None:
                    if url not in drift.unreachable:
                        drift.add("missing", url, sid, reg.app_id)
                elif have.registration.agent_host != reg.agent_host or not have.matches(reg) or \
                        not _ttl_in_sync(reg, task_of[reg.task_id], have):
                    drift.add("drifted", url, sid, reg.app_id)
                elif any(c.ttl for c in reg.checks):
                    ttl_refresh.append((reg, task_of[reg.task_id], have))
            for sid, have in owned.items():
                if sid not in desired:
                    drift.add("orphan", owner_agent[sid], sid, have.registration.app_id)
            # remember where each app's registrations are, so per-app work finds orphans on any agent
            locations: dict[str, set[str]] = {}
            for have in owned.values():
                locations.setdefault(have.registration.app_id, set()).add(
                    have.registration.agent_host)
            for app_id, hs in locations.items():
                self._locations.setdefault(app_id, set()).update(hs)
            self._managed, self._task_services, self._ttl_status = {}, {}, {}
            for svc in owned.values():
                self._remember(svc.registration)
                self._ttl_status.update((c.check_id, svc.check_status.get(c.check_id, ""))
                                        for c in svc.registration.checks if c.ttl)
            for kind, n in drift.counts().items():
                if n:
                    self.metrics.drift.labels(kind).inc(n)
            if not dry_run:
                snapshots: dict[str, AppSnapshot] = {}
                if not drift.unreachable:
                    for app_id in drift.apps_to_repair:
                        app, tasks = tasks_by_app.get(app_id, (None, []))
                        snapshots[app_id] = (app, tasks, {})
                    for sid, have in owned.items():
                        snap = snapshots.get(have.registration.app_id)
                        if snap is not None:
                            snap[2][sid] = have
                await self._repair(drift, snapshots, read_at)
                await asyncio.gather(*(self._sync_ttl(r, t, h, refresh=True) for r, t, h in ttl_refresh),
                                     return_exceptions=True)
            self.metrics.resyncs.labels("ok" if not drift.unreachable else "partial").inc()
        except Exception:
            self.metrics.resyncs.labels("error").inc()
            raise
        finally:
            self.metrics.resync_duration.observe(time.perf_counter() - started)
        self.resync_count += 1
        self.last_resync = {"at": time.time(), "seconds": round(time.perf_counter() - started, 3),
                            **drift.as_dict(), "dry_run": dry_run}
        self.metrics.managed.set(len(self._managed))
        return drift

    async def _read_world(self, drift: Drift) -> tuple[
            list[tuple[App, list[Task]]], dict[str, OwnedService], dict[str, str], dict[str, dict[str, Container]]]:
        """Marathon's apps, what we own on every agent, and each slave's containers. The agents and
        slaves already known (from earlier work and the catalog) are read while Marathon renders its
        answer, which is the longest read; hosts only Marathon names are read after it."""
        seen: dict[str, AgentClient] = {}
        owned: dict[str, OwnedService] = {}
        owner_agent: dict[str, str] = {}

        async def read_agents(hosts: set[str]) -> None:
            for agent, result in await self._read_distinct(hosts, drift, seen):
                for sid, svc in result.items():
                    owned[sid] = svc
                    owner_agent[sid] = agent.url

        marathon = asyncio.create_task(self.marathon.apps_with_tasks())
        known: set[str] = set().union(*self._locations.values())
        early = asyncio.gather(read_agents(known | await self._catalog_hosts(known)), self._listings(known))
        try:
            apps = await marathon
        finally:
            _, listings = await early
        task_hosts = {t.host for _, tasks in apps for t in tasks}
        late = task_hosts - known
        if not known:  # no earlier work to go by: the catalog, found through a task host, names the rest
            late |= await self._catalog_hosts(task_hosts)
        _, more = await asyncio.gather(read_agents(late), self._listings(late & task_hosts))
        listings.update(more)
        return apps, owned, owner_agent, listings

    async def _catalog_hosts(self, known: set[str]) -> set[str]:
        """Agents of nodes with no task left may still hold our orphans: find them in the catalog."""
        if not self.agents.per_host or not known:
            return set()
        for host in sorted(known):
            try:
                return set(await self.agents.agent(host).catalog_node_addresses())
            except ConsulError as exc:
                log.warning("catalog read via %s failed: %s", host, exc)
        return set()

    async def _read_distinct(self, hosts: set[str], drift: Drift, seen: dict[str, AgentClient]
                             ) -> list[tuple[AgentClient, dict[str, OwnedService]]]:
        """Our registrations on each agent of `hosts`, once per real agent: a host name and an IP
        may lead to the same agent (node), and `seen` remembers the nodes read already."""
        candidates = {a.url: a for a in (self.agents.agent(h) for h in hosts)}
        names = await asyncio.gather(*(a.node_name() for a in candidates.values()), return_exceptions=True)
        fresh: list[AgentClient] = []
        for agent, name in zip(candidates.values(), names, strict=True):
            if isinstance(name, BaseException):
                drift.unreachable[agent.url] = str(name)
            elif name not in seen:
                seen[name] = agent
                fresh.append(agent)
        results = await asyncio.gather(*(a.owned() for a in fresh), return_exceptions=True)
        out = []
        for agent, result in zip(fresh, results, strict=True):
            if isinstance(result, BaseException):
                drift.unreachable[agent.url] = str(result)
            else:
                out.append((agent, result))
        return out

    async def _repair(self, drift: Drift, snapshots: dict[str, AppSnapshot], read_at: float) -> None:
        """Repair each app with drift under its lock. The resync's own reads serve as the app's state
        unless work for the app was queued since they began: anything written for it since then was
        written by event work, which always follows a hint, so an app without a newer hint has not
        changed under us as far as any event told (a change whose event was lost waits for the next
        resync, as it would anyway). Hinted apps, and all of them when an agent was unreachable, are
        read afresh. This keeps a 10% drift repair at 10,000 tasks to little more than its writes."""
        slots = asyncio.Semaphore(self.settings.workers)

        async def repair(app_id: str) -> None:
            async with slots, self._lock(app_id):
                snapshot = snapshots.get(app_id) if self._hinted_at.get(app_id, 0.0) < read_at else None
                try:
                    await self.reconcile_app(app_id, Batch(task_ids=None), snapshot)
                    self.metrics.repairs.labels("ok").inc()
                except Exception as exc:
                    self.metrics.repairs.labels("error").inc()
                    remaining = exc.remaining if isinstance(exc, RetryLater) else Batch(task_ids=None)
                    self._retry_later(app_id, remaining, exc)

        await asyncio.gather(*(repair(a) for a in sorted(drift.apps_to_repair)))

    # ------------------------------------------------------------------ views
    def snapshot(self) -> dict[str, object]:
        return {
            "registrations": [
                {"service_id": r.service_id, "agent": self.agents.url_for(r.agent_host), "name": r.name,
                 "tags": list(r.tags), "address": r.address, "port": r.port, "meta": r.meta_dict,
                 "checks": [c.to_consul() for c in r.checks]}
                for r in sorted(self._managed.values(), key=lambda r: r.service_id)
            ],
            "queued_apps": sorted(self._pending),
            "running_apps": sorted(self._running),
            "retrying_apps": dict(sorted(self._failing.items())),
            "resyncs": self.resync_count,
            "last_resync": self.last_resync,
        }


def _ttl_in_sync(reg: Registration, task: Task, have: OwnedService) -> bool:
    return all(have.check_status.get(check_id) == want for check_id, want in ttl_check_statuses(reg, task))
