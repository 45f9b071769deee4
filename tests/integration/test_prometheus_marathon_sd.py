"""deploy/prometheus/prometheus.yml as Prometheus runs it: a real Prometheus server (Debian's 2.42)
discovers targets through `marathon_sd_configs` from a canned Marathon app list, and keeps exactly
the registrar's tasks on their first port.

`promtool check config` only knows the file is well formed; whether the relabelling picks the
right app (at any depth, and not a look-alike) and the right port, only Prometheus's own
discovery can tell.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Process, free_port, http, wait_for

ROOT = Path(__file__).resolve().parent.parent.parent
CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
CONFIGURED_MARATHON = "http://marathon.service.consul:8080"


def _app(app_id: str, tasks: list[tuple[str, list[int]]], port_names: list[str]) -> dict[str, object]:
    """An app with embedded tasks as Marathon >= 1.5 lists it (BRIDGE, ports assigned by Mesos)."""
    return {"id": app_id, "labels": {"consul.register": "false"},
            "container": {"type": "DOCKER", "docker": {"image": "marathon-consul-registrar:0.1.0"},
                          "portMappings": [{"containerPort": 0, "hostPort": 0, "name": n} for n in port_names]},
            "networks": [{"mode": "container/bridge"}],
            "tasks": [{"id": f"{app_id.strip('/').replace('/', '_')}.{i}", "host": host, "ports": ports}
                      for i, (host, ports) in enumerate(tasks)]}


APPS = {"apps": [
    _app("/infra/marathon-consul-registrar", [("10.1.0.1", [31000, 31001]), ("10.1.0.2", [31005, 31006])],
         ["http", "debug"]),
    _app("/marathon-consul-registrar", [("10.1.0.3", [31020])], ["http"]),
    _app("/infra/marathon-consul-registrar-canary", [("10.1.0.1", [31010])], ["http"]),
    _app("/web/customer1/site1", [("10.1.0.2", [31011])], ["http"]),
]}


@pytest.fixture
def marathon_stub() -> Iterator[str]:
    """Answers Prometheus's `GET /v2/apps/?embed=apps.tasks` with APPS, and records what it asked."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = json.dumps(APPS).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
        assert any(p.startswith("/v2/apps") and "embed=apps.tasks" in p for p in asked), asked
    finally:
        server.shutdown()
        server.server_close()


def test_prometheus_keeps_the_registrar_tasks_first_port_only(marathon_stub: str, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: scripts/setup installs Debian's prometheus package"
    text = CONFIG.read_text()
    assert CONFIGURED_MARATHON in text
    shutil.copytree(CONFIG.parent, tmp_path / "prometheus")
    config = tmp_path / "prometheus" / "prometheus.yml"
    config.write_text(text.replace(CONFIGURED_MARATHON, marathon_stub))
    port = free_port()
    proc = Process([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}"], f"prometheus-sd-{port}", module=False)
    url = f"http://127.0.0.1:{port}"
    try:
        def active() -> list[dict[str, Any]]:
            assert proc.alive(), proc.tail()
            status, body, _ = http("GET", f"{url}/api/v1/targets?state=active")
            assert status == 200, (status, body)
            return list(body["data"]["activeTargets"])

        targets = wait_for(active, 30, what="targets discovered through Marathon")
        found = sorted((t["labels"]["instance"], t["labels"]["marathon_app"], t["labels"]["job"], t["scrapeUrl"])
                       for t in targets)
        assert found == [
            ("10.1.0.1:31000", "/infra/marathon-consul-registrar", "marathon-consul-registrar",
             "http://10.1.0.1:31000/metrics"),
            ("10.1.0.2:31005", "/infra/marathon-consul-registrar", "marathon-consul-registrar",
             "http://10.1.0.2:31005/metrics"),
            ("10.1.0.3:31020", "/marathon-consul-registrar", "marathon-consul-registrar",
             "http://10.1.0.3:31020/metrics"),
        ]
    finally:
        proc.stop()
