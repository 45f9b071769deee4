"""Partition-aware states and pods through the reconciler, with the in-memory fakes (issue 19):
an unreachable task keeps its registration through resyncs and comes back without a write; the
expunge (an `instance_changed_event` alone) removes it at once; pods register per instance and
endpoint, by resync and by event; a malformed pod keeps what it holds."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from service.marathon.events import parse_event
from service.metrics import Metrics
from service.model import App, Container, NetworkMode, PortMapping, RunSpecKind, Task
from service.reconcile import Reconciler, ReconcileSettings
from tests.unit.fakes import FakeAgents, FakeLookup, FakeMarathon, web_app

APP = "/web"
HOST = "127.0.0.2"
TASK = Task(id="web.instance-6f1e2d3c._app.1", app_id=APP, host=HOST, ports=(31001,), app_version="v1")
POD = "/db"
INSTANCE = "db.instance-6b9f2c1e"


@contextlib.asynccontextmanager
async def started(marathon: FakeMarathon, lookup: FakeLookup, agents: FakeAgents) -> AsyncIterator[Reconciler]:
    r = Reconciler(marathon=marathon, lookup=lookup, agents=agents, metrics=Metrics(),
                   settings=ReconcileSettings(backoff_initial=0.001, backoff_max=0.01))
    r.start()
    try:
        yield r
    finally:
        await r.stop()


def world() -> tuple[FakeMarathon, FakeLookup, FakeAgents]:
    marathon, lookup, agents = FakeMarathon(), FakeLookup(), FakeAgents()
    marathon.apps[APP] = web_app(APP)
    marathon.tasks[APP] = {TASK.id: TASK}
    lookup.by_task[TASK.id] = Container(id="c1", task_id=TASK.id, network_ips={"weave": "10.32.0.5"})
    lookup.hosts[TASK.id] = HOST
    return marathon, lookup, agents


def set_state(marathon: FakeMarathon, state: str) -> None:
    marathon.tasks[APP][TASK.id] = replace(TASK, state=state)


def status_event(state: str) -> object:
    return parse_event({"eventType": "status_update_event", "taskId": TASK.id, "appId": APP, "taskStatus": state,
                        "host": HOST, "ports": [31001], "version": "v1"})


async def test_unreachable_keeps_through_resyncs_and_comes_back_without_a_write():
    marathon, lookup, agents = world()
    async with started(marathon, lookup, agents) as r:
        await r.resync()
        assert set(agents.managed()) == {f"mcr-{TASK.id}-0"}
        writes = agents.writes()
        set_state(marathon, "TASK_UNREACHABLE")
        r.hint(status_event("TASK_UNREACHABLE"))  # type: ignore[arg-type]
        await r.wait_idle()
        for _ in range(2):
            drift = await r.resync()
            await r.wait_idle()
            assert drift.counts() == {"missing": 0, "orphan": 0, "drifted": 0}
        assert set(agents.managed()) == {f"mcr-{TASK.id}-0"}
        set_state(marathon, "TASK_RUNNING")
        r.hint(status_event("TASK_RUNNING"))  # type: ignore[arg-type]
        await r.wait_idle()
        await r.resync()
        await r.wait_idle()
        assert set(agents.managed()) == {f"mcr-{TASK.id}-0"}
        assert agents.writes() == writes  # neither kept nor the comeback wrote anything


async def test_expunge_announced_only_by_instance_changed_removes_at_once():
    marathon, lookup, agents = world()
    async with started(marathon, lookup, agents) as r:
        await r.resync()
        set_state(marathon, "TASK_UNREACHABLE")
        r.hint(status_event("TASK_UNREACHABLE"))  # type: ignore[arg-type]
        await r.wait_idle()
        del marathon.tasks[APP][TASK.id]  # expunged: Marathon lists it no more, and says only this
        r.hint(parse_event({"eventType": "instance_changed_event", "instanceId": "web.instance-6f1e2d3c",
                            "condition": "Killed", "runSpecId": APP, "agentId": "S1", "host": HOST,
                            "runSpecVersion": "v1", "timestamp": "t"}))  # type: ignore[arg-type]
        await r.wait_idle()
        assert agents.managed() == {}


@pytest.mark.parametrize("host", ["bad host/x", 5, None, "absent"])
async def test_an_expunge_with_a_malformed_host_still_removes_at_once(host):
    """Nothing reads the event's `host` (the removal goes by the instance's registrations we
    hold): a malformed or missing one must not reject the only announcement of an expunge."""
    marathon, lookup, agents = world()
    async with started(marathon, lookup, agents) as r:
        await r.resync()
        set_state(marathon, "TASK_UNREACHABLE")
        r.hint(status_event("TASK_UNREACHABLE"))  # type: ignore[arg-type]
        await r.wait_idle()
        del marathon.tasks[APP][TASK.id]
        body = {"eventType": "instance_changed_event", "instanceId": "web.instance-6f1e2d3c",
                "condition": "Killed", "runSpecId": APP, "agentId": "S1", "host": host}
        if host == "absent":
            del body["host"]
        r.hint(parse_event(body))  # type: ignore[arg-type]
        await r.wait_idle()
        assert agents.managed() == {}


async def test_instance_changed_to_a_live_condition_reads_nothing():
    marathon, lookup, agents = world()
    async with started(marathon, lookup, agents) as r:
        await r.resync()
        reads = marathon.reads
        r.hint(parse_event({"eventType": "instance_changed_event", "instanceId": "web.instance-6f1e2d3c",
                            "condition": "Unreachable", "runSpecId": APP, "host": HOST}))  # type: ignore[arg-type]
        await r.wait_idle()
        assert marathon.reads == reads


def pod_app() -> App:
    return App(id=POD, version="v1", network_mode=NetworkMode.USER, mesos_containerizer=True, kind=RunSpecKind.POD,
               port_mappings=(PortMapping(5432, None, "pg", container="pg"),
                              PortMapping(9187, None, "metrics", container="exporter")))


def pod_instance(state: str = "TASK_RUNNING") -> Task:
    return Task(id=INSTANCE, app_id=POD, host=HOST, state=state, ip_addresses=("10.32.0.7",),
                named_ips=(("weave", "10.32.0.7"),), app_version="v1")


async def test_pod_instance_registers_each_endpoint_without_docker():
    marathon, lookup, agents = world()
    marathon.pods[POD] = pod_app()
    marathon.instances[POD] = {INSTANCE: pod_instance()}
    async with started(marathon, lookup, agents) as r:
        await r.resync()
        await r.wait_idle()
        pod_regs = {sid: reg for sid, reg in agents.managed().items() if reg.app_id == POD}
        assert {(reg.name, reg.address, reg.port) for reg in pod_regs.values()} == {
            ("db", "10.32.0.7", 5432), ("db-metrics", "10.32.0.7", 9187)}
        assert {reg.meta_get("marathon-pod-instance") for reg in pod_regs.values()} == {INSTANCE}
        assert {reg.meta_get("pod-container") for reg in pod_regs.values()} == {"pg", "exporter"}
        assert INSTANCE not in lookup.hosts  # the fake would find nothing; it is never asked either


async def test_pod_container_task_event_hints_the_instance_and_pod_read():
    marathon, lookup, agents = world()
    marathon.pods[POD] = pod_app()
    marathon.instances[POD] = {}
    async with started(marathon, lookup, agents) as r:
        await r.resync()
        await r.wait_idle()
        marathon.instances[POD] = {INSTANCE: pod_instance()}
        r.hint(parse_event({"eventType": "status_update_event", "taskId": f"{INSTANCE}.pg", "appId": POD,
                            "taskStatus": "TASK_RUNNING", "host": HOST}))  # type: ignore[arg-type]
        await r.wait_idle()
        assert len([reg for reg in agents.managed().values() if reg.app_id == POD]) == 2
        # the pod is deleted: pod_deleted_event names it in `uri`
        del marathon.pods[POD]
        r.hint(parse_event({"eventType": "pod_deleted_event", "uri": "/v2/pods/db",
                            "clientIp": "10.0.0.1"}))  # type: ignore[arg-type]
        await r.wait_idle()
        assert [reg for reg in agents.managed().values() if reg.app_id == POD] == []


async def test_pod_expunge_removes_the_instance_at_once():
    marathon, lookup, agents = world()
    marathon.pods[POD] = pod_app()
    marathon.instances[POD] = {INSTANCE: pod_instance()}
    async with started(marathon, lookup, agents) as r:
        await r.resync()
        await r.wait_idle()
        marathon.instances[POD] = {INSTANCE: pod_instance("TASK_UNREACHABLE")}
        await r.resync()
        await r.wait_idle()
        assert len([reg for reg in agents.managed().values() if reg.app_id == POD]) == 2
        marathon.instances[POD] = {}
        r.hint(parse_event({"eventType": "instance_changed_event", "instanceId": INSTANCE, "condition": "Killed",
                            "runSpecId": POD, "host": HOST}))  # type: ignore[arg-type]
        await r.wait_idle()
        assert [reg for reg in agents.managed().values() if reg.app_id == POD] == []


async def test_malformed_pod_keeps_its_registrations_and_others_go_on():
    marathon, lookup, agents = world()
    marathon.pods[POD] = pod_app()
    marathon.instances[POD] = {INSTANCE: pod_instance()}
    async with started(marathon, lookup, agents) as r:
        await r.resync()
        await r.wait_idle()
        held = {sid for sid, reg in agents.managed().items() if reg.app_id == POD}
        del marathon.pods[POD]
        marathon.malformed_pods[POD] = "pod '/db': spec.containers: field missing"
        drift = await r.resync()
        await r.wait_idle()
        assert drift.counts()["orphan"] == 0
        assert held <= set(agents.managed())
        assert f"mcr-{TASK.id}-0" in agents.managed()


async def test_marathon_without_pods_costs_no_pod_read_for_a_deleted_app():
    marathon, lookup, agents = world()
    marathon.pods_supported = False
    async with started(marathon, lookup, agents) as r:
        await r.resync()
        await r.wait_idle()
        reads = marathon.pod_reads
        del marathon.apps[APP]
        r.hint_app(APP)
        await r.wait_idle()
        assert agents.managed() == {}
        assert marathon.pod_reads == reads


async def test_ucr_task_is_registered_from_marathon_without_any_docker_call():
    marathon, lookup, agents = world()
    ucr = App(id="/ucr", version="v1", network_mode=NetworkMode.USER, mesos_containerizer=True,
              port_mappings=(PortMapping(80, None, "http"),))
    marathon.apps["/ucr"] = ucr
    marathon.tasks["/ucr"] = {}
    async with started(marathon, lookup, agents) as r:
        await r.resync()
        await r.wait_idle()
        finds = lookup.finds
        task = Task(id="ucr.instance-1._app.1", app_id="/ucr", host=HOST, ip_addresses=("10.32.0.9",))
        marathon.tasks["/ucr"][task.id] = task
        r.hint(parse_event({"eventType": "status_update_event", "taskId": task.id, "appId": "/ucr",
                            "taskStatus": "TASK_RUNNING", "host": HOST,
                            "ipAddresses": [{"ipAddress": "10.32.0.9", "protocol": "IPv4"}]}))  # type: ignore[arg-type]
        await r.wait_idle()
        await r.resync()
        await r.wait_idle()
        [reg] = [reg for reg in agents.managed().values() if reg.app_id == "/ucr"]
        assert (reg.address, reg.port) == ("10.32.0.9", 80)
        assert lookup.finds == finds  # neither while Marathon answered nor after
