"""The keyed work queue's contract (service/reconcile/workqueue.py), with a manual clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from service.backoff import Backoff
from service.reconcile.workqueue import QueueHooks, ShutDown, WorkQueue


@dataclass
class _Timer:
    at: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class ManualClock:
    t: float = 0.0
    timers: list[_Timer] = field(default_factory=list)

    def now(self) -> float:
        return self.t

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(self.t + delay, callback)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        self.t += seconds
        for timer in sorted(self.timers, key=lambda x: x.at):
            if timer.at <= self.t and not timer.cancelled:
                self.timers.remove(timer)
                timer.callback()


def union(a: frozenset[str], b: frozenset[str]) -> frozenset[str]:
    return a | b


def make(policy: Backoff | None = None, **kw: object) -> tuple[WorkQueue[str, frozenset[str]], ManualClock]:
    clock = ManualClock()
    q: WorkQueue[str, frozenset[str]] = WorkQueue(
        merge=union, retry_policy=policy or Backoff(initial=1.0, cap=8.0, max_attempts=4, uniform=lambda _lo, hi: hi),
        clock=clock, **kw)  # type: ignore[arg-type]
    return q, clock


async def get_now(q: WorkQueue[str, frozenset[str]]) -> tuple[str, frozenset[str]]:
    async with asyncio.timeout(1):
        return await q.get()


def invariants(q: WorkQueue[str, frozenset[str]]) -> None:
    ready = set(q._ready)
    assert ready == q._queued and len(q._ready) == len(ready), "a key is ready at most once"
    assert not ready & q._processing, "a key is never both ready and processing"
    assert ready <= set(q._pending), "a ready key has pending work"


async def test_adds_for_one_key_coalesce_into_one_run() -> None:
    q, _ = make()
    for item in ("a", "b", "a", "c"):
        q.add("app", frozenset({item}))
    invariants(q)
    assert q.depth == 1
    assert await get_now(q) == ("app", frozenset({"a", "b", "c"}))
    assert q.depth == 0 and q.in_flight == 1
    invariants(q)


async def test_a_key_being_processed_is_not_handed_out_again_and_runs_once_more_after() -> None:
    q, _ = make()
    q.add("app", frozenset({"1"}))
    key, _work = await get_now(q)
    q.add("app", frozenset({"2"}))
    q.add("app", frozenset({"3"}))
    invariants(q)
    with pytest.raises(TimeoutError):  # no second worker gets the key while it is processed
        async with asyncio.timeout(0.05):
            await q.get()
    q.done(key)
    invariants(q)
    assert await get_now(q) == ("app", frozenset({"2", "3"})), "added meanwhile: runs once more, merged"
    q.done("app")
    assert q.depth == 0 and q.in_flight == 0


async def test_peek_shows_what_waits_for_a_key_being_processed_and_leaves_it_there() -> None:
    q, _ = make()
    q.add("app", frozenset({"1"}))
    key, _work = await get_now(q)
    assert q.peek("app") is None, "nothing added since the run began"
    q.add("app", frozenset({"2"}))
    assert q.peek("app") == frozenset({"2"})
    assert q.peek("other") is None
    invariants(q)
    q.done(key)
    assert await get_now(q) == ("app", frozenset({"2"})), "peeking took nothing away"


async def test_different_keys_are_handed_out_in_arrival_order_concurrently() -> None:
    q, _ = make()
    for key in ("b", "a", "c"):
        q.add(key, frozenset({key}))
    got = [(await get_now(q))[0] for _ in range(3)]
    assert got == ["b", "a", "c"]
    assert q.in_flight == 3
    invariants(q)


@pytest.mark.parametrize(("failures", "expected_delays", "handed_over_at"), [
    (1, [1.0], None),
    (3, [1.0, 2.0, 4.0], None),
    (4, [1.0, 2.0, 4.0, None], 4),  # max_attempts=4: the 4th failure hands over, no timer
])
async def test_retry_timing_follows_the_policy_and_hands_over_when_exhausted(
        failures: int, expected_delays: list[float | None], handed_over_at: int | None) -> None:
    q, _ = make()
    delays = [q.retry("app", frozenset({str(i)})) for i in range(failures)]
    assert delays == expected_delays
    assert q.failures("app") == (0 if handed_over_at else failures)


async def test_a_retry_is_not_ready_before_its_delay_and_is_after() -> None:
    q, clock = make()
    assert q.retry("app", frozenset({"x"})) == 1.0
    assert q.depth == 0 and q.delayed == 1
    clock.advance(0.99)
    assert q.depth == 0
    clock.advance(0.02)
    assert q.depth == 1 and q.delayed == 0
    assert await get_now(q) == ("app", frozenset({"x"}))


async def test_forget_restarts_the_back_off() -> None:
    q, _ = make()
    assert [q.retry("k", frozenset()) for _ in range(2)] == [1.0, 2.0]
    q.forget("k")
    assert q.retry("k", frozenset()) == 1.0


async def test_full_jitter_draws_between_zero_and_the_ceiling() -> None:
    draws: list[tuple[float, float]] = []
    policy = Backoff(initial=1.0, cap=3.0, max_attempts=10, uniform=lambda lo, hi: draws.append((lo, hi)) or lo)
    q, _ = make(policy)
    for _ in range(4):
        q.retry("k", frozenset())
    assert draws == [(0.0, 1.0), (0.0, 2.0), (0.0, 3.0), (0.0, 3.0)]


async def test_wait_idle_waits_for_pending_processing_and_delayed_work() -> None:
    q, clock = make()
    idle = asyncio.create_task(q.wait_idle())
    await asyncio.sleep(0)
    assert idle.done(), "an empty queue is idle"
    q.add("k", frozenset({"1"}))
    idle = asyncio.create_task(q.wait_idle())
    key, _ = await get_now(q)
    q.retry(key, frozenset({"2"}))
    q.done(key)
    await asyncio.sleep(0)
    assert not idle.done(), "a delayed retry is still work"
    clock.advance(1.0)
    await get_now(q)
    q.done(key)
    async with asyncio.timeout(1):
        await idle


async def test_shutdown_releases_workers_cancels_retries_drops_pending_and_ignores_later_adds() -> None:
    q, clock = make()
    waiting = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.retry("late", frozenset({"r"}))
    q.add("b", frozenset({"q"}))  # the waiting worker is woken, but only runs after the shutdown
    assert q.shutdown() == [frozenset({"q"})], "pending work is dropped and handed back"
    async with asyncio.timeout(1):
        with pytest.raises(ShutDown):
            await waiting
        with pytest.raises(ShutDown):
            await q.get()
    assert clock.timers and all(t.cancelled for t in clock.timers), "delayed retries are cancelled"
    q.add("c", frozenset({"x"}))
    q.add_after("d", frozenset({"y"}), 1.0)
    assert q.depth == 0 and q.pending_keys() == [] and q.delayed == 0
    async with asyncio.timeout(1):
        await q.wait_idle()


async def test_hooks_report_depth_and_in_flight() -> None:
    depth: list[int] = []
    in_flight: list[int] = []
    q, _ = make(hooks=QueueHooks(depth=depth.append, in_flight=in_flight.append))
    q.add("a", frozenset())
    q.add("b", frozenset())
    await get_now(q)
    q.done("a")
    assert depth[:2] == [1, 2] and depth[-1] == 1
    assert in_flight == [1, 0]


async def test_an_add_wakes_one_waiting_worker_and_a_cancelled_worker_loses_no_key() -> None:
    q, _ = make()
    workers = [asyncio.create_task(q.get()) for _ in range(3)]
    await asyncio.sleep(0)
    q.add("a", frozenset({"1"}))
    workers[0].cancel()  # woken first, cancelled before it ran: the key must reach another worker
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    done = [w for w in workers[1:] if w.done()]
    assert [w.result() for w in done] == [("a", frozenset({"1"}))]
    assert q._getters and len([g for g in q._getters if not g.done()]) == 1, "the other worker still waits"
    q.shutdown()
    await asyncio.gather(*workers, return_exceptions=True)


async def test_clear_drops_pending_and_delayed_work_but_keeps_running() -> None:
    q, clock = make()
    q.add("a", frozenset({"1"}))
    key, _ = await get_now(q)  # "a" is being processed
    q.add("a", frozenset({"2"}))  # pending behind the run
    q.add("b", frozenset({"3"}))
    q.retry("c", frozenset({"4"}))
    assert sorted(q.clear(), key=sorted) == [frozenset({"2"}), frozenset({"3"})]
    assert q.depth == 0 and q.pending_keys() == [] and q.delayed == 0
    assert all(t.cancelled for t in clock.timers), "delayed retries are cancelled"
    assert q.processing_keys() == ["a"], "the run in progress finishes"
    q.done(key)
    q.add("d", frozenset({"5"}))  # still running: later adds are handed out
    assert await get_now(q) == ("d", frozenset({"5"}))
    q.done("d")
    async with asyncio.timeout(1):
        await q.wait_idle()
