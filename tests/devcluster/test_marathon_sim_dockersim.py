"""The Marathon simulator's docker_sim launcher backend (`--slave HOST=dockersim+http://...`), as
processes: tasks start as docker_sim containers, report the simulator's overlay IP, and go away on
scale-down and at the simulator's shutdown. Needs no Docker engine."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from devcluster.marathon_sim.config import SlaveConfig
from devcluster.marathon_sim.dockersim_launcher import SimSlaveDocker, is_dockersim, make_slave_docker
from tests.helpers import Process, free_port, http, wait_for

SLAVE_IPS = ("127.0.0.40", "127.0.0.41")


def test_hook_picks_backend_by_url_scheme() -> None:
    sim = SlaveConfig.parse("127.0.0.40=dockersim+http://127.0.0.40:2375:weave")
    assert (sim.docker_url, sim.overlay_network) == ("dockersim+http://127.0.0.40:2375", "weave")
    assert isinstance(make_slave_docker(sim), SimSlaveDocker)
    assert not is_dockersim(SlaveConfig.parse("127.0.0.2=unix:///x.sock:bridge"))  # -> SlaveDocker (the SDK)


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[str, dict[str, str]]]:
    port = free_port()
    docker_sim = Process(["devcluster.docker_sim", *(a for ip in SLAVE_IPS for a in ("--listen", f"{ip}:{port}"))],
                         f"dockersim-{port}")
    engines = {ip: f"http://{ip}:{port}" for ip in SLAVE_IPS}
    marathon: Process | None = None
    try:
        wait_for(lambda: all(http("GET", f"{u}/_ping")[0] == 200 for u in engines.values()), 20, what="docker_sim")
        mport = free_port()
        marathon = Process(["devcluster.marathon_sim", "--listen", f"127.0.0.1:{mport}", "--marathon-version", "1.4",
                            *(a for ip, u in engines.items() for a in ("--slave", f"{ip}=dockersim+{u}:weave"))],
                           f"marathon-dockersim-{mport}")
        url = f"http://127.0.0.1:{mport}"
        wait_for(lambda: http("GET", f"{url}/v2/info")[0] == 200, 20, what="marathon_sim")
        yield url, engines
    finally:
        if marathon is not None:
            marathon.stop(signal.SIGTERM)
        docker_sim.stop(signal.SIGTERM)


def _containers(engines: dict[str, str]) -> dict[str, dict]:
    out = {}
    for ip, url in engines.items():
        status, body, _ = http("GET", f"{url}/v1.41/containers/json?all=1")
        assert status == 200
        out.update({c["Labels"]["MESOS_TASK_ID"]: dict(c, slave=ip) for c in body})
    return out


def test_deploy_scale_down_and_delete(world: tuple[str, dict[str, str]]) -> None:
    url, engines = world
    app = {"id": "/bench/web", "instances": 4, "cpus": 0.1, "mem": 32, "cmd": "sleep 1000",
           "container": {"type": "DOCKER", "docker": {"image": "local/busybox:1", "network": "BRIDGE",
                                                      "portMappings": [{"containerPort": 80, "hostPort": 0}]}}}
    status, body, _ = http("POST", f"{url}/v2/apps", app)
    assert status == 201, body

    def running() -> list[dict]:
        tasks = http("GET", f"{url}/v2/apps/bench/web/tasks")[1]["tasks"]
        return [t for t in tasks if t["state"] == "TASK_RUNNING"]

    tasks = wait_for(lambda: len(running()) == 4 and running(), 20, what="4 running tasks")
    containers = _containers(engines)
    assert set(containers) == {t["id"] for t in tasks}
    assert {t["host"] for t in tasks} == set(SLAVE_IPS)  # spread over both slaves
    for t in tasks:
        c = containers[t["id"]]
        assert c["slave"] == t["host"]
        assert c["Names"][0].startswith("/mesos-")
        assert t["ipAddresses"][0]["ipAddress"] == c["NetworkSettings"]["Networks"]["weave"]["IPAddress"]
        assert c["Ports"] == [{"IP": t["host"], "PrivatePort": 80, "PublicPort": t["ports"][0], "Type": "tcp"}]

    assert http("PUT", f"{url}/v2/apps/bench/web", {"instances": 1})[0] == 200
    wait_for(lambda: len(_containers(engines)) == 1, 20, what="scale down to 1 container")
    assert http("DELETE", f"{url}/v2/apps/bench/web")[0] == 200
    wait_for(lambda: not _containers(engines), 20, what="every container removed")
