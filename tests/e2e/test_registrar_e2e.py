"""The registrar end to end on the real Docker slaves, against Marathon 1.10 (SSE) and 1.4 (callbacks).

What an operator checks after deploying /web/customer1/site1: Consul holds one `web` instance per
task, at the container's overlay IP and port 80, registered in the agent of the task's own slave,
with its check on the slave's mapped host port; DNS resolves the natural name; scaling, deleting
and containers dying behind Marathon's back are all reflected.
"""

from __future__ import annotations

import docker

from devcluster.topology import SLAVES
from tests.helpers import http, wait_for
from tests.registrar_fixtures import (
    NODE_OF_HOST,
    Marathon,
    consul_instances,
    dig,
    managed_instances,
    overlay_ip,
    start_registrar,
)

APP = "/web/customer1/site1"


def _expected(m: Marathon) -> dict[str, dict]:
    """task id -> what Consul should show for it, from Marathon and Docker (not from the registrar)."""
    return {t["id"]: {"ip": overlay_ip(t), "host": t["host"], "host_port": t["ports"][0]} for t in m.running(APP)}


def _consul_matches(m: Marathon, expected_count: int) -> dict[str, dict] | None:
    expected = _expected(m)
    if len(expected) != expected_count:
        return None
    instances = consul_instances("web")
    got = {i["Service"]["Meta"]["marathon-task-id"]: i for i in instances}
    if set(got) != set(expected):
        return None
    return {tid: got[tid] for tid in expected} if all(
        got[tid]["Service"]["Address"] == e["ip"] for tid, e in expected.items()) else None


def test_deploy_scale_kill_delete(marathon: Marathon) -> None:
    registrar = start_registrar(marathon.url)
    try:
        marathon.deploy(APP, 3)
        got = wait_for(lambda: _consul_matches(marathon, 3), 30, what="3 instances of web in Consul")
        expected = _expected(marathon)
        assert {e["host"] for e in expected.values()} == {s.host for s in SLAVES}, "tasks should span both slaves"
        for tid, inst in got.items():
            svc, e = inst["Service"], expected[tid]
            assert svc["Service"] == "web"
            assert sorted(svc["Tags"]) == ["customer1", "site1.customer1"]
            assert svc["Address"] == e["ip"] and svc["Port"] == 80
            assert inst["Node"]["Node"] == NODE_OF_HOST[e["host"]], "registered at the agent of its own slave"
            assert svc["Meta"]["managed-by"] == "marathon-consul-registrar"
            assert svc["Meta"]["marathon-app-id"] == APP
            [check] = [c for c in inst["Checks"] if c["ServiceID"] == svc["ID"]]
            # health goes through the task's mapped host port on its slave, not the overlay
            assert check["Definition"]["HTTP"] == f"http://{e['host']}:{e['host_port']}/"
        # checks go through the host port and pass once the container answers
        wait_for(lambda: all(c["Status"] == "passing" for i in consul_instances("web") for c in i["Checks"]),
                 30, what="all web checks passing")
        ips = sorted(e["ip"] for e in expected.values())
        assert wait_for(lambda: dig("site1.customer1.web.service.dc1.consul") == ips and ips, 15,
                        what="dig answers the 3 overlay IPs") == ips
        assert dig("customer1.web.service.consul") == ips

        marathon.scale(APP, 1)
        wait_for(lambda: _consul_matches(marathon, 1), 30, what="scale to 1 leaves 1 instance in Consul")

        [task] = marathon.running(APP)
        slave = next(s for s in SLAVES if s.host == task["host"])
        client = docker.DockerClient(base_url=slave.docker_local_url)
        try:
            [c] = client.api.containers(filters={"label": f"MESOS_TASK_ID={task['id']}"})
            client.api.kill(c["Id"])
        finally:
            client.close()
        # Marathon replaces the failed task; Consul must follow: the old one gone, the new one there
        wait_for(lambda: (r := _consul_matches(marathon, 1)) and task["id"] not in r, 40,
                 what="killed container's registration replaced by its successor's")

        marathon.delete(APP)
        wait_for(lambda: not managed_instances(), 30, what="delete leaves no registration")
        assert dig("site1.customer1.web.service.dc1.consul") == []
    finally:
        registrar.process.stop()


BAD_BODIES = [
    (b"", 400, "not-json"),
    (b"{not json", 400, "not-json"),
    (b"\xff\xfe", 400, "not-utf8"),  # a body that is not UTF-8 says so (issue 9)
    (b"[]", 400, None),
    (b'"status_update_event"', 400, None),
    (b"{}", 400, None),
    (b'{"eventType": 5}', 400, None),
    (b'{"eventType": "status_update_event"}', 400, None),
    (b'{"eventType": "status_update_event", "taskId": 7, "appId": "/x", "taskStatus": "TASK_RUNNING"}', 400, None),
    (b'{"eventType": "app_terminated_event"}', 400, None),
    (b'{"eventType": "some_future_event", "timestamp": "2026-01-01T00:00:00.000Z"}', 200, None),
    (b"x" * (4 * 1024 * 1024 + 10), 413, "too-large"),
]


def test_bad_callback_bodies_change_nothing(marathon14: Marathon) -> None:
    """A table of malformed callback bodies, each answered with its status and a message naming the
    problem; the registrar keeps running and Consul's registrations stay exactly as they were."""
    registrar = start_registrar(marathon14.url)
    try:
        marathon14.deploy(APP, 2, health=False)
        wait_for(lambda: _consul_matches(marathon14, 2), 30, what="2 instances registered")
        before = sorted((s["ID"], s["Address"], s["Port"]) for s in managed_instances())
        failures = []
        for body, status, reason in BAD_BODIES:
            got_status, got_body = registrar.post_event(body, "text/plain")
            ok = got_status == status
            if status >= 400:
                ok = ok and isinstance(got_body, dict) and bool(got_body.get("message"))
                ok = ok and (reason is None or got_body.get("error") == reason)
            if not ok:
                failures.append((body[:60], status, reason, got_status, got_body))
        assert not failures, failures
        assert registrar.process.alive()
        after = sorted((s["ID"], s["Address"], s["Port"]) for s in managed_instances())
        assert after == before
    finally:
        registrar.process.stop()
    # it subscribed itself at start and a clean shutdown (SIGTERM) unsubscribed it
    assert f"{registrar.url}/v1/events" not in subscriptions(marathon14)


def subscriptions(m: Marathon) -> list[str]:
    status, body, _ = http("GET", f"{m.url}/v2/eventSubscriptions", headers={"Content-Type": "application/json"})
    assert status == 200, (status, body)
    return body["callbackUrls"]


def test_subscribes_at_start_and_unsubscribes_on_sigterm(marathon14: Marathon) -> None:
    registrar = start_registrar(marathon14.url)
    try:
        assert subscriptions(marathon14) == [f"{registrar.url}/v1/events"]
    finally:
        assert registrar.process.stop() == 0, registrar.process.tail()
    assert subscriptions(marathon14) == []
