"""The registrar's HTTP callback subscription in Marathon ≤ 1.4 (docs/architecture.md §6.1).

Marathon keeps subscribers in ZooKeeper and never removes a failing one, but an operator, a
ZooKeeper restore or another tool can; and while a subscriber is missing, its events are simply
not sent. So the subscription is not a one-off at start: `ensure()` runs at start and at every
resync, checks that our URL is listed and re-subscribes if not (subscribing is idempotent in
Marathon, a repeat is a 200 no-op). `remove()` runs on a clean shutdown, within a bounded time,
because SIGTERM gives the process only a few seconds and a stale subscriber merely costs Marathon
failed POSTs with back-off, not lost correctness.
"""

from __future__ import annotations

import asyncio
import logging

from service.marathon.client import MarathonClient, MarathonError
from service.metrics import Metrics

log = logging.getLogger(__name__)


class CallbackSubscription:
    """Keeps `callback_url` subscribed to Marathon's event callbacks."""

    def __init__(self, client: MarathonClient, callback_url: str, metrics: Metrics, *,
                 remove_timeout: float = 5.0) -> None:
        self.client = client
        self.callback_url = callback_url
        self.metrics = metrics
        self.remove_timeout = remove_timeout

    async def ensure(self) -> bool:
        """Subscribe if our URL is missing. Returns True when it had to (re-)subscribe.

        Raises `MarathonError` when Marathon cannot be asked or refuses (e.g. callbacks are not
        enabled); the gauge then says "not subscribed", since that is no longer known to hold.
        """
        try:
            if self.callback_url in await self.client.subscriptions():
                self.metrics.subscription.set(1)
                return False
            log.warning("callback URL %s is not subscribed in Marathon; subscribing", self.callback_url)
            await self.client.subscribe(self.callback_url)
        except MarathonError:
            self.metrics.subscription.set(0)
            raise
        self.metrics.subscription.set(1)
        return True

    async def remove(self) -> bool:
        """Unsubscribe, giving up after `remove_timeout` seconds. Returns whether Marathon confirmed it.

        Never raises for a Marathon failure: this runs during shutdown, where the only useful
        reaction to a failure is a log line.
        """
        try:
            async with asyncio.timeout(self.remove_timeout):
                await self.client.unsubscribe(self.callback_url)
        except (MarathonError, TimeoutError) as e:
            log.warning("could not unsubscribe %s from Marathon: %s", self.callback_url, e or "timed out")
            return False
        self.metrics.subscription.set(0)
        log.info("unsubscribed %s from Marathon events", self.callback_url)
        return True
