"""The per-app step and its work items (service/reconcile/step.py, work.py): each state source reads
only what it says, and a run reports an outcome instead of raising."""

from __future__ import annotations

import asyncio

from service.consul.agents import ConsulError
from service.docker.lookup import DockerLookupError
from service.errors import REPORT, Classified
from service.marathon.client import MarathonError
from service.metrics import Metrics
from service.model import Container, Task
from service.reconcile.ledger import Ledger
from service.reconcile.settings import ReconcileSettings
from service.reconcile.step import AppStep
from service.reconcile.work import (
    AppSnapshot,
    AppWork,
    Done,
    FromAgents,
    FromLedger,
    FromSnapshot,
    Parked,
    Repair,
    Retry,
)
from service.reconcile.world import WorldReader
from service.reconcile.writer import ConsulWriter
from tests.unit.fakes import FakeAgents, FakeLookup, FakeMarathon, web_app

APP, HOST, OTHER = "/web/site", "127.0.0.2", "127.0.0.3"


def setup() -> tuple[AppStep, FakeMarathon, FakeAgents, Ledger, Task]:
    marathon, lookup, agents, metrics, ledger = FakeMarathon(), FakeLookup(), FakeAgents(), Metrics(), Ledger()
    task = Task(id="web_site.t1", app_id=APP, host=HOST, ports=(31001,))
    marathon.apps[APP] = web_app(APP)
    marathon.tasks[APP] = {task.id: task}
    lookup.by_task[task.id] = Container(id="c1", task_id=task.id, network_ips={"weave": "10.32.0.9"})
    lookup.hosts[task.id] = HOST
    reader = WorldReader(marathon=marathon, lookup=lookup, agents=agents, metrics=metrics,
                         settings=ReconcileSettings())
    writer = ConsulWriter(agents=agents, ledger=ledger, metrics=metrics, concurrency=4)
    return AppStep(reader=reader, ledger=ledger, writer=writer, metrics=metrics), marathon, agents, ledger, task


async def test_from_agents_reads_marathon_and_the_agents_and_registers() -> None:
    step, marathon, agents, ledger, task = setup()
    outcome = await step.run(APP, AppWork.whole_app(), FromAgents(frozenset()))
    assert outcome == Done()
    assert (marathon.reads, agents.reads()) == (1, 1)
    assert set(agents.agent(HOST).services) == {f"mcr-{task.id}-0"} and len(ledger) == 1
    assert ledger.locations(APP) == {HOST}


async def test_from_ledger_reads_no_agent() -> None:
    step, marathon, agents, _, task = setup()
    outcome = await step.run(APP, AppWork(task_ids={task.id}), FromLedger())
    assert outcome == Done() and (marathon.reads, agents.reads()) == (1, 0)
    writes = agents.writes()
    assert await step.run(APP, AppWork(task_ids={task.id}), FromLedger()) == Done()
    assert agents.writes() == writes, "the ledger remembers the write: nothing to do the second time"


async def test_from_snapshot_reads_nothing_and_trusts_the_snapshot() -> None:
    step, marathon, agents, _, task = setup()
    snapshot = AppSnapshot(marathon.apps[APP], (task,), {})
    assert await step.run(APP, AppWork.whole_app(), FromSnapshot(snapshot)) == Done()
    assert (marathon.reads, agents.reads()) == (0, 0) and agents.writes() == 1


async def test_an_unreachable_agent_is_a_retry_with_the_work_left_not_an_exception() -> None:
    step, _, agents, _, task = setup()
    agents.agent(HOST).down = True
    work = AppWork(task_ids={task.id}, received={task.id: 1.0})
    outcome = await step.run(APP, work, FromAgents(frozenset()))
    assert isinstance(outcome, Retry)
    assert "connection refused" in outcome.reason
    assert outcome.remaining.task_ids == {task.id}
    assert outcome.remaining.received == {task.id: 1.0}, "the first event's time survives the retry"


async def test_a_container_not_up_yet_retries_only_that_task() -> None:
    step, marathon, agents, _, task = setup()
    other = Task(id="web_site.t2", app_id=APP, host=HOST, ports=(31002,))
    marathon.tasks[APP][other.id] = other
    outcome = await step.run(APP, AppWork(task_ids={task.id, other.id}, running_on={other.id: HOST}),
                             FromAgents(frozenset()))
    assert isinstance(outcome, Retry) and outcome.remaining.task_ids == {other.id}
    assert "container-not-found" in outcome.reason
    assert outcome.remaining.running_on == {other.id: HOST}
    assert set(agents.agent(HOST).services) == {f"mcr-{task.id}-0"}


def two_hosts(marathon: FakeMarathon) -> Task:
    """A second task of the app, on another host (so another agent)."""
    other = Task(id="web_site.t2", app_id=APP, host=OTHER, ports=(31002,))
    marathon.tasks[APP][other.id] = other
    return other


async def test_a_failed_write_retries_only_its_task_and_the_others_are_written() -> None:
    step, marathon, agents, _, task = setup()
    other = two_hosts(marathon)
    step.reader.lookup.by_task[other.id] = Container(id="c2", task_id=other.id,  # type: ignore[attr-defined]
                                                     network_ips={"weave": "10.32.0.10"})
    agents.agent(OTHER).down = True
    snapshot = AppSnapshot(marathon.apps[APP], (task, other), {})
    outcome = await step.run(APP, AppWork.whole_app(), FromSnapshot(snapshot))
    assert isinstance(outcome, Retry) and outcome.remaining.task_ids == {other.id}
    assert set(agents.agent(HOST).services) == {f"mcr-{task.id}-0"}


async def test_a_refused_write_parks_the_work_and_leaves_the_task_to_the_resync() -> None:
    step, marathon, agents, _, task = setup()
    other = two_hosts(marathon)
    step.reader.lookup.by_task[other.id] = Container(id="c2", task_id=other.id,  # type: ignore[attr-defined]
                                                     network_ips={"weave": "10.32.0.10"})
    agents.agent(OTHER).refuse = ConsulError("consul agent other: register failed: 403 Permission denied",
                                             Classified(REPORT, "acl-denied"))
    snapshot = AppSnapshot(marathon.apps[APP], (task, other), {})
    outcome = await step.run(APP, AppWork.whole_app(), FromSnapshot(snapshot))
    assert isinstance(outcome, Parked) and "403 Permission denied" in outcome.reason
    assert set(agents.agent(HOST).services) == {f"mcr-{task.id}-0"} and not agents.agent(OTHER).services


async def test_a_refused_marathon_read_parks_the_work() -> None:
    step, marathon, _, _, _ = setup()

    async def refused(app_id: str) -> None:
        raise MarathonError("GET", "http://m/v2/apps/web/site", 403, "Not Authorized",
                            classified=Classified(REPORT, "acl-denied"))

    marathon.app_with_tasks = refused  # type: ignore[method-assign,assignment]
    outcome = await step.run(APP, AppWork.whole_app(), FromAgents(frozenset()))
    assert isinstance(outcome, Parked) and "403" in outcome.reason


async def test_a_refused_container_lookup_keeps_the_tasks_registrations_and_parks_the_work() -> None:
    """An engine refusing the lookup (403 from an authorization plugin) says nothing about the task:
    its registration stays (never deregistered because of a refusal), the work waits for the resync."""
    step, _, agents, ledger, task = setup()
    assert await step.run(APP, AppWork.whole_app(), FromAgents(frozenset())) == Done()

    async def refused(host: str, task_id: str) -> None:
        raise DockerLookupError("docker on 127.0.0.2: list answered 403: authorization denied",
                                Classified(REPORT, "acl-denied"))

    step.reader.lookup.find = refused  # type: ignore[method-assign,assignment]
    outcome = await step.run(APP, AppWork.whole_app(), FromAgents(frozenset()))
    assert isinstance(outcome, Parked) and "docker-refused" in outcome.reason
    assert set(agents.agent(HOST).services) == {f"mcr-{task.id}-0"} and len(ledger) == 1


def test_app_work_merges_tasks_hosts_and_first_event_times() -> None:
    a = AppWork(task_ids={"t1"}, hosts={"h1"}, received={"t1": 5.0}, running_on={"t1": "h1"})
    a.merge(AppWork(task_ids={"t2"}, hosts={"h2"}, received={"t1": 3.0, "t2": 4.0}))
    assert (a.task_ids, a.hosts, a.received, a.running_on) == (
        {"t1", "t2"}, {"h1", "h2"}, {"t1": 3.0, "t2": 4.0}, {"t1": "h1"})
    a.merge(AppWork.whole_app())
    assert a.whole and a.merge(AppWork(task_ids={"t3"})).whole, "whole-app work absorbs task work"


async def test_repairs_merge_into_the_newest_snapshot_and_release_every_waiter() -> None:
    loop = asyncio.get_running_loop()
    old, new = loop.create_future(), loop.create_future()
    snap_old, snap_new = AppSnapshot(None, (), {}), AppSnapshot(web_app(APP), (), {})
    work = AppWork(task_ids={"t1"}).merge(AppWork.whole_app(Repair(snap_old, 1.0, [old])))
    work.merge(AppWork.whole_app(Repair(snap_new, 2.0, [new])))
    assert work.whole and work.repair is not None and work.repair.snapshot is snap_new
    work.repair.finish(True)
    assert old.result() is True and new.result() is True
