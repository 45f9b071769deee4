"""Session fixtures: the test world (brought up if needed) and a clean Consul between e2e tests."""

from __future__ import annotations

import pytest

from devcluster.topology import world_tls_dir
from tests.helpers import ensure_world

pytest_plugins = ["tests.registrar_fixtures"]


@pytest.fixture(scope="session")
def world() -> None:
    ensure_world()


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A plain-world test in the TLS world fails at once with the reason, not after its timeouts."""
    if item.get_closest_marker("plain_world") and world_tls_dir():
        pytest.fail("this test needs the world without TLS (it is up --tls); run the TLS pass with "
                    "-m 'not plain_world'", pytrace=False)
