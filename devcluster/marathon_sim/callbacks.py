"""HTTP callback delivery (Marathon <= 1.4, `HttpEventActor`), including its back-off.

Each event is POSTed once, concurrently, to every subscribed URL (Content-Type
`application/json; charset=UTF-8`, `Accept: application/json`), with no retry and no ordering
between requests. A failure (non-2xx, connect error, timeout after `--http-event-request-timeout`,
or a 2xx that took `--http-event-callback-slow-consumer-timeout` or longer) makes the URL skipped for
2^n s after the n-th consecutive failure; events in that window are dropped for it. One success
resets the count. Subscribers are never removed automatically.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from devcluster.marathon_sim.config import SimConfig
from devcluster.marathon_sim.events import Event

log = logging.getLogger("marathon_sim.callbacks")


@dataclass
class Limit:
    """`EventNotificationLimit`: consecutive failures and the monotonic time until which we skip."""

    failures: int = 0
    skip_until: float = 0.0
    delivered: int = 0
    dropped: int = 0
    failed: int = 0
    last_error: str | None = None

    def record(self, error: str | None) -> float:
        """One delivery's outcome: a success resets the back-off, the n-th failure in a row skips the
        URL for 2^n s. Returns the back-off in seconds (0 after a success)."""
        if error is None:
            self.failures = 0
            self.skip_until = 0.0
            self.delivered += 1
            return 0.0
        self.failures += 1
        self.failed += 1
        self.last_error = error
        # the exponent is capped so that ~1,000 failures in a row cannot overflow a float
        # (2^40 s is beyond any test or benchmark)
        backoff = 2.0 ** min(self.failures, 40)
        self.skip_until = time.monotonic() + backoff
        return backoff


class CallbackDispatcher:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.subscribers: list[str] = []
        self.limits: dict[str, Limit] = {}
        self._session: aiohttp.ClientSession | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    def subscribe(self, url: str) -> None:
        if url not in self.subscribers:
            self.subscribers.append(url)
            self.limits.setdefault(url, Limit())

    def unsubscribe(self, url: str) -> bool:
        if url in self.subscribers:
            self.subscribers.remove(url)
            self.limits.pop(url, None)
            return True
        log.warning("unsubscribe of unknown callback URL %s", url)
        return False

    def offer(self, event: Event) -> None:
        now = time.monotonic()
        body = json.dumps(event.payload(light=False), separators=(",", ":"), ensure_ascii=False).encode()
        for url in list(self.subscribers):
            limit = self.limits.setdefault(url, Limit())
            if now < limit.skip_until:
                limit.dropped += 1
                continue
            task = asyncio.create_task(self._post(url, body, limit))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _post(self, url: str, body: bytes, limit: Limit) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        started = time.monotonic()
        error: str | None = None
        try:
            async with self._session.post(
                url, data=body, timeout=aiohttp.ClientTimeout(total=self.cfg.http_event_request_timeout),
                headers={"Content-Type": "application/json; charset=UTF-8", "Accept": "application/json"},
            ) as resp:
                await resp.read()
                if not 200 <= resp.status < 300:
                    error = f"HTTP {resp.status}"
                elif time.monotonic() - started >= self.cfg.http_event_callback_slow_consumer_timeout:
                    error = "slow consumer"
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        backoff = limit.record(error)
        if error is not None:
            log.warning("callback to %s failed (%s): skipping it for %.0f s", url, error, backoff)

    def state(self) -> dict[str, Any]:
        now = time.monotonic()
        return {"subscribers": [
            {"callbackUrl": url, "consecutiveFailures": (lim := self.limits.get(url, Limit())).failures,
             "skippedForSeconds": round(max(0.0, lim.skip_until - now), 3), "delivered": lim.delivered,
             "failed": lim.failed, "dropped": lim.dropped, "lastError": lim.last_error}
            for url in self.subscribers]}

    async def close(self) -> None:
        for t in list(self._inflight):
            t.cancel()
        if self._session is not None:
            await self._session.close()
