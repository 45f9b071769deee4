"""The one retry rule: a policy (`Backoff`), a stop signal every wait watches (`Stop`), a helper
that retries a call (`retry`), and one shared back-off per outside target (`Cooldown`).

Why it looks like this (docs/architecture.md §7):

- **Every wait ends at once on stop.** A loop that sleeps with `asyncio.sleep` cannot be stopped
  between its attempts; SIGTERM then waits out the back-off (or, for a loop that never gives up,
  the grace period and SIGKILL). `Stop.sleep` raises `Stopped` the moment the signal is set.
- **tenacity, after the first failure only.** `retry` makes the first attempt itself and builds
  tenacity's retry state only once that attempt failed: the success path costs the call and
  nothing else (the paired figures are in the commit that introduced this module).
- **The back-off belongs to the target, not to the work.** When an agent answers 500, the work
  that arrives for it meanwhile (hints, resyncs, the lock's rounds) must not each start a back-off
  of its own and call again at once: `Cooldown` is the target's one back-off. While it runs,
  callers wait; when it ends, one caller probes the target and the others wait for its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_never
from tenacity.wait import wait_base

from service.backoff import Backoff

__all__ = ["ATTEMPT_GATE", "Backoff", "Cooldown", "Stop", "Stopped", "farewell", "retry", "watching"]

T = TypeVar("T")

# Asked (when set) right before each attempt of a call is sent, after any back-off: it raises if
# the attempt must not go out. The writer sets the lock's write gate here, so a write whose first
# attempt passed the gate sends no retry once the lease has run out while it backed off (a new
# holder may be writing by then: service.leadership). A context variable, so it reaches the Consul
# call wrapper through the clients' Protocols without the reconcile core knowing the client.
ATTEMPT_GATE: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar("attempt_gate",
                                                                                        default=None)

# Set (by `farewell`) for the calls the stop itself makes: releasing the lock, destroying its
# session, unsubscribing. Those must still go out after the stop signal, so a client's waits do not
# watch it there (`watching`); the caller bounds them with a timeout of its own instead.
_FAREWELL: contextvars.ContextVar[bool] = contextvars.ContextVar("farewell", default=False)


@contextlib.contextmanager
def farewell() -> Iterator[None]:
    """The calls made inside are part of stopping: the clients' waits do not end on stop."""
    token = _FAREWELL.set(True)
    try:
        yield
    finally:
        _FAREWELL.reset(token)


def watching(stop: Stop | None) -> Stop | None:
    """The stop signal a client's wait watches now: `stop`, except inside `farewell()`."""
    return None if _FAREWELL.get() else stop


class Stopped(Exception):
    """The stop signal came while waiting (or was already set)."""


class Stop:
    """The process's stop signal; every wait of every loop watches it."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        """Until stop is set."""
        await self._event.wait()

    async def sleep(self, seconds: float) -> None:
        """Return after `seconds`; raise `Stopped` at once when stop is (or becomes) set."""
        if self._event.is_set():
            raise Stopped()
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._event.wait()
            raise Stopped()

    async def race(self, aw: Awaitable[T]) -> T:
        """The result of `aw`; when stop is (or becomes) set first, `aw` is cancelled and `Stopped`
        raised at once. For a wait that is not ours to shorten: a blocking query, a call in flight."""
        work = asyncio.ensure_future(aw)
        if self._event.is_set():
            work.cancel()  # before its first step: nothing of it runs
            await asyncio.gather(work, return_exceptions=True)
            raise Stopped()
        stopped = asyncio.ensure_future(self._event.wait())
        try:
            await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not work.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
        if work.cancelled() and self._event.is_set():
            raise Stopped()
        return work.result()

    async def wait_event(self, event: asyncio.Event, seconds: float | None) -> None:
        """Until `event` is set or `seconds` passed; `Stopped` at once on stop."""
        if self._event.is_set():
            raise Stopped()
        if event.is_set():
            return
        waiters = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._event.wait())}
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        if self._event.is_set():
            raise Stopped()


async def sleep(seconds: float, stop: Stop | None) -> None:
    """`stop.sleep(seconds)`, or a plain sleep when there is no stop signal to watch."""
    if stop is not None:
        await stop.sleep(seconds)
    else:
        await asyncio.sleep(seconds)


async def retry(fn: Callable[[], Awaitable[T]], *, policy: Backoff, stop: Stop | None = None,
                retry_on: Callable[[BaseException], bool],
                on_retry: Callable[[int, BaseException, float], None] | None = None,
                wait_for: Callable[[int, BaseException], float] | None = None) -> T:
    """Call `fn`; on an exception for which `retry_on` is true, wait `policy.delay(n)` (watching
    `stop`) and try again. `policy.max_attempts` None tries for ever, else the last exception is
    raised once the attempts ran out; `Stopped` when stop is set while waiting.

    `on_retry(n, exc, delay)` is called before each wait: attempt `n` (from 1) failed with `exc`,
    the next attempt comes after `delay` seconds. `wait_for(n, exc)`, when given, decides that
    delay instead of `policy.delay(n)` (a caller whose back-off depends on what failed, or starts
    over after a partial success: the event stream). Cancellation is never retried."""
    if stop is not None and stop.is_set():
        raise Stopped()
    try:
        return await fn()  # the success path: no retry state at all
    except Exception as exc:
        if not retry_on(exc) or policy.exhausted(1):
            raise
        first: BaseException | None = exc

    async def attempt() -> T:
        nonlocal first
        if first is not None:  # tenacity's attempt 1 is the one already made above
            failed, first = first, None
            raise failed
        return await fn()

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None and state.next_action is not None:
            exc = state.outcome.exception()
            assert exc is not None  # tenacity sleeps only after a failed attempt here
            on_retry(state.attempt_number, exc, state.next_action.sleep)

    retrying: AsyncRetrying = AsyncRetrying(
        stop=stop_never if policy.max_attempts is None else stop_after_attempt(policy.max_attempts),
        wait=policy.tenacity_wait() if wait_for is None else _WaitFor(wait_for),
        retry=retry_if_exception(lambda e: isinstance(e, Exception) and retry_on(e)),
        before_sleep=before_sleep,
        sleep=(stop.sleep if stop is not None else asyncio.sleep),
        reraise=True,
    )
    return await retrying(attempt)


class _WaitFor(wait_base):
    def __init__(self, wait_for: Callable[[int, BaseException], float]) -> None:
        self._wait_for = wait_for

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome is not None else None
        assert exc is not None  # tenacity waits only after a failed attempt here
        return self._wait_for(retry_state.attempt_number, exc)


class Cooldown:
    """One shared back-off per outside target (e.g. one Consul agent).

    While the target answers RETRY (429/5xx, refused connections), every call to it waits out one
    shared back-off, whatever work asks; the first success resets it. When a back-off has run out,
    one caller (the probe) calls the target and the others wait for its answer: a recovering
    agent gets one call, not the herd that queued up meanwhile. A probe that ends without an
    answer (cancelled, or an error that is no answer of the target's) gives its turn back with
    `abandoned()`; one that never reports is replaced after `probe_lease` seconds."""

    def __init__(self, policy: Backoff, *, clock: Callable[[], float] = time.monotonic,
                 probe_lease: float = 30.0) -> None:
        self.policy = policy
        self._clock = clock
        self._lease = probe_lease
        self.failures = 0  # consecutive RETRY answers, one per back-off window
        self._until = 0.0  # no call before this time (clock)
        self._probe_since: float | None = None  # when the current probe went out
        self._changed = asyncio.Event()

    @property
    def cooling(self) -> bool:
        """Is the target in back-off (the last answer was RETRY)?"""
        return self.failures > 0

    def remaining(self) -> float:
        """Seconds until the back-off ends (0 when it has)."""
        return max(0.0, self._until - self._clock())

    async def ready(self, stop: Stop | None = None, *, probe: bool = True) -> bool:
        """Wait until the target may be called again (at once when it answers). True when this
        caller is the probe: the one call let through after a back-off (it alone may `abandoned()`).
        `probe=False`: a call whose answer may take long (a blocking query) waits out the back-off
        and any probe out, then goes, but never as the probe the others would wait for."""
        while self.failures:
            wait = self._until - self._clock()
            if wait > 0:
                await sleep(wait, stop)
                continue
            now = self._clock()
            if self._probe_since is None or now - self._probe_since >= self._lease:
                if not probe:
                    return False
                self._probe_since = now  # this caller probes; the others wait for its answer
                return True
            changed = self._changed
            lease_left = self._lease - (now - self._probe_since)
            if stop is not None:
                await stop.wait_event(changed, lease_left)
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(lease_left):
                        await changed.wait()
        return False

    def failed(self) -> None:
        """The target answered RETRY: back off (again). Answers of calls that were already under
        way when the back-off started count once: the back-off grows per window, not per call."""
        now = self._clock()
        if self._until > now and self._probe_since is None:
            return  # another call's RETRY already started this window
        self.failures += 1
        self._until = now + self.policy.delay(self.failures)
        self._probe_since = None
        self._wake()

    def succeeded(self) -> None:
        """The target answered (anything not RETRY): no back-off."""
        if self.failures or self._probe_since is not None:
            self.failures = 0
            self._until = 0.0
            self._probe_since = None
            self._wake()

    def abandoned(self) -> None:
        """The probe ended without an answer of the target's: the next caller probes."""
        if self._probe_since is not None:
            self._probe_since = None
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
