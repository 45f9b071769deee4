"""The error contract of the lock's two liveness calls (issue 20), through the real py-consul client
against the Consul simulator's injected failures, as the lock's other calls in test_error_contract:
`alive_register` (each round, before the session) and `alive_deregister` (on stop, after it).

A register answered 500 (no leader)/429/a reset is retried to the bound, a 403 (a token without service:write)
is reported once; either way the round's session is bound to serfHealth only, and the lock is
still taken. A deregister that fails is retried to the bound and said once; a 404 is already gone."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest

from service.consul.lock import ConsulLockClient
from service.leadership import Leadership, alive_check, holder_value
from service.metrics import Metrics
from tests.integration.test_error_contract import (
    AGENT_A,
    ATTEMPTS,
    LOCK_SETTINGS,
    Row,
    answered,
    clear,
    consul_agents,
    consul_get,
    errors,
    fault,
    hits,
    lock_holder,
    lock_logs,
    refusals_logged,
    until,
)

ALIVE = alive_check(cluster_id="contract", listen_host=AGENT_A, listen_port=1, https=False, interval_seconds=1,
                    host=None)
SETTINGS = replace(LOCK_SETTINGS, alive=ALIVE)
REGISTER = ("PUT", "^/v1/agent/service/register$")
DEREGISTER = ("PUT", "^/v1/agent/service/deregister/")
RETRIED = [({"status": 500}, "no-leader"), ({"status": 429}, "rate-limited"), ({"mode": "reset"}, "connection")]
ROWS = [
    *(Row("alive_register", {"path": REGISTER[1], "method": REGISTER[0], **answer}, "retry", reason, ATTEMPTS)
      for answer, reason in RETRIED),
    Row("alive_register", {"path": REGISTER[1], "method": REGISTER[0], "status": 403,
                           "body": "Permission denied: token lacks 'service:write'"}, "report", "acl-denied", 1),
    *(Row("alive_deregister", {"path": DEREGISTER[1], "method": DEREGISTER[0], **answer}, "retry", reason, ATTEMPTS)
      for answer, reason in RETRIED),
    Row("alive_deregister", {"path": DEREGISTER[1], "method": DEREGISTER[0], "status": 404, "body": "not found"},
        "done", "gone", 1),
]


@asynccontextmanager
async def leadership(url: str, metrics: Metrics) -> AsyncIterator[Leadership]:
    client = ConsulLockClient(url, token=None, metrics=metrics, attempts=ATTEMPTS, timeout=1.0,
                              wait_seconds=SETTINGS.watch_wait_seconds)
    lead = Leadership(client, SETTINGS, value=holder_value(host=AGENT_A, port=1, version="t"))
    task = asyncio.create_task(lead.run())
    try:
        yield lead
    finally:
        await lead.stop(grace=5.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()


async def holder_checks(url: str) -> list[str]:
    holder = await lock_holder(url)
    [session] = [s for s in await consul_get(url, "/v1/session/list") if s["ID"] == holder]
    return sorted({*(session.get("Checks") or ()), *(session.get("NodeChecks") or ())})


@pytest.mark.parametrize("row", ROWS, ids=str)
async def test_lock_liveness_calls(row: Row, caplog: pytest.LogCaptureFixture) -> None:
    async with consul_agents() as (url, _):
        metrics = Metrics()
        caplog.set_level(logging.INFO)
        if row.call == "alive_register":
            rule = await fault(url, row.rule)
            async with leadership(url, metrics) as lead:
                await until(lead.writer_event.is_set, what="a writer without its liveness check")
                await answered(url, rule, row)
                assert errors(metrics, "consul", row.call, row.verdict or "", row.reason) == row.answers
                assert await holder_checks(url) == ["serfHealth"]  # bound to the node check only
                assert len(lock_logs(caplog, "cannot register the liveness check")) == 1
                assert len(refusals_logged(caplog, url)) == (1 if row.verdict == "report" else 0)
                await clear(url)
            return
        async with leadership(url, metrics) as lead:
            await until(lead.writer_event.is_set, what="writer")
            assert await holder_checks(url) == ["serfHealth", ALIVE.check_id]
            rule = await fault(url, row.rule)
            await lead.stop(grace=5.0)
        assert await hits(url, rule) >= row.answers
        assert errors(metrics, "consul", row.call, row.verdict or "", row.reason) == row.answers
        said = lock_logs(caplog, f"could not deregister {ALIVE.service_id}")
        assert len(said) == (0 if row.verdict == "done" else 1)
