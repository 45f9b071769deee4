"""Consul names and tags from app ids, labels and registrator env (README "Naming")."""

from __future__ import annotations

import hashlib

import pytest

from service.model import App, Naming, NetworkMode, PortMapping
from service.naming import Identity, dns_label, dns_names, service_identity, split_tags

ONE_PORT = (PortMapping(80, 0, "http"),)
TWO_PORTS = (PortMapping(80, 0, "http"), PortMapping(9000, 0, "admin"))
TWO_PORTS_UNNAMED = (PortMapping(80, 0), PortMapping(9000, 0))


def app(app_id: str = "/web/customer1/site1", *, ports=ONE_PORT, labels=None, env=None, mode=NetworkMode.BRIDGE):
    return App(id=app_id, network_mode=mode, port_mappings=ports, labels=labels or {}, env=env or {})


def _long_name(full: str) -> str:
    """What a > 63 character name becomes: 54 characters, '-', 8 hex digits of its hash."""
    return f"{full[:54].rstrip('-')}-{hashlib.sha256(full.encode()).hexdigest()[:8]}"


LONG = "a" * 70
LONG_FLAT = "-".join(["segment-" + str(i) for i in range(9, -1, -1)])  # /segment-0/.../segment-9 reversed


@pytest.mark.parametrize(
    ("the_app", "port_index", "naming", "expected"),
    [
        # --- the dns strategy -------------------------------------------------------------------
        pytest.param(app(), 0, Naming.DNS, Identity("web", ("customer1", "site1.customer1")), id="dns-three-levels"),
        pytest.param(app("/web"), 0, Naming.DNS, Identity("web", ()), id="dns-single-segment"),
        pytest.param(app("/web/customer1"), 0, Naming.DNS, Identity("web", ("customer1",)), id="dns-two-levels"),
        pytest.param(app("/a/b/c/d"), 0, Naming.DNS, Identity("a", ("b", "c.b", "d.c.b")), id="dns-four-levels"),
        # dots below the first segment stay: Consul re-joins `a.v1.2` from the DNS labels
        pytest.param(app("/web/v1.2/a"), 0, Naming.DNS, Identity("web", ("v1.2", "a.v1.2")), id="dns-dot-in-segment"),
        # a dot in the first segment cannot be a single DNS label: rewritten
        pytest.param(app("/web.v1/a"), 0, Naming.DNS,
                     Identity("web-v1", ("a",), ("service name 'web.v1' is not a valid DNS label (characters other "
                                                 "than a-z, 0-9 and '-' inside or '-' at an end); registered as "
                                                 "'web-v1'",)),
                     id="dns-dot-in-first-segment"),
        # --- the flat strategy ------------------------------------------------------------------
        pytest.param(app(), 0, Naming.FLAT, Identity("site1-customer1-web", ()), id="flat-three-levels"),
        pytest.param(app("/web"), 0, Naming.FLAT, Identity("web", ()), id="flat-single-segment"),
        pytest.param(app("/web/v1.2/a"), 0, Naming.FLAT,
                     Identity("a-v1-2-web", (), ("service name 'a-v1.2-web' is not a valid DNS label (characters "
                                                 "other than a-z, 0-9 and '-' inside or '-' at an end); registered "
                                                 "as 'a-v1-2-web'",)),
                     id="flat-dot-in-segment"),
        pytest.param(app("/" + "/".join(f"segment-{i}" for i in range(10))), 0, Naming.FLAT,
                     Identity(_long_name(LONG_FLAT), (),
                              (f"service name {LONG_FLAT!r} is not a valid DNS label (longer than 63 characters); "
                               f"registered as {_long_name(LONG_FLAT)!r}",)),
                     id="flat-long-name-hashed"),
        # --- labels -----------------------------------------------------------------------------
        pytest.param(app(labels={"consul.name": "shop"}), 0, Naming.DNS,
                     Identity("shop", ("customer1", "site1.customer1")), id="label-name-keeps-path-tags"),
        pytest.param(app(labels={"consul.tags": "blue, canary,,blue"}), 0, Naming.DNS,
                     Identity("web", ("customer1", "site1.customer1", "blue", "canary")), id="label-tags-added"),
        pytest.param(app(labels={"consul.tags": "customer1,x"}), 0, Naming.DNS,
                     Identity("web", ("customer1", "site1.customer1", "x")), id="label-tags-deduplicated"),
        pytest.param(app(labels={"consul.name": "shop"}, env={"SERVICE_NAME": "api", "SERVICE_80_NAME": "front"}),
                     0, Naming.DNS, Identity("shop", ("customer1", "site1.customer1")), id="label-name-beats-env"),
        pytest.param(app(labels={"consul.name": "My_Shop!"}), 0, Naming.DNS,
                     Identity("my-shop", ("customer1", "site1.customer1"),
                              ("service name 'My_Shop!' is not a valid DNS label (upper case, characters other than "
                               "a-z, 0-9 and '-' inside or '-' at an end); registered as 'my-shop'",)),
                     id="label-name-invalid-chars"),
        pytest.param(app(labels={"consul.name": LONG}), 0, Naming.DNS,
                     Identity(_long_name(LONG), ("customer1", "site1.customer1"),
                              (f"service name {LONG!r} is not a valid DNS label (longer than 63 characters); "
                               f"registered as {_long_name(LONG)!r}",)),
                     id="label-name-too-long"),
        pytest.param(app(labels={"consul.name": "a" * 63}), 0, Naming.DNS,
                     Identity("a" * 63, ("customer1", "site1.customer1")), id="label-name-63-is-fine"),
        pytest.param(app(labels={"consul.name": "___"}), 0, Naming.DNS,
                     Identity("web", ("customer1", "site1.customer1"),
                              ("service name '___' has no valid DNS label characters; using the app id instead",)),
                     id="label-name-nothing-valid-falls-back"),
        pytest.param(app(labels={"consul.name": "  "}), 0, Naming.DNS,
                     Identity("web", ("customer1", "site1.customer1")), id="label-name-blank-ignored"),
        # --- registrator env --------------------------------------------------------------------
        pytest.param(app(env={"SERVICE_NAME": "api"}), 0, Naming.DNS,
                     Identity("api", ("customer1", "site1.customer1")), id="env-name"),
        pytest.param(app(env={"SERVICE_TAGS": "a,b\\,c, d"}), 0, Naming.DNS,
                     Identity("web", ("customer1", "site1.customer1", "a", "b,c", "d")), id="env-tags-escaped-comma"),
        pytest.param(app(env={"SERVICE_80_NAME": "front", "SERVICE_NAME": "api"}), 0, Naming.DNS,
                     Identity("front", ("customer1", "site1.customer1")), id="env-port-name-beats-env-name"),
        pytest.param(app(env={"SERVICE_TAGS": "all", "SERVICE_80_TAGS": "p80"}), 0, Naming.DNS,
                     Identity("web", ("customer1", "site1.customer1", "p80")), id="env-port-tags-replace-env-tags"),
        pytest.param(app(env={"SERVICE_TAGS": "e"}, labels={"consul.tags": "l"}), 0, Naming.FLAT,
                     Identity("site1-customer1-web", ("e", "l")), id="flat-env-and-label-tags"),
        # --- two ports --------------------------------------------------------------------------
        pytest.param(app(ports=TWO_PORTS), 0, Naming.DNS, Identity("web", ("customer1", "site1.customer1")),
                     id="two-ports-first-keeps-name"),
        pytest.param(app(ports=TWO_PORTS), 1, Naming.DNS, Identity("web-admin", ("customer1", "site1.customer1")),
                     id="two-ports-second-by-mapping-name"),
        pytest.param(app(ports=TWO_PORTS_UNNAMED), 1, Naming.DNS,
                     Identity("web-9000", ("customer1", "site1.customer1")), id="two-ports-second-by-container-port"),
        pytest.param(app(ports=(PortMapping(0, 0), PortMapping(0, 0))), 1, Naming.FLAT,
                     Identity("site1-customer1-web-port1", ()), id="two-ports-no-name-no-port-uses-index"),
        pytest.param(app(ports=TWO_PORTS, labels={"consul.name": "shop"}), 1, Naming.DNS,
                     Identity("shop-admin", ("customer1", "site1.customer1")), id="two-ports-label-name-suffixed"),
        pytest.param(app(ports=TWO_PORTS, env={"SERVICE_NAME": "api"}), 1, Naming.FLAT,
                     Identity("api-admin", ()), id="two-ports-env-name-suffixed"),
        pytest.param(app(ports=TWO_PORTS, env={"SERVICE_9000_NAME": "metrics", "SERVICE_9000_TAGS": "prom"}), 1,
                     Naming.DNS, Identity("metrics", ("customer1", "site1.customer1", "prom")),
                     id="two-ports-per-port-name-not-suffixed"),
        pytest.param(app(ports=TWO_PORTS, env={"SERVICE_9000_NAME": "metrics"}), 0, Naming.DNS,
                     Identity("web", ("customer1", "site1.customer1")), id="two-ports-per-port-name-other-port"),
        pytest.param(app("/svc", ports=(PortMapping(10000, 0, "http"), PortMapping(10001, 0)), mode=NetworkMode.HOST),
                     1, Naming.DNS, Identity("svc-10001", ()), id="host-network-port-definitions"),
        # --- opting in explicitly ---------------------------------------------------------------
        pytest.param(app(labels={"consul.register": "true"}, env={"SERVICE_IGNORE": "1"}), 0, Naming.DNS,
                     Identity("web", ("customer1", "site1.customer1")), id="label-register-true-beats-env-ignore"),
        pytest.param(app(env={"SERVICE_IGNORE": "false"}), 0, Naming.DNS,
                     Identity("web", ("customer1", "site1.customer1")), id="env-ignore-false-registers"),
        pytest.param(app(env={"SERVICE_IGNORE": ""}), 0, Naming.DNS,
                     Identity("web", ("customer1", "site1.customer1")), id="env-ignore-empty-registers"),
        pytest.param(app(ports=TWO_PORTS, env={"SERVICE_80_IGNORE": "true"}), 1, Naming.DNS,
                     Identity("web-admin", ("customer1", "site1.customer1")), id="per-port-ignore-other-port"),
    ],
)
def test_service_identity(the_app, port_index, naming, expected):
    assert service_identity(the_app, port_index, naming) == expected


@pytest.mark.parametrize(
    ("the_app", "port_index"),
    [
        pytest.param(app(labels={"consul.register": "false"}), 0, id="label-register-false"),
        pytest.param(app(labels={"consul.register": "FALSE"}, env={"SERVICE_NAME": "x"}), 0, id="label-case"),
        pytest.param(app(labels={"consul.register": "0"}), 0, id="label-zero"),
        pytest.param(app(env={"SERVICE_IGNORE": "true"}), 0, id="env-ignore"),
        pytest.param(app(env={"SERVICE_IGNORE": "1"}), 0, id="env-ignore-1"),
        pytest.param(app(ports=TWO_PORTS, env={"SERVICE_IGNORE": "yes"}), 1, id="env-ignore-all-ports"),
        pytest.param(app(ports=TWO_PORTS, env={"SERVICE_9000_IGNORE": "true"}), 1, id="per-port-ignore"),
        pytest.param(app(labels={"consul.register": "false", "consul.name": "x"}, env={"SERVICE_80_NAME": "y"}), 0,
                     id="register-false-beats-names"),
    ],
)
def test_opted_out(the_app, port_index):
    assert service_identity(the_app, port_index, Naming.DNS) is None


@pytest.mark.parametrize(("ports", "port_index"), [(ONE_PORT, -1), (ONE_PORT, 1), (ONE_PORT, 5), ((), 1)])
def test_port_index_out_of_range(ports, port_index):
    with pytest.raises(ValueError, match="has no port index"):
        service_identity(app(ports=ports), port_index, Naming.DNS)


@pytest.mark.parametrize(
    ("labels", "env", "expected"),
    [
        ({}, {}, Identity("web", ("customer1", "site1.customer1"))),
        ({"consul.tags": "x"}, {"SERVICE_NAME": "api", "SERVICE_80_NAME": "ignored"},
         Identity("api", ("customer1", "site1.customer1", "x"))),
        ({"consul.register": "false"}, {}, None),
    ],
)
def test_app_without_ports_still_has_a_name(labels, env, expected):
    """What `names APP_ID` asks for: the app's name with no port mappings known."""
    assert service_identity(app(ports=(), labels=labels, env=env), 0, Naming.DNS) == expected


@pytest.mark.parametrize(
    ("raw", "label", "why"),
    [
        ("web", "web", ""),
        ("Web", "web", "upper case"),
        ("-web-", "web", "characters other than a-z, 0-9 and '-' inside or '-' at an end"),
        ("a b..c", "a-b-c", "characters other than a-z, 0-9 and '-' inside or '-' at an end"),
        ("a--b", "a--b", ""),
        ("x" * 63, "x" * 63, ""),
        ("x" * 64, _long_name("x" * 64), "longer than 63 characters"),
        ("", "", ""),
    ],
)
def test_dns_label(raw, label, why):
    assert dns_label(raw) == (label, why)
    assert len(label) <= 63


@pytest.mark.parametrize(
    ("value", "tags"),
    [(None, []), ("", []), ("a", ["a"]), (" a , b ,", ["a", "b"]), ("a\\,b,c", ["a,b", "c"]), (",,", [])],
)
def test_split_tags(value, tags):
    assert split_tags(value) == tags


@pytest.mark.parametrize(
    ("identity", "dc", "names"),
    [
        (Identity("web", ("customer1", "site1.customer1")), "dc1",
         ["web.service.dc1.consul", "customer1.web.service.dc1.consul", "site1.customer1.web.service.dc1.consul"]),
        (Identity("web", ()), "eu-west", ["web.service.eu-west.consul"]),
        (Identity("web", ("v1.2", "a.v1.2")), "dc1",
         ["web.service.dc1.consul", "v1.2.web.service.dc1.consul", "a.v1.2.web.service.dc1.consul"]),
        # tags DNS cannot express are left out
        (Identity("web", ("has space", "a_b", "a..b", "-x", "x" * 64, "ok")), "dc1",
         ["web.service.dc1.consul", "ok.web.service.dc1.consul"]),
    ],
)
def test_dns_names(identity, dc, names):
    assert dns_names(identity, dc) == names


def test_dns_names_default_datacenter():
    assert dns_names(Identity("web", ("customer1",))) == ["web.service.dc1.consul", "customer1.web.service.dc1.consul"]
