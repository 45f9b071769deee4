"""Consul simulator check execution (HTTP, TCP, TTL, reaper) and DNS answers checked with `dig`."""

from __future__ import annotations

import http.server
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from consul_sim_fixtures import AGENT1, AGENT2, SimProc, consul_sim


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProc]:
    with consul_sim(18540, 18640, Path(tmp_path_factory.mktemp("sim")),
                    "--check-reap-interval", "0.2", "--check-deregister-min", "0.5") as s:
        yield s


@pytest.fixture(autouse=True)
def _clean(sim: SimProc) -> None:
    sim.reset()


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(pred: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def status(sim: SimProc, check_id: str, host: str = AGENT1) -> str:
    return sim.get("/v1/agent/checks", host=host).json().get(check_id, {}).get("Status", "")


class _Health(http.server.BaseHTTPRequestHandler):
    agents: list[str] = []

    def do_GET(self) -> None:
        _Health.agents.append(self.headers.get("User-Agent", ""))
        body = b"all good"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


# ---- checks ------------------------------------------------------------------------------------

def test_http_check_passes_then_critical_when_server_stops(sim: SimProc) -> None:
    port = _free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{port}/health"
    try:
        assert sim.put("/v1/agent/service/register", {"Name": "web", "ID": "web-1", "Port": 80,
                                                      "Check": {"HTTP": url, "Interval": "100ms"}}).ok
        assert status(sim, "service:web-1") == "critical"  # before the first run
        wait_for(lambda: status(sim, "service:web-1") == "passing", 3)
        out = sim.get("/v1/agent/checks").json()["service:web-1"]["Output"]
        assert out == f"HTTP GET {url}: 200 OK Output: all good"
        assert "Consul Health Check" in _Health.agents
        assert sim.get("/v1/health/service/web?passing").json()[0]["Service"]["ID"] == "web-1"
    finally:
        server.shutdown()
        server.server_close()
    wait_for(lambda: status(sim, "service:web-1") == "critical", 4)  # interval clamped to 1 s
    out = sim.get("/v1/agent/checks").json()["service:web-1"]["Output"]
    assert out.startswith(f'Get "{url}": dial tcp 127.0.0.1:{port}: ') and "refused" in out
    assert sim.get("/v1/health/service/web?passing=true").json() == []


def test_tcp_check(sim: SimProc) -> None:
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    addr = f"127.0.0.1:{lsock.getsockname()[1]}"
    try:
        assert sim.put("/v1/agent/service/register", {"Name": "db", "ID": "db-1", "Port": 5432,
                                                      "Check": {"TCP": addr, "Interval": "1s"}},
                       host=AGENT2).ok
        wait_for(lambda: status(sim, "service:db-1", AGENT2) == "passing", 3)
        assert sim.get("/v1/agent/checks", host=AGENT2).json()["service:db-1"]["Output"] == (
            f"TCP connect {addr}: Success")
    finally:
        lsock.close()
    wait_for(lambda: status(sim, "service:db-1", AGENT2) == "critical", 4)
    assert "connection refused" in sim.get("/v1/agent/checks", host=AGENT2).json()["service:db-1"]["Output"]


def test_ttl_expiry_and_reaper(sim: SimProc) -> None:
    body = {"Name": "job", "ID": "job-1", "Port": 1,
            "Check": {"TTL": "700ms", "DeregisterCriticalServiceAfter": "600ms"}}
    assert sim.put("/v1/agent/service/register", body).ok
    assert sim.put("/v1/agent/check/pass/service:job-1?note=alive").ok
    assert status(sim, "service:job-1") == "passing"
    wait_for(lambda: status(sim, "service:job-1") == "critical", 3)
    out = sim.get("/v1/agent/checks").json()["service:job-1"]["Output"]
    assert out == "TTL expired (last output before timeout follows): alive"
    # critical for longer than DeregisterCriticalServiceAfter: the whole service is reaped
    wait_for(lambda: "job-1" not in sim.get("/v1/agent/services").json(), 4)
    assert sim.get("/v1/agent/checks").json() == {}
    assert sim.get("/v1/catalog/service/job").json() == []


def test_ttl_update_on_non_ttl_check(sim: SimProc) -> None:
    assert sim.put("/v1/agent/service/register", {"Name": "x", "Check": {"TCP": "127.0.0.1:1",
                                                                         "Interval": "10s"}}).ok
    r = sim.put("/v1/agent/check/update/service:x", {"Status": "passing", "Output": "hi"})
    assert (r.status_code, r.text) == (500, 'CheckID "service:x" does not have associated TTL')


# ---- DNS ---------------------------------------------------------------------------------------

DIG = shutil.which("dig")
needs_dig = pytest.mark.skipif(DIG is None, reason="dig (dnsutils) is not installed")


def dig(sim: SimProc, *args: str) -> str:
    assert DIG is not None
    out = subprocess.run([DIG, "@127.0.0.1", "-p", str(sim.dns_port), "+time=2", "+tries=1", *args],
                         capture_output=True, text=True, timeout=10, check=True)
    return out.stdout


def short(sim: SimProc, *args: str) -> list[str]:
    return sorted(dig(sim, "+short", *args).split())


def _site(sim: SimProc, sid: str, ip: str, tags: list[str], host: str = AGENT1, status: str = "passing") -> None:
    body = {"Name": "web", "ID": sid, "Address": ip, "Port": 80, "Tags": tags,
            "Check": {"TTL": "60s", "Status": status}}
    assert sim.put("/v1/agent/service/register", body, host=host).ok


@needs_dig
def test_dns_dotted_tags_with_dig(sim: SimProc) -> None:
    _site(sim, "s1", "10.32.0.5", ["customer1", "site1.customer1"])
    _site(sim, "s2", "10.32.0.6", ["customer1", "site2.customer1"], host=AGENT2)
    _site(sim, "s3", "10.32.0.7", ["customer2", "site1.customer2"])
    assert short(sim, "site1.customer1.web.service.dc1.consul") == ["10.32.0.5"]
    assert short(sim, "SITE1.Customer1.WEB.service.consul") == ["10.32.0.5"]
    assert short(sim, "customer1.web.service.dc1.consul") == ["10.32.0.5", "10.32.0.6"]
    assert short(sim, "web.service.consul") == ["10.32.0.5", "10.32.0.6", "10.32.0.7"]
    # the two labels are ONE tag "site1.customer1", not two tags
    assert "NXDOMAIN" in dig(sim, "customer1.site1.web.service.consul")
    srv = dig(sim, "site1.customer1.web.service.consul", "SRV", "+noall", "+answer", "+additional")
    assert "SRV\t1 1 80 0a200005.addr.dc1.consul." in srv
    assert "0a200005.addr.dc1.consul. 0\tIN\tA\t10.32.0.5" in srv
    rfc = dig(sim, "_web._site2.customer1.service.consul", "SRV", "+short")
    assert rfc.strip() == "" or "addr" in rfc  # dotted RFC 2782 tags are not a thing: no crash
    assert short(sim, "_web._tcp.service.consul", "SRV") == sorted(
        "1 1 80 0a200005.addr.dc1.consul. 1 1 80 0a200006.addr.dc1.consul. 1 1 80 0a200007.addr.dc1.consul.".split())
    assert short(sim, "_web._customer2.service.consul", "SRV") == sorted("1 1 80 0a200007.addr.dc1.consul.".split())


@needs_dig
def test_dns_nxdomain_nodata_critical_and_node_address(sim: SimProc) -> None:
    _site(sim, "ok", "10.32.0.5", ["a"])
    _site(sim, "bad", "10.32.0.9", ["a"], status="critical")
    assert short(sim, "a.web.service.consul") == ["10.32.0.5"]  # critical instance hidden
    nx = dig(sim, "nothing.service.consul")
    assert "status: NXDOMAIN" in nx and "SOA" in nx
    assert "status: NXDOMAIN" in dig(sim, "web.service.dc2.consul")
    nodata = dig(sim, "web.service.consul", "AAAA")
    assert "status: NOERROR" in nodata and "ANSWER: 0" in nodata and "SOA" in nodata
    # no service address: the node's address; SRV target is the node name
    assert sim.put("/v1/agent/service/register", {"Name": "api", "Port": 9000}, host=AGENT2).ok
    assert short(sim, "api.service.consul") == [AGENT2]
    assert "node-b.node.dc1.consul." in dig(sim, "api.service.consul", "SRV", "+short")
    # UDP answer limit without EDNS
    for i in range(6):
        _site(sim, f"many{i}", f"10.32.1.{i}", ["many"])
    assert len(short(sim, "many.web.service.consul", "+noedns")) == 3
    assert len(short(sim, "many.web.service.consul", "+tcp")) == 6
    ttl = dig(sim, "web.service.consul", "+noall", "+answer").split()
    assert ttl[1] == "0"
