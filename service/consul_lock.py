"""The Consul session and KV calls of the leader lock, through py-consul's asyncio client.

Kept apart from `consul_registry` (which writes registrations into many agents) because the lock
talks to one agent only, and its answers mean different things: a 404 on renew is "the session is
gone" (the lock is lost), not "already deregistered". py-consul raises `consul.exceptions.NotFound`
for it (reference/consul-sessions.md §7). Every call has a timeout longer than the blocking wait it
asks Consul for, since py-consul's aio client does not stretch its timeout for blocking queries.
"""

from __future__ import annotations

from typing import Any

import consul
import consul.exceptions

from service.connect import TLSOptions, consul_client
from service.leadership import SessionsUnavailable
from service.tokens import TokenSource, static


class ConsulLockClient:
    """`leadership.SessionKV` for one agent, given by URL."""

    def __init__(self, url: str, *, token: str | TokenSource | None, timeout: float = 5.0, wait_seconds: float = 10.0,
                 tls: TLSOptions | None = None) -> None:
        self.url = url
        self._timeout = timeout
        # a blocking GET waits up to wait_seconds (+1/16 jitter) before Consul answers
        self._client = consul_client(url, token=token if callable(token) else static(token), tls=tls,
                                     timeout=wait_seconds * 17 / 16 + timeout, limit=8)

    async def create_session(self, *, name: str, ttl_seconds: float, lock_delay_seconds: float) -> str:
        # checks=None keeps Consul's default node check serfHealth (see leadership's docstring)
        try:
            sid = await self._client.session.create(
                name=name, ttl=int(ttl_seconds), lock_delay=int(lock_delay_seconds), behavior="release")
        except consul.exceptions.ClientError as exc:  # 405 (and other 4xx py-consul has no type for)
            if str(exc).startswith("405"):
                raise SessionsUnavailable(f"{self.url}: {exc}") from exc
            raise
        if sid is None:  # py-consul answers None for a 404: no such endpoint on this agent
            raise SessionsUnavailable(f"{self.url}: PUT /v1/session/create answered 404")
        return str(sid)

    async def renew_session(self, session_id: str) -> bool:
        try:
            await self._client.session.renew(session_id)
        except consul.exceptions.NotFound:
            return False
        return True

    async def destroy_session(self, session_id: str) -> None:
        await self._client.session.destroy(session_id)

    async def get_key(self, key: str, *, index: int | None, wait_seconds: float) -> tuple[int, dict[str, Any] | None]:
        got_index, entry = await self._client.kv.get(key, index=index or None, wait=f"{max(1, int(wait_seconds))}s",
                                                     consistency="consistent")
        return int(got_index or 0), entry

    async def acquire(self, key: str, value: bytes, session_id: str, flags: int) -> bool:
        return bool(await self._client.kv.put(key, value, acquire=session_id, flags=flags))

    async def release(self, key: str, value: bytes, session_id: str, flags: int) -> bool:
        return bool(await self._client.kv.put(key, value, release=session_id, flags=flags))

    async def close(self) -> None:
        await self._client.close()
