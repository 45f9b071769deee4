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

from service.leadership import (
    LOCK_FLAG,
    AliveCheck,
    Leadership,
    Lease,
    LockSettings,
    Role,
    alive_check,
    holder_value,
    lease_seconds,
    lock_key,
)


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

    async def create_session(self, *, name: str, ttl_seconds: float, lock_delay_seconds: float,
                             checks: list[str] | None = None) -> str:
        sid = f"s{next(self._ids)}"
        self.sessions.add(sid)
        self.calls.append(f"create {sid}" + (f" checks={','.join(checks)}" if checks is not None else ""))
        return sid

    async def register_alive(self, alive: AliveCheck) -> None:
        self.calls.append(f"register {alive.service_id}")

    async def deregister_alive(self, service_id: str) -> None:
        self.calls.append(f"deregister {service_id}")

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


# ---------------------------------------------------------------- the gate's arithmetic (injected clock)

class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("ttl,delay,lease", [
    (15, 15, 14.0),  # the CLI defaults: a margin of 1 s
    (10, 3, 2.0),  # the deploy JSON
    (10, 1, 2 / 3),  # a short lock-delay: a third of it as the margin
    (10, 60, 10.0),  # never beyond the TTL
    (10, 0, 10.0),  # no lock-delay: only the TTL bound is left
])
def test_the_lease_ends_before_the_lock_delay_of_an_invalidation_after_the_last_acknowledged_renew(
        ttl: float, delay: float, lease: float) -> None:
    assert lease_seconds(ttl, delay) == pytest.approx(lease)
    if delay > 0:
        # invalidation is no earlier than the renew's send s, the next holder's acquire no earlier
        # than invalidation + delay: our last write (before s + L) is at least the margin before it
        assert delay - lease_seconds(ttl, delay) >= min(1.0, delay / 3) - 1e-9


def test_the_lease_counts_from_the_send_of_an_acknowledged_renew_not_from_its_answer() -> None:
    clock = Clock()
    lease = Lease(2.0, clock)
    assert not lease.open()  # nothing acknowledged yet
    sent = clock.now
    clock.now += 1.5  # a slow answer
    lease.acknowledged(sent)
    assert lease.until == sent + 2.0
    clock.now = sent + 1.999
    assert lease.open()
    clock.now = sent + 2.0
    assert not lease.open()
    lease.acknowledged(sent - 1.0)  # a late answer to an earlier renew never shortens (nor lengthens) it
    assert lease.until == sent + 2.0
    lease.acknowledged(sent + 1.0)
    assert lease.until == sent + 3.0
    lease.shut()
    assert not lease.open()


def test_renewals_come_three_times_within_a_lease_and_at_most_every_half_ttl() -> None:
    deploy = LockSettings(key="k", ttl_seconds=10, lock_delay_seconds=3)
    assert (deploy.lease_seconds, deploy.renew_seconds) == (2.0, 0.5)
    assert LockSettings(key="k", ttl_seconds=10, lock_delay_seconds=60).renew_seconds == 2.5
    assert LockSettings(key="k", ttl_seconds=0.8, lock_delay_seconds=0, renew_every=0.4).renew_seconds == 0.4
    assert deploy.lock_delay_poll_seconds == pytest.approx(0.3)


async def test_a_writer_paused_past_its_lease_has_a_shut_gate_before_any_of_its_tasks_runs() -> None:
    """SIGSTOP then SIGCONT: the monotonic clock ran meanwhile. The gate is a comparison with it,
    so the first `may_write()` after the resume is already false, before the renew loop, the watch
    or anything else of ours has run."""
    consul = FakeConsul()
    clock = Clock(time.monotonic())
    s = LockSettings(key=lock_key("cluster-a"), ttl_seconds=10, lock_delay_seconds=3,
                     watch_wait_seconds=0.2, retry_seconds=0.05)
    lead = Leadership(consul, s, value=holder_value(host="h", port=1, version="t"), clock=clock)
    task = asyncio.create_task(lead.run())
    await until(lead.may_write)
    clock.now += s.lease_seconds  # "paused": no task of ours ran while the clock moved
    assert not lead.may_write() and lead.role is Role.STANDBY
    await lead.stop()
    task.cancel()


async def test_the_session_is_bound_to_serf_health_and_our_liveness_check_which_goes_after_the_session() -> None:
    consul = FakeConsul()
    alive = alive_check(cluster_id="cluster-a", listen_host="0.0.0.0", listen_port=8123, https=False,
                        interval_seconds=1, host="slave-7")
    assert alive.url == "http://slave-7:8123/health" and alive.timeout_seconds == 2.0
    assert alive.check_id == f"service:{alive.service_id}"
    assert dict(alive.meta)["managed-by"] == "marathon-consul-registrar-lock"  # not a task's: no resync takes it
    s = LockSettings(key=lock_key("cluster-a"), ttl_seconds=10, lock_delay_seconds=3, watch_wait_seconds=0.2,
                     retry_seconds=0.05, alive=alive)
    lead = Leadership(consul, s, value=holder_value(host="h", port=1, version="t"))
    task = asyncio.create_task(lead.run())
    await until(lead.may_write)
    sid = consul.entry["Session"]  # type: ignore[index]
    assert consul.calls[:2] == [f"register {alive.service_id}", f"create {sid} checks=serfHealth,{alive.check_id}"]
    await lead.stop()
    await asyncio.wait_for(task, 2.0)
    tail = consul.calls[-3:]
    assert tail == [f"release {sid}", f"destroy {sid}", f"deregister {alive.service_id}"]


def test_the_liveness_check_asks_our_listen_address_when_it_is_not_a_wildcard() -> None:
    alive = alive_check(cluster_id="c", listen_host="127.0.0.1", listen_port=9, https=True, interval_seconds=3,
                        host="slave-7")
    assert (alive.url, alive.timeout_seconds) == ("https://127.0.0.1:9/health", 6.0)
    v6 = alive_check(cluster_id="c", listen_host="::1", listen_port=9, https=False, interval_seconds=1, host=None)
    assert v6.url == "http://[::1]:9/health"


async def test_a_refused_liveness_registration_still_gives_a_lock_bound_to_serf_health(
        caplog: pytest.LogCaptureFixture) -> None:
    """A token without service:write on the check's name must not stop the registrar from writing:
    the session is then bound to serfHealth and its TTL (Consul's default), said once."""
    consul = FakeConsul()

    async def refuse(alive: AliveCheck) -> None:
        raise PermissionError("403 Permission denied: lacks permission 'service:write'")

    consul.register_alive = refuse  # type: ignore[method-assign]
    alive = alive_check(cluster_id="cluster-a", listen_host="127.0.0.1", listen_port=1, https=False,
                        interval_seconds=1, host=None)
    s = LockSettings(key=lock_key("cluster-a"), ttl_seconds=10, lock_delay_seconds=3, watch_wait_seconds=0.2,
                     retry_seconds=0.05, alive=alive)
    with caplog.at_level(logging.WARNING, logger="service.leadership"):
        lead = Leadership(consul, s, value=holder_value(host="h", port=1, version="t"))
        task = asyncio.create_task(lead.run())
        await until(lead.may_write)
        await lead.stop()
        await asyncio.wait_for(task, 2.0)
    sid = consul.calls[0].split()[1]
    assert consul.calls[0] == f"create {sid}"  # no checks given: Consul's default serfHealth
    assert not any(c.startswith("deregister") for c in consul.calls)  # nothing of ours to remove
    assert len([r for r in caplog.records if "cannot register the liveness check" in r.getMessage()]) == 1


def test_instances_on_two_hosts_sharing_one_lock_agent_have_their_own_liveness_registration() -> None:
    """`--lock-agent` may name one agent for every instance (a server agent), and instances started
    from one configuration listen on the same port. Were their liveness registrations one service
    id, the second's register would replace the first's check (the writer's session then bound to
    a check of the standby's /health), and the standby's clean stop would deregister the check the
    writer's session is bound to, invalidating it."""
    a, b = (alive_check(cluster_id="c", listen_host="0.0.0.0", listen_port=8000, https=False, interval_seconds=1,
                        host=host) for host in ("slave-1", "slave-2"))
    assert a.service_id != b.service_id and a.check_id != b.check_id
    again = alive_check(cluster_id="c", listen_host="0.0.0.0", listen_port=8000, https=False, interval_seconds=1,
                        host="slave-1")
    assert again.service_id == a.service_id  # a restarted instance replaces its dead run's entry


def lapse_settings() -> LockSettings:
    """A write lease (0.6 s) well below the TTL (3 s): the lease can run out while Consul still
    knows the session."""
    return LockSettings(key=lock_key("cluster-a"), ttl_seconds=3.0, lock_delay_seconds=0.9,
                        watch_wait_seconds=0.2, retry_seconds=0.05)


async def test_a_process_held_up_past_its_lease_keeps_the_lock_once_consul_acknowledges_a_renew() -> None:
    """A large resync's parsing or a SIGSTOP holds the loop past the lease: writes stop at once,
    and the next acknowledged renew reopens the gate on the same session, instead of a step-down,
    a lock-delay and a whole new writer's resync every time the loop is held up."""
    consul = FakeConsul()
    lost: list[str] = []

    async def on_lost(reason: str) -> None:
        lost.append(reason)

    lead = Leadership(consul, lapse_settings(), value=holder_value(host="h", port=1, version="t"), on_lost=on_lost)
    task = asyncio.create_task(lead.run())
    await until(lead.may_write)
    session = consul.entry["Session"]  # type: ignore[index]
    time.sleep(1.0)  # noqa: ASYNC251 -- the point: the loop held for longer than the 0.6 s lease
    assert not lead.may_write(), "no write after the lease ran out, before Consul acknowledged a renew"
    await until(lead.may_write, within=1.0)
    assert consul.entry["Session"] == session  # type: ignore[index]
    assert sum(c.startswith("create") for c in consul.calls) == 1 and not lost
    await lead.stop()
    task.cancel()


async def test_no_renew_acknowledged_within_the_ttl_loses_the_lock() -> None:
    consul = FakeConsul()
    lost: list[str] = []

    async def on_lost(reason: str) -> None:
        lost.append(reason)

    lead = Leadership(consul, lapse_settings(), value=holder_value(host="h", port=1, version="t"), on_lost=on_lost)
    task = asyncio.create_task(lead.run())
    await until(lead.may_write)
    consul.renew_fails = True
    started = time.monotonic()
    await until(lambda: not lead.may_write(), within=1.0)
    assert time.monotonic() - started <= 0.6 + 0.1  # the gate: the lease, not the TTL
    await until(lambda: bool(lost), within=4.0)
    assert "TTL" in lost[0]
    await lead.stop()
    task.cancel()
