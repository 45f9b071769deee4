"""The one back-off policy: capped exponential growth with full jitter, and when to give up.

Every place the registrar waits before trying again uses a `Backoff` value: the reconcile work
queue's retries, the SSE reconnects, the start-up loops of `runtime` (transport pick, callback
subscription), the resync loop after a failed resync, and the Consul and Marathon clients (through
`Backoff.tenacity_wait`, since they retry with tenacity). One formula means one thing to tune and
one thing to test.

Full jitter (a delay drawn uniformly from [0, ceiling]) rather than equal or no jitter: many keys
failing on the same outage (an agent restarting under a thousand tasks) must not come back in
lockstep; of the jitter schemes, full jitter spreads retries widest for the same mean wait
(docs/architecture.md §7). `ceiling(attempt)` is the
deterministic bound, for callers that schedule rather than contend (the resync loop).

`max_attempts` is the retry *policy* half: after that many failed attempts the caller stops
retrying this way and hands over (the work queue leaves the key to the next resync, which re-reads
everything). None retries for ever (event source, start-up loops: there is nothing to hand over to).
The random source is injectable so tests can pin delays.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from tenacity import RetryCallState
from tenacity.wait import wait_base


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry number `attempt` (1 = the first retry) is uniform in
    [0, min(cap, initial * 2 ** (attempt - 1))]."""

    initial: float
    cap: float
    max_attempts: int | None = None
    uniform: Callable[[float, float], float] = field(default=random.uniform, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.cap < self.initial:
            raise ValueError(f"back-off needs 0 < initial <= cap, got initial={self.initial} cap={self.cap}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")

    def ceiling(self, attempt: int) -> float:
        """The largest delay before retry `attempt` (>= 1)."""
        # the exponent is bounded so that a key failing for days cannot overflow a float
        return min(self.cap, self.initial * 2.0 ** min(max(attempt, 1) - 1, 64))

    def delay(self, attempt: int) -> float:
        """A jittered delay before retry `attempt` (>= 1)."""
        return self.uniform(0.0, self.ceiling(attempt))

    def exhausted(self, failures: int) -> bool:
        """After `failures` failed attempts, should the caller stop retrying and hand over?"""
        return self.max_attempts is not None and failures >= self.max_attempts

    def tenacity_wait(self, *, offset: int = 0) -> wait_base:
        """This policy as a tenacity `wait=`. `offset` counts attempts made before tenacity took
        over (the Consul client makes its first attempt outside tenacity, see there)."""
        return _TenacityWait(self, offset)


class _TenacityWait(wait_base):
    def __init__(self, backoff: Backoff, offset: int) -> None:
        self._backoff = backoff
        self._offset = offset

    def __call__(self, retry_state: RetryCallState) -> float:
        # tenacity numbers the attempt that just failed from 1: the wait after it precedes retry n
        return self._backoff.delay(retry_state.attempt_number + self._offset)
