"""Metrics as operators consume them: a real Prometheus server (Debian's `prometheus`) scrapes the
registrar while it registers a deployment, and Prometheus's HTTP API gives our counters back;
`promtool check metrics` finds nothing to complain about in `/metrics`.

A unit test can only check the text we render; this checks that a real scraper parses it, that the
names and labels an operator would query exist, and that the values it stores are the true ones.
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Process, free_port, http, wait_for
from tests.registrar_fixtures import Marathon, managed_instances, marathon_sim, start_registrar

APP = "/metrics/demo/site"


@pytest.fixture
def marathon10(world: None) -> Iterator[Marathon]:
    with marathon_sim("1.10") as m:
        yield m


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed: scripts/setup installs Debian's prometheus package"
    return path


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A Prometheus server on loopback with an empty scrape list; the test writes its targets."""
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text("global: {scrape_interval: 1s, scrape_timeout: 1s}\nscrape_configs: []\n")
    proc = Process([_tool("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"],
                   f"prometheus-{port}", module=False)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: not proc.alive() or http("GET", f"{url}/-/ready")[0] == 200, 30, what="prometheus ready")
        assert proc.alive(), proc.tail()
        yield url, config
    finally:
        proc.stop()


def _query(prom: str, expr: str) -> list[dict]:
    status, body, _ = http("GET", f"{prom}/api/v1/query?query={urllib.parse.quote(expr)}")
    assert status == 200 and body["status"] == "success", (status, body)
    return body["data"]["result"]


def _value(prom: str, expr: str) -> float | None:
    result = _query(prom, expr)
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_the_registrar_and_gives_back_true_counts(
        marathon10: Marathon, prometheus: tuple[str, Path]) -> None:
    prom, config = prometheus
    registrar = start_registrar(marathon10.url)
    try:
        target = registrar.url.removeprefix("http://")
        config.write_text("global: {scrape_interval: 1s, scrape_timeout: 1s}\nscrape_configs:\n"
                          f"  - job_name: registrar\n    static_configs: [{{targets: ['{target}']}}]\n")
        assert http("POST", f"{prom}/-/reload")[0] == 200
        wait_for(lambda: _value(prom, 'up{job="registrar"}') == 1, 30, what="Prometheus scraping the registrar")

        marathon10.deploy(APP, 2, health=False)
        wait_for(lambda: len(managed_instances()) == 2, 30, what="2 registrations in Consul")
        own = registrar_counter(registrar.url, 'mcr_registrations_total{result="created"}')
        assert own == 2
        wait_for(lambda: _value(prom, 'mcr_registrations_total{job="registrar",result="created"}') == own, 15,
                 what="Prometheus holding the registration count")
        assert _value(prom, 'mcr_events_received_total{type="status_update_event"}') >= 2
        # every registration an event caused is observed once; a periodic resync (every 3 s here)
        # that reads the new task before its event's work runs registers it unobserved
        latencies = registrar_counter(registrar.url, "mcr_event_to_registration_seconds_count")
        assert 1 <= latencies <= 2
        assert _value(prom, 'mcr_event_to_registration_seconds_count') == latencies
        assert _value(prom, "mcr_managed_registrations") == 2
        assert _value(prom, "mcr_event_source_connected") == 1

        task_ids = [t["id"] for t in marathon10.running(APP)]
        marathon10.delete(APP)
        wait_for(lambda: not managed_instances(), 30, what="registrations gone after the delete")
        wait_for(lambda: _value(prom, 'mcr_deregistrations_total{result="ok"}') == 2, 15,
                 what="Prometheus holding the deregistration count")
        # no series names a task or the app: cardinality stays bounded however many come and go
        values = {v for s in _query(prom, '{job="registrar"}') for k, v in s["metric"].items()
                  if k not in ("__name__", "job", "instance")}
        assert values and not any(t in v for v in values for t in [*task_ids, "metrics_demo_site", APP]), values
    finally:
        registrar.process.stop()


def registrar_counter(url: str, sample: str) -> float:
    status, text, _ = http("GET", f"{url}/metrics")
    assert status == 200
    [line] = [line for line in text.splitlines() if line.startswith(sample + " ")]
    return float(line.rsplit(" ", 1)[1])


def test_promtool_finds_nothing_wrong_in_metrics(marathon10: Marathon) -> None:
    registrar = start_registrar(marathon10.url)
    try:
        marathon10.deploy(APP, 1, health=False)
        wait_for(lambda: len(managed_instances()) == 1, 30, what="a registration, so every series has samples")
        status, text, _ = http("GET", f"{registrar.url}/metrics")
        assert status == 200
        checked = subprocess.run([_tool("promtool"), "check", "metrics"], input=text, capture_output=True,
                                 text=True, timeout=30)
        assert checked.returncode == 0 and not (checked.stdout + checked.stderr).strip(), checked
    finally:
        marathon10.delete(APP)
        registrar.process.stop()
