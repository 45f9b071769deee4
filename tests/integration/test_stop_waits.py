"""Every wait of every outside client ends at once on the process's stop signal (issue 18 items
2-3), as `serve` builds the clients: `runtime.parts.connect` with the process's `Stop`, then the
reconcile core's clients and the lock's (`build_reconciler`, `lock_for`).

Each row puts one client in a back-off window of 10 s (a Consul agent or a Docker engine answering
500, a Marathon master answering 503, through the real client libraries against the in-process
simulators), sets the stop signal while a call waits in it, and asserts the call ends with
`Stopped` within a second; the event stream's reconnect wait likewise. Before the stop reached the
clients, each waited its window out: the lock's loop then held the stop for its whole grace period,
and a worker kept calling a failing target until it was cancelled. A call made as part of stopping
(`farewell`: the lock's release, the callbacks' unsubscription) still goes out after the signal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

import service.consul.call as consul_call
import service.docker.engine as docker_engine
import service.marathon.masters as masters
import service.marathon.sse as sse
from devcluster import faults as faults_module
from devcluster.docker_sim import start as start_docker
from devcluster.docker_sim import stop as stop_docker
from devcluster.faults import Faults
from service import cli
from service.backoff import Backoff
from service.config import config_from_args
from service.intake import EventIntake
from service.model import Registration
from service.retry import Stop, Stopped, farewell
from service.runtime.lock import lock_for
from service.runtime.parts import Outside, ReconcileParts, build_reconciler, connect
from service.runtime.sources import Stream
from service.web import Readiness
from tests.integration.test_error_contract import AGENT_A, ENGINE, LIST, consul_agents, fault, marathon_sim

WINDOW = 10.0  # every back-off in these tests: far longer than the stop may take
ENDS_WITHIN = 1.0


def top(_lo: float, hi: float) -> float:
    return hi


LONG = Backoff(initial=WINDOW, cap=WINDOW, uniform=top)
REG = Registration(agent_host=AGENT_A, service_id="mcr-web.t1-0", name="web", tags=(), address="10.32.0.9",
                   port=80, meta=(("managed-by", "marathon-consul-registrar"),), checks=())


@dataclass
class Built:
    outside: Outside
    parts: ReconcileParts
    stop: Stop


@asynccontextmanager
async def built(*flags: str) -> AsyncIterator[Built]:
    """The clients as `serve` builds them from its flags, with the process's stop signal."""
    config = config_from_args(cli._parser().parse_args(["serve", "--cluster-id", "c", *flags]))
    stop = Stop()
    outside = connect(config, stop)
    parts = build_reconciler(config, outside, cluster_id="c", may_write=None)
    try:
        yield Built(outside, parts, stop)
    finally:
        await parts.close()
        await outside.close()


@asynccontextmanager
async def agent_failing() -> AsyncIterator[str]:
    async with consul_agents() as urls:
        await fault(urls[0], {"path": "^/v1/", "listen": AGENT_A, "status": 500, "duration": 60})
        yield urls[0]


@asynccontextmanager
async def engine_failing() -> AsyncIterator[str]:
    running = await start_docker([(ENGINE, 0)])
    try:
        await fault(f"http://{ENGINE}:{running[0].port}", {"path": LIST, "status": 500, "duration": 60})
        yield f"tcp://{{host}}:{running[0].port}"
    finally:
        await stop_docker(running)


@asynccontextmanager
async def master_failing() -> AsyncIterator[str]:
    async with marathon_sim() as url:
        await fault(url, {"path": "^/v2/apps", "status": 503, "duration": 60})
        yield url


async def agent_call(b: Built) -> Any:
    return await b.parts.agents.agent(AGENT_A).register(REG)


async def lock_call(b: Built) -> Any:
    config = config_from_args(cli._parser().parse_args(
        ["serve", "--cluster-id", "c", "--lock-agent", b.parts.agents.agent(AGENT_A).url]))
    lock = lock_for(config, b.outside, cluster_id="c", serving=True)
    assert lock is not None
    try:
        return await lock[1].create_session(name="t", ttl_seconds=10, lock_delay_seconds=0)
    finally:
        await lock[1].close()


async def engine_call(b: Built) -> Any:
    return await b.parts.lookup.containers(ENGINE)


async def master_call(b: Built) -> Any:
    return await b.outside.marathon.app_with_tasks("/web")


Row = tuple[Callable[[], AbstractAsyncContextManager[str]], str, Callable[[Built], Awaitable[Any]]]
ROWS: dict[str, Row] = {
    # the registrations' client in its agent's back-off (Cooldown), between attempts of one call
    "consul agent": (agent_failing, "--consul", agent_call),
    # the lock's client, in the same agent's back-off (one per agent address)
    "lock agent": (agent_failing, "--consul", lock_call),
    # a Docker engine's back-off: the next lookup waits it out before it calls
    "docker engine": (engine_failing, "--docker", engine_call),
    # a Marathon master's back-off, between the retries of one read
    "marathon master": (master_failing, "--marathon", master_call),
}


@pytest.mark.parametrize("row", list(ROWS))
async def test_stop_ends_a_client_waiting_out_a_back_off_at_once(monkeypatch: pytest.MonkeyPatch, row: str) -> None:
    failing, flag, call = ROWS[row]
    monkeypatch.setattr(consul_call, "CALL_BACKOFF", LONG)
    monkeypatch.setattr(docker_engine, "ENGINE_BACKOFF", LONG)
    monkeypatch.setattr(masters, "Backoff", lambda **kw: Backoff(**{**kw, "initial": WINDOW, "cap": WINDOW,
                                                                     "uniform": top}))
    calls: list[float] = []
    called = asyncio.Event()
    pick = Faults.pick

    def recording_pick(self: Faults, request: web.Request) -> faults_module.Rule | None:
        calls.append(time.monotonic())
        called.set()
        return pick(self, request)

    monkeypatch.setattr(Faults, "pick", recording_pick)
    async with failing() as url:
        value = url.replace(AGENT_A, "{host}") if flag == "--consul" else url
        async with built(flag, value) as b:
            if row == "docker engine":  # the engine's first failure starts its back-off
                with pytest.raises(docker_engine.DockerLookupError):
                    await call(b)
            waiting = asyncio.create_task(call(b))
            await asyncio.wait_for(called.wait(), 5.0)
            await asyncio.sleep(0.3)  # the call failed and waits out the 10 s back-off now
            assert not waiting.done()
            before = len(calls)
            b.stop.set()
            stopped = time.monotonic()
            with pytest.raises(Stopped):
                await asyncio.wait_for(waiting, ENDS_WITHIN)
            assert time.monotonic() - stopped < ENDS_WITHIN
            assert len(calls) == before  # nothing more was sent


async def test_a_call_made_as_part_of_stopping_still_goes_out_after_the_signal() -> None:
    """The lock's release and session destroy, the callbacks' unsubscription (`farewell`)."""
    async with consul_agents() as urls, built("--consul", urls[0].replace(AGENT_A, "{host}")) as b:
        b.stop.set()
        with pytest.raises(Stopped):
            await b.parts.agents.agent(AGENT_A).register(REG)
        with farewell():
            await b.parts.agents.agent(AGENT_A).register(REG)
            assert list(await b.parts.agents.agent(AGENT_A).owned()) == [REG.service_id]


async def test_stop_ends_the_event_streams_reconnect_wait_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The event source as `serve` starts it (`runtime.sources.Stream`), reconnecting to a master
    that answers 503: its back-off ends on the process's stop, not only when the source is closed."""
    monkeypatch.setattr(sse, "Backoff", lambda **kw: Backoff(**{**kw, "initial": WINDOW, "cap": WINDOW,
                                                                 "uniform": top}))
    called = asyncio.Event()
    pick = Faults.pick

    def recording_pick(self: Faults, request: web.Request) -> faults_module.Rule | None:
        if request.path == "/v2/events":
            called.set()
        return pick(self, request)

    monkeypatch.setattr(Faults, "pick", recording_pick)
    async with marathon_sim() as url:
        await fault(url, {"path": "^/v2/events$", "status": 503, "duration": 60})
        async with built("--marathon", url) as b:
            source = Stream(b.outside, EventIntake(None, b.outside.metrics), Readiness(), lambda: None)
            await source.start(b.stop)
            assert source._task is not None
            await asyncio.wait_for(called.wait(), 5.0)
            await asyncio.sleep(0.3)  # refused, it waits out the 10 s back-off now
            assert not source._task.done()
            b.stop.set()
            await asyncio.wait_for(asyncio.shield(source._task), ENDS_WITHIN)  # run() returns: stopped
            await source.close()
