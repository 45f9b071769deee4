"""The registrar deployed as the Marathon app of deploy/marathon.json, unchanged, from its image.

Each test runs a Marathon simulator of its own at `127.0.0.10:8080` (1.10) or `127.0.0.11:8080` (1.4),
started with `--extra-host marathon.service.consul:<its ip>`: the JSON names Marathon
`http://marathon.service.consul:8080` (how a node finds it through Consul DNS in a cluster), and this is
the test world's stand-in for the slaves' resolver. Its own simulator also gives the test its own
framework id, so its lock and its registrations do not touch the world's Marathon.

The registrar runs with HOST networking, so its containers share the slaves' network namespace and
reach `$HOST:8500`, both Docker APIs and the simulator the way a host process would.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from devcluster.__main__ import marathon_sim_argv
from devcluster.image import NAME, ensure_image, project_version
from devcluster.topology import SLAVES
from tests.helpers import ROOT, Process, http, wait_for
from tests.registrar_fixtures import Marathon, dig, managed_instances, overlay_ip, reset_consul

DEPLOY: dict[str, Any] = json.loads((ROOT / "deploy" / "marathon.json").read_text())
SELF = DEPLOY["id"]
APP = "/web/customer1/site1"
DNS_NAME = "site1.customer1.web.service.dc1.consul"
SIM_IP = {"1.10": "127.0.0.10", "1.4": "127.0.0.11"}


@pytest.fixture(scope="module")
def image() -> str:
    """The JSON's image tag, current on both slaves (a no-op when it already is)."""
    tag = ensure_image()
    assert tag == DEPLOY["container"]["docker"]["image"], "deploy/marathon.json names another version"
    return tag


@contextlib.contextmanager
def own_marathon(version: str) -> Iterator[Marathon]:
    ip = SIM_IP[version]
    argv = [*marathon_sim_argv(version, (ip, 8080)), "--extra-host", f"marathon.service.consul:{ip}"]
    proc = Process(argv, f"marathon-app-{version}")
    m = Marathon(f"http://{ip}:8080", version)
    try:
        wait_for(lambda: http("GET", f"{m.url}/v2/info")[0] == 200, 20, what="marathon simulator")
        yield m
    finally:
        proc.stop()  # SIGTERM: the simulator removes every container it launched


def deployed(m: Marathon, app_id: str) -> bool:
    status, body, _ = http("GET", f"{m.url}/v2/apps{app_id}")
    return status == 200 and not body["app"]["deployments"]


def put(m: Marathon, app_id: str, body: dict[str, Any]) -> None:
    status, text, _ = http("PUT", f"{m.url}/v2/apps{app_id}", body)
    assert status == 200, (status, text)


def urls(m: Marathon) -> dict[str, str]:
    """task id -> the registrar instance's base URL ($HOST:$PORT0)."""
    return {t["id"]: f"http://{t['host']}:{t['ports'][0]}" for t in m.running(SELF)}


def roles(m: Marathon) -> dict[str, str]:
    out = {}
    for task_id, url in urls(m).items():
        with contextlib.suppress(Exception):
            status, body, _ = http("GET", f"{url}/v1/registrations", timeout=2)
            if status == 200:
                out[task_id] = body["leadership"]["role"]
    return out


def writer(m: Marathon) -> str | None:
    found = [t for t, r in roles(m).items() if r == "writer"]
    assert len(found) <= 1, found
    return found[0] if found else None


def registered(app_id: str) -> dict[str, str]:
    """task id -> registered address of `app_id`'s instances in Consul."""
    return {s["Meta"]["marathon-task-id"]: s["Address"] for s in managed_instances()
            if s["Meta"].get("marathon-app-id") == app_id}


def in_sync(m: Marathon, app_id: str, n: int) -> bool:
    """Consul holds exactly the `n` running tasks of `app_id`, at their overlay IPs."""
    running = m.running(app_id)
    return len(running) == n and registered(app_id) == {t["id"]: overlay_ip(t) for t in running}


def dns_answers(n: int) -> bool:
    """Consul DNS answers the demo's name with `n` addresses, those registered (checks passing)."""
    return len(dig(DNS_NAME)) == n and sorted(dig(DNS_NAME)) == sorted(registered(APP).values())


def start_registrar_app(m: Marathon) -> None:
    status, body, _ = http("POST", f"{m.url}/v2/apps", DEPLOY)
    assert status == 201, (status, body)
    wait_for(lambda: deployed(m, SELF) and len(m.running(SELF)) == 2, 90, interval=0.5,
             what="the registrar's deployment (2 tasks, healthy and ready)")
    wait_for(lambda: writer(m) is not None, 30, interval=0.5, what="a writer")


@pytest.mark.parametrize("version", ["1.10", "1.4"])
def test_deploy_json_runs_as_the_app(image: str, version: str) -> None:
    reset_consul()
    with own_marathon(version) as m:
        start_registrar_app(m)
        tasks = m.running(SELF)
        assert {t["host"] for t in tasks} == {s.host for s in SLAVES}  # hostname:UNIQUE
        for t in tasks:
            assert all(r["alive"] for r in t["healthCheckResults"]), t  # Marathon's /health check
            url = f"http://{t['host']}:{t['ports'][0]}"
            assert http("GET", f"{url}/ready")[0] == 200
            state = http("GET", f"{url}/v1/registrations")[1]
            assert state["leadership"]["role"] in ("writer", "standby")
        assert sorted(roles(m).values()) == ["standby", "writer"]
        if version == "1.4":  # callbacks to $HOST:$PORT0, one per instance
            subs = set(http("GET", f"{m.url}/v2/eventSubscriptions")[1]["callbackUrls"])
            assert subs == {f"http://{t['host']}:{t['ports'][0]}/v1/events" for t in tasks}
        m.deploy(APP, 2)
        wait_for(lambda: in_sync(m, APP, 2), 40, what="the demo app registered")
        wait_for(lambda: dns_answers(2), 30, what="Consul DNS answers the demo's name")
        assert not registered(SELF)  # consul.register=false
        assert lock_holder(m) is not None
        _, codes = scale_to_zero(m)
        assert codes == ["0", "0"]  # SIGTERM, a clean exit, no SIGKILL
        assert lock_holder(m) is None, "the lock was not released"
        if version == "1.4":
            assert http("GET", f"{m.url}/v2/eventSubscriptions")[1]["callbackUrls"] == []


class DigPoller:
    """`dig` every 100 ms in a thread; counts the empty answers."""

    def __init__(self, name: str) -> None:
        self.name, self.polls, self.empty = name, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.polls += 1
            if not dig(self.name):
                self.empty += 1
            self._stop.wait(0.1)

    def __enter__(self) -> DigPoller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


def kill_container(task: dict[str, Any]) -> None:
    """`docker kill` (SIGKILL) of the task's container, found by Mesos' label."""
    slave = next(s for s in SLAVES if s.host == task["host"])
    client = docker.DockerClient(base_url=slave.docker_local_url)
    try:
        [c] = client.containers.list(filters={"label": f"MESOS_TASK_ID={task['id']}"})
        c.kill()
    finally:
        client.close()


@contextlib.contextmanager
def second_tag(image: str, tag: str) -> Iterator[str]:
    """A second tag of the locally built image on both slaves, for a rolling upgrade; untagged after."""
    new = f"{NAME}:{tag}"
    for s in SLAVES:
        client = docker.DockerClient(base_url=s.docker_local_url)
        try:
            client.images.get(image).tag(NAME, tag)
        finally:
            client.close()
    try:
        yield new
    finally:
        for s in SLAVES:
            client = docker.DockerClient(base_url=s.docker_local_url)
            try:
                client.images.remove(new)  # only the tag: the image keeps its other names
            finally:
                client.close()


def lock_holder(m: Marathon) -> str | None:
    fid = http("GET", f"{m.url}/v2/info")[1]["frameworkId"]
    status, body, _ = http("GET", f"{SLAVES[0].consul_url}/v1/kv/marathon-consul-registrar/{fid}/leader")
    return body[0].get("Session") if status == 200 else None


def scale_to_zero(m: Marathon) -> tuple[float, list[str]]:
    """Scale the registrar to 0; how long until both tasks are gone, and the exit codes their
    containers died with (from the slaves' Docker events): "0" is a clean end on SIGTERM, "137" a
    SIGKILL at the end of the grace period."""
    ids = {t["id"] for t in m.tasks(SELF)}
    since = time.time() - 1
    started = time.monotonic()
    m.scale(SELF, 0)
    grace = DEPLOY["taskKillGracePeriodSeconds"]
    wait_for(lambda: not m.tasks(SELF), grace, interval=0.2, what="both instances gone within the kill grace period")
    took = time.monotonic() - started
    codes = []
    for s in SLAVES:
        client = docker.DockerClient(base_url=s.docker_local_url)
        try:
            for e in client.events(since=since, until=time.time() + 1, decode=True,
                                   filters={"type": "container", "event": "die"}):
                attrs = e.get("Actor", {}).get("Attributes", {})
                if attrs.get("MESOS_TASK_ID") in ids:
                    codes.append(attrs.get("exitCode", "?"))
        finally:
            client.close()
    return took, codes


def test_lifecycle(image: str) -> None:
    """docker kill of the writer, a rolling upgrade with changes meanwhile, scale to 0 and back."""
    reset_consul()
    with own_marathon("1.10") as m, second_tag(image, f"{project_version()}-upgrade") as new_image:
        start_registrar_app(m)
        m.deploy(APP, 2)
        wait_for(lambda: in_sync(m, APP, 2) and dns_answers(2), 40, what="the demo app registered")

        with DigPoller(DNS_NAME) as poll:
            # 1. the writer's container dies: the standby takes over, Marathon replaces the dead one
            old = writer(m)
            [task] = [t for t in m.running(SELF) if t["id"] == old]
            killed = time.monotonic()
            kill_container(task)
            m.scale(APP, 3)
            wait_for(lambda: writer(m) not in (None, old), 40, interval=0.2, what="the standby takes over")
            wait_for(lambda: in_sync(m, APP, 3), 40, interval=0.2,
                     what="the scale-up written by the new writer")
            takeover = time.monotonic() - killed
            wait_for(lambda: len(m.running(SELF)) == 2 and old not in urls(m), 40, what="Marathon replaced it")

            # 2. rolling upgrade to another tag; a deployment and two scalings meanwhile
            body = {"container": {**DEPLOY["container"], "docker": {**DEPLOY["container"]["docker"],
                                                                     "image": new_image}}}
            before = set(urls(m))
            fewest = [2]

            def upgraded_tasks() -> set[str]:
                fewest[0] = min(fewest[0], len(m.running(SELF)))
                return set(urls(m)) - before

            put(m, SELF, body)
            m.deploy("/web/customer2/site2", 1)
            wait_for(lambda: upgraded_tasks(), 60, interval=0.2, what="the first upgraded instance")
            m.scale(APP, 4)
            m.scale(APP, 2)
            assert not deployed(m, SELF), "the upgrade was over before the scalings"
            wait_for(lambda: deployed(m, SELF) and len(upgraded_tasks()) == 2 == len(urls(m)), 120,
                     interval=0.2, what="the rolling upgrade")
            assert fewest[0] >= 1, "minimumHealthCapacity 0.5: one instance stays up during the upgrade"
            assert {t["host"] for t in m.running(SELF)} == {s.host for s in SLAVES}
            wait_for(lambda: in_sync(m, APP, 2) and in_sync(m, "/web/customer2/site2", 1), 40,
                     what="every change in Consul after the upgrade")
            upgraded = [http("GET", f"{m.url}/v2/apps{SELF}")[1]["app"]["container"]["docker"]["image"]]
            assert upgraded == [new_image]

        print(f"\nwriter killed -> writes resumed: {takeover:.1f} s; "
              f"dig polls {poll.polls}, empty answers {poll.empty}")
        assert poll.polls > 50
        assert poll.empty == 0

        # 3. scale to 0: SIGTERM ends each instance well within the kill grace period and frees the lock
        stopped, codes = scale_to_zero(m)
        assert codes == ["0", "0"]
        assert lock_holder(m) is None, "the lock was not released"
        m.scale(APP, 3)  # a change nobody sees now
        # 4. back to 2: the new writer's resync converges
        m.scale(SELF, 2)
        wait_for(lambda: writer(m) is not None, 60, interval=0.5, what="a writer after scaling back")
        wait_for(lambda: in_sync(m, APP, 3), 40, what="resync converges")
        print(f"scale to 0: instances gone in {stopped:.1f} s (grace {DEPLOY['taskKillGracePeriodSeconds']} s)")
