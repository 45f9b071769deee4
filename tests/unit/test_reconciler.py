"""The reconciler's convergence rules, with in-memory Marathon/Docker/Consul (tests/unit/fakes.py).

Events are hints: whatever order, duplication or loss they arrive with, after the queue drains and
one resync runs, Consul's managed set equals Marathon's running tasks exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck as HypothesisHealthCheck
from hypothesis import given, settings
from hypothesis import strategies as st

from service.marathon.events import AppEvent, TaskEvent
from service.metrics import Metrics
from service.model import Container, HealthCheck, Task
from service.reconcile import Reconciler, ReconcileSettings
from tests.unit.fakes import FakeAgents, FakeLookup, FakeMarathon, web_app

HOSTS = ("127.0.0.2", "127.0.0.3")
APP = "/web/customer1/site1"


class World:
    """Marathon + Docker truth that the test mutates, and the events Marathon would emit."""

    def __init__(self) -> None:
        self.marathon = FakeMarathon()
        self.lookup = FakeLookup()
        self.agents = FakeAgents()
        self.events: list[TaskEvent | AppEvent] = []
        self._n = itertools.count(1)

    def reconciler(self, **kw: Any) -> Reconciler:
        s = ReconcileSettings(backoff_initial=0.001, backoff_max=0.01, max_attempts=100_000, **kw)
        return Reconciler(marathon=self.marathon, lookup=self.lookup, agents=self.agents, metrics=Metrics(), settings=s)

    @contextlib.asynccontextmanager
    async def running(self, **kw: Any) -> AsyncIterator[Reconciler]:
        """A started reconciler over this world, stopped on the way out."""
        r = self.reconciler(**kw)
        r.start()
        try:
            yield r
        finally:
            await r.stop()

    def deploy(self, app_id: str, checks: tuple[HealthCheck, ...] = ()) -> None:
        self.marathon.apps[app_id] = web_app(app_id, checks)
        self.marathon.tasks.setdefault(app_id, {})
        self.events.append(AppEvent(app_ids=(app_id,), event_type="api_post_event"))

    def start_task(self, app_id: str) -> Task:
        n = next(self._n)
        host = HOSTS[n % 2]
        task = Task(id=f"{app_id.strip('/').replace('/', '_')}.uuid-{n}", app_id=app_id, host=host,
                    ports=(31000 + n,), app_version="v1")
        self.marathon.tasks[app_id][task.id] = task
        self.lookup.by_task[task.id] = Container(id=f"c{n}", task_id=task.id,
                                                 network_ips={"weave": f"10.32.{n // 250}.{n % 250}"})
        self.lookup.hosts[task.id] = host
        self.events.append(self._event(task, "TASK_RUNNING"))
        return task

    def kill_task(self, app_id: str, task_id: str) -> None:
        task = self.marathon.tasks[app_id].pop(task_id)
        self.lookup.by_task.pop(task_id, None)
        self.events.append(self._event(task, "TASK_KILLING"))
        self.events.append(self._event(task, "TASK_KILLED"))

    def delete(self, app_id: str) -> None:
        for tid in list(self.marathon.tasks.get(app_id, {})):
            self.kill_task(app_id, tid)
        self.marathon.apps.pop(app_id, None)
        self.marathon.tasks.pop(app_id, None)
        self.events.append(AppEvent(app_ids=(app_id,), event_type="app_terminated_event"))

    @staticmethod
    def _event(task: Task, state: str) -> TaskEvent:
        return TaskEvent(task_id=task.id, app_id=task.app_id, state=state, host=task.host, ports=task.ports,
                         ip_addresses=(), app_version="v1")

    def running_task_ids(self) -> set[str]:
        return {tid for tasks in self.marathon.tasks.values() for tid in tasks}

    def managed_task_ids(self) -> set[str]:
        return {reg.task_id for reg in self.agents.managed().values()}


async def drain(r: Reconciler) -> None:
    async with asyncio.timeout(10):
        await r.wait_idle()


async def test_event_registers_and_kill_deregisters() -> None:
    w = World()
    w.deploy(APP)
    t1, t2 = w.start_task(APP), w.start_task(APP)
    async with w.running() as r:
        for e in w.events:
            r.hint(e)
        await drain(r)
        assert w.managed_task_ids() == {t1.id, t2.id}
        reg = w.agents.agent(t1.host).services[f"mcr-{t1.id}-0"]
        assert (reg.name, reg.address, reg.port) == ("web", w.lookup.by_task[t1.id].network_ips["weave"], 80)
        assert reg.agent_host == t1.host
        w.kill_task(APP, t1.id)
        r.hint(w.events[-1])
        await drain(r)
        assert w.managed_task_ids() == {t2.id}


async def test_duplicates_change_nothing_and_killed_before_running_ends_right() -> None:
    w = World()
    w.deploy(APP)
    t = w.start_task(APP)
    async with w.running() as r:
        running = w.events[-1]
        for _ in range(5):
            r.hint(running)
        await drain(r)
        writes = w.agents.writes()
        for _ in range(5):
            r.hint(running)
            await drain(r)
        assert w.agents.writes() == writes, "re-registering the same task must write nothing"
        # TASK_KILLED delivered before TASK_RUNNING: the truth (Marathon) decides, not the order
        w.kill_task(APP, t.id)
        r.hint(w.events[-1])
        r.hint(running)
        await drain(r)
        assert w.managed_task_ids() == set()


async def test_running_event_for_task_marathon_no_longer_lists_registers_nothing() -> None:
    w = World()
    w.deploy(APP)
    t = w.start_task(APP)
    running = w.events[-1]
    w.kill_task(APP, t.id)
    async with w.running() as r:
        r.hint(running)
        await drain(r)
        assert w.managed_task_ids() == set()
        assert w.agents.writes() == 0


async def test_containers_are_looked_up_while_marathon_answers_and_only_its_answer_registers() -> None:
    w = World()
    w.deploy(APP)
    t1, t2 = w.start_task(APP), w.start_task(APP)
    running_events = w.events[-2:]
    # t2 is gone from Marathon, but its container lingers on the slave: the lookup started for it
    # must not register it
    del w.marathon.tasks[APP][t2.id]
    answer, both_looked_up = asyncio.Event(), asyncio.Event()
    looked_up: list[str] = []
    read, find = w.marathon.app_with_tasks, w.lookup.find

    async def slow_read(app_id: str):  # type: ignore[no-untyped-def]
        await answer.wait()
        return await read(app_id)

    async def recording_find(host: str, task_id: str) -> Container | None:
        looked_up.append(task_id)
        if len(looked_up) == 2:
            both_looked_up.set()
        return await find(host, task_id)

    w.marathon.app_with_tasks = slow_read  # type: ignore[method-assign]
    w.lookup.find = recording_find  # type: ignore[method-assign]
    async with w.running() as r:
        r.reader.known_hosts.update(HOSTS)  # the slaves are known from an earlier read of Marathon
        for e in running_events:
            r.hint(e)
        async with asyncio.timeout(5):
            await both_looked_up.wait()
        assert sorted(looked_up) == sorted([t1.id, t2.id]), "both lookups start before Marathon has answered"
        assert w.agents.writes() == 0
        answer.set()
        await drain(r)
        assert w.managed_task_ids() == {t1.id}
        assert looked_up.count(t1.id) == 1, "the answer of the early lookup is used, not asked again"


async def test_container_not_up_yet_is_retried_not_dropped() -> None:
    w = World()
    w.deploy(APP)
    t = w.start_task(APP)
    container = w.lookup.by_task.pop(t.id)
    async with w.running() as r:
        r.hint(w.events[-1])
        await asyncio.sleep(0.05)
        assert w.managed_task_ids() == set()
        w.lookup.by_task[t.id] = container
        await drain(r)
        assert w.managed_task_ids() == {t.id}


async def test_agent_outage_delays_but_does_not_lose() -> None:
    w = World()
    w.deploy(APP)
    t = w.start_task(APP)
    w.agents.agent(t.host).down = True
    async with w.running() as r:
        r.hint(w.events[-1])
        await asyncio.sleep(0.05)
        assert w.managed_task_ids() == set()
        w.agents.agent(t.host).down = False
        await drain(r)
        assert w.managed_task_ids() == {t.id}


async def test_resync_repairs_missing_orphan_and_drift_and_is_silent_when_clean() -> None:
    w = World()
    w.deploy(APP)
    keep, drift, missing = w.start_task(APP), w.start_task(APP), w.start_task(APP)
    async with w.running() as r:
        found = await r.resync()
        await drain(r)
        assert found.counts() == {"missing": 3, "orphan": 0, "drifted": 0}
        assert w.managed_task_ids() == {keep.id, drift.id, missing.id}
        # behind our back: one deregistered, one edited, one orphan of a task that is gone
        agent = w.agents.agent(missing.host)
        del agent.services[f"mcr-{missing.id}-0"]
        sid = f"mcr-{drift.id}-0"
        edited = w.agents.agent(drift.host).services[sid]
        w.agents.agent(drift.host).services[sid] = type(edited)(**{
            **{f: getattr(edited, f) for f in edited.__slots__}, "address": "10.99.99.99", "tags": ("extra",)})
        gone = w.start_task(APP)
        r.hint(w.events[-1])
        await drain(r)
        assert gone.id in w.managed_task_ids()
        w.marathon.tasks[APP].pop(gone.id)
        found = await r.resync()
        await drain(r)
        assert found.counts() == {"missing": 1, "orphan": 1, "drifted": 1}
        assert w.managed_task_ids() == {keep.id, drift.id, missing.id}
        assert w.agents.agent(drift.host).services[sid].address != "10.99.99.99"
        writes = w.agents.writes()
        found = await r.resync()
        await drain(r)
        assert found.counts() == {"missing": 0, "orphan": 0, "drifted": 0}
        assert w.agents.writes() == writes, "a resync with no drift writes nothing"


async def test_command_check_is_a_ttl_mirror_of_marathon_health() -> None:
    w = World()
    w.deploy(APP, checks=(HealthCheck(protocol="COMMAND", command="true", interval_seconds=5),))
    t = w.start_task(APP)
    w.marathon.tasks[APP][t.id] = Task(**{**{f: getattr(t, f) for f in t.__slots__}, "health": (True,)})
    async with w.running() as r:
        await r.resync()
        await drain(r)
        [reg] = w.agents.managed().values()
        [check] = reg.checks
        assert check.ttl
        assert w.agents.agent(t.host).status[check.check_id] == "passing"
        w.marathon.tasks[APP][t.id] = Task(**{**{f: getattr(t, f) for f in t.__slots__}, "health": (False,)})
        found = await r.resync()
        await drain(r)
        assert found.counts()["drifted"] == 1
        assert w.agents.agent(t.host).status[check.check_id] == "critical"


async def test_resync_lists_each_slave_once_and_events_then_cost_only_their_writes() -> None:
    w = World()
    w.deploy(APP)
    for _ in range(20):
        w.start_task(APP)
    async with w.running() as r:
        await r.resync()
        await drain(r)
        assert w.lookup.listings == len(HOSTS), "one container listing per slave, not one per task"
        assert len(w.managed_task_ids()) == 20
        reads, writes = w.agents.reads(), w.agents.writes()
        t = w.start_task(APP)
        r.hint(w.events[-1])
        await drain(r)
        assert w.agents.writes() == writes + 1 and w.agents.reads() == reads, \
            "after a resync, task events compare with what it read and wrote: no agent reads"
        w.kill_task(APP, t.id)
        r.hint(w.events[-1])
        await drain(r)
        assert w.managed_task_ids() == w.running_task_ids()
        assert w.agents.reads() == reads


async def test_a_name_rewritten_into_a_dns_label_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    w = World()
    w.deploy(APP)
    w.marathon.apps[APP] = replace(w.marathon.apps[APP], labels={"consul.name": "Web_Shop"})
    w.start_task(APP)
    async with w.running() as r:
        with caplog.at_level(logging.WARNING, logger="service.reconcile.world"):
            await r.resync()
            await r.resync()
            await drain(r)
    [reg] = w.agents.managed().values()
    assert reg.name == "web-shop"
    rewrites = [rec.getMessage() for rec in caplog.records if "not a valid DNS label" in rec.getMessage()]
    assert len(rewrites) == 1 and "'Web_Shop'" in rewrites[0], rewrites


OPS = st.lists(st.tuples(st.sampled_from(["deploy", "start", "kill", "delete"]), st.integers(0, 2),
                         st.integers(0, 50)), min_size=1, max_size=25)


@settings(max_examples=150, deadline=None, suppress_health_check=[HypothesisHealthCheck.too_slow])
@given(ops=OPS, data=st.data())
def test_any_interleaving_with_duplicates_and_drops_converges_after_one_resync(ops, data) -> None:
    w = World()
    apps = ["/web/a/x", "/web/b", "/api/c/d"]
    for op, a, pick in ops:
        app_id = apps[a]
        if op == "deploy" and app_id not in w.marathon.apps:
            w.deploy(app_id)
        elif op == "start" and app_id in w.marathon.apps:
            w.start_task(app_id)
        elif op == "kill" and w.marathon.tasks.get(app_id):
            tids = sorted(w.marathon.tasks[app_id])
            w.kill_task(app_id, tids[pick % len(tids)])
        elif op == "delete" and app_id in w.marathon.apps:
            w.delete(app_id)
    events = list(w.events)
    delivered = data.draw(st.lists(st.sampled_from(events), max_size=3 * len(events)) if events else st.just([]))
    delivered = data.draw(st.permutations(delivered))

    async def run() -> None:
        r = w.reconciler()
        r.start()
        try:
            for e in delivered:
                r.hint(e)
                if data.draw(st.booleans()):
                    await asyncio.sleep(0)
            await drain(r)
            await r.resync()
            await drain(r)
        finally:
            await r.stop()

    asyncio.run(run())
    assert w.managed_task_ids() == w.running_task_ids()


@pytest.mark.parametrize("mode,expected_kinds",
                         [("consul", ["http"]), ("marathon", ["ttl"]), ("both", ["http", "ttl"])])
async def test_health_checks_mode(mode: str, expected_kinds: list[str]) -> None:
    w = World()
    w.deploy(APP, checks=(HealthCheck(protocol="HTTP", path="/h", interval_seconds=5, timeout_seconds=2),))
    w.start_task(APP)
    async with w.running(health_checks=mode) as r:
        await r.resync()
        await drain(r)
        [reg] = w.agents.managed().values()
        assert sorted(c.kind for c in reg.checks) == expected_kinds


async def test_repairs_use_the_resync_snapshot_unless_the_app_was_hinted_since_the_reads_began() -> None:
    w = World()
    w.deploy(APP)
    t1 = w.start_task(APP)
    async with w.running() as r:
        await r.resync()
        await drain(r)
        del w.agents.agent(t1.host).services[f"mcr-{t1.id}-0"]
        reads = w.marathon.reads
        found = await r.resync()
        await drain(r)
        assert found.counts()["missing"] == 1 and w.managed_task_ids() == {t1.id}
        assert w.marathon.reads == reads + 1, "the repair ran from the resync's own read of Marathon"

        # a hint arriving while the resync reads: the repair reads the app afresh
        del w.agents.agent(t1.host).services[f"mcr-{t1.id}-0"]
        apps_with_tasks = w.marathon.apps_with_tasks

        async def read_all_and_hint():  # type: ignore[no-untyped-def]
            r.hint_app(APP)
            return await apps_with_tasks()

        w.marathon.apps_with_tasks = read_all_and_hint  # type: ignore[method-assign]
        reads = w.marathon.reads
        await r.resync()
        await drain(r)
        assert w.managed_task_ids() == {t1.id}
        assert w.marathon.reads >= reads + 2, "the hinted app was read again, not repaired from the snapshot"


async def test_a_repair_and_event_work_for_one_app_never_run_at_once() -> None:
    w = World()
    w.deploy(APP)
    t1 = w.start_task(APP)
    running = 0
    overlap = False
    read = w.marathon.app_with_tasks

    async def slow_read(app_id: str):  # type: ignore[no-untyped-def]
        nonlocal running, overlap
        running += 1
        overlap |= running > 1
        await asyncio.sleep(0.01)
        running -= 1
        return await read(app_id)

    w.marathon.app_with_tasks = slow_read  # type: ignore[method-assign]
    async with w.running() as r:
        for _ in range(3):
            r.hint(w.events[-1])  # event work for the app ...
            await asyncio.sleep(0)
            w.agents.agents.clear()  # ... while its registrations vanish: the resync repairs them
            await r.resync()
        await drain(r)
        assert not overlap, "the queue is the only lock, for repairs too"
        assert w.managed_task_ids() == {t1.id}


async def test_a_forged_event_never_sends_the_registrar_to_a_host_marathon_did_not_name() -> None:
    """Callback events are unauthenticated hints: the host an event names is only used where
    Marathon named it before, so a forged event cannot make us call another host's Docker API or
    Consul agent (the step reads Marathon and goes where Marathon's answer says)."""
    w = World()
    w.deploy(APP)
    t = w.start_task(APP)
    looked_up: list[str] = []
    find = w.lookup.find

    async def recording_find(host: str, task_id: str) -> Container | None:
        looked_up.append(host)
        return await find(host, task_id)

    w.lookup.find = recording_find  # type: ignore[method-assign]
    async with w.running() as r:
        await r.resync()
        await drain(r)
        forged = TaskEvent(task_id=t.id, app_id=APP, state="TASK_RUNNING", host="evil.example", ports=t.ports,
                           ip_addresses=(), app_version="v1")
        r.hint(forged)
        await drain(r)
        assert "evil.example" not in looked_up
        assert "evil.example" not in w.agents.agents, "no agent client was even made for the forged host"
        assert w.managed_task_ids() == {t.id}


async def _first_run_waiting_on_marathon(w: World, r: Reconciler) -> tuple[asyncio.Event, list[int]]:
    """Make every Marathon read wait for the returned event; the list records, per register call,
    how many reads had been answered when it was made."""
    answer, reads_at_register = asyncio.Event(), []
    read = w.marathon.app_with_tasks
    answered = 0

    async def slow_read(app_id: str):  # type: ignore[no-untyped-def]
        nonlocal answered
        await answer.wait()
        result = await read(app_id)
        answered += 1
        return result

    w.marathon.app_with_tasks = slow_read  # type: ignore[method-assign]
    for host in HOSTS:
        agent = w.agents.agent(host)
        register = agent.register

        async def recording_register(reg, register=register):  # type: ignore[no-untyped-def]
            reads_at_register.append(answered)
            await register(reg)

        agent.register = recording_register  # type: ignore[method-assign]
    return answer, reads_at_register


async def test_tasks_reported_running_while_marathon_answers_are_written_by_that_run_if_it_shows_them() -> None:
    w = World()
    w.deploy(APP)
    t1, t2, t3 = w.start_task(APP), w.start_task(APP), w.start_task(APP)
    e1, e2, e3 = w.events[-3:]
    async with w.running() as r:
        r.reader.known_hosts.update(HOSTS)
        answer, reads_at_register = await _first_run_waiting_on_marathon(w, r)
        r.hint(e1)
        await asyncio.sleep(0.01)  # the run for t1 has begun and waits for Marathon
        r.hint(e2)
        r.hint(e3)
        answer.set()
        await drain(r)
        assert w.managed_task_ids() == {t1.id, t2.id, t3.id}
        assert reads_at_register == [1, 1, 1], "all three written after the first read, not after a second"
        assert w.agents.writes() == 3, "the second run (it still happens) compares and writes nothing"


async def test_a_task_reported_running_while_marathon_answers_waits_for_a_read_that_shows_it_running() -> None:
    w = World()
    w.deploy(APP)
    t1 = w.start_task(APP)
    e1 = w.events[-1]
    # t2's event comes while Marathon's first answer is on its way, an answer that does not list t2
    # yet (Marathon lists it from the next read on); and a forged running event for a task Marathon
    # never had
    t2 = w.start_task(APP)
    e2 = w.events[-1]
    t2_listed = w.marathon.tasks[APP].pop(t2.id)
    read = w.marathon.app_with_tasks

    async def listing_t2_after_this_read(app_id: str):  # type: ignore[no-untyped-def]
        result = await read(app_id)
        w.marathon.tasks[APP][t2.id] = t2_listed
        return result

    w.marathon.app_with_tasks = listing_t2_after_this_read  # type: ignore[method-assign]
    async with w.running() as r:
        r.reader.known_hosts.update(HOSTS)
        answer, reads_at_register = await _first_run_waiting_on_marathon(w, r)
        r.hint(e1)
        await asyncio.sleep(0.01)
        r.hint(e2)
        r.hint(replace(e1, task_id=e1.task_id.replace("uuid-", "uuid-forged-")))
        answer.set()
        await drain(r)
        assert w.managed_task_ids() == {t1.id, t2.id}
        assert reads_at_register == [1, 2], "t2 written after the read that showed it running"
