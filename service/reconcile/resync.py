"""The full resync (docs/architecture.md §4): read everything -> pure diff -> schedule the repairs
through the work queue, then refresh the TTL mirrors of in-place registrations. A repair uses the
resync's snapshot instead of reading again unless work for the app ran or was hinted since the
reads began (`Reconciler._source`) or an agent was unreachable (then every repair reads afresh).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from service.clients import ConsulAgentDirectory
from service.metrics import Metrics
from service.model import OwnedService, Registration, Skip, Task
from service.reconcile.diff import Drift, diff
from service.reconcile.ledger import Ledger
from service.reconcile.work import AppSnapshot, Repair
from service.reconcile.world import World, WorldReader
from service.reconcile.writer import ConsulWriter


class Resync:
    def __init__(self, *, reader: WorldReader, ledger: Ledger, writer: ConsulWriter, agents: ConsulAgentDirectory,
                 metrics: Metrics, schedule: Callable[[str, Repair], None]) -> None:
        self.reader = reader
        self.ledger = ledger
        self.writer = writer
        self.agents = agents
        self.metrics = metrics
        self._schedule = schedule
        self.count = 0
        self.last: dict[str, object] | None = None

    async def run(self, *, dry_run: bool = False) -> Drift:
        """One resync; repairs what it finds unless `dry_run`. Returns what was found."""
        started = time.perf_counter()
        try:
            world = await self.reader.read_world(self.ledger.all_locations(), self.ledger.held)
            # an agent that fails (an outage or a refusal) is counted and the resync goes on for the
            # rest (docs/architecture.md §8); its apps' repairs read it afresh
            self.metrics.agents_failing.set(len(world.unreachable))
            drift = await self._diff(world)
            self.ledger.replace_from(world.owned)
            for kind, n in drift.counts().items():
                if n:
                    self.metrics.drift.labels(kind).inc(n)
            if not dry_run:
                await self._repair(drift, world)
                await asyncio.gather(*(self.writer.sync_ttl(r, t, h, refresh=True) for r, t, h in drift.ttl_refresh),
                                     return_exceptions=True)
            self.metrics.resyncs.labels("ok" if not drift.unreachable else "partial").inc()
        except Exception:
            self.metrics.resyncs.labels("error").inc()
            raise
        finally:
            self.metrics.resync_duration.observe(time.perf_counter() - started)
        self.count += 1
        self.last = {"at": time.time(), "seconds": round(time.perf_counter() - started, 3),
                     **drift.as_dict(), "dry_run": dry_run}
        self.metrics.managed.set(len(self.ledger))
        return drift

    async def _diff(self, world: World) -> Drift:
        desired: dict[str, Registration] = {}
        tasks: dict[str, Task] = {}
        skips: dict[str, list[Skip]] = {}
        for app, app_tasks in world.apps.values():
            regs, skips[app.id] = await self.reader.desired(app, app_tasks, world.listings)
            same = self.ledger.same
            desired.update((sid, same(reg)) for sid, reg in regs.items())
            tasks.update((t.id, t) for t in app_tasks)
        return diff(desired=desired, owned=world.owned, tasks=tasks, skips=skips, owner_agent=world.owner_agent,
                    unreachable=world.unreachable, agent_url=self.agents.url_for, held_apps=world.held_apps,
                    pods_unread=world.pods_unread)

    async def _repair(self, drift: Drift, world: World) -> None:
        """Schedule a whole-app repair per app with drift, and wait for each one's first run."""
        # only the apps to repair: a map for every app was ~1,000 small dicts on the resync's heap
        # peak at 10,000 tasks, which the idle process keeps (issue 20)
        repaired = drift.apps_to_repair
        owned_by_app: dict[str, dict[str, OwnedService]] = {}
        for sid, have in world.owned.items():
            app_id = have.registration.app_id
            if app_id in repaired:
                owned_by_app.setdefault(app_id, {})[sid] = have
        loop = asyncio.get_running_loop()
        waiters: list[asyncio.Future[bool]] = []
        for app_id in sorted(drift.apps_to_repair):
            snapshot = None
            if not world.unreachable:
                app, tasks = world.apps.get(app_id, (None, ()))
                snapshot = AppSnapshot(app, tasks, owned_by_app.get(app_id, {}))
            waiter: asyncio.Future[bool] = loop.create_future()
            waiters.append(waiter)
            self._schedule(app_id, Repair(snapshot, world.read_at, [waiter]))
        for ok in await asyncio.gather(*waiters):
            self.metrics.repairs.labels("ok" if ok else "error").inc()
