"""No secret in any log line or endpoint of a real run (README "Secrets").

A registrar process runs against the test world at DEBUG with every kind of secret it takes: a
Marathon URL with user:password@, a Consul token on the command line and another in a token file,
a Marathon token file; both files are rotated mid-run, and Marathon and Consul are made to fail
(so error paths, retries and their messages run too). Then every log line, every endpoint, what
Consul holds, `--help` and a configuration error are searched for each secret, in the forms it is
sent in (plain, and base64 in the basic-auth header).

In the TLS world (CI runs it there too) Marathon checks basic auth, so the world's own password is the
Marathon secret and no Marathon token file is used (a token replaces basic auth); the private keys of
the client and the servers are searched for as well.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.topology import SLAVES, TLS_MARATHON_CREDENTIALS, world_tls_dir
from tests.helpers import http, wait_for
from tests.registrar_fixtures import (
    CONSUL,
    Marathon,
    managed_instances,
    marathon_sim,
    run_cli,
    start_registrar,
)

PASSWORD = "mara-pw-5ecret-e2e"
CONSUL_ARG = "consul-arg-tok-4b1d"
CONSUL_FILE = ("consul-file-tok-v1-aa", "consul-file-tok-v2-bb")
MARATHON_FILE = ("mara-file-tok-v1-cc", "mara-file-tok-v2-dd")
APP = "/web/secrets-e2e"


@pytest.fixture
def marathon110(world: None) -> Iterator[Marathon]:
    with marathon_sim("1.10") as m:
        yield m


def fault(base: str, rule: dict[str, object]) -> None:
    status, body, _ = http("POST", f"{base}/_sim/faults", rule)
    assert status == 201, (status, body)


def injected(base: str) -> int:
    status, body, _ = http("GET", f"{base}/_sim/faults")
    assert status == 200, (status, body)
    return int(body["injected"])


def test_no_secret_in_logs_endpoints_consul_help_or_errors(marathon110: Marathon, tmp_path: Path) -> None:
    consul_file, marathon_file = tmp_path / "consul-token", tmp_path / "marathon-token"
    consul_file.write_text(CONSUL_FILE[0] + "\n")
    marathon_file.write_text(MARATHON_FILE[0] + "\n")
    tls_dir = world_tls_dir()
    if tls_dir is None:  # the plain world's Marathon takes any credentials and any token
        user, password = "ops", PASSWORD
        url = marathon110.url.replace("http://", f"http://{user}:{password}@")
        token_file = ["--marathon-token-file", str(marathon_file)]
    else:  # the TLS world's checks basic auth, which a token file would replace: the world's own password
        user, password = TLS_MARATHON_CREDENTIALS.split(":")
        url, token_file = marathon110.url, []
    marathon_base, consul_bases = marathon110.url, [s.consul_url for s in SLAVES]
    registrar = start_registrar(url, events="sse", resync=2.0, extra=[
        "--consul-token", CONSUL_ARG, "--consul-token-file", str(consul_file), *token_file])
    texts: dict[str, str] = {}
    try:
        marathon110.deploy(APP, 2)
        wait_for(lambda: len(managed_instances()) == 2, 60, what="2 registrations")
        consul_file.write_text(CONSUL_FILE[1] + "\n")
        marathon_file.write_text(MARATHON_FILE[1] + "\n")
        time.sleep(1.5)  # token files are looked at once a second
        before = injected(marathon_base) + injected(CONSUL)
        fault(marathon_base, {"path": "^/v2/apps", "status": 503, "count": 6})
        fault(CONSUL, {"path": "^/v1/agent/services", "status": 500, "count": 4})
        registrar.wait_resyncs(2, timeout=60)
        marathon110.scale(APP, 3)
        wait_for(lambda: len(managed_instances()) == 3, 60, what="3 registrations")
        assert injected(marathon_base) + injected(CONSUL) > before, "the faults made error paths run"
        for path in ("/metrics", "/v1/registrations", "/ready", "/health"):
            status, body, _ = http("GET", registrar.url + path)
            assert status == 200, (path, status, body)
            texts[path] = str(body)
        texts["consul"] = "".join(str(http("GET", f"{b}/v1/agent/services")[1]) for b in consul_bases)
    finally:
        marathon110.delete(APP)
        registrar.process.stop()
    texts["log"] = registrar.process.tail(10_000_000)
    assert "token file" in texts["log"] and "changed; using the new token" in texts["log"], "rotation was seen"
    assert "503" in texts["log"] or "500" in texts["log"], "an error path was logged"
    env = {"MCR_MARATHON": url, "MCR_CONSUL_TOKEN": CONSUL_ARG, "CONSUL_HTTP_TOKEN": CONSUL_ARG}
    texts["help"] = run_cli("serve", "--help", env=env).stdout
    bad = run_cli("serve", "--marathon", "ftp://" + url.split("://", 1)[1], "--consul-token", CONSUL_ARG)
    assert bad.returncode == 2
    texts["config error"] = bad.stderr
    secrets = [password, CONSUL_ARG, *CONSUL_FILE, *(MARATHON_FILE if token_file else []),
               base64.b64encode(f"{user}:{password}".encode()).decode()]
    if tls_dir is not None:  # and the private keys: every base64 line of the client's and the servers'
        secrets += [line for key in ("client.key", "consul.key", "marathon.key")
                    for line in (tls_dir / key).read_text().splitlines() if len(line) >= 40]
    leaks = [(where, secret) for where, text in texts.items() for secret in secrets if secret in text]
    assert not leaks, leaks
