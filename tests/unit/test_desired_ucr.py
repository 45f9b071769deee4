"""UCR apps on container networks, and readiness checks: Marathon JSON (shaped as
reference/marathon-ucr-pods.md §1.2, §3, §4 and §5 give it) -> exact Consul registrations (issue 19)."""

from __future__ import annotations

import pytest

from service.desired import RegistrationPolicy, desired_registrations
from service.marathon.parse import app_from_json, task_from_json
from service.model import AddressMode, App, ConsulCheck, Container, Naming, Registration, Skip, Task

HOST = "agent-1.example.com"
WEAVE_IP = "10.32.0.3"
DOCKER0_IP = "172.17.0.2"
TID = "web.6f1e2d3c-8f0a-11e7-9e5e-0242ac110002"
SID = f"mcr-{TID}-0"


def ucr_app(**over: object) -> dict[str, object]:
    """1.5+ UCR app on the `weave` CNI network, no host port (reference §3)."""
    body: dict[str, object] = {
        "id": "/web", "version": "2017-09-01T09:59:58.000Z",
        "container": {"type": "MESOS", "docker": {"image": "nginx"},
                      "portMappings": [{"containerPort": 80, "name": "http", "protocol": "tcp", "servicePort": 10000}]},
        "networks": [{"mode": "container", "name": "weave"}], "requirePorts": False,
    }
    body.update(over)
    return body


def ucr_task(ips: list[str] | None = None, ports: list[int] | None = None, state: str = "TASK_RUNNING") -> Task:
    """The REST task of reference §1.2 (`embed=apps.tasks`)."""
    body: dict[str, object] = {
        "id": TID, "state": state, "startedAt": "2017-09-01T10:00:05.123Z", "ports": ports or [],
        "version": "2017-09-01T09:59:58.000Z", "appId": "/web", "slaveId": "a1b2-S1", "host": HOST,
        "ipAddresses": [{"ipAddress": ip, "protocol": "IPv4"} for ip in ([WEAVE_IP] if ips is None else ips)],
    }
    return task_from_json(body)


def run(app: App, task: Task, container: Container | None = None, mode: AddressMode = AddressMode.AUTO,
        **kw: object) -> list[Registration] | Skip:
    return desired_registrations(app, task, container, RegistrationPolicy(
        naming=Naming.DNS, address_mode=mode, networks=("weave",), **kw))  # type: ignore[arg-type]


def test_ucr_app_without_host_port_registers_the_weave_ip_and_checks_it_there():
    app = app_from_json(ucr_app(healthChecks=[{"protocol": "MESOS_HTTP", "path": "/h", "portIndex": 0,
                                                "intervalSeconds": 5, "timeoutSeconds": 2}]))
    [reg] = run(app, ucr_task())
    assert (reg.address, reg.port, reg.agent_host, reg.meta_get("address-source")) == (WEAVE_IP, 80, HOST, "overlay")
    # no host port: the agent on the host reaches the task through Weave's bridge address
    assert [c.http for c in reg.checks] == [f"http://{WEAVE_IP}:80/h"]


def test_ucr_app_with_host_port_checks_host_and_host_port():
    app = app_from_json(ucr_app(container={
        "type": "MESOS", "portMappings": [{"containerPort": 80, "hostPort": 0, "name": "http"}]},
        healthChecks=[{"protocol": "TCP", "portIndex": 0}]))
    [reg] = run(app, ucr_task(ports=[31042]))
    assert (reg.address, reg.port) == (WEAVE_IP, 80)
    assert [c.tcp for c in reg.checks] == [f"{HOST}:31042"]


def test_ucr_app_never_asks_for_a_container():
    # a Container passed in (e.g. a stale listing) is not looked at: Marathon's report decides
    app = app_from_json(ucr_app())
    stale = Container(id="c", task_id=TID, network_ips={"weave": "10.32.9.9"})
    [reg] = run(app, ucr_task(), stale)
    assert reg.address == WEAVE_IP


def test_ucr_14_ip_per_task_discovery_ports():
    discovery = {"ports": [{"number": 8080, "name": "h"}]}
    app = app_from_json({"id": "/web", "container": {"type": "MESOS"},
                         "ipAddress": {"networkName": "weave", "discovery": discovery}})
    [reg] = run(app, ucr_task())
    assert (reg.address, reg.port) == (WEAVE_IP, 8080)


def test_first_address_inside_the_overlay_wins_among_several_networks():
    app = app_from_json(ucr_app(networks=[{"mode": "container", "name": "other"},
                                          {"mode": "container", "name": "weave"}]))
    [reg] = run(app, ucr_task(ips=["192.168.5.4", WEAVE_IP, "10.32.0.99"]))
    assert reg.address == WEAVE_IP


@pytest.mark.parametrize(("mode", "expect_skip"), [(AddressMode.OVERLAY, True), (AddressMode.AUTO, True)])
def test_ucr_address_outside_the_overlay_is_never_registered(mode, expect_skip):
    # no host port either, so auto has nothing to fall back to: waits (retry), never a wrong address
    result = run(app_from_json(ucr_app()), ucr_task(ips=["192.168.5.4"]), mode=mode)
    assert isinstance(result, Skip) and result.retry
    assert result.reason == "address-outside-overlay"


def test_ucr_without_overlay_address_falls_back_to_host_port_in_auto():
    app = app_from_json(ucr_app(container={"type": "MESOS", "portMappings": [{"containerPort": 80, "hostPort": 0}]}))
    [reg] = run(app, ucr_task(ips=[], ports=[31042]))
    assert (reg.address, reg.port, reg.meta_get("address-source")) == (HOST, 31042, "host")


@pytest.mark.parametrize("network", [
    {"networks": [{"mode": "container/bridge"}]},
    {"networks": [{"mode": "host"}], "portDefinitions": [{"port": 0, "name": "http"}]},
], ids=["container-bridge", "host"])
def test_ip_addresses_are_never_the_overlay_for_bridge_or_host_networking(network):
    # Mesos reports the bridge's or the agent's address there (reference §1.1); here it even lies
    # inside the overlay range, and still must not be taken
    body = ucr_app(**network)
    if "portDefinitions" in network:
        body["container"] = {"type": "MESOS"}
    else:
        body["container"] = {"type": "MESOS", "portMappings": [{"containerPort": 80, "name": "http"}]}
    [reg] = run(app_from_json(body), ucr_task(ips=["10.32.0.77"], ports=[31042]))
    assert (reg.address, reg.port) == (HOST, 31042)


def test_ip_addresses_are_never_the_overlay_for_docker_tasks():
    # Docker containerizer on a container network: the container's own IP (Docker), not ipAddresses
    app = app_from_json(ucr_app(container={"type": "DOCKER", "docker": {"image": "nginx"},
                                           "portMappings": [{"containerPort": 80}]}))
    from_docker = Container(id="c", task_id=TID, network_ips={"weave": "10.32.1.1"})
    [reg] = run(app, ucr_task(ips=["10.32.0.77"]), from_docker)
    assert reg.address == "10.32.1.1"
    assert isinstance(run(app, ucr_task(ips=["10.32.0.77"]), None), Skip)  # no container: not ipAddresses


@pytest.mark.parametrize("state", ["TASK_UNREACHABLE"])
def test_unreachable_ucr_task_keeps_its_registrations(state):
    result = run(app_from_json(ucr_app()), ucr_task(state=state))
    assert isinstance(result, Skip) and result.keep


@pytest.mark.parametrize("state", ["TASK_GONE", "TASK_GONE_BY_OPERATOR", "TASK_DROPPED", "TASK_UNKNOWN",
                                   "TASK_LOST", "TASK_KILLED", "TASK_FAILED", "TASK_FINISHED", "TASK_ERROR"])
def test_terminal_states_remove(state):
    assert run(app_from_json(ucr_app()), ucr_task(state=state)) == []


# --- readiness ------------------------------------------------------------------------------------

READY = {"name": "ready", "protocol": "HTTP", "path": "/ready", "portName": "http-api",
         "intervalSeconds": 3, "timeoutSeconds": 1, "httpStatusCodesForReady": [200],
         "preserveLastResponse": False}


def bridge_app(**over: object) -> App:
    body: dict[str, object] = {
        "id": "/web", "container": {"type": "DOCKER", "docker": {"image": "x"}, "portMappings": [
            {"containerPort": 80, "hostPort": 0, "name": "metrics"},
            {"containerPort": 8080, "hostPort": 0, "name": "http-api"}]},
        "networks": [{"mode": "container/bridge"}], "readinessChecks": [READY]}
    body.update(over)
    return app_from_json(body)


def test_readiness_check_on_every_port_targets_the_named_port():
    container = Container(id="c", task_id=TID, network_ips={"weave": WEAVE_IP})
    task = ucr_task(ports=[31001, 31002])
    regs = run(bridge_app(), task, container)
    assert isinstance(regs, list) and len(regs) == 2
    for reg in regs:  # a task that is not ready takes traffic on none of its ports
        [ready] = [c for c in reg.checks if ":ready:" in c.check_id]
        assert ready == ConsulCheck(check_id=f"service:{reg.service_id}:ready:1", name="Marathon readiness check ready",
                                    http=f"http://{HOST}:31002/ready", interval="3s", timeout="1s")


def test_readiness_https_and_container_network_without_host_port():
    app = app_from_json(ucr_app(container={"type": "MESOS", "portMappings": [
        {"containerPort": 8443, "name": "http-api"}]}, readinessChecks=[{**READY, "protocol": "HTTPS", "path": "r"}]))
    [reg] = run(app, ucr_task())
    [ready] = reg.checks
    assert (ready.http, ready.tls_skip_verify) == (f"https://{WEAVE_IP}:8443/r", True)


def test_readiness_check_naming_no_port_is_left_out():
    regs = run(bridge_app(readinessChecks=[{**READY, "portName": "nope"}]),
               ucr_task(ports=[31001, 31002]), Container(id="c", task_id=TID, network_ips={"weave": WEAVE_IP}))
    assert isinstance(regs, list) and all(not r.checks for r in regs)
