"""Monitoring as shipped, against the registrar deployed as its Marathon app: Debian's Prometheus runs
deploy/prometheus/prometheus.yml (its `servers` pointed at the test's Marathon simulator, as its
comment tells operators to do), finds both instances through `marathon_sd_configs`, scrapes them and
evaluates deploy/prometheus/rules/registrar.yml; every expression of the Grafana dashboard answers.

Changed for the test only, in a copy: intervals of 1 s (scrape, evaluation, SD refresh) and every
rule's `for:` set to 2 s, so that an alert fires in seconds instead of minutes. The expressions
themselves are the shipped ones.
"""

from __future__ import annotations

import json
import re
import shutil
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster.topology import world_tls_dir
from devcluster.world_http import split_credentials
from tests.helpers import ROOT, Process, free_port, http, wait_for
from tests.registrar_app import APP, SELF, image, in_sync, own_marathon, start_registrar_app, urls
from tests.registrar_fixtures import Marathon, reset_consul

__all__ = ["image"]  # the fixture

JOB = "marathon-consul-registrar"
ALERT = "MarathonConsulRegistrarEventSourceDisconnected"
DASHBOARD = ROOT / "deploy" / "grafana" / "marathon-consul-registrar.json"


def _replace(text: str, pattern: str, new: str) -> str:
    out, n = re.subn(pattern, new, text)
    assert n, f"{pattern!r} not found: the shipped file changed, adapt the test copy"
    return out


def config_copy(tmp: Path, marathon_url: str) -> Path:
    """The shipped config and rules, with the test's Marathon and short intervals; in the TLS world
    with basic_auth and the world's CA for Marathon service discovery (Prometheus' own http client
    options, as the config's comment says)."""
    config = (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    bare, _ = split_credentials(marathon_url)
    config = _replace(config, r"http://marathon\.service\.consul:8080", bare)
    config = _replace(config, r"(scrape_interval|evaluation_interval|refresh_interval): \d+[smh]", r"\1: 1s")
    tls_dir = world_tls_dir()
    if tls_dir is not None:
        parts = urllib.parse.urlsplit(marathon_url)
        config = _replace(config, r"(?m)^(\s+)refresh_interval: 1s$",
                          rf"\g<0>\n\1basic_auth: {{username: {parts.username}, password: {parts.password}}}"
                          rf"\n\1tls_config: {{ca_file: {tls_dir / 'ca.pem'}}}")
    (tmp / "rules").mkdir()
    rules = (ROOT / "deploy" / "prometheus" / "rules" / "registrar.yml").read_text()
    (tmp / "rules" / "registrar.yml").write_text(_replace(rules, r"\bfor: \d+[smh]", "for: 2s"))
    (tmp / "prometheus.yml").write_text(config)
    return tmp / "prometheus.yml"


@pytest.fixture
def marathon_app(image: str) -> Iterator[Marathon]:
    reset_consul()
    with own_marathon("1.10") as m:
        start_registrar_app(m)
        yield m


@pytest.fixture
def prometheus(tmp_path: Path, marathon_app: Marathon) -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: scripts/setup installs Debian's prometheus package"
    config = config_copy(tmp_path, marathon_app.url)
    port = free_port()
    proc = Process([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}"], f"prometheus-app-{port}", module=False)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: not proc.alive() or http("GET", f"{url}/-/ready")[0] == 200, 30, what="prometheus ready")
        assert proc.alive(), proc.tail()
        yield url
    finally:
        proc.stop()


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    status, body, _ = http("GET", f"{prom}/api/v1/query?query={urllib.parse.quote(expr)}")
    assert status == 200 and body["status"] == "success", (expr, status, body)
    return list(body["data"]["result"])


def alerts(prom: str, name: str) -> list[str]:
    """States ("pending", "firing") of the alert `name`, one per instance it is active for."""
    status, body, _ = http("GET", f"{prom}/api/v1/alerts")
    assert status == 200, (status, body)
    return [a["state"] for a in body["data"]["alerts"] if a["labels"]["alertname"] == name]


def dashboard_exprs() -> list[str]:
    """Every panel's PromQL, with the dashboard's variables as Grafana would fill them in."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                found.append(node["expr"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads(DASHBOARD.read_text()))
    return [e.replace("$job", JOB).replace("$instance", ".+").replace("$__rate_interval", "1m") for e in found]


def test_prometheus_finds_scrapes_and_alerts(marathon_app: Marathon, prometheus: str) -> None:
    m, prom = marathon_app, prometheus
    instances = {u.removeprefix("http://") for u in urls(m).values()}
    wait_for(lambda: {s["metric"]["instance"] for s in query(prom, f'up{{job="{JOB}"}} == 1')} == instances, 30,
             what="both instances discovered through Marathon and scraped")
    assert {s["metric"]["marathon_app"] for s in query(prom, f'up{{job="{JOB}"}}')} == {SELF}
    m.deploy(APP, 2)
    wait_for(lambda: in_sync(m, APP, 2), 40, what="the demo app registered")
    wait_for(lambda: query(prom, "sum(mcr_leader) == 1") and query(prom, "sum(mcr_managed_registrations) >= 2"), 20,
             what="Prometheus holding the writer and its registrations")
    exprs = dashboard_exprs()
    assert len(exprs) > 20

    def empty() -> list[str]:
        return [e for e in exprs if not query(prom, e)]

    # a counter's first series needs two scrapes before rate() over it answers
    try:
        wait_for(lambda: not empty(), 20, interval=1, what="every dashboard expression answering")
    except AssertionError:
        raise AssertionError("dashboard expressions without a result:\n" + "\n".join(empty())) from None
    assert not alerts(prom, ALERT)

    # the event stream cut: every /v2/events answers 503 and the open streams are dropped
    status, rule, _ = http("POST", f"{m.url}/_sim/faults", {"path": "^/v2/events$", "status": 503})
    assert status == 201, (status, rule)
    assert http("POST", f"{m.url}/_sim/event-streams/drop")[0] == 200
    wait_for(lambda: alerts(prom, ALERT).count("firing") == 2, 30, interval=0.5,
             what=f"{ALERT} firing for both instances")
    # the source returns: the registrars reconnect and the alert resolves
    assert http("DELETE", f"{m.url}/_sim/faults/{rule['id']}")[0] == 200
    wait_for(lambda: not alerts(prom, ALERT), 40, interval=0.5, what=f"{ALERT} resolved")
