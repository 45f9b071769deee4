"""ContainerLookup and Weave-proxied containers, against the Docker simulator (issue 12): the lookup
order, what it costs on the wire (the simulator's request counts), caching, retries and the
overlay-CIDR judgement. The same paths on the real engine are in test_docker_lookup.py."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest

from devcluster.docker_sim import Running, start, stop
from service.desired import RegistrationPolicy, desired_registrations
from service.docker.lookup import ContainerLookup
from service.metrics import Metrics
from service.model import AddressMode, App, Naming, PortMapping, Task
from tests.devcluster import sim_inprocess

sim = sim_inprocess.sim  # the fixture: one simulated Docker engine

NETWORKS = ("weave", "bridge")
WEAVE_CALLS = ("/containers/{id}/json", "HEAD /containers/{id}/archive", "/containers/{id}/archive",
               "/containers/{id}/exec", "/exec/{id}/start", "/exec/{id}/json")
HEAD, GET = "HEAD /containers/{id}/archive", "/containers/{id}/archive"


async def create(r: Running, *specs: dict[str, Any]) -> list[dict[str, str]]:
    async with aiohttp.ClientSession() as http, http.post(f"http://{r.host}:{r.port}/_sim/containers",
                                                          json=list(specs)) as resp:
        assert resp.status == 201, await resp.text()
        return await resp.json()


async def attach(r: Running, ref: str) -> None:
    async with aiohttp.ClientSession() as http, http.post(
            f"http://{r.host}:{r.port}/_sim/containers/{ref}/weave-attach") as resp:
        assert resp.status == 200


def calls(r: Running) -> dict[str, int]:
    """The simulator's count of each Weave-lookup endpoint so far."""
    return {k: r.engine.stats[k] for k in WEAVE_CALLS if r.engine.stats[k]}


def lookup(r: Running, metrics: Metrics | None = None, **kw: Any) -> ContainerLookup:
    return ContainerLookup(f"tcp://127.0.0.1:{r.port}", NETWORKS, metrics=metrics or Metrics(), **kw)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_proxied_ip_from_etc_hosts_once_per_container(sim: Running) -> None:
    await create(sim, {"task_id": "web.1", "weave_proxy": True, "ip": "172.17.0.9", "weave_ips": ["10.32.0.3"]})
    metrics = Metrics()
    lk = lookup(sim, metrics)
    try:
        first = await lk.find("s", "web.1")
        again = await lk.find("s", "web.1")
        resync = await lk.containers("s")
    finally:
        await lk.close()
    assert first is not None and first.network_ips == {"bridge": "172.17.0.9"}
    assert (first.weave_proxied, first.weave_ips, first.weave_source) == (True, ("10.32.0.3",), "etc-hosts")
    assert again == first and resync["web.1"].weave_ips == ("10.32.0.3",)
    assert calls(sim) == {"/containers/{id}/json": 1, HEAD: 1, GET: 1}  # cached per container id
    assert sample(metrics, "mcr_weave_lookups_total", result="etc-hosts") == 1
    assert sample(metrics, "mcr_docker_request_seconds_count", call="archive") == 1
    # and desired.py registers the Weave IP, not docker0's
    app = App(id="/web", port_mappings=(PortMapping(80, 0),))
    result = desired_registrations(app, Task(id="web.1", app_id="/web", host="s", ports=(31000,)), first,
                                   RegistrationPolicy(naming=Naming.DNS, address_mode=AddressMode.AUTO,
                                                      networks=NETWORKS))
    assert isinstance(result, list) and len(result) == 1, result
    reg = result[0]
    assert (reg.address, reg.port, reg.meta_get("address-source")) == ("10.32.0.3", 80, "overlay")


async def test_burst_looks_up_only_proxied_containers(sim: Running) -> None:
    await create(sim, *[{"task_id": f"plain.{i}", "network": "bridge", "ip": f"10.32.1.{i}"} for i in range(50)],
                 *[{"task_id": f"proxied.{i}", "weave_proxy": True, "weave_ips": [f"10.32.3.{i}"]} for i in range(5)])
    lk = lookup(sim)
    try:
        found = await asyncio.gather(*(lk.find("s", f"plain.{i}") for i in range(50)),
                                     *(lk.find("s", f"proxied.{i % 5}") for i in range(20)))
    finally:
        await lk.close()
    assert [c.overlay_address(NETWORKS, lk.overlay_cidrs)[0] for c in found if c] == (
        [f"10.32.1.{i}" for i in range(50)] + [f"10.32.3.{i % 5}" for i in range(20)])
    assert sim.engine.stats["/containers/json"] == 1
    assert calls(sim) == {"/containers/{id}/json": 5, HEAD: 5, GET: 5}  # single-flight per container


async def test_not_attached_yet_is_retried_not_cached(sim: Running) -> None:
    await create(sim, {"task_id": "web.1", "weave_proxy": True, "ip": "172.17.0.9", "weave_ips": ["10.32.0.3"],
                       "weave_attached": False})
    metrics = Metrics()
    lk = lookup(sim, metrics)
    try:
        before = await lk.find("s", "web.1")
        await attach(sim, "web.1")
        after = await lk.find("s", "web.1")
    finally:
        await lk.close()
    assert before is not None and before.running
    assert (before.weave_ips, before.weave_pending) == ((), "weave-ip-not-attached")
    assert before.overlay_address(NETWORKS, lk.overlay_cidrs) == (None, "weave-ip-not-attached")
    assert after is not None and after.weave_ips == ("10.32.0.3",)
    # not attached: the HEAD's mtime (not after StartedAt) says Docker's own file, no GET of it
    assert calls(sim) == {"/containers/{id}/json": 2, HEAD: 2, GET: 1}
    assert sample(metrics, "mcr_weave_lookups_total", result="weave-ip-not-attached") == 1
    assert sample(metrics, "mcr_overlay_addresses_rejected_total", reason="address-outside-overlay") == 0


async def test_rewrite_inspect_answers_without_the_archive() -> None:
    running = await start([("127.0.0.1", 0)], rewrite_inspect=True)
    r = running[0]
    try:
        await create(r, {"task_id": "web.1", "weave_proxy": True, "ip": "172.17.0.9", "weave_ips": ["10.32.0.3"]},
                     {"task_id": "web.2", "weave_proxy": True, "weave_ips": ["10.2.7.1", "10.32.0.4"]})
        lk = lookup(r)
        try:
            one = await lk.find("s", "web.1")
            two = await lk.find("s", "web.2")
        finally:
            await lk.close()
        assert one is not None and (one.weave_ips, one.weave_source) == (("10.32.0.3",), "rewrite-inspect")
        # the rewritten IP is WEAVE_CIDR's first, outside --overlay-cidr: the hosts block has both
        assert two is not None and (two.weave_ips, two.weave_source) == (("10.2.7.1", "10.32.0.4"), "etc-hosts")
        assert two.overlay_address(NETWORKS, lk.overlay_cidrs) == ("10.32.0.4", "")
        assert calls(r) == {"/containers/{id}/json": 2, HEAD: 1, GET: 1}
    finally:
        await stop(running)


async def test_exec_lookup_when_hosts_are_not_rewritten(sim: Running) -> None:
    await create(sim, {"task_id": "web.1", "weave_proxy": True, "weave_ips": ["10.32.0.3"],
                       "weave_rewrite_hosts": False})
    without = lookup(sim)
    try:
        c = await without.find("s", "web.1")
    finally:
        await without.close()
    assert c is not None and c.weave_pending == "weave-ip-not-attached"
    assert "/containers/{id}/exec" not in calls(sim)  # off by default
    metrics = Metrics()
    with_exec = lookup(sim, metrics, weave_exec=True)
    try:
        c = await with_exec.find("s", "web.1")
    finally:
        await with_exec.close()
    assert c is not None and (c.weave_ips, c.weave_source) == (("10.32.0.3",), "exec")
    assert {k: calls(sim)[k] for k in WEAVE_CALLS[3:]} == {
        "/containers/{id}/exec": 1, "/exec/{id}/start": 1, "/exec/{id}/json": 1}
    assert sample(metrics, "mcr_docker_request_seconds_count", call="exec-start") == 1


async def test_image_without_ip_is_not_exec_ed_again(sim: Running, caplog: pytest.LogCaptureFixture) -> None:
    await create(sim, {"task_id": "web.1", "weave_proxy": True, "weave_rewrite_hosts": False, "ip_binary": False})
    lk = lookup(sim, weave_exec=True)
    try:
        with caplog.at_level(logging.WARNING, logger="service.docker.lookup"):
            for _ in range(3):
                c = await lk.find("s", "web.1")
                assert c is not None and c.weave_pending == "weave-ip-not-attached"
    finally:
        await lk.close()
    assert calls(sim)["/containers/{id}/exec"] == 1 and calls(sim)[HEAD] == 3 and GET not in calls(sim)
    warnings = [r.getMessage() for r in caplog.records if "no `ip` binary" in r.getMessage()]
    assert len(warnings) == 1 and "exit 126" in warnings[0], warnings


async def test_outside_overlay_is_logged_and_counted_once(sim: Running, caplog: pytest.LogCaptureFixture) -> None:
    await create(sim, {"task_id": "docker0.1", "network": "bridge", "ip": "172.17.0.5"},
                 {"task_id": "weave.1", "weave_proxy": True, "weave_ips": ["10.2.7.1"]},
                 {"task_id": "fine.1", "network": "weave", "ip": "10.32.2.5"})
    metrics = Metrics()
    lk = lookup(sim, metrics)
    try:
        with caplog.at_level(logging.WARNING, logger="service.docker.lookup"):
            for _ in range(3):
                for task_id in ("docker0.1", "weave.1", "fine.1"):
                    assert await lk.find("s", task_id) is not None
                await lk.containers("s")
    finally:
        await lk.close()
    assert sample(metrics, "mcr_overlay_addresses_rejected_total", reason="address-outside-overlay") == 2
    messages = [r.getMessage() for r in caplog.records if "outside --overlay-cidr" in r.getMessage()]
    assert len(messages) == 2
    assert any("task docker0.1" in m and "address 172.17.0.5 outside --overlay-cidr 10.32.0.0/12" in m
               for m in messages), messages
    assert any("task weave.1" in m and "Weave IP 10.2.7.1" in m for m in messages), messages


async def test_weave_plugin_layout_works_with_the_defaults(sim: Running) -> None:
    """`--net=weave` with Weave's plugin (driver weavemesh, reference/weave.md §5): the IP is Docker's own,
    under `Networks.weave` (the interface inside is `ethwe0`, which the Engine API never names)."""
    await create(sim, {"task_id": "web.1", "network": "weave", "ip": "10.32.2.5"})
    lk = lookup(sim)
    try:
        c = await lk.find("s", "web.1")
    finally:
        await lk.close()
    assert c is not None and not c.weave_proxied and c.network_ips == {"weave": "10.32.2.5"}
    assert c.overlay_address(NETWORKS, lk.overlay_cidrs) == ("10.32.2.5", "")
    assert calls(sim) == {}  # no inspect, archive or exec for it


async def test_stale_listing_of_a_removed_container(sim: Running) -> None:
    """Listed running, removed before its Weave lookup: the inspect's 404 says "not running"."""
    await create(sim, {"task_id": "web.1", "weave_proxy": True, "weave_attached": False},
                 {"task_id": "other.1"})
    lk = lookup(sim)
    try:
        assert await lk.find("s", "other.1") is not None  # the listing is cached with web.1 running in it
        sim.engine.delete("web.1")
        c = await lk.find("s", "web.1")
    finally:
        await lk.close()
    assert c is not None and not c.running
    assert calls(sim) == {"/containers/{id}/json": 1}


async def test_stopped_proxied_container_costs_nothing(sim: Running) -> None:
    await create(sim, {"task_id": "web.1", "weave_proxy": True, "running": False})
    lk = lookup(sim)
    try:
        c = await lk.find("s", "web.1")
    finally:
        await lk.close()
    assert c is not None and c.weave_proxied and not c.running and calls(sim) == {}


async def test_engine_failure_is_a_per_container_retry() -> None:
    """A 500 on the archive fails that container's lookup (retried: weave-lookup-failed), not the slave."""
    running = await start([("127.0.0.1", 0)])
    r = running[0]
    try:
        await create(r, {"task_id": "web.1", "weave_proxy": True}, {"task_id": "plain.1", "ip": "10.32.1.1"})
        original = r.engine.hosts_file  # the engine is in-process: break its archive for a while

        def broken(c: Any) -> tuple[str, float]:
            raise RuntimeError("disk gone")

        r.engine.hosts_file = broken  # type: ignore[method-assign]
        metrics = Metrics()
        lk = lookup(r, metrics)
        try:
            everything = await lk.containers("s")
            r.engine.hosts_file = original  # type: ignore[method-assign]
            healed = await lk.find("s", "web.1")
        finally:
            await lk.close()
    finally:
        await stop(running)
    assert everything["plain.1"].network_ips == {"weave": "10.32.1.1"}
    assert (everything["web.1"].weave_ips, everything["web.1"].weave_pending) == ((), "weave-lookup-failed")
    assert healed is not None and healed.weave_source == "etc-hosts"
    assert sample(metrics, "mcr_weave_lookups_total", result="weave-lookup-failed") == 1
