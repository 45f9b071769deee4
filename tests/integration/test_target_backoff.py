"""The back-off holds per outside system (each Consul agent, each Marathon master), not per piece
of work (issue 18 item 2).

The real reconciler writes through the real py-consul client into the in-process Consul simulator;
one agent answers every call with a 429/5xx for 3 s (devcluster/faults.py) while hints for one
app keep arriving. Each hint re-runs the app's step at once, but the calls reaching that agent are
spaced by the agent's one back-off (`service.retry.Cooldown`, policy `CALL_BACKOFF`), not each
run's own back-off (an independent run counted 28 register calls 50-150 ms apart in 3.5 s), and
the registration lands once the agent answers again."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import aiohttp
import pytest
from aiohttp import web

import service.consul.call as consul_call
import service.docker.engine as docker_engine
from devcluster import faults as faults_module
from devcluster.docker_sim import start as start_docker
from devcluster.docker_sim import stop as stop_docker
from devcluster.faults import Faults
from service import cli
from service.config import config_from_args
from service.consul.agents import AgentClient, ConsulError
from service.consul.call import AgentCooldowns
from service.consul.lock import ConsulLockClient
from service.docker.lookup import ContainerLookup
from service.leadership import lock_key
from service.marathon.client import MarathonClient, MarathonError
from service.marathon.events import TaskEvent
from service.metrics import Metrics
from service.model import Registration, TaskState
from service.retry import Cooldown
from service.runtime.lock import lock_for
from service.runtime.parts import build_reconciler, connect
from tests.integration.test_error_contract import (
    AGENT_A,
    AGENT_B,
    APP_ID,
    ENGINE,
    LIST,
    MARATHON,
    consul_agents,
    fault,
    marathon_sim,
    reconciler_over,
)

WINDOW = 3.0  # seconds the agent answers with the fault


def top(_lo: float, hi: float) -> float:
    return hi


@pytest.mark.parametrize("status,hints", [(500, 10), (500, 30), (429, 30), (503, 30)])
async def test_calls_to_a_failing_agent_are_spaced_by_its_back_off_whatever_work_asks(
        monkeypatch: pytest.MonkeyPatch, status: int, hints: int) -> None:
    policy = replace(consul_call.CALL_BACKOFF, uniform=top)  # every back-off at its ceiling
    monkeypatch.setattr(consul_call, "CALL_BACKOFF", policy)
    calls: list[float] = []  # when a request reached agent A
    pick = Faults.pick

    def recording_pick(self: Faults, request: web.Request) -> faults_module.Rule | None:
        if faults_module._local(request).startswith(AGENT_A + ":"):
            calls.append(time.monotonic())
        return pick(self, request)

    monkeypatch.setattr(Faults, "pick", recording_pick)  # every request, faulted or not
    hint = TaskEvent(task_id="web.t1", app_id=APP_ID, state=TaskState.RUNNING, host=AGENT_A, ports=(31001,),
                     ip_addresses=(), app_version="v1")
    async with consul_agents() as urls, reconciler_over(urls) as (reconciler, _, _metrics):
        await fault(urls[0], {"path": "^/v1/", "listen": AGENT_A, "status": status, "duration": WINDOW})
        began = time.monotonic()
        landed = None
        while time.monotonic() - began < WINDOW + 6:
            reconciler.hint_task(hint)
            await asyncio.sleep(WINDOW / hints)
            if "mcr-web.t1-0" in {r["service_id"] for r in reconciler.snapshot()["registrations"]}:  # type: ignore[attr-defined]
                landed = time.monotonic()
                break
    during = [t for t in calls if began <= t < began + WINDOW]
    gaps = [b - a for a, b in itertools.pairwise(during)]
    # the ceilings 0.1, 0.2, 0.4, 0.8, 1.6, 2 s: at most 6 windows begin within 3 s (+1 in flight)
    assert len(during) <= 7, gaps
    assert min(gaps) >= policy.initial * 0.9, gaps  # never two calls at once
    assert max(gaps) >= 0.8 * 0.9, gaps  # and they grow
    assert landed is not None, "the registration never landed"
    assert landed - (began + WINDOW) <= policy.cap + 1.0  # within one back-off of the recovery


async def test_calls_to_a_failing_marathon_master_share_its_back_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Twenty app reads at once while the master answers 503 for 1.5 s: its one back-off spaces
    what reaches it (without it, each read retried on a back-off of its own: 80 requests)."""
    calls: list[float] = []
    pick = Faults.pick

    def recording_pick(self: Faults, request: web.Request) -> faults_module.Rule | None:
        if request.path.startswith("/v2/apps"):
            calls.append(time.monotonic())
        return pick(self, request)

    monkeypatch.setattr(Faults, "pick", recording_pick)
    async with marathon_sim() as url, aiohttp.ClientSession() as session:
        assert MARATHON in url
        client = MarathonClient([url], session=session, metrics=Metrics(), attempts=4, backoff_initial=0.2,
                                backoff_max=1.0)
        client._backoff = replace(client._backoff, uniform=top)
        client._cooldowns = (Cooldown(client._backoff),)
        await fault(url, {"path": "^/v2/apps", "status": 503, "duration": 1.5})
        began = time.monotonic()
        results = await asyncio.gather(*(client.app_with_tasks("/web") for _ in range(20)), return_exceptions=True)
    assert all(r is None or isinstance(r, MarathonError) for r in results), results
    during = [t for t in calls if began <= t < began + 1.5]
    gaps = [b - a for a, b in itertools.pairwise(during)]
    # the 20 in flight at the first 503, then one probe per back-off (0.2, 0.4, 0.8 s): 23, not 80
    assert len(during) <= 20 + 3, " ".join(f"{c - began:.3f}" for c in calls)
    assert all(g >= 0.2 * 0.9 for g in gaps[19:]), gaps
    assert any(r is None for r in results), "no read got through once the master answered again"


@pytest.mark.parametrize("status", [500, 503])
async def test_lookups_on_a_failing_engine_are_spaced_by_its_back_off_whatever_work_asks(
        monkeypatch: pytest.MonkeyPatch, status: int) -> None:
    """The Docker lookup retries nothing itself (the step's work is retried), so before the engine's
    Cooldown every app's retry, and every new hint, called a failing engine at once."""
    policy = replace(docker_engine.ENGINE_BACKOFF, uniform=top)
    monkeypatch.setattr(docker_engine, "ENGINE_BACKOFF", policy)
    calls: list[float] = []
    pick = Faults.pick

    def recording_pick(self: Faults, request: web.Request) -> faults_module.Rule | None:
        if request.path.endswith("/containers/json"):
            calls.append(time.monotonic())
        return pick(self, request)

    monkeypatch.setattr(Faults, "pick", recording_pick)
    running = await start_docker([(ENGINE, 0)])
    base = f"http://{ENGINE}:{running[0].port}"
    lookup = ContainerLookup(f"tcp://{{host}}:{running[0].port}", ("weave",), metrics=Metrics(), timeout=0.3,
                             list_ttl=0.0)
    try:
        await lookup.containers(ENGINE)  # the API version is known: only listings go to the engine
        await fault(base, {"path": LIST, "method": "GET", "status": status, "duration": WINDOW})
        began = time.monotonic()
        answered = None
        while time.monotonic() - began < WINDOW + 6:
            # 20 pieces of work a second ask for the engine's containers, as a burst's retries do
            results = await asyncio.gather(*(lookup.containers(ENGINE) for _ in range(4)), return_exceptions=True)
            if not any(isinstance(r, BaseException) for r in results):
                answered = time.monotonic()
                break
            await asyncio.sleep(0.2)
    finally:
        await lookup.close()
        await stop_docker(running)
    during = [t for t in calls if began <= t < began + WINDOW]
    gaps = [b - a for a, b in itertools.pairwise(during)]
    assert len(during) <= 7, gaps  # ceilings 0.1, 0.2, 0.4, 0.8, 1.6, 2 s: at most 6 windows in 3 s
    assert min(gaps) >= policy.initial * 0.9, gaps
    assert answered is not None, "the engine's answer never came back"
    assert answered - (began + WINDOW) <= policy.cap + 1.0


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_the_lock_and_the_registrations_share_the_back_off_of_their_one_agent(
        monkeypatch: pytest.MonkeyPatch, status: int) -> None:
    """The lock agent is usually also the agent of the tasks on its host. While it answers 429/5xx,
    the lock's calls (session create, key reads) and the registrations, each asking again at once
    after every failure, reach it spaced by its one back-off, not by one back-off per client (each
    had its own Cooldown: two calls per window, side by side); both land once it answers again."""
    policy = replace(consul_call.CALL_BACKOFF, uniform=top)
    monkeypatch.setattr(consul_call, "CALL_BACKOFF", policy)
    calls: list[tuple[float, str]] = []  # (when, which client) a request reached agent A
    pick = Faults.pick

    def recording_pick(self: Faults, request: web.Request) -> faults_module.Rule | None:
        if faults_module._local(request).startswith(AGENT_A + ":"):
            calls.append((time.monotonic(), "lock" if request.path.startswith(("/v1/session", "/v1/kv")) else "agent"))
        return pick(self, request)

    monkeypatch.setattr(Faults, "pick", recording_pick)
    reg = Registration(agent_host=AGENT_A, service_id="mcr-web.t1-0", name="web", tags=(), address="10.32.0.9",
                       port=80, meta=(("managed-by", "marathon-consul-registrar"),), checks=())
    cooldowns = AgentCooldowns()  # what `runtime.parts.connect` makes once per process
    async with consul_agents() as (url_a, _):
        agent = AgentClient(AGENT_A, url_a, token=None, metrics=Metrics(), timeout=1.0, attempts=1,
                            cooldowns=cooldowns)
        lock = ConsulLockClient(url_a, token=None, metrics=Metrics(), timeout=1.0, attempts=1, cooldowns=cooldowns)
        landed: dict[str, float] = {}

        async def until_answered(name: str, call: Callable[[], Awaitable[object]]) -> None:
            while time.monotonic() - began < WINDOW + 6:
                try:
                    await call()
                except ConsulError:
                    continue  # at once: the agent's back-off is the only wait
                landed[name] = time.monotonic()
                return

        async def lock_round() -> None:
            session = await lock.create_session(name="t", ttl_seconds=10, lock_delay_seconds=0)
            await lock.get_key(lock_key("shared"), index=None, wait_seconds=1)
            await lock.destroy_session(session)

        try:
            await fault(url_a, {"path": "^/v1/", "listen": AGENT_A, "status": status, "duration": WINDOW})
            began = time.monotonic()
            await asyncio.gather(until_answered("agent", lambda: agent.register(reg)),
                                 until_answered("lock", lock_round))
        finally:
            await agent.close()
            await lock.close()
    during = [(t, who) for t, who in calls if began <= t < began + WINDOW]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(during)]
    # both clients' first calls went out together, before any answer; then one probe per window
    # (ceilings 0.1, 0.2, 0.4, 0.8, 1.6, 2 s: at most 6 windows begin within 3 s)
    assert len(during) <= 2 + 6, during
    assert min(gaps[1:]) >= policy.initial * 0.9, during  # never two calls at once, whichever client
    assert {who for _, who in during} == {"lock", "agent"}
    assert set(landed) == {"agent", "lock"}, "a client never got through once the agent answered"
    assert max(landed.values()) - (began + WINDOW) <= policy.cap + 1.0


async def test_one_agent_address_is_one_back_off_for_every_client_the_registrar_builds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Built as `serve` builds them: the lock agent (by default --consul with {host} = $HOST) and
    the registrations' client of that host share one Cooldown; another host's agent has its own."""
    monkeypatch.setenv("HOST", AGENT_A)
    args = cli._parser().parse_args(["serve", "--consul", "http://{host}:8500", "--cluster-id", "c"])
    config = config_from_args(args)
    assert config.lock_agent == f"http://{AGENT_A}:8500"
    outside = connect(config)
    parts = build_reconciler(config, outside, cluster_id="c", may_write=None)
    lock = lock_for(config, outside, cluster_id="c", serving=True)
    assert lock is not None
    try:
        shared = lock[1]._call.cooldown
        assert parts.agents.agent(AGENT_A)._call.cooldown is shared
        assert parts.agents.agent(AGENT_B)._call.cooldown is not shared
    finally:
        await lock[1].close()
        await parts.close()
        await outside.close()
