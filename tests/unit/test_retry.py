"""The one retry rule (service/retry.py): delays follow the policy, attempts are bounded, stop ends
every wait at once, and a target's Cooldown spaces the calls to it whatever work asks."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.backoff import Backoff
from service.retry import Cooldown, Stop, Stopped, farewell, retry, watching


def top(_lo: float, hi: float) -> float:
    return hi


class Flaky:
    """Fails with `errors` in turn, then answers "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def retryable(exc: BaseException) -> bool:
    return isinstance(exc, OSError)


@pytest.mark.parametrize("max_attempts,failures,calls,outcome,delays", [
    (None, 0, 1, "ok", []),                                     # success: one call, no retry state
    (None, 3, 4, "ok", [0.001, 0.002, 0.004]),                  # doubling from initial
    (None, 6, 7, "ok", [0.001, 0.002, 0.004, 0.008, 0.008, 0.008]),  # capped
    (3, 2, 3, "ok", [0.001, 0.002]),                            # the last allowed attempt succeeds
    (3, 5, 3, OSError, [0.001, 0.002]),                         # attempts ran out: the last error
    (1, 1, 1, OSError, []),                                     # one attempt: no retry at all
])
async def test_delays_follow_the_policy_and_attempts_are_bounded(
        max_attempts: int | None, failures: int, calls: int, outcome: object, delays: list[float]) -> None:
    fn = Flaky(*[OSError(f"down {i}") for i in range(failures)])
    seen: list[tuple[int, str, float]] = []
    policy = Backoff(initial=0.001, cap=0.008, max_attempts=max_attempts, uniform=top)
    if outcome == "ok":
        assert await retry(fn, policy=policy, stop=Stop(), retry_on=retryable,
                           on_retry=lambda n, e, d: seen.append((n, str(e), d))) == "ok"
    else:
        with pytest.raises(OSError, match=f"down {calls - 1}"):
            await retry(fn, policy=policy, stop=Stop(), retry_on=retryable,
                        on_retry=lambda n, e, d: seen.append((n, str(e), d)))
    assert fn.calls == calls
    assert [d for _, _, d in seen] == pytest.approx(delays)
    assert [(n, e) for n, e, _ in seen] == [(i + 1, f"down {i}") for i in range(len(delays))]


@pytest.mark.parametrize("error", [ValueError("a bug"), KeyError("k")])
async def test_what_retry_on_refuses_is_raised_at_once(error: Exception) -> None:
    fn = Flaky(error)
    with pytest.raises(type(error)):
        await retry(fn, policy=Backoff(initial=0.001, cap=0.001), retry_on=retryable)
    assert fn.calls == 1


async def test_a_refused_error_after_retries_ends_them() -> None:
    fn = Flaky(OSError("down"), ValueError("bad answer"))
    with pytest.raises(ValueError):
        await retry(fn, policy=Backoff(initial=0.001, cap=0.001), retry_on=retryable)
    assert fn.calls == 2


async def test_cancellation_is_never_retried() -> None:
    fn = Flaky(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await retry(fn, policy=Backoff(initial=0.001, cap=0.001), retry_on=lambda e: True)
    assert fn.calls == 1


@pytest.mark.parametrize("failures_first", [1, 3])
async def test_stop_ends_a_retry_wait_at_once(failures_first: int) -> None:
    stop = Stop()
    fn = Flaky(*[OSError("down")] * failures_first)
    waited = asyncio.Event()

    def on_retry(n: int, e: BaseException, d: float) -> None:
        if n == failures_first:
            waited.set()

    # the first retries come at once, the one after `failures_first` failures would be 30 s
    draws = iter([0.0] * (failures_first - 1) + [30.0])
    policy = Backoff(initial=30.0, cap=30.0, uniform=lambda lo, hi: next(draws))
    task = asyncio.create_task(retry(fn, policy=policy, stop=stop, retry_on=retryable, on_retry=on_retry))
    await waited.wait()
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    stop.set()
    with pytest.raises(Stopped):
        await task
    assert time.perf_counter() - started < 0.05


async def test_a_stop_already_set_calls_nothing() -> None:
    stop = Stop()
    stop.set()
    fn = Flaky()
    with pytest.raises(Stopped):
        await retry(fn, policy=Backoff(initial=1.0, cap=1.0), stop=stop, retry_on=retryable)
    assert fn.calls == 0
    with pytest.raises(Stopped):
        await stop.sleep(10.0)


async def test_stop_sleep_returns_after_the_time_and_raises_on_stop() -> None:
    stop = Stop()
    await stop.sleep(0.001)
    await stop.sleep(0)
    waiter = asyncio.create_task(stop.sleep(60.0))
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    stop.set()
    with pytest.raises(Stopped):
        await waiter
    assert time.perf_counter() - started < 0.05
    await asyncio.wait_for(stop.wait(), 1.0)


async def test_stop_race_gives_the_result_or_cuts_the_wait_at_once() -> None:
    """A wait that is not ours to shorten (a blocking query) is cancelled on stop: `Stopped`."""
    stop = Stop()
    assert await stop.race(asyncio.sleep(0.001, result="answered")) == "answered"
    blocking = asyncio.ensure_future(asyncio.sleep(60.0))
    racing = asyncio.create_task(stop.race(blocking))
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    stop.set()
    with pytest.raises(Stopped):
        await racing
    assert time.perf_counter() - started < 0.05
    assert blocking.cancelled()  # nothing of it runs on after the stop
    with pytest.raises(Stopped):  # a stop already set starts nothing
        await stop.race(asyncio.sleep(0))


async def test_a_call_made_as_part_of_stopping_does_not_watch_the_stop() -> None:
    """The lock's release, the callbacks' unsubscription: they go out after the signal."""
    stop = Stop()
    stop.set()
    assert watching(stop) is stop
    with farewell():
        assert watching(stop) is None
        assert await asyncio.wait_for(retry(lambda: asyncio.sleep(0, result=1), policy=Backoff(initial=0.1, cap=0.1),
                                            stop=watching(stop), retry_on=lambda _: True), 1.0) == 1
    assert watching(stop) is stop


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# Each row: steps on one Cooldown (policy initial 1, cap 4, delays pinned to the ceiling), and the
# back-off left after them ("remaining") and the count of RETRY windows ("failures").
@pytest.mark.parametrize("steps,remaining,failures", [
    ([], 0.0, 0),
    (["failed"], 1.0, 1),
    (["failed", "failed", "failed"], 1.0, 1),             # calls in flight when it began: one window
    (["failed", "+0.5", "failed"], 0.5, 1),
    (["failed", "+1", "probe", "failed"], 2.0, 2),         # the probe's RETRY doubles the back-off
    (["failed", "+1", "probe", "failed", "+2", "probe", "failed", "+4", "probe", "failed"], 4.0, 4),  # capped
    (["failed", "+1", "probe", "succeeded"], 0.0, 0),      # the first success resets it
    (["failed", "succeeded"], 0.0, 0),                     # an answer from a call already under way, too
])
async def test_cooldown_spacing(steps: list[str], remaining: float, failures: int) -> None:
    clock = Clock()
    cooldown = Cooldown(Backoff(initial=1.0, cap=4.0, uniform=top), clock=clock)
    for step in steps:
        if step.startswith("+"):
            clock.now += float(step[1:])
        elif step == "probe":
            await asyncio.wait_for(cooldown.ready(), 0.5)  # the window is over: at once
        else:
            getattr(cooldown, step)()
    assert cooldown.remaining() == pytest.approx(remaining)
    assert cooldown.failures == failures


async def test_cooldown_lets_one_probe_through_and_the_others_wait_for_its_answer() -> None:
    cooldown = Cooldown(Backoff(initial=0.02, cap=0.02, uniform=top))
    assert await cooldown.ready() is False  # no back-off: at once, and no probe
    cooldown.failed()
    waiters = [asyncio.create_task(cooldown.ready()) for _ in range(5)]
    await asyncio.sleep(0.06)
    assert [w.result() for w in waiters if w.done()] == [True]  # the probe
    cooldown.failed()  # the probe's RETRY: another window, then one more probe
    await asyncio.sleep(0.06)
    assert sum(w.done() for w in waiters) == 2
    cooldown.succeeded()  # the target answers: everyone goes
    assert sorted(await asyncio.wait_for(asyncio.gather(*waiters), 0.5)) == [False, False, False, True, True]


async def test_a_blocking_call_waits_out_the_back_off_but_is_never_the_probe() -> None:
    """A blocking query (the lock's watch of its key) may be answered only seconds after the
    target recovered: the others must not wait for it. It waits out the window and any probe
    out, then goes; the next ordinary caller is still the probe."""
    cooldown = Cooldown(Backoff(initial=0.05, cap=0.05, uniform=top))
    cooldown.failed()
    blocking = asyncio.create_task(cooldown.ready(probe=False))
    await asyncio.sleep(0.01)
    assert not blocking.done()  # the window is not over
    assert await asyncio.wait_for(blocking, 0.5) is False  # then it goes, not as the probe
    assert await asyncio.wait_for(cooldown.ready(), 0.5) is True  # the probe is still to be had
    late = asyncio.create_task(cooldown.ready(probe=False))
    await asyncio.sleep(0.01)
    assert not late.done()  # a probe is out: its answer first
    cooldown.succeeded()
    assert await asyncio.wait_for(late, 0.5) is False


async def test_an_abandoned_probe_hands_its_turn_on() -> None:
    cooldown = Cooldown(Backoff(initial=0.01, cap=0.01, uniform=top))
    cooldown.failed()
    await asyncio.wait_for(cooldown.ready(), 0.5)  # the probe
    second = asyncio.create_task(cooldown.ready())
    await asyncio.sleep(0.03)
    assert not second.done()
    cooldown.abandoned()
    await asyncio.wait_for(second, 0.5)


async def test_a_probe_that_never_reports_is_replaced_after_its_lease() -> None:
    clock = Clock()
    cooldown = Cooldown(Backoff(initial=1.0, cap=1.0, uniform=top), clock=clock, probe_lease=5.0)
    cooldown.failed()
    clock.now += 1.0
    await asyncio.wait_for(cooldown.ready(), 0.5)
    clock.now += 5.0
    await asyncio.wait_for(cooldown.ready(), 0.5)


async def test_stop_ends_a_cooldown_wait_at_once() -> None:
    stop = Stop()
    cooldown = Cooldown(Backoff(initial=30.0, cap=30.0, uniform=top))
    cooldown.failed()
    waiter = asyncio.create_task(cooldown.ready(stop))
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    stop.set()
    with pytest.raises(Stopped):
        await waiter
    assert time.perf_counter() - started < 0.05


async def test_stop_ends_the_wait_for_a_probe_at_once() -> None:
    stop = Stop()
    cooldown = Cooldown(Backoff(initial=0.01, cap=0.01, uniform=top))
    cooldown.failed()
    await cooldown.ready(stop)  # the probe, never reporting
    waiter = asyncio.create_task(cooldown.ready(stop))
    await asyncio.sleep(0.02)
    started = time.perf_counter()
    stop.set()
    with pytest.raises(Stopped):
        await waiter
    assert time.perf_counter() - started < 0.05


async def test_wait_for_decides_the_delay_from_what_failed() -> None:
    fn = Flaky(OSError("refused"), TimeoutError("slow"), OSError("refused"))
    seen: list[tuple[int, float]] = []

    def wait_for(n: int, exc: BaseException) -> float:
        return 0.003 if isinstance(exc, TimeoutError) else 0.001 * n

    assert await retry(fn, policy=Backoff(initial=1.0, cap=1.0), retry_on=lambda e: True, wait_for=wait_for,
                       on_retry=lambda n, e, d: seen.append((n, d))) == "ok"
    assert seen == [(1, 0.001), (2, 0.003), (3, 0.003)]
