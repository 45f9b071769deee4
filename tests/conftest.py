"""Session fixtures: the test world (brought up if needed) and a clean Consul between e2e tests; the
`marathon14` mark on every test that runs against a Marathon 1.4 simulator (CI's TLS pass leaves them
out: 1.4's TLS differences, callbacks over HTTPS, are covered by tests/integration)."""

from __future__ import annotations

import pytest

from tests.helpers import ensure_world

pytest_plugins = ["tests.registrar_fixtures"]


@pytest.fixture(scope="session")
def world() -> None:
    ensure_world()



# the fixtures that hand a test a Marathon 1.4 simulator, and the parameters that choose one
_MARATHON14_FIXTURES = {"marathon14", "sim14"}
_VERSION_PARAMS = ("marathon", "version")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        if (_MARATHON14_FIXTURES & set(getattr(item, "fixturenames", ()))
                or any(params.get(name) == "1.4" for name in _VERSION_PARAMS)):
            item.add_marker(pytest.mark.marathon14)
