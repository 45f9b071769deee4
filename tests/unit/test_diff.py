"""The resync's pure diff (service/reconcile/diff.py): a table, no fakes, no I/O."""

from __future__ import annotations

from dataclasses import replace

import pytest

from service.model import ConsulCheck, OwnedService, Registration, Skip, Task
from service.ownership import ownership_meta
from service.reconcile.diff import diff

APP = "/web/site"
H1, H2 = "127.0.0.2", "127.0.0.3"


def url(host: str) -> str:
    return f"http://{host}:8500"


def reg(n: int, host: str = H1, *, ttl: bool = False, app: str = APP) -> Registration:
    tid = f"web_site.t{n}"
    sid = f"mcr-{tid}-0"
    checks = (ConsulCheck(check_id=f"service:{sid}:1", name="Marathon COMMAND health check 1", ttl="180s"),) \
        if ttl else ()
    return Registration(agent_host=host, service_id=sid, name="site", tags=("web",), address=f"10.32.0.{n}",
                        port=80, meta=ownership_meta(app_id=app, task_id=tid, host=host, port_index=0,
                                                     address_source="overlay"), checks=checks)


def task(n: int, host: str = H1, health: tuple[bool | None, ...] = ()) -> Task:
    return Task(id=f"web_site.t{n}", app_id=APP, host=host, health=health)


def owned(r: Registration, status: str = "critical") -> OwnedService:
    return OwnedService(r, {c.check_id: c.kind for c in r.checks}, {c.check_id: status for c in r.checks})


def run(desired: list[Registration], have: list[OwnedService], tasks: list[Task] | None = None,
        skips: list[Skip] | None = None, unreachable: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return diff(desired={r.service_id: r for r in desired}, owned={o.registration.service_id: o for o in have},
                tasks={t.id: t for t in (tasks if tasks is not None else [task(int(r.task_id[-1]), r.agent_host)
                                                                          for r in desired])},
                skips={APP: skips or []}, owner_agent={o.registration.service_id: url(o.registration.agent_host)
                                                       for o in have},
                unreachable=unreachable or {}, agent_url=url)


def kinds(d) -> dict[str, dict[str, list[str]]]:  # type: ignore[no-untyped-def]
    return {k: v for k, v in (("missing", d.missing), ("orphan", d.orphan), ("drifted", d.drifted)) if v}


CASES = {
    "in sync": ([reg(1)], [owned(reg(1))], {}, set()),
    "missing": ([reg(1)], [], {"missing": {url(H1): [reg(1).service_id]}}, {APP}),
    "orphan": ([], [owned(reg(1))], {"orphan": {url(H1): [reg(1).service_id]}}, {APP}),
    "orphan of another app": ([reg(1)], [owned(reg(1)), owned(reg(2, app="/other"))],
                              {"orphan": {url(H1): [reg(2).service_id]}}, {"/other"}),
    "content drifted": ([reg(1)], [owned(replace(reg(1), address="10.99.0.1"))],
                        {"drifted": {url(H1): [reg(1).service_id]}}, {APP}),
    "on the wrong agent": ([reg(1, H2)], [owned(reg(1, H1))], {"drifted": {url(H2): [reg(1).service_id]}}, {APP}),
}


@pytest.mark.parametrize("desired,have,expected,apps", CASES.values(), ids=list(CASES))
def test_drift_kinds(desired: list[Registration], have: list[OwnedService], expected: dict[str, object],
                     apps: set[str]) -> None:
    d = run(desired, have)
    assert kinds(d) == expected
    assert d.apps_to_repair == apps


def test_missing_on_an_unreachable_agent_is_not_missing_but_unseen() -> None:
    d = run([reg(1, H1), reg(2, H2)], [], unreachable={url(H2): "connection refused"})
    assert kinds(d) == {"missing": {url(H1): [reg(1).service_id]}}
    assert d.unreachable == {url(H2): "connection refused"}
    assert d.as_dict()["unreachable_agents"] == {url(H2): "connection refused"}


@pytest.mark.parametrize("health,status,drifted,refreshed", [
    ((True,), "passing", False, True),    # in sync: refreshed so the TTL does not run out
    ((True,), "critical", True, False),   # Marathon says alive, the agent says critical
    ((False,), "passing", True, False),
    ((None,), "critical", False, True),   # Marathon has no verdict yet: nothing to compare
])
def test_ttl_mirror_out_of_sync_is_drift(health: tuple[bool | None, ...], status: str, drifted: bool,
                                         refreshed: bool) -> None:
    r = reg(1, ttl=True)
    d = run([r], [owned(r, status)], tasks=[task(1, health=health)])
    assert bool(d.drifted) is drifted
    assert [x[0].service_id for x in d.ttl_refresh] == ([r.service_id] if refreshed else [])


def test_skipped_tasks_are_reported_and_only_retryable_ones_repair_their_app() -> None:
    d = run([], [], skips=[Skip("web_site.t1", "register-false")])
    assert d.skipped == {"web_site.t1": "register-false"} and d.apps_to_repair == set()
    d = run([], [], skips=[Skip("web_site.t2", "container-not-found", retry=True)])
    assert d.skipped == {"web_site.t2": "container-not-found"} and d.apps_to_repair == {APP}


def test_registrations_of_a_task_not_looked_up_are_not_orphans() -> None:
    """The step leaves them alone (their truth is not known), so the resync must not count them."""
    skip = Skip("web_site.t1", "docker-refused", "403", retry=True, reported=True)
    d = run([], [owned(reg(1))], skips=[skip])
    assert kinds(d) == {} and d.apps_to_repair == {APP}
    d = run([], [owned(reg(1))], skips=[Skip("web_site.t1", "register-false")])
    assert kinds(d) == {"orphan": {url(H1): [reg(1).service_id]}}, "a decided skip does remove it"


def test_counts() -> None:
    d = run([reg(1), reg(2)], [owned(replace(reg(2), port=81)), owned(reg(3)), owned(reg(4))])
    assert d.counts() == {"missing": 1, "orphan": 2, "drifted": 1}
