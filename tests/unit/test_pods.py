"""Pod status JSON (shaped as reference/marathon-ucr-pods.md §2.2 and marathon-pods-api.md §1.6 give it)
-> App + instance Tasks -> exact Consul registrations; malformed pods are reported and skipped (issue 19)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from service.desired import RegistrationPolicy, desired_registrations
from service.marathon.events import AppEvent, InstanceEvent, TaskEvent, parse_event
from service.marathon.pods import pod_status_from_json, pod_statuses_from_json
from service.model import AddressMode, Naming, NetworkMode, Registration, RunSpecKind, Skip, TaskState

HOST = "agent-1.example.com"
INSTANCE = "web-pod.instance-6b9f2c1e-8f0a-11e7-9e5e-0242ac110002"


def web_pod() -> dict[str, Any]:
    """Reference §2.2's running pod: two containers (nginx with two endpoints, and a sidecar), on weave."""
    return {
        "id": "/web-pod",
        "spec": {
            "id": "/web-pod", "version": "2017-09-01T09:59:58Z", "labels": {"consul.tags": "edge"},
            "networks": [{"mode": "container", "name": "weave"}],
            "containers": [
                {"name": "nginx", "resources": {"cpus": 0.1, "mem": 32},
                 "endpoints": [{"name": "http", "containerPort": 80, "hostPort": 0, "protocol": ["tcp"]},
                               {"name": "metrics", "containerPort": 9113}],
                 "healthCheck": {"http": {"endpoint": "http", "path": "/ping", "scheme": "HTTP"},
                                 "intervalSeconds": 5, "timeoutSeconds": 2}},
                {"name": "sidecar", "resources": {"cpus": 0.1, "mem": 16},
                 "healthCheck": {"exec": {"command": {"shell": "true"}}}},
            ],
        },
        "status": "STABLE", "statusSince": "2017-09-01T10:00:06Z",
        "instances": [{
            "id": INSTANCE, "status": "STABLE", "statusSince": "2017-09-01T10:00:06Z",
            "agentHostname": HOST, "agentId": "a1b2-S1",
            "networks": [{"name": "weave", "addresses": ["10.32.0.7"]}],
            "containers": [
                {"name": "nginx", "status": "TASK_RUNNING", "statusSince": "2017-09-01T10:00:05Z",
                 "containerId": f"{INSTANCE}.nginx",
                 "endpoints": [{"name": "http", "allocatedHostPort": 31042, "healthy": True}, {"name": "metrics"}],
                 "conditions": [{"name": "healthy", "value": "true", "reason": "health-reported-by-mesos"}],
                 "lastUpdated": "2017-09-01T10:00:05Z", "lastChanged": "2017-09-01T10:00:05Z"},
                {"name": "sidecar", "status": "TASK_RUNNING", "statusSince": "2017-09-01T10:00:05Z",
                 "containerId": f"{INSTANCE}.sidecar", "endpoints": [],
                 "conditions": [{"name": "healthy", "value": "false"}]},
            ],
            "specReference": "/v2/pods/web-pod::versions/2017-09-01T09:59:58Z",
            "lastUpdated": "2017-09-01T10:00:06Z", "lastChanged": "2017-09-01T10:00:06Z"}],
        "lastUpdated": "2017-09-01T10:00:06Z", "lastChanged": "2017-09-01T10:00:06Z",
    }


def registrations(pod: dict[str, Any], mode: AddressMode = AddressMode.AUTO) -> list[Registration] | Skip:
    app, [instance] = pod_status_from_json(pod)
    return desired_registrations(app, instance, None, RegistrationPolicy(naming=Naming.DNS, address_mode=mode,
                                                                         networks=("weave",), cluster_id="fw-1"))


def test_pod_parses_into_app_and_instance():
    app, [instance] = pod_status_from_json(web_pod())
    assert (app.id, app.kind, app.network_mode, app.mesos_containerizer) == (
        "/web-pod", RunSpecKind.POD, NetworkMode.USER, True)
    assert [(m.name, m.container_port, m.host_port, m.container) for m in app.port_mappings] == [
        ("http", 80, 0, "nginx"), ("metrics", 9113, None, "nginx")]
    assert [(h.protocol, h.path, h.port_index, h.container) for h in app.health_checks] == [
        ("MESOS_HTTP", "/ping", 0, "nginx"), ("COMMAND", "/", 0, "sidecar")]
    assert (instance.id, instance.host, instance.state, instance.ports) == (INSTANCE, HOST, "TASK_RUNNING", (31042,))
    assert instance.named_ips == (("weave", "10.32.0.7"),)
    assert instance.health == (True, False)


def test_pod_registers_each_endpoint_at_the_instance_address():
    regs = registrations(web_pod())
    assert isinstance(regs, list)
    assert [(r.name, r.tags, r.address, r.port, r.agent_host) for r in regs] == [
        ("web-pod", ("edge",), "10.32.0.7", 80, HOST), ("web-pod-metrics", ("edge",), "10.32.0.7", 9113, HOST)]
    http, metrics = regs
    assert http.meta_dict == {
        "managed-by": "marathon-consul-registrar", "marathon-app-id": "/web-pod", "marathon-task-id": INSTANCE,
        "marathon-host": HOST, "port-index": "0", "address-source": "overlay", "marathon-cluster-id": "fw-1",
        "marathon-pod-instance": INSTANCE, "pod-container": "nginx", "pod-endpoint": "http"}
    assert metrics.meta_get("pod-endpoint") == "metrics"
    # the HTTP check goes to the host port of its endpoint; the exec check is mirrored as a TTL
    assert [c.http for c in http.checks if c.http] == [f"http://{HOST}:31042/ping"]
    assert [c.kind for c in http.checks] == ["http", "ttl"]
    assert [c.kind for c in metrics.checks] == ["ttl"]


def test_pod_address_is_picked_by_network_name_inside_the_overlay():
    pod = web_pod()
    pod["instances"][0]["networks"] = [{"name": "other", "addresses": ["10.32.5.5"]},
                                       {"name": "weave", "addresses": ["10.32.0.7"]}]
    regs = registrations(pod)
    assert isinstance(regs, list) and {r.address for r in regs} == {"10.32.0.7"}
    pod["instances"][0]["networks"] = [{"name": "other", "addresses": ["192.168.0.9"]}]
    result = registrations(pod, AddressMode.OVERLAY)
    assert isinstance(result, Skip) and result.reason == "address-outside-overlay" and result.retry


def test_pod_on_host_networking_registers_host_and_allocated_port():
    pod = web_pod()
    pod["spec"]["networks"] = [{"mode": "host"}]
    for ep in pod["spec"]["containers"][0]["endpoints"]:
        ep.pop("containerPort")
        ep["hostPort"] = 0
    pod["instances"][0]["networks"] = []
    pod["instances"][0]["containers"][0]["endpoints"] = [{"name": "http", "allocatedHostPort": 31042},
                                                         {"name": "metrics", "allocatedHostPort": 31043}]
    regs = registrations(pod)
    assert isinstance(regs, list)
    assert [(r.address, r.port, r.meta_get("address-source")) for r in regs] == [(HOST, 31042, "host"),
                                                                                  (HOST, 31043, "host")]


def test_host_port_not_allocated_yet_is_waited_for_never_shifted():
    pod = web_pod()
    pod["spec"]["containers"][0]["endpoints"][1]["hostPort"] = 0  # both endpoints want host ports
    pod["instances"][0]["containers"][0]["endpoints"] = [{"name": "http"}, {"name": "metrics",
                                                                            "allocatedHostPort": 31043}]
    _, [instance] = pod_status_from_json(pod)
    assert instance.ports == ()  # not (31043,): that port is metrics', never http's
    result = registrations(pod)
    assert isinstance(result, Skip) and result.reason == "missing-host-port" and result.retry


@pytest.mark.parametrize(("instance_status", "container_status", "message", "state"), [
    ("DEGRADED", "TASK_UNREACHABLE", "pod instance has become unreachable", TaskState.UNREACHABLE),
    ("DEGRADED", "TASK_RUNNING", "at least one container is not healthy", TaskState.RUNNING),
    ("STAGING", "TASK_STAGING", "", TaskState.STAGING),
    ("PENDING", "TASK_STAGING", "", TaskState.STAGING),
    ("TERMINAL", "TASK_GONE", "", TaskState.GONE),
    ("TERMINAL", "TASK_KILLED", "", TaskState.KILLED),
])
def test_instance_state(instance_status, container_status, message, state):
    pod = web_pod()
    inst = pod["instances"][0]
    inst["status"], inst["message"] = instance_status, message
    for c in inst["containers"]:
        c["status"] = container_status
    _, [instance] = pod_status_from_json(pod)
    assert instance.state == state


def test_unreachable_instance_keeps_its_registrations():
    pod = web_pod()
    pod["instances"][0]["containers"][0]["status"] = "TASK_UNREACHABLE"
    result = registrations(pod)
    assert isinstance(result, Skip) and result.keep


def _broken(mutate: Any) -> dict[str, Any]:
    pod = copy.deepcopy(web_pod())
    mutate(pod)
    return pod


@pytest.mark.parametrize("pod", [
    _broken(lambda p: p.pop("spec")),
    _broken(lambda p: p["spec"].update(containers=[])),
    _broken(lambda p: p["spec"].update(networks=[{"mode": "overlay"}])),
    _broken(lambda p: p["spec"]["containers"][0]["endpoints"][0].update(containerPort="80")),
    _broken(lambda p: p["spec"]["containers"][0]["healthCheck"]["http"].update(endpoint="nope")),
    _broken(lambda p: p["instances"][0].update(networks=[{"name": "weave", "addresses": [7]}])),
    _broken(lambda p: p["instances"][0].update(agentHostname=["x"])),
    _broken(lambda p: p["instances"][0]["containers"][0]["endpoints"][0].update(allocatedHostPort="31042")),
    _broken(lambda p: p.update(instances={"id": "x"})),
], ids=["no-spec", "no-containers", "unknown-network-mode", "port-not-int", "check-endpoint-unknown",
        "address-not-string", "host-not-string", "allocated-port-not-int", "instances-not-list"])
def test_malformed_pod_is_reported_and_skipped_never_a_crash(pod):
    pods, malformed = pod_statuses_from_json([pod, web_pod() | {"id": "/other"}])
    assert [app.id for app, _ in pods] == ["/other"]
    assert list(malformed) == ["/web-pod"] and "pod '/web-pod'" in malformed["/web-pod"]


@pytest.mark.parametrize("body", [{"pods": []}, [{"spec": {}}], [{"id": 5}], [7]])
def test_a_pods_answer_without_readable_ids_is_unusable(body):
    with pytest.raises(ValueError):
        pod_statuses_from_json(body)


def test_no_pods_is_an_empty_list():
    assert pod_statuses_from_json([]) == ([], {})


# --- events -------------------------------------------------------------------------------------


def test_pod_container_status_update_names_its_instance():
    event = parse_event({"eventType": "status_update_event", "taskId": f"{INSTANCE}.nginx", "appId": "/web-pod",
                         "taskStatus": "TASK_RUNNING", "host": HOST,
                         "ipAddresses": [{"ipAddress": "10.32.0.7", "protocol": "IPv4"}], "ports": [31042]})
    assert isinstance(event, TaskEvent) and event.pod_instance == INSTANCE


def test_app_task_status_update_has_no_pod_instance():
    event = parse_event({"eventType": "status_update_event", "appId": "/web", "taskStatus": "TASK_RUNNING",
                         "taskId": "web.instance-6f1e2d3c-8f0a-11e7-9e5e-0242ac110002._app.1"})
    assert isinstance(event, TaskEvent) and event.pod_instance == ""


def test_instance_changed_event():
    event = parse_event({"instanceId": INSTANCE, "condition": "Killed", "runSpecId": "/web-pod", "agentId": "S1",
                         "host": HOST, "runSpecVersion": "v", "timestamp": "t", "eventType": "instance_changed_event"})
    assert event == InstanceEvent(INSTANCE, "/web-pod", "Killed")


@pytest.mark.parametrize("kind", ["pod_created_event", "pod_updated_event", "pod_deleted_event"])
def test_pod_events_name_the_pod_from_uri(kind):
    event = parse_event({"clientIp": "10.0.0.1", "uri": "/v2/pods/web/db", "eventType": kind, "timestamp": "t"})
    assert event == AppEvent(("/web/db",), kind)


@pytest.mark.parametrize("uri", ["/v2/apps/web", "/v2/pods/", "/v2/pods/Bad_Pod", 5])
def test_pod_event_with_an_unusable_uri_is_refused(uri):
    from service.marathon.events import EventError
    with pytest.raises(EventError):
        parse_event({"uri": uri, "eventType": "pod_created_event"})
