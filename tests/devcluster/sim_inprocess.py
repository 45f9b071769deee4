"""The three simulators served in the test's own event loop, on addresses no other test module uses
(127.0.0.28 and 127.0.0.29), for tests of their HTTP behaviour that need neither Docker nor a
subprocess: the Consul simulator with two agents, the Marathon simulator with no slaves (apps with
0 instances), and two Docker engine simulators."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from aiohttp import web

from devcluster.consul_sim.acl import AclStore
from devcluster.consul_sim.http_api import Sim, make_app
from devcluster.consul_sim.state import State
from devcluster.docker_sim import Running, start, stop
from devcluster.marathon_sim.bus import EventBus
from devcluster.marathon_sim.config import SimConfig
from devcluster.marathon_sim.http_api import Api
from devcluster.marathon_sim.scheduler import Scheduler
from devcluster.marathon_sim.sse import EventStreams
from devcluster.marathon_sim.state import Registry

HOST1 = "127.0.0.28"
HOST2 = "127.0.0.29"


# How long a simulator's teardown lets requests still in its handlers finish before cancelling them:
# a test's "slow" fault (30 s) or a blocking query (up to its `wait`) would otherwise hold the
# teardown for as long (aiohttp's default is 60 s). The client side has ended by then.
TEARDOWN_GRACE = 1.0


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    """Base URLs of what is being served, and the objects behind them."""

    urls: list[str]
    consul: Sim | None = None
    marathon: Api | None = None
    docker: list[Running] | None = None


@asynccontextmanager
async def consul(hosts: tuple[str, str] = (HOST1, HOST2)) -> AsyncIterator[Served]:
    """Two Consul agents (node-a on the first host, node-b on the second) sharing one catalog and
    one port, as the simulator's `__main__` runs them; no check runner."""
    port = free_port(hosts[0])
    state = State("dc1", [(hosts[0], port, "node-a"), (hosts[1], port, "node-b")])
    sim = Sim(state, AclStore(None, []))
    runners = []
    try:
        for agent in state.agents.values():
            runner = web.AppRunner(make_app(sim, agent), access_log=None, shutdown_timeout=TEARDOWN_GRACE)
            await runner.setup()
            await web.TCPSite(runner, agent.host, agent.port).start()
            runners.append(runner)
        yield Served([f"http://{host}:{port}" for host in hosts], consul=sim)
    finally:
        for runner in runners:
            await runner.cleanup()


@asynccontextmanager
async def marathon(version: tuple[int, int] = (1, 10), host: str = HOST1) -> AsyncIterator[Served]:
    """A Marathon simulator with no slaves (apps of 0 instances) on `host`."""
    port = free_port(host)
    cfg = SimConfig(version=version, listen_host=host, listen_port=port)
    bus = EventBus()
    registry = Registry(cfg)
    api = Api(cfg, registry, Scheduler(cfg, registry, bus, {}), EventStreams(cfg, bus), None)
    runner = web.AppRunner(api.build(), access_log=None, shutdown_timeout=TEARDOWN_GRACE)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield Served([f"http://{host}:{port}"], marathon=api)
    finally:
        await api.sched.shutdown()
        await runner.cleanup()


@asynccontextmanager
async def docker() -> AsyncIterator[Served]:
    """Two simulated engines (slaves) in one process, on HOST1 and HOST2."""
    running = await start([(HOST1, 0), (HOST2, 0)])
    try:
        yield Served([f"http://{r.host}:{r.port}" for r in running], docker=running)
    finally:
        await stop(running)


@pytest.fixture
async def sim() -> AsyncIterator[Running]:
    """One simulated Docker engine on 127.0.0.1 (a fixture: import it into the test module)."""
    running = await start([("127.0.0.1", 0)])
    try:
        yield running[0]
    finally:
        await stop(running)


async def raw_get(url: str, path: str) -> bytes:
    """One GET on a fresh connection, no retry (unlike aiohttp's client, which retries an idempotent
    request once when a reused connection is reset): the bytes the server sent before closing."""
    host, _, port = url.removeprefix("http://").partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
