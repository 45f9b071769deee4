"""The one wrapper every Consul call goes through, for the agents' client and the lock's alike.

It times the call (`mcr_consul_request_seconds{call}`), classifies a failed answer by the error
contract (`service.errors`, docs/architecture.md §8), counts it (and logs a REPORT once), and
retries RETRY answers up to `attempts` in all (`service.retry.retry`). Anything raised that is not
an answer of Consul's (an `AttributeError` of ours) is not classified and stays loud.

The back-off is the agent's, not the call's (`service.retry.Cooldown`, docs/architecture.md §7):
while the agent answers 429/5xx or cannot be reached, every call to it, whatever work asks, waits
out one shared back-off, and one call at a time probes it; its first other answer ends the
back-off. So work that arrives for an app meanwhile (hints, a resync) cannot call a failing agent
again at once, each with a back-off of its own (issue 18: 28 register calls in 3.5 s).

One wrapper, so that the lock's calls cannot drift from the agents' (they once had a copy of this
loop that had lost the latency timing). One back-off per agent address, whichever client calls it
(`AgentCooldowns`): the lock agent is usually also the agent of the tasks on its host, and the lock's
calls and the registrations' must not each back off on their own. A blocking read (the lock's
watch of its key) waits out the back-off but is never the probe the other callers wait for: a
recovered agent answers it only when the key changes or its wait ends, seconds later.
"""

from __future__ import annotations

import contextlib
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from typing import TypeVar

from service.backoff import Backoff
from service.connect import tls_reason
from service.errors import (
    GARBAGE,
    NOT_FOUND,
    RESYNC_RETRIES,
    RETRY,
    CallError,
    Classified,
    classify_consul,
    record,
    target_unwell,
)
from service.metrics import Metrics
from service.retry import ATTEMPT_GATE, Cooldown, Stop, retry, watching

T = TypeVar("T")
# The agent's back-off while it answers RETRY: short, since the whole key is retried later anyway.
CALL_BACKOFF = Backoff(initial=0.1, cap=2.0)


def _no_wait(_lo: float, _hi: float) -> float:
    return 0.0


# The attempts of one call wait for nothing of their own: the wait is the agent's Cooldown.
_ATTEMPTS = replace(CALL_BACKOFF, uniform=_no_wait)


class AgentCooldowns:
    """One `Cooldown` per Consul agent address (host and port), shared by every client that calls
    that agent: the registrations' `AgentClient` and the lock's `ConsulLockClient`."""

    def __init__(self, backoff: Backoff | None = None) -> None:
        self._backoff = backoff  # None: CALL_BACKOFF, read when an agent's Cooldown is made
        self._by_agent: dict[tuple[str, int], Cooldown] = {}

    def of(self, url: str) -> Cooldown:
        parts = urllib.parse.urlsplit(url)
        # the port the client calls (`connect.consul_client`): Consul's 8500 when the URL names none
        key = ((parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 8500))
        cooldown = self._by_agent.get(key)
        if cooldown is None:
            cooldown = self._by_agent[key] = Cooldown(self._backoff or CALL_BACKOFF)
        return cooldown


class ConsulError(CallError):
    """A Consul agent call failed (a REPORT answer, or RETRY answers until the attempts ran out);
    the message names the agent and the call, `verdict`/`cause` say what the answer meant."""


class ConsulCall:
    """Calls to one agent (`url`): timed, classified, counted, retried.

    `then` says, in the caller's words, what happens after a refused call (the reconciler's next
    resync, the lock's next round); it goes into the one log line of a REPORT."""

    def __init__(self, url: str, *, metrics: Metrics, attempts: int, then: str = RESYNC_RETRIES,
                 stop: Stop | None = None, cooldown: Cooldown | None = None) -> None:
        self.url = url
        self._metrics = metrics
        self._attempts = replace(_ATTEMPTS, max_attempts=max(1, attempts))
        self._then = then
        self._stop = stop
        # this agent's one back-off, shared by every call to it
        self.cooldown = cooldown if cooldown is not None else Cooldown(CALL_BACKOFF)

    async def __call__(self, call: str, fn: Callable[[], Awaitable[T]], *,
                       counted_only: frozenset[str] = frozenset(), blocking: bool = False) -> T:
        """One call, retrying RETRY answers up to `attempts` in all, each attempt after the agent's
        back-off (`Stopped` when the stop signal comes meanwhile).

        A failed answer whose reason is in `counted_only` is counted, neither logged nor retried,
        and raised at once: the caller gives it a meaning of its own and says so itself. A
        `blocking` call (a blocking query) is never the agent's probe (module docstring)."""
        def retryable(exc: BaseException) -> bool:
            return isinstance(exc, ConsulError) and exc.verdict is RETRY and exc.cause not in counted_only

        return await retry(lambda: self._attempt(call, fn, counted_only, blocking), policy=self._attempts,
                           stop=watching(self._stop),
                           retry_on=retryable, on_retry=self._retrying)

    def _retrying(self, _attempt: int, _exc: BaseException, _delay: float) -> None:
        self._metrics.retries.labels("consul").inc()

    async def _attempt(self, call: str, fn: Callable[[], Awaitable[T]], counted_only: frozenset[str],
                       blocking: bool) -> T:
        cooldown = self.cooldown
        probe = await cooldown.ready(watching(self._stop), probe=not blocking) if cooldown.cooling else False
        gate = ATTEMPT_GATE.get()
        if gate is not None:
            try:
                gate()  # the write gate: shut now (the lease ran out while we waited), nothing is sent
            except BaseException:
                if probe:
                    cooldown.abandoned()
                raise
        try:
            result = await self._timed(call, fn)
        except Exception as exc:
            classified = classify_consul(exc)
            if classified is None:
                if probe:
                    cooldown.abandoned()
                raise  # not an answer of Consul's: a bug of ours, which must stay loud
            if target_unwell(classified):
                cooldown.failed()
            else:
                cooldown.succeeded()
            detail = tls_reason(exc, https=self.url.startswith("https://")) or f"{type(exc).__name__}: {exc}"
            if classified.reason in counted_only:
                self.count(call, classified)
                raise ConsulError(f"consul agent {self.url}: {call} failed: {detail}", classified) from exc
            raise self.fail(call, classified, detail) from exc
        except BaseException:
            if probe:
                cooldown.abandoned()  # cancelled: no answer either way
            raise
        cooldown.succeeded()
        return result

    async def _timed(self, call: str, fn: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        try:
            return await fn()
        finally:
            self._metrics.labelled(self._metrics.consul_latency, call).observe(time.perf_counter() - started)

    def count(self, call: str, classified: Classified) -> None:
        """Count an answer without logging it (its caller logs what it means)."""
        self._metrics.call_errors.labels("consul", call, classified.verdict.value, classified.reason).inc()

    def fail(self, call: str, classified: Classified, detail: str) -> ConsulError:
        """Count (and, for a REPORT, log once) a failed answer; the error to raise for it."""
        message = f"consul agent {self.url}: {call} failed: {detail}"
        record(self._metrics, system="consul", call=call, target=self.url, classified=classified, message=message,
               then=self._then)
        return ConsulError(message, classified)

    @contextlib.contextmanager
    def shape(self, call: str) -> Iterator[None]:
        """JSON that is not the shape Consul answers (a proxy's own JSON, a truncated object) is
        garbage, a REPORT: never an AttributeError out of our parsing."""
        try:
            yield
        except (AttributeError, TypeError, ValueError, KeyError) as exc:
            raise self.fail(call, GARBAGE, f"unexpected answer: {type(exc).__name__}: {exc}") from exc

    def answered(self, call: str, value: T | None) -> T:
        """py-consul returns None where the agent answered 404 to a read that must exist (a proxy
        refusing the endpoint, an agent too old for it): a REPORT, never an empty answer."""
        if value is None:
            raise self.fail(call, NOT_FOUND, "404 (the endpoint is not there)")
        return value
