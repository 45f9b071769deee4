"""The leader lock's state machine and its write gate, against an in-memory Consul session/KV.

The fake keeps Consul's rules that the lock depends on (reference/consul-sessions.md §3, §6):
acquire is false while another live session holds the key or while a lock-delay runs; renewing a
session Consul no longer knows answers 404 (False here). The real simulator's conformance and the
multi-process failover tests live in tests/devcluster and tests/e2e.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from typing import Any

import pytest

from service.leadership import LOCK_FLAG, Leadership, LockSettings, Role, holder_value, lock_key


class FakeConsul:
    def __init__(self) -> None:
        self.sessions: set[str] = set()
        self.entry: dict[str, Any] | None = None
        self.index = 1
        self.delay_until = 0.0
        self.calls: list[str] = []
        self.renew_fails = False
        self._ids = itertools.count(1)
        self._changed = asyncio.Event()

    def _bump(self) -> None:
        self.index += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def create_session(self, *, name: str, ttl_seconds: float, lock_delay_seconds: float) -> str:
        sid = f"s{next(self._ids)}"
        self.sessions.add(sid)
        self.calls.append(f"create {sid}")
        return sid

    async def renew_session(self, session_id: str) -> bool:
        self.calls.append(f"renew {session_id}")
        if self.renew_fails:
            raise ConnectionError("agent unreachable")
        return session_id in self.sessions

    async def destroy_session(self, session_id: str) -> None:
        self.calls.append(f"destroy {session_id}")
        self.invalidate(session_id, delay=0.0)

    def invalidate(self, session_id: str, delay: float = 0.3) -> None:
        self.sessions.discard(session_id)
        if self.entry and self.entry.get("Session") == session_id:
            self.entry = {**self.entry, "Session": None}
            self.delay_until = time.monotonic() + delay
            self._bump()

    async def get_key(self, key: str, *, index: int | None, wait_seconds: float) -> tuple[int, dict[str, Any] | None]:
        if index is not None and index >= self.index:
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), min(wait_seconds, 0.2))
            except TimeoutError:
                pass
        return self.index, dict(self.entry) if self.entry else None

    async def acquire(self, key: str, value: bytes, session_id: str, flags: int) -> bool:
        self.calls.append(f"acquire {session_id}")
        assert flags == LOCK_FLAG
        if session_id not in self.sessions:
            raise RuntimeError(f'invalid session "{session_id}"')
        holder = (self.entry or {}).get("Session")
        if holder and holder != session_id:
            return False
        if time.monotonic() < self.delay_until:
            return False
        self.entry = {"Key": key, "Value": value, "Session": session_id, "Flags": flags}
        self._bump()
        return True

    async def release(self, key: str, value: bytes, session_id: str, flags: int) -> bool:
        self.calls.append(f"release {session_id}")
        if not self.entry or self.entry.get("Session") != session_id:
            return False
        self.entry = {**self.entry, "Session": None}
        self._bump()
        return True

    def take(self, session_id: str, value: bytes = b"{}") -> None:
        """Someone else's session now holds the key (e.g. an operator's `consul lock`)."""
        self.sessions.add(session_id)
        self.entry = {"Key": "k", "Value": value, "Session": session_id, "Flags": LOCK_FLAG}
        self._bump()


def settings(ttl: float = 0.6) -> LockSettings:
    return LockSettings(key=lock_key("cluster-a"), ttl_seconds=ttl, lock_delay_seconds=0,
                        watch_wait_seconds=0.2, retry_seconds=0.05)


async def until(predicate: Any, within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def start(consul: FakeConsul, ttl: float = 0.6, **kw: Any) -> tuple[Leadership, asyncio.Task[None]]:
    lead = Leadership(consul, settings(ttl), value=holder_value(host="h", port=1, version="t"), **kw)
    task = asyncio.create_task(lead.run())
    return lead, task


async def test_acquires_runs_on_acquired_before_the_gate_reports_writer_and_renews() -> None:
    consul = FakeConsul()
    order: list[str] = []

    async def acquired() -> None:
        order.append(f"resync may_write={lead.may_write()}")

    lead, task = await start(consul, on_acquired=acquired)
    await until(lead.writer_event.is_set)
    assert order == ["resync may_write=True"]  # the resync itself writes through the gate
    assert lead.role is Role.WRITER
    assert json.loads(consul.entry["Value"])["host"] == "h"  # type: ignore[index]
    await asyncio.sleep(0.9)  # > TTL: only renewals keep the gate open
    assert lead.may_write()
    assert sum(c.startswith("renew") for c in consul.calls) >= 2
    await lead.stop()
    task.cancel()


async def test_the_gate_shuts_when_the_lease_runs_out_without_a_renew() -> None:
    consul = FakeConsul()
    lead, task = await start(consul)
    await until(lead.may_write)
    consul.renew_fails = True  # agent unreachable: nothing tells us the session is gone
    started = time.monotonic()
    await until(lambda: not lead.may_write(), within=2.0)
    assert time.monotonic() - started <= 0.6 + 0.1  # never later than one TTL after the last renew
    await lead.stop()
    task.cancel()


async def test_a_key_taken_by_another_session_stops_writing_at_once() -> None:
    consul = FakeConsul()
    lost: list[str] = []

    async def on_lost(reason: str) -> None:
        lost.append(reason)

    lead, task = await start(consul, on_lost=on_lost)
    await until(lead.may_write)
    consul.take("intruder")
    await until(lambda: not lead.may_write(), within=1.0)
    assert lost and "intruder" in lost[0]
    assert lead.holder is not None and lead.holder["session"] == "intruder"
    await lead.stop()
    task.cancel()


async def test_an_invalidated_session_steps_down_then_contends_again_after_the_lock_delay() -> None:
    consul = FakeConsul()
    lead, task = await start(consul)
    await until(lead.may_write)
    first = consul.entry["Session"]  # type: ignore[index]
    consul.invalidate(first, delay=0.3)
    await until(lambda: not lead.may_write(), within=1.0)
    await until(lead.may_write, within=3.0)  # a new session acquires once the delay is over
    assert consul.entry["Session"] != first  # type: ignore[index]
    await lead.stop()
    task.cancel()


async def test_standby_waits_while_another_holds_and_takes_over_when_released() -> None:
    consul = FakeConsul()
    a, task_a = await start(consul)
    await until(a.may_write)
    b, task_b = await start(consul)
    await asyncio.sleep(0.4)
    assert not b.may_write() and b.role is Role.STANDBY
    assert b.holder is not None and b.holder["holder"]["host"] == "h"
    await a.stop()
    await until(b.may_write, within=2.0)
    await b.stop()
    for t in (task_a, task_b):
        t.cancel()


async def test_stop_releases_the_key_before_destroying_the_session() -> None:
    consul = FakeConsul()
    lead, task = await start(consul)
    await until(lead.may_write)
    sid = consul.entry["Session"]  # type: ignore[index]
    await lead.stop()
    assert not lead.may_write()
    assert consul.calls.index(f"release {sid}") < consul.calls.index(f"destroy {sid}")
    await asyncio.wait_for(task, 2.0)


async def test_a_session_that_cannot_be_destroyed_on_stop_is_said_with_what_it_costs(
        caplog: pytest.LogCaptureFixture) -> None:
    """The key is still released; the session ends by its TTL, and the log says so (not silence)."""
    consul = FakeConsul()

    async def refuse(session_id: str) -> None:
        raise ConnectionError("agent unreachable")

    consul.destroy_session = refuse  # type: ignore[method-assign]
    lead, task = await start(consul)
    await until(lead.may_write)
    sid = consul.entry["Session"]  # type: ignore[index]
    with caplog.at_level(logging.WARNING, logger="service.leadership"):
        await lead.stop()
    await asyncio.wait_for(task, 2.0)
    assert consul.entry is not None and consul.entry["Session"] is None, "the key is released all the same"
    [line] = [r.getMessage() for r in caplog.records if "could not destroy" in r.getMessage()]
    assert sid in line and "agent unreachable" in line and "by its TTL within 1.2s" in line


@pytest.mark.parametrize("cluster", ["1b2c-framework-id", "prod"])
def test_lock_key_is_per_cluster(cluster: str) -> None:
    assert lock_key(cluster) == f"marathon-consul-registrar/{cluster}/leader"


@pytest.mark.parametrize("port,takes_over", [(1, True), (2, False)])
async def test_a_dead_earlier_run_of_this_instance_is_released_at_once(port: int, takes_over: bool) -> None:
    """The key names our host, host name and listen port with another pid: that run is gone (we hold
    its port), so its lingering session is released instead of waited out; any other holder is not."""
    consul = FakeConsul()
    earlier = json.loads(holder_value(host="h", port=port, version="t"))
    earlier["pid"] = -1
    consul.take("earlier-run", json.dumps(earlier).encode())
    lead, task = await start(consul)
    if takes_over:
        await until(lead.may_write, within=2.0)
        assert "release earlier-run" in consul.calls and "destroy earlier-run" in consul.calls
    else:
        await asyncio.sleep(0.5)
        assert not lead.may_write() and "release earlier-run" not in consul.calls
    await lead.stop()
    task.cancel()


@pytest.mark.parametrize("role,resynced,reasons", [
    ("contending", False, ["not known yet which instance writes (contending for the Consul lock)"]),
    ("contending", True, ["not known yet which instance writes (contending for the Consul lock)"]),
    ("standby", False, []),  # a rolling upgrade must not wait for a lock another instance holds
    ("writer", False, ["first resync not finished yet"]),
    ("writer", True, []),
    (None, False, ["first resync not finished yet"]),  # --lock off
])
def test_readiness_follows_who_writes(role: str | None, resynced: bool, reasons: list[str]) -> None:
    from service.web import Readiness

    r = Readiness(source_attached=True, first_resync_done=resynced, role=role)
    assert r.reasons() == reasons


async def test_seeing_another_holder_reports_standby() -> None:
    consul = FakeConsul()
    consul.take("other")
    seen: list[str] = []
    lead = Leadership(consul, settings(), value=holder_value(host="h", port=1, version="t"),
                      on_standby=lambda: seen.append("standby"))
    task = asyncio.create_task(lead.run())
    await until(lambda: bool(seen))
    assert not lead.may_write()
    await lead.stop()
    task.cancel()
