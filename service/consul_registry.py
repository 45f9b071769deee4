"""The Consul side: one py-consul client per agent, and what "ours" looks like on each agent.

Registrations go into the agent on the task's host (docs/architecture.md §6.3), so this module is a directory of
agents keyed by host, built from the `--consul` URL template. Reading back is the other half of
level-triggered reconciliation: `AgentClient.owned()` returns the registrations carrying our
ownership Meta (`service.ownership`), parsed back into `Registration` values so that "nothing to do" is an equality test
(`same_registration`). Anything without our `managed-by` Meta is never returned, so never touched.

Every call has a timeout and bounded, backed-off retries (tenacity); what still fails raises
`ConsulError` and the reconciler retries the whole key later.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import consul
import consul.aio
import consul.exceptions
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from service.backoff import Backoff
from service.connect import TLSOptions, consul_client, tls_reason
from service.metrics import Metrics
from service.model import ConsulCheck, Registration
from service.ownership import checks_filter, owned_filter
from service.tokens import TokenSource, static

T = TypeVar("T")
# Between attempts of one agent call: short, since the whole key is retried later anyway.
CALL_BACKOFF = Backoff(initial=0.1, cap=2.0)


class ConsulError(Exception):
    """A Consul agent call failed after its retries; the message names the agent and the call."""


def _transient(exc: BaseException) -> bool:
    # Connection trouble, timeouts and 5xx may pass; a 4xx is our mistake and will not.
    if isinstance(exc, (aiohttp.ClientError, TimeoutError, OSError, consul.Timeout)):
        return True
    return isinstance(exc, consul.ConsulException) and not isinstance(
        exc, (consul.exceptions.BadRequest, consul.exceptions.ACLPermissionDenied, consul.exceptions.NotFound,
              consul.exceptions.ClientError, consul.exceptions.ACLDisabled)
    )


_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration_seconds(value: object) -> float | None:
    """Consul echoes durations in Go's canonical form ("1m0s" for our "60s"); compare by value."""
    if value in (None, "", 0):
        return None
    if isinstance(value, (int, float)):
        return value / 1e9  # a JSON number is nanoseconds
    text = str(value)
    parts = _GO_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.lstrip("+"):
        return None
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    return seconds or None


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


def same_check(desired: ConsulCheck, actual: ConsulCheck, actual_type: str) -> bool:
    """Does the agent's check match what we want? Fields Consul does not echo back count as equal
    (older agents return no `Definition`), fields it does echo must match."""
    if (desired.check_id, desired.name, desired.notes) != (actual.check_id, actual.name, actual.notes):
        return False
    if actual_type and actual_type != desired.kind:
        return False
    for field in ("http", "tcp"):
        if getattr(actual, field) is not None and getattr(actual, field) != getattr(desired, field):
            return False
    for field in ("interval", "timeout", "ttl"):
        got = go_duration_seconds(getattr(actual, field))
        if got is not None and got != go_duration_seconds(getattr(desired, field)):
            return False
    return True


@dataclass(frozen=True, slots=True)
class OwnedService:
    """One of our registrations as an agent holds it, with its checks' live state."""

    registration: Registration
    check_types: Mapping[str, str]  # check id -> "http" | "tcp" | "ttl" | ...
    check_status: Mapping[str, str]  # check id -> passing | warning | critical

    def matches(self, desired: Registration) -> bool:
        actual = self.registration
        if (actual.service_id, actual.name, actual.tags, actual.address, actual.port, actual.meta) != (
            desired.service_id, desired.name, desired.tags, desired.address, desired.port, desired.meta
        ):
            return False
        if len(actual.checks) != len(desired.checks):
            return False
        by_id = {c.check_id: c for c in actual.checks}
        return all(
            c.check_id in by_id and same_check(c, by_id[c.check_id], self.check_types.get(c.check_id, ""))
            for c in desired.checks
        )


class AgentClient:
    """One Consul agent (the one on `host`)."""

    def __init__(self, host: str, url: str, *, token: str | TokenSource | None, metrics: Metrics, timeout: float,
                 attempts: int, tls: TLSOptions | None = None) -> None:
        self.host = host
        self.url = url
        self._metrics = metrics
        self._attempts = attempts
        self._client = consul_client(url, token=token if callable(token) else static(token), tls=tls,
                                     timeout=timeout, limit=64)
        self._node_name: str | None = None

    async def _call(self, call: str, fn: Callable[[], Awaitable[T]]) -> T:
        """One call with bounded, backed-off retries of transient failures. The first attempt runs
        outside tenacity: building its retry state per call was ~3% of a burst's CPU."""
        try:
            return await self._timed(call, fn)
        except Exception as exc:
            if not _transient(exc) or self._attempts <= 1:
                raise self._error(call, exc) from exc
        await asyncio.sleep(CALL_BACKOFF.delay(1))  # the back-off before the first retry
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self._attempts - 1),
                wait=CALL_BACKOFF.tenacity_wait(offset=1),
                retry=retry_if_exception(_transient),
                reraise=True,
            ):
                with attempt:
                    self._metrics.retries.labels("consul").inc()
                    return await self._timed(call, fn)
        except (TimeoutError, consul.ConsulException, aiohttp.ClientError, OSError) as exc:
            raise self._error(call, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _timed(self, call: str, fn: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        try:
            return await fn()
        finally:
            self._metrics.consul_latency.labels(call).observe(time.perf_counter() - started)

    def _error(self, call: str, exc: BaseException) -> ConsulError:
        tls = tls_reason(exc, https=self.url.startswith("https://"))
        return ConsulError(f"consul agent {self.url}: {call} failed: {tls or f'{type(exc).__name__}: {exc}'}")

    async def node_name(self) -> str:
        """The agent's node name: two host names can lead to one agent, the node name tells."""
        if self._node_name is None:
            me = await self._call("agent_self", self._client.agent.self)
            self._node_name = str(me.get("Config", {}).get("NodeName") or self.host)
        return self._node_name

    async def owned(self, app_id: str | None = None) -> dict[str, OwnedService]:
        """Our registrations on this agent (optionally of one app), by service id."""
        expr = owned_filter(app_id)
        services = await self._call("agent_services", lambda: self._client.agent.services(filter_expr=expr))
        if not services:
            return {}
        checks = await self._call("agent_checks", lambda: self._client.agent.checks(
            filter_expr=checks_filter(services) if app_id is not None else None))
        by_service: dict[str, list[Mapping[str, Any]]] = {}
        for chk in checks.values():
            if chk.get("ServiceID") in services:
                by_service.setdefault(chk["ServiceID"], []).append(chk)
        owned: dict[str, OwnedService] = {}
        for sid, svc in services.items():
            chks = sorted(by_service.get(sid, []), key=lambda c: c.get("CheckID", ""))
            meta = svc.get("Meta") or {}
            owned[sid] = OwnedService(
                registration=Registration(
                    agent_host=self.host, service_id=sid, name=svc.get("Service", ""),
                    tags=tuple(svc.get("Tags") or ()), address=svc.get("Address", ""), port=int(svc.get("Port", 0)),
                    meta=tuple(sorted(meta.items())), checks=tuple(_check_from_consul(c) for c in chks),
                ),
                check_types={c.get("CheckID", ""): c.get("Type", "") for c in chks},
                check_status={c.get("CheckID", ""): c.get("Status", "") for c in chks},
            )
        return owned

    async def register(self, reg: Registration) -> None:
        checks = [c.to_consul() for c in reg.checks]
        await self._call("register", lambda: self._client.agent.service.register(
            reg.name, service_id=reg.service_id, address=reg.address, port=reg.port, tags=list(reg.tags),
            meta=reg.meta_dict, check=checks[0] if checks else None, extra_checks=checks[1:],
            replace_existing_checks=True,
        ))

    async def deregister(self, service_id: str) -> bool:
        """True if the agent had it; an unknown id (404) is already the state we want."""
        return bool(await self._call("deregister", lambda: self._client.agent.service.deregister(service_id)))

    async def set_ttl(self, check_id: str, status: str, output: str) -> None:
        update = {"passing": self._client.agent.check.ttl_pass, "warning": self._client.agent.check.ttl_warn,
                  "critical": self._client.agent.check.ttl_fail}[status]
        await self._call("check_update", lambda: update(check_id, notes=output))

    async def catalog_node_addresses(self) -> list[str]:
        """Addresses of every node in the catalog: where orphans may live though no task runs there."""
        _, nodes = await self._call("catalog_nodes", self._client.catalog.nodes)
        return [n["Address"] for n in nodes or [] if n.get("Address")]

    async def close(self) -> None:
        await self._client.close()


class ConsulAgents:
    """Agents by task host, from the `--consul` URL template (`{host}` = the task's host)."""

    def __init__(self, url_template: str, *, token: str | TokenSource | None, metrics: Metrics,
                 timeout: float = 5.0, attempts: int = 3, tls: TLSOptions | None = None) -> None:
        if "://" not in url_template:
            raise ValueError(f"--consul: {url_template!r} is not a URL (expected e.g. http://{{host}}:8500)")
        self.url_template = url_template
        self.per_host = "{host}" in url_template
        self._token = token
        self._tls = tls
        self._metrics = metrics
        self._timeout = timeout
        self._attempts = attempts
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
                                 timeout=self._timeout, attempts=self._attempts, tls=self._tls)
            self._agents[key] = client
        return client

    def known(self) -> list[AgentClient]:
        return list(self._agents.values())

    async def close(self) -> None:
        await asyncio.gather(*(a.close() for a in self._agents.values()), return_exceptions=True)
