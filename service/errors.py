"""The error contract: what every answer of Consul, Docker and Marathon means (docs/architecture.md §8).

Every outside call ends in one of three verdicts, decided here and nowhere else:

- `RETRY`: the other side cannot answer *now* (connection refused or reset, a timeout, 429, 500,
  502, 503, 504, Consul's "No cluster leader", Marathon's "Could not determine the current
  leader"). The client retries the call with back-off, a bounded number of times; then the work
  queue retries the work, a bounded number of times; then the next resync re-derives it.
- `DONE`: the answer *is* the state we want (a 404 deregistering an id that is gone, a 404
  inspecting a container that is gone). Not an error at all for the caller.
- `REPORT`: our bug or the operator's (400, 401, 403, 405, 409, 422, an answer that is not JSON,
  a Consul read without its index header, a 404 from an endpoint that must exist, a TLS
  certificate not trusted). Asking again
  gives the same answer, so it is never retried in a loop: it is counted in
  `mcr_call_errors_total{system, call, verdict, reason}`, logged once per distinct
  (system, agent or URL, call, reason), and the work it stopped is left to the next resync.

Why a module of its own: the old retry predicate named an exception that py-consul does not have
(`consul.base.BadRequest`), so every 4xx became an AttributeError inside tenacity. Classification
is now done once, on the client libraries' *public* exception types (`consul.exceptions`,
aiohttp's `ClientError` tree, builtin `TimeoutError`/`OSError`) and on HTTP statuses, and is
table-tested. The `reason` is a short code from a bounded set (`REASONS`), so it is safe as a
metric label; the free text (the answer's body) goes only into the exception and the log line.

Only failures pass through here: a successful call allocates nothing for the contract.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp
import consul
import consul.exceptions

from service.metrics import Metrics

log = logging.getLogger(__name__)


class Verdict(enum.Enum):
    RETRY = "retry"
    DONE = "done"
    REPORT = "report"


RETRY = Verdict.RETRY
DONE = Verdict.DONE
REPORT = Verdict.REPORT

# Every `reason` label value there is (the metric's cardinality is bounded by this set).
REASONS = frozenset({
    "connection", "timeout", "rate-limited", "server-error", "unavailable", "no-leader",
    "bad-request", "unauthorized", "acl-denied", "not-found", "method-not-allowed", "conflict",
    "invalid", "client-error", "redirect", "garbage", "no-index-header", "gone", "config", "tls",
})


@dataclass(frozen=True, slots=True)
class Classified:
    """A failure's verdict and its short reason code (one of `REASONS`)."""

    verdict: Verdict
    reason: str


# Built once: classification on the failure path allocates no new verdict objects.
_STATUS: dict[int, Classified] = {
    400: Classified(REPORT, "bad-request"),
    401: Classified(REPORT, "unauthorized"),
    403: Classified(REPORT, "acl-denied"),
    404: Classified(REPORT, "not-found"),
    405: Classified(REPORT, "method-not-allowed"),
    409: Classified(REPORT, "conflict"),
    422: Classified(REPORT, "invalid"),
    429: Classified(RETRY, "rate-limited"),
    500: Classified(RETRY, "server-error"),
    502: Classified(RETRY, "unavailable"),
    503: Classified(RETRY, "unavailable"),
    504: Classified(RETRY, "unavailable"),
}
_CLIENT_ERROR = Classified(REPORT, "client-error")
_SERVER_ERROR = Classified(RETRY, "server-error")
_REDIRECT = Classified(REPORT, "redirect")
CONNECTION = Classified(RETRY, "connection")
TIMEOUT = Classified(RETRY, "timeout")
NO_LEADER = Classified(RETRY, "no-leader")
GARBAGE = Classified(REPORT, "garbage")
NO_INDEX = Classified(REPORT, "no-index-header")
NOT_FOUND = _STATUS[404]
GONE = Classified(DONE, "gone")
CONFIG = Classified(REPORT, "config")
# A certificate the client does not trust, or no TLS where it is expected: the operator's to fix.
TLS = Classified(REPORT, "tls")

# The texts by which Consul and Marathon say "no leader right now" (reference/consul.md §3,
# devcluster/faults.py): a retry, whatever status carries them.
_NO_LEADER_TEXTS = ("No cluster leader", "No known Consul servers", "Could not determine the current leader")


def classify_status(status: int, body: str = "") -> Classified:
    """An HTTP status (not 2xx) as a verdict. 404 is REPORT here: the callers for which a 404
    means "gone" (deregister, inspect) say so themselves, before asking."""
    if status >= 500 and any(text in body for text in _NO_LEADER_TEXTS):
        return NO_LEADER
    found = _STATUS.get(status)
    if found is not None:
        return found
    if 300 <= status < 400:
        return _REDIRECT
    return _SERVER_ERROR if status >= 500 else _CLIENT_ERROR


# RETRY reasons that say the target itself is unwell (overloaded, failing, unreachable, without a
# leader): while it answers so, every call to it backs off together (`service.retry.Cooldown`).
_UNWELL = frozenset({"connection", "timeout", "rate-limited", "server-error", "unavailable", "no-leader"})


def target_unwell(classified: Classified) -> bool:
    """Does this failed answer say "the target cannot serve now", rather than "this request"?"""
    return classified.verdict is RETRY and classified.reason in _UNWELL


def classify_transport(exc: BaseException) -> Classified | None:
    """A failure below HTTP (no answer at all), or None if `exc` is not one."""
    # aiohttp's timeouts are both TimeoutError and ClientError: test for the timeout first
    if isinstance(exc, TimeoutError):
        return TIMEOUT
    # before connection errors, of which aiohttp's TLS errors are a kind
    if isinstance(exc, (aiohttp.ClientSSLError, ssl.SSLError)):
        return TLS
    if isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError)):
        return CONNECTION
    if isinstance(exc, aiohttp.ClientResponseError):
        return classify_status(exc.status, exc.message)
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return CONNECTION
    return None


def _leading_status(text: str) -> int | None:
    head = text[:3]
    return int(head) if len(text) >= 3 and head.isdigit() and (len(text) == 3 or text[3] == " ") else None


def classify_consul(exc: BaseException) -> Classified | None:
    """A py-consul call's failure, or None if `exc` is not a failure of the call (a bug of ours,
    which must stay loud). py-consul's mapping (consul/callback.py `CB._status`): 400 BadRequest
    ("400 <body>"), 401 ACLDisabled, 403 ACLPermissionDenied, 404 NotFound (only where 404 is not
    allowed), other 4xx ClientError ("<code> <body>"), 5xx ConsulException ("<code> <body>"),
    a body that is not JSON ConsulException("Failed to decode JSON: ..."), a blocking read without
    X-Consul-Index ConsulException("Missing index header: ..."), status 599 Timeout. Transport
    errors come through unwrapped (aiohttp, OSError)."""
    if isinstance(exc, consul.exceptions.Timeout):
        return TIMEOUT
    if isinstance(exc, consul.exceptions.BadRequest):
        return _STATUS[400]
    if isinstance(exc, consul.exceptions.ACLDisabled):
        return _STATUS[401]
    if isinstance(exc, consul.exceptions.ACLPermissionDenied):
        return _STATUS[403]
    if isinstance(exc, consul.exceptions.NotFound):
        return NOT_FOUND
    if isinstance(exc, consul.ConsulException):  # ClientError and the plain ones
        text = str(exc)
        status = _leading_status(text)
        if status is not None:
            return classify_status(status, text)
        if text.startswith("Missing index header"):
            return NO_INDEX
        if text.startswith("Failed to decode JSON"):
            return GARBAGE
        return _SERVER_ERROR if not isinstance(exc, consul.exceptions.ClientError) else _CLIENT_ERROR
    if isinstance(exc, UnicodeDecodeError):  # py-consul decodes every body as UTF-8
        return GARBAGE
    return classify_transport(exc)


class CallError(Exception):
    """An outside call that failed, with its verdict. The clients' own error types (`ConsulError`,
    `DockerLookupError`, `MarathonError`) are these, so the reconciler can tell "try again soon"
    from "leave it to the next resync" without knowing which system answered."""

    verdict: Verdict = RETRY
    cause: str = "connection"

    def __init__(self, message: str, classified: Classified | None = None) -> None:
        super().__init__(message)
        if classified is not None:
            self.verdict = classified.verdict
            self.cause = classified.reason

    @property
    def reported(self) -> bool:
        return self.verdict is REPORT


RESYNC_RETRIES = "not retried until the next resync"


def record(metrics: Metrics, *, system: str, call: str, target: str, classified: Classified, message: str,
           then: str = RESYNC_RETRIES) -> None:
    """Count one failed answer; log a REPORT once per distinct (system, target, call, reason).

    `then` tells the operator what happens next, in the caller's words: a reconcile call waits for
    the next resync, the lock tries at its next round, the event stream reconnects.

    `target` is the agent, engine or Marathon URL (never with credentials). RETRY answers are not
    logged here: the caller logs when its retries run out, and `mcr_retries_total` counts them;
    DONE answers are the state we want and are logged at debug level only."""
    metrics.call_errors.labels(system, call, classified.verdict.value, classified.reason).inc()
    if classified.verdict is not REPORT:
        if classified.verdict is DONE:
            log.debug("%s %s: %s (%s): done", system, target, call, classified.reason)
        return
    key = (system, target, call, classified.reason)
    if key in metrics.reported_causes:
        log.debug("%s", message)
        return
    metrics.reported_causes.add(key)
    log.error("%s %s: %s refused (%s), %s; further occurrences are counted in mcr_call_errors_total only: %s",
              system, target, call, classified.reason, then, message)


def consume_exception(task: asyncio.Future[Any]) -> None:
    """Waiters get the error; this only keeps asyncio from logging it when none are left (or when
    nobody ends up waiting, as for the reconciler's unused early lookups)."""
    if not task.cancelled():
        task.exception()
