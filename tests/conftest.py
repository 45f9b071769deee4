"""Session fixtures: the test world (brought up if needed) and a clean Consul between e2e tests."""

from __future__ import annotations

import pytest

from tests.helpers import ensure_world

pytest_plugins = ["tests.registrar_fixtures"]


@pytest.fixture(scope="session")
def world() -> None:
    ensure_world()

