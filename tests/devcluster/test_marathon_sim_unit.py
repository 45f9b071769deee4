"""The simulator's pure parts against the reference: task ids, app JSON, task env, SSE frames."""

from __future__ import annotations

import re

import pytest

from devcluster.marathon_sim.app_json import ValidationError, parse_app, render_app
from devcluster.marathon_sim.config import SimConfig, SlaveConfig, parse_version
from devcluster.marathon_sim.events import Event
from devcluster.marathon_sim.launcher import container_ip
from devcluster.marathon_sim.scheduler import task_env
from devcluster.marathon_sim.sse import frame
from devcluster.marathon_sim.state import Task
from devcluster.marathon_sim.task_ids import mesos_task_name, new_task_id, safe_path

UUID1 = r"[0-9a-f]{8}-[0-9a-f]{4}-1[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}"
SLAVE = SlaveConfig.parse("127.0.0.2=unix:///var/lib/devcluster/s1.sock:bridge")
CFG10 = SimConfig(version=(1, 10), slaves=(SLAVE,))
CFG14 = SimConfig(version=(1, 4), slaves=(SLAVE,))


def test_slave_arg_splits_network_at_last_colon() -> None:
    assert SLAVE == SlaveConfig("127.0.0.2", "unix:///var/lib/devcluster/s1.sock", "bridge")
    assert SlaveConfig.parse("127.0.0.3=tcp://127.0.0.3:2375:weave").docker_url == "tcp://127.0.0.3:2375"
    with pytest.raises(ValueError):
        SlaveConfig.parse("127.0.0.3=unix:///x.sock")
    assert parse_version("1.10") == (1, 10)


def test_task_id_formats() -> None:
    assert safe_path("/site1/customer1/web") == "site1_customer1_web"
    assert mesos_task_name("/site1/customer1/web") == "web.customer1.site1"
    legacy, legacy_instance = new_task_id("/site1/customer1/web", instance_style=False)
    assert re.fullmatch(rf"site1_customer1_web\.{UUID1}", legacy)
    assert legacy_instance == legacy.replace("web.", "web.marathon-")
    task, instance = new_task_id("/site1/customer1/web", instance_style=True)
    assert re.fullmatch(rf"site1_customer1_web\.instance-{UUID1}\._app\.1", task)
    assert task == f"{instance}._app.1"
    # the reference's parsing regexes recover the app id from both
    for tid in (legacy, task):
        m = (re.match(r"^(.+)\.(instance-|marathon-)([^_\.]+)[\._]([^\.]+)\.(\d+)$", tid)
             or re.match(r"^(.+)([\._])([^_\.]+)$", tid))
        assert m and "/" + m.group(1).replace("_", "/") == "/site1/customer1/web"


@pytest.mark.parametrize("bad", ["/Web", "/we_b", "/web/-x", "/web/tasks", "/a/b.", ""])
def test_invalid_ids_are_422(bad: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_app({"id": bad, "container": {"docker": {"image": "x"}}})
    assert err.value.body()["message"] == "Object is not valid"
    assert err.value.body()["details"][0]["path"] == "/id"


def test_ids_are_normalised() -> None:
    spec = parse_app({"id": "web//customer1/./site1/", "container": {"docker": {"image": "x"}}})
    assert spec.id == "/web/customer1/site1"


def test_14_and_15_shapes_parse_to_the_same_app_and_render_per_version() -> None:
    old = parse_app({"id": "/a", "container": {"type": "DOCKER", "docker": {
        "image": "img", "network": "BRIDGE", "portMappings": [{"containerPort": 80, "name": "http"}]}}})
    new = parse_app({"id": "/a", "networks": [{"mode": "container/bridge"}], "container": {
        "type": "DOCKER", "docker": {"image": "img"}, "portMappings": [{"containerPort": 80, "name": "http"}]}})
    assert old.config_key() == new.config_key()
    r10 = render_app(new, CFG10)
    assert r10["networks"] == [{"mode": "container/bridge"}]
    assert r10["container"]["portMappings"][0]["containerPort"] == 80
    assert "network" not in r10["container"]["docker"] and "ipAddress" not in r10
    r14 = render_app(new, CFG14)
    assert r14["container"]["docker"]["network"] == "BRIDGE"
    assert r14["container"]["docker"]["portMappings"][0]["hostPort"] == 0
    assert r14["ipAddress"] is None and "networks" not in r14
    user = parse_app({"id": "/u", "ipAddress": {"networkName": "weave"}, "container": {"docker": {
        "image": "img", "network": "USER", "portMappings": [{"containerPort": 80}]}}})
    assert user.network == "container:weave" and user.port_mappings[0].host_port is None
    assert render_app(user, CFG10)["networks"] == [{"mode": "container", "name": "weave"}]
    assert render_app(user, CFG14)["ipAddress"]["networkName"] == "weave"


def test_task_env() -> None:
    spec = parse_app({"id": "/site1/customer1/web", "cpus": 0.5, "mem": 256, "env": {"SITE": "s1", "HOST": "over"},
                      "labels": {"HAPROXY_0_VHOST": "a.b", "consul.name": "x"},
                      "networks": [{"mode": "container/bridge"}],
                      "container": {"docker": {"image": "local/busybox:1"},
                                    "portMappings": [{"containerPort": 80, "name": "http"}]}})
    spec.version = "2021-03-04T10:15:30.123Z"
    task = Task(task_id="t1", instance_id="i1", app_id=spec.id, slave=SLAVE, slave_id="S0", version=spec.version)
    env = task_env(spec, task, "mesos-abc", [31005], CFG10)
    assert env["MESOS_TASK_ID"] == "t1" and env["MARATHON_APP_ID"] == "/site1/customer1/web"
    assert env["MARATHON_APP_RESOURCE_CPUS"] == "0.5" and env["MARATHON_APP_RESOURCE_MEM"] == "256.0"
    assert env["MARATHON_APP_DOCKER_IMAGE"] == "local/busybox:1"
    assert env["MARATHON_APP_LABELS"] == "HAPROXY_0_VHOST CONSUL_NAME"
    assert env["MARATHON_APP_LABEL_CONSUL_NAME"] == "x"
    assert (env["PORT0"], env["PORT"], env["PORTS"], env["PORT_80"], env["PORT_HTTP"]) == ("31005",) * 5
    assert env["MESOS_SANDBOX"] == "/mnt/mesos/sandbox" and env["MESOS_CONTAINER_NAME"] == "mesos-abc"
    assert env["HOST"] == "over" and env["SITE"] == "s1"  # app env last


def test_container_ip_follows_the_docker_executor() -> None:
    inspect = {"HostConfig": {"NetworkMode": "weave"},
               "NetworkSettings": {"IPAddress": "", "Networks": {"weave": {"IPAddress": "10.32.2.1"}}}}
    assert container_ip(inspect) == "10.32.2.1"
    assert container_ip({"HostConfig": {"NetworkMode": "host"},
                         "NetworkSettings": {"IPAddress": "", "Networks": {"host": {"IPAddress": ""}}}}) is None


def test_sse_frame_is_jettys() -> None:
    ev = Event("app_terminated_event", {"appId": "/a", "eventType": "app_terminated_event", "timestamp": "t"})
    assert frame(ev, True) == (b'event: app_terminated_event\r\ndata: {"appId":"/a",'
                               b'"eventType":"app_terminated_event","timestamp":"t"}\r\n\r\n')


def test_light_plan_by_version() -> None:
    assert not CFG14.light_plan("light")
    assert SimConfig(version=(1, 6)).light_plan("light") and not SimConfig(version=(1, 6)).light_plan(None)
    assert CFG10.light_plan(None)


def test_callback_backoff_doubles_resets_and_never_overflows() -> None:
    from devcluster.marathon_sim.callbacks import Limit

    limit = Limit()
    assert [limit.record("HTTP 500") for _ in range(3)] == [2.0, 4.0, 8.0]
    assert limit.record(None) == 0.0 and limit.failures == 0 and limit.skip_until == 0.0
    for _ in range(2000):
        backoff = limit.record("ConnectionRefusedError")
    assert backoff == 2.0 ** 40 and limit.failed == 2003


VOLUME = {"containerPath": "/etc/mcr-tls", "hostPath": "/var/lib/certs", "mode": "RO"}


def test_docker_host_volumes_are_kept_and_rendered_in_both_shapes() -> None:
    spec = parse_app({"id": "/v", "container": {"type": "DOCKER", "volumes": [VOLUME],
                                                "docker": {"image": "x", "network": "HOST"}}})
    assert spec.volumes == [VOLUME]
    assert render_app(spec, CFG10)["container"]["volumes"] == [VOLUME]
    assert render_app(spec, CFG14)["container"]["volumes"] == [VOLUME]


@pytest.mark.parametrize(("volume", "path", "error"), [
    ({"containerPath": "/c", "hostPath": "/h"}, "/container/volumes(0)/mode", "error.path.missing"),
    ({"containerPath": "/c", "hostPath": "/h", "mode": "RX"}, "/container/volumes(0)/mode",
     "error.unknown.enum.literal"),
    ({"hostPath": "/h", "mode": "RO"}, "/container/volumes(0)/containerPath", "error.path.missing"),
    ({"containerPath": "/c", "hostPath": "certs", "mode": "RO"}, "/container/volumes(0)/hostPath",
     "a sandbox-relative hostPath is not supported by the simulator"),
    ({"containerPath": "data", "mode": "RW", "persistent": {"size": 10}}, "/container/volumes(0)",
     "only Docker host volumes (hostPath) are supported by the simulator"),
])
def test_volumes_the_simulator_cannot_honour_are_422_not_dropped(volume: dict, path: str, error: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_app({"id": "/v", "container": {"volumes": [volume], "docker": {"image": "x"}}})
    assert {"path": path, "errors": [error]} in info.value.details
