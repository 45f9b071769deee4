"""What Marathon asks for versus what we own: the resync's verdict, as a pure function.

`diff()` does no I/O and keeps no state: given the desired registrations (from Marathon and the
containers), what the agents hold, and which agents could not be read, it says what is missing,
orphaned or drifted, and which apps need a repair. Being pure, every case is a table row in
tests/unit/test_diff.py, with no fakes.

`in_place` is the equality that decides every write, of a resync and of event work alike: the
agent's entry is on the right agent and `OwnedService.matches` our registration (name, tags,
address, port, Meta, checks). `ttl_in_sync` adds the mirrored TTL checks' states.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from service.desired import ttl_check_statuses
from service.model import OwnedService, Registration, Skip, Task
from service.ownership import META_POD_INSTANCE

KINDS = ("missing", "orphan", "drifted")


@dataclass
class Drift:
    """What a resync found, per agent URL."""

    missing: dict[str, list[str]] = field(default_factory=dict)
    orphan: dict[str, list[str]] = field(default_factory=dict)
    drifted: dict[str, list[str]] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)  # agent -> error
    skipped: dict[str, str] = field(default_factory=dict)  # task id -> reason
    apps_to_repair: set[str] = field(default_factory=set)
    # in place, with TTL checks: pushed again so their TTL does not run out while Marathon's verdict stands
    ttl_refresh: list[tuple[Registration, Task, OwnedService]] = field(default_factory=list)

    def add(self, kind: str, agent: str, service_id: str, app_id: str) -> None:
        getattr(self, kind).setdefault(agent, []).append(service_id)
        self.apps_to_repair.add(app_id)

    def counts(self) -> dict[str, int]:
        return {k: sum(len(v) for v in getattr(self, k).values()) for k in KINDS}

    def as_dict(self) -> dict[str, object]:
        return {"missing": self.missing, "orphan": self.orphan, "drifted": self.drifted,
                "unreachable_agents": self.unreachable, "skipped_tasks": self.skipped, "counts": self.counts()}


def in_place(have: OwnedService, want: Registration) -> bool:
    """Does the agent's entry need no write? (Right agent, same content.)"""
    return have.registration.agent_host == want.agent_host and have.matches(want)


def ttl_in_sync(want: Registration, task: Task, have: OwnedService) -> bool:
    """Do the mirrored TTL checks show Marathon's verdict (where Marathon has one)?"""
    return all(have.check_status.get(check_id) == status for check_id, status in ttl_check_statuses(want, task))


def diff(*, desired: Mapping[str, Registration], owned: Mapping[str, OwnedService], tasks: Mapping[str, Task],
         skips: Mapping[str, Iterable[Skip]], owner_agent: Mapping[str, str], unreachable: Mapping[str, str],
         agent_url: Callable[[str], str], held_apps: frozenset[str] = frozenset(), pods_unread: bool = False) -> Drift:
    """The drift between `desired` (service id -> registration) and `owned` (service id -> the
    agent's entry). `tasks` are the desired registrations' tasks by id, `skips` the tasks left out
    per app id, `owner_agent` the agent URL of each owned entry, `unreachable` the agents (by URL)
    that could not be read, and `agent_url` maps a task host to its agent's URL. Registrations of
    `held_apps` (malformed pods), and of every pod when `pods_unread`, are never orphans: their
    truth is not known."""
    drift = Drift(unreachable=dict(unreachable))
    undecided: set[str] = set()  # tasks whose answer may change: their registrations are left alone
    for app_id, app_skips in skips.items():
        for s in app_skips:
            drift.skipped[s.task_id] = s.reason
            if s.retry:  # its answer may change: the repair re-asks
                drift.apps_to_repair.add(app_id)
                undecided.add(s.task_id)
            elif s.keep:  # TASK_UNREACHABLE: what it holds stays, nothing to repair
                undecided.add(s.task_id)
    for sid, want in desired.items():
        have = owned.get(sid)
        url = agent_url(want.agent_host)
        if have is None:
            if url not in unreachable:  # not missing, merely unseen
                drift.add("missing", url, sid, want.app_id)
        elif not in_place(have, want) or not ttl_in_sync(want, tasks[want.task_id], have):
            drift.add("drifted", url, sid, want.app_id)
        elif any(c.ttl for c in want.checks):
            drift.ttl_refresh.append((want, tasks[want.task_id], have))
    for sid, have in owned.items():
        # a task not looked up (its container not up yet, its engine down or refusing, docs/
        # architecture.md §8) has no desired registrations, but the step keeps what it holds: no orphan
        reg = have.registration
        if reg.app_id in held_apps or (pods_unread and reg.meta_get(META_POD_INSTANCE)):
            continue
        if sid not in desired and have.registration.task_id not in undecided:
            drift.add("orphan", owner_agent[sid], sid, have.registration.app_id)
    return drift
