"""A keyed work queue with coalescing, per-key exclusion and delayed retries. Knows nothing of
Marathon or Consul: keys are any hashable value, work any value with a merge function.

After client-go's `util/workqueue` (dirty set + processing set) and kopf's `queueing.py` (per-object
serial workers). The contract, which every consumer relies on:

- `add(key, work)` records `work` as pending for `key`, merged (`merge(old, new)`) into whatever is
  already pending for it: a burst of hints for one key costs one run, not one per hint.
- `get()` hands a worker one key with all its pending work, and marks the key *processing* until
  the worker calls `done(key)`. A key being processed is never handed to a second worker: two runs
  for one key never overlap, so their writes never race.
- Work added while its key is processing stays pending and is handed out once more after `done`:
  nothing added is lost because it arrived mid-run, and it runs after the run it could contradict.
- `add_after(key, work, delay)` adds later (a retry). `retry(key, work)` is `add_after` with the
  queue's `Backoff` policy, counting the key's consecutive failures; once the policy is exhausted it
  drops the work and returns None (the caller hands over to a slower, complete mechanism; here: the
  resync). `forget(key)` resets the count after a success.
- `wait_idle()` returns when nothing is pending, processing or waiting for a retry.
- `clear()` drops pending and delayed work (returned) but keeps the queue running: keys being
  processed finish and later adds queue as usual.
- `shutdown()` cancels delayed work, drops (and returns) pending work, ignores later adds, makes
  every `get()` raise `ShutDown` and releases `wait_idle()`.

Invariants (checked by tests/unit/test_workqueue.py):
  a key is in at most one of {ready, processing}; a ready key has pending work;
  `depth` = number of ready keys; `in_flight` = number of processing keys.

Single event loop, no threads: every method except `get` and `wait_idle` is synchronous, so no
lock is needed. Time is read from an injectable `Clock`, so retry timing is testable without
sleeping. Depth and in-flight changes are reported to `hooks` (metrics).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from service.backoff import Backoff

K = TypeVar("K", bound=Hashable)
W = TypeVar("W")


class ShutDown(Exception):
    """The queue was shut down: a worker waiting in `get()` should return."""


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Where delayed work gets its time from (the event loop, or a test's manual clock)."""

    def now(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer: ...


class LoopClock:
    """The running event loop's timers and monotonic time."""

    def now(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)


@dataclass(frozen=True, slots=True)
class QueueHooks:
    """Called with the new value whenever depth (keys ready) or in-flight (keys processing) change."""

    depth: Callable[[int], None] = lambda _: None
    in_flight: Callable[[int], None] = lambda _: None


class WorkQueue(Generic[K, W]):
    def __init__(self, *, merge: Callable[[W, W], W], retry_policy: Backoff, clock: Clock | None = None,
                 hooks: QueueHooks | None = None) -> None:
        self._merge = merge
        self._policy = retry_policy
        self._clock: Clock = clock or LoopClock()
        self._hooks = hooks or QueueHooks()
        self._pending: dict[K, W] = {}  # the dirty set, with each key's merged work
        self._ready: deque[K] = deque()  # keys with pending work and no worker, in arrival order
        self._queued: set[K] = set()  # the keys in _ready
        self._processing: set[K] = set()
        self._delayed: dict[int, Timer] = {}
        self._delayed_ids = 0
        self._failures: dict[K, int] = {}
        # workers waiting in get(), woken one per ready key (not all at once: a burst of adds
        # must not cost every idle worker a wake-up per add)
        self._getters: deque[asyncio.Future[None]] = deque()
        self._idle = asyncio.Event()
        self._idle.set()
        self._shut = False

    # ---------------------------------------------------------------- producers
    def add(self, key: K, work: W) -> None:
        if self._shut:
            return
        current = self._pending.get(key)
        self._pending[key] = work if current is None else self._merge(current, work)
        self._idle.clear()
        if key not in self._processing and key not in self._queued:
            self._queued.add(key)
            self._ready.append(key)
            self._wake_one()
            self._hooks.depth(len(self._queued))

    def add_after(self, key: K, work: W, delay: float) -> None:
        if self._shut:
            return
        if delay <= 0:
            self.add(key, work)
            return
        self._delayed_ids += 1
        ident = self._delayed_ids

        def fire() -> None:
            self._delayed.pop(ident, None)
            self.add(key, work)
            self._check_idle()

        self._idle.clear()
        self._delayed[ident] = self._clock.call_later(delay, fire)

    def retry(self, key: K, work: W) -> float | None:
        """Re-add `work` after the policy's back-off for the key's next failure; None (work dropped,
        failure count reset) once the policy is exhausted."""
        failures = self._failures.get(key, 0) + 1
        if self._policy.exhausted(failures):
            self._failures.pop(key, None)
            return None
        self._failures[key] = failures
        delay = self._policy.delay(failures)
        self.add_after(key, work, delay)
        return delay

    def forget(self, key: K) -> None:
        """The key succeeded: its next failure backs off from the start again."""
        self._failures.pop(key, None)

    def peek(self, key: K) -> W | None:
        """The work pending for `key` (added since its last `get`), left where it is; None if none.
        The caller must not change it: it is still the queue's."""
        return self._pending.get(key)

    def failures(self, key: K) -> int:
        return self._failures.get(key, 0)

    # ---------------------------------------------------------------- consumers
    async def get(self) -> tuple[K, W]:
        """The next ready key and all its pending work; the key is processing until `done(key)`."""
        while True:
            if self._shut:
                raise ShutDown
            if self._ready:
                key = self._ready.popleft()
                self._queued.discard(key)
                work = self._pending.pop(key)
                self._processing.add(key)
                self._hooks.depth(len(self._queued))
                self._hooks.in_flight(len(self._processing))
                return key, work
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except BaseException:
                if not waiter.done():
                    waiter.cancel()
                    self._getters.remove(waiter)
                elif self._ready:  # woken, then cancelled: pass the wake-up on
                    self._wake_one()
                raise

    def _wake_one(self) -> None:
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def done(self, key: K) -> None:
        """The worker finished `key`; work added meanwhile is made ready again."""
        self._processing.discard(key)
        if key in self._pending and key not in self._queued and not self._shut:
            self._queued.add(key)
            self._ready.append(key)
            self._wake_one()
        self._hooks.depth(len(self._queued))
        self._hooks.in_flight(len(self._processing))
        self._check_idle()

    # ---------------------------------------------------------------- lifecycle and views
    async def wait_idle(self) -> None:
        await self._idle.wait()

    def shutdown(self) -> list[W]:
        """Stop: cancel delayed work, drop pending work (returned, so the caller can release
        whoever waits on it), wake every `get()` into `ShutDown`. `wait_idle()` returns."""
        self._shut = True
        for timer in self._delayed.values():
            timer.cancel()
        self._delayed.clear()
        dropped = list(self._pending.values())
        self._pending.clear()
        self._ready.clear()
        self._queued.clear()
        while self._getters:
            self._wake_one()
        self._idle.set()
        return dropped

    def clear(self) -> list[W]:
        """Drop pending and delayed work (returned), keep running: keys being processed finish,
        later adds queue as usual. Used when this instance stops being the writer: what was queued
        is re-derived by the resync the next writer runs."""
        for timer in self._delayed.values():
            timer.cancel()
        dropped = list(self._pending.values())
        self._delayed.clear()
        self._pending.clear()
        self._ready.clear()
        self._queued.clear()
        self._failures.clear()
        self._hooks.depth(0)
        self._check_idle()
        return dropped

    def _check_idle(self) -> None:
        if not self._pending and not self._processing and not self._delayed:
            self._idle.set()

    @property
    def is_shut_down(self) -> bool:
        return self._shut

    def pending_keys(self) -> list[K]:
        return list(self._pending)

    def processing_keys(self) -> list[K]:
        return list(self._processing)

    @property
    def depth(self) -> int:
        return len(self._queued)

    @property
    def in_flight(self) -> int:
        return len(self._processing)

    @property
    def delayed(self) -> int:
        return len(self._delayed)
