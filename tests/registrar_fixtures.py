"""Fixtures for tests that run the registrar as a real process against the test world."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import pytest

from devcluster.__main__ import marathon_sim_argv, world_registrar_options
from devcluster.topology import ALL_SLAVES, SLAVES, marathon_url, world_tls_dir
from tests.helpers import ROOT, Process, free_port, http, wait_for

CONSUL = SLAVES[0].consul_url  # the world's mode is read once, at collection: switch it before pytest starts
NODE_OF_HOST = {s.host: s.name for s in ALL_SLAVES}
WEB_CMD = "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 80 -h /www"


def reset_consul() -> None:
    status, body, _ = http("POST", f"{CONSUL}/_sim/reset")
    assert status == 200, (status, body)


def app_json(app_id: str, instances: int, version: str, *, health: bool = True, labels: dict | None = None,
             network: str = "BRIDGE", cmd: str = WEB_CMD) -> dict:
    """A busybox web app in the JSON shape of the given Marathon version."""
    checks = [{"protocol": "HTTP" if version == "1.4" else "MESOS_HTTP", "path": "/", "portIndex": 0,
               "intervalSeconds": 2, "timeoutSeconds": 1, "gracePeriodSeconds": 10, "maxConsecutiveFailures": 3}]
    body: dict = {"id": app_id, "instances": instances, "cpus": 0.1, "mem": 32, "cmd": cmd,
                  "labels": labels or {}, "healthChecks": checks if health else []}
    mapping = {"containerPort": 80, "hostPort": 0, "protocol": "tcp", "name": "http"}
    if version == "1.4":
        body["container"] = {"type": "DOCKER", "docker": {"image": "local/busybox:1", "network": network,
                                                          "portMappings": [mapping]}}
    else:
        mode = {"BRIDGE": "container/bridge", "HOST": "host"}.get(network, "container")
        body["networks"] = [{"mode": mode}] if mode != "container" else [{"mode": mode, "name": "weave"}]
        body["container"] = {"type": "DOCKER", "docker": {"image": "local/busybox:1"}, "portMappings": [mapping]}
    return body


@dataclass
class Marathon:
    url: str  # as the registrar's --marathon takes it: https://user:password@... in the TLS world
    version: str

    @property
    def address(self) -> tuple[str, int]:
        parts = urllib.parse.urlsplit(self.url)
        return parts.hostname or "", parts.port or 80

    def url_at(self, host: str, port: int) -> str:
        """This Marathon's URL (scheme, credentials) at another address: a relay or proxy in front of it."""
        return marathon_url((host, port), tls=self.url.startswith("https://"))

    def deploy(self, app_id: str, instances: int = 3, **kw: object) -> None:
        status, body, _ = http("POST", f"{self.url}/v2/apps", app_json(app_id, instances, self.version, **kw))
        assert status == 201, (status, body)

    def scale(self, app_id: str, instances: int) -> None:
        status, body, _ = http("PUT", f"{self.url}/v2/apps{app_id}", {"instances": instances})
        assert status == 200, (status, body)

    def delete(self, app_id: str) -> None:
        status, body, _ = http("DELETE", f"{self.url}/v2/apps{app_id}")
        assert status in (200, 404), (status, body)

    def tasks(self, app_id: str) -> list[dict]:
        status, body, _ = http("GET", f"{self.url}/v2/apps{app_id}/tasks")
        if status == 404:
            return []
        assert status == 200, (status, body)
        return body["tasks"]

    def running(self, app_id: str) -> list[dict]:
        return [t for t in self.tasks(app_id) if t.get("state") == "TASK_RUNNING"]

    def apps(self) -> list[str]:
        status, body, _ = http("GET", f"{self.url}/v2/apps")
        assert status == 200, (status, body)
        return [a["id"] for a in body["apps"]]

    def pods(self) -> list[str]:
        status, body, _ = http("GET", f"{self.url}/v2/pods")
        assert status == 200, (status, body)
        return [p["id"] for p in body]

    def delete_all(self) -> None:
        for app_id in self.apps():
            self.delete(app_id)
        for pod_id in self.pods():
            status, body, _ = http("DELETE", f"{self.url}/v2/pods{pod_id}")
            assert status in (202, 404), (status, body)
        wait_for(lambda: not self.apps() and not self.pods(), 30, what="all apps and pods deleted")


@dataclass
class Registrar:
    url: str
    process: Process

    def ready(self) -> bool:
        return http("GET", f"{self.url}/ready")[0] == 200

    def state(self) -> dict:
        status, body, _ = http("GET", f"{self.url}/v1/registrations")
        assert status == 200, (status, body)
        return body

    def wait_resyncs(self, n: int, timeout: float = 30.0) -> None:
        """Wait until `n` more full resyncs have finished than now (so one started after this call)."""
        start = self.state()["resyncs"]
        wait_for(lambda: self.state()["resyncs"] >= start + n, timeout, what=f"{n} more resyncs")

    def post_event(self, raw: bytes, content_type: str = "application/json") -> tuple[int, object]:
        status, body, _ = http("POST", f"{self.url}/v1/events", raw=raw, headers={"Content-Type": content_type})
        return status, body


def start_registrar(marathon_url: str, *, events: str = "auto", resync: float = 3.0,
                    extra: list[str] | None = None, port: int | None = None,
                    callback_url: str | None = None) -> Registrar:
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    argv = ["service", "serve", "--marathon", marathon_url, "--listen", f"127.0.0.1:{port}", *world_registrar_options(),
            "--callback-url", callback_url or f"{url}/v1/events", "--events", events, "--resync-interval", str(resync),
            "--log-level", "DEBUG",
            # the lock (--lock auto) is held through slave 1's agent: no agent listens on 127.0.0.1 here
            "--lock-agent", CONSUL, *(extra or [])]
    proc = Process(argv, f"registrar-{port}")
    registrar = Registrar(url, proc)
    try:
        wait_for(lambda: not proc.alive() or registrar.ready(), 30, what="registrar /ready")
    except AssertionError:
        proc.stop()
        raise AssertionError(f"registrar did not become ready:\n{proc.tail()}") from None
    assert proc.alive(), f"registrar exited:\n{proc.tail()}"
    return registrar


def consul_instances(service: str, tag: str | None = None) -> list[dict]:
    url = f"{CONSUL}/v1/health/service/{service}" + (f"?tag={tag}" if tag else "")
    status, body, _ = http("GET", url)
    assert status == 200, (status, body)
    return body


def managed_instances() -> list[dict]:
    """Every service instance on every agent that carries the registrar's ownership Meta."""
    out = []
    for slave in ALL_SLAVES:
        status, body, _ = http("GET", f"{slave.consul_url}/v1/agent/services")
        assert status == 200, (status, body)
        out += [dict(s, Agent=slave.host) for s in body.values()
                if (s.get("Meta") or {}).get("managed-by") == "marathon-consul-registrar"]
    return out


def overlay_ip(task: dict) -> str:
    """The task container's overlay IP, read straight from its slave's Docker engine; on the Weave
    proxy's slave, where Docker does not know it, from the kernel: `ethwe` in the container's
    network namespace (waiting for the attach)."""
    slave = next(s for s in SLAVES if s.host == task["host"])
    client = docker.DockerClient(base_url=slave.docker_local_url)
    try:
        [c] = client.api.containers(filters={"label": f"MESOS_TASK_ID={task['id']}"})
        if slave.layout != "proxy":
            return c["NetworkSettings"]["Networks"][slave.overlay_network]["IPAddress"]
        pid = str(client.api.inspect_container(c["Id"])["State"]["Pid"])
    finally:
        client.close()

    def ethwe() -> str | None:
        out = subprocess.run(["nsenter", "-t", pid, "-n", "ip", "-4", "-o", "addr", "show", "dev", "ethwe"],
                             capture_output=True, text=True, timeout=10).stdout.split()
        return out[3].split("/")[0] if len(out) > 3 else None

    return wait_for(ethwe, 20, what=f"ethwe of {task['id']}")


def dig(name: str, rtype: str = "A") -> list[str]:
    out = subprocess.run(["dig", "@127.0.0.1", "-p", "8600", "+short", "+tries=1", "+time=2", name, rtype],
                         capture_output=True, text=True, timeout=10)
    return sorted(line for line in out.stdout.split() if line)


@contextlib.contextmanager
def marathon_sim(version: str) -> Iterator[Marathon]:
    """The world's Marathon 1.10 simulator (SSE), or a Marathon 1.4 simulator (callbacks) of our own,
    with no apps before and after, and an empty Consul before."""
    reset_consul()
    if version == "1.10":
        m = Marathon(marathon_url(), "1.10")
        m.delete_all()
        yield m
        m.delete_all()
        return
    with private_marathon("1.4") as m:
        yield m


@contextlib.contextmanager
def private_marathon(version: str) -> Iterator[Marathon]:
    """A Marathon simulator of our own (its own framework id) on the world's slaves; its apps are
    deleted and the process stopped on the way out."""
    port = free_port()
    # in the TLS world, HTTPS with basic auth like the world's
    proc = Process(marathon_sim_argv(version, ("127.0.0.1", port), tls_dir=world_tls_dir()),
                   f"marathon{version.replace('.', '')}-{port}")
    m = Marathon(marathon_url(("127.0.0.1", port)), version)
    try:
        wait_for(lambda: http("GET", f"{m.url}/v2/info")[0] == 200, 20, what=f"marathon {version} simulator")
        yield m
        m.delete_all()
    finally:
        proc.stop()


@pytest.fixture(params=["1.10", "1.4"])
def marathon(request: pytest.FixtureRequest, world: None) -> Iterator[Marathon]:
    with marathon_sim(request.param) as m:
        yield m


@pytest.fixture
def marathon14(world: None) -> Iterator[Marathon]:
    with marathon_sim("1.4") as m:
        yield m


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=60)
