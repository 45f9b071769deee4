"""Marathon app and task JSON of 1.4 and 1.10 -> model types (reference marathon.md §3.1, §5)."""

from __future__ import annotations

import json

import pytest

from service.marathon.parse import app_from_json, app_with_tasks_from_json, apps_from_json, task_from_json
from service.model import App, HealthCheck, NetworkMode, PortMapping, ReadinessCheck, Task

# --- verbatim from reference/marathon.md --------------------------------------------------------

APP_110 = json.loads(
    '{"app":{"id":"/site1/customer1/web","instances":2,"cpus":0.5,"mem":256,"disk":0,"gpus":0,"env":{"SITE":"site1"},"labels":{"HAPROXY_GROUP":"external","customer":"customer1"},"container":{"type":"DOCKER","docker":{"image":"nginx:1.19","forcePullImage":false,"privileged":false,"parameters":[]},"portMappings":[{"containerPort":80,"hostPort":0,"servicePort":10101,"protocol":"tcp","name":"http","labels":{}}],"volumes":[]},"networks":[{"mode":"container/bridge"}],"healthChecks":[{"gracePeriodSeconds":300,"intervalSeconds":30,"maxConsecutiveFailures":3,"path":"/health","portIndex":0,"protocol":"MESOS_HTTP","ipProtocol":"IPv4","timeoutSeconds":10,"delaySeconds":15}],"requirePorts":false,"version":"2021-03-04T10:15:30.123Z","versionInfo":{"lastScalingAt":"2021-03-04T10:15:30.123Z","lastConfigChangeAt":"2021-03-04T10:15:30.123Z"},"role":"*","tasksStaged":0,"tasksRunning":2,"tasksHealthy":2,"tasksUnhealthy":0,"deployments":[],"tasks":[]}}'
)["app"]

APP_14 = json.loads(
    '{"id":"/site1/customer1/web","instances":2,"labels":{"HAPROXY_GROUP":"external"},"env":{"SITE":"site1"},"container":{"type":"DOCKER","volumes":[],"docker":{"image":"nginx:1.19","network":"BRIDGE","portMappings":[{"containerPort":80,"hostPort":0,"servicePort":10101,"protocol":"tcp","name":"http","labels":{}}],"privileged":false,"parameters":[],"forcePullImage":false}},"ipAddress":null,"ports":[10101],"portDefinitions":[{"port":10101,"protocol":"tcp","name":"http","labels":{}}],"requirePorts":false,"healthChecks":[]}'
)

API_POST_APP = json.loads(
    '{"id":"/site1/customer1/web","instances":2,"cpus":0.5,"mem":256,"disk":0,"gpus":0,"container":{"type":"DOCKER","docker":{"image":"nginx:1.19","forcePullImage":false,"privileged":false,"parameters":[]},"portMappings":[{"containerPort":80,"hostPort":0,"servicePort":10101,"protocol":"tcp","name":"http","labels":{}}],"volumes":[]},"networks":[{"mode":"container/bridge"}],"labels":{"HAPROXY_GROUP":"external","customer":"customer1"},"env":{"SITE":"site1"},"healthChecks":[{"gracePeriodSeconds":300,"intervalSeconds":30,"maxConsecutiveFailures":3,"path":"/health","portIndex":0,"protocol":"MESOS_HTTP","ipProtocol":"IPv4","timeoutSeconds":10,"delaySeconds":15}],"requirePorts":false,"backoffSeconds":1,"backoffFactor":1.15,"maxLaunchDelaySeconds":300,"upgradeStrategy":{"minimumHealthCapacity":1,"maximumOverCapacity":1},"version":"2021-03-04T10:15:30.123Z","role":"*"}'
)

TASK_REST_110 = json.loads(
    '{"appId":"/site1/customer1/web","healthCheckResults":[{"alive":true,"consecutiveFailures":0,"firstSuccess":"2021-03-04T10:16:12.430Z","lastSuccess":"2021-03-04T10:46:12.402Z","instanceId":"site1_customer1_web.instance-1b4c6a2e-5f3d-11eb-8a3e-0242ac110002"}],"host":"agent-3.dc1.example.net","id":"site1_customer1_web.instance-1b4c6a2e-5f3d-11eb-8a3e-0242ac110002._app.1","ipAddresses":[{"ipAddress":"172.17.0.5","protocol":"IPv4"}],"ports":[31452],"servicePorts":[10101],"slaveId":"3f2a9c1e-7b8d-4e21-9a6f-1c2d3e4f5a6b-S7","state":"TASK_RUNNING","stagedAt":"2021-03-04T10:15:31.220Z","startedAt":"2021-03-04T10:15:41.870Z","version":"2021-03-04T10:15:30.123Z","localVolumes":[],"region":"dc1","zone":"rack-b","role":"*"}'
)

STATUS_UPDATE_110 = json.loads(
    '{"slaveId":"3f2a9c1e-7b8d-4e21-9a6f-1c2d3e4f5a6b-S7","taskId":"site1_customer1_web.instance-1b4c6a2e-5f3d-11eb-8a3e-0242ac110002._app.1","taskStatus":"TASK_RUNNING","message":"","appId":"/site1/customer1/web","host":"agent-3.dc1.example.net","ipAddresses":[{"ipAddress":"172.17.0.5","protocol":"IPv4"}],"ports":[31452],"version":"2021-03-04T10:15:30.123Z","eventType":"status_update_event","timestamp":"2021-03-04T10:15:41.877Z"}'
)

UUID = "1b4c6a2e-5f3d-11eb-8a3e-0242ac110002"
ID_110 = f"site1_customer1_web.instance-{UUID}._app.1"
ID_14 = f"site1_customer1_web.{UUID}"
HOST = "agent-3.dc1.example.net"
VERSION = "2021-03-04T10:15:30.123Z"

MESOS_HTTP_CHECK = HealthCheck(protocol="MESOS_HTTP", path="/health", port_index=0, interval_seconds=30,
                               timeout_seconds=10, grace_period_seconds=300, max_consecutive_failures=3)


def _without(obj: dict, *keys: str) -> dict:
    return {k: v for k, v in obj.items() if k not in keys}


# --- apps ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(
            APP_110,
            App(id="/site1/customer1/web", version=VERSION, network_mode=NetworkMode.BRIDGE,
                port_mappings=(PortMapping(80, 0, "http", "tcp"),), health_checks=(MESOS_HTTP_CHECK,),
                labels={"HAPROXY_GROUP": "external", "customer": "customer1"}, env={"SITE": "site1"}),
            id="1.10-rest",
        ),
        pytest.param(
            API_POST_APP,
            App(id="/site1/customer1/web", version=VERSION, network_mode=NetworkMode.BRIDGE,
                port_mappings=(PortMapping(80, 0, "http", "tcp"),), health_checks=(MESOS_HTTP_CHECK,),
                labels={"HAPROXY_GROUP": "external", "customer": "customer1"}, env={"SITE": "site1"}),
            id="1.10-api-post-appDefinition",
        ),
        pytest.param(
            # 1.4 BRIDGE: the top-level ports/portDefinitions are service ports and must be ignored
            APP_14,
            App(id="/site1/customer1/web", version="", network_mode=NetworkMode.BRIDGE,
                port_mappings=(PortMapping(80, 0, "http", "tcp"),), health_checks=(),
                labels={"HAPROXY_GROUP": "external"}, env={"SITE": "site1"}),
            id="1.4-bridge",
        ),
        pytest.param(
            {"id": "/svc", "container": {"type": "DOCKER", "docker": {"image": "x", "network": "HOST"}},
             "ports": [10000, 10001],
             "portDefinitions": [{"port": 10000, "protocol": "tcp", "name": "http"}, {"port": 10001}]},
            App(id="/svc", network_mode=NetworkMode.HOST,
                port_mappings=(PortMapping(10000, 0, "http"), PortMapping(10001, 0, None))),
            id="1.4-host-portDefinitions",
        ),
        pytest.param(
            {"id": "/svc", "ports": [10000]},
            App(id="/svc", network_mode=NetworkMode.HOST, port_mappings=(PortMapping(10000, 0),),
                mesos_containerizer=True),  # no `container`: a command app, run by the Mesos containerizer
            id="host-bare-ports",
        ),
        pytest.param(
            {"id": "/svc", "networks": [{"mode": "host"}],
             "portDefinitions": [{"port": 0, "protocol": "udp", "name": "dns"}]},
            App(id="/svc", network_mode=NetworkMode.HOST, port_mappings=(PortMapping(0, 0, "dns", "udp"),),
                mesos_containerizer=True),
            id="1.10-host",
        ),
        pytest.param(
            {"id": "/svc", "container": {"type": "DOCKER", "docker": {"image": "x", "network": "USER",
                                                                       "portMappings": [{"containerPort": 80}]}},
             "ipAddress": {"networkName": "weave"}},
            App(id="/svc", network_mode=NetworkMode.USER, port_mappings=(PortMapping(80, None),)),
            id="1.4-user-no-hostPort",
        ),
        pytest.param(
            {"id": "/svc", "ipAddress": {"networkName": "weave",
                                         "discovery": {"ports": [{"number": 8080, "name": "http"}]}}},
            App(id="/svc", network_mode=NetworkMode.USER, port_mappings=(PortMapping(8080, None, "http"),),
                mesos_containerizer=True),
            id="1.4-ip-per-task-discovery-ports",
        ),
        pytest.param(
            {"id": "svc/", "networks": [{"mode": "container", "name": "weave"}],
             "container": {"type": "DOCKER", "portMappings": [
                 {"containerPort": 80, "name": "http"}, {"containerPort": 9000, "hostPort": 0},
                 {"containerPort": 9001, "hostPort": 31001}]}},
            App(id="/svc", network_mode=NetworkMode.USER,
                port_mappings=(PortMapping(80, None, "http"), PortMapping(9000, 0), PortMapping(9001, 31001))),
            id="1.10-container-network-mixed-hostPorts",
        ),
        pytest.param(
            {"id": "/svc", "networks": [{"mode": "container/bridge"}],
             "container": {"type": "DOCKER", "portMappings": [{"containerPort": 80}]}},
            App(id="/svc", network_mode=NetworkMode.BRIDGE, port_mappings=(PortMapping(80, 0),)),
            id="1.10-bridge-absent-hostPort-is-random",
        ),
        pytest.param(
            {"id": "/svc", "env": {"A": "1", "DB_PASSWORD": {"secret": "db"}}, "labels": {}},
            App(id="/svc", network_mode=NetworkMode.HOST, env={"A": "1"}, mesos_containerizer=True),
            id="env-secret-skipped",
        ),
        pytest.param(
            {"id": "/svc", "healthChecks": [{}, {"protocol": "COMMAND", "command": {"value": "true"}},
                                            {"protocol": "tcp", "port": 8080, "portIndex": 1}]},
            App(id="/svc", network_mode=NetworkMode.HOST, mesos_containerizer=True, health_checks=(
                HealthCheck("HTTP", "/", 0, None, 60, 20, 300, 3, None),
                HealthCheck("COMMAND", "/", 0, None, 60, 20, 300, 3, "true"),
                HealthCheck("TCP", "/", 1, 8080, 60, 20, 300, 3, None))),
            id="health-check-defaults",
        ),
    ],
)
def test_app_from_json(obj, expected):
    app = app_from_json(obj)
    assert app == expected
    # App.__eq__ compares every field, but spell out the ones hash() ignores
    assert app.port_mappings == expected.port_mappings
    assert app.health_checks == expected.health_checks
    assert dict(app.labels) == dict(expected.labels)
    assert dict(app.env) == dict(expected.env)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([], "app: expected an object"),
        ({}, "app: id: field missing"),
        ({"id": 5}, "app: id: expected a string, got 5"),
        ({"id": "/"}, "app: id: expected an app id"),
        ({"id": "/a", "labels": []}, "app '/a': labels: expected an object"),
        ({"id": "/a", "labels": {"x": 1}}, "app '/a': labels.x: expected a string, got 1"),
        ({"id": "/a", "env": {"X": 1}}, "app '/a': env.X: expected a string or a secret reference"),
        ({"id": "/a", "networks": [{"mode": "overlay"}]}, "networks[0].mode: unknown network mode 'overlay'"),
        ({"id": "/a", "container": {"docker": {"network": "WEIRD"}}}, "container.docker.network: unknown"),
        ({"id": "/a", "networks": [{"mode": "container"}], "container": {"portMappings": [{"containerPort": "80"}]}},
         "app '/a': container.portMappings[0].containerPort: expected an integer, got '80'"),
        ({"id": "/a", "networks": [{"mode": "container/bridge"}],
          "container": {"portMappings": [{"containerPort": 80, "hostPort": True}]}},
         "container.portMappings[0].hostPort: expected an integer, got True"),
        ({"id": "/a", "portDefinitions": [{"port": "x"}]}, "portDefinitions[0].port: expected an integer"),
        ({"id": "/a", "ports": ["x"]}, "app '/a': ports[0]: expected an integer"),
        ({"id": "/a", "healthChecks": {}}, "app '/a': healthChecks: expected a list"),
        ({"id": "/a", "healthChecks": [{"portIndex": "0"}]}, "healthChecks[0].portIndex: expected an integer"),
        ({"id": "/a", "healthChecks": ["HTTP"]}, "healthChecks[0]: expected an object"),
        # issue 19: the containerizer and readiness checks
        ({"id": "/a", "container": {"type": 5}}, "app '/a': container.type: expected a string, got 5"),
        ({"id": "/a", "readinessChecks": {}}, "app '/a': readinessChecks: expected a list"),
        ({"id": "/a", "readinessChecks": [{"intervalSeconds": "30"}]},
         "readinessChecks[0].intervalSeconds: expected an integer, got '30'"),
        ({"id": "/a", "readinessChecks": [{"portName": 0}]}, "readinessChecks[0].portName: expected a string"),
    ],
)
def test_malformed_apps_raise_naming_the_field(obj, message):
    with pytest.raises(ValueError) as info:
        app_from_json(obj)
    assert message in str(info.value)


@pytest.mark.parametrize(("container", "networks", "mesos", "from_marathon"), [
    ({"type": "MESOS", "docker": {"image": "x"}}, [{"mode": "container", "name": "weave"}], True, True),
    ({"type": "mesos"}, [{"mode": "container/bridge"}], True, False),
    ({"type": "DOCKER", "docker": {"image": "x"}}, [{"mode": "container", "name": "weave"}], False, False),
    ({"docker": {"image": "x"}}, [{"mode": "container", "name": "weave"}], False, False),  # type defaults to DOCKER
    (None, [{"mode": "container", "name": "weave"}], True, True),  # a command app on a CNI network
    ({"type": "MESOS"}, [{"mode": "host"}], True, False),
])
def test_containerizer_decides_whether_marathon_reports_the_address(container, networks, mesos, from_marathon):
    body: dict[str, object] = {"id": "/a", "networks": networks}
    if container is not None:
        body["container"] = container
    app = app_from_json(body)
    assert (app.mesos_containerizer, app.addresses_from_marathon) == (mesos, from_marathon)


def test_readiness_checks_parse_with_marathons_defaults():
    app = app_from_json({"id": "/a", "readinessChecks": [
        {"name": "r", "protocol": "https", "path": "/ready", "portName": "api", "intervalSeconds": 3,
         "timeoutSeconds": 1, "httpStatusCodesForReady": [200, 204], "preserveLastResponse": True}, {}]})
    assert app.readiness_checks == (ReadinessCheck("r", "HTTPS", "/ready", "api", 3, 1), ReadinessCheck())
    assert ReadinessCheck() == ReadinessCheck("readinessCheck", "HTTP", "/", "http-api", 30, 10)


# --- tasks --------------------------------------------------------------------------------------

RUNNING_110 = Task(id=ID_110, app_id="/site1/customer1/web", host=HOST, state="TASK_RUNNING", ports=(31452,),
                   ip_addresses=("172.17.0.5",), app_version=VERSION)


@pytest.mark.parametrize(
    ("obj", "app_id", "expected"),
    [
        pytest.param(TASK_REST_110, None,
                     Task(ID_110, "/site1/customer1/web", HOST, "TASK_RUNNING", (31452,), ("172.17.0.5",),
                          VERSION, (True,)), id="rest-1.10"),
        pytest.param(STATUS_UPDATE_110, None, RUNNING_110, id="status-update-1.10"),
        pytest.param({**STATUS_UPDATE_110, "taskId": ID_14}, None,
                     Task(ID_14, "/site1/customer1/web", HOST, "TASK_RUNNING", (31452,), ("172.17.0.5",), VERSION),
                     id="status-update-1.4-legacy-id"),
        pytest.param(_without(STATUS_UPDATE_110, "appId", "ipAddresses"), None,
                     Task(ID_110, "/site1/customer1/web", HOST, "TASK_RUNNING", (31452,), (), VERSION),
                     id="status-update-1.3-no-appId-no-ipAddresses"),
        pytest.param(
            # 1.4 REST omits empty arrays and, for inactive tasks, ports and version
            {"id": ID_14, "host": HOST, "state": "TASK_STAGING", "slaveId": "S1"}, "/site1/customer1/web",
            Task(ID_14, "/site1/customer1/web", HOST, "TASK_STAGING"), id="rest-1.4-staging-embedded"),
        pytest.param(
            {"id": ID_14, "host": HOST, "state": "TASK_RUNNING", "ports": [31000, 31001],
             "healthCheckResults": [{"alive": False, "taskId": ID_14}, {"consecutiveFailures": 0}]}, None,
            Task(ID_14, "/site1/customer1/web", HOST, "TASK_RUNNING", (31000, 31001), (), "", (False, None)),
            id="rest-1.3-health-by-index"),
        pytest.param({"taskId": ID_110, "host": HOST}, None,
                     Task(ID_110, "/site1/customer1/web", HOST, "TASK_STAGING"), id="no-state-defaults-staging"),
    ],
)
def test_task_from_json(obj, app_id, expected):
    assert task_from_json(obj, app_id=app_id) == expected


def test_rest_task_and_status_update_agree():
    """The same running task seen over REST and on the bus is the same Task, health aside."""
    rest = task_from_json(TASK_REST_110)
    event = task_from_json(STATUS_UPDATE_110)
    assert rest.health == (True,)
    assert event.health == ()
    assert (rest.id, rest.app_id, rest.host, rest.state, rest.ports, rest.ip_addresses, rest.app_version) == (
        event.id, event.app_id, event.host, event.state, event.ports, event.ip_addresses, event.app_version)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ("x", "task: expected an object"),
        ({"host": HOST}, "task: id: field missing"),
        ({"id": 7}, "task: id: expected a string, got 7"),
        ({"id": "garbage"}, "task 'garbage': appId: missing and not derivable"),
        ({"id": ID_14, "ports": "31000"}, f"task {ID_14!r}: ports: expected a list"),
        ({"id": ID_14, "ports": [31000, None]}, "ports[1]: expected an integer, got None"),
        ({"id": ID_14, "ipAddresses": ["10.0.0.1"]}, "ipAddresses[0]: expected an object"),
        ({"id": ID_14, "ipAddresses": [{"protocol": "IPv4"}]}, "ipAddresses[0].ipAddress: field missing"),
        ({"id": ID_14, "state": 1}, "state: expected a string"),
        ({"id": ID_14, "healthCheckResults": [{"alive": "yes"}]}, "healthCheckResults[0].alive: expected a boolean"),
    ],
)
def test_malformed_tasks_raise_naming_the_field(obj, message):
    with pytest.raises(ValueError) as info:
        task_from_json(obj)
    assert message in str(info.value)


def test_apps_from_json_embeds_tasks():
    app_obj = {**APP_110, "tasks": [TASK_REST_110, _without(TASK_REST_110, "appId")]}
    body = {"apps": [app_obj, APP_14]}
    result = apps_from_json(body)
    assert [(app.id, len(tasks)) for app, tasks in result] == [("/site1/customer1/web", 2), ("/site1/customer1/web", 0)]
    first_app, tasks = result[0]
    assert first_app.network_mode is NetworkMode.BRIDGE
    assert result[1][0].version == ""
    # the second task has no appId: the enclosing app's id is used
    assert [t.app_id for t in tasks] == ["/site1/customer1/web", "/site1/customer1/web"]
    assert tasks[0] == tasks[1]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "apps response: apps: field missing"),
        ({"apps": {}}, "apps response: apps: expected a list"),
        ({"apps": [{"id": "/a", "tasks": [{"id": 1}]}]}, "task: id: expected a string"),
        ({"apps": [1]}, "apps[0]: expected an object"),
    ],
)
def test_apps_from_json_malformed(body, message):
    with pytest.raises(ValueError) as info:
        apps_from_json(body)
    assert message in str(info.value)


def test_an_apps_tasks_list_parses_task_by_task():
    """The embedded `tasks` of an app (`GET /v2/apps/{id}`, every app of the resync's read) are
    the tasks one by one, none for an empty list."""
    app_id = TASK_REST_110["appId"]
    assert app_with_tasks_from_json({"id": app_id, "tasks": [TASK_REST_110]})[1] == [task_from_json(TASK_REST_110)]
    assert app_with_tasks_from_json({"id": app_id, "tasks": []})[1] == []
