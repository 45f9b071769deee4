"""The README's options table is the operator's reference: every option `serve` takes is in it, in
a row that also names its `MCR_` env variable, and each TLS option names the Docker or Consul
variable it also reads (operators carry those over from the tools they already run)."""

from __future__ import annotations

import re

import pytest

from service.config import DERIVED, OPTIONS, env_name
from tests.helpers import ROOT

ROWS = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `--")]

# the Docker and Consul env names the TLS options take their defaults from (issue 13)
NATIVE_ENV = {
    "docker-tls": "DOCKER_TLS_VERIFY", "docker-cert-path": "DOCKER_CERT_PATH",
    "consul-http-ssl": "CONSUL_HTTP_SSL", "consul-http-ssl-verify": "CONSUL_HTTP_SSL_VERIFY",
    "consul-cacert": "CONSUL_CACERT", "consul-capath": "CONSUL_CAPATH",
    "consul-client-cert": "CONSUL_CLIENT_CERT", "consul-client-key": "CONSUL_CLIENT_KEY",
    "consul-tls-server-name": "CONSUL_TLS_SERVER_NAME", "consul-token-file": "CONSUL_HTTP_TOKEN_FILE",
}


def row_of(option: str) -> str:
    """The table row whose first cell names `--option` (a row may document a pair of options)."""
    for row in ROWS:
        first_cell = row.split(" | ")[0]
        if re.search(rf"`--{re.escape(option)}`", first_cell):
            return row
    raise AssertionError(f"README options table has no row for --{option}")


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_every_option_has_a_row_naming_its_env_variable(option: str) -> None:
    assert f"`{env_name(option)}`" in row_of(option).split(" | ")[0]


@pytest.mark.parametrize("option", sorted(NATIVE_ENV))
def test_tls_options_name_the_docker_or_consul_variable_they_read(option: str) -> None:
    assert NATIVE_ENV[option] in row_of(option), f"--{option}'s row does not mention ${NATIVE_ENV[option]}"


def test_every_row_names_an_option_serve_takes() -> None:
    for row in ROWS:
        for option in re.findall(r"`--([a-z-]+)`", row.split(" | ")[0]):
            assert option in OPTIONS, f"README documents --{option}, which serve does not take"


@pytest.mark.parametrize("option", sorted(DERIVED))
def test_derived_defaults_name_what_they_derive_from_as_help_does(option: str) -> None:
    """`--help` and the README say the same thing about a default taken from other options."""
    default_cell = row_of(option).split(" | ")[1]
    for source in re.findall(r"--[a-z-]+|\$[A-Z0-9_]+|\{host\}", DERIVED[option]):
        assert source in default_cell, f"--{option}'s README default does not mention {source}"
