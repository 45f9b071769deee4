"""The Consul session and KV calls of the leader lock, through py-consul's asyncio client.

Kept apart from `service.consul.agents` (which writes registrations into many agents) because the lock
talks to one agent only, and its answers mean different things: a 404 on renew is "the session is
gone" (the lock is lost), not "already deregistered". py-consul raises `consul.exceptions.NotFound`
for it (reference/consul-sessions.md §7). Every call has a timeout longer than the blocking wait it
asks Consul for, since py-consul's aio client does not stretch its timeout for blocking queries.

The error contract (docs/architecture.md §8) holds here as for the agents: every failed answer is
classified by `service.errors` and counted in `mcr_call_errors_total{system="consul", call=...}`
(calls `session_create`, `session_renew`, `session_destroy`, `kv_get`, `kv_acquire`, `kv_release`,
and `alive_register`/`alive_deregister` for the holder's liveness check the session is bound to);
a RETRY answer is retried after the agent's back-off (`ConsulCall`; one per agent address, shared
with the registrations' client of that agent through `AgentCooldowns`) up to `attempts` in all, then
`ConsulError` goes to the lock's own loop (`service.leadership`), which tries again for as long as the lock matters. Two
answers the lock gives a meaning of its own: 404 or 405 on session create is `SessionsUnavailable`
(counted as a report, but logged by the leadership, which knows whether `--lock auto` accepts it),
and 404 on renew is "the session is gone".
"""

from __future__ import annotations

from typing import Any

import consul.exceptions

from service.connect import TLSOptions, consul_client
from service.consul.call import AgentCooldowns, ConsulCall, ConsulError
from service.errors import GONE, NOT_FOUND, RETRY, Classified
from service.leadership import AliveCheck, SessionsUnavailable
from service.metrics import Metrics
from service.retry import Stop
from service.tokens import TokenSource, static

# 404 on renew: Consul no longer knows the session, the lock is lost; the lock's loop contends again
SESSION_GONE = Classified(RETRY, "gone")


class ConsulLockClient:
    """`leadership.SessionKV` for one agent, given by URL."""

    def __init__(self, url: str, *, token: str | TokenSource | None, timeout: float = 5.0, wait_seconds: float = 10.0,
                 tls: TLSOptions | None = None, metrics: Metrics | None = None, attempts: int = 3,
                 stop: Stop | None = None, cooldowns: AgentCooldowns | None = None) -> None:
        self.url = url
        self._timeout = timeout
        self._metrics = metrics if metrics is not None else Metrics()
        # the agent's one back-off, shared with the registrations' client of the same agent
        self._call = ConsulCall(url, metrics=self._metrics, attempts=attempts,
                                then="tried again at the lock's next round (acquire or renew)", stop=stop,
                                cooldown=cooldowns.of(url) if cooldowns is not None else None)
        # a blocking GET waits up to wait_seconds (+1/16 jitter) before Consul answers
        self._client = consul_client(url, token=token if callable(token) else static(token), tls=tls,
                                     timeout=wait_seconds * 17 / 16 + timeout, limit=8)

    async def create_session(self, *, name: str, ttl_seconds: float, lock_delay_seconds: float,
                             checks: list[str] | None = None) -> str:
        # checks=None keeps Consul's default node check serfHealth; a list names every check the
        # session is bound to (serfHealth included by the caller: see leadership's docstring)
        try:
            sid = await self._call("session_create", lambda: self._client.session.create(
                name=name, ttl=int(ttl_seconds), lock_delay=int(lock_delay_seconds), behavior="release",
                checks=checks),
                counted_only=frozenset({"method-not-allowed"}))
        except ConsulError as exc:
            if exc.cause != "method-not-allowed":
                raise
            # counted; the leadership says what it means (--lock auto or on)
            raise SessionsUnavailable(f"{self.url}: PUT /v1/session/create answered {exc.__cause__}") from exc
        if sid is None:  # py-consul answers None for a 404: no such endpoint on this agent
            self._call.count("session_create", NOT_FOUND)
            raise SessionsUnavailable(f"{self.url}: PUT /v1/session/create answered 404")
        return str(sid)

    async def renew_session(self, session_id: str) -> bool:
        async def renew() -> bool:
            try:
                await self._client.session.renew(session_id)
            except consul.exceptions.NotFound:  # Consul no longer knows the session
                return False
            return True

        if not await self._call("session_renew", renew):
            self._call.count("session_renew", SESSION_GONE)
            return False
        return True

    async def destroy_session(self, session_id: str) -> None:
        if not await self._call("session_destroy", lambda: self._client.session.destroy(session_id)):
            self._call.count("session_destroy", GONE)  # py-consul's False is a 404: already gone, as wanted

    async def get_key(self, key: str, *, index: int | None, wait_seconds: float) -> tuple[int, dict[str, Any] | None]:
        got_index, entry = await self._call("kv_get", lambda: self._client.kv.get(
            key, index=index or None, wait=f"{max(1, int(wait_seconds))}s", consistency="consistent"),
            blocking=bool(index))
        return int(got_index or 0), entry

    async def acquire(self, key: str, value: bytes, session_id: str, flags: int) -> bool:
        return bool(await self._call("kv_acquire", lambda: self._client.kv.put(
            key, value, acquire=session_id, flags=flags)))

    async def release(self, key: str, value: bytes, session_id: str, flags: int) -> bool:
        return bool(await self._call("kv_release", lambda: self._client.kv.put(
            key, value, release=session_id, flags=flags)))

    async def register_alive(self, alive: AliveCheck) -> None:
        """The holder's liveness registration in the lock agent (`service.leadership.AliveCheck`):
        initially passing (we are answering), so the session can be bound to it at once."""
        check: dict[str, Any] = {"HTTP": alive.url, "Interval": f"{alive.interval_seconds:g}s",
                 "Timeout": f"{alive.timeout_seconds:g}s", "Status": "passing",
                 "DeregisterCriticalServiceAfter": f"{alive.deregister_after_seconds:g}s"}
        if alive.url.startswith("https://"):
            check["TLSSkipVerify"] = True  # a liveness probe: nothing secret goes either way
        await self._call("alive_register", lambda: self._client.agent.service.register(
            alive.name, service_id=alive.service_id, check=check, meta=dict(alive.meta)))

    async def deregister_alive(self, service_id: str) -> None:
        if not await self._call("alive_deregister", lambda: self._client.agent.service.deregister(service_id)):
            self._call.count("alive_deregister", GONE)  # already gone, as wanted

    async def close(self) -> None:
        await self._client.close()
