"""The test world end to end on the real Docker engines: the Marathon simulator launches, scales,
kills and replaces real containers on both slaves, and delivers events over SSE and callbacks."""

from __future__ import annotations

import re
import time
import urllib.request

import docker

from devcluster.topology import SLAVES
from tests.devcluster.marathon_sim_fixtures import *  # noqa: F403  (fixtures: sim10, sim14)
from tests.devcluster.marathon_sim_fixtures import Receiver, Sim, containers_of, sse, web_app
from tests.helpers import http, wait_for
from tests.registrar_fixtures import overlay_ip

SLAVE = {s.host: s for s in SLAVES}
UUID4_NAME = re.compile(r"/mesos-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}")


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode().strip()


def inspect(task: dict) -> dict:
    client = docker.DockerClient(base_url=SLAVE[task["host"]].docker_local_url)
    try:
        [summary] = client.api.containers(filters={"label": f"MESOS_TASK_ID={task['id']}"})
        return client.api.inspect_container(summary["Id"])
    finally:
        client.close()


def test_deploy_scale_fail_delete_on_both_slaves(sim10: Sim) -> None:
    app_id = "/e2e/customer1/site1"
    with sse(f"{sim10.url}/v2/events?event_type=status_update_event&event_type=app_terminated_event") as events:
        started = time.monotonic()
        status, body = sim10.post_app(web_app(app_id, 3, env={"SITE": "site1"}, labels={"consul.name": "web"}))
        assert status == 201, body
        tasks = sim10.running(app_id, 3)
        assert time.monotonic() - started < 10
        assert {t["host"] for t in tasks} == {s.host for s in SLAVES}  # spread over the three slaves

        for task in tasks:
            slave = SLAVE[task["host"]]
            info = inspect(task)
            env = dict(e.split("=", 1) for e in info["Config"]["Env"])
            assert UUID4_NAME.fullmatch(info["Name"])
            assert info["Config"]["Labels"]["MESOS_TASK_ID"] == task["id"]
            assert env["MESOS_TASK_ID"] == task["id"] and env["MARATHON_APP_ID"] == app_id
            assert env["MESOS_CONTAINER_NAME"] == info["Name"][1:] and env["HOST"] == slave.host
            assert env["PORT0"] == env["PORT"] == env["PORT_80"] == str(task["ports"][0])
            assert env["MARATHON_APP_LABEL_CONSUL_NAME"] == "web" and env["SITE"] == "site1"
            assert info["HostConfig"]["NetworkMode"] == slave.overlay_network
            [binding] = info["NetworkSettings"]["Ports"]["80/tcp"]
            assert binding == {"HostIp": slave.host, "HostPort": str(task["ports"][0])}
            ip = info["NetworkSettings"]["Networks"][slave.overlay_network]["IPAddress"]
            assert task["ipAddresses"] == [{"ipAddress": ip, "protocol": "IPv4"}]  # what Docker knows
            if slave.layout == "proxy":  # docker0's; the overlay IP is on ethwe, unknown to Docker
                assert ip.startswith("172.17.") and info["Config"]["Entrypoint"][0] == "/w/w"
                ip = overlay_ip(task)
            assert ip.startswith("10.32.")
            # on the overlay, natural port; behind the proxy's /w/w the command starts only once ethwe is
            # attached (TASK_RUNNING comes before), so httpd may not listen yet when ethwe appears
            wait_for(lambda ip=ip: get(f"http://{ip}:80/") == "ok", 10, what=f"httpd on {ip}:80")
            assert get(f"http://{slave.host}:{task['ports'][0]}/") == "ok"  # on the slave's host port

        # scale to 1: two tasks go TASK_KILLING -> TASK_KILLED, their containers disappear
        assert http("PUT", f"{sim10.url}/v2/apps{app_id}", {"instances": 1})[0] == 200
        killed = [events.next("status_update_event", 10, taskStatus="TASK_KILLED")["taskId"] for _ in range(2)]
        states = {}
        for name, d in events.seen:
            if name == "status_update_event" and d["taskId"] in killed:
                states.setdefault(d["taskId"], []).append(d["taskStatus"])
        assert all(s[-2:] == ["TASK_KILLING", "TASK_KILLED"] for s in states.values()), states
        [survivor] = sim10.running(app_id, 1)
        wait_for(lambda: len(containers_of(sim10.pid)) == 1, 10,
                 what=f"one container left, not {[c['Names'] for _, c in containers_of(sim10.pid)]}")

        # a container killed behind Marathon's back: TASK_FAILED, then a replacement after the back-off
        client = docker.DockerClient(base_url=SLAVE[survivor["host"]].docker_local_url)
        try:
            client.containers.get(inspect(survivor)["Id"]).kill()
        finally:
            client.close()
        failed = events.next("status_update_event", 10, taskId=survivor["id"], taskStatus="TASK_FAILED")
        assert failed["message"] == "Container exited with status 137"
        replacement = events.next("status_update_event", 15, taskStatus="TASK_RUNNING")
        assert replacement["taskId"] != survivor["id"]
        [task] = sim10.running(app_id, 1)
        assert task["id"] == replacement["taskId"]
        assert "lastTaskFailure" in http("GET", f"{sim10.url}/v2/apps{app_id}")[1]["app"]

        # delete: everything killed, app_terminated_event, no container left
        assert http("DELETE", f"{sim10.url}/v2/apps{app_id}")[0] == 200
        events.next("status_update_event", 10, taskId=task["id"], taskStatus="TASK_KILLED")
        events.next("app_terminated_event", 10, appId=app_id)
        assert not any(d["taskStatus"] == "TASK_FAILED" for n, d in events.seen
                       if n == "status_update_event" and d["taskId"] != survivor["id"])
    assert http("GET", f"{sim10.url}/v2/apps{app_id}")[0] == 404
    wait_for(lambda: not containers_of(sim10.pid), 10, what="no containers left")


def test_user_network_and_host_networking(sim10: Sim) -> None:
    status, body = sim10.post_app(web_app("/e2e/user", 1, network="USER"))
    assert status == 201, body
    status, body = sim10.post_app(web_app("/e2e/host", 1, network="HOST",
                                          cmd="exec httpd -f -p $PORT0 -h /", portDefinitions=[{"port": 0}]))
    assert status == 201, body
    [user] = sim10.running("/e2e/user", 1)
    assert user["ports"] == []  # no hostPort on a container network
    ip = user["ipAddresses"][0]["ipAddress"]
    assert ip.startswith("10.32.") and get(f"http://{ip}:80/") == "ok"
    assert dict(e.split("=", 1) for e in inspect(user)["Config"]["Env"])["PORT0"] == "80"
    [host] = sim10.running("/e2e/host", 1)
    assert host["ipAddresses"] == [{"ipAddress": host["host"], "protocol": "IPv4"}]  # the agent fills its IP
    assert inspect(host)["HostConfig"]["NetworkMode"] == "host"
    for app_id in ("/e2e/user", "/e2e/host"):
        assert http("DELETE", f"{sim10.url}/v2/apps{app_id}")[0] == 200
    wait_for(lambda: not containers_of(sim10.pid), 10, what="no containers left")


def test_missing_user_network_fails_the_task(sim10: Sim) -> None:
    body = web_app("/e2e/nonet", 1)
    body["networks"] = [{"mode": "container", "name": "no-such-net"}]
    with sse(f"{sim10.url}/v2/events?event_type=status_update_event") as events:
        assert sim10.post_app(body)[0] == 201
        failed = events.next("status_update_event", 10, taskStatus="TASK_FAILED")
        assert "no-such-net" in failed["message"]
    assert http("DELETE", f"{sim10.url}/v2/apps/e2e/nonet")[0] == 200


def test_callbacks_on_14_with_backoff(sim14: Sim) -> None:
    receiver = Receiver()
    sub = f"{sim14.url}/v2/eventSubscriptions?callbackUrl={receiver.url}"
    try:
        assert http("POST", sub, raw=b"")[0] == 200
        wait_for(lambda: "subscribe_event" in receiver.types(), 5, what="subscribe_event delivered")
        _, headers, _ = receiver.posts[0]
        assert headers["Content-Type"] == "application/json; charset=UTF-8"
        assert headers["Accept"] == "application/json"

        # a deployment's events arrive by callback, legacy task ids on 1.4
        assert sim14.post_app(web_app("/e2e/cb", 1, version="1.4"))[0] == 201
        sim14.running("/e2e/cb", 1)
        running = wait_for(lambda: [p[2] for p in receiver.posts if p[2].get("taskStatus") == "TASK_RUNNING"], 5)
        assert re.fullmatch(r"e2e_cb\.[0-9a-f-]{36}", running[0]["taskId"])
        assert http("DELETE", f"{sim14.url}/v2/apps/e2e/cb")[0] == 200
        wait_for(lambda: "app_terminated_event" in receiver.types(), 10, what="app_terminated_event delivered")

        # 500: the URL is skipped for 2 s, events in that window are dropped for it.
        # Opening an event stream publishes one event (event_stream_attached); the stream stays open
        # until that one failure is recorded, so the detached event on close falls in the window
        # (two events in flight at once would both fail, as on Marathon, and make it 4 s).
        receiver.status = 500
        n = len(receiver.posts)
        with sse(f"{sim14.url}/v2/events"):
            failed_at = wait_for(lambda: len(receiver.posts) > n and receiver.posts[n][0], 5, what="the failing POST")
            state = wait_for(lambda: [s for s in http("GET", f"{sim14.url}/_sim/subscribers")[1]["subscribers"]
                                      if s["callbackUrl"] == receiver.url and s["consecutiveFailures"] == 1], 5,
                             what="one failure recorded")[0]
        assert 0 < state["skippedForSeconds"] <= 2
        receiver.status = 200
        time.sleep(0.2)
        assert len(receiver.posts) == n + 1  # the detached event on close was dropped, not posted
        n = len(receiver.posts)
        with sse(f"{sim14.url}/v2/events"):
            pass
        time.sleep(0.3)
        assert time.monotonic() - failed_at < 2
        assert len(receiver.posts) == n  # dropped, not queued
        wait_for(lambda: http("GET", f"{sim14.url}/_sim/subscribers")[1]["subscribers"][0]["skippedForSeconds"] == 0,
                 4, what="the back-off window to end")
        with sse(f"{sim14.url}/v2/events"):
            pass
        wait_for(lambda: len(receiver.posts) > n, 5, what="delivery after the back-off")
        assert receiver.posts[n][0] - failed_at >= 2
        state = http("GET", f"{sim14.url}/_sim/subscribers")[1]["subscribers"]
        assert state[0]["consecutiveFailures"] == 0 and state[0]["dropped"] >= 1
    finally:
        http("DELETE", sub)
        receiver.close()
