"""What operators scrape and look at (deploy/prometheus, deploy/grafana), checked with Prometheus's own
promtool (Debian's prometheus package, installed by scripts/setup).

promtool validates syntax and runs the alert rules' unit tests; the tests here add what promtool
cannot know: that every alert's tests would notice the alert never firing or firing too early, and
that the rules and the dashboard query metrics the registrar exports (a renamed metric silently
turns an alert off and a panel blank).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from service.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "rules" / "registrar.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "marathon-consul-registrar.json"
# Metrics the rules and the dashboard use before the registrar exports them: the Consul lock's
# (issue "one writer"). Remove a name here once service/metrics.py has it.
NOT_YET_EXPORTED = {"mcr_leader", "mcr_lock_acquired_total", "mcr_lock_lost_total"}
# Grafana's variables, replaced by values Prometheus accepts so that promtool can parse the queries.
DASHBOARD_VARIABLES = {"$__rate_interval": "1m", "$job": "marathon-consul-registrar", "$instance": ".+"}


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    assert path, "promtool is not installed: scripts/setup installs Debian's prometheus package"
    return subprocess.run([path, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def exported_metric_names() -> set[str]:
    """Every series name the registrar can export, labelled children or not."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(family.type, [""])
        names |= {family.name + s for s in suffixes}
    return names


def alert_names() -> list[str]:
    return re.findall(r"^\s*- alert: (\S+)\s*$", RULES.read_text(), re.MULTILINE)


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def test_promtool_accepts_the_scrape_config_and_the_rules() -> None:
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    rules = promtool("check", "rules", str(RULES))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in rules.stdout


def test_the_scrape_config_finds_the_registrar_through_marathon() -> None:
    text = (PROMETHEUS / "prometheus.yml").read_text()
    assert "marathon_sd_configs:" in text and "job_name: marathon-consul-registrar" in text
    assert re.search(r"source_labels: \[__meta_marathon_app\]\n\s+regex: .*marathon-consul-registrar\n"
                     r"\s+action: keep", text)
    assert re.search(r"source_labels: \[__meta_marathon_port_index\]\n\s+regex: \"0\"\n\s+action: keep", text)


def test_alert_rule_unit_tests_pass() -> None:
    tests = sorted(str(p.relative_to(PROMETHEUS)) for p in (PROMETHEUS / "tests").glob("*.yml"))
    assert tests
    result = promtool("test", "rules", *tests)
    assert result.returncode == 0, result.stdout + result.stderr


def _run_tests_against(rules_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """promtool's unit tests, run against a modified copy of the rules."""
    copy = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS, copy)
    (copy / "rules" / "registrar.yml").write_text(rules_text)
    return promtool("test", "rules", *sorted(str(p.relative_to(copy)) for p in (copy / "tests").glob("*.yml")),
                    cwd=copy)


def _failing_alerts(result: subprocess.CompletedProcess[str]) -> set[str]:
    """The alerts some promtool test case failed for (promtool reports every failing case)."""
    return {a for a in alert_names() if f"alertname: {a}, time:" in result.stdout + result.stderr}


def test_the_unit_tests_notice_an_alert_that_never_fires(tmp_path: Path) -> None:
    """Renaming an alert is as good as deleting it: for every alert some test must expect it firing.
    All are renamed in one run; promtool reports each failing case, so each alert must show up."""
    text = RULES.read_text()
    renamed = re.sub(r"^(\s*- alert: \S+)$", r"\1Renamed", text, flags=re.MULTILINE)
    result = _run_tests_against(renamed, tmp_path)
    assert result.returncode != 0
    assert _failing_alerts(result) == set(alert_names())


def test_the_unit_tests_notice_an_alert_that_fires_without_waiting(tmp_path: Path) -> None:
    """Each `for:` is the difference between a blip and an incident: for every alert some test must
    check that it does not fire before its `for:` has passed."""
    text = RULES.read_text()
    assert len(re.findall(r"^\s+for: \S+$", text, re.MULTILINE)) == len(alert_names()), "an alert without for:"
    hasty = re.sub(r"^(\s+)for: \S+$", r"\1for: 0m", text, flags=re.MULTILINE)
    result = _run_tests_against(hasty, tmp_path)
    assert result.returncode != 0
    assert _failing_alerts(result) == set(alert_names())


def test_rules_and_dashboard_query_only_metrics_the_registrar_exports() -> None:
    exported = exported_metric_names() | NOT_YET_EXPORTED
    used = set(re.findall(r"\bmcr_\w+", RULES.read_text() + "\n".join(dashboard_queries())))
    assert used and used <= exported, sorted(used - exported)


def test_the_dashboard_shows_every_metric_the_registrar_exports() -> None:
    shown = set(re.findall(r"\bmcr_\w+", "\n".join(dashboard_queries())))
    families = {re.sub(r"_(bucket|count|sum)$", "", n) for n in shown}
    missing = {n for n in exported_metric_names() if n not in shown and re.sub(r"_(bucket|count|sum)$", "", n)
               not in families}
    assert not missing, sorted(missing)


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool has no "parse this query" command; as recording rules, `check rules` parses them all."""
    queries = dashboard_queries()
    rules = []
    for i, expr in enumerate(queries):
        for variable, value in sorted(DASHBOARD_VARIABLES.items(), key=lambda kv: -len(kv[0])):
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))  # JSON is YAML
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_the_dashboard_lets_the_operator_pick_the_data_source_and_every_panel_uses_it() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["targets"], panel["title"]
        for source in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
            assert source == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
