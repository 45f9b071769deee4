"""The TLS test world's parts (`python -m devcluster up --tls`), each on its own 127.0.0.5x address:
the CA script's layout, the Consul simulator over HTTPS with client certificates required, the
Marathon simulator over HTTPS with basic auth, and the registrar options `up --tls` prints.
(The shared world itself is not switched: slave 2's dockerd with --tlsverify is for the integrator.)
"""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from devcluster.__main__ import TLS_MARATHON_CREDENTIALS, tls_registrar_options
from devcluster.pki import make_world_pki
from service.connect import TLSOptions, ssl_context
from service.consul.agents import AgentClient, ConsulError
from service.marathon.client import MarathonClient, MarathonError
from service.metrics import Metrics
from tests.helpers import Process, free_port, wait_for
from tests.unit.test_config import parse

AGENT, MARATHON = "127.0.0.56", "127.0.0.57"


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("world-tls")
    make_world_pki(root, slaves=["127.0.0.3"], agents=[AGENT], marathon_host=MARATHON)
    return root


def test_the_ca_script_lays_out_docker_consul_and_marathon_files(tls_dir: Path) -> None:
    for name in ("ca.pem", "consul.pem", "consul.key", "marathon.pem", "client.pem", "client.key",
                 "dockerd-127.0.0.3.pem", "dockerd-127.0.0.3.key", "docker/127.0.0.3/ca.pem",
                 "docker/127.0.0.3/cert.pem", "docker/127.0.0.3/key.pem"):
        assert (tls_dir / name).is_file(), name
    text = subprocess.run(["openssl", "x509", "-in", str(tls_dir / "consul.pem"), "-noout", "-ext", "subjectAltName"],
                          capture_output=True, text=True, check=True).stdout
    assert f"IP Address:{AGENT}" in text and "DNS:server.dc1.consul" in text
    ctx = ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))  # the CA loads; the chain is checked below
    assert ctx.cert_store_stats()["x509_ca"] == 1


def test_the_registrar_options_up_tls_prints_are_a_valid_configuration(tls_dir: Path) -> None:
    c = parse(tls_registrar_options(tls_dir))
    assert c.marathon_tls is not None and c.consul_tls is not None and c.docker_tls is not None
    assert c.consul.startswith("https://") and c.docker == "tcp://{host}:2376"
    assert c.consul_tls.cert_file == str(tls_dir / "client.pem")


@pytest.fixture(scope="module")
def consul_tls(tls_dir: Path) -> Iterator[str]:
    port = free_port(AGENT)
    proc = Process(["devcluster.consul_sim", "--agent", f"{AGENT}:{port}=tls-node", "--no-checks",
                    "--tls-cert", str(tls_dir / "consul.pem"), "--tls-key", str(tls_dir / "consul.key"),
                    "--tls-client-ca", str(tls_dir / "ca.pem")], f"consul-tls-{port}")
    try:
        wait_for(lambda: "listening on https://" in proc.tail(), 20, what="consul simulator over HTTPS")
        yield f"https://{AGENT}:{port}"
    finally:
        proc.stop()


def agent(url: str, tls: TLSOptions) -> AgentClient:
    return AgentClient(AGENT, url, token=None, metrics=Metrics(), timeout=5.0, attempts=1, tls=tls)


async def test_consul_simulator_requires_the_client_certificate(consul_tls: str, tls_dir: Path) -> None:
    good = agent(consul_tls, TLSOptions(ca_file=str(tls_dir / "ca.pem"), cert_file=str(tls_dir / "client.pem"),
                                        key_file=str(tls_dir / "client.key")))
    bare = agent(consul_tls, TLSOptions(ca_file=str(tls_dir / "ca.pem")))
    plain = agent(consul_tls.replace("https://", "http://"), TLSOptions())
    try:
        assert await good.node_name() == "tls-node"
        with pytest.raises(ConsulError, match="it may require a client certificate"):
            await bare.node_name()
        with pytest.raises(ConsulError, match=r"plain HTTP against a TLS port\? \(use https://\)"):
            await plain.node_name()
    finally:
        for client in (good, bare, plain):
            await client.close()


@pytest.fixture(scope="module")
def marathon_tls(tls_dir: Path) -> Iterator[str]:
    port = free_port(MARATHON)
    proc = Process(["devcluster.marathon_sim", "--listen", f"{MARATHON}:{port}", "--marathon-version", "1.10",
                    "--tls-cert", str(tls_dir / "marathon.pem"), "--tls-key", str(tls_dir / "marathon.key"),
                    "--http-credentials", TLS_MARATHON_CREDENTIALS], f"marathon-tls-{port}")
    try:
        wait_for(lambda: "simulator on https://" in proc.tail(), 20, what="marathon simulator over HTTPS")
        yield f"https://{MARATHON}:{port}"
    finally:
        proc.stop()


async def test_marathon_simulator_over_https_with_basic_auth(marathon_tls: str, tls_dir: Path) -> None:
    connector = aiohttp.TCPConnector(ssl=ssl_context(TLSOptions(ca_file=str(tls_dir / "ca.pem")), "marathon"))
    async with aiohttp.ClientSession(connector=connector) as session:
        authed = MarathonClient([marathon_tls.replace("https://", f"https://{TLS_MARATHON_CREDENTIALS}@")],
                                session=session, metrics=Metrics())
        assert (await authed.info())["version"].startswith("1.10")
        anonymous = MarathonClient([marathon_tls], session=session, metrics=Metrics())
        with pytest.raises(MarathonError) as err:
            await anonymous.info()
        assert err.value.status == 401
        wrong = MarathonClient([marathon_tls.replace("https://", "https://registrar:wrong@")], session=session,
                               metrics=Metrics())
        with pytest.raises(MarathonError, match="HTTP 401"):
            await wrong.info()
        async with session.get(f"{marathon_tls}/_sim/faults") as resp:
            assert resp.status == 200, "the simulator's control paths need no credentials"
