"""The three Weave layouts of the test world, end to end on the real engines (issue 12, docs/weave.md).

Slave 1 is the article's layout, slave 2 Weave's network plugin, slave 3 Weave's Docker API proxy:
its containers sit on a docker0-like bridge (172.17.0.0/16) and get their Weave IP on `ethwe` from
the proxy stand-in (devcluster/weave_proxy_sim.py), an address Docker never learns. The registrar
must find it through the slave's Docker API, never register the 172.17 address, and wait while
`ethwe` is not there yet. Marathon 1.10 only: the layouts are the slaves', not Marathon's version.
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
import urllib.request
from collections.abc import Iterator

import docker
import pytest

from devcluster.topology import PROXY_SLAVE, SLAVES, WEAVE_PROXY_PORT
from tests.helpers import http, wait_for
from tests.registrar_fixtures import (
    Marathon,
    Registrar,
    app_json,
    consul_instances,
    dig,
    marathon_sim,
    overlay_ip,
    start_registrar,
)

APP = "/web/customer1/site1"
OVERLAY = ipaddress.ip_network("10.32.0.0/12")


@pytest.fixture
def marathon110(world: None) -> Iterator[Marathon]:
    with marathon_sim("1.10") as m:
        yield m


@contextlib.contextmanager
def registrar(m: Marathon, *extra: str) -> Iterator[Registrar]:
    r = start_registrar(m.url, resync=60.0, extra=list(extra))
    try:
        yield r
    finally:
        r.process.stop()


def deploy_on_proxy_slave(m: Marathon, app_id: str, *, env: dict[str, str] | None = None,
                          image: str | None = None) -> dict:
    """One instance on slave 3 (constraint hostname CLUSTER); returns its running task."""
    body = app_json(app_id, 1, m.version)
    body["constraints"] = [["hostname", "CLUSTER", PROXY_SLAVE.host]]
    body["env"] = env or {}
    if image is not None:  # the image's own command: no `cmd`, no shell needed
        body["container"]["docker"]["image"] = image
        del body["cmd"]
    status, answer, _ = http("POST", f"{m.url}/v2/apps", body)
    assert status == 201, (status, answer)
    [task] = wait_for(lambda: m.running(app_id) or None, 30, what=f"{app_id} running on slave 3")
    assert task["host"] == PROXY_SLAVE.host
    return task


def registered(service: str) -> list[dict]:
    return [i["Service"] for i in consul_instances(service)]


def proxy_container(task: dict) -> dict:
    client = docker.DockerClient(base_url=PROXY_SLAVE.docker_local_url)
    try:
        [c] = client.api.containers(filters={"label": f"MESOS_TASK_ID={task['id']}"})
        return client.api.inspect_container(c["Id"])
    finally:
        client.close()


def test_an_app_over_the_three_layouts_is_registered_with_each_overlay_ip(marathon110: Marathon) -> None:
    with registrar(marathon110):
        marathon110.deploy(APP, 3)
        tasks = wait_for(lambda: r if len(r := marathon110.running(APP)) == 3 else None, 40, what="3 tasks")
        assert {t["host"] for t in tasks} == {s.host for s in SLAVES}, "one task per slave, one per layout"
        [proxied] = [t for t in tasks if t["host"] == PROXY_SLAVE.host]
        # what Marathon and Docker know of the proxied task is docker0's address
        docker0 = proxied["ipAddresses"][0]["ipAddress"]
        assert ipaddress.ip_address(docker0) in ipaddress.ip_network("172.17.0.0/16")
        assert proxy_container(proxied)["NetworkSettings"]["Networks"]["bridge"]["IPAddress"] == docker0
        expected = {t["host"]: overlay_ip(t) for t in tasks}
        assert all(ipaddress.ip_address(ip) in OVERLAY for ip in expected.values()), expected

        def in_consul() -> list[dict] | None:
            got = consul_instances("web")
            return got if sorted(i["Service"]["Address"] for i in got) == sorted(expected.values()) else None

        got = wait_for(in_consul, 40, what=f"web at {sorted(expected.values())} in Consul")
        for inst in got:
            svc = inst["Service"]
            assert svc["Port"] == 80 and not svc["Address"].startswith("172.17.")
        # the checks go through each task's host port, and pass
        wait_for(lambda: all(c["Status"] == "passing" for i in consul_instances("web") for c in i["Checks"]
                             if c["ServiceID"]) or None, 40, what="every check passing")
        checks = [c for i in consul_instances("web") for c in i["Checks"] if c["ServiceID"]]
        assert len(checks) == 3
        assert dig("web.service.consul") == sorted(expected.values())
        for ip in expected.values():
            with urllib.request.urlopen(f"http://{ip}:80/", timeout=5) as resp:
                assert resp.status == 200 and resp.read() == b"ok\n"


def test_a_late_ethwe_is_registered_once_it_appears_and_nothing_before(marathon110: Marathon) -> None:
    with registrar(marathon110) as r:
        task = deploy_on_proxy_slave(marathon110, APP, env={"DEVCLUSTER_WEAVE_ATTACH_DELAY": "5"})
        started = time.monotonic()
        time.sleep(3)
        assert registered("web") == [], "nothing may be registered before the proxy attached ethwe"
        [svc] = wait_for(lambda: registered("web") or None, 30, what="web registered after the attach")
        assert time.monotonic() - started >= 3
        assert svc["Address"] == overlay_ip(task) and ipaddress.ip_address(svc["Address"]) in OVERLAY
        time.sleep(2)
        assert len(registered("web")) == 1
        metrics = http("GET", f"{r.url}/metrics")[1]
        assert 'reason="weave-ip-not-attached"' in metrics, "the wait is visible in the metrics"


@pytest.mark.parametrize("mode", ["auto", "overlay"])
def test_a_container_with_only_docker0s_address_is_never_registered_as_overlay(marathon110: Marathon,
                                                                                mode: str) -> None:
    """WEAVE_CIDR=none: the proxy leaves the container alone, so its one address is 172.17's."""
    with registrar(marathon110, "--address-mode", mode) as r:
        task = deploy_on_proxy_slave(marathon110, APP, env={"WEAVE_CIDR": "none"})
        info = proxy_container(task)
        assert (info["Config"]["Entrypoint"] or [""])[0] != "/w/w", "the proxy left it alone"
        if mode == "auto":  # host:hostPort, with the reason counted
            [svc] = wait_for(lambda: registered("web") or None, 30, what="web registered at host:hostPort")
            assert (svc["Address"], svc["Port"]) == (task["host"], task["ports"][0])
        else:
            time.sleep(4)
            assert registered("web") == []
        metrics = http("GET", f"{r.url}/metrics")[1]
        assert "mcr_overlay_addresses_rejected_total" in metrics
        assert not any(s["Address"].startswith("172.17.") for s in registered("web"))


def test_lookup_1_the_proxys_rewritten_inspect(marathon110: Marathon) -> None:
    """Only the proxy's inspect has the address: no /etc/hosts block, no exec lookup."""
    with registrar(marathon110, "--docker", f"tcp://{{host}}:{WEAVE_PROXY_PORT}"):
        task = deploy_on_proxy_slave(marathon110, APP, env={"DEVCLUSTER_WEAVE_NO_REWRITE_HOSTS": "1"})
        [svc] = wait_for(lambda: registered("web") or None, 30, what="web registered through the proxy's inspect")
        assert svc["Address"] == overlay_ip(task)


def test_lookup_2_the_hosts_block_of_an_image_without_a_shell(marathon110: Marathon) -> None:
    with registrar(marathon110):
        task = deploy_on_proxy_slave(marathon110, APP, image="local/noshell:1")
        info = proxy_container(task)
        assert info["Path"] == "/w/w" and info["Args"][0] == "/httpd"
        [svc] = wait_for(lambda: registered("web") or None, 30, what="web registered from the /etc/hosts block")
        assert svc["Address"] == overlay_ip(task)
        with urllib.request.urlopen(f"http://{svc['Address']}:80/", timeout=5) as resp:
            assert resp.read() == b"ok\n"


def test_lookup_3_exec_when_neither_inspect_nor_hosts_has_it(marathon110: Marathon) -> None:
    env = {"DEVCLUSTER_WEAVE_NO_REWRITE_HOSTS": "1"}
    with registrar(marathon110):  # without --weave-exec-lookup the address cannot be found: nothing registered
        deploy_on_proxy_slave(marathon110, APP, env=env)
        time.sleep(4)
        assert registered("web") == []
    marathon110.delete_all()
    with registrar(marathon110, "--weave-exec-lookup"):
        task = deploy_on_proxy_slave(marathon110, "/web/customer1/site2", env=env)
        [svc] = wait_for(lambda: registered("web") or None, 30, what="web registered through the exec lookup")
        assert svc["Address"] == overlay_ip(task)
