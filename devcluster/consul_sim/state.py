"""Agents, the shared catalog, Raft-like indexes and blocking waits.

Concurrency model: everything runs on one asyncio loop and every mutation is synchronous (no
await inside), so a request sees a consistent state without locks. That also gives Consul's
"agent state is authoritative, synced to the catalog before the write returns" (§1.4, §7) for
free: the catalog is not a copy but an index over the agents' own service and check objects.

Indexes: one global counter, bumped by every change that real Consul's state store would write.
A re-registration with identical content changes nothing and bumps nothing (Consul's
`ensureServiceTxn`/`ensureCheckTxn` skip identical rows), so an idempotent resync does not wake
blocking queries. Per service name we keep the index of its last change (service or check), as
Consul's `service.<name>` table index; catalog-wide service changes also bump `services_index`.
A check's output-only change is not synced (Consul defers those by `check_update_interval`), so
it bumps nothing. Blocked readers wait on a generation `asyncio.Event` that every bump replaces.

Scale: registration and deregistration are O(checks of that service); the per-name map makes a
catalog/health read O(instances of that name).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from devcluster.consul_sim.validation import CheckSpec, ServiceSpec


class CheckRunnerHook(Protocol):
    def check_started(self, agent: Agent, check: CheckState) -> None: ...

    def check_stopped(self, agent: Agent, check_id: str) -> None: ...


@dataclass
class CheckState:
    """One check on one agent (and, being the same object, in the catalog)."""

    spec: CheckSpec
    node: str
    check_id: str
    name: str
    status: str
    output: str
    service_id: str
    service_name: str
    service_tags: list[str]
    create_index: int = 0
    modify_index: int = 0
    critical_since: float | None = None  # monotonic time it entered critical, for the reaper

    def catalog_key(self) -> tuple[Any, ...]:
        """What the catalog compares to decide whether a sync is a change."""
        return (self.spec, self.name, self.status, self.service_id, self.service_name,
                tuple(self.service_tags))


@dataclass
class ServiceState:
    spec: ServiceSpec
    create_index: int = 0
    modify_index: int = 0
    check_ids: dict[str, None] = field(default_factory=dict)  # ordered set

    def catalog_key(self) -> tuple[Any, ...]:
        s = self.spec
        return (s.id, s.name, tuple(s.tags), s.address, s.port, tuple(sorted(s.meta.items())),
                repr(sorted(s.tagged_addresses.items())), repr(s.weights), s.enable_tag_override,
                s.kind, s.socket_path, repr(s.proxy), repr(s.connect), repr(s.locality))


@dataclass
class Agent:
    """One Consul client agent = one catalog node."""

    host: str
    port: int
    node: str
    node_id: str
    services: dict[str, ServiceState] = field(default_factory=dict)
    checks: dict[str, CheckState] = field(default_factory=dict)
    create_index: int = 0
    serf_status: str = "passing"  # `/_sim/nodes/<node>/down` makes it critical (a failed member)
    serf_index: int = 0

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"


class State:
    """All agents of the simulated datacenter and the catalog they feed."""

    def __init__(self, datacenter: str, agents: list[tuple[str, int, str]]) -> None:
        self.datacenter = datacenter
        self.index = 0
        self.services_index = 0
        self.name_index: dict[str, int] = {}
        # lower-cased service name -> {(node, service id): (agent, service)}
        self.by_name: dict[str, dict[tuple[str, str], tuple[Agent, ServiceState]]] = {}
        self.agents: dict[str, Agent] = {}
        self.nodes: dict[str, Agent] = {}
        self.runner: CheckRunnerHook | None = None
        # (node, check id) went critical or was removed: sessions bound to it die (sessions.py)
        self.check_invalidated: Callable[[str, str], None] | None = None
        self._changed: asyncio.Event | None = None
        for host, port, node in agents:
            self.index += 1
            a = Agent(host, port, node, str(uuid.uuid5(uuid.NAMESPACE_DNS, f"consul-sim.{node}")),
                      create_index=self.index)
            self.agents[a.addr] = a
            self.nodes[node] = a
        self.nodes_index = self.index

    # ---- change notification ----------------------------------------------------------------

    def _bump(self) -> int:
        self.index += 1
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        return self.index

    async def wait_change(self, seconds: float) -> None:
        """Sleep until the next index bump or `seconds`."""
        if self._changed is None:
            self._changed = asyncio.Event()
        ev = self._changed
        try:
            await asyncio.wait_for(ev.wait(), seconds)
        except TimeoutError:
            pass

    def index_for_name(self, name: str) -> int:
        return self.name_index.get(name.lower()) or max(self.services_index, self.nodes_index)

    # ---- services ---------------------------------------------------------------------------

    def register_service(self, agent: Agent, spec: ServiceSpec, *, replace_existing_checks: bool) -> None:
        """`Agent.AddService` + the synchronous catalog sync (§1.4 semantics)."""
        old = agent.services.get(spec.id)
        svc = ServiceState(spec)
        changed = old is None or old.catalog_key() != svc.catalog_key()
        if old is not None:
            svc.create_index, svc.modify_index = old.create_index, old.modify_index
            svc.check_ids = dict(old.check_ids)
            if old.spec.name.lower() != spec.name.lower():
                self._unindex(agent, old)
        new_checks: list[CheckState] = []
        n = len(spec.checks)
        for i, c in enumerate(spec.checks):
            cid = c.check_id or (f"service:{spec.id}" if n == 1 else f"service:{spec.id}:{i + 1}")
            new_checks.append(CheckState(
                spec=c, node=agent.node, check_id=cid, name=c.name or f"Service '{spec.name}' check",
                status=c.status or "critical", output="", service_id=spec.id, service_name=spec.name,
                service_tags=list(spec.tags)))
        wanted = {c.check_id for c in new_checks}
        if replace_existing_checks:
            for cid in list(svc.check_ids):
                if cid not in wanted:
                    changed |= self._remove_check(agent, cid)
        for cid in list(svc.check_ids):  # kept checks follow the service's new name and tags
            kept = agent.checks.get(cid)
            if kept is not None and cid not in wanted:
                kept.service_name, kept.service_tags = spec.name, list(spec.tags)
        agent.services[spec.id] = svc
        self.by_name.setdefault(spec.name.lower(), {})[(agent.node, spec.id)] = (agent, svc)
        for chk in new_checks:
            changed |= self._put_check(agent, chk, svc)
        if changed:
            idx = self._bump()
            if old is None:
                svc.create_index = idx
            svc.modify_index = idx
            self.services_index = idx
            self.name_index[spec.name.lower()] = idx
            if old is not None:
                self.name_index[old.spec.name.lower()] = idx
            for chk in new_checks:
                if chk.modify_index == -1:
                    chk.modify_index = idx
                    if chk.create_index == -1:
                        chk.create_index = idx

    def _put_check(self, agent: Agent, chk: CheckState, svc: ServiceState | None) -> bool:
        """Add or replace a check; keeps a same-id check's status/output (the AG snapshot)."""
        prev = agent.checks.get(chk.check_id)
        now = time.monotonic()
        if prev is not None:
            chk.status, chk.output = prev.status, prev.output
            chk.create_index = prev.create_index
            chk.modify_index = prev.modify_index
            chk.critical_since = prev.critical_since
            if prev.service_id and prev.service_id != chk.service_id:
                owner = agent.services.get(prev.service_id)
                if owner is not None:
                    owner.check_ids.pop(chk.check_id, None)
        else:
            chk.create_index = -1
            chk.critical_since = now if chk.status == "critical" else None
        changed = prev is None or prev.catalog_key() != chk.catalog_key()
        if changed:
            chk.modify_index = -1
        agent.checks[chk.check_id] = chk
        if svc is not None:
            svc.check_ids[chk.check_id] = None
        if chk.status == "critical" and self.check_invalidated is not None:
            self.check_invalidated(agent.node, chk.check_id)
        if self.runner is not None:
            self.runner.check_started(agent, chk)
        return changed

    def _remove_check(self, agent: Agent, check_id: str) -> bool:
        chk = agent.checks.pop(check_id, None)
        if chk is None:
            return False
        if self.runner is not None:
            self.runner.check_stopped(agent, check_id)
        if self.check_invalidated is not None:
            self.check_invalidated(agent.node, check_id)
        if chk.service_id:
            svc = agent.services.get(chk.service_id)
            if svc is not None:
                svc.check_ids.pop(check_id, None)
        return True

    def _unindex(self, agent: Agent, svc: ServiceState) -> None:
        key = svc.spec.name.lower()
        bucket = self.by_name.get(key)
        if bucket is not None:
            bucket.pop((agent.node, svc.spec.id), None)
            if not bucket:
                del self.by_name[key]

    def deregister_service(self, agent: Agent, service_id: str) -> bool:
        svc = agent.services.pop(service_id, None)
        if svc is None:
            return False
        for cid in list(svc.check_ids):
            self._remove_check(agent, cid)
        self._unindex(agent, svc)
        idx = self._bump()
        self.services_index = idx
        self.name_index[svc.spec.name.lower()] = idx
        return True

    # ---- checks -----------------------------------------------------------------------------

    def register_check(self, agent: Agent, spec: CheckSpec) -> None:
        """`/v1/agent/check/register` (service existence already verified by the handler)."""
        svc = agent.services.get(spec.service_id) if spec.service_id else None
        chk = CheckState(
            spec=spec, node=agent.node, check_id=spec.check_id, name=spec.name,
            status=spec.status or "critical", output="", service_id=svc.spec.id if svc else "",
            service_name=svc.spec.name if svc else "", service_tags=list(svc.spec.tags) if svc else [])
        if self._put_check(agent, chk, svc):
            idx = self._bump()
            chk.modify_index = idx
            if chk.create_index == -1:
                chk.create_index = idx
            if svc is not None:
                self.name_index[svc.spec.name.lower()] = idx

    def deregister_check(self, agent: Agent, check_id: str) -> bool:
        chk = agent.checks.get(check_id)
        if chk is None:
            return False
        self._remove_check(agent, check_id)
        idx = self._bump()
        if chk.service_id:
            self.name_index[chk.service_name.lower()] = idx
        return True

    def set_check_status(self, agent: Agent, check_id: str, status: str, output: str) -> None:
        """A check result (runner or TTL endpoint). Only a status change is a catalog write."""
        chk = agent.checks.get(check_id)
        if chk is None:
            return
        chk.output = output
        if chk.status == status:
            return
        chk.status = status
        chk.critical_since = time.monotonic() if status == "critical" else None
        idx = self._bump()
        chk.modify_index = idx
        if chk.service_id:
            self.name_index[chk.service_name.lower()] = idx
        if status == "critical" and self.check_invalidated is not None:
            self.check_invalidated(agent.node, check_id)

    def set_serf_status(self, agent: Agent, status: str) -> bool:
        """A member failed or came back (`/_sim/nodes/<node>/down|up`): the leader writes the
        node's `serfHealth` (critical: sessions bound to it are invalidated, §3) and every
        service on the node changes health."""
        if agent.serf_status == status:
            return False
        agent.serf_status = status
        idx = self._bump()
        agent.serf_index = idx
        for svc in agent.services.values():
            self.name_index[svc.spec.name.lower()] = idx
        if status == "critical" and self.check_invalidated is not None:
            self.check_invalidated(agent.node, "serfHealth")
        return True

    def reset(self) -> None:
        """Drop every service and check on every agent (test-only `/_sim/reset`)."""
        for agent in self.agents.values():
            for cid in list(agent.checks):
                self._remove_check(agent, cid)
            for svc in agent.services.values():
                self.name_index[svc.spec.name.lower()] = self.index + 1
            agent.services.clear()
        self.by_name.clear()
        self.services_index = self._bump()
        for k in self.name_index:
            self.name_index[k] = self.services_index

    # ---- reads ------------------------------------------------------------------------------

    def instances(self, name: str) -> list[tuple[Agent, ServiceState]]:
        bucket = self.by_name.get(name.lower(), {})
        return sorted(bucket.values(), key=lambda a: (a[0].node, a[1].spec.id))

    def service_checks(self, agent: Agent, svc: ServiceState) -> list[CheckState]:
        return [agent.checks[c] for c in svc.check_ids if c in agent.checks]
