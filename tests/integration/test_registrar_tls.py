"""The registrar as a process behind TLS: its own HTTPS listener, the callback secret, a Marathon
over HTTPS with basic auth, and a TLS failure it survives (naming the system and the reason).

The Marathon here is a small fake on 127.0.0.53 (the callback subset of Marathon 1.4's API), so
these tests need no test world.
"""

from __future__ import annotations

import json
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.helpers import Process, free_port, wait_for
from tests.pki import PKI, Cert, make_pki

MARATHON_HOST = "127.0.0.53"
REGISTRAR_HOST = "127.0.0.54"
PASSWORD = "marathon-basic-pw-7c1"
SECRET = "cb-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@dataclass
class FakeMarathon:
    url: str
    subscriptions: list[str] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def marathon(pki: PKI) -> Iterator[FakeMarathon]:
    cert: Cert = pki.issue("marathon", san=f"IP:{MARATHON_HOST}")
    port = free_port(MARATHON_HOST)
    fake = FakeMarathon(f"https://ops:{PASSWORD}@{MARATHON_HOST}:{port}")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def _answer(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self, method: str) -> None:
            fake.authorizations.append(self.headers.get("Authorization", ""))
            if self.headers.get("Authorization") != "Basic " + __import__("base64").b64encode(
                    f"ops:{PASSWORD}".encode()).decode():
                return self._answer(401, {"message": "invalid username or password"})
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            if url.path == "/v2/info":
                return self._answer(200, {"frameworkId": "fw-tls", "version": "1.4.13",
                                          "event_subscriber": {"type": "http_callback"}})
            if url.path == "/v2/apps":
                return self._answer(200, {"apps": []})
            if url.path == "/v2/eventSubscriptions":
                if method == "POST" and query.get("callbackUrl") not in fake.subscriptions:
                    fake.subscriptions.append(query["callbackUrl"])
                if method == "DELETE" and query.get("callbackUrl") in fake.subscriptions:
                    fake.subscriptions.remove(query["callbackUrl"])
                return self._answer(200, {"callbackUrls": fake.subscriptions})
            return self._answer(404, {"message": "not found"})

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_DELETE(self) -> None:
            self._route("DELETE")

    server = ThreadingHTTPServer((MARATHON_HOST, port), Handler)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert.cert, cert.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def registrar(marathon_url: str, *extra: str, name: str) -> tuple[Process, int]:
    port = free_port(REGISTRAR_HOST)
    argv = ["service", "serve", "--marathon", marathon_url, "--listen", f"{REGISTRAR_HOST}:{port}",
            "--events", "callback", "--lock", "off", "--consul", "http://127.0.0.55:1", "--resync-interval", "2",
            "--log-level", "DEBUG", *extra]
    return Process(argv, f"{name}-{port}"), port


def https_get(url: str, ca: Path, method: str = "GET", body: bytes | None = None) -> tuple[int, str]:
    import urllib.error
    import urllib.request
    ctx = ssl.create_default_context(cafile=str(ca))
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_wrong_marathon_ca_is_named_and_the_registrar_stays_up_retrying(pki: PKI, marathon: FakeMarathon,
                                                                        tmp_path: Path) -> None:
    listen = pki.issue("registrar-a", san=f"IP:{REGISTRAR_HOST}")
    proc, port = registrar(marathon.url, "--marathon-cacert", str(pki.other_ca.cert),
                           "--listen-tls-cert", str(listen.cert), "--listen-tls-key", str(listen.key),
                           "--callback-url", f"https://{REGISTRAR_HOST}:1/v1/events", name="tls-wrong-ca")
    try:
        ready = f"https://{REGISTRAR_HOST}:{port}/ready"

        def reasons() -> str:
            status, text = https_get(ready, pki.ca.cert)
            return text if status == 503 and "certificate" in text else ""

        text = wait_for(reasons, 20, what="/ready naming the TLS failure")
        assert "Marathon GET https://127.0.0.53" in text and "unable to get local issuer certificate" in text, text
        wait_for(lambda: proc.tail().count("retrying in") >= 3, 20, what="three retries")
        assert proc.alive(), proc.tail()
        assert PASSWORD not in proc.tail(100_000) and PASSWORD not in text
    finally:
        proc.stop()


def test_https_listener_and_callback_secret_path(pki: PKI, marathon: FakeMarathon, tmp_path: Path) -> None:
    listen = pki.issue("registrar-b", san=f"IP:{REGISTRAR_HOST}")
    secret_file = tmp_path / "callback-secret"
    secret_file.write_text(SECRET + "\n")
    port = free_port(REGISTRAR_HOST)
    base = f"https://{REGISTRAR_HOST}:{port}"
    proc = Process(["service", "serve", "--marathon", marathon.url, "--listen", f"{REGISTRAR_HOST}:{port}",
                    "--events", "callback", "--lock", "off", "--consul", "http://127.0.0.55:1",
                    "--resync-interval", "2", "--log-level", "DEBUG", "--marathon-cacert", str(pki.ca.cert),
                    "--listen-tls-cert", str(listen.cert), "--listen-tls-key", str(listen.key),
                    "--callback-url", f"{base}/v1/events", "--callback-secret-file", str(secret_file)],
                   f"tls-secret-{port}")
    try:
        wait_for(lambda: https_get(f"{base}/ready", pki.ca.cert)[0] == 200, 20, what="registrar ready")
        assert marathon.subscriptions == [f"{base}/v1/events/{SECRET}"]
        event = json.dumps({"eventType": "api_post_event", "appDefinition": {"id": "/web/a"}}).encode()
        assert https_get(f"{base}/v1/events/{SECRET}", pki.ca.cert, "POST", event)[0] in (200, 202)
        for wrong in ("/v1/events", "/v1/events/guess", f"/v1/events/{SECRET}x", f"/v1/events/{SECRET}/x"):
            status, text = https_get(base + wrong, pki.ca.cert, "POST", event)
            assert status == 404, (wrong, status, text)
        metrics = https_get(f"{base}/metrics", pki.ca.cert)[1]
        assert 'mcr_events_rejected_total{reason="wrong-path"} 4.0' in metrics
        for path in ("/metrics", "/v1/registrations", "/ready", "/health"):
            assert SECRET not in https_get(base + path, pki.ca.cert)[1], path
        with pytest.raises(Exception, match=r"(?i)(remote end closed|connection reset|EOF|disconnected)"):
            import urllib.request
            urllib.request.urlopen(f"http://{REGISTRAR_HOST}:{port}/health", timeout=5).read()
    finally:
        proc.stop()
    assert marathon.subscriptions == [], "SIGTERM unsubscribed the secret URL"
    log = proc.tail(1_000_000)
    assert SECRET not in log and PASSWORD not in log, log[-3000:]
    assert "/v1/events/***" in log
