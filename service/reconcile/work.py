"""The values that travel through the reconcile queue: an app's pending work, where the per-app
step reads "what Consul holds" from, and what a step run reports back.

`AppWork` is the queue's work item for one app (the key): the tasks known to be dirty (or the whole
app), hints about where to look, and, when a resync scheduled it, the resync's own reads of the app
(`Repair`), so that a repair costs no second read when nothing happened since (see `Reconciler`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from service.model import App, OwnedService, Task


@dataclass(frozen=True, slots=True)
class AppSnapshot:
    """What a resync read of one app: its definition (None if gone), its tasks, and our
    registrations of it on every agent."""

    app: App | None
    tasks: tuple[Task, ...]
    owned: Mapping[str, OwnedService]


@dataclass(slots=True)
class Repair:
    """A resync's request to repair one app: its snapshot, when the resync's reads began, and the
    futures the resync waits on (resolved after the first run, whatever its outcome)."""

    snapshot: AppSnapshot | None  # None: read afresh (an agent was unreachable during the resync)
    read_at: float
    waiters: list[asyncio.Future[bool]] = field(default_factory=list)

    def merge(self, other: Repair) -> Repair:
        newer = self if self.read_at >= other.read_at else other
        return Repair(newer.snapshot, newer.read_at, self.waiters + other.waiters)

    def finish(self, ok: bool) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(ok)


@dataclass(slots=True)
class AppWork:
    """What is known to be dirty for one app. `task_ids is None` means the whole app."""

    task_ids: set[str] | None = field(default_factory=set)
    hosts: set[str] = field(default_factory=set)  # agents that may hold registrations of these tasks
    received: dict[str, float] = field(default_factory=dict)  # task id -> first event time (latency)
    # task id -> host, for tasks an event reported running: their containers are looked up while
    # Marathon is read (a hint of where to look, never a reason to register)
    running_on: dict[str, str] = field(default_factory=dict)
    repair: Repair | None = None

    @classmethod
    def whole_app(cls, repair: Repair | None = None) -> AppWork:
        return cls(task_ids=None, repair=repair)

    @property
    def whole(self) -> bool:
        return self.task_ids is None

    def merge(self, other: AppWork) -> AppWork:
        """Fold `other` into this work (the queue's merge function; returns self)."""
        if self.task_ids is None or other.task_ids is None:
            self.task_ids = None
        else:
            self.task_ids |= other.task_ids
        self.hosts |= other.hosts
        self.running_on.update(other.running_on)
        for tid, t in other.received.items():
            self.received[tid] = min(t, self.received.get(tid, t))
        if other.repair is not None:
            self.repair = other.repair if self.repair is None else self.repair.merge(other.repair)
        return self


def merge_work(current: AppWork, new: AppWork) -> AppWork:
    return current.merge(new)


# ---------------------------------------------------------------- where the step reads Consul's state


@dataclass(frozen=True, slots=True)
class FromSnapshot:
    """The resync's reads of the app (Marathon and Consul): no read at all."""

    snapshot: AppSnapshot


@dataclass(frozen=True, slots=True)
class FromLedger:
    """Marathon is read; Consul's state is the ledger's (the last resync's reads plus our writes)."""


@dataclass(frozen=True, slots=True)
class FromAgents:
    """Marathon is read, and the agents of the app's tasks plus `hosts` (where its registrations
    were last seen) are read for the app's registrations."""

    hosts: frozenset[str]


StateSource = FromSnapshot | FromLedger | FromAgents


# ---------------------------------------------------------------- what a run reports


@dataclass(frozen=True, slots=True)
class Done:
    """Consul holds what Marathon asks for, for the work's tasks."""


@dataclass(frozen=True, slots=True)
class Retry:
    """Some of the work could not be settled (container not up, agent down, a call failed):
    `remaining` is what is left to do, `reason` says why, for logs and the registrations view."""

    remaining: AppWork
    reason: str


@dataclass(frozen=True, slots=True)
class Parked:
    """The work (or what was left of it) hit a REPORT answer (docs/architecture.md §8): a refusal
    that asking again would only repeat (403, 400, a refused endpoint). Not retried through the
    queue: it is left to the next resync, which re-derives everything and will find it again if
    nothing changed. The cause was already counted and logged once by the client."""

    reason: str


Outcome = Done | Retry | Parked
