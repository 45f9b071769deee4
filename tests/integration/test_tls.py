"""TLS towards Consul, Docker and Marathon against real HTTPS servers with a throw-away CA.

Each way TLS fails (wrong CA, expired certificate, wrong server name, missing client certificate,
plain HTTP against a TLS port) must end in an error that names the system and the reason; the
happy paths check that the CA, the client certificate and the server-name override are used.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from service.connect import TLSOptions, ssl_context
from service.consul.agents import AgentClient, ConsulError
from service.docker.lookup import ContainerLookup, DockerLookupError
from service.marathon.client import MarathonClient, MarathonError
from service.metrics import Metrics
from tests.pki import PKI, Cert, make_pki, serve, server_context

HOST = "127.0.0.51"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def certs(pki: PKI) -> dict[str, Cert]:
    return {
        "server": pki.issue("server", san=f"IP:{HOST},DNS:localhost"),
        "named": pki.issue("named", san="DNS:server.dc1.consul"),
        "expired": pki.issue("expired", san=f"IP:{HOST}", days=-1),
        "client": pki.issue("client", san="DNS:registrar", client=True),
    }


def fake_app(seen: list[dict[str, str]]) -> web.Application:
    """Enough of Consul, Docker and Marathon to make one call to each; records request headers."""
    async def agent_self(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"Config": {"NodeName": "node-1"}})

    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="OK", headers={"Api-Version": "1.41"})

    async def containers(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response([])

    async def info(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"frameworkId": "fw-1", "version": "1.10.0"})

    async def agent_services(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/v1/agent/self", agent_self)
    app.router.add_get("/v1/agent/services", agent_services)
    app.router.add_get("/_ping", ping)
    app.router.add_get("/v1.41/containers/json", containers)
    app.router.add_get("/v2/info", info)
    return app


def agent(port: int, tls: TLSOptions | None, scheme: str = "https", host: str = HOST) -> AgentClient:
    return AgentClient(host, f"{scheme}://{host}:{port}", token="t0k3n-value", metrics=Metrics(), timeout=5.0,
                       attempts=1, tls=tls)


async def test_consul_over_tls_with_ca_client_certificate_and_token(pki: PKI, certs: dict[str, Cert]) -> None:
    seen: list[dict[str, str]] = []
    ctx = server_context(certs["server"], client_ca=pki.ca.cert)
    async with serve(fake_app(seen), HOST, ctx) as port:
        client = agent(port, TLSOptions(ca_file=str(pki.ca.cert), cert_file=str(certs["client"].cert),
                                        key_file=str(certs["client"].key)))
        try:
            assert await client.node_name() == "node-1"
            assert await client.owned() == {}
        finally:
            await client.close()
    assert seen[-1]["X-Consul-Token"] == "t0k3n-value"  # py-consul sends no token with agent/self


async def test_consul_server_name_override_checks_the_name_not_the_ip(pki: PKI, certs: dict[str, Cert]) -> None:
    async with serve(fake_app([]), HOST, server_context(certs["named"])) as port:
        named = agent(port, TLSOptions(ca_file=str(pki.ca.cert), server_name="server.dc1.consul"))
        plain = agent(port, TLSOptions(ca_file=str(pki.ca.cert)))
        try:
            assert await named.node_name() == "node-1"
            with pytest.raises(ConsulError, match=r"consul agent https://127\.0\.0\.51:\d+: agent_self failed: .*"
                                                  r"TLS: server certificate rejected: IP address mismatch"):
                await plain.node_name()
        finally:
            await named.close()
            await plain.close()


# (server certificate, requires a client certificate, client TLS options, URL scheme) -> reason in the error
CASES = {
    "wrong-ca": ("server", False, "other-ca", "https",
                 "TLS: server certificate rejected: unable to get local issuer certificate"),
    "expired": ("expired", False, "ca", "https", "TLS: server certificate rejected: certificate has expired"),
    "wrong-name": ("named", False, "ca", "https", "TLS: server certificate rejected: IP address mismatch"),
    "no-client-cert": ("server", True, "ca", "https", "it may require a client certificate"),
    "plain-http-to-tls": ("server", False, "ca", "http", "plain HTTP against a TLS port? (use https://)"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_consul_tls_failures_name_the_agent_and_the_reason(case: str, pki: PKI, certs: dict[str, Cert]) -> None:
    cert, client_auth, ca, scheme, reason = CASES[case]
    ctx = server_context(certs[cert], client_ca=pki.ca.cert if client_auth else None)
    ca_file = pki.ca.cert if ca == "ca" else pki.other_ca.cert
    async with serve(fake_app([]), HOST, ctx) as port:
        client = agent(port, TLSOptions(ca_file=str(ca_file)), scheme=scheme)
        try:
            with pytest.raises(ConsulError) as err:
                await client.node_name()
        finally:
            await client.close()
    message = str(err.value)
    assert message.startswith(f"consul agent {scheme}://{HOST}:{port}: agent_self failed"), message
    assert reason in message, message


@pytest.mark.parametrize("case", list(CASES))
async def test_docker_tls_failures_name_the_slave_and_the_reason(case: str, pki: PKI, certs: dict[str, Cert],
                                                                 tmp_path: Path) -> None:
    cert, client_auth, ca, scheme, reason = CASES[case]
    cert_dir = tmp_path / HOST
    cert_dir.mkdir()
    (cert_dir / "ca.pem").write_bytes((pki.ca.cert if ca == "ca" else pki.other_ca.cert).read_bytes())
    ctx = server_context(certs[cert], client_ca=pki.ca.cert if client_auth else None)
    async with serve(fake_app([]), HOST, ctx) as port:
        tls = None if scheme == "http" else TLSOptions(ca_file=str(tmp_path / "{host}" / "ca.pem"))
        lookup = ContainerLookup(f"tcp://{{host}}:{port}", ("weave",), metrics=Metrics(), tls=tls)
        try:
            with pytest.raises(DockerLookupError) as err:
                await lookup.containers(HOST)
        finally:
            await lookup.close()
    message = str(err.value)
    assert message.startswith(f"docker on {HOST}"), message
    assert reason in message, message


async def test_docker_tls_per_slave_certificates_by_docker_conventions(pki: PKI, certs: dict[str, Cert],
                                                                       tmp_path: Path) -> None:
    """DOCKER_CERT_PATH/{host}/ca.pem, cert.pem, key.pem: the engine checks our client certificate."""
    cert_dir = tmp_path / HOST
    cert_dir.mkdir()
    (cert_dir / "ca.pem").write_bytes(pki.ca.cert.read_bytes())
    (cert_dir / "cert.pem").write_bytes(certs["client"].cert.read_bytes())
    (cert_dir / "key.pem").write_bytes(certs["client"].key.read_bytes())
    seen: list[dict[str, str]] = []
    async with serve(fake_app(seen), HOST, server_context(certs["server"], client_ca=pki.ca.cert)) as port:
        d = str(tmp_path / "{host}")
        tls = TLSOptions(ca_file=f"{d}/ca.pem", cert_file=f"{d}/cert.pem", key_file=f"{d}/key.pem")
        lookup = ContainerLookup(f"tcp://{{host}}:{port}", ("weave",), metrics=Metrics(), tls=tls)
        try:
            assert await lookup.containers(HOST) == {}
        finally:
            await lookup.close()
    assert seen, "the listing reached the engine"


@pytest.mark.parametrize("case", [c for c in CASES if c != "no-client-cert"])  # Marathon takes none of ours
async def test_marathon_tls_failures_name_marathon_and_the_reason(case: str, pki: PKI, certs: dict[str, Cert]) -> None:
    cert, _, ca, scheme, reason = CASES[case]
    ctx = server_context(certs[cert])
    ca_file = pki.ca.cert if ca == "ca" else pki.other_ca.cert
    async with serve(fake_app([]), HOST, ctx) as port:
        connector = aiohttp.TCPConnector(ssl=ssl_context(TLSOptions(ca_file=str(ca_file)), "marathon"))
        async with aiohttp.ClientSession(connector=connector) as session:
            client = MarathonClient([f"{scheme}://user:pw-secret@{HOST}:{port}"], session=session, metrics=Metrics(),
                                    attempts=1, timeout=5.0)
            with pytest.raises(MarathonError) as err:
                await client.info()
    message = str(err.value)
    assert message.startswith(f"Marathon GET {scheme}://{HOST}:{port}/v2/info"), message
    assert reason in message, message
    assert "pw-secret" not in message


async def test_marathon_over_https_with_basic_auth_and_a_rotating_token(pki: PKI, certs: dict[str, Cert],
                                                                        tmp_path: Path) -> None:
    from service.tokens import TokenFile

    token_file = tmp_path / "marathon-token"
    token_file.write_text("first-token\n")
    token = TokenFile(str(token_file), what="marathon token", min_interval=0.0)
    seen: list[dict[str, str]] = []
    async with serve(fake_app(seen), HOST, server_context(certs["server"])) as port:
        connector = aiohttp.TCPConnector(ssl=ssl_context(TLSOptions(ca_file=str(pki.ca.cert)), "marathon"))
        async with aiohttp.ClientSession(connector=connector) as session:
            basic = MarathonClient([f"https://user:pw@{HOST}:{port}"], session=session, metrics=Metrics())
            assert (await basic.info())["frameworkId"] == "fw-1"
            tokened = MarathonClient([f"https://user:pw@{HOST}:{port}"], session=session, metrics=Metrics(),
                                     token=token)
            await tokened.info()
            token_file.write_text("second-token-longer\n")
            await tokened.info()
    assert [h["Authorization"] for h in seen] == [aiohttp.encode_basic_auth("user", "pw"), "token=first-token",
                                                  "token=second-token-longer"]
    assert json.dumps(seen)  # headers were plain strings


async def test_consul_token_file_rotation_takes_effect_without_a_restart(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent client asks the token file at every request; py-consul's own reading of
    CONSUL_HTTP_TOKEN (which would override whatever it is given) does not get in the way."""
    from service.consul.lock import ConsulLockClient
    from service.tokens import TokenFile

    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "env-token-ignored")
    path = tmp_path / "consul-token"
    path.write_text("consul-first-token\n")
    token = TokenFile(str(path), what="consul token", min_interval=0.0)
    seen: list[dict[str, str]] = []
    async with serve(fake_app(seen), HOST, None) as port:
        client = AgentClient(HOST, f"http://{HOST}:{port}", token=token, metrics=Metrics(), timeout=5.0, attempts=1)
        lock = ConsulLockClient(f"http://{HOST}:{port}", token=token)
        try:
            await client.owned()
            path.write_text("consul-second-token\n")
            await client.owned()
            assert lock._client.token == "consul-second-token"  # the lock's client shares the source
        finally:
            await client.close()
            await lock.close()
    assert [h.get("X-Consul-Token") for h in seen] == ["consul-first-token", "consul-second-token"]


@pytest.fixture
def capath(pki: PKI, tmp_path: Path) -> Path:
    """CONSUL_CAPATH: a directory of CA files in OpenSSL's hashed layout (`openssl rehash`)."""
    import shutil
    import subprocess

    path = tmp_path / "cas"
    path.mkdir()
    shutil.copy(pki.ca.cert, path / "ca.pem")
    subprocess.run(["openssl", "rehash", str(path)], check=True, capture_output=True, timeout=30)
    return path


async def test_consul_ca_directory_as_consul_capath(capath: Path, certs: dict[str, Cert], tmp_path: Path) -> None:
    async with serve(fake_app([]), HOST, server_context(certs["server"])) as port:
        good = agent(port, TLSOptions(ca_path=str(capath)))
        empty_dir = tmp_path / "none"
        empty_dir.mkdir()
        bad = agent(port, TLSOptions(ca_path=str(empty_dir)))
        try:
            assert await good.node_name() == "node-1"
            with pytest.raises(ConsulError, match="unable to get local issuer certificate"):
                await bad.node_name()
        finally:
            await good.close()
            await bad.close()
