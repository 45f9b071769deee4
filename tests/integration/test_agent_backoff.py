"""The back-off holds per Consul agent, not per piece of work (issue 18 item 2).

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
from dataclasses import replace

import pytest
from aiohttp import web

import service.consul.call as consul_call
from devcluster import faults as faults_module
from devcluster.faults import Faults
from service.marathon.events import TaskEvent
from service.model import TaskState
from tests.integration.test_error_contract import AGENT_A, APP_ID, consul_agents, fault, reconciler_over

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

    monkeypatch.setattr(Faults, "pick", recording_pick)
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
