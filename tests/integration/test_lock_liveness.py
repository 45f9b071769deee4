"""The lock session bound to the holder's liveness check, end to end in one process: the real
`Leadership` over the real `ConsulLockClient` (py-consul), the Consul simulator with its check
runner (reference/consul-sessions.md §3: a bound check going critical invalidates the session, the
key is released with a lock-delay), and the holder's own /health served by aiohttp.

Timings are the benchmark's (`python -m bench.failover`); what is asserted here is the order the
simulator's write log shows: the holder's session invalidated by its check, the next holder's
acquire no earlier than the lock-delay after it, the first holder's gate shut before that.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from devcluster.consul_sim.checks import CheckRunner
from service.consul.lock import ConsulLockClient
from service.leadership import Leadership, LockSettings, alive_check, holder_value, lock_key
from service.metrics import Metrics
from service.ownership import LOCK_MANAGED_BY
from tests.devcluster import sim_inprocess

DELAY = 2  # lock-delay, s: the lease is 2 - 2/3 s


async def until(predicate: Callable[[], bool], within: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"not reached within {within}s: {what}"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def health(host: str) -> AsyncIterator[tuple[int, web.AppRunner]]:
    """A /health that answers 200 until its runner is cleaned up (the holder "killed")."""
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/health", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    port = sim_inprocess.free_port(host)
    await web.TCPSite(runner, host, port).start()
    try:
        yield port, runner
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def holder(url: str, settings: LockSettings, port: int) -> AsyncIterator[Leadership]:
    client = ConsulLockClient(url, token=None, metrics=Metrics(), timeout=1.0,
                              wait_seconds=settings.watch_wait_seconds)
    lead = Leadership(client, settings, value=holder_value(host="h", port=port, version="t"))
    task = asyncio.create_task(lead.run())
    try:
        yield lead
    finally:
        await lead.stop(grace=5.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()


def settings(host: str, port: int) -> LockSettings:
    alive = alive_check(cluster_id="live", listen_host=host, listen_port=port, https=False, interval_seconds=1,
                        host=None)
    return LockSettings(key=lock_key("live"), ttl_seconds=10, lock_delay_seconds=DELAY, watch_wait_seconds=1.0,
                        retry_seconds=0.2, alive=alive)


async def test_a_holder_that_stops_answering_its_health_check_loses_the_lock_and_the_next_waits_the_delay() -> None:
    async with sim_inprocess.consul() as served:
        sim = served.consul
        sim.registration_log = []
        checks = CheckRunner(sim.state)
        await checks.start()
        url_a, url_b = served.urls
        host_a, host_b = sim_inprocess.HOST1, sim_inprocess.HOST2
        try:
            async with health(host_a) as (port_a, health_a), health(host_b) as (port_b, _):
                sa, sb = settings(host_a, port_a), settings(host_b, port_b)
                async with holder(url_a, sa, port_a) as a:
                    await until(a.writer_event.is_set, what="a writes")
                    async with holder(url_b, sb, port_b) as b:
                        await until(lambda: b.detail.startswith("standby"), what="b stands by")
                        [session] = [s for s in sim.kv.sessions.values() if s.node == "node-a"]
                        assert session.check_ids() == ["serfHealth", sa.alive.check_id]  # type: ignore[union-attr]
                        agent_a = sim.state.nodes["node-a"]
                        assert agent_a.services[sa.alive.service_id].spec.meta["managed-by"] == LOCK_MANAGED_BY  # type: ignore[union-attr]
                        await health_a.cleanup()  # a's /health is gone: a crashed holder, as its agent sees it
                        await until(b.may_write, what="b takes over")
                        assert not a.may_write()
                        log = sim.registration_log
                        [invalidated] = [e for e in log if e[0] == "session-invalidate-check" and e[1] == session.id]
                        [acquired] = [e for e in log if e[0] == "kv-acquire" and e[2].startswith(host_b)]
                        assert acquired[3] - invalidated[3] >= DELAY  # the lock-delay held the key
                        assert sim.kv.kv[sa.key].value is not None  # released (not deleted), value kept
                        assert all(e[5].startswith("marathon-consul-registrar/") for e in log
                                   if e[0].startswith(("kv-", "session-create")))  # who wrote: named
                # b stopped cleanly: its liveness registration went with it, after its session
                assert sb.alive.service_id not in sim.state.nodes["node-b"].services  # type: ignore[union-attr]
                assert not [s for s in sim.kv.sessions.values() if s.node == "node-b"]
        finally:
            await checks.close()
