"""The simulator's wire behaviour against reference/marathon.md: subscriptions, SSE rules and framing,
task ids, event field sets per type and version, standby redirects, validation."""

from __future__ import annotations

import http.client as httpclient
import json
import re
import time
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.devcluster.marathon_sim_fixtures import *  # noqa: F403  (fixtures: sim10, sim14)
from tests.devcluster.marathon_sim_fixtures import Sim, running_sim, sse, web_app
from tests.helpers import http, wait_for

UUID1 = r"[0-9a-f]{8}-[0-9a-f]{4}-1[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}"

# reference §1-§3: field order per event type (1.10 unless a 1.4 variant is given)
FIELDS = {
    "status_update_event": ["slaveId", "taskId", "taskStatus", "message", "appId", "host", "ipAddresses", "ports",
                            "version", "eventType", "timestamp"],
    "instance_changed_event": ["instanceId", "condition", "runSpecId", "agentId", "host", "runSpecVersion",
                               "timestamp", "eventType"],
    "instance_health_changed_event": ["instanceId", "runSpecId", "healthy", "runSpecVersion", "timestamp",
                                      "eventType"],
    "health_status_changed_event": ["appId", "instanceId", "version", "alive", "eventType", "timestamp"],
    "failed_health_check_event": ["appId", "eventType", "healthCheck", "taskId", "timestamp"],
    "unhealthy_instance_kill_event": ["appId", "taskId", "instanceId", "version", "reason", "host", "slaveId",
                                      "eventType", "timestamp"],
    "app_terminated_event": ["appId", "eventType", "timestamp"],
    "api_post_event": ["clientIp", "uri", "appDefinition", "eventType", "timestamp"],
    "deployment_success": ["id", "plan", "eventType", "timestamp"],
    "deployment_info": ["plan", "currentStep", "eventType", "timestamp"],
    "deployment_step_success": ["plan", "currentStep", "eventType", "timestamp"],
    "group_change_success": ["groupId", "version", "eventType", "timestamp"],
    "event_stream_attached": ["remoteAddress", "eventType", "timestamp"],
    "event_stream_detached": ["remoteAddress", "eventType", "timestamp"],
    "subscribe_event": ["clientIp", "callbackUrl", "eventType", "timestamp"],
    "unsubscribe_event": ["clientIp", "callbackUrl", "eventType", "timestamp"],
}
FIELDS_14 = {**FIELDS, "failed_health_check_event": ["appId", "instanceId", "healthCheck", "eventType", "timestamp"]}
TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def bare(method: str, url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """A request with exactly these headers and no body (urllib would add a Content-Type)."""
    parts = urlsplit(url)
    conn = httpclient.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers or {})
        resp = conn.getresponse()
        text = resp.read().decode()
        return resp.status, json.loads(text) if text.startswith("{") else text
    finally:
        conn.close()


def test_subscription_content_type_rule_and_bodies(sim14: Sim) -> None:
    url = f"{sim14.url}/v2/eventSubscriptions?callbackUrl=http://127.0.0.1:9/cb"
    assert bare("POST", url)[0] == 415  # no Content-Type: @Consumes(application/json)
    assert bare("POST", url, {"Content-Type": "text/plain"})[0] == 415
    assert bare("DELETE", url)[0] == 415
    status, body = bare("POST", url, {"Content-Type": "application/json"})
    assert status == 200 and list(body) == FIELDS["subscribe_event"]
    assert body["callbackUrl"] == "http://127.0.0.1:9/cb" and body["eventType"] == "subscribe_event"
    assert TS.fullmatch(body["timestamp"])
    # re-subscribing is a 200 no-op
    assert bare("POST", url, {"Content-Type": "application/json; charset=utf-8"})[0] == 200
    status, body, _ = http("GET", f"{sim14.url}/v2/eventSubscriptions")
    assert status == 200 and body == {"callbackUrls": ["http://127.0.0.1:9/cb"]}
    status, body = bare("POST", f"{sim14.url}/v2/eventSubscriptions?callbackUrl=not-a-url",
                        {"Content-Type": "application/json"})
    assert status == 422
    status, body = bare("DELETE", url, {"Content-Type": "application/json"})
    assert status == 200 and list(body) == FIELDS["unsubscribe_event"] and body["eventType"] == "unsubscribe_event"
    status, body = bare("DELETE", url, {"Content-Type": "application/json"})  # unknown: still 200
    assert status == 200
    assert http("GET", f"{sim14.url}/v2/eventSubscriptions")[1] == {"callbackUrls": []}


def test_info_and_subscriptions_by_version(sim10: Sim, sim14: Sim) -> None:
    status, info14, _ = http("GET", f"{sim14.url}/v2/info")
    assert status == 200 and info14["event_subscriber"]["type"] == "http_callback"
    assert info14["version"].startswith("1.4")
    status, info10, _ = http("GET", f"{sim10.url}/v2/info")
    assert status == 200 and "event_subscriber" not in info10 and info10["version"].startswith("1.10")
    for method in ("GET", "POST", "DELETE"):
        status, body, _ = http(method, f"{sim10.url}/v2/eventSubscriptions?callbackUrl=http://x/y",
                               headers={"Content-Type": "application/json"})
        assert status == 404, (method, status, body)
    assert http("GET", f"{sim10.url}/v2/leader")[1] == {"leader": "127.0.0.1:18080"}


@pytest.mark.parametrize("accept", ["", "*/*", "text/event-stream, */*", "text/event-stream;q=1",
                                    "application/json"])
def test_sse_accept_must_equal_text_event_stream(sim10: Sim, accept: str) -> None:
    headers = {"Accept": accept} if accept else {}
    status, body = bare("GET", f"{sim10.url}/v2/events", headers)
    assert status == 405 and "GET is not supported" in body


def test_sse_framing_heartbeat_and_attach_first(sim10: Sim) -> None:
    with sse(f"{sim10.url}/v2/events") as client:
        assert client.status == 200
        assert client.headers["content-type"] == "text/event-stream;charset=UTF-8"
        assert client.headers["connection"] == "close"
        assert "transfer-encoding" not in client.headers and "content-length" not in client.headers
        first = client.next(timeout=5)
        assert first["eventType"] == "event_stream_attached" and list(first) == FIELDS["event_stream_attached"]
        assert client.raw.startswith(b"event: event_stream_attached\r\ndata: {\"remoteAddress\":")
        # with --heartbeat-interval 1 a bare CRLF follows the first frame's blank line
        wait_for(lambda: b"\r\n\r\n\r\n" in client.raw, 5, what="a heartbeat (bare CRLF)")
        frames = client.raw.split(b"\r\n\r\n")[0]
        assert frames.count(b"\r\n") == 1 and b"\n" not in frames.replace(b"\r\n", b"")
        # another client's attach/detach reach this one too
        with sse(f"{sim10.url}/v2/events") as other:
            other.next("event_stream_attached", timeout=5)
        detached = client.next("event_stream_detached", timeout=5)
        assert list(detached) == FIELDS["event_stream_detached"]


def test_sse_event_type_filter_and_test_hooks(sim10: Sim) -> None:
    with sse(f"{sim10.url}/v2/events?event_type=event_stream_detached&plan-format=light") as client:
        with sse(f"{sim10.url}/v2/events"):
            pass
        assert client.next(timeout=5)["eventType"] == "event_stream_detached"
        assert all(name == "event_stream_detached" for name, _ in client.seen)
        # silence: nothing at all is written, heartbeats included
        assert http("POST", f"{sim10.url}/_sim/event-streams/silence")[0] == 200
        time.sleep(0.3)
        size = len(client.raw)
        time.sleep(2.2)
        assert len(client.raw) == size
        assert http("POST", f"{sim10.url}/_sim/event-streams/resume")[0] == 200
        wait_for(lambda: len(client.raw) > size, 3, what="writes after resume")
        # drop: the server closes every stream
        status, body, _ = http("POST", f"{sim10.url}/_sim/event-streams/drop")
        assert status == 200 and body["dropped"] >= 1
        assert client.closed.wait(5)


def test_standby_redirects_events_and_proxies_rest(sim10: Sim) -> None:
    with running_sim("1.10", ("127.0.0.1", 18082), "--standby-of", sim10.url) as standby:
        assert http("GET", f"{standby.url}/v2/leader")[1] == {"leader": "127.0.0.1:18080"}
        with sse(f"{standby.url}/v2/events?event_type=status_update_event&plan-format=light") as client:
            assert client.status == 302
            assert client.headers["location"] == (f"{sim10.url}/v2/events?event_type=status_update_event"
                                                  "&plan-format=light")
        status, body, _ = http("GET", f"{standby.url}/v2/info")
        assert status == 200 and body["http_config"]["http_port"] == 18080  # answered by the leader
        assert http("GET", f"{standby.url}/v2/apps")[0] == 200


def test_create_validation(sim10: Sim) -> None:
    status, body = sim10.post_app(web_app("/Bad_Id"))
    assert status == 422 and body["message"] == "Object is not valid" and body["details"][0]["path"] == "/id"
    status, body = sim10.post_app({"id": "/x", "instances": "three", "container": {"docker": {"image": "i"}}})
    assert status == 422
    assert http("POST", f"{sim10.url}/v2/apps", raw=b"{not json")[0] == 400
    assert http("GET", f"{sim10.url}/v2/apps/nope")[0] == 404


def _lifecycle_events(sim: Sim, app_id: str, fields: dict[str, list[str]]) -> list[tuple[str, dict]]:
    """Deploy (with a passing HTTP check), scale 1 -> 0 -> delete, and check every event's fields."""
    app = web_app(app_id, 1, version=sim.version, healthChecks=[
        {"protocol": "HTTP", "path": "/", "portIndex": 0, "intervalSeconds": 1, "timeoutSeconds": 0.5,
         "gracePeriodSeconds": 5, "maxConsecutiveFailures": 3}])
    with sse(f"{sim.url}/v2/events") as client:
        client.next("event_stream_attached", timeout=5)
        status, body = sim.post_app(app)
        assert status == 201, body
        client.next("deployment_success", timeout=20)
        assert http("PUT", f"{sim.url}/v2/apps{app_id}", {"instances": 0})[0] == 200
        client.next("status_update_event", timeout=10, taskStatus="TASK_KILLED")
        assert http("DELETE", f"{sim.url}/v2/apps{app_id}")[0] == 200
        client.next("app_terminated_event", timeout=10, appId=app_id)
        time.sleep(0.2)
    seen = client.seen
    types = {name for name, _ in seen}
    for name, data in seen:
        assert name == data["eventType"]
        assert list(data) == fields[name], name
        assert TS.fullmatch(data["timestamp"])
    assert {"api_post_event", "group_change_success", "deployment_info", "deployment_step_success",
            "deployment_success", "status_update_event", "instance_changed_event", "health_status_changed_event",
            "instance_health_changed_event", "app_terminated_event"} <= types
    states = [d["taskStatus"] for n, d in seen if n == "status_update_event"]
    assert states == ["TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING", "TASK_KILLED"]
    return seen


def test_event_fields_and_task_ids_110(sim10: Sim) -> None:
    seen = _lifecycle_events(sim10, "/proto/ten", FIELDS)
    running = next(d for n, d in seen if n == "status_update_event" and d["taskStatus"] == "TASK_RUNNING")
    assert re.fullmatch(rf"proto_ten\.instance-{UUID1}\._app\.1", running["taskId"])
    inst = next(d for n, d in seen if n == "instance_changed_event")
    assert running["taskId"] == inst["instanceId"] + "._app.1"
    assert running["ipAddresses"][0]["protocol"] == "IPv4" and running["ports"][0] >= 31000
    post = next(d for n, d in seen if n == "api_post_event")
    assert post["appDefinition"]["networks"] == [{"mode": "container/bridge"}]
    info = next(d for n, d in seen if n == "deployment_info")
    assert set(info["plan"]) == {"id", "steps", "version"}  # always light on 1.8+


def test_event_fields_and_task_ids_14(sim14: Sim) -> None:
    seen = _lifecycle_events(sim14, "/proto/four", FIELDS_14)
    running = next(d for n, d in seen if n == "status_update_event" and d["taskStatus"] == "TASK_RUNNING")
    assert re.fullmatch(rf"proto_four\.{UUID1}", running["taskId"])
    inst = next(d for n, d in seen if n == "instance_changed_event")
    assert inst["instanceId"] == running["taskId"].replace("four.", "four.marathon-")
    post = next(d for n, d in seen if n == "api_post_event")
    assert post["appDefinition"]["container"]["docker"]["network"] == "BRIDGE"
    info = next(d for n, d in seen if n == "deployment_info")
    assert {"original", "target"} <= set(info["plan"])  # 1.4 has heavy plans only
