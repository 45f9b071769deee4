"""AgentClient.owned(held=...) against the Consul simulator through py-consul: a resync answers an
agent's entry equal to the registration it holds as that very object (memory and CPU at 10,000+
registrations, issue 20), and anything that differs in any field is read as the agent has it."""

from __future__ import annotations

from dataclasses import replace

from service.consul.agents import AgentClient
from service.metrics import Metrics
from service.model import ConsulCheck, Registration
from service.ownership import ownership_meta
from tests.devcluster import sim_inprocess

HOST = sim_inprocess.HOST1


def reg(task: str, *, ttl: bool = False) -> Registration:
    sid = f"mcr-{task}-0"
    checks = (ConsulCheck(check_id=f"service:{sid}:1", name="ttl", ttl="180s"),) if ttl else ()
    return Registration(agent_host=HOST, service_id=sid, name="web", tags=("a", "b"), address="10.32.0.7", port=80,
                        meta=ownership_meta(app_id="/web", task_id=task, host=HOST, port_index=0,
                                            address_source="overlay"), checks=checks)


async def test_an_entry_equal_to_the_held_registration_is_answered_as_it_and_any_difference_is_read() -> None:
    plain, with_check = reg("web.t1"), reg("web.t2", ttl=True)
    async with sim_inprocess.consul() as served:
        agent = AgentClient(HOST, served.urls[0], token=None, metrics=Metrics(), timeout=5.0, attempts=1)
        try:
            for r in (plain, with_check):
                await agent.register(r)
            read = await agent.owned()
            as_held = {sid: owned.registration for sid, owned in read.items()}
            assert as_held[plain.service_id] == plain
            # what the agent holds, held: the same objects back
            again = await agent.owned(held=as_held.get)
            assert {sid: o.registration for sid, o in again.items()} == as_held
            assert all(again[sid].registration is as_held[sid] for sid in as_held)
            assert again[with_check.service_id].check_status == read[with_check.service_id].check_status
            # a held registration differing from the agent's in any field: the agent's entry is read
            for held in (replace(plain, port=81), replace(plain, address="10.32.0.8"), replace(plain, name="api"),
                         replace(plain, tags=("a",)), replace(plain, meta=plain.meta[:-1]),
                         replace(plain, meta=(*plain.meta, ("zz", "1"))), replace(plain, agent_host="127.0.0.99"),
                         replace(plain, checks=as_held[with_check.service_id].checks),
                         replace(as_held[with_check.service_id], checks=())):
                got = await agent.owned(held={held.service_id: held}.get)
                assert got[held.service_id].registration == as_held[held.service_id], held
                assert got[held.service_id].registration is not held
        finally:
            await agent.close()
