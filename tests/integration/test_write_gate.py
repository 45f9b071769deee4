"""The lock's write gate holds for every attempt of a write, not only its first (issue 20 item 3:
a holder stops writing within L seconds of its last acknowledged renew, so two writers never
overlap).

A write whose first attempt is answered 500 waits out the agent's back-off and tries again; if the
lease ran out meanwhile (renewals unanswered, a pause), a new holder may already be writing, so
the retry must not be sent. Real writer, real py-consul client, the in-process Consul simulator."""

from __future__ import annotations

import pytest
from aiohttp import web

from devcluster import faults as faults_module
from devcluster.faults import Faults
from service.consul.agents import ConsulAgents
from service.metrics import Metrics
from service.model import Registration
from service.reconcile.ledger import Ledger
from service.reconcile.writer import ConsulWriter, NotWriter
from tests.integration.test_error_contract import consul_agents, fault, hits

REG = Registration(agent_host="127.0.0.40", service_id="mcr-web.t1-0", name="web", tags=(), address="10.32.0.5",
                   port=80, meta=(("managed-by", "marathon-consul-registrar"),), checks=())


@pytest.mark.parametrize("write", ["register", "deregister"])
async def test_a_retry_after_the_lease_ran_out_is_not_sent(monkeypatch: pytest.MonkeyPatch, write: str) -> None:
    lease = {"open": True}
    sent: list[str] = []
    pick = Faults.pick

    def recording_pick(self: Faults, request: web.Request) -> faults_module.Rule | None:
        if "/agent/service/" in request.path:
            sent.append(request.path)
            lease["open"] = False  # the lease runs out while this attempt is answered and backed off
        return pick(self, request)

    monkeypatch.setattr(Faults, "pick", recording_pick)
    async with consul_agents() as urls:
        agents = ConsulAgents(urls[0], token=None, metrics=Metrics(), timeout=2.0, attempts=3)
        writer = ConsulWriter(agents=agents, ledger=Ledger(), metrics=Metrics(), concurrency=1,
                              may_write=lambda: lease["open"])
        rule = await fault(urls[0], {"path": "^/v1/agent/service/", "status": 500, "body": "boom"})
        try:
            with pytest.raises(NotWriter):
                if write == "register":
                    await writer.register(REG, replacing=False, received=None)
                else:
                    await writer.deregister(REG)
        finally:
            await agents.close()
        assert await hits(urls[0], rule) == 1
    assert len(sent) == 1, sent  # the first attempt only: no write after the gate shut
