"""SIGTERM ends the registrar within 5 s at every stage of its life, whatever is unreachable.

Marathon's `taskKillGracePeriodSeconds` and `docker stop` give a process a grace period after
SIGTERM, then SIGKILL it: a registrar that outlives it never releases its lock (the standby waits
2 x TTL + lock-delay) and never unsubscribes. Each case starts the real process (`python -m
service serve`, flags as an operator gives them) against outside systems that refuse connections,
accept and never answer, or answer errors (the in-process simulators of
`tests/devcluster/sim_inprocess.py`, with their fault rules), waits until it is in the stage named
(read from its /ready and /v1/registrations), sends SIGTERM, and asserts it exits with status 0
within 5 s; a lock holder must have released its key, a standby must be gone in well under 2 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest

from service.leadership import lock_key
from tests.devcluster import sim_inprocess
from tests.helpers import Process, free_port, http

EXIT_WITHIN = 5.0
# a registrar that does not hold the lock has nothing to give back: its exit is the process's own,
# never the lock's 2 s stop grace spent waiting for a call or a back-off of its contention
NOT_HOLDING_EXIT_WITHIN = 1.5
CLUSTER = "shutdown-test"
KEY = lock_key(CLUSTER)


@pytest.fixture
def refusing() -> str:
    """A URL nothing listens on: every connection is refused."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def stalling() -> Iterator[str]:
    """A URL whose server accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
async def marathon() -> AsyncIterator[sim_inprocess.Served]:
    async with sim_inprocess.marathon() as served:
        yield served
        # streams to a registrar that is gone would hold the simulator's shutdown for seconds
        async with aiohttp.ClientSession() as s, s.post(f"{served.urls[0]}/_sim/event-streams/drop"):
            pass


@pytest.fixture
async def consul() -> AsyncIterator[sim_inprocess.Served]:
    async with sim_inprocess.consul() as served:
        yield served


def fault(served: sim_inprocess.Served, **rule: Any) -> None:
    sim = served.marathon or served.consul
    assert sim is not None
    sim.faults.add(rule)


class Registrar:
    def __init__(self, *flags: str, name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = ["service", "serve", "--listen", f"127.0.0.1:{self.port}", "--resync-interval", "60",
                "--log-level", "DEBUG", *flags]
        self.process = Process(argv, f"shutdown-{name}-{self.port}")

    async def get(self, path: str) -> tuple[int, Any]:
        status, body, _ = await asyncio.to_thread(http, "GET", self.url + path, timeout=2.0)
        return status, body

    async def until(self, what: str, condition: Callable[[], Any], within: float = 15.0) -> None:
        """Poll (the in-process simulators keep serving meanwhile) until `condition()` holds."""
        deadline = time.monotonic() + within
        last: Any = None
        while time.monotonic() < deadline:
            assert self.process.alive(), f"registrar exited before {what}:\n{self.process.tail()}"
            try:
                last = await condition()
            except OSError as exc:  # not listening yet
                last = exc
            if last is True:
                return
            await asyncio.sleep(0.1)
        self.process.stop(signal.SIGKILL)
        raise AssertionError(f"registrar never reached {what} (last: {last!r}):\n{self.process.tail()}")

    async def reasons(self) -> list[str]:
        status, body = await self.get("/ready")
        return [] if status == 200 else body["reasons"]

    async def terminate(self) -> float:
        """SIGTERM; the seconds until it exited. Fails unless it exits with status 0 within 5 s."""
        sent = time.monotonic()
        self.process.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):  # the simulators serve on meanwhile
            await asyncio.to_thread(self.process.proc.wait, EXIT_WITHIN)
        took = time.monotonic() - sent
        alive = self.process.alive()
        code = self.process.stop(signal.SIGKILL)
        assert not alive, f"still running {EXIT_WITHIN}s after SIGTERM:\n{self.process.tail()}"
        assert code == 0, f"exit status {code} after SIGTERM:\n{self.process.tail()}"
        return took


async def key_holder(consul_url: str) -> str | None:
    """The session holding the lock key, None when released (or never written)."""
    async with aiohttp.ClientSession() as s, s.get(f"{consul_url}/v1/kv/{KEY}") as resp:
        if resp.status == 404:
            return None
        [entry] = await resp.json()
        return entry.get("Session")


async def session_alive(consul_url: str, session: str) -> bool:
    """Does the agent still know the session? (A writer destroys its own on the way out.)"""
    async with aiohttp.ClientSession() as s, s.get(f"{consul_url}/v1/session/info/{session}") as resp:
        return bool(await resp.json())


async def hold_lock(consul_url: str) -> str:
    """Another instance holds the lock: a session of ours acquires the key."""
    async with aiohttp.ClientSession() as s:
        async with s.put(f"{consul_url}/v1/session/create", json={"TTL": "60s", "LockDelay": "1s"}) as resp:
            session = str((await resp.json())["ID"])
        async with s.put(f"{consul_url}/v1/kv/{KEY}?acquire={session}", data=b'{"host": "other"}') as resp:
            assert await resp.json() is True
    return session


# ------------------------------------------------------------------ waiting for Marathon at start
@pytest.mark.parametrize("kind", ["refusing", "stalling", "answering 503"])
async def test_sigterm_while_marathon_is_unreachable_at_start(kind: str, request: pytest.FixtureRequest,
                                                              refusing: str) -> None:
    """No --cluster-id: the first thing the registrar needs is Marathon's frameworkId."""
    if kind == "answering 503":
        async with sim_inprocess.marathon() as served:
            fault(served, path="^/v2/info$", status=503)
            await _sigterm_waiting_for_identity(served.urls[0], refusing, stalled=False)
        return
    url = refusing if kind == "refusing" else request.getfixturevalue("stalling")
    await _sigterm_waiting_for_identity(url, refusing, stalled=kind == "stalling")


async def _sigterm_waiting_for_identity(marathon_url: str, dead: str, *, stalled: bool) -> None:
    reg = Registrar("--marathon", marathon_url, "--consul", dead, "--docker", dead.replace("http", "tcp"),
                    "--lock", "off", "--events", "sse", name="identity")

    async def waiting() -> bool:
        reasons = await reg.reasons()
        # a stalled read has not failed yet: the server answers, with the source not attached
        return stalled or any("frameworkId" in r for r in reasons)

    await reg.until("waiting for Marathon's /v2/info", waiting)
    await reg.terminate()


# ------------------------------------------------------------------ contending for the lock
@pytest.mark.parametrize("kind", ["refusing", "stalling", "answering 500"])
async def test_sigterm_while_contending_for_an_unreachable_lock_agent(
        kind: str, request: pytest.FixtureRequest, marathon: sim_inprocess.Served, refusing: str) -> None:
    """A stalled call is cut, an agent's back-off (500: up to 2 s) is not waited out."""
    if kind == "answering 500":
        async with sim_inprocess.consul() as consul:
            fault(consul, path="^/v1/", status=500)
            await _sigterm_contending(consul.urls[0], marathon, refusing, backing_off=True)
        return
    await _sigterm_contending(request.getfixturevalue(kind), marathon, refusing, backing_off=False)


async def _sigterm_contending(agent: str, marathon: sim_inprocess.Served, refusing: str, *,
                              backing_off: bool) -> None:
    reg = Registrar("--marathon", marathon.urls[0], "--consul", agent, "--docker", refusing.replace("http", "tcp"),
                    "--lock", "on", "--cluster-id", CLUSTER, "--events", "sse", name="contending")

    async def contending() -> bool:
        return any("contending" in r for r in await reg.reasons())

    await reg.until("contending for the lock", contending)
    if backing_off:
        await asyncio.sleep(2.0)  # the agent's back-off has grown to its 2 s cap
    took = await reg.terminate()
    assert took < NOT_HOLDING_EXIT_WITHIN, f"a contender took {took:.2f}s to exit after SIGTERM"


# ------------------------------------------------------------------ standby
async def test_sigterm_as_a_standby(marathon: sim_inprocess.Served, consul: sim_inprocess.Served,
                                    refusing: str) -> None:
    other = await hold_lock(consul.urls[0])
    reg = Registrar("--marathon", marathon.urls[0], "--consul", consul.urls[0], "--docker",
                    refusing.replace("http", "tcp"), "--lock", "on", "--cluster-id", CLUSTER, "--events", "sse",
                    name="standby")

    async def standby() -> bool:
        status, state = await reg.get("/v1/registrations")
        return status == 200 and state["leadership"]["role"] == "standby" and await reg.reasons() == []

    await reg.until("standby", standby)
    took = await reg.terminate()
    assert await key_holder(consul.urls[0]) == other  # a standby leaves the holder's key alone
    # its blocking watch of the key (7.5 s with the default TTL) is cut at once
    assert took < NOT_HOLDING_EXIT_WITHIN, f"a standby took {took:.2f}s to exit after SIGTERM"


# ------------------------------------------------------------------ picking the event transport
@pytest.mark.parametrize("kind", ["refusing", "stalling"])
async def test_sigterm_while_picking_the_event_transport(kind: str, request: pytest.FixtureRequest,
                                                         refusing: str) -> None:
    """--cluster-id given: the first read of Marathon is the one that picks the transport."""
    url = request.getfixturevalue(kind)
    reg = Registrar("--marathon", url, "--consul", refusing, "--docker", refusing.replace("http", "tcp"),
                    "--lock", "off", "--cluster-id", CLUSTER, "--events", "auto", name="transport")

    async def picking() -> bool:
        reasons = await reg.reasons()
        return kind == "stalling" or any("pick the event transport" in r for r in reasons)

    await reg.until("picking the event transport", picking)
    await reg.terminate()


# ------------------------------------------------------------------ subscribing callbacks
@pytest.mark.parametrize("kind", ["answering 503", "stalling"])
async def test_sigterm_while_subscribing_callbacks(kind: str, request: pytest.FixtureRequest,
                                                   marathon: sim_inprocess.Served, refusing: str) -> None:
    if kind == "stalling":
        url = request.getfixturevalue("stalling")
    else:
        url = marathon.urls[0]
        fault(marathon, path="^/v2/eventSubscriptions$", status=503)
    reg = Registrar("--marathon", url, "--consul", refusing, "--docker", refusing.replace("http", "tcp"),
                    "--lock", "off", "--cluster-id", CLUSTER, "--events", "callback",
                    "--callback-url", "http://127.0.0.1:1/v1/events", name="subscribe")

    async def subscribing() -> bool:
        reasons = await reg.reasons()
        return kind == "stalling" or any("cannot subscribe" in r for r in reasons)

    await reg.until("subscribing callbacks", subscribing)
    await reg.terminate()


# ------------------------------------------------------------------ the first resync, serving
async def test_sigterm_during_the_first_resync_releases_the_lock(marathon: sim_inprocess.Served,
                                                                 consul: sim_inprocess.Served,
                                                                 refusing: str) -> None:
    """The new writer's first resync stalls on Marathon's app list: the lock is held meanwhile.
    No liveness check (--lock-check-interval 0), so only the writer's destroy ends its session."""
    fault(marathon, path="^/v2/apps$", mode="slow", delay=30)
    reg = Registrar("--marathon", marathon.urls[0], "--consul", consul.urls[0], "--docker",
                    refusing.replace("http", "tcp"), "--lock", "on", "--cluster-id", CLUSTER, "--events", "sse",
                    "--lock-check-interval", "0", name="first-resync")

    async def resyncing() -> bool:
        return (await reg.reasons() == ["first resync not finished yet"]
                and await key_holder(consul.urls[0]) is not None)

    await reg.until("the first resync, holding the lock", resyncing)
    held = await key_holder(consul.urls[0])
    assert held is not None
    await reg.terminate()
    assert await key_holder(consul.urls[0]) is None
    assert not await session_alive(consul.urls[0], held)  # released, then destroyed


async def test_sigterm_while_serving_releases_the_lock(marathon: sim_inprocess.Served,
                                                       consul: sim_inprocess.Served) -> None:
    async with sim_inprocess.docker() as docker:
        reg = Registrar("--marathon", marathon.urls[0], "--consul", consul.urls[0].replace(
                            sim_inprocess.HOST1, "{host}"), "--lock-agent", consul.urls[0],
                        "--docker", docker.urls[0].replace("http", "tcp"), "--lock", "on",
                        "--cluster-id", CLUSTER, "--events", "sse", name="serving")

        async def serving() -> bool:
            return (await reg.get("/ready"))[0] == 200 and await key_holder(consul.urls[0]) is not None

        await reg.until("serving, holding the lock", serving)
        held = await key_holder(consul.urls[0])
        assert held is not None
        await reg.terminate()
    assert await key_holder(consul.urls[0]) is None
    assert not await session_alive(consul.urls[0], held)  # released, then destroyed
