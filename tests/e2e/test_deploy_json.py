"""deploy/marathon.json is a valid Marathon app for both API generations (1.4's networking shape is
still accepted by 1.5+), and what it configures is what the registrar reads."""

from __future__ import annotations

import argparse
import json

from service.config import add_serve_options, config_from_args
from tests.helpers import ROOT, http, wait_for
from tests.registrar_fixtures import Marathon

DEPLOY = json.loads((ROOT / "deploy" / "marathon.json").read_text())


def test_simulators_accept_the_deploy_json(marathon: Marathon) -> None:
    status, body, _ = http("POST", f"{marathon.url}/v2/apps", DEPLOY)
    assert status == 201, (status, body)
    try:
        status, app, _ = http("GET", f"{marathon.url}/v2/apps{DEPLOY['id']}")
        assert status == 200
        app = app["app"]
        assert app["instances"] == 2 and app["constraints"] == [["hostname", "UNIQUE"]]
        [check] = app["healthChecks"]
        assert (check["protocol"], check["path"], check["portIndex"]) == ("HTTP", "/health", 0)
        assert app["env"] == DEPLOY["env"]
    finally:
        marathon.delete(DEPLOY["id"])
        wait_for(lambda: DEPLOY["id"] not in marathon.apps(), 20, what="deploy app removed")


def test_deploy_env_is_a_valid_registrar_configuration_under_marathon() -> None:
    env = {**DEPLOY["env"], "HOST": "slave3.example", "PORT0": "31777"}
    parser = argparse.ArgumentParser()
    add_serve_options(parser, env)
    config = config_from_args(parser.parse_args([]))
    assert config.callback_url == "http://slave3.example:31777/v1/events"
    assert config.listen_port == 31777
    assert config.consul == "http://{host}:8500" and config.docker == "tcp://{host}:2375"
