"""The error contract (docs/architecture.md §8), one row per (system, call, failure), through the real
clients: py-consul against the Consul simulator (the agents' calls and the leader lock's), aiohttp
against the Docker engine simulator and the Marathon simulator, each answer injected with the
simulators' fault rules (`/_sim/faults`, in the real systems' own texts). Every row asserts the
verdict and reason the caller sees, the metric `mcr_call_errors_total`, how many answers the server
gave (the retry bound), the log line for a refusal, and the final state.

The simulators run in the test's event loop, on addresses no other test uses (127.0.0.40-44).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import time
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from devcluster.docker_sim import start, stop
from service.backoff import Backoff
from service.consul.agents import AgentClient, ConsulAgents, ConsulError
from service.consul.call import AgentCooldowns
from service.consul.lock import ConsulLockClient
from service.docker.lookup import ContainerLookup, DockerLookupError
from service.errors import CallError
from service.leadership import Leadership, LockSettings, Role, holder_value, lock_key
from service.marathon.client import MarathonClient, MarathonError
from service.marathon.events import TaskEvent
from service.marathon.sse import EventStream
from service.metrics import Metrics
from service.model import Container, HealthCheck, Registration, Task, TaskState
from service.reconcile import Reconciler, ReconcileSettings
from tests.devcluster import sim_inprocess
from tests.unit.fakes import FakeLookup, FakeMarathon, web_app

AGENT_A, AGENT_B = "127.0.0.40", "127.0.0.41"
ENGINE = "127.0.0.42"
MARATHON = "127.0.0.43"
ATTEMPTS = 3
ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def consul_agents() -> AsyncIterator[list[str]]:
    """Two simulated agents (node-a, node-b) sharing one catalog."""
    async with sim_inprocess.consul((AGENT_A, AGENT_B)) as served:
        yield served.urls


@asynccontextmanager
async def marathon_sim() -> AsyncIterator[str]:
    """A Marathon 1.10 simulator without slaves (apps of 0 instances)."""
    async with sim_inprocess.marathon(host=MARATHON) as served:
        yield served.urls[0]


async def fault(base: str, rule: dict[str, Any]) -> int:
    async with aiohttp.ClientSession() as http, http.post(f"{base}/_sim/faults", json=rule) as resp:
        assert resp.status == 201, await resp.text()
        return int((await resp.json())["id"])


async def clear(base: str) -> None:
    async with aiohttp.ClientSession() as http, http.delete(f"{base}/_sim/faults") as resp:
        assert resp.status == 200


async def answered(base: str, rule_id: int, row: Row) -> None:
    """The rule gave exactly the answers the row says; a reset may count twice per attempt, since
    aiohttp itself re-sends an idempotent request once when a reused connection is reset."""
    got = await hits(base, rule_id)
    if row.rule.get("mode") == "reset":
        assert row.answers <= got <= 2 * row.answers
    else:
        assert got == row.answers


async def hits(base: str, rule_id: int) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/_sim/faults") as resp:
        return next(int(r["hits"]) for r in (await resp.json())["rules"] if r["id"] == rule_id)


def errors(metrics: Metrics, system: str, call: str, verdict: str, reason: str) -> float:
    return metrics.registry.get_sample_value("mcr_call_errors_total", {
        "system": system, "call": call, "verdict": verdict, "reason": reason}) or 0.0


def refusals_logged(caplog: pytest.LogCaptureFixture, target: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "service.errors" and r.levelno >= logging.ERROR and target in r.getMessage()]


@dataclass(frozen=True)
class Row:
    """One (call, failure): the fault rule, then what the caller must see."""

    call: str
    rule: dict[str, Any]
    verdict: str | None  # None: the call succeeds (after retries, or because the answer is DONE)
    reason: str
    answers: int  # how many answers the fault rule gave: 1 = not retried, ATTEMPTS = retried to the bound

    def __str__(self) -> str:
        return f"{self.call}-{self.rule.get('mode', 'status')}-{self.rule.get('status', '')}-{self.reason}"


# ---------------------------------------------------------------- Consul, through py-consul

REG = Registration(agent_host=AGENT_A, service_id="mcr-web.t1-0", name="web", tags=(), address="10.32.0.9",
                   port=80, meta=(("managed-by", "marathon-consul-registrar"), ("marathon-task-id", "web.t1")),
                   checks=())
REGISTER = "^/v1/agent/service/register$"
SERVICES = "^/v1/agent/services$"

CONSUL_ROWS = [
    Row("register", {"path": REGISTER, "status": 500}, "retry", "no-leader", ATTEMPTS),
    Row("register", {"path": REGISTER, "status": 500, "count": 1}, None, "no-leader", 1),
    Row("register", {"path": REGISTER, "status": 503, "body": "Service Unavailable"}, "retry", "unavailable",
        ATTEMPTS),
    Row("register", {"path": REGISTER, "status": 502, "body": "Bad Gateway"}, "retry", "unavailable", ATTEMPTS),
    Row("register", {"path": REGISTER, "status": 429}, "retry", "rate-limited", ATTEMPTS),
    Row("register", {"path": REGISTER, "mode": "slow", "delay": 1.5}, "retry", "timeout", ATTEMPTS),
    Row("register", {"path": REGISTER, "status": 400, "body": "Invalid check: TTL must be > 0"}, "report",
        "bad-request", 1),
    Row("register", {"path": REGISTER, "status": 401, "body": "ACL support disabled"}, "report", "unauthorized", 1),
    Row("register", {"path": REGISTER, "status": 403, "body": "Permission denied: token with AccessorID "
                     "'00000000-0000-0000-0000-000000000002' lacks permission 'service:write' on \"web\""},
        "report", "acl-denied", 1),
    Row("register", {"path": REGISTER, "status": 404, "body": "refused by the proxy"}, "report", "not-found", 1),
    Row("register", {"path": REGISTER, "status": 422, "body": "unprocessable"}, "report", "invalid", 1),
    Row("agent_services", {"path": SERVICES, "status": 403, "body": "ACL not found"}, "report", "acl-denied", 1),
    Row("agent_services", {"path": SERVICES, "status": 404, "body": "refused by the proxy"}, "report",
        "not-found", 1),
    Row("agent_services", {"path": SERVICES, "mode": "garbage"}, "report", "garbage", 1),
    Row("agent_services", {"path": SERVICES, "mode": "garbage", "body": "\udcff"}, "report", "garbage", 1),
    Row("agent_services", {"path": SERVICES, "mode": "garbage", "body": '["a list", "not a map"]'}, "report",
        "garbage", 1),
    Row("agent_services", {"path": SERVICES, "mode": "garbage", "body": '{"mcr-web.t1-0": {"Port": "eighty"}}'},
        "report", "garbage", 1),
    Row("agent_services", {"path": SERVICES, "status": 500}, "retry", "no-leader", ATTEMPTS),
    Row("agent_self", {"path": "^/v1/agent/self$", "mode": "garbage", "body": '"a string"'}, "report", "garbage", 1),
    Row("agent_self", {"path": "^/v1/agent/self$", "status": 403, "body": "Permission denied"}, "report",
        "acl-denied", 1),
    Row("catalog_nodes", {"path": "^/v1/catalog/nodes$", "mode": "garbage", "body": "[]"}, "report",
        "no-index-header", 1),
    Row("catalog_nodes", {"path": "^/v1/catalog/nodes$", "status": 500}, "retry", "no-leader", ATTEMPTS),
    Row("deregister", {"path": "^/v1/agent/service/deregister/", "status": 404,
                       "body": 'Unknown service ID "mcr-web.t1-0"'}, None, "gone", 1),
    Row("deregister", {"path": "^/v1/agent/service/deregister/", "status": 403, "body": "Permission denied"},
        "report", "acl-denied", 1),
    Row("check_update", {"path": "^/v1/agent/check/pass/", "status": 404,
                         "body": 'Unknown check ID "x"'}, "retry", "gone", 1),
]


async def consul_call(agent: AgentClient, call: str) -> object:
    if call == "register":
        return await agent.register(REG)
    if call == "agent_services":
        return await agent.owned()
    if call == "agent_self":
        return await agent.node_name()
    if call == "catalog_nodes":
        return await agent.catalog_node_addresses()
    if call == "deregister":
        return await agent.deregister(REG.service_id)
    assert call == "check_update"
    return await agent.set_ttl("service:mcr-web.t1-0:marathon:1", "passing", "ok")


@pytest.mark.parametrize("row", CONSUL_ROWS, ids=str)
async def test_consul(row: Row, caplog: pytest.LogCaptureFixture) -> None:
    async with consul_agents() as (url_a, _):
        metrics = Metrics()
        agent = AgentClient(AGENT_A, url_a, token=None, metrics=metrics, timeout=0.6, attempts=ATTEMPTS)
        try:
            if row.call in ("deregister", "agent_services") and row.reason != "gone":
                await agent.register(REG)
            rule = await fault(url_a, {**row.rule, "method": "GET" if row.call in (
                "agent_services", "agent_self", "catalog_nodes") else "PUT"})
            with caplog.at_level(logging.INFO):
                if row.verdict is None:
                    await consul_call(agent, row.call)
                else:
                    with pytest.raises(ConsulError) as raised:
                        await consul_call(agent, row.call)
                    assert (raised.value.verdict.value, raised.value.cause) == (row.verdict, row.reason)
                    assert url_a in str(raised.value) and row.call in str(raised.value)
            await answered(url_a, rule, row)
            verdict = row.verdict or ("done" if row.reason == "gone" else "retry")
            assert errors(metrics, "consul", row.call, verdict, row.reason) == row.answers
            retries = metrics.registry.get_sample_value("mcr_retries_total", {"system": "consul"}) or 0
            # RETRY answers up to the bound (ATTEMPTS answers, one back-off fewer), or until the call
            # succeeded (one retry per injected answer); a refusal and a DONE are not retried at all
            assert retries == {"retry": row.answers - 1, None: row.answers if verdict == "retry" else 0}.get(
                row.verdict, 0)
            assert len(refusals_logged(caplog, url_a)) == (1 if row.verdict == "report" else 0)
            # the final state: a write that failed left nothing; one that succeeded is there
            await clear(url_a)
            held = await AgentClient(AGENT_A, url_a, token=None, metrics=Metrics(), timeout=2, attempts=1).owned()
            if row.call == "register":
                assert (REG.service_id in held) == (row.verdict is None)
            if row.call in ("deregister", "agent_services"):
                assert (REG.service_id in held) == (row.reason != "gone")
        finally:
            await agent.close()


async def test_consul_a_refusal_is_logged_once_per_cause_and_counted_every_time(
        caplog: pytest.LogCaptureFixture) -> None:
    async with consul_agents() as (url_a, url_b):
        metrics = Metrics()
        agents = [AgentClient(h, u, token=None, metrics=metrics, timeout=1, attempts=ATTEMPTS)
                  for h, u in ((AGENT_A, url_a), (AGENT_B, url_b))]
        try:
            await fault(url_a, {"path": REGISTER, "status": 403, "body": "Permission denied"})
            with caplog.at_level(logging.INFO):
                for _ in range(3):
                    for agent in agents:
                        with pytest.raises(ConsulError):
                            await agent.register(REG)
            assert len(refusals_logged(caplog, url_a)) == 1 and len(refusals_logged(caplog, url_b)) == 1
            assert errors(metrics, "consul", "register", "report", "acl-denied") == 6
        finally:
            for agent in agents:
                await agent.close()


async def test_consul_connection_refused_is_retried_to_the_bound() -> None:
    metrics = Metrics()
    port = free_port(AGENT_A)  # nothing listens there
    agent = AgentClient(AGENT_A, f"http://{AGENT_A}:{port}", token=None, metrics=metrics, timeout=1,
                        attempts=ATTEMPTS)
    try:
        with pytest.raises(ConsulError) as raised:
            await agent.register(REG)
        assert (raised.value.verdict.value, raised.value.cause) == ("retry", "connection")
        assert errors(metrics, "consul", "register", "retry", "connection") == ATTEMPTS
    finally:
        await agent.close()


async def test_consul_tls_to_a_plain_agent_is_reported_not_retried() -> None:
    """https:// to an agent speaking plain HTTP (a wrong --consul, a missing TLS listener): the
    handshake fails the same way every time, so it is the operator's to fix, not an outage."""
    async with consul_agents() as (url_a, _):
        metrics = Metrics()
        agent = AgentClient(AGENT_A, url_a.replace("http://", "https://"), token=None, metrics=metrics, timeout=2,
                            attempts=ATTEMPTS)
        try:
            with pytest.raises(ConsulError) as raised:
                await agent.owned()
            assert (raised.value.verdict.value, raised.value.cause) == ("report", "tls")
            assert errors(metrics, "consul", "agent_services", "report", "tls") == 1
        finally:
            await agent.close()


async def test_consul_reset_connection_is_retried_within_the_bound() -> None:
    async with consul_agents() as (url_a, _):
        metrics = Metrics()
        agent = AgentClient(AGENT_A, url_a, token=None, metrics=metrics, timeout=1, attempts=ATTEMPTS)
        try:
            rule = await fault(url_a, {"path": SERVICES, "method": "GET", "mode": "reset"})
            with pytest.raises(ConsulError) as raised:
                await agent.owned()
            assert (raised.value.verdict.value, raised.value.cause) == ("retry", "connection")
            assert errors(metrics, "consul", "agent_services", "retry", "connection") == ATTEMPTS
            # aiohttp itself re-sends an idempotent request once on a reused connection that was reset
            assert ATTEMPTS <= await hits(url_a, rule) <= 2 * ATTEMPTS
        finally:
            await agent.close()


# ---------------------------------------------------------------- the Consul lock, through py-consul

# A lease of 0.8 s keeps the rows short: renewals every 0.4 s. py-consul sends no TTL for
# int(0.8) = 0, so the simulator's session never expires on its own: the write gate closes on the
# registrar's own lease, which is the bound under test (the TTL is validated at 10 s and above).
LOCK_SETTINGS = LockSettings(key=lock_key("contract"), ttl_seconds=0.8, lock_delay_seconds=0,
                             watch_wait_seconds=1.0, retry_seconds=0.5, renew_every=0.4)
LOCK_KV = "^/v1/kv/marathon-consul-registrar/contract/leader$"
LOCK_PATHS = {
    "session_create": ("PUT", "^/v1/session/create$"),
    "kv_acquire": ("PUT", LOCK_KV),  # before the lock is taken: the loop keeps contending
    "kv_get": ("GET", LOCK_KV),  # the writer's blocking watch: a flaky read alone loses nothing
    "session_renew": ("PUT", "^/v1/session/renew/"),  # the writer's renewals: the lease ends, the gate shuts
    "kv_release": ("PUT", LOCK_KV),  # on stop: destroying the session releases the key anyway
    "session_destroy": ("PUT", "^/v1/session/destroy/"),  # on stop, after the release
}
LOCK_FAULTS = [({"status": 500}, "no-leader"), ({"status": 429}, "rate-limited"), ({"mode": "reset"}, "connection")]
LOCK_ROWS = [Row(call, {"path": path, "method": method, **answer}, "retry", reason, ATTEMPTS)
             for call, (method, path) in LOCK_PATHS.items() for answer, reason in LOCK_FAULTS]


async def until(predicate: Callable[[], bool], within: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"not reached within {within}s: {what}"
        await asyncio.sleep(0.01)


async def consul_get(url: str, path: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(f"{url}{path}") as resp:
        assert resp.status in (200, 404), await resp.text()
        return await resp.json() if resp.status == 200 else None


async def lock_holder(url: str) -> str | None:
    """The session holding the lock key, as Consul says (None: free or no key)."""
    entries = await consul_get(url, f"/v1/kv/{LOCK_SETTINGS.key}")
    return entries[0].get("Session") if entries else None


async def live_sessions(url: str) -> list[str]:
    return [s["ID"] for s in await consul_get(url, "/v1/session/list")]


@asynccontextmanager
async def leadership(url: str, metrics: Metrics, *, optional: bool = False,
                     ) -> AsyncIterator[tuple[Leadership, list[str]]]:
    """A running `Leadership` over the real `ConsulLockClient`; yields it and the reasons it gave
    for stepping down (`on_lost`)."""
    # The agent's back-off scaled down with the lease: its production cap (2 s, consul/call.py) is
    # far below a real TTL (10 s and up) but above this 0.8 s one, so a renew waiting out the window
    # left by three failed watch reads could miss its deadline here, never in production.
    client = ConsulLockClient(url, token=None, metrics=metrics, attempts=ATTEMPTS, timeout=1.0,
                              wait_seconds=LOCK_SETTINGS.watch_wait_seconds,
                              cooldowns=AgentCooldowns(Backoff(initial=0.01, cap=0.1)))
    lost: list[str] = []

    async def on_lost(reason: str) -> None:
        lost.append(reason)

    lead = Leadership(client, LOCK_SETTINGS, value=holder_value(host=AGENT_A, port=1, version="t"), on_lost=on_lost,
                      optional=optional)
    task = asyncio.create_task(lead.run())
    try:
        yield lead, lost
    finally:
        await lead.stop(grace=5.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()


def lock_logs(caplog: pytest.LogCaptureFixture, text: str, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "service.leadership" and r.levelno == level and text in r.getMessage()]


async def bounded(url: str, rule_id: int, row: Row, metrics: Metrics) -> None:
    """One call retried to its bound: ATTEMPTS answers (a reset may count twice per attempt, see
    `answered`), each counted once, as the call's retry verdict."""
    await answered(url, rule_id, row)
    assert errors(metrics, "consul", row.call, "retry", row.reason) == ATTEMPTS
    assert metrics.registry.get_sample_value("mcr_retries_total", {"system": "consul"}) == ATTEMPTS - 1


@pytest.mark.parametrize("row", LOCK_ROWS, ids=str)
async def test_lock(row: Row, caplog: pytest.LogCaptureFixture) -> None:
    """Each call of the lock answered 500 (no leader), 429 or a reset: the client retries it to
    the bound (ATTEMPTS answers), then the lock's own loop does what docs/architecture.md §8 says
    for it (module docstring of service.leadership)."""
    async with consul_agents() as (url, _):
        metrics = Metrics()
        caplog.set_level(logging.INFO)
        if row.call in ("session_create", "kv_acquire"):
            # no lock yet: the attempt fails, the loop keeps contending and takes it once Consul answers
            rule = await fault(url, row.rule)
            async with leadership(url, metrics) as (lead, lost):
                await until(lambda: lead.detail.startswith("lock: ConsulError"), what="a failed attempt")
                await bounded(url, rule, row, metrics)
                assert row.call in lead.detail and url in lead.detail
                assert lead.role is Role.STANDBY and not lead.may_write() and not lead.writer_event.is_set()
                await clear(url)
                await until(lead.writer_event.is_set, what="writer once Consul answers")
                assert lead.role is Role.WRITER and lead.may_write()
                assert len(lock_logs(caplog, "retrying in")) == 1
                # the failed attempt's session (if any) was destroyed: the holder is the only one
                assert await live_sessions(url) == [await lock_holder(url)]
                assert lost == []
            return
        async with leadership(url, metrics) as (lead, lost):
            await until(lead.writer_event.is_set, what="writer")
            held_by = await lock_holder(url)
            assert held_by is not None
            rule = await fault(url, row.rule)
            if row.call == "kv_get":
                await until(lambda: bool(lock_logs(caplog, "watching")), what="a failed watch")
                await bounded(url, rule, row, metrics)
                await asyncio.sleep(LOCK_SETTINGS.ttl_seconds + 0.1)  # more than a lease: renewals keep it
                assert lead.role is Role.WRITER and lead.may_write() and lost == []
                await clear(url)
                assert await lock_holder(url) == held_by
            elif row.call == "session_renew":
                await until(lambda: not lead.may_write(), what="the gate shut at the end of the lease")
                await bounded(url, rule, row, metrics)
                assert lead.role is Role.STANDBY
                await until(lambda: bool(lost), what="the lock given up")
                assert "not renewed within its TTL" in lost[0]
                await clear(url)
                await until(lead.writer_event.is_set, what="contending again, writer once Consul answers")
                assert lead.may_write() and await lock_holder(url) not in (None, held_by)
                assert await live_sessions(url) == [await lock_holder(url)]
            else:  # kv_release, session_destroy: on stop
                await lead.stop(grace=5.0)
                await bounded(url, rule, row, metrics)
                assert lead.role is Role.STANDBY and not lead.may_write() and lost == ["released on shutdown"]
                await clear(url)
                assert await lock_holder(url) is None  # released, by the release or by destroying the session
                if row.call == "kv_release":
                    assert len(lock_logs(caplog, f"releasing {LOCK_SETTINGS.key} failed")) == 1
                    assert await live_sessions(url) == []
                else:  # the session lingers until its TTL; the next holder need not wait for it
                    assert await live_sessions(url) == [held_by]
                    [said] = lock_logs(caplog, "could not destroy Consul session")  # and the log says so
                    assert held_by in said and "by its TTL" in said
        assert refusals_logged(caplog, url) == []  # retries are not refusals


@pytest.mark.parametrize(("status", "reason"), [(404, "not-found"), (405, "method-not-allowed")])
@pytest.mark.parametrize("lock", ["auto", "on"])
async def test_lock_without_sessions(lock: str, status: int, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    """An agent without sessions (an older one, or a proxy refusing the endpoint) answers 404 or
    405 to session create: `--lock auto` writes without a lock and says so once; `--lock on`
    reports (counted every time it asks, logged once) and never writes."""
    async with consul_agents() as (url, _):
        metrics = Metrics()
        caplog.set_level(logging.INFO)
        rule = await fault(url, {"path": "^/v1/session/create$", "method": "PUT", "status": status,
                                 "body": "method PUT not allowed" if status == 405 else "404 page not found"})
        async with leadership(url, metrics, optional=lock == "auto") as (lead, _):
            if lock == "auto":
                await until(lead.writer_event.is_set, what="writer without a lock")
                assert lead.unlocked and lead.may_write() and lead.role is Role.WRITER
                assert await hits(url, rule) == 1  # not asked again: this is the answer, not an outage
                [said] = lock_logs(caplog, "writer without a lock")
                assert str(status) in said and "run a single instance" in said
            else:
                await until(lambda: "offers no sessions" in lead.detail, what="the refusal reported")
                await until(lambda: errors(metrics, "consul", "session_create", "report", reason) >= 2,
                            within=3.0, what="asked again after retry_seconds")
                assert not lead.unlocked and not lead.may_write() and lead.role is Role.STANDBY
                assert not lead.writer_event.is_set()
                assert len(lock_logs(caplog, "--lock on needs them", logging.ERROR)) == 1
            assert errors(metrics, "consul", "session_create", "report", reason) == await hits(url, rule)
            assert metrics.registry.get_sample_value("mcr_retries_total", {"system": "consul"}) is None
        assert refusals_logged(caplog, url) == []  # the leadership says what it means, not service.errors
        assert await live_sessions(url) == []


# ---------------------------------------------------------------- Docker, through aiohttp

LIST = r"^/v[\d.]+/containers/json$"
DOCKER_ROWS = [
    Row("list", {"path": LIST, "status": 500, "body": "Internal Server Error"}, "retry", "server-error", 1),
    Row("list", {"path": LIST, "status": 503, "body": "daemon is shutting down"}, "retry", "unavailable", 1),
    Row("list", {"path": LIST, "status": 429, "body": "slow down"}, "retry", "rate-limited", 1),
    Row("list", {"path": LIST, "mode": "reset"}, "retry", "connection", 1),
    Row("list", {"path": LIST, "mode": "slow", "delay": 1.5}, "retry", "timeout", 1),
    Row("list", {"path": LIST, "status": 400, "body": "client version 1.99 is too new"}, "report",
        "bad-request", 1),
    Row("list", {"path": LIST, "status": 403, "body": "authorization denied by plugin"}, "report", "acl-denied", 1),
    Row("list", {"path": LIST, "status": 404}, "report", "not-found", 1),
    Row("list", {"path": LIST, "mode": "garbage"}, "report", "garbage", 1),
    Row("list", {"path": LIST, "mode": "garbage", "body": '{"message": "a map, not a list"}'}, "report",
        "garbage", 1),
    Row("ping", {"path": "^/_ping$", "status": 401, "body": "unauthorized"}, "report", "unauthorized", 1),
]


@pytest.mark.parametrize("row", DOCKER_ROWS, ids=str)
async def test_docker(row: Row, caplog: pytest.LogCaptureFixture) -> None:
    running = await start([(ENGINE, 0)])
    base = f"http://{ENGINE}:{running[0].port}"
    metrics = Metrics()
    lookup = ContainerLookup(f"tcp://{{host}}:{running[0].port}", ("weave",), metrics=metrics, timeout=0.6)
    try:
        rule = await fault(base, {**row.rule, "method": "GET"})
        with caplog.at_level(logging.INFO), pytest.raises(DockerLookupError) as raised:
            await lookup.containers(ENGINE)
        assert (raised.value.verdict.value, raised.value.cause) == (row.verdict, row.reason)
        assert base in str(raised.value)
        assert await hits(base, rule) >= row.answers  # no retry inside the lookup: the step's queue retries
        assert errors(metrics, "docker", row.call if row.call == "ping" else "list-named", str(row.verdict),
                      row.reason) == 1
        assert len(refusals_logged(caplog, base)) == (1 if row.verdict == "report" else 0)
    finally:
        await lookup.close()
        await stop(running)


async def test_docker_a_container_gone_before_its_inspect_is_done() -> None:
    """An unlabelled container (Marathon < 1.4) removed between the listing and its inspect: 404 is
    the state wanted (DONE), the lookup answers without it."""
    running = await start([(ENGINE, 0)])
    base = f"http://{ENGINE}:{running[0].port}"
    metrics = Metrics()
    lookup = ContainerLookup(f"tcp://{{host}}:{running[0].port}", ("weave",), metrics=metrics)
    try:
        async with aiohttp.ClientSession() as http, http.post(f"{base}/_sim/containers", json=[
                {"task_id": "web.t1", "ip": "10.32.0.9", "network": "weave", "label": False}]) as resp:
            assert resp.status in (200, 201), await resp.text()
        rule = await fault(base, {"path": r"^/v[\d.]+/containers/[0-9a-f]+/json$", "method": "GET", "status": 404,
                                  "body": "No such container"})
        assert await lookup.containers(ENGINE) == {}
        assert await hits(base, rule) == 1
        assert errors(metrics, "docker", "inspect", "done", "gone") == 1
    finally:
        await lookup.close()
        await stop(running)


# ---------------------------------------------------------------- Marathon, through aiohttp

APP_ID = "/web"
APP_JSON = {"id": APP_ID, "instances": 0, "container": {"type": "DOCKER", "docker": {"image": "busybox"}}}
APP_PATH = "^/v2/apps/web$"
MARATHON_ROWS = [
    Row("app", {"path": APP_PATH, "status": 503}, "retry", "no-leader", ATTEMPTS),
    Row("app", {"path": APP_PATH, "status": 502}, "retry", "no-leader", ATTEMPTS),
    Row("app", {"path": APP_PATH, "status": 503, "count": 2}, None, "no-leader", 2),
    Row("app", {"path": APP_PATH, "status": 500, "body": "boom"}, "retry", "server-error", ATTEMPTS),
    Row("app", {"path": APP_PATH, "status": 429, "body": "slow down"}, "retry", "rate-limited", ATTEMPTS),
    Row("app", {"path": APP_PATH, "mode": "reset"}, "retry", "connection", ATTEMPTS),
    Row("app", {"path": APP_PATH, "mode": "slow", "delay": 1.5}, "retry", "timeout", ATTEMPTS),
    Row("app", {"path": APP_PATH, "status": 400, "body": "bad"}, "report", "bad-request", 1),
    Row("app", {"path": APP_PATH, "status": 401, "body": "Invalid username or password."}, "report",
        "unauthorized", 1),
    Row("app", {"path": APP_PATH, "status": 403, "body": "Not Authorized to perform this action!"}, "report",
        "acl-denied", 1),
    Row("app", {"path": APP_PATH, "status": 422, "body": "Object is not valid"}, "report", "invalid", 1),
    Row("app", {"path": APP_PATH, "mode": "garbage"}, "report", "garbage", 1),
    Row("apps", {"path": "^/v2/apps$", "status": 403, "body": "Not Authorized"}, "report", "acl-denied", 1),
    Row("apps", {"path": "^/v2/apps$", "status": 503}, "retry", "no-leader", ATTEMPTS),
]


@pytest.mark.parametrize("row", MARATHON_ROWS, ids=str)
async def test_marathon(row: Row, caplog: pytest.LogCaptureFixture) -> None:
    async with marathon_sim() as url, aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v2/apps", json=APP_JSON) as resp:
            assert resp.status == 201, await resp.text()
        metrics = Metrics()
        client = MarathonClient([url], session=session, metrics=metrics, timeout=0.6, attempts=ATTEMPTS,
                                backoff_initial=0.01, backoff_max=0.05)
        rule = await fault(url, {**row.rule, "method": "GET"})
        call = client.app_with_tasks(APP_ID) if row.call == "app" else client.apps_with_tasks()
        with caplog.at_level(logging.INFO):
            if row.verdict is None:
                found = await call
                assert found is not None
            else:
                with pytest.raises(MarathonError) as raised:
                    await call
                assert (raised.value.verdict.value, raised.value.cause) == (row.verdict, row.reason)
        await answered(url, rule, row)
        assert errors(metrics, "marathon", row.call, row.verdict or "retry", row.reason) == row.answers
        assert len(refusals_logged(caplog, url)) == (1 if row.verdict == "report" else 0)


# Pods (issue 19): `GET /v2/pods/::status` (the resync) and `GET /v2/pods/{id}::status` (a pod's work)
# follow the same contract; a Marathon without pods answers 404 (the simulator has none): no pods, DONE.
PODS_PATH, POD_PATH = "^/v2/pods/::status$", "^/v2/pods/web-pod::status$"
POD_ROWS = [
    *(Row(call, {"path": path, **rule}, verdict, reason, answers)
      for call, path in (("pods", PODS_PATH), ("pod", POD_PATH))
      for rule, verdict, reason, answers in (
          ({"status": 503}, "retry", "no-leader", ATTEMPTS),
          ({"status": 500, "body": "boom"}, "retry", "server-error", ATTEMPTS),
          ({"status": 429, "body": "slow down"}, "retry", "rate-limited", ATTEMPTS),
          ({"mode": "reset"}, "retry", "connection", ATTEMPTS),
          ({"mode": "slow", "delay": 1.5}, "retry", "timeout", ATTEMPTS),
          ({"status": 401, "body": "Invalid username or password."}, "report", "unauthorized", 1),
          ({"status": 403, "body": "Not Authorized to perform this action!"}, "report", "acl-denied", 1),
          ({"mode": "garbage"}, "report", "garbage", 1),
          ({"mode": "garbage", "body": '{"pods": []}'}, "report", "garbage", 1),  # an object, not the array
      )),
]


def pods_call(client: MarathonClient, call: str) -> Any:
    return client.pods_with_instances() if call == "pods" else client.pod_with_instances("/web-pod")


@pytest.mark.parametrize("row", POD_ROWS, ids=str)
async def test_marathon_pods(row: Row, caplog: pytest.LogCaptureFixture) -> None:
    async with marathon_sim() as url, aiohttp.ClientSession() as session:
        metrics = Metrics()
        client = MarathonClient([url], session=session, metrics=metrics, timeout=0.6, attempts=ATTEMPTS,
                                backoff_initial=0.01, backoff_max=0.05)
        rule = await fault(url, {**row.rule, "method": "GET"})
        with caplog.at_level(logging.INFO), pytest.raises(MarathonError) as raised:
            await pods_call(client, row.call)
        assert (raised.value.verdict.value, raised.value.cause) == (row.verdict, row.reason)
        await answered(url, rule, row)
        assert errors(metrics, "marathon", row.call, row.verdict or "retry", row.reason) == row.answers
        assert len(refusals_logged(caplog, url)) == (1 if row.verdict == "report" else 0)


async def test_marathon_without_pods_answers_404_which_is_no_pods() -> None:
    """A Marathon before pods (1.3 and older) has no /v2/pods resource: Jetty answers 404. The
    simulator serves pods in every version it runs (they exist from 1.4), so the 404 is injected."""
    async with marathon_sim() as url, aiohttp.ClientSession() as session:
        metrics = Metrics()
        client = MarathonClient([url], session=session, metrics=metrics, attempts=ATTEMPTS)
        await fault(url, {"path": "^/v2/pods/", "method": "GET", "status": 404, "body": "Not Found"})
        read = await client.pods_with_instances()
        assert (read.pods, dict(read.malformed), read.supported) == ((), {}, False)
        assert await client.pod_with_instances("/web-pod") is None
        assert errors(metrics, "marathon", "pods", "done", "gone") == 1
        assert errors(metrics, "marathon", "pod", "done", "gone") == 1


POD_STATUS = {
    "id": "/web-pod", "status": "STABLE", "statusSince": "2017-09-01T10:00:06Z",
    "spec": {"id": "/web-pod", "networks": [{"mode": "container", "name": "weave"}],
             "containers": [{"name": "nginx", "endpoints": [{"name": "http", "containerPort": 80}]}]},
    "instances": [{"id": "web-pod.instance-6b9f2c1e", "status": "STABLE", "agentHostname": "127.0.0.5",
                   "networks": [{"name": "weave", "addresses": ["10.32.0.7"]}],
                   "containers": [{"name": "nginx", "status": "TASK_RUNNING", "endpoints": [{"name": "http"}]}]}],
    "lastUpdated": "2017-09-01T10:00:06Z", "lastChanged": "2017-09-01T10:00:06Z",
}


async def test_a_malformed_pod_is_reported_once_and_the_others_are_read(caplog: pytest.LogCaptureFixture) -> None:
    broken = {**POD_STATUS, "id": "/broken", "spec": {"id": "/broken", "containers": "nginx"}}
    async with marathon_sim() as url, aiohttp.ClientSession() as session:
        metrics = Metrics()
        client = MarathonClient([url], session=session, metrics=metrics, attempts=ATTEMPTS)
        rule = await fault(url, {"path": PODS_PATH, "method": "GET", "mode": "garbage",
                                 "body": json.dumps([POD_STATUS, broken])})
        with caplog.at_level(logging.INFO):
            read = await client.pods_with_instances()
        assert [(pod.id, [t.id for t in tasks]) for pod, tasks in read.pods] == [
            ("/web-pod", ["web-pod.instance-6b9f2c1e"])]
        assert list(read.malformed) == ["/broken"] and "spec.containers" in read.malformed["/broken"]
        assert await hits(url, rule) == 1
        assert errors(metrics, "marathon", "pods", "report", "garbage") == 1
        [logged] = refusals_logged(caplog, url)
        assert "/broken" in logged


INFO_ROWS = [  # /v2/info answered 200 with this body -> framework_id(): verdict, reason, what the error says
    ('{"name": "marathon", "version": "1.10.0"}', "retry", "unavailable", "not registered with Mesos yet"),
    ('{"name": "marathon", "version": "1.10.0", "frameworkId": null}', "retry", "unavailable",
     "not registered with Mesos yet"),
    ('{"frameworkId": ""}', "retry", "unavailable", "not registered with Mesos yet"),
    ('{"frameworkId": 42}', "report", "garbage", "frameworkId is 42, not a string"),
    ('{"frameworkId": {"value": "f-1"}}', "report", "garbage", 'frameworkId is {"value": "f-1"}, not a string'),
    ('["not", "an object"]', "report", "garbage", "not a JSON object"),
    # a string that cannot be the lock key's path segment nor a Meta value
    ('{"frameworkId": "a/b c"}', "report", "garbage", "frameworkId \"a/b c\" is not 1-128 of letters"),
    ('{"frameworkId": "' + "f" * 129 + '"}', "report", "garbage", "is not 1-128 of letters"),
]


@pytest.mark.parametrize(("body", "verdict", "reason", "said"), INFO_ROWS)
async def test_marathon_framework_id(body: str, verdict: str, reason: str, said: str,
                                     caplog: pytest.LogCaptureFixture) -> None:
    """The cluster identity (no --cluster-id) comes from /v2/info's frameworkId. Absent or null (a
    Marathon not registered with Mesos yet) is worth asking again; a value that is not a string
    cannot name the cluster: a refusal. Either way the error says why and names --cluster-id,
    never a KeyError or a misleading "no frameworkId"."""
    async with marathon_sim() as url, aiohttp.ClientSession() as session:
        metrics = Metrics()
        client = MarathonClient([url], session=session, metrics=metrics, attempts=ATTEMPTS)
        assert await client.framework_id()  # the simulator's own answer
        rule = await fault(url, {"path": "^/v2/info$", "method": "GET", "mode": "garbage", "body": body})
        with caplog.at_level(logging.INFO), pytest.raises(MarathonError) as raised:
            await client.framework_id()
        assert (raised.value.verdict.value, raised.value.cause) == (verdict, reason)
        assert said in str(raised.value) and "--cluster-id" in str(raised.value) and url in str(raised.value)
        assert await hits(url, rule) == 1  # a 200 is not retried by the client; the start-up loop asks again
        assert errors(metrics, "marathon", "info", verdict, reason) == 1
        assert len(refusals_logged(caplog, url)) == (1 if verdict == "report" else 0)


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "service", *args, stdout=PIPE, stderr=PIPE,
                                                env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    try:
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return int(proc.returncode or 0), out.decode(), err.decode()


async def test_sync_without_a_usable_framework_id_says_why_in_one_line_and_cluster_id_is_the_way_out() -> None:
    async with consul_agents() as (url_a, _), marathon_sim() as url:
        await fault(url, {"path": "^/v2/info$", "method": "GET", "mode": "garbage", "body": '{"frameworkId": 42}'})
        consul = f"http://{{host}}:{url_a.rsplit(':', 1)[1]}"
        code, out, err = await run_cli("sync", "--dry-run", "--marathon", url, "--consul", consul)
        assert (code, out) == (1, ""), err
        assert "Traceback" not in err, err
        last = err.strip().splitlines()[-1]  # after the refusal's log line
        assert last.startswith("marathon-consul-registrar: sync: Marathon GET"), err
        assert "frameworkId is 42, not a string" in last and "set --cluster-id" in last
        code, out, err = await run_cli("sync", "--dry-run", "--marathon", url, "--consul", consul,
                                       "--cluster-id", "contract")
        assert code == 0, err
        assert "missing" in json.loads(out)


async def test_marathon_404_for_an_unknown_app_is_done() -> None:
    async with marathon_sim() as url, aiohttp.ClientSession() as session:
        metrics = Metrics()
        client = MarathonClient([url], session=session, metrics=metrics, attempts=ATTEMPTS)
        assert await client.app_with_tasks("/gone") is None
        assert errors(metrics, "marathon", "app", "done", "gone") == 1
        assert [s.labels["verdict"] for s in metrics.call_errors.collect()[0].samples
                if s.name.endswith("_total") and s.value] == ["done"]


async def test_marathon_redirect_to_the_leader_is_followed_with_credentials_and_bounded() -> None:
    """A standby's 307 to the leader (another configured master) is followed, keeping the
    credentials; a redirect loop ends as a REPORT after `_MAX_REDIRECTS`, not a retry loop."""
    seen: list[tuple[str, str | None]] = []

    async def standby(request: web.Request) -> web.Response:
        seen.append(("standby", request.headers.get("Authorization")))
        raise web.HTTPTemporaryRedirect(f"http://{MARATHON}:{leader_port}{request.path_qs}")

    async def leader(request: web.Request) -> web.Response:
        seen.append(("leader", request.headers.get("Authorization")))
        return web.json_response({"app": {"id": "/web", "instances": 0, "tasks": []}})

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.path_qs)

    apps = []
    ports = []
    for handler in (standby, leader, loop):
        app = web.Application()
        app.router.add_get("/v2/apps/web", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port(MARATHON)
        await web.TCPSite(runner, MARATHON, port).start()
        apps.append(runner)
        ports.append(port)
    standby_port, leader_port, loop_port = ports
    try:
        async with aiohttp.ClientSession() as session:
            metrics = Metrics()
            client = MarathonClient([f"http://u:p@{MARATHON}:{standby_port}", f"http://u:p@{MARATHON}:{leader_port}"],
                                    session=session, metrics=metrics, attempts=ATTEMPTS)
            client._leader_checked = True  # the standby answers no /v2/leader here
            found = await client.app_with_tasks("/web")
            assert found is not None and found[0].id == "/web"
            assert [who for who, _ in seen] == ["standby", "leader"]
            assert seen[0][1] == seen[1][1] is not None, "the credentials follow to a configured master"

            looping = MarathonClient([f"http://{MARATHON}:{loop_port}"], session=session, metrics=metrics,
                                     attempts=ATTEMPTS)
            with pytest.raises(MarathonError) as raised:
                await looping.app_with_tasks("/web")
            assert (raised.value.verdict.value, raised.value.cause) == ("report", "redirect")
            assert errors(metrics, "marathon", "app", "report", "redirect") == 1
    finally:
        for runner in apps:
            await runner.cleanup()


def test_every_client_error_is_a_call_error() -> None:
    """The reconciler tells "retry soon" from "leave to the resync" through CallError alone."""
    assert issubclass(ConsulError, CallError) and issubclass(DockerLookupError, CallError)
    assert issubclass(MarathonError, CallError)


# ---------------------------------------------------------------- the reconciler over refusals

@asynccontextmanager
async def reconciler_over(urls: list[str]) -> AsyncIterator[tuple[Reconciler, FakeMarathon, Metrics]]:
    """A started reconciler writing through the real py-consul clients into the two simulated
    agents; Marathon and the containers are in-memory (their contract rows are above). One app,
    task t1 on agent A, task t2 on agent B."""
    marathon, lookup, metrics = FakeMarathon(), FakeLookup(), Metrics()
    marathon.apps[APP_ID] = web_app(APP_ID)
    for n, host in ((1, AGENT_A), (2, AGENT_B)):
        task = Task(id=f"web.t{n}", app_id=APP_ID, host=host, ports=(31000 + n,))
        marathon.tasks.setdefault(APP_ID, {})[task.id] = task
        lookup.by_task[task.id] = Container(id=f"c{n}", task_id=task.id, network_ips={"weave": f"10.32.0.{n}"})
        lookup.hosts[task.id] = host
    port = urls[0].rsplit(":", 1)[1]
    agents = ConsulAgents(f"http://{{host}}:{port}", token=None, metrics=metrics, timeout=1, attempts=ATTEMPTS)
    settings = ReconcileSettings(workers=2, max_attempts=4, backoff_initial=0.05, backoff_max=0.2)
    reconciler = Reconciler(marathon=marathon, lookup=lookup, agents=agents, metrics=metrics, settings=settings)
    reconciler.start()
    try:
        yield reconciler, marathon, metrics
    finally:
        await reconciler.stop()
        await agents.close()


async def held(url: str) -> set[str]:
    agent = AgentClient("x", url, token=None, metrics=Metrics(), timeout=2, attempts=1)
    try:
        return set(await agent.owned())
    finally:
        await agent.close()


async def test_a_refusing_agent_leaves_the_rest_of_the_resync_done_and_is_not_retried_in_a_loop(
        caplog: pytest.LogCaptureFixture) -> None:
    async with consul_agents() as urls, reconciler_over(urls) as (reconciler, _, metrics):
        url_a, url_b = urls
        rule = await fault(url_a, {"path": REGISTER, "method": "PUT", "listen": AGENT_B, "status": 403,
                                   "body": "Permission denied"})
        with caplog.at_level(logging.INFO):
            for _ in range(2):  # a second resync asks once more: once per resync, not in a loop
                async with asyncio.timeout(5):
                    await reconciler.resync()
                    await reconciler.wait_idle()
        assert await held(url_a) == {"mcr-web.t1-0"} and await held(url_b) == set()
        assert await hits(url_a, rule) == 2
        assert errors(metrics, "consul", "register", "report", "acl-denied") == 2
        assert metrics.registry.get_sample_value("mcr_work_parked_total") == 2
        assert metrics.registry.get_sample_value("mcr_resyncs_total", {"result": "ok"}) == 2
        assert len(refusals_logged(caplog, url_b)) == 1
        assert "left to the next resync" in reconciler.snapshot()["retrying_apps"][APP_ID]  # type: ignore[index]
        await clear(url_a)  # the operator fixed the ACL: the next resync registers it
        await reconciler.resync()
        await reconciler.wait_idle()
        assert await held(url_b) == {"mcr-web.t2-0"}
        assert reconciler.snapshot()["retrying_apps"] == {}


async def test_an_agent_refusing_its_reads_is_counted_as_failing_and_the_resync_completes() -> None:
    """A proxy in front of agent B refuses /v1/agent/self: the resync still completes (partial),
    counts B as failing, and A's task is registered."""
    async with consul_agents() as urls, reconciler_over(urls) as (reconciler, _, metrics):
        url_a, url_b = urls
        await fault(url_a, {"path": "^/v1/agent/(self|services)$", "listen": AGENT_B, "status": 403,
                            "body": "Permission denied"})
        async with asyncio.timeout(5):
            drift = await reconciler.resync()
            await reconciler.wait_idle()
        assert list(drift.unreachable) == [url_b]
        assert metrics.registry.get_sample_value("mcr_resync_agents_failing") == 1
        assert metrics.registry.get_sample_value("mcr_resyncs_total", {"result": "partial"}) == 1
        assert await held(url_a) == {"mcr-web.t1-0"}
        assert errors(metrics, "consul", "agent_self", "retry", "no-leader") == 0
        assert errors(metrics, "consul", "agent_self", "report", "acl-denied") == 1


async def test_deregistering_what_someone_already_removed_is_done() -> None:
    async with consul_agents() as urls, reconciler_over(urls) as (reconciler, marathon, metrics):
        url_a, _ = urls
        await reconciler.resync()
        await reconciler.wait_idle()
        async with aiohttp.ClientSession() as http, http.put(
                f"{url_a}/v1/agent/service/deregister/mcr-web.t1-0") as resp:  # behind our back
            assert resp.status == 200
        del marathon.tasks[APP_ID]["web.t1"]
        reconciler.hint_task(TaskEvent(task_id="web.t1", app_id=APP_ID, state=TaskState.KILLED, host=AGENT_A,
                                        ports=(), ip_addresses=(), app_version="v1"))
        async with asyncio.timeout(5):
            await reconciler.wait_idle()
        assert errors(metrics, "consul", "deregister", "done", "gone") == 1
        assert reconciler.snapshot()["retrying_apps"] == {}
        assert metrics.registry.get_sample_value("mcr_retries_total", {"system": "reconcile"}) is None
        assert "mcr-web.t1-0" not in {r["service_id"] for r in reconciler.snapshot()["registrations"]}  # type: ignore[attr-defined]


async def test_marathon_event_stream_refused_is_counted_and_logged_once_while_it_keeps_reconnecting(
        caplog: pytest.LogCaptureFixture) -> None:
    """The event source has nothing to hand over to, so it reconnects for ever (backing off), but
    a refusal of `/v2/events` is a report: counted per answer, logged once."""
    async with marathon_sim() as url, aiohttp.ClientSession() as session:
        metrics = Metrics()
        client = MarathonClient([url], session=session, metrics=metrics, attempts=ATTEMPTS)
        rule = await fault(url, {"path": "^/v2/events$", "status": 403, "body": "Not Authorized"})
        stream = EventStream(client, metrics=metrics, on_event=lambda _: None, on_connect=lambda: None,
                             backoff_initial=0.01, backoff_cap=0.02)
        with caplog.at_level(logging.INFO):
            task = asyncio.create_task(stream.run())
            try:
                for _ in range(250):  # up to 5 s for three refused connects
                    if await hits(url, rule) >= 3:
                        break
                    await asyncio.sleep(0.02)
            finally:
                stream.stop()
                await task
        assert errors(metrics, "marathon", "events", "report", "acl-denied") >= 3
        assert len(refusals_logged(caplog, url)) == 1
        assert not stream.connected


async def test_a_ttl_check_gone_behind_our_back_is_registered_again() -> None:
    """Someone deregistered a task's service; Marathon's verdict changes, the TTL push answers 404
    (`Unknown check ID`): the ledger forgets the registration and the task's retry registers it
    again, with Marathon's verdict."""
    async with consul_agents() as urls, reconciler_over(urls) as (reconciler, marathon, metrics):
        url_a, _ = urls
        marathon.apps[APP_ID] = web_app(APP_ID, checks=(HealthCheck(protocol="COMMAND", command="true"),))
        tasks = marathon.tasks[APP_ID]
        tasks["web.t1"] = replace(tasks["web.t1"], health=(True,))
        await reconciler.resync()
        await reconciler.wait_idle()
        assert "mcr-web.t1-0" in await held(url_a)
        async with aiohttp.ClientSession() as http, http.put(
                f"{url_a}/v1/agent/service/deregister/mcr-web.t1-0") as resp:  # behind our back
            assert resp.status == 200
        tasks["web.t1"] = replace(tasks["web.t1"], health=(False,))
        reconciler.hint_task(TaskEvent(task_id="web.t1", app_id=APP_ID, state=TaskState.RUNNING, host=AGENT_A,
                                       ports=(31001,), ip_addresses=(), app_version="v1"))
        async with asyncio.timeout(5):
            await reconciler.wait_idle()
        assert errors(metrics, "consul", "check_update", "retry", "gone") == 1
        assert "mcr-web.t1-0" in await held(url_a)
        async with aiohttp.ClientSession() as http, http.get(f"{url_a}/v1/agent/checks") as resp:
            checks = await resp.json()
        assert {c["Status"] for c in checks.values() if c["ServiceID"] == "mcr-web.t1-0"} == {"critical"}
