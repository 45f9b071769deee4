"""Forged events against the reconciler: the read budget for apps the last resync did not list, and
the table of touched apps (`_touched_at`) that must not grow with every app id a poster invents."""

from __future__ import annotations

import asyncio
import logging

import pytest

from service.marathon.events import AppEvent
from service.reconcile.budget import UnlistedReads
from tests.unit.test_reconciler import APP, World, drain

LIMIT = 5


def forged(i: int) -> AppEvent:
    return AppEvent(app_ids=(f"/forged/app-{i}",), event_type="app_terminated_event")


def skipped(r: object) -> float:
    return r.metrics.registry.get_sample_value("mcr_unlisted_reads_skipped_total")  # type: ignore[attr-defined]


async def test_hints_for_unlisted_apps_cost_at_most_the_budget_of_reads_counted_and_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    w = World()
    w.deploy(APP)
    t = w.start_task(APP)
    caplog.set_level(logging.WARNING, logger="service.reconcile.budget")
    async with w.running(unlisted_reads_limit=LIMIT, unlisted_reads_interval=60.0) as r:
        await r.resync()
        await drain(r)
        reads = w.marathon.reads
        for i in range(300):
            r.hint(forged(i))
            r.hint(forged(i % LIMIT))  # an admitted id is admitted again within the interval
        await drain(r)
        assert w.marathon.reads - reads <= 2 * LIMIT  # 5 ids, coalesced: at most two runs each
        assert skipped(r) == 300 - LIMIT
        warnings = [rec for rec in caplog.records if "did not list" in rec.getMessage()]
        assert len(warnings) == 1, [rec.getMessage() for rec in warnings]
        # apps Marathon has are never held back, whatever the budget says
        r.hint(w._event(t, "TASK_RUNNING"))
        w.kill_task(APP, t.id)
        r.hint(w.events[-1])
        await drain(r)
        assert w.managed_task_ids() == set()


async def test_a_new_app_over_the_budget_is_registered_by_the_next_resync_and_found_apps_are_known() -> None:
    w = World()
    async with w.running(unlisted_reads_limit=LIMIT, unlisted_reads_interval=60.0) as r:
        await r.resync()
        for i in range(LIMIT):
            r.hint(forged(i))
        new_app = "/web/customer2/site1"
        w.deploy(new_app)
        task = w.start_task(new_app)
        r.hint(w.events[-1])  # the budget is spent: skipped
        await drain(r)
        assert w.managed_task_ids() == set() and skipped(r) == 1
        await r.resync()
        await drain(r)
        assert w.managed_task_ids() == {task.id}
        # once Marathon has listed it, the app's events are never held back
        second = w.start_task(new_app)
        r.hint(w.events[-1])
        await drain(r)
        assert w.managed_task_ids() == {task.id, second.id} and skipped(r) == 1


async def test_an_unlisted_app_a_read_finds_is_known_from_then_on() -> None:
    w = World()
    async with w.running(unlisted_reads_limit=1, unlisted_reads_interval=60.0) as r:
        await r.resync()
        w.deploy(APP)
        first = w.start_task(APP)
        r.hint(w.events[-1])  # the one unit of the budget: read, found, registered
        await drain(r)
        second = w.start_task(APP)
        r.hint(w.events[-1])
        await drain(r)
        assert w.managed_task_ids() == {first.id, second.id} and skipped(r) == 0


async def test_the_budget_renews_every_interval_and_a_new_spell_is_logged_again(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    seen: list[int] = []
    budget = UnlistedReads(limit=2, interval=10.0, on_skip=lambda: seen.append(1), clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="service.reconcile.budget")
    assert [budget.admit(f"/a{i}") for i in range(4)] == [True, True, False, False]
    now[0] = 10.0  # the next interval, still over: the same spell, not logged again
    assert [budget.admit(f"/b{i}") for i in range(3)] == [True, True, False]
    now[0] = 20.0  # a quiet interval ends the spell
    assert budget.admit("/c0")
    now[0] = 35.0
    assert [budget.admit(f"/d{i}") for i in range(3)] == [True, True, False]
    assert len(seen) == 4
    assert len([rec for rec in caplog.records if "did not list" in rec.getMessage()]) == 2
    with pytest.raises(ValueError):
        UnlistedReads(limit=0, interval=1.0, on_skip=lambda: None)


async def test_touched_apps_are_forgotten_at_each_resync() -> None:
    """Every hinted app id was kept for ever (116 B per forged app id, docs/benchmarks.md): a resync
    forgets the touches its reads began after, which decide nothing any more."""
    w = World()
    w.deploy(APP)
    w.start_task(APP)
    async with w.running(unlisted_reads_limit=1000) as r:
        await r.resync()
        for i in range(500):
            r.hint(forged(i))
        await drain(r)
        assert len(r._touched_at) >= 500
        await asyncio.sleep(0.01)
        await r.resync()
        await drain(r)
        assert len(r._touched_at) <= 1  # at most the app a repair ran for


async def test_forged_pod_hints_over_the_budget_leave_no_trace() -> None:
    """Pod events and pod containers' status updates name pods the registrar then remembers as pods
    (until the next resync): over the budget they are skipped, and must not be remembered either,
    or every invented pod id a poster sends stays in memory."""
    from service.marathon.events import TaskEvent
    from service.model import TaskState

    w = World()
    async with w.running(unlisted_reads_limit=LIMIT, unlisted_reads_interval=60.0) as r:
        await r.resync()
        await drain(r)
        for i in range(300):
            r.hint(AppEvent(app_ids=(f"/forged/pod-{i}",), event_type="pod_created_event"))
            r.hint(TaskEvent(task_id=f"forged_task-{i}.instance-{i:08x}.c", app_id=f"/forged/task-pod-{i}",
                             state=TaskState.RUNNING, host="", ports=(), ip_addresses=(), app_version="",
                             pod_instance=f"forged_task-{i}.instance-{i:08x}"))
        assert len(r.reader.pods) <= LIMIT
        await drain(r)
