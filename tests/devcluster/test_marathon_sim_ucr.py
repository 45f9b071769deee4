"""`container.type: MESOS` apps on the CNI slave (reference marathon-ucr-pods.md §1.2, §5;
marathon-pods-api.md §3) and agent partitions (§3: TASK_UNREACHABLE, UnreachableInactive, the
comeback, the expunge announced only by instance_changed_event `Killed`)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from devcluster.topology import CNI_RANGE, CNI_SLAVE, SLAVES
from tests.devcluster.marathon_sim_fixtures import *  # noqa: F403  (fixtures: sim10, sim14)
from tests.devcluster.marathon_sim_fixtures import WEB_CMD, Sim, sse, web_app
from tests.helpers import http


def ucr_app(app_id: str, *, host_port: bool = False, **extra: Any) -> dict[str, Any]:
    mapping: dict[str, Any] = {"containerPort": 80, "name": "http", **({"hostPort": 0} if host_port else {})}
    body = {"id": app_id, "cpus": 0.1, "mem": 32, "cmd": WEB_CMD,
            "container": {"type": "MESOS", "docker": {"image": "local/busybox:1"}, "portMappings": [mapping]},
            "networks": [{"mode": "container", "name": "weave"}]}
    body.update(extra)
    return body


def in_range(ip: str) -> bool:
    return ipaddress.ip_address(ip) in ipaddress.ip_network(CNI_RANGE)


def test_ucr_apps_run_on_the_cni_slave_with_its_overlay_address(sim10: Sim) -> None:
    status, body = sim10.post_app(ucr_app("/ucr/plain"))
    assert status == 201, body
    mapping = body["container"]["portMappings"][0]
    assert body["container"]["type"] == "MESOS" and "hostPort" not in mapping and body["requirePorts"] is False
    assert "privileged" not in body["container"]["docker"]  # a Docker-containerizer field
    assert sim10.post_app(ucr_app("/ucr/mapped", host_port=True))[0] == 201
    assert sim10.post_app(web_app("/ucr/docker", 3))[0] == 201
    [plain] = sim10.running("/ucr/plain", 1)
    [mapped] = sim10.running("/ucr/mapped", 1)
    for task in (plain, mapped):
        assert task["host"] == CNI_SLAVE.host and len(task["ipAddresses"]) == 1
        assert in_range(task["ipAddresses"][0]["ipAddress"]) and task["ipAddresses"][0]["protocol"] == "IPv4"
    assert plain["ports"] == []  # no hostPort declared: no host port (§1.2)
    assert len(mapped["ports"]) == 1
    docker_tasks = sim10.running("/ucr/docker", 3)
    assert CNI_SLAVE.host not in {t["host"] for t in docker_tasks}  # Docker-containerizer tasks never go there
    # reachable from the host at the overlay address (and the host port where there is one)
    for where in (f"{plain['ipAddresses'][0]['ipAddress']}:80", f"{CNI_SLAVE.host}:{mapped['ports'][0]}"):
        host, port = where.split(":")
        with socket.create_connection((host, int(port)), timeout=3):
            pass
    # the slave has no Docker API: nothing listens on Docker's ports at its address
    for port in (2375, 2376):
        with socket.socket() as s:
            s.settimeout(1)
            assert s.connect_ex((CNI_SLAVE.host, port)) != 0
    assert CNI_SLAVE not in SLAVES


def test_ucr_app_in_14_shape(sim14: Sim) -> None:
    body = {"id": "/ucr14", "cpus": 0.1, "mem": 32, "cmd": WEB_CMD,
            "container": {"type": "MESOS", "docker": {"image": "local/busybox:1"}},
            "ipAddress": {"networkName": "weave", "discovery": {"ports": [{"number": 80, "name": "http",
                                                                            "protocol": "tcp"}]}}}
    status, out = sim14.post_app(body)
    assert status == 201, out
    assert out["container"]["type"] == "MESOS" and "network" not in out["container"]["docker"]
    assert out["ipAddress"]["networkName"] == "weave"
    assert out["ipAddress"]["discovery"]["ports"] == [{"number": 80, "name": "http", "protocol": "tcp"}]
    [task] = sim14.running("/ucr14", 1)
    assert task["host"] == CNI_SLAVE.host and in_range(task["ipAddresses"][0]["ipAddress"])


def test_partition_unreachable_inactive_comeback_and_expunge(sim10: Sim) -> None:
    strategy = {"inactiveAfterSeconds": 2, "expungeAfterSeconds": 4}
    assert sim10.post_app(ucr_app("/part/kept"))[0] == 201  # default strategy: 300 s / 600 s
    assert sim10.post_app(ucr_app("/part/gone", unreachableStrategy=strategy))[0] == 201
    [kept] = sim10.running("/part/kept", 1)
    [gone] = sim10.running("/part/gone", 1)
    status, body, _ = http("GET", f"{sim10.url}/v2/apps/part/gone")
    assert body["app"]["unreachableStrategy"] == strategy
    with sse(f"{sim10.url}/v2/events") as events:
        status, body, _ = http("POST", f"{sim10.url}/_sim/agents/{CNI_SLAVE.host}/partition")
        assert status == 200 and body["agent"] == CNI_SLAVE.host
        for task in (kept, gone):
            update = events.next("status_update_event", taskId=task["id"], taskStatus="TASK_UNREACHABLE")
            assert update["ipAddresses"] == task["ipAddresses"]
        events.next("instance_changed_event", runSpecId="/part/gone", condition="Unreachable")
        [listed] = sim10.tasks("/part/gone")
        assert listed["state"] == "TASK_UNREACHABLE" and "startedAt" in listed  # Unreachable is still active
        events.next("instance_changed_event", runSpecId="/part/gone", condition="UnreachableInactive", timeout=5)
        [listed] = sim10.tasks("/part/gone")
        assert listed["state"] == "TASK_UNREACHABLE" and listed["ipAddresses"] == gone["ipAddresses"]
        assert "startedAt" not in listed and "version" not in listed and listed["ports"] == []
        expunged = events.next("instance_changed_event", runSpecId="/part/gone", condition="Killed", timeout=5)
        assert gone["id"] == f"{expunged['instanceId']}._app.1"
        assert sim10.tasks("/part/gone") == []
        # the expunge publishes no status_update_event of its own
        assert not [d for n, d in events.seen if n == "status_update_event" and d["taskId"] == gone["id"]
                    and d["taskStatus"] not in {"TASK_UNREACHABLE"}]
        assert [t["state"] for t in sim10.tasks("/part/kept")] == ["TASK_UNREACHABLE"]
        status, body, _ = http("POST", f"{sim10.url}/_sim/agents/{CNI_SLAVE.host}/reconnect")
        assert status == 200
        events.next("status_update_event", taskId=kept["id"], taskStatus="TASK_RUNNING")
        events.next("instance_changed_event", runSpecId="/part/kept", condition="Running")
        assert [t["state"] for t in sim10.tasks("/part/kept")] == ["TASK_RUNNING"]
    assert http("POST", f"{sim10.url}/_sim/agents/10.9.9.9/partition")[0] == 404
