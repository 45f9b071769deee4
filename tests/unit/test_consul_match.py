""""Does the agent's registration match ours?": the equality that decides every write of a resync
(service/model.py: go_duration_seconds, same_check, OwnedService.matches)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from service.registration import ConsulCheck, OwnedService, Registration, go_duration_seconds, same_check


@pytest.mark.parametrize("value,seconds", [
    ("10s", 10.0), ("1m0s", 60.0), ("1h1m1s", 3661.0), ("1.5s", 1.5), ("500ms", 0.5), ("250us", 250e-6),
    ("250µs", 250e-6), ("100ns", 100e-9), ("+5s", 5.0),
    (10_000_000_000, 10.0),  # a JSON number is nanoseconds
    (None, None), ("", None), (0, None), ("0s", None),  # no duration (Consul echoes 0 for unset)
    ("10", None), ("ten seconds", None), ("10s junk", None), ("5d", None),  # not Go durations
])
def test_go_duration_seconds(value: object, seconds: float | None) -> None:
    assert go_duration_seconds(value) == (pytest.approx(seconds) if seconds is not None else None)


HTTP = ConsulCheck(check_id="service:s:1", name="Marathon HTTP health check 1", http="http://h:31000/health",
                   interval="10s", timeout="2s")
TTL = ConsulCheck(check_id="service:s:2", name="mirror", ttl="180s", notes="Mirrors Marathon")


@pytest.mark.parametrize("desired,actual,actual_type,same", [
    (HTTP, HTTP, "http", True),
    (HTTP, replace(HTTP, interval="0h0m10s", timeout="2000ms"), "http", True),  # Go's canonical echo
    (HTTP, replace(HTTP, http=None, interval=None, timeout=None), "http", True),  # old agent: no Definition
    (HTTP, HTTP, "", True),  # no Type echoed
    (HTTP, replace(HTTP, check_id="service:s:9"), "http", False),
    (HTTP, replace(HTTP, name="other"), "http", False),
    (HTTP, replace(HTTP, notes="edited"), "http", False),
    (HTTP, HTTP, "tcp", False),  # same id, another kind of check
    (HTTP, replace(HTTP, http="http://h:31001/health"), "http", False),
    (HTTP, replace(HTTP, interval="30s"), "http", False),
    (HTTP, replace(HTTP, timeout="5s"), "http", False),
    (TTL, TTL, "ttl", True),
    (TTL, replace(TTL, ttl="3m0s"), "ttl", True),
    (TTL, replace(TTL, ttl="60s"), "ttl", False),
    (replace(HTTP, http=None, tcp="h:31000"), replace(HTTP, http=None, tcp="h:31001"), "tcp", False),
])
def test_same_check(desired: ConsulCheck, actual: ConsulCheck, actual_type: str, same: bool) -> None:
    assert same_check(desired, actual, actual_type) is same


OURS = Registration(agent_host="127.0.0.2", service_id="mcr-t-0", name="web", tags=("a", "b.a"), address="10.32.0.5",
                    port=80, meta=(("managed-by", "marathon-consul-registrar"), ("marathon-task-id", "t")),
                    checks=(HTTP, TTL))


def held(reg: Registration, types: dict[str, str] | None = None) -> OwnedService:
    return OwnedService(reg, types if types is not None else {c.check_id: c.kind for c in reg.checks}, {})


@pytest.mark.parametrize("theirs,matches", [
    (held(OURS), True),
    (held(replace(OURS, checks=(TTL, HTTP))), True),  # check order does not matter
    (held(replace(OURS, agent_host="127.0.0.3")), True),  # where it is, is the caller's question (diff.in_place)
    (held(replace(OURS, service_id="mcr-t-1")), False),
    (held(replace(OURS, name="api")), False),
    (held(replace(OURS, tags=("b.a", "a"))), False),  # in order: we write one order, Consul keeps it
    (held(replace(OURS, tags=("a",))), False),
    (held(replace(OURS, address="10.32.0.6")), False),
    (held(replace(OURS, port=8080)), False),
    (held(replace(OURS, meta=(("managed-by", "marathon-consul-registrar"),))), False),
    (held(replace(OURS, checks=(HTTP,))), False),  # a check missing
    (held(replace(OURS, checks=(HTTP, TTL, replace(TTL, check_id="service:s:3")))), False),  # one too many
    (held(replace(OURS, checks=(HTTP, replace(TTL, check_id="service:s:3")))), False),  # same count, other id
    (held(replace(OURS, checks=(replace(HTTP, interval="99s"), TTL))), False),  # a check differs
    (held(OURS, {HTTP.check_id: "tcp", TTL.check_id: "ttl"}), False),  # the agent runs another kind
])
def test_owned_service_matches(theirs: OwnedService, matches: bool) -> None:
    assert theirs.matches(OURS) is matches
