"""`marathon-consul-registrar names APP_ID`: what an operator runs to learn an app's DNS names."""

from __future__ import annotations

from tests.registrar_fixtures import run_cli


def test_names_prints_name_tags_and_dns_names() -> None:
    result = run_cli("names", "/web/customer1/site1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "name: web",
        "tags: customer1, site1.customer1",
        "dns names:",
        "  web.service.dc1.consul",
        "  customer1.web.service.dc1.consul",
        "  site1.customer1.web.service.dc1.consul",
    ]


def test_names_honours_flat_strategy_labels_and_opt_out() -> None:
    flat = run_cli("names", "/web/customer1/site1", "--naming", "flat")
    assert flat.stdout.splitlines()[:2] == ["name: site1-customer1-web", "tags: (none)"]
    renamed = run_cli("names", "/web/customer1/site1", "--label", "consul.name=web-shop")
    assert renamed.stdout.splitlines()[0] == "name: web-shop"
    out = run_cli("names", "/web/x", "--label", "consul.register=false")
    assert out.returncode == 0 and "not registered" in out.stdout
    bad = run_cli("names", "/web/x", "--label", "novalue")
    assert bad.returncode == 2 and "--label: 'novalue' is not KEY=VALUE" in bad.stderr


def test_names_refuses_an_app_id_without_a_name() -> None:
    # "/" or "" is no Marathon app id (Marathon refuses it; the registrar's parse does too): a
    # clear error, not the names of an app called "app"
    for app_id in ("/", "//", "", " "):
        result = run_cli("names", app_id)
        assert result.returncode == 2, (app_id, result.stdout)
        assert result.stdout == "" and f"APP_ID: {app_id!r} is not a Marathon app id" in result.stderr


def test_names_reads_the_naming_options_from_the_env_as_serve_does() -> None:
    # run where the registrar runs (its MCR_* env), `names` must print what serve registers
    flat = run_cli("names", "/web/customer1/site1", env={"MCR_NAMING": "flat"})
    assert flat.returncode == 0 and flat.stdout.splitlines()[0] == "name: site1-customer1-web"
    shop = run_cli("names", "/web/x", "--label", "consul.name=shop", env={"MCR_ALLOW_NAME_OVERRIDE": "any"})
    assert shop.returncode == 0 and shop.stdout.splitlines()[0] == "name: shop"
    flag = run_cli("names", "/web/customer1/site1", "--naming", "dns", env={"MCR_NAMING": "flat"})
    assert flag.stdout.splitlines()[0] == "name: web"  # the flag wins, as for serve
    bad = run_cli("names", "/web/x", env={"MCR_NAMING": "fancy"})
    assert bad.returncode == 2 and "--naming: 'fancy' is not one of dns, flat" in bad.stderr
