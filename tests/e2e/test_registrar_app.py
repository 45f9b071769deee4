"""The registrar deployed from deploy/marathon.json, unchanged, as real containers on the slaves
(tests/registrar_app.py says how the JSON reaches the simulator): it runs on both API generations,
and it survives what Marathon does to its apps (a killed container, a rolling upgrade, scaling to 0)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from devcluster.image import NAME, project_version
from devcluster.topology import SLAVES
from tests.helpers import ROOT, http, wait_for
from tests.registrar_app import (
    APP,
    DEPLOY,
    DNS_NAME,
    SELF,
    deploy_json,
    deployed,
    dns_answers,
    image,
    in_sync,
    lock_holder,
    own_marathon,
    put,
    registered,
    roles,
    start_registrar_app,
    urls,
    writer,
)
from tests.registrar_fixtures import Marathon, dig, reset_consul

__all__ = ["image"]  # the fixture


@pytest.mark.parametrize("version", ["1.10", "1.4"])
def test_deploy_json_runs_as_the_app(image: str, version: str) -> None:
    reset_consul()
    with own_marathon(version) as m:
        start_registrar_app(m)
        tasks = m.running(SELF)
        assert len({t["host"] for t in tasks}) == len(tasks) == 2  # hostname:UNIQUE, 2 of the 3 slaves
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
    """A second tag of the locally built image on every slave, for a rolling upgrade; untagged after."""
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
            container = deploy_json()["container"]
            body = {"container": {**container, "docker": {**container["docker"], "image": new_image}}}
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
            hosts = [t["host"] for t in m.running(SELF)]
            assert len(set(hosts)) == len(hosts) == 2, hosts  # hostname:UNIQUE
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


def test_demo_as_app(image: str) -> None:
    """`scripts/demo --as-app` (its Python part, against a simulator of the test's own)."""
    reset_consul()
    with own_marathon("1.10") as m:
        out = subprocess.run([sys.executable, "-m", "devcluster.demo", "--as-app", "--marathon", m.url],
                             capture_output=True, text=True, timeout=150, cwd=ROOT)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "registrar running as the Marathon app" in out.stdout
        answer = out.stdout.split("+short\n", 1)[1].split("\n\n", 1)[0].split()
        assert sorted(answer) == sorted(registered(APP).values()) and len(answer) == 3
        assert "hello from" in out.stdout
        assert sorted(roles(m).values()) == ["standby", "writer"]
