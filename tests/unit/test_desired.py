"""App + task + container -> exact Consul registrations (docs/architecture.md §2 and §5, README "Naming")."""

from __future__ import annotations

import ipaddress

import pytest

from service.desired import RegistrationPolicy, desired_registrations, task_host_ports, ttl_check_statuses
from service.model import (
    AddressMode,
    App,
    ConsulCheck,
    Container,
    HealthCheck,
    Naming,
    NetworkMode,
    PortMapping,
    Registration,
    Skip,
    Task,
)
from service.ownership import MANAGED_BY

APP_ID = "/web/customer1/site1"
TID = "web_customer1_site1.1b4c6a2e-5f3d-11eb-8a3e-0242ac110002"
HOST = "127.0.0.2"
OVERLAY = "10.32.0.5"
NETWORKS = ("weave", "bridge")
SID0 = f"mcr-{TID}-0"
SID1 = f"mcr-{TID}-1"
TAGS = ("customer1", "site1.customer1")

HTTP = HealthCheck(protocol="HTTP", path="/health", interval_seconds=10, timeout_seconds=2)
HTTP_PORT = PortMapping(80, 0, "http")


def app(*, ports=(HTTP_PORT,), checks=(), mode=NetworkMode.BRIDGE, labels=None, env=None) -> App:
    return App(id=APP_ID, version="v1", network_mode=mode, port_mappings=ports, health_checks=checks,
               labels=labels or {}, env=env or {})


def task(*, ports=(31000,), state="TASK_RUNNING", host=HOST, health=()) -> Task:
    return Task(id=TID, app_id=APP_ID, host=host, state=state, ports=ports, app_version="v1", health=health)


def container(ips=None, *, running=True) -> Container:
    return Container(id="0123456789abcdef", task_id=TID, network_ips={"weave": OVERLAY} if ips is None else ips,
                     running=running)


def meta(source: str, port_index: int = 0) -> tuple[tuple[str, str], ...]:
    return (("address-source", source), ("managed-by", MANAGED_BY), ("marathon-app-id", APP_ID),
            ("marathon-host", HOST), ("marathon-task-id", TID), ("port-index", str(port_index)))


def http_check(sid: str = SID0, url: str = f"http://{HOST}:31000/health", n: int = 1) -> ConsulCheck:
    return ConsulCheck(check_id=f"service:{sid}:{n}", name=f"Marathon HTTP health check {n}", http=url,
                       interval="10s", timeout="2s")


def run(the_app, the_task, the_container, mode=AddressMode.AUTO, networks=NETWORKS, naming=Naming.DNS, **kw):
    return desired_registrations(the_app, the_task, the_container,
                                 RegistrationPolicy(naming=naming, address_mode=mode, networks=networks, **kw))


# --- address modes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("the_app", "the_container", "mode", "networks", "expected"),
    [
        pytest.param(app(checks=(HTTP,)), container(), AddressMode.AUTO, NETWORKS,
                     [Registration(HOST, SID0, "web", TAGS, OVERLAY, 80, meta("overlay"), (http_check(),))],
                     id="auto-overlay-ip"),
        pytest.param(app(checks=(HTTP,)), container(), AddressMode.OVERLAY, NETWORKS,
                     [Registration(HOST, SID0, "web", TAGS, OVERLAY, 80, meta("overlay"), (http_check(),))],
                     id="overlay-overlay-ip"),
        pytest.param(app(checks=(HTTP,)), container({"bridge": "10.32.1.5"}), AddressMode.AUTO, NETWORKS,
                     [Registration(HOST, SID0, "web", TAGS, "10.32.1.5", 80, meta("overlay"), (http_check(),))],
                     id="auto-bridge-is-weave-layout"),
        pytest.param(app(), container({"weave": OVERLAY, "bridge": "10.32.1.5"}), AddressMode.AUTO,
                     ("bridge", "weave"),
                     [Registration(HOST, SID0, "web", TAGS, "10.32.1.5", 80, meta("overlay"))],
                     id="auto-networks-in-operator-order"),
        pytest.param(app(checks=(HTTP,)), container({"other": "192.168.5.5"}), AddressMode.AUTO, NETWORKS,
                     [Registration(HOST, SID0, "web", TAGS, HOST, 31000, meta("host"), (http_check(),))],
                     id="auto-no-overlay-ip-falls-back-to-host"),
        pytest.param(app(checks=(HTTP,)), container({}), AddressMode.AUTO, NETWORKS,
                     [Registration(HOST, SID0, "web", TAGS, HOST, 31000, meta("host"), (http_check(),))],
                     id="auto-no-ip-at-all-falls-back-to-host"),
        pytest.param(app(checks=(HTTP,)), None, AddressMode.HOST, NETWORKS,
                     [Registration(HOST, SID0, "web", TAGS, HOST, 31000, meta("host"), (http_check(),))],
                     id="host-mode-needs-no-container"),
        pytest.param(app(), container(), AddressMode.HOST, NETWORKS,
                     [Registration(HOST, SID0, "web", TAGS, HOST, 31000, meta("host"))],
                     id="host-mode-ignores-overlay-ip"),
        pytest.param(app(ports=(PortMapping(8080, 0, "http"),), mode=NetworkMode.HOST, checks=(HTTP,)), None,
                     AddressMode.AUTO, NETWORKS,
                     [Registration(HOST, SID0, "web", TAGS, HOST, 31000, meta("host"), (http_check(),))],
                     id="host-network-app-auto"),
        pytest.param(app(ports=(PortMapping(8080, 0, "http"),), mode=NetworkMode.HOST), None,
                     AddressMode.OVERLAY, NETWORKS,
                     [Registration(HOST, SID0, "web", TAGS, HOST, 31000, meta("host"))],
                     id="host-network-app-overlay-mode-still-host"),
    ],
)
def test_address_modes(the_app, the_container, mode, networks, expected):
    assert run(the_app, task(), the_container, mode, networks) == expected


@pytest.mark.parametrize(
    ("the_app", "the_task", "the_container", "mode", "expected"),
    [
        pytest.param(app(), task(), None, AddressMode.AUTO,
                     Skip(TID, "container-not-found", "no container with this MESOS_TASK_ID on the host", True),
                     id="auto-no-container"),
        pytest.param(app(), task(), None, AddressMode.OVERLAY,
                     Skip(TID, "container-not-found", "no container with this MESOS_TASK_ID on the host", True),
                     id="overlay-no-container"),
        pytest.param(app(), task(), container({"bridge2": "1.2.3.4"}), AddressMode.OVERLAY,
                     Skip(TID, "no-overlay-ip", "container 0123456789ab has no IP on networks weave,bridge", True),
                     id="overlay-no-ip-waits"),
        pytest.param(app(), task(), container(running=False), AddressMode.AUTO,
                     Skip(TID, "container-not-running", "container 0123456789ab is not running", True),
                     id="container-stopped"),
        pytest.param(app(), task(ports=()), container(), AddressMode.AUTO,
                     Skip(TID, "missing-host-port", "app maps 1 host ports, Marathon reports 0 for the task", True),
                     id="missing-host-port"),
        pytest.param(app(ports=(PortMapping(80, 0), PortMapping(81, 0))), task(ports=(31000,)), container(),
                     AddressMode.AUTO,
                     Skip(TID, "missing-host-port", "app maps 2 host ports, Marathon reports 1 for the task", True),
                     id="ports-shorter-than-mappings"),
        pytest.param(app(ports=()), task(ports=()), container(), AddressMode.AUTO,
                     Skip(TID, "no-ports", f"app {APP_ID} defines no ports", False), id="no-ports"),
        pytest.param(app(labels={"consul.register": "false"}), task(), container(), AddressMode.AUTO,
                     Skip(TID, "register-false",
                          "every port opted out (consul.register=false, SERVICE_IGNORE or SERVICE_<port>_IGNORE)",
                          False), id="register-false"),
        pytest.param(app(env={"SERVICE_IGNORE": "1"}), task(), container(), AddressMode.AUTO,
                     Skip(TID, "register-false",
                          "every port opted out (consul.register=false, SERVICE_IGNORE or SERVICE_<port>_IGNORE)",
                          False), id="service-ignore"),
        pytest.param(app(), task(host=""), container(), AddressMode.AUTO,
                     Skip(TID, "no-task-host", "Marathon reports no host for the task", True), id="no-task-host"),
        pytest.param(app(ports=(PortMapping(80, None),), mode=NetworkMode.USER), task(ports=()), None,
                     AddressMode.HOST,
                     Skip(TID, "no-host-port", "host addressing, and no port has a host port", False),
                     id="host-mode-user-network-without-host-port"),
        pytest.param(app(ports=(PortMapping(80, None),), mode=NetworkMode.USER), task(ports=()), container({}),
                     AddressMode.AUTO,
                     Skip(TID, "no-overlay-ip", "no IP on networks weave,bridge and no port has a host port", True),
                     id="auto-fallback-user-network-without-host-port"),
    ],
)
def test_skips(the_app, the_task, the_container, mode, expected):
    assert run(the_app, the_task, the_container, mode) == expected


@pytest.mark.parametrize(
    "state",
    ["TASK_STAGING", "TASK_STARTING", "TASK_KILLING", "TASK_FINISHED", "TASK_FAILED",
     "TASK_KILLED", "TASK_LOST", "TASK_ERROR", "TASK_DROPPED", "TASK_GONE", "TASK_GONE_BY_OPERATOR", "TASK_UNKNOWN"],
)
def test_not_running_wants_nothing(state):
    # even when everything else would be a Skip: the caller must deregister
    assert run(app(), task(state=state, ports=()), None, AddressMode.OVERLAY) == []


def test_unreachable_keeps_what_is_registered():
    # issue 19: a partitioned agent's task may still serve; the registration stays, nothing is retried
    result = run(app(), task(state="TASK_UNREACHABLE", ports=()), None, AddressMode.OVERLAY)
    assert isinstance(result, Skip) and result.keep and not result.retry and not result.reported


# --- several ports ------------------------------------------------------------------------------


def test_two_ports_two_services():
    the_app = app(ports=(PortMapping(80, 0, "http"), PortMapping(9000, 0, "admin")),
                  checks=(HTTP, HealthCheck(protocol="TCP", port_index=1, interval_seconds=5, timeout_seconds=1)))
    assert run(the_app, task(ports=(31000, 31001)), container()) == [
        Registration(HOST, SID0, "web", TAGS, OVERLAY, 80, meta("overlay", 0), (http_check(),)),
        Registration(HOST, SID1, "web-admin", TAGS, OVERLAY, 9000, meta("overlay", 1), (
            ConsulCheck(f"service:{SID1}:2", "Marathon TCP health check 2", tcp=f"{HOST}:31001", interval="5s",
                        timeout="1s"),)),
    ]


def test_one_port_opted_out():
    the_app = app(ports=(PortMapping(80, 0, "http"), PortMapping(9000, 0, "admin")),
                  env={"SERVICE_80_IGNORE": "true"})
    assert run(the_app, task(ports=(31000, 31001)), container()) == [
        Registration(HOST, SID1, "web-admin", TAGS, OVERLAY, 9000, meta("overlay", 1)),
    ]


def test_user_network_mixed_host_ports():
    """`ports` only lists existing host ports: [80 (none), 9000 (hostPort 0)] + ports [31005]."""
    the_app = app(ports=(PortMapping(80, None, "http"), PortMapping(9000, 0, "admin")), mode=NetworkMode.USER,
                  checks=(HTTP, HealthCheck(protocol="HTTP", path="/m", port_index=1, interval_seconds=10,
                                            timeout_seconds=2)))
    assert task_host_ports(the_app, task(ports=(31005,))) == [None, 31005]
    assert run(the_app, task(ports=(31005,)), container()) == [
        # no host port: its check has to go to the overlay address
        Registration(HOST, SID0, "web", TAGS, OVERLAY, 80, meta("overlay", 0),
                     (http_check(SID0, f"http://{OVERLAY}:80/health"),)),
        Registration(HOST, SID1, "web-admin", TAGS, OVERLAY, 9000, meta("overlay", 1),
                     (http_check(SID1, f"http://{HOST}:31005/m", 2),)),
    ]
    # auto fallback: only the port with a host port can be registered on the host
    assert run(the_app, task(ports=(31005,)), container({})) == [
        Registration(HOST, SID1, "web-admin", TAGS, HOST, 31005, meta("host", 1),
                     (http_check(SID1, f"http://{HOST}:31005/m", 2),)),
    ]


# --- health checks ------------------------------------------------------------------------------


def _checks(*hcs: HealthCheck, ports=(31000,), the_container=None, mapping=HTTP_PORT,
            **kw) -> tuple[ConsulCheck, ...]:
    the_app = app(ports=(mapping,), checks=hcs, mode=NetworkMode.USER if mapping.host_port is None else
                  NetworkMode.BRIDGE)
    [reg] = run(the_app, task(ports=ports), the_container or container(), **kw)
    return reg.checks


@pytest.mark.parametrize(
    ("hc", "expected"),
    [
        pytest.param(HTTP, ConsulCheck(f"service:{SID0}:1", "Marathon HTTP health check 1",
                                       http=f"http://{HOST}:31000/health", interval="10s", timeout="2s"), id="http"),
        pytest.param(HealthCheck(), ConsulCheck(f"service:{SID0}:1", "Marathon HTTP health check 1",
                                                http=f"http://{HOST}:31000/", interval="60s", timeout="20s"),
                     id="http-marathon-defaults"),
        pytest.param(HealthCheck(protocol="HTTPS", path="/s", interval_seconds=30, timeout_seconds=5),
                     ConsulCheck(f"service:{SID0}:1", "Marathon HTTPS health check 1", http=f"https://{HOST}:31000/s",
                                 interval="30s", timeout="5s", tls_skip_verify=True), id="https"),
        pytest.param(HealthCheck(protocol="MESOS_HTTP", path="/health", interval_seconds=30, timeout_seconds=10),
                     ConsulCheck(f"service:{SID0}:1", "Marathon MESOS_HTTP health check 1",
                                 http=f"http://{HOST}:31000/health", interval="30s", timeout="10s"), id="mesos-http"),
        pytest.param(HealthCheck(protocol="MESOS_HTTPS", path="/"),
                     ConsulCheck(f"service:{SID0}:1", "Marathon MESOS_HTTPS health check 1",
                                 http=f"https://{HOST}:31000/", interval="60s", timeout="20s", tls_skip_verify=True),
                     id="mesos-https"),
        pytest.param(HealthCheck(protocol="TCP", interval_seconds=5, timeout_seconds=1),
                     ConsulCheck(f"service:{SID0}:1", "Marathon TCP health check 1", tcp=f"{HOST}:31000",
                                 interval="5s", timeout="1s"), id="tcp"),
        pytest.param(HealthCheck(protocol="MESOS_TCP", interval_seconds=5, timeout_seconds=1),
                     ConsulCheck(f"service:{SID0}:1", "Marathon MESOS_TCP health check 1", tcp=f"{HOST}:31000",
                                 interval="5s", timeout="1s"), id="mesos-tcp"),
        pytest.param(HealthCheck(protocol="HTTP", path="health", interval_seconds=0, timeout_seconds=0),
                     ConsulCheck(f"service:{SID0}:1", "Marathon HTTP health check 1",
                                 http=f"http://{HOST}:31000/health", interval="1s", timeout="1s"),
                     id="path-without-slash-and-zero-durations"),
        pytest.param(HealthCheck(protocol="COMMAND", command="curl -f localhost", interval_seconds=60,
                                 max_consecutive_failures=3),
                     ConsulCheck(f"service:{SID0}:1", "Marathon COMMAND health check 1", ttl="240s",
                                 notes="Mirrors Marathon's COMMAND health check 1 (curl -f localhost); set by "
                                       "marathon-consul-registrar from Marathon's health result"),
                     id="command-ttl-marathon-window"),
        pytest.param(HealthCheck(protocol="COMMAND", interval_seconds=10, max_consecutive_failures=0),
                     ConsulCheck(f"service:{SID0}:1", "Marathon COMMAND health check 1", ttl="180s",
                                 notes="Mirrors Marathon's COMMAND health check 1; set by "
                                       "marathon-consul-registrar from Marathon's health result"),
                     id="command-ttl-floor"),
        # a fixed port equal to the container port or to the task's host port targets this mapping
        pytest.param(HealthCheck(protocol="TCP", port=80, port_index=7, interval_seconds=5, timeout_seconds=1),
                     ConsulCheck(f"service:{SID0}:1", "Marathon TCP health check 1", tcp=f"{HOST}:31000",
                                 interval="5s", timeout="1s"), id="fixed-port-container-port"),
        pytest.param(HealthCheck(protocol="HTTP", port=31000, interval_seconds=5, timeout_seconds=1),
                     ConsulCheck(f"service:{SID0}:1", "Marathon HTTP health check 1", http=f"http://{HOST}:31000/",
                                 interval="5s", timeout="1s"), id="fixed-port-host-port"),
    ],
)
def test_health_check_protocols(hc, expected):
    assert _checks(hc) == (expected,)


@pytest.mark.parametrize(
    "hc",
    [
        pytest.param(HealthCheck(protocol="HTTP", port_index=1), id="other-port-index"),
        pytest.param(HealthCheck(protocol="TCP", port=8443, port_index=0), id="fixed-port-elsewhere-wins-over-index"),
        pytest.param(HealthCheck(protocol="GRPC"), id="unknown-protocol"),
    ],
)
def test_health_checks_not_for_this_port(hc):
    assert _checks(hc) == ()


def test_fixed_requested_host_port_targets_mapping():
    hc = HealthCheck(protocol="TCP", port=31500, interval_seconds=5, timeout_seconds=1)
    assert _checks(hc, ports=(31500,), mapping=PortMapping(80, 31500)) == (
        ConsulCheck(f"service:{SID0}:1", "Marathon TCP health check 1", tcp=f"{HOST}:31500", interval="5s",
                    timeout="1s"),
    )


@pytest.mark.parametrize(
    ("overlay", "expected"),
    [
        (OVERLAY, f"http://{OVERLAY}:80/health"),
        ("fd00::5", "http://[fd00::5]:80/health"),
    ],
)
def test_no_host_port_checks_on_overlay(overlay, expected):
    checks = _checks(HTTP, ports=(), mapping=PortMapping(80, None), the_container=container({"weave": overlay}),
                     overlay_cidrs=(ipaddress.ip_network("10.32.0.0/12"), ipaddress.ip_network("fd00::/8")))
    assert checks == (http_check(SID0, expected),)


def test_command_check_on_every_port():
    cmd = HealthCheck(protocol="COMMAND", command="true")
    the_app = app(ports=(PortMapping(80, 0), PortMapping(81, 0)), checks=(HTTP, cmd))
    regs = run(the_app, task(ports=(31000, 31001)), container())
    assert [[c.check_id for c in r.checks] for r in regs] == [
        [f"service:{SID0}:1", f"service:{SID0}:2"],
        [f"service:{SID1}:2"],
    ]


@pytest.mark.parametrize(
    ("mode", "expected_ids", "expected_kinds"),
    [
        ("consul", [f"service:{SID0}:1"], ["http"]),
        ("marathon", [f"service:{SID0}:marathon:1"], ["ttl"]),
        ("both", [f"service:{SID0}:1", f"service:{SID0}:marathon:1"], ["http", "ttl"]),
    ],
)
def test_health_checks_modes(mode, expected_ids, expected_kinds):
    checks = _checks(HTTP, health_checks=mode)
    assert [c.check_id for c in checks] == expected_ids
    assert [c.kind for c in checks] == expected_kinds


def test_health_checks_mode_validated():
    with pytest.raises(ValueError, match="health_checks must be one of consul, marathon, both"):
        _checks(HTTP, health_checks="nagios")


def test_ttl_floor_is_configurable():
    [check] = _checks(HealthCheck(protocol="COMMAND", interval_seconds=10), ttl_floor_seconds=600)
    assert check.ttl == "600s"


@pytest.mark.parametrize(
    ("health", "expected"),
    [
        ((), []),
        ((None, None), []),
        ((True, True), [(f"service:{SID0}:2", "passing")]),
        ((True, False), [(f"service:{SID0}:2", "critical")]),
        ((False,), []),  # the COMMAND check is index 1; index 0 is the HTTP check Consul runs
    ],
)
def test_ttl_check_statuses(health, expected):
    the_app = app(checks=(HTTP, HealthCheck(protocol="COMMAND", command="true")))
    [reg] = run(the_app, task(), container())
    assert ttl_check_statuses(reg, task(health=health)) == expected


def test_registration_body_is_what_consul_accepts():
    the_app = app(checks=(HTTP,))
    [reg] = run(the_app, task(), container())
    assert reg.to_consul() == {
        "ID": SID0, "Name": "web", "Tags": ["customer1", "site1.customer1"], "Address": OVERLAY, "Port": 80,
        "Meta": {"managed-by": MANAGED_BY, "marathon-app-id": APP_ID, "marathon-task-id": TID,
                 "marathon-host": HOST, "port-index": "0", "address-source": "overlay"},
        "Checks": [{"CheckID": f"service:{SID0}:1", "Name": "Marathon HTTP health check 1",
                    "HTTP": f"http://{HOST}:31000/health", "Interval": "10s", "Timeout": "2s"}],
    }


def test_flat_naming_is_passed_through():
    [reg] = run(app(), task(), container(), naming=Naming.FLAT)
    assert (reg.name, reg.tags) == ("site1-customer1-web", ())
