"""The bench-only registration log of the Consul simulator (`--registration-log`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from consul_sim_fixtures import AGENT1, AGENT2, SimProc, consul_sim


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProc]:
    with consul_sim(18540, 18640, Path(tmp_path_factory.mktemp("reglog")), "--no-checks",
                    "--registration-log") as s:
        yield s


@pytest.fixture(scope="module")
def unlogged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProc]:
    with consul_sim(18550, 18650, Path(tmp_path_factory.mktemp("noreglog")), "--no-checks") as s:
        yield s


def test_register_and_deregister_are_logged_with_monotonic_time(logged: SimProc) -> None:
    before = time.monotonic()
    assert logged.put("/v1/agent/service/register", {"Name": "web", "ID": "web-1", "Port": 80}).status_code == 200
    assert logged.put("/v1/agent/service/register", {"Name": "web", "ID": "web-2", "Port": 80},
                      host=AGENT2).status_code == 200
    assert logged.put("/v1/agent/service/register", {"Name": "", "ID": "bad"}).status_code == 400  # rejected
    assert logged.put("/v1/agent/service/deregister/web-1").status_code == 200
    after = time.monotonic()
    body = logged.get("/_sim/registrations").json()
    ops = [(op, sid, agent) for op, sid, agent, _, _ in body["entries"]]
    assert ops == [("register", "web-1", f"{AGENT1}:18540"), ("register", "web-2", f"{AGENT2}:18540"),
                   ("deregister", "web-1", f"{AGENT1}:18540")]
    assert all(before <= mono <= after for _, _, _, mono, _ in body["entries"])
    assert body["next"] == 3
    assert logged.get("/_sim/registrations?since=2").json()["entries"][0][:2] == ["deregister", "web-1"]
    requests.post(logged.url() + "/_sim/registrations/reset", timeout=5).raise_for_status()
    assert logged.get("/_sim/registrations").json() == {"next": 0, "entries": []}


def test_log_is_off_by_default(unlogged: SimProc) -> None:
    assert unlogged.put("/v1/agent/service/register", {"Name": "web", "ID": "web-1", "Port": 80}).status_code == 200
    assert unlogged.get("/_sim/registrations").status_code == 404


def test_client_names_the_writer_on_request(logged: SimProc) -> None:
    """`?client=1` adds the request's User-Agent: which instance wrote what (bench.failover's overlap
    check); without it the entries keep their five fields for older readers."""
    requests.post(logged.url() + "/_sim/registrations/reset", timeout=5).raise_for_status()
    ua = {"User-Agent": "marathon-consul-registrar/0.1.0 (pid 4242; vm)"}
    r = requests.put(logged.url() + "/v1/agent/service/register", json={"Name": "web", "ID": "web-9", "Port": 80},
                     headers=ua, timeout=5)
    assert r.status_code == 200
    [entry] = logged.get("/_sim/registrations?client=1").json()["entries"]
    assert (entry[0], entry[1], entry[5]) == ("register", "web-9", ua["User-Agent"])
    assert len(logged.get("/_sim/registrations").json()["entries"][0]) == 5
