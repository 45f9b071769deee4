"""--allow-name-override: which consul.name / SERVICE_NAME claims an app may make on a shared cluster."""

from __future__ import annotations

import logging

import pytest

from service.config import ConfigError
from service.metrics import Metrics
from service.model import App, NameOverride, Naming, PortMapping
from service.naming import service_identity, within_group
from service.reconcile import ReconcileSettings
from service.reconcile.world import WorldReader
from tests.registrar_fixtures import run_cli
from tests.unit.fakes import FakeAgents, FakeLookup, FakeMarathon
from tests.unit.test_config import parse

ONE = (PortMapping(container_port=80, host_port=0),)
TWO = (PortMapping(container_port=80, host_port=0), PortMapping(container_port=9000, host_port=0, name="metrics"))
G, A, N = NameOverride.GROUP, NameOverride.ANY, NameOverride.NONE


def app(app_id: str = "/web/shop", *, labels: dict[str, str] | None = None, env: dict[str, str] | None = None,
        ports: tuple[PortMapping, ...] = ONE) -> App:
    return App(id=app_id, port_mappings=ports, labels=labels or {}, env=env or {})


@pytest.mark.parametrize("the_app,port,naming,override,name,refused", [
    # group (the default): the group's own label, <group>-*, or the app's own derived name
    (app(labels={"consul.name": "web-frontend"}), 0, Naming.DNS, G, "web-frontend", False),
    (app(labels={"consul.name": "web"}), 0, Naming.DNS, G, "web", False),
    (app(labels={"consul.name": "payments"}), 0, Naming.DNS, G, "web", True),
    (app(labels={"consul.name": "webfrontend"}), 0, Naming.DNS, G, "web", True),  # no '-': another group's name
    (app(labels={"consul.name": "frontend-web"}), 0, Naming.DNS, G, "web", True),
    (app(labels={"consul.name": "Web_Frontend"}), 0, Naming.DNS, G, "web-frontend", False),  # judged cleaned
    (app(labels={"consul.name": "Payments"}), 0, Naming.DNS, G, "web", True),
    (app(env={"SERVICE_NAME": "payments"}), 0, Naming.DNS, G, "web", True),
    (app(env={"SERVICE_NAME": "web-api"}), 0, Naming.DNS, G, "web-api", False),
    (app(env={"SERVICE_80_NAME": "payments"}), 0, Naming.DNS, G, "web", True),
    (app(env={"SERVICE_80_NAME": "web-edge"}), 0, Naming.DNS, G, "web-edge", False),
    # the label is refused: the env override below it is not consulted, the derived name is used
    (app(labels={"consul.name": "payments"}, env={"SERVICE_NAME": "web-api"}), 0, Naming.DNS, G, "web", True),
    # flat: the derived name itself is always allowed, and so is <group>-*
    (app("/web/customer1/site1", labels={"consul.name": "site1-customer1-web"}), 0, Naming.FLAT, G,
     "site1-customer1-web", False),
    (app("/web/customer1/site1", labels={"consul.name": "payments"}), 0, Naming.FLAT, G, "site1-customer1-web", True),
    (app("/web/customer1/site1", labels={"consul.name": "web-x"}), 0, Naming.FLAT, G, "web-x", False),
    # a top-level app is its own group
    (app("/payments", labels={"consul.name": "payments-v2"}), 0, Naming.DNS, G, "payments-v2", False),
    (app("/payments", labels={"consul.name": "web"}), 0, Naming.DNS, G, "payments", True),
    # a dotted first segment: the group's label is its DNS-cleaned form
    (app("/web.v1/a", labels={"consul.name": "web-v1-shop"}), 0, Naming.DNS, G, "web-v1-shop", False),
    # multi-port: the second port keeps the suffix of whichever base name won
    (app(labels={"consul.name": "web-shop"}, ports=TWO), 1, Naming.DNS, G, "web-shop-metrics", False),
    (app(labels={"consul.name": "payments"}, ports=TWO), 1, Naming.DNS, G, "web-metrics", True),
    # any: registrator's behaviour
    (app(labels={"consul.name": "payments"}), 0, Naming.DNS, A, "payments", False),
    (app(env={"SERVICE_NAME": "payments"}), 0, Naming.DNS, A, "payments", False),
    # none: even a name inside the group is refused
    (app(labels={"consul.name": "web-frontend"}), 0, Naming.DNS, N, "web", True),
    (app(env={"SERVICE_80_NAME": "web"}), 0, Naming.DNS, N, "web", True),
    # no override at all: nothing to refuse under any policy
    (app(), 0, Naming.DNS, N, "web", False),
])
def test_name_override_policy(the_app: App, port: int, naming: Naming, override: NameOverride, name: str,
                              refused: bool) -> None:
    identity = service_identity(the_app, port, naming, override)
    assert identity is not None
    assert identity.name == name
    assert bool(identity.refused) == refused, identity.refused


def test_refusal_message_names_the_source_the_policy_and_the_name_used() -> None:
    identity = service_identity(app(env={"SERVICE_NAME": "payments"}), 0, Naming.DNS, G)
    assert identity is not None
    assert identity.refused == ("service name 'payments' from env SERVICE_NAME refused: outside its group /web "
                                "(--allow-name-override group); registered as 'web'",)
    identity = service_identity(app(labels={"consul.name": "web-x"}), 0, Naming.DNS, N)
    assert identity is not None and "label consul.name refused: --allow-name-override none" in identity.refused[0]


def test_tags_are_kept_when_the_name_is_refused() -> None:
    identity = service_identity(app("/web/c1/s1", labels={"consul.name": "payments", "consul.tags": "x"}), 0,
                                Naming.DNS, G)
    assert identity is not None and identity.tags == ("c1", "s1.c1", "x")


@pytest.mark.parametrize("name,segments,derived,ok", [
    ("web", ["web"], "web", True),
    ("web-a-b", ["web", "x"], "web", True),
    ("we", ["web", "x"], "web", False),
    ("web-", ["web"], "web", True),  # never produced: DNS cleaning strips a trailing '-'
    ("x", [], "x", True),
    ("y", [], "x", False),
])
def test_within_group(name: str, segments: list[str], derived: str, ok: bool) -> None:
    assert within_group(name, segments, derived) is ok


async def test_a_refusal_is_logged_once_and_counted_once(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    reader = WorldReader(marathon=FakeMarathon(), lookup=FakeLookup(), agents=FakeAgents(), metrics=metrics,
                         settings=ReconcileSettings())
    greedy = app(labels={"consul.name": "payments"})
    with caplog.at_level(logging.WARNING, logger="service.reconcile.world"):
        for _ in range(3):
            await reader.desired(greedy, [])
        await reader.desired(app("/web/other", labels={"consul.name": "payments"}), [])
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 2, refusals  # once per app, not once per read
    assert refusals[0].startswith("app /web/shop: service name 'payments' from label consul.name refused")
    assert metrics.name_overrides_refused._value.get() == 2


def test_option_default_env_and_validation() -> None:
    assert parse([]).allow_name_override is NameOverride.GROUP
    assert parse([], {"MCR_ALLOW_NAME_OVERRIDE": "any"}).allow_name_override is NameOverride.ANY
    assert parse(["--allow-name-override", "none"]).allow_name_override is NameOverride.NONE
    with pytest.raises(ConfigError, match=r"^--allow-name-override: 'all' is not one of group, any, none$"):
        parse(["--allow-name-override", "all"])


def test_names_command_applies_the_policy() -> None:
    refused = run_cli("names", "/web/customer1/site1", "--label", "consul.name=payments")
    assert refused.stdout.splitlines()[0] == "name: web"
    assert "refused: outside its group /web" in refused.stderr
    allowed = run_cli("names", "/web/customer1/site1", "--label", "consul.name=payments",
                      "--allow-name-override", "any")
    assert allowed.stdout.splitlines()[0] == "name: payments" and allowed.stderr == ""
