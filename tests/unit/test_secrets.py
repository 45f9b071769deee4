"""Secrets never leak: redaction of every output path, token files and their rotation, the options."""

from __future__ import annotations

import base64
import logging
import sys
from pathlib import Path

import pytest

from service import redact
from service.config import ConfigError, secret_values
from service.connect import TLSOptions
from service.redact import RedactingFormatter, Secrets
from service.tokens import TokenFile
from tests.registrar_fixtures import run_cli
from tests.unit.test_config import parse


@pytest.mark.parametrize("text,expected", [
    ("GET http://admin:hunter22@m1:8080/v2/info failed", "GET http://admin:***@m1:8080/v2/info failed"),
    ("https://u:p%40ss@h/x and tcp://a:b@c", "https://u:***@h/x and tcp://a:***@c"),
    ("http://m1:8080/v2/apps?embed=x&token=abc.def&y=1", "http://m1:8080/v2/apps?embed=x&token=***&y=1"),
    ("{'X-Consul-Token': 'abcd-1234', 'Accept': '*/*'}", "{'X-Consul-Token': '***', 'Accept': '*/*'}"),
    ("Authorization: token=eyJhbGciOi.x.y", "Authorization: ***"),
    ("headers={\"Authorization\": \"Basic dTpw\"}", "headers={\"Authorization\": \"***\"}"),
    ("nothing secret at http://m1:8080/v2/info", "nothing secret at http://m1:8080/v2/info"),
])
def test_secret_shapes_are_redacted_without_being_registered(text: str, expected: str) -> None:
    assert Secrets().redact(text) == expected


def test_registered_values_are_redacted_anywhere_longest_first() -> None:
    s = Secrets()
    s.add("s3cr3t-token", "s3cr3t-token-rotated", None, "ab")  # "ab" is too short to be worth hiding
    assert s.redact("a s3cr3t-token-rotated b s3cr3t-token c ab") == "a *** b *** c ab"


def test_log_records_and_their_tracebacks_are_redacted() -> None:
    redact.register(["tb-secret-0001"])
    formatter = RedactingFormatter("%(levelname)s %(message)s")
    try:
        raise RuntimeError("call to http://u:pw-in-url@h:1/ with tb-secret-0001 failed")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed: %s", ("tb-secret-0001",), sys.exc_info())
    out = formatter.format(record)
    assert "Traceback" in out and "RuntimeError" in out
    assert "tb-secret-0001" not in out and "pw-in-url" not in out


def test_config_secrets_include_the_basic_auth_header_value() -> None:
    c = parse(["--marathon", "http://ops:p%40ss-word@m1:8080,http://m2:8080", "--consul-token", "consul-tok-1"])
    values = secret_values(c)
    assert "consul-tok-1" in values and "p@ss-word" in values
    assert base64.b64encode(b"ops:p@ss-word").decode() in values


def test_help_never_prints_a_secret_default() -> None:
    env = {"MCR_MARATHON": "http://ops:help-pass-1@m1:8080", "MCR_CONSUL_TOKEN": "help-token-2",
           "CONSUL_HTTP_TOKEN": "help-token-3"}
    result = run_cli("serve", "--help", env=env)
    assert result.returncode == 0
    for secret in env.values():
        assert secret.split("@")[0].rsplit(":", 1)[-1] not in result.stdout
    assert "http://ops:***@m1:8080" in result.stdout
    assert "--consul-token-file" in result.stdout and "MCR_CALLBACK_SECRET_FILE" in result.stdout


def test_a_config_error_quoting_a_url_does_not_print_its_password() -> None:
    result = run_cli("serve", "--marathon", "ftp://ops:err-pass-9@m1")
    assert result.returncode == 2
    assert "err-pass-9" not in result.stderr and "ftp://ops:***@m1" in result.stderr


def test_token_file_is_reread_when_it_changes_and_keeps_the_last_good_token(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "token"
    path.write_text("first-token-aaaa\n")
    now = [0.0]
    token = TokenFile(str(path), what="consul token", min_interval=1.0, clock=lambda: now[0])
    assert token() == "first-token-aaaa"
    path.write_text("second-token-bbbb")
    assert token() == "first-token-aaaa", "looked at again only after min_interval"
    now[0] = 1.0
    assert token() == "second-token-bbbb" and token.rotations == 1
    with caplog.at_level(logging.WARNING, logger="service.tokens"):
        path.write_text("   \n")
        for i in range(3):
            now[0] = 2.0 + i
            assert token() == "second-token-bbbb"
        path.unlink()
        now[0] = 10.0
        assert token() == "second-token-bbbb"
    complaints = [r.getMessage() for r in caplog.records]
    assert len(complaints) == 2, complaints  # empty once, then missing once
    assert all("second-token" not in m for m in complaints)
    assert "second-token-bbbb" not in redact.redact("x second-token-bbbb y"), "a rotated token is redacted too"


def test_token_file_follows_a_symlink_swap(tmp_path: Path) -> None:
    """How Kubernetes and Vault agents rotate: a new file, then the link is moved onto it."""
    (tmp_path / "v1").write_text("version-one-token")
    (tmp_path / "v2").write_text("version-two-token")
    link = tmp_path / "token"
    link.symlink_to(tmp_path / "v1")
    token = TokenFile(str(link), what="marathon token", min_interval=0.0)
    assert token() == "version-one-token"
    tmp = tmp_path / "token.new"
    tmp.symlink_to(tmp_path / "v2")
    tmp.replace(link)
    assert token() == "version-two-token"


@pytest.mark.parametrize("argv,message", [
    (["--consul-token-file", "/nonexistent/t"], "--consul-token-file: cannot read '/nonexistent/t': No such file"),
    (["--marathon-token-file", "{empty}"], "--marathon-token-file: '{empty}' is empty"),
    (["--callback-secret-file", "{short}"], "--callback-secret-file: the secret must be 16-256 of letters"),
    (["--docker-tls", "maybe"], "--docker-tls: 'maybe' is not one of off, verify, no-verify"),
    (["--docker-tls", "verify", "--docker", "unix:///var/run/docker.sock"],
     "--docker-tls: verify needs a tcp:// or https:// --docker URL"),
    (["--docker-tls", "verify", "--docker-cert-path", "{tmp}"], "--docker-cert-path: docker: cannot load CA"),
    (["--consul-http-ssl", "perhaps"], "--consul-http-ssl: 'perhaps' is not one of true, false"),
    (["--consul-http-ssl", "true", "--consul-cacert", "/nonexistent/ca.pem"],
     "--consul-cacert: '/nonexistent/ca.pem' is not a readable file"),
    (["--consul-http-ssl", "true", "--consul-cacert", "{empty}"], "--consul-cacert: consul: cannot load CA"),
    (["--consul-http-ssl", "true", "--consul-client-cert", "{short}"],
     "--consul-client-cert: consul: a client certificate needs both"),
    (["--marathon", "https://m1:8443", "--marathon-cacert", "{empty}"], "--marathon-cacert: marathon: cannot load CA"),
    (["--listen-tls-cert", "{short}"], "--listen-tls-cert: needs --listen-tls-key too"),
    (["--listen-tls-cert", "{short}", "--listen-tls-key", "{short}"], "--listen-tls-cert: cannot load"),
])
def test_bad_secret_and_tls_options_name_the_option(argv: list[str], message: str, tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "short").write_text("short\n")
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    files = {"{empty}": str(tmp_path / "empty"), "{short}": str(tmp_path / "short"), "{tmp}": str(tmp_path)}
    argv = [files.get(a, a) for a in argv]
    message = message.format(**{k.strip("{}"): v for k, v in files.items()})
    with pytest.raises(ConfigError) as err:
        parse(argv)
    assert str(err.value).startswith(message), str(err.value)


def test_consul_and_docker_tls_follow_their_tools_env_conventions(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("file-token-xyz\n")
    c = parse([], {"CONSUL_HTTP_SSL": "true", "CONSUL_HTTP_SSL_VERIFY": "false", "CONSUL_TLS_SERVER_NAME": "consul.x",
                   "CONSUL_HTTP_TOKEN_FILE": str(tmp_path / "token"), "DOCKER_TLS_VERIFY": "1",
                   "DOCKER_CERT_PATH": str(tmp_path / "{host}")})
    assert c.consul == "https://{host}:8500" and c.lock_agent == "https://127.0.0.1:8500"
    assert c.consul_tls == TLSOptions(verify=False, server_name="consul.x")
    assert c.consul_token_file == str(tmp_path / "token")
    assert c.docker_tls is not None and c.docker_tls.verify
    assert c.docker_tls.ca_file == str(tmp_path / "{host}" / "ca.pem")
    plain = parse([])
    assert (plain.consul_tls, plain.docker_tls, plain.marathon_tls) == (None, None, None)
    assert parse(["--docker", "https://{host}:2376"]).docker_tls is not None, "https:// means TLS, verified"
    mcr = parse([], {"MCR_DOCKER_TLS": "no-verify", "MCR_DOCKER_CERT_PATH": str(tmp_path),
                     "MCR_CONSUL_HTTP_SSL": "1", "MCR_CONSUL_TLS_SERVER_NAME": "n"})
    assert mcr.docker_tls is not None and not mcr.docker_tls.verify and mcr.docker_tls.ca_file is None
    assert mcr.consul_tls is not None and mcr.consul_tls.verify and mcr.consul_tls.server_name == "n"


def test_a_tls_listener_makes_the_callback_url_https(tmp_path: Path) -> None:
    from devcluster.pki import CA

    cert = CA.create(tmp_path).issue("listener", san="IP:127.0.0.1")
    c = parse(["--listen-tls-cert", str(cert.cert), "--listen-tls-key", str(cert.key)],
              {"HOST": "slave7", "PORT0": "31005"})
    assert c.callback_url == "https://slave7:31005/v1/events"
    assert (c.listen_tls_cert, c.listen_tls_key) == (str(cert.cert), str(cert.key))
