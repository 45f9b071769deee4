"""The lock holder's liveness registration in the lock agent: a service with an HTTP check of our
/health, which the lock's session is bound to beside serfHealth (docs/architecture.md §3.1), so a
hung or killed holder loses the lock within the check's interval, not its session's TTL.

Registered at every round of contention (the agent may have lost it: restarted, reaped;
re-registering an identical one changes nothing) and deregistered once, after the session is gone
(deregistering first would invalidate the session). Apart from `service.leadership` because none
of it decides who writes: a registration that fails leaves a lock bound to serfHealth and its TTL.
"""

from __future__ import annotations

import asyncio
import logging

from service.clients import SessionKV
from service.lease import SERF_HEALTH, AliveCheck
from service.retry import Stopped, farewell

log = logging.getLogger("service.leadership")


class Liveness:
    """The registration of `alive` (None: no check, the session is bound to serfHealth only)."""

    def __init__(self, client: SessionKV, alive: AliveCheck | None) -> None:
        self._client = client
        self._alive = alive
        self._registered = False
        self._failure: str | None = None  # the cause last logged (a repeat at debug)

    async def checks(self) -> list[str] | None:
        """Register (again); the checks a new session is bound to, None for Consul's default
        (serfHealth alone)."""
        alive = self._alive
        if alive is None:
            return None
        try:
            await self._client.register_alive(alive)
        except Stopped:
            raise
        except Exception as exc:  # e.g. a token without service:write on its name: still a lock
            why = (f"lock: cannot register the liveness check {alive.service_id} ({exc}); this session is "
                   "bound to serfHealth and its TTL only (slower failover after a crash)")
            log.log(logging.DEBUG if why == self._failure else logging.WARNING, "%s", why)
            self._failure = why
            return None
        self._registered = True
        return [SERF_HEALTH, alive.check_id]

    async def deregister(self) -> None:
        """After the session is gone: leave nothing behind (sent after the stop signal too)."""
        alive = self._alive
        if alive is None or not self._registered:
            return
        try:
            with farewell():
                await asyncio.wait_for(self._client.deregister_alive(alive.service_id), 5.0)
            self._registered = False
        except Exception as exc:  # the agent reaps it a minute after its check turns critical
            log.warning("lock: could not deregister %s (%s); the agent removes it %gs after its check fails",
                        alive.service_id, str(exc) or type(exc).__name__, alive.deregister_after_seconds)
