"""Issue 19's "Done when", end to end on real containers: the Mesos containerizer on Weave's CNI
plugin (the world's slave 4, whose containers no Docker API the registrar can reach knows), pods,
partition-aware task states and readiness checks.

- A UCR app with and without a host port, and a pod with two endpoints, answer `dig` with their
  overlay addresses (slave 4's range), and their checks pass from the host's Consul agent.
- A `container/bridge` task is never registered at docker0's address.
- A partitioned agent's tasks stay registered through two resyncs and come back without a write
  (the Consul simulator's registration log); the expunge's `instance_changed_event` removes them
  within a second.
- A readiness check keeps a new instance out of Consul's passing set until it answers ready.
Marathon 1.10 (SSE): the world's simulator.
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from devcluster.topology import CNI_RANGE, CNI_SLAVE, PROXY_SLAVE
from tests.helpers import http, wait_for
from tests.registrar_fixtures import (
    CONSUL,
    WEB_CMD,
    Marathon,
    Registrar,
    consul_instances,
    dig,
    marathon_sim,
    start_registrar,
)

OVERLAY = ipaddress.ip_network("10.32.0.0/12")
CHECK = {"protocol": "MESOS_HTTP", "path": "/", "portIndex": 0, "intervalSeconds": 1, "timeoutSeconds": 1,
         "gracePeriodSeconds": 10, "maxConsecutiveFailures": 3}
METRICS = "mkdir -p /m && echo metrics > /m/index.html && exec httpd -f -p 9000 -h /m"


@pytest.fixture
def marathon110(world: None) -> Iterator[Marathon]:
    with marathon_sim("1.10") as m:
        yield m


@contextlib.contextmanager
def partitioned(m: Marathon) -> Iterator[None]:
    """Slave 4 cut off from the master; reconnected on the way out, whatever happens."""
    assert http("POST", f"{m.url}/_sim/agents/{CNI_SLAVE.host}/partition")[0] == 200
    try:
        yield
    finally:
        http("POST", f"{m.url}/_sim/agents/{CNI_SLAVE.host}/reconnect")


@contextlib.contextmanager
def registrar(m: Marathon, resync: float = 60.0) -> Iterator[Registrar]:
    r = start_registrar(m.url, resync=resync)
    try:
        yield r
    finally:
        r.process.stop()


def ucr_app(app_id: str, *, host_port: bool, **extra: Any) -> dict[str, Any]:
    mapping: dict[str, Any] = {"containerPort": 80, "name": "http", **({"hostPort": 0} if host_port else {})}
    body = {"id": app_id, "cpus": 0.1, "mem": 32, "cmd": WEB_CMD, "healthChecks": [CHECK],
            "container": {"type": "MESOS", "docker": {"image": "local/busybox:1"}, "portMappings": [mapping]},
            "networks": [{"mode": "container", "name": "weave"}]}
    body.update(extra)
    return body


def two_endpoint_pod(pod_id: str, **extra: Any) -> dict[str, Any]:
    image = {"kind": "DOCKER", "id": "local/busybox:1"}
    body = {"id": pod_id, "networks": [{"mode": "container", "name": "weave"}], "containers": [
        {"name": "web", "resources": {"cpus": 0.1, "mem": 32}, "image": image, "exec": {"command": {"shell": WEB_CMD}},
         "endpoints": [{"name": "http", "containerPort": 80, "hostPort": 0}],
         "healthCheck": {"http": {"endpoint": "http", "path": "/"}, "delaySeconds": 0, "intervalSeconds": 1}},
        {"name": "metrics", "resources": {"cpus": 0.1, "mem": 32}, "image": image,
         "exec": {"command": {"shell": METRICS}}, "endpoints": [{"name": "metrics", "containerPort": 9000}]}]}
    body.update(extra)
    return body


def post(m: Marathon, path: str, body: dict[str, Any]) -> None:
    status, answer, _ = http("POST", f"{m.url}{path}", body)
    assert status == 201, (status, answer)


def task_ip(m: Marathon, app_id: str) -> str:
    [task] = wait_for(lambda: m.running(app_id) or None, 30, what=f"{app_id} running")
    assert task["host"] == CNI_SLAVE.host
    ip = str(task["ipAddresses"][0]["ipAddress"])
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(CNI_RANGE)
    return ip


def pod_ip(m: Marathon, pod_id: str) -> str:
    def stable() -> str | None:
        status, body, _ = http("GET", f"{m.url}/v2/pods{pod_id}::status")
        if status != 200 or body["status"] != "STABLE":
            return None
        return str(body["instances"][0]["networks"][0]["addresses"][0])
    ip = wait_for(stable, 30, what=f"{pod_id} stable")
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(CNI_RANGE)
    return ip  # type: ignore[no-any-return]


def registered_at(service: str) -> list[tuple[str, int, str]]:
    return sorted((i["Service"]["Address"], i["Service"]["Port"], i["Node"]["Node"]) for i in consul_instances(service))


def passing(service: str) -> bool:
    got = consul_instances(service)
    return bool(got) and all(c["Status"] == "passing" for i in got for c in i["Checks"])


def registration_log(since: int = 0) -> tuple[int, list[list[Any]]]:
    status, body, _ = http("GET", f"{CONSUL}/_sim/registrations?since={since}")
    assert status == 200, (status, body)
    return body["next"], body["entries"]


def test_ucr_apps_and_a_two_endpoint_pod_answer_dig_with_their_overlay_addresses(marathon110: Marathon) -> None:
    with registrar(marathon110, resync=5.0):
        post(marathon110, "/v2/apps", ucr_app("/ucr-plain", host_port=False))
        post(marathon110, "/v2/apps", ucr_app("/ucr-mapped", host_port=True))
        post(marathon110, "/v2/pods", two_endpoint_pod("/webpod"))
        plain, mapped, pod = task_ip(marathon110, "/ucr-plain"), task_ip(marathon110, "/ucr-mapped"), \
            pod_ip(marathon110, "/webpod")
        node = CNI_SLAVE.name  # registered in the agent of the task's own host
        expected = {"ucr-plain": [(plain, 80, node)], "ucr-mapped": [(mapped, 80, node)],
                    "webpod": [(pod, 80, node)], "webpod-metrics": [(pod, 9000, node)]}
        for service, want in expected.items():
            wait_for(lambda s=service, w=want: registered_at(s) == w or None, 40, what=f"{service} at {want}")
        # checks: on the overlay address (no host port) or host:hostPort, run by the host's agent
        for service in ("ucr-plain", "ucr-mapped", "webpod"):
            wait_for(lambda s=service: passing(s) or None, 40, what=f"{service} passing")
            assert [c for i in consul_instances(service) for c in i["Checks"] if c["ServiceID"]], service
        for service, ip in (("ucr-plain", plain), ("ucr-mapped", mapped), ("webpod", pod), ("webpod-metrics", pod)):
            assert dig(f"{service}.service.consul") == [ip]
        for url, body in ((f"http://{plain}/", b"ok\n"), (f"http://{pod}:9000/", b"metrics\n")):
            with urllib.request.urlopen(url, timeout=5) as resp:
                assert resp.read() == body


def test_a_bridge_task_is_never_registered_at_docker0s_address(marathon110: Marathon) -> None:
    with registrar(marathon110, resync=2.0) as r:
        body = {"id": "/bridged", "cpus": 0.1, "mem": 32, "cmd": WEB_CMD, "healthChecks": [CHECK],
                "constraints": [["hostname", "CLUSTER", PROXY_SLAVE.host]], "networks": [{"mode": "container/bridge"}],
                "container": {"type": "DOCKER", "docker": {"image": "local/busybox:1"},
                              "portMappings": [{"containerPort": 80, "hostPort": 0, "name": "http"}]}}
        post(marathon110, "/v2/apps", body)
        [task] = wait_for(lambda: marathon110.running("/bridged") or None, 30, what="/bridged running")
        docker0 = task["ipAddresses"][0]["ipAddress"]
        assert ipaddress.ip_address(docker0) in ipaddress.ip_network("172.17.0.0/16"), "Marathon reports docker0's"
        [(address, port, _)] = wait_for(lambda: registered_at("bridged") or None, 40, what="bridged registered")
        assert ipaddress.ip_address(address) in OVERLAY and port == 80
        r.wait_resyncs(2)
        assert [a for a, _, _ in registered_at("bridged")] == [address]
        assert dig("bridged.service.consul") == [address] and docker0 not in dig("bridged.service.consul")


def test_a_partitioned_agent_keeps_its_registrations_and_comes_back_without_a_write(marathon110: Marathon) -> None:
    with registrar(marathon110, resync=2.0) as r:
        post(marathon110, "/v2/apps", ucr_app("/ucr-part", host_port=False))
        post(marathon110, "/v2/pods", two_endpoint_pod("/podpart"))
        ip, pip = task_ip(marathon110, "/ucr-part"), pod_ip(marathon110, "/podpart")
        for service, addr in (("ucr-part", ip), ("podpart", pip), ("podpart-metrics", pip)):
            wait_for(lambda s=service, a=addr: [x for x, _, _ in registered_at(s)] == [a] or None, 40,
                     what=f"{service} registered")
        ids = {i["Service"]["ID"] for s in ("ucr-part", "podpart", "podpart-metrics") for i in consul_instances(s)}
        r.wait_resyncs(1)
        mark, _ = registration_log()
        with partitioned(marathon110):
            assert [t["state"] for t in marathon110.tasks("/ucr-part")] == ["TASK_UNREACHABLE"]
            r.wait_resyncs(2)
            for service, addr in (("ucr-part", ip), ("podpart", pip), ("podpart-metrics", pip)):
                assert [x for x, _, _ in registered_at(service)] == [addr], f"{service} kept while unreachable"
        wait_for(lambda: [t["state"] for t in marathon110.tasks("/ucr-part")] == ["TASK_RUNNING"] or None, 10,
                 what="the comeback")
        r.wait_resyncs(2)
        _, entries = registration_log(mark)
        assert not [e for e in entries if e[1] in ids], f"written again: {entries}"


def test_the_expunge_removes_the_registration_within_a_second(marathon110: Marathon) -> None:
    strategy = {"inactiveAfterSeconds": 1, "expungeAfterSeconds": 5}
    with registrar(marathon110, resync=120.0):  # no resync can be what removes it
        post(marathon110, "/v2/apps", ucr_app("/ucr-expunged", host_port=False, unreachableStrategy=strategy))
        ip = task_ip(marathon110, "/ucr-expunged")
        wait_for(lambda: [x for x, _, _ in registered_at("ucr-expunged")] == [ip] or None, 40, what="registered")
        mark, _ = registration_log()
        with partitioned(marathon110):
            # UnreachableInactive: still listed, no longer active (no startedAt); still registered
            wait_for(lambda: [t for t in marathon110.tasks("/ucr-expunged") if "startedAt" not in t] or None, 10,
                     what="UnreachableInactive")
            assert [x for x, _, _ in registered_at("ucr-expunged")] == [ip], "kept while unreachable"
            # the expunge: announced only by instance_changed_event (Killed); the task leaves REST with it
            deadline = time.monotonic() + 15
            while marathon110.tasks("/ucr-expunged"):
                assert time.monotonic() < deadline, "never expunged"
                time.sleep(0.02)
            announced = time.monotonic()
        wait_for(lambda: not consul_instances("ucr-expunged") or None, 2, what="deregistered after the expunge")
        _, entries = registration_log(mark)
        [dereg] = [e for e in entries if e[0] == "deregister"]
        assert dereg[3] - announced < 1.0, f"deregistered {dereg[3] - announced:.2f} s after the expunge event"


def test_a_readiness_check_keeps_a_new_instance_out_of_the_passing_set_until_ready(marathon110: Marathon) -> None:
    # /ready appears 8 s after the start; the health check (/) passes at once
    cmd = "mkdir -p /www && echo ok > /www/index.html && (sleep 8; echo ready > /www/ready) & " \
          "exec httpd -f -p 80 -h /www"
    with registrar(marathon110, resync=2.0):
        body = ucr_app("/ready-app", host_port=True, cmd=cmd, readinessChecks=[
            {"name": "ready", "protocol": "HTTP", "path": "/ready", "portName": "http", "intervalSeconds": 2,
             "timeoutSeconds": 1, "httpStatusCodesForReady": [200]}])
        post(marathon110, "/v2/apps", body)
        ip = task_ip(marathon110, "/ready-app")
        started = time.monotonic()
        wait_for(lambda: registered_at("ready-app") or None, 20, what="ready-app registered")
        seen_not_ready = False  # registered, not passing, while /ready still answers 404
        while not passing("ready-app"):
            try:
                urllib.request.urlopen(f"http://{ip}/ready", timeout=2).close()
            except urllib.error.HTTPError as err:
                seen_not_ready = seen_not_ready or err.code == 404
            assert time.monotonic() - started < 30, "never passing"
            time.sleep(0.5)
        with urllib.request.urlopen(f"http://{ip}/ready", timeout=2) as resp:
            assert resp.status == 200, "passing before /ready answered"
        assert seen_not_ready and time.monotonic() - started >= 7, "passing only once ready"
