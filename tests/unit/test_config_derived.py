"""Defaults that depend on another option are derived after flags and env are merged.

Each derived default is tried with the option it depends on given as a flag, as `MCR_<OPTION>`,
and left at its default, and with the derived option itself given (which then wins). The rows that
give the option depended on as a flag are the ones a derivation from the env alone gets wrong.
"""

from __future__ import annotations

import argparse

import pytest

from service.config import add_serve_options, config_from_args


def parse(argv: list[str], env: dict[str, str]):
    parser = argparse.ArgumentParser()
    add_serve_options(parser, env)
    return config_from_args(parser.parse_args(argv))


@pytest.mark.parametrize("argv,env,want", [
    # the README's promise: `--consul` with {host} = $HOST, whichever way --consul was given
    (["--consul", "https://{host}:8501"], {"HOST": "slave7"}, "https://slave7:8501"),
    (["--consul", "https://{host}:8501"], {}, "https://127.0.0.1:8501"),
    (["--consul", "http://consul.service:8500"], {"HOST": "slave7"}, "http://consul.service:8500"),
    (["--consul", "https://{host}:8501"], {"HOST": "slave7", "MCR_CONSUL": "http://{host}:8500"},
     "https://slave7:8501"),
    ([], {"HOST": "slave7", "MCR_CONSUL": "https://{host}:8501"}, "https://slave7:8501"),
    ([], {"MCR_CONSUL": "https://consul.service:8501"}, "https://consul.service:8501"),
    ([], {"HOST": "slave7"}, "http://slave7:8500"),
    ([], {}, "http://127.0.0.1:8500"),
    # CONSUL_HTTP_SSL / --consul-http-ssl switch the derived lock agent's scheme too
    (["--consul-http-ssl"], {"HOST": "slave7"}, "https://slave7:8500"),
    ([], {"HOST": "slave7", "CONSUL_HTTP_SSL": "true"}, "https://slave7:8500"),
    # the lock agent given wins over the derivation, flag over env
    (["--consul", "https://{host}:8501", "--lock-agent", "http://10.0.0.1:8500"], {"HOST": "slave7"},
     "http://10.0.0.1:8500"),
    (["--consul", "https://{host}:8501"], {"HOST": "slave7", "MCR_LOCK_AGENT": "http://10.0.0.2:8500"},
     "http://10.0.0.2:8500"),
    (["--lock-agent", "http://10.0.0.1:8500"], {"MCR_LOCK_AGENT": "http://10.0.0.2:8500"}, "http://10.0.0.1:8500"),
])
def test_lock_agent_is_derived_from_the_merged_consul_option(argv: list[str], env: dict[str, str],
                                                             want: str) -> None:
    assert parse(argv, env).lock_agent == want


@pytest.mark.parametrize("argv,env,want", [
    # the callback URL is where this process listens, on $HOST (Marathon's name for the node)
    ([], {"HOST": "slave7", "PORT0": "31005"}, "http://slave7:31005/v1/events"),
    (["--listen", "0.0.0.0:9000"], {"HOST": "slave7", "PORT0": "31005"}, "http://slave7:9000/v1/events"),
    (["--listen", "0.0.0.0:9000"], {"HOST": "slave7"}, "http://slave7:9000/v1/events"),
    ([], {"HOST": "slave7", "MCR_LISTEN": "0.0.0.0:9001"}, "http://slave7:9001/v1/events"),
    ([], {"HOST": "slave7"}, "http://slave7:8000/v1/events"),
    # without $HOST there is no name Marathon could reach this process by
    ([], {"PORT0": "31005"}, None),
    (["--listen", "0.0.0.0:9000"], {}, None),
    # the URL given wins, flag over env
    (["--callback-url", "http://lb:80/v1/events"], {"HOST": "slave7", "PORT0": "31005"}, "http://lb:80/v1/events"),
    ([], {"HOST": "slave7", "MCR_CALLBACK_URL": "http://lb:81/v1/events"}, "http://lb:81/v1/events"),
    (["--callback-url", "http://lb:80/v1/events"], {"MCR_CALLBACK_URL": "http://lb:81/v1/events"},
     "http://lb:80/v1/events"),
])
def test_callback_url_is_derived_from_the_merged_listen_option(argv: list[str], env: dict[str, str],
                                                               want: str | None) -> None:
    assert parse(argv, env).callback_url == want


@pytest.mark.parametrize("argv,env,tls", [
    (["--marathon", "https://m:8443"], {}, True),
    ([], {"MCR_MARATHON": "https://m:8443"}, True),
    (["--marathon", "http://m:8080"], {"MCR_MARATHON": "https://m:8443"}, False),
    ([], {}, False),
])
def test_marathon_tls_follows_the_merged_marathon_urls(argv: list[str], env: dict[str, str], tls: bool) -> None:
    assert (parse(argv, env).marathon_tls is not None) is tls


@pytest.mark.parametrize("argv,env,tls", [
    (["--consul", "https://{host}:8501"], {}, True),  # the derived lock agent is https too
    ([], {"MCR_CONSUL": "https://{host}:8501"}, True),
    (["--consul", "http://{host}:8500"], {"MCR_CONSUL": "https://{host}:8501"}, False),
    (["--lock-agent", "https://127.0.0.1:8501"], {}, True),
    (["--consul-http-ssl", "false"], {"CONSUL_HTTP_SSL": "true"}, False),
    ([], {"CONSUL_HTTP_SSL": "true"}, True),
    ([], {}, False),
])
def test_consul_tls_follows_the_merged_consul_urls(argv: list[str], env: dict[str, str], tls: bool) -> None:
    assert (parse(argv, env).consul_tls is not None) is tls
