"""What the registrar owns in Consul, as far as it knows: a cache, never the truth.

Filled by every resync (`replace_from`: exactly what the agents held at the read) and kept up to
date by our own writes (`remember`, `forget`, `set_ttl`, called by `ConsulWriter` only). Task-level
work compares against it instead of reading the agents (`owned_for`): after the first resync a burst
of status updates costs only the writes it needs. A change made behind our back is invisible here
until the next resync, which reads every agent and replaces the ledger; that is the price of the
saved reads, and the reason the resync runs periodically.

`locations` (app id -> hosts whose agent holds the app's registrations) is kept across resyncs as
a union: it tells whole-app work which agents to read for orphans, and a host wrongly kept costs one
read, a host wrongly dropped would hide an orphan.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from service.model import OwnedService, Registration

MAX_INCARNATIONS = 64  # incarnations of one 1.8+ app instance looked for by tasks_of_instance


class Ledger:
    def __init__(self) -> None:
        self._managed: dict[str, Registration] = {}  # service id -> what we last saw or wrote
        # task id -> ids of its registrations: a tuple (48 B for the usual one id), not a set (216 B)
        self._task_services: dict[str, tuple[str, ...]] = {}
        self._ttl_status: dict[str, str] = {}  # TTL check id -> the status we last saw or pushed
        self._locations: dict[str, set[str]] = {}  # app id -> hosts whose agent holds its registrations

    # ---------------------------------------------------------------- updates
    def replace_from(self, owned: Mapping[str, OwnedService]) -> None:
        """A resync read `owned` from every reachable agent: it is now what we own."""
        self._managed, self._task_services, self._ttl_status = {}, {}, {}
        for svc in owned.values():
            reg = svc.registration
            self.remember(reg)
            self._ttl_status.update((c.check_id, svc.check_status.get(c.check_id, "")) for c in reg.checks if c.ttl)
            self._locations.setdefault(reg.app_id, set()).add(reg.agent_host)

    def remember(self, reg: Registration) -> None:
        self._managed[reg.service_id] = reg
        sids = self._task_services.get(reg.task_id, ())
        if reg.service_id not in sids:
            self._task_services[reg.task_id] = (*sids, reg.service_id)

    def forget(self, reg: Registration) -> None:
        self._managed.pop(reg.service_id, None)
        for check in reg.checks:
            self._ttl_status.pop(check.check_id, None)
        sids = self._task_services.get(reg.task_id, ())
        if reg.service_id in sids:
            rest = tuple(sid for sid in sids if sid != reg.service_id)
            if rest:
                self._task_services[reg.task_id] = rest
            else:
                del self._task_services[reg.task_id]

    def set_ttl(self, check_id: str, status: str) -> None:
        self._ttl_status[check_id] = status

    def settle_locations(self, app_id: str, hosts: set[str], *, partial: bool) -> None:
        """After work on `app_id`: its registrations are on `hosts` (added to what is known when the
        work covered only some tasks)."""
        if partial:
            hosts = hosts | self._locations.get(app_id, set())
        if hosts:
            self._locations[app_id] = hosts
        else:
            self._locations.pop(app_id, None)

    # ---------------------------------------------------------------- views
    def owned_for(self, task_ids: Iterable[str]) -> dict[str, OwnedService]:
        """Our registrations of `task_ids` as the agents hold them, as far as we know."""
        out: dict[str, OwnedService] = {}
        for task_id in task_ids:
            for sid in self._task_services.get(task_id, ()):
                reg = self._managed[sid]
                out[sid] = OwnedService(reg, {c.check_id: c.kind for c in reg.checks},
                                        {c.check_id: self._ttl_status.get(c.check_id, "") for c in reg.checks})
        return out

    def tasks_of_instance(self, instance_id: str) -> set[str]:
        """The task ids we hold registrations of for a Marathon instance id (an expunge names only
        the instance, reference/marathon-ucr-pods.md §3.3): a pod instance is registered under its
        own id; a 1.8+ app instance `<app>.instance-<uuid>` has the tasks `<app>.instance-<uuid>._app.<n>`
        (n = the incarnation, 1 and up: the first `MAX_INCARNATIONS` are probed, dict lookups, so no
        index costs memory at 10,000 registrations; a task relaunched more often than that is left
        to the next resync); a legacy `<app>.marathon-<uuid>` is the task `<app>.<uuid>`."""
        head, sep, uuid = instance_id.rpartition(".marathon-")
        if sep:
            candidates = [f"{head}.{uuid}"]
        else:
            candidates = [instance_id, *(f"{instance_id}._app.{n}" for n in range(1, MAX_INCARNATIONS + 1))]
        return {task_id for task_id in candidates if task_id in self._task_services}

    def hosts_of_tasks(self, task_ids: Iterable[str]) -> set[str]:
        """Where the registrations of `task_ids` were last seen."""
        return {self._managed[sid].agent_host for t in task_ids for sid in self._task_services.get(t, ())}

    def held(self, service_id: str) -> Registration | None:
        """The registration held for `service_id` (what we last saw or wrote), if any."""
        return self._managed.get(service_id)

    def same(self, reg: Registration) -> Registration:
        """The registration held for `reg`'s service id if it equals `reg`, else `reg`. A resync
        parses a fresh copy of every registration twice (as the agents hold it, as Marathon wants
        it) while the ledger holds the same values: answering with the held object lets each copy
        go at once instead of living to the resync's end. The allocator keeps every arena up to
        the heap's peak, so the copies were idle RSS (issue 20)."""
        held = self._managed.get(reg.service_id)
        if held is None or held is reg:
            return reg
        # Registration.__eq__ field by field, without its two 8-tuples (this runs twice per registration
        # per resync); the service id is equal by the lookup
        same = (held.port == reg.port and held.address == reg.address and held.meta == reg.meta
                and held.name == reg.name and held.tags == reg.tags and held.checks == reg.checks
                and held.agent_host == reg.agent_host)
        return held if same else reg

    def locations(self, app_id: str) -> set[str]:
        return set(self._locations.get(app_id, ()))

    def all_locations(self) -> set[str]:
        return set().union(*self._locations.values())

    def registrations(self) -> list[Registration]:
        return sorted(self._managed.values(), key=lambda r: r.service_id)

    def __len__(self) -> int:
        return len(self._managed)
