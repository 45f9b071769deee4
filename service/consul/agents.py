"""The Consul side: one py-consul client per agent, and what "ours" looks like on each agent.

Registrations go into the agent on the task's host (docs/architecture.md §6.3), so this module is a directory of
agents keyed by host, built from the `--consul` URL template. Reading back is the other half of
level-triggered reconciliation: `AgentClient.owned()` returns the registrations carrying our
ownership Meta (`service.ownership`), parsed back into `OwnedService` values, whose `matches`
(in `service.registration`) decides "nothing to do". Anything without our `managed-by` Meta is never
returned, so never touched. Every call goes through `service.consul.call.ConsulCall`.

Every call has a timeout and bounded, backed-off retries of what `service.errors` classifies as
RETRY; anything else, or a RETRY still failing after the last attempt, raises `ConsulError` with
the verdict (docs/architecture.md §8). py-consul swallows a 404 on most calls (returns None or
False): each call here says what that 404 means for it (a deregister: done; a read: the endpoint
is refused, REPORT).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from service.connect import TLSOptions, consul_client
from service.consul.call import AgentCooldowns, ConsulCall
from service.consul.call import ConsulError as ConsulError
from service.errors import GARBAGE, GONE, NOT_FOUND, RETRY, Classified, record
from service.metrics import Metrics
from service.ownership import checks_filter, owned_filter, shared, shared_meta
from service.registration import ConsulCheck, OwnedService, Registration
from service.retry import Stop
from service.tokens import TokenSource, static

_CHECK_GONE = Classified(RETRY, "gone")
_NO_CHECKS: Mapping[str, str] = MappingProxyType({})  # one read-only empty map for every entry without checks


def _check_from_consul(obj: Mapping[str, Any]) -> ConsulCheck:
    definition = obj.get("Definition") or {}
    return ConsulCheck(
        check_id=obj.get("CheckID", ""),
        name=obj.get("Name", ""),
        http=definition.get("HTTP") or None,
        tcp=definition.get("TCP") or None,
        ttl=definition.get("TTL") or None,
        interval=obj.get("Interval") or definition.get("Interval") or None,
        timeout=obj.get("Timeout") or definition.get("Timeout") or None,
        tls_skip_verify=bool(definition.get("TLSSkipVerify", False)),
        notes=obj.get("Notes", "") or "",
    )


def _unchanged(known: Registration, svc: Mapping[str, Any], meta: Mapping[str, Any], host: str) -> bool:
    """Is the agent's service `svc` (with its `meta`) what `_registrations` would parse into a
    registration equal to `known`, checks aside? Field by field on the raw answer."""
    return (svc.get("Port", 0) == known.port and svc.get("Address", "") == known.address
            and svc.get("Service", "") == known.name and host == known.agent_host
            and tuple(svc.get("Tags") or ()) == known.tags
            and len(meta) == len(known.meta) and all(meta.get(k) == v for k, v in known.meta))


class AgentClient:
    """One Consul agent (the one on `host`)."""

    def __init__(self, host: str, url: str, *, token: str | TokenSource | None, metrics: Metrics, timeout: float,
                 attempts: int, tls: TLSOptions | None = None, stop: Stop | None = None,
                 cooldowns: AgentCooldowns | None = None) -> None:
        self.host = host
        self.url = url
        self._metrics = metrics
        # the agent's one back-off (shared with the lock's client when it calls this agent too)
        self._call = ConsulCall(url, metrics=metrics, attempts=attempts, stop=stop,
                                cooldown=cooldowns.of(url) if cooldowns is not None else None)
        self._client = consul_client(url, token=token if callable(token) else static(token), tls=tls,
                                     timeout=timeout, limit=64)
        self._node_name: str | None = None

    async def node_name(self) -> str:
        """The agent's node name: two host names can lead to one agent, the node name tells."""
        if self._node_name is None:
            me = self._call.answered("agent_self", await self._call("agent_self", self._client.agent.self))
            with self._call.shape("agent_self"):
                self._node_name = str(me.get("Config", {}).get("NodeName") or self.host)
        return self._node_name

    async def owned(self, app_id: str | None = None,
                    held: Callable[[str], Registration | None] | None = None) -> dict[str, OwnedService]:
        """Our registrations on this agent (optionally of one app), by service id. `held` (service
        id -> the registration the caller holds): a service equal to it is answered as that object,
        not parsed again (a resync reads every registration; `_registrations`)."""
        expr = owned_filter(app_id)
        services = self._call.answered("agent_services", await self._call(
            "agent_services", lambda: self._client.agent.services(filter_expr=expr)))
        if not isinstance(services, dict):
            raise self._call.fail("agent_services", GARBAGE, f"unexpected answer: {type(services).__name__}, not a map")
        if not services:
            return {}
        # Parsed to compact values before the checks are asked for, and the decoded answer dropped:
        # a resync reads every agent at once, and their whole decoded answers held across the checks'
        # round trip were most of the resync's heap peak, whose arenas the idle process kept (issue 20).
        with self._call.shape("agent_services"):
            regs = self._registrations(services, held)
        del services
        checks = self._call.answered("agent_checks", await self._call("agent_checks", lambda: self._client.agent.checks(
            filter_expr=checks_filter(regs) if app_id is not None else None)))
        if not isinstance(checks, dict):
            raise self._call.fail("agent_checks", GARBAGE, f"unexpected answer: {type(checks).__name__}, not a map")
        with self._call.shape("agent_services"):
            return self._with_checks(regs, checks)

    def _registrations(self, services: Mapping[str, Any],
                       held: Callable[[str], Registration | None] | None = None) -> dict[str, Registration]:
        """The agent's services as our `Registration` values, their checks still to be compared
        (shape errors raise; the caller turns them into a REPORT). A service equal to the one `held`
        is that object: parsing and sharing a fresh copy of every registration was ~13 % of a
        no-drift resync's CPU (py-spy, 10,000 tasks), and the copies alive side by side with the held
        ones raised the heap's peak, which the idle process keeps (issue 20)."""
        regs: dict[str, Registration] = {}
        for sid, svc in services.items():
            meta = svc.get("Meta") or {}
            known = held(sid) if held is not None else None
            if known is not None and _unchanged(known, svc, meta, self.host):
                regs[known.service_id] = known
                continue
            # names, tags and most Meta pairs repeat across registrations: the ledger keeps one of each
            regs[sid] = Registration(
                agent_host=self.host, service_id=sid, name=shared(svc.get("Service", "")),
                tags=shared(tuple(svc.get("Tags") or ())), address=svc.get("Address", ""),
                port=int(svc.get("Port", 0)), meta=shared_meta(meta.items()))
        return regs

    def _with_checks(self, regs: Mapping[str, Registration], checks: Mapping[str, Any]) -> dict[str, OwnedService]:
        """`regs` with their checks as the agent holds them, as `OwnedService` values."""
        by_service: dict[str, list[Mapping[str, Any]]] = {}
        for chk in checks.values():
            if chk.get("ServiceID") in regs:
                by_service.setdefault(chk["ServiceID"], []).append(chk)
        owned: dict[str, OwnedService] = {}
        for sid, reg in regs.items():
            chks = sorted(by_service.get(sid, []), key=lambda c: c.get("CheckID", ""))
            if not chks:
                if reg.checks:  # a held registration whose checks the agent no longer has
                    reg = replace(reg, checks=())
                owned[sid] = OwnedService(registration=reg, check_types=_NO_CHECKS, check_status=_NO_CHECKS)
                continue
            found = tuple(_check_from_consul(c) for c in chks)
            owned[sid] = OwnedService(
                registration=reg if reg.checks == found else replace(reg, checks=found),
                check_types={c.get("CheckID", ""): c.get("Type", "") for c in chks},
                check_status={c.get("CheckID", ""): c.get("Status", "") for c in chks},
            )
        return owned

    async def register(self, reg: Registration) -> None:
        checks = [c.to_consul() for c in reg.checks]
        made = await self._call("register", lambda: self._client.agent.service.register(
            reg.name, service_id=reg.service_id, address=reg.address, port=reg.port, tags=list(reg.tags),
            meta=reg.meta_dict, check=checks[0] if checks else None, extra_checks=checks[1:],
            replace_existing_checks=True,
        ))
        if not made:  # py-consul's False is a 404: the register endpoint itself is refused
            raise self._call.fail("register", NOT_FOUND, "404 (the endpoint is not there)")

    async def deregister(self, service_id: str) -> bool:
        """True if the agent had it; an unknown id (404, which py-consul returns as False) is
        already the state we want: DONE, counted as such."""
        had = bool(await self._call("deregister", lambda: self._client.agent.service.deregister(service_id)))
        if not had:
            record(self._metrics, system="consul", call="deregister", target=self.url, classified=GONE,
                   message=f"consul agent {self.url}: {service_id} was already gone")
        return had

    async def set_ttl(self, check_id: str, status: str, output: str) -> None:
        """Push a TTL check's state. A 404 (py-consul's False) means the check, so our registration,
        is gone behind our back: `ConsulError` with cause "gone" and verdict RETRY, so the writer
        forgets the registration and the task's retry registers it again."""
        update = {"passing": self._client.agent.check.ttl_pass, "warning": self._client.agent.check.ttl_warn,
                  "critical": self._client.agent.check.ttl_fail}[status]
        if not await self._call("check_update", lambda: update(check_id, notes=output)):
            raise self._call.fail("check_update", _CHECK_GONE, f"404: check {check_id} is not on the agent")

    async def catalog_node_addresses(self) -> list[str]:
        """Addresses of every node in the catalog: where orphans may live though no task runs there."""
        _, nodes = await self._call("catalog_nodes", self._client.catalog.nodes)
        with self._call.shape("catalog_nodes"):
            return [n["Address"] for n in self._call.answered("catalog_nodes", nodes) if n.get("Address")]

    async def close(self) -> None:
        await self._client.close()


class ConsulAgents:
    """Agents by task host, from the `--consul` URL template (`{host}` = the task's host)."""

    def __init__(self, url_template: str, *, token: str | TokenSource | None, metrics: Metrics,
                 timeout: float = 5.0, attempts: int = 3, tls: TLSOptions | None = None,
                 stop: Stop | None = None, cooldowns: AgentCooldowns | None = None) -> None:
        if "://" not in url_template:
            raise ValueError(f"--consul: {url_template!r} is not a URL (expected e.g. http://{{host}}:8500)")
        self.url_template = url_template
        self.per_host = "{host}" in url_template
        self._token = token
        self._tls = tls
        self._metrics = metrics
        self._timeout = timeout
        self._attempts = attempts
        self._stop = stop
        self._cooldowns = cooldowns if cooldowns is not None else AgentCooldowns()
        self._agents: dict[str, AgentClient] = {}

    def url_for(self, host: str) -> str:
        return self.url_template.replace("{host}", host)

    def agent(self, host: str) -> AgentClient:
        """The client for the agent of `host`; with a fixed URL every host shares one agent."""
        key = host if self.per_host else ""
        client = self._agents.get(key)
        if client is None:
            client = AgentClient(host if self.per_host else urllib.parse.urlsplit(self.url_template).hostname or "",
                                 self.url_for(host), token=self._token, metrics=self._metrics,
                                 timeout=self._timeout, attempts=self._attempts, tls=self._tls, stop=self._stop,
                                 cooldowns=self._cooldowns)
            self._agents[key] = client
        return client

    def known(self) -> list[AgentClient]:
        return list(self._agents.values())

    async def close(self) -> None:
        await asyncio.gather(*(a.close() for a in self._agents.values()), return_exceptions=True)
