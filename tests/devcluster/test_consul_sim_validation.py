"""Consul's registration validation, table-driven: every bad body gets real Consul's status and text
(reference/consul.md §1.2-§1.3, §2), and a rejected registration leaves the agent unchanged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from consul_sim_fixtures import SimProc, consul_sim

PORT, DNS_PORT = 18510, 18610
PREFIX = "Request decode failed: json: cannot unmarshal "
META = "Invalid Service Meta: Couldn't load metadata pair "


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProc]:
    with consul_sim(PORT, DNS_PORT, Path(tmp_path_factory.mktemp("sim")), "--no-checks") as s:
        yield s


def svc(**extra: Any) -> dict[str, Any]:
    return {"Name": "web", "ID": "web-1", "Address": "10.32.0.5", "Port": 80, **extra}


def chk(**fields: Any) -> dict[str, Any]:
    return svc(Checks=[fields])


# (body, status, exact text or (prefix, suffix))
CASES: list[tuple[Any, int, str | tuple[str, str]]] = [
    (b"", 400, "Request decode failed: EOF"),
    (b'{"Name": "web"', 400, "Request decode failed: unexpected EOF"),
    (b"{'Name': 'web'}", 400,
     "Request decode failed: invalid character '\\'' looking for beginning of object key string"),
    (b'{"Name": "web",}', 400,
     "Request decode failed: invalid character '}' looking for beginning of object key string"),
    (b'{"Name" "web"}', 400, "Request decode failed: invalid character '\"' after object key"),
    (svc(Foo=1), 400, 'Request decode failed: json: unknown field "Foo"'),
    ({"Service": {"Name": "web"}}, 400, 'Request decode failed: json: unknown field "Service"'),
    (svc(Port="80"), 400, (PREFIX + "string into Go struct field ", ".Port of type int")),
    (svc(Port=80.5), 400, (PREFIX + "number 80.5 into Go struct field ", ".Port of type int")),
    (svc(Tags="a"), 400, (PREFIX + "string into Go struct field ", ".Tags of type []string")),
    (svc(Meta={"k": 1}), 400, (PREFIX + "number into Go struct field ", " of type string")),
    (svc(EnableTagOverride="yes"), 400, (PREFIX + "string into Go struct field ", " of type bool")),
    (svc(TaggedAddresses={"lan": "1.2.3.4"}), 400, (PREFIX + "string into Go struct field ", "ServiceAddress")),
    ({"ID": "web-1", "Port": 80}, 400, "Missing service name"),
    ({"ID": "web-1", "Address": "0.0.0.0"}, 400, "Missing service name"),  # name is checked first
    (svc(Address="0.0.0.0"), 400, "Invalid service address"),
    (svc(Address="::"), 400, "Invalid service address"),
    (svc(Address="[::]"), 400, "Invalid service address"),
    (svc(Weights={"Passing": 0, "Warning": 1}), 400, "Invalid Weights: Passing must be greater than 0"),
    (svc(Weights={}), 400, "Invalid Weights: Passing must be greater than 0"),
    (svc(Weights={"Passing": 1, "Warning": -1}), 400, "Invalid Weights: Warning must be greater or equal than 0"),
    (svc(Weights={"Passing": 70000, "Warning": 1}), 400, "Invalid Weights: DNS Weight must be between 0 and 65535"),
    (svc(Weights={"Passing": 0}, Meta={"consul-x": "1"}), 400, "Invalid Weights: Passing must be greater than 0"),
    (svc(Meta={f"k{i}": "v" for i in range(65)}), 400,
     "Invalid Service Meta: Node metadata cannot contain more than 64 key/value pairs"),
    (svc(Meta={"": "x"}), 400, "Invalid Service Meta: Couldn't load metadata pair ('', 'x'): Key cannot be blank"),
    (svc(Meta={"a.b": "x"}), 400,
     META + "('a.b', 'x'): Key contains invalid characters"),
    (svc(Meta={"k" * 129: "x"}), 400,
     META + f"('{'k' * 129}', 'x'): Key is too long (limit: 128 characters)"),
    (svc(Meta={"consul-x": "1"}), 400,
     META + "('consul-x', '1'): Key prefix 'consul-' is reserved for internal use"),
    (svc(Meta={"k": "v" * 513}), 400,
     META + f"('k', '{'v' * 513}'): Value is too long (limit: 512 characters)"),
    (chk(HTTP="http://x/", Interval="10s", TTL="10s"), 400, "Invalid check: Interval and TTL cannot both be specified"),
    (chk(HTTP="http://x/"), 400,
     "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"),
    (chk(TCP="1.2.3.4:80", Interval="0s"), 400,
     "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"),
    (svc(Checks=[{}]), 400, "Invalid check: TTL must be > 0 for TTL checks"),
    (chk(AliasService="db", Interval="10s"), 400, "Invalid check: Interval cannot be set for Alias checks"),
    (chk(AliasService="db", TTL="10s"), 400, "Invalid check: TTL must be not be set for Alias checks"),
    (chk(TTL="10s", OutputMaxSize=-1), 400, "Invalid check: MaxOutputMaxSize must be positive"),
    (chk(TTL="10s", FailuresBeforeWarning=3, FailuresBeforeCritical=1), 400,
     "Invalid check: FailuresBeforeWarning can't be higher than FailuresBeforeCritical"),
    (chk(TTL="10s", Status="ok"), 400, "Status for checks must 'passing', 'warning', 'critical'"),
    (svc(Check={"TTL": "10s", "Status": "up"}), 400, "Status for checks must 'passing', 'warning', 'critical'"),
    (chk(HTTP="http://x/", Interval="10"), 400, 'Request decode failed: time: missing unit in duration "10"'),
    (chk(HTTP="http://x/", Interval="abc"), 400, 'Request decode failed: time: invalid duration "abc"'),
    (chk(HTTP="http://x/", Interval="10s", Timeout="5x"), 400,
     'Request decode failed: time: unknown unit "x" in duration "5x"'),
    (chk(TTL="10s", DeregisterCriticalServiceAfter="soon"), 400,
     'Request decode failed: time: invalid duration "soon"'),
    (chk(TTL="10s", success_before_passing=1), 400,
     'Request decode failed: json: unknown field "success_before_passing"'),
    (chk(script="/bin/true", Interval="10s"), 400, 'Request decode failed: json: unknown field "script"'),
    (chk(ID="c1", TTL="10s"), 400, 'Request decode failed: json: unknown field "ID"'),
    (chk(HTTP="http://x/", Interval="10s", Header={"X": "y"}), 400,
     (PREFIX + "string into Go struct field ", " of type []string")),
    (svc(TaggedAddresses={"lan_ipv4": {"Address": "not-an-ip", "Port": 80}}), 500,
     'Service tagged address "lan_ipv4" must be a valid ipv4 address'),
    (svc(TaggedAddresses={"wan_ipv4": {"Address": "::1", "Port": 80}}), 500,
     'Service tagged address "wan_ipv4" must be a valid ipv4 address'),
    (svc(TaggedAddresses={"lan_ipv6": {"Address": "10.0.0.1", "Port": 80}}), 500,
     'Service tagged address "lan_ipv6" must be a valid ipv6 address'),
    (chk(Args=["/bin/true"], Interval="10s"), 500,
     "Scripts are disabled on this agent; to enable, configure 'enable_script_checks' or "
     "'enable_local_script_checks' to true"),
]


@pytest.fixture(scope="module")
def baseline(sim: SimProc) -> dict[str, Any]:
    sim.reset()
    r = sim.put("/v1/agent/service/register", {"Name": "web", "ID": "web-1", "Address": "10.32.0.9",
                                               "Port": 8080, "Meta": {"v": "1"}})
    assert r.status_code == 200, r.text
    return {"services": sim.get("/v1/agent/services").json(), "checks": sim.get("/v1/agent/checks").json()}


@pytest.mark.parametrize(("body", "status", "text"), CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_bad_registration(sim: SimProc, baseline: dict[str, Any], body: Any, status: int,
                          text: str | tuple[str, str]) -> None:
    r = sim.put("/v1/agent/service/register", body)
    assert r.status_code == status
    assert r.headers["Content-Type"].startswith("text/plain")
    if isinstance(text, tuple):
        assert r.text.startswith(text[0]) and text[1] in r.text, r.text
    else:
        assert r.text == text
    assert sim.get("/v1/agent/services").json() == baseline["services"]
    assert sim.get("/v1/agent/checks").json() == baseline["checks"]


def test_keys_are_case_insensitive_and_defaults_filled(sim: SimProc) -> None:
    body = {"NAME": "api", "id": "api-1", "ADDRESS": "10.32.0.7", "port": 9000, "tags": ["x"],
            "enable_tag_override": True, "CHECKS": [{"ttl": "30s", "deregister_critical_service_after": "90s"}]}
    r = sim.put("/v1/agent/service/register", json.dumps(body))
    assert r.status_code == 200 and r.text == ""
    s = sim.get("/v1/agent/service/api-1").json()
    assert s["Service"] == "api" and s["Port"] == 9000 and s["EnableTagOverride"] is True
    assert s["Weights"] == {"Passing": 1, "Warning": 1}
    assert s["TaggedAddresses"] == {"lan_ipv4": {"Address": "10.32.0.7", "Port": 9000},
                                    "wan_ipv4": {"Address": "10.32.0.7", "Port": 9000}}
    c = sim.get("/v1/agent/checks").json()["service:api-1"]
    assert c["Status"] == "critical" and c["Type"] == "ttl" and c["Name"] == "Service 'api' check"
    assert c["Definition"]["DeregisterCriticalServiceAfter"] == "1m30s"


def test_numeric_durations_are_nanoseconds_and_empty_check_ignored(sim: SimProc) -> None:
    r = sim.put("/v1/agent/service/register",
                svc(ID="num-1", Check={}, Checks=[{"TCP": "127.0.0.1:1", "Interval": 2_000_000_000}]))
    assert r.status_code == 200, r.text
    checks = sim.get("/v1/agent/checks").json()
    assert checks["service:num-1"]["Interval"] == "2s"


def test_update_and_check_register_errors(sim: SimProc) -> None:
    r = sim.put("/v1/agent/check/register", {"TTL": "10s"})
    assert (r.status_code, r.text) == (400, "Missing check name")
    r = sim.put("/v1/agent/check/register", {"Name": "x", "TTL": "10s", "Status": "up"})
    assert (r.status_code, r.text) == (400, "Bad check status")
    r = sim.put("/v1/agent/check/register", {"Name": "x", "HTTP": "http://x/"})
    assert r.status_code == 400 and r.text.startswith("Invalid check: Interval must be > 0")
    r = sim.put("/v1/agent/check/register", {"Name": "x", "TTL": "10s", "ServiceID": "nope"})
    assert (r.status_code, r.text) == (404, 'ServiceID "nope" does not exist')
    r = sim.put("/v1/agent/check/update/whatever", {"Status": "fine"})
    assert (r.status_code, r.text) == (400, "Invalid check status: 'fine'")
    r = sim.put("/v1/agent/check/pass/nope")
    assert (r.status_code, r.text) == (
        404, 'Unknown check ID "nope". Ensure that the check ID is passed, not the check name.')
