"""The reconciler with Weave-proxied containers and --overlay-cidr (issue 12): a proxied task waits
for its Weave IP, then registers it; the CIDR setting reaches desired.py."""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import replace

from service.model import AddressMode, Container
from tests.unit.test_reconciler import APP, World, drain


def skipped(r: object, reason: str) -> float:
    return r.metrics.registry.get_sample_value("mcr_tasks_skipped_total", {"reason": reason}) or 0.0  # type: ignore[attr-defined]


async def test_proxied_task_waits_for_its_weave_ip_then_registers_it() -> None:
    w = World()
    w.deploy(APP)
    t = w.start_task(APP)
    docker0 = replace(w.lookup.by_task[t.id], network_ips={"bridge": "172.17.0.2"}, weave_proxied=True)
    w.lookup.by_task[t.id] = docker0  # started, not attached yet (reference/weave.md §7)
    retried, find, asked = asyncio.Event(), w.lookup.find, []

    async def counting_find(host: str, task_id: str) -> Container | None:
        asked.append(task_id)
        if len(asked) >= 3:
            retried.set()
        return await find(host, task_id)

    w.lookup.find = counting_find  # type: ignore[method-assign]
    async with w.running() as r:
        for e in w.events:
            r.hint(e)
        await asyncio.wait_for(retried.wait(), 5)
        # looked up again and again, never registered with docker0's address
        assert skipped(r, "weave-ip-not-attached") >= 2 and w.managed_task_ids() == set()
        w.lookup.by_task[t.id] = replace(docker0, weave_ips=("10.32.0.7",), weave_source="etc-hosts")
        await drain(r)
        reg = w.agents.agent(t.host).services[f"mcr-{t.id}-0"]
        assert (reg.address, reg.port, reg.meta_get("address-source")) == ("10.32.0.7", 80, "overlay")


async def test_overlay_cidr_setting_reaches_the_address_choice() -> None:
    for cidrs, expected in (((ipaddress.ip_network("10.32.0.0/12"),), "host"),
                            ((ipaddress.ip_network("10.32.0.0/12"), ipaddress.ip_network("10.2.7.0/24")), "overlay")):
        w = World()
        w.deploy(APP)
        t = w.start_task(APP)
        w.lookup.by_task[t.id] = replace(w.lookup.by_task[t.id], network_ips={"weave": "10.2.7.9"})
        async with w.running(overlay_cidrs=cidrs, address_mode=AddressMode.AUTO) as r:
            for e in w.events:
                r.hint(e)
            await drain(r)
        reg = w.agents.agent(t.host).services[f"mcr-{t.id}-0"]
        assert reg.meta_get("address-source") == expected, cidrs
        assert reg.address == ("10.2.7.9" if expected == "overlay" else t.host)
