"""Consul simulator HTTP API: ACLs, 404/405 texts, re-registration semantics, blocking queries,
filters, test-only stats, and a py-consul (sync + asyncio) round trip."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import consul
import consul.aio
import pytest
import requests
from consul_sim_fixtures import AGENT1, AGENT2, SimProc, consul_sim

ANON = "00000000-0000-0000-0000-000000000002"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProc]:
    with consul_sim(18520, 18620, Path(tmp_path_factory.mktemp("sim")), "--no-checks") as s:
        yield s


@pytest.fixture(scope="module")
def acl_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProc]:
    with consul_sim(18530, 18630, Path(tmp_path_factory.mktemp("acl")), "--no-checks",
                    "--acl-default-policy", "deny",
                    "--acl-token", "root-secret=acc-root:service:write:*,node:write:*,agent:read:*",
                    "--acl-token", "web-secret=acc-web:service:write:web,service:read:*",
                    "--acl-token", "ro-secret=acc-ro:service:read:*") as s:
        yield s


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> None:
    for name in ("sim", "acl_sim"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset()


WEB = {"Name": "web", "ID": "web-1", "Address": "10.32.0.5", "Port": 80}


# ---- ACLs --------------------------------------------------------------------------------------

def test_acl_token_sources_and_messages(acl_sim: SimProc) -> None:
    r = acl_sim.put("/v1/agent/service/register", WEB)
    assert (r.status_code, r.text) == (
        403, f"Permission denied: token with AccessorID '{ANON}' lacks permission 'service:write' on \"web\"")
    r = acl_sim.put("/v1/agent/service/register", WEB, headers={"X-Consul-Token": "bogus"})
    assert (r.status_code, r.text) == (403, "ACL not found")
    r = acl_sim.put("/v1/agent/service/register", {**WEB, "Name": "db", "ID": "db-1"},
                    headers={"X-Consul-Token": "web-secret"})
    assert (r.status_code, r.text) == (
        403, "Permission denied: token with AccessorID 'acc-web' lacks permission 'service:write' on \"db\"")
    r = acl_sim.put("/v1/agent/service/register", WEB, headers={"X-Consul-Token": "ro-secret"})
    assert r.status_code == 403 and "'acc-ro'" in r.text
    # validation before the token: a nameless body is a 400 even with a bad token
    r = acl_sim.put("/v1/agent/service/register", {"Port": 1}, headers={"X-Consul-Token": "bogus"})
    assert (r.status_code, r.text) == (400, "Missing service name")
    # header, query and bearer all work; ?token= wins over the header
    assert acl_sim.put("/v1/agent/service/register", WEB, headers={"X-Consul-Token": "web-secret"}).ok
    assert acl_sim.put("/v1/agent/service/register?token=web-secret", WEB,
                       headers={"X-Consul-Token": "bogus"}).ok
    assert acl_sim.put("/v1/agent/service/register", WEB, headers={"Authorization": "bearer web-secret"}).ok
    # reads filter instead of 403
    assert acl_sim.get("/v1/agent/services").json() == {}
    r = acl_sim.get("/v1/agent/services", headers={"X-Consul-Token": "ro-secret"})
    assert list(r.json()) == ["web-1"]
    # deregister: bad token -> ACL not found, then existence, then permission
    r = acl_sim.put("/v1/agent/service/deregister/web-1", headers={"X-Consul-Token": "bogus"})
    assert (r.status_code, r.text) == (403, "ACL not found")
    r = acl_sim.put("/v1/agent/service/deregister/nope")
    assert r.status_code == 404
    r = acl_sim.put("/v1/agent/service/deregister/web-1", headers={"X-Consul-Token": "ro-secret"})
    assert r.status_code == 403 and "service:write" in r.text
    assert acl_sim.put("/v1/agent/service/deregister/web-1", headers={"X-Consul-Token": "root-secret"}).ok
    r = acl_sim.get("/v1/agent/self")
    assert r.status_code == 403 and "'agent:read' on \"node-a\"" in r.text
    assert acl_sim.get("/v1/agent/self?token=root-secret").json()["Config"]["NodeName"] == "node-a"


def test_acl_off_ignores_tokens(sim: SimProc) -> None:
    assert sim.put("/v1/agent/service/register", WEB, headers={"X-Consul-Token": "anything"}).ok


# ---- 404 / 405 ---------------------------------------------------------------------------------

def test_deregister_unknown_id(sim: SimProc) -> None:
    r = sim.put("/v1/agent/service/deregister/web")
    assert r.status_code == 404
    assert r.text == 'Unknown service ID "web". Ensure that the service ID is passed, not the service name.'
    assert sim.get("/v1/agent/service/web").text == "unknown service ID: web"


def test_wrong_method_and_unknown_path(sim: SimProc) -> None:
    r = requests.get(sim.url() + "/v1/agent/service/register", timeout=5)
    assert (r.status_code, r.text, r.headers["Allow"]) == (405, "method GET not allowed", "OPTIONS,PUT")
    r = requests.post(sim.url() + "/v1/agent/check/pass/x", timeout=5)
    assert (r.status_code, r.text, r.headers["Allow"]) == (405, "method POST not allowed", "OPTIONS,PUT")
    r = requests.put(sim.url() + "/v1/agent/services", timeout=5)
    assert (r.status_code, r.headers["Allow"]) == (405, "OPTIONS,GET")
    r = requests.options(sim.url() + "/v1/health/service/web", timeout=5)
    assert (r.status_code, r.headers["Allow"]) == (200, "OPTIONS,GET")
    r = sim.get("/v1/agent/nonsense")
    assert (r.status_code, r.text) == (404, "Invalid URL path: not a recognized HTTP API endpoint")


# ---- registration semantics --------------------------------------------------------------------

def _checks(sim: SimProc) -> dict[str, Any]:
    return sim.get("/v1/agent/checks").json()


def test_reregistration_idempotent_and_keeps_status(sim: SimProc) -> None:
    body = {**WEB, "Checks": [{"TTL": "30s"}, {"TTL": "30s", "CheckID": "extra"}]}
    assert sim.put("/v1/agent/service/register", body).ok
    assert set(_checks(sim)) == {"service:web-1:1", "extra"}
    assert sim.put("/v1/agent/check/pass/extra?note=fine").ok
    idx = sim.get("/v1/health/service/web").headers["X-Consul-Index"]
    assert sim.put("/v1/agent/service/register", body).ok
    assert sim.get("/v1/health/service/web").headers["X-Consul-Index"] == idx  # identical: no write
    c = _checks(sim)["extra"]
    assert (c["Status"], c["Output"]) == ("passing", "fine")
    # new content is a write; the check keeps its status across it
    assert sim.put("/v1/agent/service/register", {**body, "Tags": ["t"]}).ok
    assert int(sim.get("/v1/health/service/web").headers["X-Consul-Index"]) > int(idx)
    assert _checks(sim)["extra"]["Status"] == "passing"


def test_replace_existing_checks(sim: SimProc) -> None:
    assert sim.put("/v1/agent/service/register", {**WEB, "Checks": [{"TTL": "30s"}, {"TTL": "60s"}]}).ok
    only_one = {**WEB, "Check": {"TTL": "30s"}}
    assert sim.put("/v1/agent/service/register", only_one).ok  # without the flag: kept
    assert set(_checks(sim)) == {"service:web-1", "service:web-1:1", "service:web-1:2"}
    assert sim.put("/v1/agent/service/register?replace-existing-checks=1", only_one).ok  # "1" is false
    assert len(_checks(sim)) == 3
    assert sim.put("/v1/agent/service/register?replace-existing-checks", only_one).ok
    assert set(_checks(sim)) == {"service:web-1"}
    assert sim.put("/v1/agent/service/register?replace-existing-checks=true", WEB).ok
    assert _checks(sim) == {}


def test_catalog_reflects_agents(sim: SimProc) -> None:
    assert sim.put("/v1/agent/service/register", {**WEB, "Tags": ["Customer1"]}).ok
    assert sim.put("/v1/agent/service/register", {**WEB, "ID": "web-2", "Address": ""}, host=AGENT2).ok
    cat = sim.get("/v1/catalog/service/WEB", host=AGENT2).json()
    assert [(e["Node"], e["ServiceID"], e["ServiceAddress"], e["Address"]) for e in cat] == [
        ("node-a", "web-1", "10.32.0.5", AGENT1), ("node-b", "web-2", "", AGENT2)]
    assert len(sim.get("/v1/catalog/service/web?tag=customer1").json()) == 1
    assert sim.get("/v1/catalog/services").json() == {"web": ["Customer1"]}
    health = sim.get("/v1/health/service/web?tag=CUSTOMER1").json()
    assert [h["Service"]["ID"] for h in health] == ["web-1"]
    assert health[0]["Checks"][0]["CheckID"] == "serfHealth"
    assert sim.get("/v1/health/service/web?passing=maybe").text == "Invalid value for ?passing"
    assert sim.get("/v1/agent/services", host=AGENT2).json().keys() == {"web-2"}
    nodes = sim.get("/v1/catalog/node-services/node-b").json()
    assert [s["ID"] for s in nodes["Services"]] == ["web-2"]
    me = sim.get("/v1/agent/self", host=AGENT2).json()
    assert (me["Config"]["NodeName"], me["Member"]["Addr"], me["Config"]["Datacenter"]) == ("node-b", AGENT2, "dc1")
    assert sim.get("/v1/status/leader").json()


def test_filter_expressions(sim: SimProc) -> None:
    assert sim.put("/v1/agent/service/register", {**WEB, "Meta": {"managed-by": "mcr"}}).ok
    assert sim.put("/v1/agent/service/register", {**WEB, "ID": "other", "Name": "db"}).ok
    for expr, ids in [('Meta["managed-by"] == "mcr"', {"web-1"}), ("Meta.managed-by == \"mcr\"", {"web-1"}),
                      ('Service == "db"', {"other"}), ('Service != "db"', {"web-1"}),
                      ('Service == "web" and Meta["managed-by"] != "x"', {"web-1"})]:
        assert set(sim.get("/v1/agent/services", params={"filter": expr}).json()) == ids, expr
    r = sim.get("/v1/agent/services", params={"filter": "Bogus == 1"})
    assert r.status_code == 500 and 'Selector "Bogus" is not valid' in r.text
    assert sim.get("/v1/agent/services", params={"filter": "Service ==="}).status_code == 500


# ---- blocking queries --------------------------------------------------------------------------

def test_blocking_query_returns_on_change(sim: SimProc) -> None:
    r = sim.get("/v1/health/service/web")
    assert r.headers["X-Consul-KnownLeader"] == "true" and r.headers["X-Consul-LastContact"] == "0"
    idx = int(r.headers["X-Consul-Index"])
    assert idx >= 1

    def later() -> None:
        time.sleep(0.5)
        sim.put("/v1/agent/service/register", WEB)

    threading.Thread(target=later).start()
    t0 = time.monotonic()
    r = sim.get(f"/v1/health/service/web?index={idx}&wait=20s")
    took = time.monotonic() - t0
    assert 0.3 < took < 5
    assert int(r.headers["X-Consul-Index"]) > idx and r.json()[0]["Service"]["ID"] == "web-1"
    # no change: waits ~wait, returns the same index
    idx = int(r.headers["X-Consul-Index"])
    t0 = time.monotonic()
    r = sim.get(f"/v1/catalog/service/web?index={idx}&wait=400ms")
    assert 0.35 < time.monotonic() - t0 < 3 and int(r.headers["X-Consul-Index"]) == idx
    assert (sim.get("/v1/health/service/web?wait=abc").status_code,
            sim.get("/v1/health/service/web?wait=abc").text) == (400, "Invalid wait time")
    assert sim.get("/v1/catalog/services?index=-1").text == "Invalid index"


# ---- test-only endpoints -----------------------------------------------------------------------

def test_stats_and_reset(sim: SimProc) -> None:
    requests.post(sim.url() + "/_sim/stats/reset", timeout=5)
    sim.put("/v1/agent/service/register", WEB)
    sim.put("/v1/agent/service/register", WEB)
    sim.put("/v1/agent/service/deregister/web-1", host=AGENT2)
    stats = requests.get(sim.url() + "/_sim/stats", timeout=5).json()
    assert stats[f"{AGENT1}:{sim.port}"]["PUT /v1/agent/service/register"] == 2
    assert stats[f"{AGENT2}:{sim.port}"]["PUT /v1/agent/service/deregister/{id}"] == 1
    sim.reset()
    assert sim.get("/v1/agent/services").json() == {}


# ---- py-consul ---------------------------------------------------------------------------------

def test_py_consul_sync_round_trip(sim: SimProc) -> None:
    c = consul.Consul(host=AGENT1, port=sim.port)
    check = consul.Check.http("http://127.0.0.2:31000/health", interval="10s", timeout="2s", deregister="1m")
    assert c.agent.service.register("web", service_id="web-1", address="10.32.0.5", port=80, tags=["a"],
                                    meta={"managed-by": "mcr"}, check=check,
                                    extra_checks=[consul.Check.tcp("127.0.0.2", 31000, "10s")],
                                    replace_existing_checks=True) is True
    services = c.agent.services()
    assert services["web-1"]["Meta"] == {"managed-by": "mcr"}
    assert set(c.agent.checks()) == {"service:web-1:1", "service:web-1:2"}
    assert c.agent.services(filter_expr='Meta["managed-by"] == "mcr"').keys() == {"web-1"}
    index, nodes = c.health.service("web")
    assert int(index) >= 1 and nodes[0]["Service"]["Address"] == "10.32.0.5"
    assert c.health.service("web", passing=True)[1] == []  # checks start critical
    c.agent.check.register("ttl", consul.Check.ttl("30s"), check_id="web-ttl", service_id="web-1")
    c.agent.check.ttl_pass("web-ttl", notes="ok")
    assert c.agent.checks()["web-ttl"]["Status"] == "passing"
    assert c.agent.self()["Config"]["NodeName"] == "node-a"
    assert c.agent.service.deregister("web-1") is True
    assert c.agent.service.deregister("web-1") is False  # 404 -> False
    assert c.agent.services() == {}
    with pytest.raises(consul.ConsulException):
        c.agent.service.register("web", service_id="w", meta={"consul-x": "1"})


async def test_py_consul_aio_round_trip(sim: SimProc) -> None:
    async with consul.aio.Consul(host=AGENT2, port=sim.port) as c:
        ok = await c.agent.service.register(
            "api", service_id="api-1", address="10.32.0.6", port=8080,
            check=consul.Check.tcp("127.0.0.3", 31001, "5s", deregister="90s"), replace_existing_checks=True)
        assert ok is True
        assert (await c.agent.services())["api-1"]["Port"] == 8080
        _, entries = await c.catalog.service("api")
        assert entries[0]["Node"] == "node-b"
        assert (await c.agent.checks())["service:api-1"]["Status"] == "critical"
        assert await c.agent.service.deregister("api-1") is True
        assert await c.agent.services() == {}
