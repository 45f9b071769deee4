"""Marathon event bodies -> typed hints, and bad bodies -> EventError with a bounded reason."""

from __future__ import annotations

import json

import pytest

from service.marathon.events import (
    REASONS,
    AppEvent,
    EventError,
    HealthEvent,
    IgnoredEvent,
    TaskEvent,
    parse_event,
)

UUID = "1b4c6a2e-5f3d-11eb-8a3e-0242ac110002"
ID_110 = f"site1_customer1_web.instance-{UUID}._app.1"
ID_14 = f"site1_customer1_web.{UUID}"
INSTANCE_110 = f"site1_customer1_web.instance-{UUID}"
HOST = "agent-3.dc1.example.net"
VERSION = "2021-03-04T10:15:30.123Z"
APP = "/site1/customer1/web"

# verbatim from reference/marathon.md §3
STATUS_UPDATE_110 = json.loads(
    '{"slaveId":"3f2a9c1e-7b8d-4e21-9a6f-1c2d3e4f5a6b-S7","taskId":"site1_customer1_web.instance-1b4c6a2e-5f3d-11eb-8a3e-0242ac110002._app.1","taskStatus":"TASK_RUNNING","message":"","appId":"/site1/customer1/web","host":"agent-3.dc1.example.net","ipAddresses":[{"ipAddress":"172.17.0.5","protocol":"IPv4"}],"ports":[31452],"version":"2021-03-04T10:15:30.123Z","eventType":"status_update_event","timestamp":"2021-03-04T10:15:41.877Z"}'
)
STATUS_FAILED_110 = json.loads(
    '{"slaveId":"3f2a9c1e-7b8d-4e21-9a6f-1c2d3e4f5a6b-S7","taskId":"site1_customer1_web.instance-1b4c6a2e-5f3d-11eb-8a3e-0242ac110002._app.2","taskStatus":"TASK_FAILED","message":"Container exited with status 137","appId":"/site1/customer1/web","host":"agent-3.dc1.example.net","ipAddresses":[{"ipAddress":"172.17.0.5","protocol":"IPv4"}],"ports":[31452],"version":"2021-03-04T10:15:30.123Z","eventType":"status_update_event","timestamp":"2021-03-04T11:02:09.514Z"}'  # noqa: E501
)
INSTANCE_HEALTH = json.loads(
    '{"instanceId":"site1_customer1_web.instance-1b4c6a2e-5f3d-11eb-8a3e-0242ac110002","runSpecId":"/site1/customer1/web","healthy":true,"runSpecVersion":"2021-03-04T10:15:30.123Z","timestamp":"2021-03-04T10:16:12.440Z","eventType":"instance_health_changed_event"}'
)
HEALTH_STATUS = json.loads(
    '{"appId":"/site1/customer1/web","instanceId":"site1_customer1_web.instance-1b4c6a2e-5f3d-11eb-8a3e-0242ac110002","version":"2021-03-04T10:15:30.123Z","alive":false,"eventType":"health_status_changed_event","timestamp":"2021-03-04T10:40:03.118Z"}'
)
APP_TERMINATED = json.loads(
    '{"appId":"/site1/customer1/web","eventType":"app_terminated_event","timestamp":"2021-03-05T07:00:12.006Z"}'
)
API_POST = json.loads(
    '{"clientIp":"10.0.5.17","uri":"/v2/apps/site1/customer1/web","appDefinition":{"id":"/site1/customer1/web","instances":2,"cpus":0.5,"mem":256,"disk":0,"gpus":0,"container":{"type":"DOCKER","docker":{"image":"nginx:1.19","forcePullImage":false,"privileged":false,"parameters":[]},"portMappings":[{"containerPort":80,"hostPort":0,"servicePort":10101,"protocol":"tcp","name":"http","labels":{}}],"volumes":[]},"networks":[{"mode":"container/bridge"}],"labels":{"HAPROXY_GROUP":"external","customer":"customer1"},"env":{"SITE":"site1"},"healthChecks":[{"gracePeriodSeconds":300,"intervalSeconds":30,"maxConsecutiveFailures":3,"path":"/health","portIndex":0,"protocol":"MESOS_HTTP","ipProtocol":"IPv4","timeoutSeconds":10,"delaySeconds":15}],"requirePorts":false,"backoffSeconds":1,"backoffFactor":1.15,"maxLaunchDelaySeconds":300,"upgradeStrategy":{"minimumHealthCapacity":1,"maximumOverCapacity":1},"version":"2021-03-04T10:15:30.123Z","role":"*"},"eventType":"api_post_event","timestamp":"2021-03-04T10:15:30.140Z"}'
)
DEPLOYMENT_SUCCESS = json.loads(
    '{"id":"a7b3c2d1-4e5f-4a6b-8c7d-9e0f1a2b3c4d","plan":{"id":"a7b3c2d1-4e5f-4a6b-8c7d-9e0f1a2b3c4d","steps":[{"actions":[{"action":"RestartApplication","app":"/site1/customer1/web"}]}],"version":"2021-03-04T10:15:30.123Z"},"eventType":"deployment_success","timestamp":"2021-03-04T10:16:20.551Z"}'
)
DEPLOYMENT_FAILED = json.loads(
    '{"id":"a7b3c2d1-4e5f-4a6b-8c7d-9e0f1a2b3c4d","plan":{"id":"a7b3c2d1-4e5f-4a6b-8c7d-9e0f1a2b3c4d","steps":[{"actions":[{"action":"RestartApplication","app":"/site1/customer1/web"}]}],"version":"2021-03-04T10:15:30.123Z"},"eventType":"deployment_failed","timestamp":"2021-03-04T10:17:02.900Z","reason":"The upgrade has been cancelled"}'  # noqa: E501
)
DEPLOYMENT_INFO = json.loads(
    '{"plan":{"id":"a7b3c2d1-4e5f-4a6b-8c7d-9e0f1a2b3c4d","steps":[{"actions":[{"action":"RestartApplication","app":"/site1/customer1/web"}]}],"version":"2021-03-04T10:15:30.123Z"},"currentStep":{"actions":[{"action":"RestartApplication","app":"/site1/customer1/web"}]},"eventType":"deployment_info","timestamp":"2021-03-04T10:15:30.301Z"}'
)

# Heavy plan format (<= 1.6): the plan also carries whole root groups, whose apps must NOT count.
_ROOT = {"id": "/", "apps": [{"id": "/other/app"}], "groups": [{"id": "/site1", "apps": [{"id": "/site1/db"}]}]}
DEPLOYMENT_HEAVY = {
    "id": "d1",
    "plan": {
        "id": "d1", "original": _ROOT, "target": _ROOT, "version": VERSION,
        "steps": [
            {"actions": [{"action": "StartApplication", "app": "/b/new"}, {"action": "ScaleApplication", "app": APP}]},
            {"actions": [{"action": "StopPod", "pod": "/pods/p1"}, {"action": "RestartApplication", "app": APP}]},
        ],
    },
    "eventType": "deployment_step_success",
    "currentStep": {"actions": [{"action": "ScaleApplication", "app": "/c/current"}]},
    "timestamp": "2021-03-04T10:15:30.301Z",
}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(STATUS_UPDATE_110, TaskEvent(ID_110, APP, "TASK_RUNNING", HOST, (31452,), ("172.17.0.5",),
                                                  VERSION, "status_update_event"), id="status-update-1.10"),
        pytest.param(STATUS_FAILED_110, TaskEvent(f"site1_customer1_web.instance-{UUID}._app.2", APP, "TASK_FAILED",
                                                  HOST, (31452,), ("172.17.0.5",), VERSION, "status_update_event"),
                     id="status-update-failed"),
        pytest.param({**STATUS_UPDATE_110, "taskId": ID_14},
                     TaskEvent(ID_14, APP, "TASK_RUNNING", HOST, (31452,), ("172.17.0.5",), VERSION,
                               "status_update_event"), id="status-update-1.4"),
        pytest.param(
            # <= 1.3: no ipAddresses when unknown; appId derived from the task id when absent;
            # unknown extra fields are tolerated
            {"taskId": f"web_api.{UUID}", "taskStatus": "TASK_STAGING", "host": "h", "ports": [],
             "eventType": "status_update_event", "brandNewField": {"x": 1}},
            TaskEvent(f"web_api.{UUID}", "/web/api", "TASK_STAGING", "h", (), (), "", "status_update_event"),
            id="status-update-minimal-derived-app-id"),
        pytest.param(APP_TERMINATED, AppEvent((APP,), "app_terminated_event"), id="app-terminated"),
        pytest.param(API_POST, AppEvent((APP,), "api_post_event"), id="api-post"),
        pytest.param(DEPLOYMENT_SUCCESS, AppEvent((APP,), "deployment_success"), id="deployment-success-light"),
        pytest.param(DEPLOYMENT_FAILED, AppEvent((APP,), "deployment_failed"), id="deployment-failed-light"),
        pytest.param(DEPLOYMENT_INFO, AppEvent((APP,), "deployment_info"), id="deployment-info-light"),
        pytest.param({**DEPLOYMENT_INFO, "eventType": "deployment_step_failure"},
                     AppEvent((APP,), "deployment_step_failure"), id="deployment-step-failure"),
        pytest.param(DEPLOYMENT_HEAVY, AppEvent(("/b/new", APP, "/pods/p1", "/c/current"), "deployment_step_success"),
                     id="deployment-heavy-steps-pods-currentStep"),
        pytest.param({"plan": {"steps": [[{"action": "ScaleApplication", "app": "/old"}]]},
                      "eventType": "deployment_info"},
                     AppEvent(("/old",), "deployment_info"), id="deployment-old-bare-list-steps"),
        pytest.param({"plan": {"id": "x", "steps": []}, "eventType": "deployment_success"},
                     AppEvent((), "deployment_success"), id="deployment-empty-plan"),
        pytest.param(HEALTH_STATUS, HealthEvent(APP, None, INSTANCE_110, False, "health_status_changed_event"),
                     id="health-status-1.4+"),
        pytest.param({"appId": APP, "taskId": ID_14, "version": VERSION, "alive": True,
                      "eventType": "health_status_changed_event"},
                     HealthEvent(APP, ID_14, None, True, "health_status_changed_event"), id="health-status-1.3-taskId"),
        pytest.param({"taskId": ID_14, "alive": True, "eventType": "health_status_changed_event"},
                     HealthEvent(APP, ID_14, None, True, "health_status_changed_event"),
                     id="health-status-derived-app-id"),
        pytest.param(INSTANCE_HEALTH, HealthEvent(APP, None, INSTANCE_110, True, "instance_health_changed_event"),
                     id="instance-health-1.10"),
        pytest.param({**INSTANCE_HEALTH, "healthy": None},
                     HealthEvent(APP, None, INSTANCE_110, None, "instance_health_changed_event"),
                     id="instance-health-unknown"),
        pytest.param({"instanceId": INSTANCE_110, "healthy": False, "eventType": "instance_health_changed_event"},
                     HealthEvent(APP, None, INSTANCE_110, False, "instance_health_changed_event"),
                     id="instance-health-derived-app-id"),
        pytest.param({"eventType": "unknown_instance_terminated_event", "instanceId": INSTANCE_110},
                     IgnoredEvent("unknown_instance_terminated_event", known=True), id="known-ignored"),
        pytest.param({"eventType": "event_stream_attached", "remoteAddress": "10.0.0.1"},
                     IgnoredEvent("event_stream_attached", known=True), id="stream-attached"),
        pytest.param({"eventType": "group_change_success", "groupId": "/site1"},
                     IgnoredEvent("group_change_success", known=True), id="group-change"),
        pytest.param({"eventType": "brand_new_event_2030"}, IgnoredEvent("brand_new_event_2030", known=False),
                     id="unknown-type"),
    ],
)
def test_parse_event(body, expected):
    assert parse_event(body) == expected


@pytest.mark.parametrize(
    ("body", "reason", "message"),
    [
        (None, "not-an-object", "event body must be a JSON object, got null"),
        ([], "not-an-object", "got a list"),
        ([STATUS_UPDATE_110], "not-an-object", "got a list"),
        ("status_update_event", "not-an-object", "got a string"),
        (42, "not-an-object", "got a number"),
        (True, "not-an-object", "got a boolean"),
        ({}, "no-event-type", "event body has no 'eventType' field"),
        ({"taskId": ID_110}, "no-event-type", "no 'eventType'"),
        ({"eventType": None}, "no-event-type", "no 'eventType'"),
        ({"eventType": 7}, "no-event-type", "'eventType' must be a non-empty string, got 7"),
        ({"eventType": ""}, "no-event-type", "'eventType' must be a non-empty string"),
        ({"eventType": ["status_update_event"]}, "no-event-type", "must be a non-empty string"),
        ({**STATUS_UPDATE_110, "taskId": None}, "bad-field", "status_update_event: field 'taskId' missing"),
        ({k: v for k, v in STATUS_UPDATE_110.items() if k != "taskId"}, "bad-field",
         "status_update_event: field 'taskId' missing"),
        ({**STATUS_UPDATE_110, "taskId": 12}, "bad-field",
         "status_update_event: field 'taskId' must be a non-empty string"),
        ({**STATUS_UPDATE_110, "taskId": ""}, "bad-field", "field 'taskId' must be a non-empty string"),
        ({k: v for k, v in STATUS_UPDATE_110.items() if k != "taskStatus"}, "bad-field",
         "status_update_event: field 'taskStatus' missing"),
        ({**STATUS_UPDATE_110, "appId": ["/a"]}, "bad-field", "field 'appId' must be a non-empty string"),
        ({**STATUS_UPDATE_110, "appId": None, "taskId": "garbage"}, "bad-field",
         "status_update_event: malformed Marathon task id 'garbage'"),
        ({**STATUS_UPDATE_110, "ports": "31452"}, "bad-field", "status_update_event: ports: expected a list"),
        ({**STATUS_UPDATE_110, "ports": ["x"]}, "bad-field", "status_update_event: ports[0]: expected an integer"),
        ({**STATUS_UPDATE_110, "ipAddresses": [1]}, "bad-field", "ipAddresses[0]: expected an object"),
        ({**STATUS_UPDATE_110, "host": 1}, "bad-field", "field 'host' must be a non-empty string, got 1"),
        ({"eventType": "app_terminated_event"}, "bad-field", "app_terminated_event: field 'appId' missing"),
        ({"eventType": "api_post_event"}, "bad-field", "api_post_event: field 'appDefinition' missing"),
        ({"eventType": "api_post_event", "appDefinition": "x"}, "bad-field",
         "api_post_event: field 'appDefinition' must be an object"),
        ({"eventType": "api_post_event", "appDefinition": {"instances": 1}}, "bad-field",
         "api_post_event: field 'appDefinition.id' must be an app id"),
        ({"eventType": "deployment_success", "id": "d"}, "bad-field", "deployment_success: field 'plan' missing"),
        ({"eventType": "deployment_info", "plan": []}, "bad-field", "deployment_info: field 'plan' must be an object"),
        ({"eventType": "deployment_info", "plan": {"steps": {}}}, "bad-field", "field 'plan.steps' must be a list"),
        ({"eventType": "deployment_info", "plan": {"steps": [{"actions": "x"}]}}, "bad-field",
         "field 'plan.steps[0].actions' must be a list"),
        ({"eventType": "deployment_info", "plan": {"steps": [{"actions": ["x"]}]}}, "bad-field",
         "field 'plan.steps[0].actions[0]' must be an object"),
        ({"eventType": "deployment_info", "plan": {"steps": [{"actions": [{"app": 5}]}]}}, "bad-field",
         "field 'plan.steps[0].actions[0].app' must be an app id"),
        ({"eventType": "deployment_info", "plan": {"steps": []}, "currentStep": {"actions": [{"pod": ""}]}},
         "bad-field", "field 'currentStep.actions[0].pod' must be an app id"),
        ({**HEALTH_STATUS, "alive": "false"}, "bad-field",
         "health_status_changed_event: field 'alive' must be a boolean"),
        ({k: v for k, v in HEALTH_STATUS.items() if k != "alive"}, "bad-field",
         "field 'alive' must be a boolean, got None"),
        ({k: v for k, v in HEALTH_STATUS.items() if k != "instanceId"}, "bad-field",
         "health_status_changed_event: field 'instanceId' (or 'taskId') missing"),
        ({**INSTANCE_HEALTH, "healthy": "yes"}, "bad-field", "field 'healthy' must be a boolean or null"),
        ({**INSTANCE_HEALTH, "instanceId": None}, "bad-field",
         "instance_health_changed_event: field 'instanceId' missing"),
        ({**INSTANCE_HEALTH, "runSpecId": None, "instanceId": "nonsense"}, "bad-field",
         "malformed Marathon instance id 'nonsense'"),
    ],
)
def test_bad_event_bodies(body, reason, message):
    with pytest.raises(EventError) as info:
        parse_event(body)
    assert info.value.reason == reason
    assert reason in REASONS
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)
