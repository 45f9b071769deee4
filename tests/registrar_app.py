"""The registrar as the Marathon app of deploy/marathon.json, for the e2e tests that deploy it unchanged.

Each user runs a Marathon simulator of its own at `127.0.0.10:8080` (1.10) or `127.0.0.11:8080` (1.4),
started with `--extra-host marathon.service.consul:<its ip>`: the JSON names Marathon
`http://marathon.service.consul:8080` (how a node finds it through Consul DNS in a cluster), and this is
the test world's stand-in for the slaves' resolver. Its own simulator also gives the test its own
framework id, so its lock and its registrations do not touch the world's Marathon.

The registrar runs with HOST networking, so its containers share the slaves' network namespace and
reach `$HOST:8500`, both Docker APIs and the simulator the way a host process would.

In the TLS world (`devcluster up --tls`) the JSON is deployed as an operator of a TLS cluster would
deploy it (`deploy_json()`): the certificate directory mounted read-only into the container, the
TLS settings in env under Docker's and Consul's own names, Marathon over HTTPS with basic auth;
the own simulators serve HTTPS with the world's Marathon certificate.
"""


from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from devcluster.__main__ import as_tls_app, marathon_sim_argv
from devcluster.image import ensure_image
from devcluster.topology import APP_MARATHON_HOSTS, SLAVES, marathon_url, world_tls_dir
from tests.helpers import ROOT, Process, http, wait_for
from tests.registrar_fixtures import Marathon, dig, managed_instances, overlay_ip

DEPLOY: dict[str, Any] = json.loads((ROOT / "deploy" / "marathon.json").read_text())
SELF = DEPLOY["id"]
APP = "/web/customer1/site1"
DNS_NAME = "site1.customer1.web.service.dc1.consul"
SIM_IP = APP_MARATHON_HOSTS


def deploy_json() -> dict[str, Any]:
    """deploy/marathon.json as deployed in the running world: unchanged in the plain world; in the
    TLS world with the certificates mounted and the TLS settings in its env (`as_tls_app`)."""
    tls_dir = world_tls_dir()
    return as_tls_app(DEPLOY, tls_dir) if tls_dir else DEPLOY


@pytest.fixture(scope="module")
def image() -> str:
    """The JSON's image tag, current on both slaves (a no-op when it already is)."""
    tag = ensure_image()
    assert tag == DEPLOY["container"]["docker"]["image"], "deploy/marathon.json names another version"
    return tag


@contextlib.contextmanager
def own_marathon(version: str) -> Iterator[Marathon]:
    ip = SIM_IP[version]
    # HTTPS with basic auth in the TLS world (its certificate names these IPs)
    argv = marathon_sim_argv(version, (ip, 8080), tls_dir=world_tls_dir())  # --extra-host marathon.service.consul:<ip>
    proc = Process(argv, f"marathon-app-{version}")
    m = Marathon(marathon_url((ip, 8080)), version)
    try:
        wait_for(lambda: http("GET", f"{m.url}/v2/info")[0] == 200, 20, what="marathon simulator")
        yield m
    finally:
        proc.stop()  # SIGTERM: the simulator removes every container it launched


def deployed(m: Marathon, app_id: str) -> bool:
    status, body, _ = http("GET", f"{m.url}/v2/apps{app_id}")
    return status == 200 and not body["app"]["deployments"]


def put(m: Marathon, app_id: str, body: dict[str, Any]) -> None:
    status, text, _ = http("PUT", f"{m.url}/v2/apps{app_id}", body)
    assert status == 200, (status, text)


def urls(m: Marathon) -> dict[str, str]:
    """task id -> the registrar instance's base URL ($HOST:$PORT0)."""
    return {t["id"]: f"http://{t['host']}:{t['ports'][0]}" for t in m.running(SELF)}


def roles(m: Marathon) -> dict[str, str]:
    out = {}
    for task_id, url in urls(m).items():
        with contextlib.suppress(Exception):
            status, body, _ = http("GET", f"{url}/v1/registrations", timeout=2)
            if status == 200:
                out[task_id] = body["leadership"]["role"]
    return out


def writer(m: Marathon) -> str | None:
    found = [t for t, r in roles(m).items() if r == "writer"]
    assert len(found) <= 1, found
    return found[0] if found else None


def registered(app_id: str) -> dict[str, str]:
    """task id -> registered address of `app_id`'s instances in Consul."""
    return {s["Meta"]["marathon-task-id"]: s["Address"] for s in managed_instances()
            if s["Meta"].get("marathon-app-id") == app_id}


def in_sync(m: Marathon, app_id: str, n: int) -> bool:
    """Consul holds exactly the `n` running tasks of `app_id`, at their overlay IPs."""
    running = m.running(app_id)
    return len(running) == n and registered(app_id) == {t["id"]: overlay_ip(t) for t in running}


def dns_answers(n: int) -> bool:
    """Consul DNS answers the demo's name with `n` addresses, those registered (checks passing)."""
    return len(dig(DNS_NAME)) == n and sorted(dig(DNS_NAME)) == sorted(registered(APP).values())


def start_registrar_app(m: Marathon) -> None:
    status, body, _ = http("POST", f"{m.url}/v2/apps", deploy_json())
    assert status == 201, (status, body)
    wait_for(lambda: deployed(m, SELF) and len(m.running(SELF)) == 2, 90, interval=0.5,
             what="the registrar's deployment (2 tasks, healthy and ready)")
    wait_for(lambda: writer(m) is not None, 30, interval=0.5, what="a writer")

def lock_holder(m: Marathon) -> str | None:
    fid = http("GET", f"{m.url}/v2/info")[1]["frameworkId"]
    status, body, _ = http("GET", f"{SLAVES[0].consul_url}/v1/kv/marathon-consul-registrar/{fid}/leader")
    return body[0].get("Session") if status == 200 else None
