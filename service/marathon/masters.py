"""Marathon masters: which one to ask, one request to it, and the retries across them.

Why it looks like this:

- **Several URLs, one in use.** `--marathon` lists every Marathon master. Calls go to one of them
  (the *current* endpoint) and move on to the next one on a connection error, a timeout or
  a 5xx (a standby during leader election answers 503). With more than one URL `GET /v2/leader`
  says which master leads, and that one is preferred if it is in the list (docs/architecture.md
  §6.1: use the leader, move on when one is down); standbys proxy REST calls to the leader, so this
  saves a hop rather than being needed for correctness. The question is asked lazily, once after
  start and once after every failover.
- **Bounded retries.** Transient failures (above) are retried by the one retry rule
  (`service.retry.retry`): a fixed number of attempts (at least one per URL), exponential back-off
  with full jitter and a cap, every retry counted in `mcr_retries_total{system="marathon"}`. Each
  master has one back-off of its own (`service.retry.Cooldown`): while it answers 429/5xx or
  cannot be reached, every call to it waits that out, whatever asks. Every attempt has its own
  total timeout and is timed in `mcr_marathon_request_seconds{call=...}` (the call label is a
  fixed, bounded name). Anything else (4xx, a 200 that is not JSON) is not retried and raises
  `MarathonError` carrying the status and the body, because retrying a request Marathon rejected
  only delays the same answer. Every failed answer is classified by `service.errors`
  (docs/architecture.md §8: 429 and 5xx RETRY, 400/401/403/422 REPORT, counted in
  `mcr_call_errors_total` and logged once per cause).
- **Redirects are followed by hand, bounded**, by the rule the event stream follows too
  (`redirect.py`: credentials only when the scheme is kept or raised, at most 3 hops).
- **Credentials.** `http://user:password@host:8080` is split into a bare URL and a ready
  `Authorization: Basic ...` header value (`endpoint.py`); only the bare URL, without user or
  password, ever appears in logs, errors and reprs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import aiohttp
from yarl import URL

from service.backoff import Backoff
from service.connect import tls_reason
from service.errors import (
    GARBAGE,
    GONE,
    RESYNC_RETRIES,
    Classified,
    classify_status,
    classify_transport,
    record,
    target_unwell,
)
from service.marathon.endpoint import Endpoint, MarathonError, Transient
from service.marathon.redirect import MAX_REDIRECTS, RedirectError, follow, is_redirect
from service.metrics import Metrics
from service.retry import Cooldown, Stop, retry, watching

log = logging.getLogger(__name__)

# Statuses that say "this master cannot answer now", not "your request is wrong".
_TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})

APPS_TIMEOUT_FACTOR = 6  # `GET /v2/apps?embed=apps.tasks` gets this many times the call timeout


class Masters:
    """The Marathon masters of `--marathon` and the machinery every call goes through (module
    docstring); `MarathonClient` adds the calls."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        session: aiohttp.ClientSession,
        metrics: Metrics,
        timeout: float = 10.0,
        attempts: int = 4,
        backoff_initial: float = 0.25,
        backoff_max: float = 5.0,
        token: Callable[[], str | None] | None = None,
        stop: Stop | None = None,
    ) -> None:
        if isinstance(urls, str):  # a comma list straight from --marathon
            urls = [u for u in urls.split(",") if u.strip()]
        if not urls:
            raise ValueError("at least one Marathon URL is needed")
        self.endpoints: tuple[Endpoint, ...] = tuple(replace(Endpoint.parse(u), token=token) for u in urls)
        self.session = session
        self.metrics = metrics
        self.timeout = timeout
        # Every URL gets at least one try before a call gives up.
        self._attempts = max(attempts, len(self.endpoints))
        self._backoff = Backoff(initial=backoff_initial, cap=backoff_max, max_attempts=self._attempts)
        self._cooldowns = tuple(Cooldown(self._backoff) for _ in self.endpoints)  # one back-off per master
        self._stop = stop
        self._current = 0
        self._leader_checked = len(self.endpoints) == 1  # nothing to choose between
        self._leader_lock = asyncio.Lock()

    # -- endpoint selection -------------------------------------------------------------------

    @property
    def current(self) -> Endpoint:
        """The endpoint calls go to now (the leader when known and listed)."""
        return self.endpoints[self._current]

    @property
    def current_index(self) -> int:
        return self._current

    def _failover(self, failed_index: int) -> None:
        """Move past `failed_index`, unless a concurrent call already moved on."""
        if len(self.endpoints) == 1 or self._current != failed_index:
            return
        self._current = (failed_index + 1) % len(self.endpoints)
        self._leader_checked = False
        log.warning("Marathon %s failed; switching to %s",
                    self.endpoints[failed_index].display, self.current.display)

    async def _ensure_leader(self) -> None:
        if self._leader_checked:
            return
        async with self._leader_lock:
            if self._leader_checked:
                return
            await self.find_leader()

    async def find_leader(self) -> Endpoint | None:
        """Ask the current master who leads; switch to that master if it is one of ours.

        A transient failure raises `Transient` (so the calling attempt fails over); any other
        answer that names no leader of ours (404 "There is no leader", a refusal, a leader outside
        our list) keeps the current endpoint, since any live master proxies REST calls to the leader.
        """
        index = self._current
        try:
            obj = await self._attempt("leader", "GET", "/v2/leader", index=index, ok_statuses=(404,))
        except MarathonError as e:  # e.g. an auth plugin that forbids /v2/leader: keep what we have
            log.debug("cannot ask Marathon for its leader: %s", e)
            obj = None
        self._leader_checked = True
        leader = obj.get("leader") if isinstance(obj, dict) else None
        if not isinstance(leader, str) or not leader:
            return None
        lu = URL(leader if "://" in leader else f"{self.current.base.scheme}://{leader}")
        wanted = ((lu.host or "").lower(), lu.port)
        for i, ep in enumerate(self.endpoints):
            if ep.host_port == wanted:
                if i != self._current:
                    log.info("Marathon leader is %s; using it", ep.display)
                    self._current = i
                return ep
        log.debug("Marathon leader %s is not among the configured URLs; staying on %s",
                  leader, self.current.display)
        return None

    # -- the HTTP machinery ---------------------------------------------------------------------

    def _timeout_of(self, call: str) -> float:
        """The resync's read of every app with its tasks grows with the cluster: at 100,000 tasks
        Marathon renders ~55 MB, which took the simulator 5-15 s on a loaded machine, so the
        10 s of the other calls timed it out on every attempt and no resync ever finished
        (`python -m bench scale`, issue 20). Each retry also made Marathon render it again."""
        return self.timeout * APPS_TIMEOUT_FACTOR if call == "apps" else self.timeout

    async def _attempt(
        self,
        call: str,
        method: str,
        path: str,
        *,
        index: int,
        params: Sequence[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        ok_statuses: tuple[int, ...] = (),
        undecoded: bool = False,
    ) -> Any:
        """One request to endpoint `index`; returns decoded JSON (None for 404 in ok_statuses), or
        with `undecoded` the body's bytes, for a caller that decodes it itself (`apps_json`).
        Redirects are followed here, by the rule of `redirect.py`."""
        ep = self.endpoints[index]
        url = ep.url(path)
        auth = ep.headers
        for _ in range(MAX_REDIRECTS + 1):
            started = time.monotonic()
            try:
                async with self.session.request(
                    method, url, params=params, headers={**(headers or {}), **auth}, data=data,
                    timeout=aiohttp.ClientTimeout(total=self._timeout_of(call)), raise_for_status=False,
                    allow_redirects=False,
                ) as resp:
                    status = resp.status
                    location = resp.headers.get("Location")
                    raw = await resp.read()
            except Exception as e:
                classified = classify_transport(e)
                if classified is None:
                    raise  # not Marathon's answer: a bug of ours, which must stay loud
                reason = tls_reason(e, https=url.scheme == "https") or f"{type(e).__name__}: {e}".rstrip(": ")
                self._record(call, ep, classified, f"Marathon {method} {url}: {reason}")
                raise Transient(index, None, "", reason, classified) from e
            finally:
                self.metrics.labelled(self.metrics.marathon_latency, call).observe(time.monotonic() - started)
            if not is_redirect(status, location):
                break
            assert location is not None
            try:
                url, auth = follow(url, location, sender=ep, masters=self.endpoints)
            except RedirectError as e:
                classified = classify_status(status)
                error = MarathonError(method, str(url), status, reason=str(e), classified=classified)
                self._record(call, ep, classified, str(error))
                raise error from None
            params = None  # the Location carries the query
            log.info("Marathon %s %s: %d to %s", method, ep.display, status, url.with_query(None))
        else:
            classified = classify_status(status)
            error = MarathonError(method, str(url), status, reason=f"more than {MAX_REDIRECTS} redirects",
                                  classified=classified)
            self._record(call, ep, classified, str(error))
            raise error
        if 200 <= status < 300 or status in ok_statuses:
            if status >= 300:  # a 404 the call expects: the app (or the leader) is gone
                self._record(call, ep, GONE, f"Marathon {method} {url} -> HTTP {status}")
                return None
            if not raw.strip():
                return None
            if undecoded:
                return raw
            try:
                return json.loads(raw)
            except ValueError as e:
                raise self._not_json(call, ep, method, str(url), status, raw, e) from e
        text = raw.decode("utf-8", errors="replace")
        classified = classify_status(status, text)
        if status in _TRANSIENT_STATUSES or status == 429:
            self._record(call, ep, classified, f"Marathon {method} {url} -> HTTP {status}")
            raise Transient(index, status, text, f"HTTP {status}", classified)
        error = MarathonError(method, str(url), status, text, classified=classified)
        self._record(call, ep, classified, str(error))
        raise error

    def _not_json(self, call: str, ep: Endpoint, method: str, url: str, status: int, raw: bytes,
                  e: Exception) -> MarathonError:
        error = MarathonError(method, url, status, raw.decode("utf-8", errors="replace"),
                              reason=f"response is not JSON: {e}", classified=GARBAGE)
        self._record(call, ep, GARBAGE, str(error))
        return error

    def _record(self, call: str, ep: Endpoint, classified: Classified, message: str) -> None:
        # /v2/info is read before anything else (frameworkId, event transport): `serve` waits for it
        then = "tried again, backing off, until Marathon answers" if call == "info" else RESYNC_RETRIES
        record(self.metrics, system="marathon", call=call, target=ep.display, classified=classified,
               message=message, then=then)

    def _before_sleep(self, attempt: int, exc: BaseException, _delay: float) -> None:
        self.metrics.retries.labels("marathon").inc()
        log.info("Marathon call failed (%s); retry %d of %d", exc, attempt, self._attempts - 1)

    async def _call(
        self,
        call: str,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        ok_statuses: tuple[int, ...] = (),
        undecoded: bool = False,
    ) -> Any:
        """A request with leader preference, failover and bounded retries."""
        async def attempt() -> Any:
            index = self._current
            probe = False
            try:
                await self._ensure_leader()
                index = self._current
                cooldown = self._cooldowns[index]
                if cooldown.cooling:
                    probe = await cooldown.ready(watching(self._stop))
                result = await self._attempt(call, method, path, index=index, params=params,
                                             headers=headers, data=data, ok_statuses=ok_statuses,
                                             undecoded=undecoded)
            except Transient as t:
                failed = self._cooldowns[t.endpoint_index]
                if target_unwell(t.classified):
                    failed.failed()
                elif probe:
                    failed.abandoned()
                self._failover(t.endpoint_index)
                raise
            except MarathonError:
                self._cooldowns[index].succeeded()  # an answer, if not the one wanted
                raise
            except BaseException:
                if probe:
                    self._cooldowns[index].abandoned()
                raise
            self._cooldowns[index].succeeded()
            return result

        try:
            return await retry(attempt, policy=self._backoff, stop=watching(self._stop),
                               retry_on=lambda e: isinstance(e, Transient), on_retry=self._before_sleep)
        except Transient as t:
            url = str(self.endpoints[t.endpoint_index].url(path))
            raise MarathonError(method, url, t.status, t.body,
                                reason=f"gave up after {self._attempts} attempts: {t.reason}",
                                classified=t.classified) from t

    @contextlib.contextmanager
    def _shape(self, call: str, method: str, path: str) -> Iterator[None]:
        """Turn a parser's ValueError into a MarathonError: to callers, a response they cannot
        use is a failed call like any other (a REPORT: the same answer would come back)."""
        try:
            yield
        except ValueError as e:
            error = MarathonError(method, str(self.current.url(path)), 200,
                                  reason=f"unexpected response: {e}", classified=GARBAGE)
            self._record(call, self.current, GARBAGE, str(error))
            raise error from e
