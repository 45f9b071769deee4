"""The ledger of what we own (service/reconcile/ledger.py)."""

from __future__ import annotations

from dataclasses import fields, replace

from service.model import ConsulCheck, OwnedService, Registration
from service.ownership import ownership_meta
from service.reconcile.ledger import Ledger

H1, H2 = "127.0.0.2", "127.0.0.3"


def reg(task: str, index: int = 0, host: str = H1, app: str = "/a", ttl: bool = False) -> Registration:
    sid = f"mcr-{task}-{index}"
    checks = (ConsulCheck(check_id=f"service:{sid}:1", name="ttl", ttl="180s"),) if ttl else ()
    return Registration(agent_host=host, service_id=sid, name="a", tags=(), address="10.32.0.1", port=80,
                        meta=ownership_meta(app_id=app, task_id=task, host=host, port_index=index,
                                            address_source="overlay"), checks=checks)


def owned(r: Registration, status: str = "passing") -> OwnedService:
    return OwnedService(r, {c.check_id: c.kind for c in r.checks}, {c.check_id: status for c in r.checks})


def test_remember_and_forget_track_tasks_and_their_services() -> None:
    ledger = Ledger()
    r0, r1, other = reg("t1", 0), reg("t1", 1), reg("t2")
    for r in (r0, r1, other):
        ledger.remember(r)
    assert set(ledger.owned_for(["t1"])) == {r0.service_id, r1.service_id}
    ledger.forget(r0)
    assert set(ledger.owned_for(["t1"])) == {r1.service_id}
    ledger.forget(r1)
    assert ledger.owned_for(["t1"]) == {} and len(ledger) == 1
    ledger.forget(r1)  # forgetting twice is harmless
    assert [r.service_id for r in ledger.registrations()] == [other.service_id]


def test_owned_for_reports_the_ttl_states_we_last_saw_or_pushed() -> None:
    ledger = Ledger()
    r = reg("t1", ttl=True)
    [check] = r.checks
    ledger.replace_from({r.service_id: owned(r, "critical")})
    assert ledger.owned_for(["t1"])[r.service_id].check_status == {check.check_id: "critical"}
    ledger.set_ttl(check.check_id, "passing")
    got = ledger.owned_for(["t1"])[r.service_id]
    assert got.check_status == {check.check_id: "passing"} and got.check_types == {check.check_id: "ttl"}
    assert got.matches(r)
    ledger.forget(r)
    ledger.remember(r)
    assert ledger.owned_for(["t1"])[r.service_id].check_status == {check.check_id: ""}, "forget drops TTL state"


def test_replace_from_a_resync_drops_what_the_agents_no_longer_hold_but_keeps_locations() -> None:
    ledger = Ledger()
    gone, kept = reg("t1", host=H1), reg("t2", host=H2)
    ledger.remember(gone)
    ledger.settle_locations("/a", {H1}, partial=False)
    ledger.replace_from({kept.service_id: owned(kept)})
    assert [r.service_id for r in ledger.registrations()] == [kept.service_id]
    assert ledger.locations("/a") == {H1, H2}, "a host wrongly kept costs a read; one dropped hides an orphan"
    assert ledger.all_locations() == {H1, H2}


def test_settle_locations_replaces_for_whole_app_work_and_adds_for_task_work() -> None:
    ledger = Ledger()
    ledger.settle_locations("/a", {H1}, partial=False)
    ledger.settle_locations("/a", {H2}, partial=True)
    assert ledger.locations("/a") == {H1, H2}
    ledger.settle_locations("/a", {H2}, partial=False)
    assert ledger.locations("/a") == {H2}
    ledger.settle_locations("/a", set(), partial=False)
    assert ledger.locations("/a") == set() and ledger.all_locations() == set()


def test_hosts_of_tasks_is_where_their_registrations_were_last_seen() -> None:
    ledger = Ledger()
    ledger.remember(reg("t1", 0, host=H1))
    ledger.remember(replace(reg("t1", 1, host=H2)))
    ledger.remember(reg("t2", host=H2))
    assert ledger.hosts_of_tasks(["t1"]) == {H1, H2}
    assert ledger.hosts_of_tasks(["t3"]) == set()


def test_tasks_of_an_instance_for_every_id_family() -> None:
    """An expunge names only the instance (issue 19): its tasks are found for 1.8+ app tasks (every
    incarnation), pod instances (registered under the instance id) and legacy 1.4-1.7 task ids."""
    ledger = Ledger()
    app18 = ["web.instance-6f1e2d3c._app.1", "web.instance-6f1e2d3c._app.2", "web.instance-0000ffff._app.1"]
    for task in [*app18, "db.instance-6b9f2c1e", "old.6f1e2d3c-8f0a", "old.aaaa-bbbb"]:
        ledger.remember(reg(task))
    assert ledger.tasks_of_instance("web.instance-6f1e2d3c") == set(app18[:2])
    assert ledger.tasks_of_instance("db.instance-6b9f2c1e") == {"db.instance-6b9f2c1e"}
    assert ledger.tasks_of_instance("old.marathon-6f1e2d3c-8f0a") == {"old.6f1e2d3c-8f0a"}
    assert ledger.tasks_of_instance("web.instance-unknown") == set()
    ledger.forget(reg(app18[0]))
    ledger.forget(reg(app18[1]))
    assert ledger.tasks_of_instance("web.instance-6f1e2d3c") == set()
    ledger.replace_from({})
    assert ledger.tasks_of_instance("db.instance-6b9f2c1e") == set()
    # a relaunched (resident) task: its latest incarnation is found within the bound probed
    ledger.remember(reg("web.instance-6f1e2d3c._app.64"))
    assert ledger.tasks_of_instance("web.instance-6f1e2d3c") == {"web.instance-6f1e2d3c._app.64"}


def test_same_answers_the_held_registration_only_when_every_field_is_equal() -> None:
    """A resync keeps the held object for an equal registration it read or derived (memory); a
    registration differing in any field must come back as itself, or a drift would be missed."""
    ledger = Ledger()
    held = reg("t1", ttl=True)
    ledger.remember(held)
    copy = replace(held)
    assert copy is not held and ledger.same(copy) is held
    changes = {"agent_host": H2, "name": "b", "tags": ("x",), "address": "10.32.0.2", "port": 81,
               "meta": held.meta[:-1], "checks": ()}
    assert set(changes) == {f.name for f in fields(Registration)} - {"service_id"}  # a new field needs a row
    for name, value in changes.items():
        other = replace(held, **{name: value})
        assert ledger.same(other) is other, name
    unknown = reg("t2")
    assert ledger.same(unknown) is unknown
