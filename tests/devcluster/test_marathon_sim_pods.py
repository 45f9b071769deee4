"""The simulator's pods API against shared/reference/marathon-pods-api.md and marathon-ucr-pods.md §2:
status codes, headers and messages, the normalized pod, pod status with the instance's overlay
address, one network namespace per instance, the pod events on SSE (1.10) and callbacks (1.4),
and faults on the new endpoints. Pods run on the world's CNI slave (slave 4)."""

from __future__ import annotations

import ipaddress
import urllib.request
from typing import Any

import docker

from devcluster.topology import CNI_RANGE, CNI_SLAVE, SLAVES
from tests.devcluster.marathon_sim_fixtures import *  # noqa: F403  (fixtures: sim10, sim14)
from tests.devcluster.marathon_sim_fixtures import Receiver, Sim, sse
from tests.helpers import http, wait_for

WEB = "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 80 -h /www"
SIDE = "mkdir -p /m && echo metrics > /m/index.html && exec httpd -f -p 9000 -h /m"


def pod(pod_id: str, **extra: Any) -> dict[str, Any]:
    """Two containers, two endpoints: `http` with an allocated host port, `metrics` without."""
    body: dict[str, Any] = {
        "id": pod_id,
        "containers": [
            {"name": "web", "resources": {"cpus": 0.1, "mem": 32}, "image": {"kind": "DOCKER", "id": "local/busybox:1"},
             "exec": {"command": {"shell": WEB}},
             "endpoints": [{"name": "http", "containerPort": 80, "hostPort": 0}],
             "healthCheck": {"http": {"endpoint": "http", "path": "/"}, "delaySeconds": 0, "intervalSeconds": 1}},
            {"name": "side", "resources": {"cpus": 0.1, "mem": 32},
             "image": {"kind": "DOCKER", "id": "local/busybox:1"}, "exec": {"command": {"shell": SIDE}},
             "endpoints": [{"name": "metrics", "containerPort": 9000}]},
        ],
        "networks": [{"mode": "container", "name": "weave"}],
    }
    body.update(extra)
    return body


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=3) as resp:
        return str(resp.read().decode().strip())


def stable(sim: Sim, pod_id: str, timeout: float = 20) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        status, body, _ = http("GET", f"{sim.url}/v2/pods{pod_id}::status")
        ok = status == 200 and body["status"] == "STABLE" and body["instances"] and all(
            c["conditions"] for c in body["instances"][0]["containers"] if c["name"] == "web")
        return body if ok else None
    return wait_for(ready, timeout, what=f"{pod_id} stable and health-checked")  # type: ignore[no-any-return]


def test_head_and_missing_pods_answer_as_marathon(sim10: Sim, sim14: Sim) -> None:
    for sim in (sim10, sim14):
        status, body, _ = http("HEAD", f"{sim.url}/v2/pods")
        assert (status, body) == (200, None)
    details = {"details": []}
    for sim, extra in ((sim10, details), (sim14, {})):
        status, body, _ = http("GET", f"{sim.url}/v2/pods/nope")
        assert (status, body) == (404, {"message": '{"message": "pod with /nope does not exist"}', **extra})
        for method, path in (("GET", "/v2/pods/nope::status"), ("DELETE", "/v2/pods/nope"),
                             ("GET", "/v2/pods/nope::versions")):
            status, body, _ = http(method, f"{sim.url}{path}")
            assert (status, body) == (404, {"message": "Pod '/nope' does not exist", **extra}), path
        assert http("GET", f"{sim.url}/v2/pods/::status")[:2] == (200, [])


def test_validation_answers(sim10: Sim) -> None:
    cases = [
        ({"id": "/v", "containers": []}, "Invalid JSON", {"path": "/containers", "errors": ["error.minLength"]}),
        ({"id": "/v"}, "Invalid JSON", {"path": "/containers", "errors": ["error.path.missing"]}),
        (pod("/Bad_Pod"), "Invalid JSON", {"path": "/id", "errors": ["error.pattern"]}),
        (pod("relative"), "Object is not valid", {"path": "/id", "errors": ["Path needs to be absolute"]}),
        (pod("/v", containers=[{**pod("/v")["containers"][0], "endpoints": [{"name": "http"}], "healthCheck": None}]),
         "Object is not valid", {"path": "/containers(0)/endpoints(0)/containerPort",
                                 "errors": ["is required when using container-mode networking"]}),
        (pod("/v", containers=[pod("/v")["containers"][1], {**pod("/v")["containers"][1], "name": "other"}]),
         "Object is not valid", {"path": "/", "errors": ["endpoint names nust be unique across all containers",
                                                         "container ports must be unique across all containers"]}),
        (pod("/v", networks=[{"mode": "host"}, {"mode": "container", "name": "weave"}]), "Object is not valid",
         {"path": "/networks", "errors": ["May specify a single host network, single bridge network, or else "
                                          "1-to-n container networks"]}),
    ]
    for body, message, detail in cases:
        status, answer, _ = http("POST", f"{sim10.url}/v2/pods", body)
        assert status == 422 and answer["message"] == message and detail in answer["details"], (body, answer)
    assert http("GET", f"{sim10.url}/v2/pods")[1] == []  # nothing was created


def test_pod_lifecycle_status_events_and_shared_namespace(sim10: Sim) -> None:
    with sse(f"{sim10.url}/v2/events") as events:
        status, body, headers = http("POST", f"{sim10.url}/v2/pods", pod("/pods/web"))
        assert status == 201 and headers["Location"].endswith("/pods/web") and headers["Marathon-Deployment-Id"]
        web, side = body["containers"]
        assert web["endpoints"][0]["hostPort"] == 0 and "hostPort" not in side["endpoints"][0]  # container mode
        assert body["version"] and body["scaling"] == {"kind": "fixed", "instances": 1}
        assert body["executorResources"] == {"cpus": 0.1, "mem": 32, "disk": 10} and body["role"] == "*"
        assert body["networks"] == [{"name": "weave", "mode": "container", "labels": {}}]
        assert http("POST", f"{sim10.url}/v2/pods", pod("/pods/web"))[:2] == (
            409, {"message": "A pod with id [/pods/web] already exists."})
        created = events.next("pod_created_event")
        assert created["uri"] == "/v2/pods" and set(created) == {"clientIp", "uri", "eventType", "timestamp"}

        st = stable(sim10, "/pods/web")
        [inst] = st["instances"]
        assert inst["agentHostname"] == CNI_SLAVE.host and inst["id"].startswith("pods_web.instance-")
        [net] = inst["networks"]
        assert net["name"] == "weave" and len(net["addresses"]) == 1
        ip = net["addresses"][0]
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(CNI_RANGE)
        by_name = {c["name"]: c for c in inst["containers"]}
        assert by_name["web"]["containerId"] == f"{inst['id']}.web" and by_name["web"]["status"] == "TASK_RUNNING"
        [http_ep] = by_name["web"]["endpoints"]
        assert http_ep["healthy"] is True and 31000 <= http_ep["allocatedHostPort"] <= 32000
        assert by_name["side"]["endpoints"] == [{"name": "metrics"}]  # no host port: the name only
        assert inst["resources"] == {"cpus": 0.3, "mem": 96, "disk": 10, "gpus": 0}  # containers + executor
        assert inst["specReference"] == f"/v2/pods/pods/web::versions/{body['version']}"
        assert http("GET", f"{sim10.url}/v2/pods/pods/web::versions")[1] == [body["version"]]
        # one network namespace: both containers answer on the instance's one overlay address, from the host
        assert get(f"http://{ip}:80/") == "ok" and get(f"http://{ip}:9000/") == "metrics"
        assert get(f"http://{CNI_SLAVE.host}:{http_ep['allocatedHostPort']}/") == "ok"

        update = events.next("status_update_event", taskId=f"{inst['id']}.side", taskStatus="TASK_RUNNING")
        assert update["appId"] == "/pods/web" and update["host"] == CNI_SLAVE.host
        assert update["ipAddresses"] == [{"ipAddress": ip, "protocol": "IPv4"}] and update["ports"] == []
        changed = events.next("instance_changed_event", instanceId=inst["id"], condition="Running")
        assert changed["runSpecId"] == "/pods/web"

        # pods are not apps, and no Docker API of the Docker slaves knows their containers
        assert http("GET", f"{sim10.url}/v2/apps/pods/web")[:2] == (404, {"message": "App '/pods/web' does not exist"})
        assert not [t for t in http("GET", f"{sim10.url}/v2/tasks")[1]["tasks"] if t["appId"] == "/pods/web"]
        for s in SLAVES:
            client = docker.DockerClient(base_url=s.docker_local_url)
            assert not client.api.containers(filters={"label": f"MESOS_TASK_ID={inst['id']}.web"})
            client.close()

        status, body, headers = http("DELETE", f"{sim10.url}/v2/pods/pods/web")
        assert (status, body) == (202, None) and headers["Location"].endswith(headers["Marathon-Deployment-Id"])
        assert events.next("pod_deleted_event")["uri"] == "/v2/pods/pods/web"
        events.next("instance_changed_event", instanceId=inst["id"], condition="Killed")
        events.next("app_terminated_event", appId="/pods/web")
        wait_for(lambda: http("GET", f"{sim10.url}/v2/pods/pods/web")[0] == 404, 10, what="pod gone")


def test_host_networked_pod_and_callbacks_14(sim14: Sim) -> None:
    receiver = Receiver()
    try:
        assert http("POST", f"{sim14.url}/v2/eventSubscriptions?callbackUrl={receiver.url}",
                    headers={"Content-Type": "application/json"})[0] == 200
        body = pod("/hostpod", networks=[{"mode": "host"}])
        body["containers"] = [{**body["containers"][0], "endpoints": [{"name": "http", "hostPort": 0}],
                               "exec": {"command": {"shell": "mkdir -p /w && echo ok > /w/index.html && "
                                                             "exec httpd -f -p $ENDPOINT_HTTP -h /w"}}}]
        status, created, _ = http("POST", f"{sim14.url}/v2/pods", body)
        assert status == 201 and created["containers"][0]["endpoints"][0]["hostPort"] == 0
        st = stable(sim14, "/hostpod")
        [inst] = st["instances"]
        assert inst["networks"] == [] and "role" not in inst  # host networking: no CNI network to report
        port = inst["containers"][0]["endpoints"][0]["allocatedHostPort"]
        assert get(f"http://{CNI_SLAVE.host}:{port}/") == "ok"
        wait_for(lambda: "pod_created_event" in receiver.types(), 10, what="pod_created_event by callback")
        wait_for(lambda: any(p[2].get("eventType") == "instance_changed_event" and p[2]["runSpecId"] == "/hostpod"
                             for p in receiver.posts), 10, what="instance_changed_event by callback")
        assert http("DELETE", f"{sim14.url}/v2/pods/hostpod")[0] == 202
        wait_for(lambda: "pod_deleted_event" in receiver.types(), 10, what="pod_deleted_event by callback")
    finally:
        http("DELETE", f"{sim14.url}/v2/eventSubscriptions?callbackUrl={receiver.url}",
             headers={"Content-Type": "application/json"})
        receiver.close()


def test_faults_reach_the_pod_endpoints(sim10: Sim) -> None:
    rule = {"path": "^/v2/pods/::status$", "status": 503, "method": "GET"}
    status, body, _ = http("POST", f"{sim10.url}/_sim/faults", rule)
    assert status in (200, 201), body
    try:
        status, text, _ = http("GET", f"{sim10.url}/v2/pods/::status")
        assert status == 503 and "Could not determine the current leader" in text
        assert http("HEAD", f"{sim10.url}/v2/pods")[0] == 200  # only the matching path is faulted
    finally:
        http("DELETE", f"{sim10.url}/_sim/faults")
    assert http("GET", f"{sim10.url}/v2/pods/::status")[:2] == (200, [])
