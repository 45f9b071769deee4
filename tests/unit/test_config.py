"""Operator configuration: flags, MCR_ env, Marathon-provided defaults, and one-line errors."""

from __future__ import annotations

import argparse

import pytest

from service.config import ConfigError, add_serve_options, config_from_args, env_name
from service.model import AddressMode, Naming
from tests.registrar_fixtures import run_cli


def parse(argv: list[str], env: dict[str, str] | None = None):
    parser = argparse.ArgumentParser()
    add_serve_options(parser, env or {})
    return config_from_args(parser.parse_args(argv))


def test_defaults_outside_marathon() -> None:
    c = parse([])
    assert c.marathon == ("http://127.0.0.1:8080",)
    assert (c.listen_host, c.listen_port) == ("0.0.0.0", 8000)
    assert c.callback_url is None
    assert c.consul == "http://{host}:8500" and c.docker == "tcp://{host}:2375"
    assert c.networks == ("weave", "bridge")
    assert c.address_mode is AddressMode.AUTO and c.naming is Naming.DNS
    assert c.resync_interval == 60.0 and c.events == "auto"


def test_defaults_under_marathon_use_host_and_port0() -> None:
    c = parse([], {"HOST": "slave7.example", "PORT0": "31005", "CONSUL_HTTP_TOKEN": "s3cret"})
    assert (c.listen_host, c.listen_port) == ("0.0.0.0", 31005)
    assert c.callback_url == "http://slave7.example:31005/v1/events"
    assert c.consul_token == "s3cret"


def test_lock_defaults_are_consuls_and_the_agent_is_this_hosts() -> None:
    c = parse([])
    assert (c.lock, c.lock_ttl, c.lock_delay, c.cluster_id) == ("auto", 15, 15, None)
    assert c.lock_agent == "http://127.0.0.1:8500"
    c = parse([], {"HOST": "slave7.example"})
    assert c.lock_agent == "http://slave7.example:8500"
    c = parse([], {"MCR_CONSUL": "https://consul.service:8501"})
    assert c.lock_agent == "https://consul.service:8501"
    c = parse(["--lock", "off", "--lock-ttl", "10", "--lock-delay", "0", "--cluster-id", "prod-1"])
    assert (c.lock, c.lock_ttl, c.lock_delay, c.cluster_id) == ("off", 10, 0, "prod-1")


def test_env_overrides_default_and_flag_overrides_env() -> None:
    env = {"MCR_NAMING": "flat", "MCR_MARATHON": "http://a:8080,http://b:8080", "MCR_RESYNC_INTERVAL": "5"}
    c = parse([], env)
    assert c.naming is Naming.FLAT and c.marathon == ("http://a:8080", "http://b:8080") and c.resync_interval == 5
    c = parse(["--naming", "dns"], env)
    assert c.naming is Naming.DNS
    assert env_name("address-mode") == "MCR_ADDRESS_MODE"


@pytest.mark.parametrize("argv,message", [
    (["--marathon", "ftp://x"], "--marathon: 'ftp://x' is not a http/https URL"),
    (["--listen", "8000"], "--listen: '8000' is not HOST:PORT"),
    (["--listen", "0.0.0.0:99999"], "--listen: '0.0.0.0:99999' is not HOST:PORT"),
    (["--events", "kafka"], "--events: 'kafka' is not one of auto, callback, sse"),
    (["--events", "callback"], "--callback-url: required with --events callback"),
    (["--address-mode", "ipv6"], "--address-mode: 'ipv6' is not one of auto, overlay, host"),
    (["--naming", "reverse"], "--naming: 'reverse' is not one of dns, flat"),
    (["--resync-interval", "soon"], "--resync-interval: 'soon' is not a number"),
    (["--resync-interval", "0"], "--resync-interval: 0 is below the minimum 1.0"),
    (["--networks", ","], "--networks: no network name given"),
    (["--consul", "consul:8500"], "--consul: 'consul:8500' is not a http/https URL"),
    (["--lock", "maybe"], "--lock: 'maybe' is not one of auto, on, off"),
    (["--lock-ttl", "9"], "--lock-ttl: 9 is below the minimum 10"),
    (["--lock-ttl", "86401"], "--lock-ttl: 86401 is above Consul's maximum 86400 (24h)"),
    (["--lock-delay", "-1"], "--lock-delay: -1 is below the minimum 0"),
    (["--lock-delay", "61"], "--lock-delay: 61 is above Consul's maximum 60"),
    (["--lock-agent", "127.0.0.1:8500"], "--lock-agent: '127.0.0.1:8500' is not a http/https URL"),
    (["--cluster-id", "a/b"], "--cluster-id: 'a/b' must be 1-128 of letters"),
])
def test_bad_values_name_the_option(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(argv)
    assert str(err.value).startswith(message)


def test_cli_config_error_is_one_line_and_nonzero() -> None:
    result = run_cli("serve", "--address-mode", "ipv6")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "marathon-consul-registrar: configuration error: --address-mode: 'ipv6' is not one of auto, overlay, host"]


def test_cli_help_lists_every_option_with_its_env_var() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    for option in ("--marathon", "--events", "--listen", "--callback-url", "--consul", "--consul-token", "--docker",
                   "--networks", "--address-mode", "--naming", "--resync-interval"):
        assert option in result.stdout
        assert env_name(option[2:]) in result.stdout
