"""The agents' HTTP API (aiohttp): one `web.Application` per simulated agent, one shared `Sim`.

Routing is done by hand instead of by aiohttp's router because Consul's own routing is what
clients see: exact paths and path prefixes (`/v1/agent/service/deregister/<id with / allowed>`),
`405 method X not allowed` with `Allow: OPTIONS,<methods>`, `OPTIONS` answered 200 with `Allow`,
and `404 Invalid URL path: not a recognized HTTP API endpoint` for anything else under `/v1/`.
Every error body is plain text; the status/text pairs come from reference/consul.md §1-§5.

Test-only endpoints live outside `/v1/`: `POST /_sim/reset`, `GET /_sim/stats`,
`POST /_sim/stats/reset`, and `/_sim/faults` (error injection, `devcluster/faults.py`). Stats count
every `/v1/` call per agent as `"<METHOD> <pattern>"`.
With `--registration-log` (benchmarks; off by default) every accepted service register/deregister
is also appended, O(1), to a log read by `GET /_sim/registrations` (`?since=N` pages on) as
`[op, service id, agent, CLOCK_MONOTONIC seconds, wall seconds]`: the monotonic clock is system-wide
on Linux, so a bench process can subtract its own event-delivery times exactly. `?client=1` adds a
sixth field, the request's `User-Agent` (the registrar names its pid there), so "which instance
wrote what, when" can be read back (`python -m bench.failover`'s overlap check).
Sessions and KV (`/v1/session/*`, `/v1/kv/*`), their log entries and the `/_sim/nodes/*` and
`/_sim/clock*` controls are in `kv_api.py` (state in `sessions.py`); `/_sim/reset` clears them too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from devcluster.consul_sim import kv_api, views
from devcluster.consul_sim.acl import AclStore, Authorizer, token_from_request
from devcluster.consul_sim.bexpr import compile_filter
from devcluster.consul_sim.gojson import GoJSONError, parse_duration
from devcluster.consul_sim.sessions import SessionKV
from devcluster.consul_sim.state import Agent, ServiceState, State
from devcluster.consul_sim.validation import (
    ApiError,
    build_service,
    decode_check_register,
    decode_check_update,
    decode_service,
    finish_service,
    precheck_service,
    validate_check_type,
)
from devcluster.faults import CONSUL, Faults

log = logging.getLogger("consul_sim.http")

NOT_FOUND = "Invalid URL path: not a recognized HTTP API endpoint"
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")
_AGENT_SERVICE_FIELDS = {"ID", "Service", "Tags", "Meta", "Port", "Address", "Kind", "SocketPath",
                         "TaggedAddresses", "Weights", "EnableTagOverride", "Proxy", "Connect",
                         "Datacenter", "Locality"}
_CHECK_FIELDS = {"Node", "CheckID", "Name", "Status", "Notes", "Output", "ServiceID", "ServiceName",
                 "ServiceTags", "Type", "Interval", "Timeout", "ExposedPort", "Definition"}
_SERVICE_NODE_FIELDS = {"ID", "Node", "Address", "Datacenter", "TaggedAddresses", "NodeMeta",
                        "ServiceKind", "ServiceID", "ServiceName", "ServiceTags", "ServiceAddress",
                        "ServiceTaggedAddresses", "ServiceWeights", "ServiceMeta", "ServicePort",
                        "ServiceSocketPath", "ServiceEnableTagOverride", "ServiceProxy", "ServiceConnect"}


class Sim:
    """Everything the agents share: catalog state, ACLs, call statistics, the check runner."""

    def __init__(self, state: State, acl: AclStore) -> None:
        self.state = state
        self.acl = acl
        self.stats: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.ttl_reset: Callable[[Agent, str], None] = lambda agent, check_id: None
        self.registration_log: list[tuple[str, str, str, float, float, str]] | None = None  # --registration-log
        self.kv = SessionKV(state)  # sessions + KV (kv_api.py), shared by every agent like the catalog
        self.kv.on_invalidate = lambda op, sid: self.log_registration(op, sid, None)
        self.faults = Faults(CONSUL)  # POST /_sim/faults on any agent; one rule set for all agents

    def log_registration(self, op: str, service_id: str, agent: Agent | None, client: str = "") -> None:
        """Also session/KV writes (kv_api.py); `agent` None = the servers' own (TTL expiry);
        `client` = the request's User-Agent."""
        if self.registration_log is not None:
            self.registration_log.append((op, service_id, agent.addr if agent else "", time.monotonic(),
                                          time.time(), client))


Handler = Callable[["Request"], Awaitable[web.StreamResponse]]


class Request:
    """One API call: the aiohttp request, its agent, and the id/name after the route prefix."""

    def __init__(self, sim: Sim, agent: Agent, req: web.Request, arg: str) -> None:
        self.sim = sim
        self.state = sim.state
        self.agent = agent
        self.req = req
        self.arg = arg
        self.query = req.query
        self.token = token_from_request(req.query, req.headers)

    def authz(self) -> Authorizer:
        return self.sim.acl.resolve(self.token)

    def check_dc(self) -> None:
        dc = self.query.get("dc", "")
        if dc and dc != self.state.datacenter:
            raise ApiError(500, "No path to datacenter")

    def filter(self, items: list[dict[str, Any]], fields: set[str], maps: set[str]) -> list[dict[str, Any]]:
        expr = self.query.get("filter", "")
        if not expr:
            return items
        pred = compile_filter(expr, fields, maps)
        return [i for i in items if pred(i)]

    async def block(self, index_fn: Callable[[], int]) -> int:
        """Blocking-query semantics (§5): wait for index > ?index or ?wait (+ jitter)."""
        wait_s = 300.0
        if "wait" in self.query and self.query["wait"] != "":
            try:
                wait_s = parse_duration(self.query["wait"]) / 1e9
            except GoJSONError:
                raise ApiError(400, "Invalid wait time") from None
        min_index = 0
        if "index" in self.query and self.query["index"] != "":
            raw = self.query["index"]
            if not raw.isdigit() or int(raw) >= 2**64:
                raise ApiError(400, "Invalid index")
            min_index = int(raw)
        if wait_s <= 0:
            wait_s = 300.0
        wait_s = min(wait_s, 600.0)
        if min_index > 0:
            deadline = time.monotonic() + wait_s + random.uniform(0, wait_s / 16)
            while index_fn() <= min_index:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                await self.state.wait_change(remaining)
        return max(1, index_fn())


def _json(obj: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(obj), content_type="application/json",
                        headers=headers)


def _meta_headers(index: int) -> dict[str, str]:
    return {"X-Consul-Index": str(index), "X-Consul-KnownLeader": "true", "X-Consul-LastContact": "0",
            "X-Consul-Effective-Consistency": "leader"}


def _ok() -> web.Response:
    return web.Response(status=200)


def _node_meta_filter(r: Request) -> list[tuple[str, str]]:
    out = []
    for raw in r.query.getall("node-meta", []):
        k, _, v = raw.partition(":")
        out.append((k, v))
    return out


# ---- agent: services ---------------------------------------------------------------------------


async def register_service(r: Request) -> web.StreamResponse:
    d = decode_service(await r.req.read())
    precheck_service(d)
    authz = r.authz()
    spec = build_service(d)
    authz.require("service", spec.name, "write")
    finish_service(spec)
    _warn_dns_names(spec.name, spec.tags)
    q = r.query.getall("replace-existing-checks", [])
    replace = len(q) > 0 and q[0] in ("", "true")
    r.state.register_service(r.agent, spec, replace_existing_checks=replace)
    r.sim.log_registration("register", spec.id, r.agent, r.req.headers.get("User-Agent", ""))
    return _ok()


def _warn_dns_names(name: str, tags: list[str]) -> None:
    import re

    if re.search(r"[^A-Za-z0-9\-]+", name):
        log.warning("Service name will not be discoverable via DNS due to invalid characters. Valid "
                    "characters include all alpha-numerics and dashes. service=%s", name)
    elif len(name) > 63:
        log.warning("Service name will not be discoverable via DNS due to it being too long. Valid "
                    "lengths are between 1 and 63 bytes. service=%s", name)


async def deregister_service(r: Request) -> web.StreamResponse:
    authz = r.authz()
    svc = r.agent.services.get(r.arg)
    if svc is None:
        raise ApiError(404, f'Unknown service ID "{r.arg}". Ensure that the service ID is passed, '
                            "not the service name.")
    authz.require("service", svc.spec.name, "write")
    r.state.deregister_service(r.agent, r.arg)
    r.sim.log_registration("deregister", r.arg, r.agent, r.req.headers.get("User-Agent", ""))
    return _ok()


async def agent_services(r: Request) -> web.StreamResponse:
    authz = r.authz()
    out: dict[str, Any] = {}
    filtered = False
    for sid, svc in r.agent.services.items():
        if not authz.allowed("service", svc.spec.name, "read"):
            filtered = True
            continue
        out[sid] = views.agent_service(svc, r.state.datacenter)
    expr = r.query.get("filter", "")
    if expr:
        pred = compile_filter(expr, _AGENT_SERVICE_FIELDS, {"Meta", "TaggedAddresses", "Weights"})
        out = {k: v for k, v in out.items() if pred(v)}
    headers = {"X-Consul-Results-Filtered-By-ACLs": "true"} if filtered and r.token else None
    return _json(out, headers=headers)


def _service_hash(obj: dict[str, Any]) -> str:
    return hashlib.blake2b(json.dumps(obj, sort_keys=True).encode(), digest_size=8).hexdigest()


async def agent_service(r: Request) -> web.StreamResponse:
    authz = r.authz()

    def current() -> dict[str, Any]:
        svc = r.agent.services.get(r.arg)
        if svc is None:
            raise ApiError(404, f"unknown service ID: {r.arg}")
        authz.require("service", svc.spec.name, "read")
        return views.agent_service(svc, r.state.datacenter)

    obj = current()
    want = r.query.get("hash", "")
    if want:
        wait_s = 300.0
        if r.query.get("wait"):
            try:
                wait_s = min(parse_duration(r.query["wait"]) / 1e9, 600.0)
            except GoJSONError:
                raise ApiError(400, "Invalid wait time") from None
        deadline = time.monotonic() + wait_s
        while _service_hash(obj) == want and time.monotonic() < deadline:
            await r.state.wait_change(deadline - time.monotonic())
            obj = current()
    h = _service_hash(obj)
    obj["ContentHash"] = h
    return _json(obj, headers={"X-Consul-ContentHash": h})


# ---- agent: checks -----------------------------------------------------------------------------


async def agent_checks(r: Request) -> web.StreamResponse:
    authz = r.authz()
    items: dict[str, Any] = {}
    filtered = False
    for cid, chk in r.agent.checks.items():
        ok = (authz.allowed("service", chk.service_name, "read") if chk.service_id
              else authz.allowed("node", r.agent.node, "read"))
        if not ok:
            filtered = True
            continue
        items[cid] = views.check(chk)
    expr = r.query.get("filter", "")
    if expr:
        pred = compile_filter(expr, _CHECK_FIELDS, {"Definition"})
        items = {k: v for k, v in items.items() if pred(v)}
    headers = {"X-Consul-Results-Filtered-By-ACLs": "true"} if filtered and r.token else None
    return _json(items, headers=headers)


async def register_check(r: Request) -> web.StreamResponse:
    spec = decode_check_register(await r.req.read())
    authz = r.authz()
    validate_check_type(spec)
    svc = None
    if spec.service_id:
        svc = r.agent.services.get(spec.service_id)
        if svc is None:
            raise ApiError(404, f'ServiceID "{spec.service_id}" does not exist')
        authz.require("service", svc.spec.name, "write")
    else:
        authz.require("node", r.agent.node, "write")
    if spec.script_args:
        raise ApiError(500, "Scripts are disabled on this agent; to enable, configure "
                            "'enable_script_checks' or 'enable_local_script_checks' to true")
    r.state.register_check(r.agent, spec)
    return _ok()


def _vet_check_update(r: Request, authz: Authorizer) -> None:
    chk = r.agent.checks.get(r.arg)
    if chk is None:
        raise ApiError(404, f'Unknown check ID "{r.arg}". Ensure that the check ID is passed, '
                            "not the check name.")
    if chk.service_id:
        authz.require("service", chk.service_name, "write")
    else:
        authz.require("node", r.agent.node, "write")


async def deregister_check(r: Request) -> web.StreamResponse:
    authz = r.authz()
    _vet_check_update(r, authz)
    r.state.deregister_check(r.agent, r.arg)
    return _ok()


async def _ttl_update(r: Request, status: str, output: str) -> web.StreamResponse:
    authz = r.authz()
    _vet_check_update(r, authz)
    chk = r.agent.checks[r.arg]
    if chk.spec.kind != "ttl":
        raise ApiError(500, f'CheckID "{r.arg}" does not have associated TTL')
    if chk.spec.output_max_size and len(output) > chk.spec.output_max_size:
        output = output[: chk.spec.output_max_size]
    r.state.set_check_status(r.agent, r.arg, status, output)
    r.sim.ttl_reset(r.agent, r.arg)
    return _ok()


async def check_pass(r: Request) -> web.StreamResponse:
    return await _ttl_update(r, "passing", r.query.get("note", ""))


async def check_warn(r: Request) -> web.StreamResponse:
    return await _ttl_update(r, "warning", r.query.get("note", ""))


async def check_fail(r: Request) -> web.StreamResponse:
    return await _ttl_update(r, "critical", r.query.get("note", ""))


async def check_update(r: Request) -> web.StreamResponse:
    status, output = decode_check_update(await r.req.read())
    return await _ttl_update(r, status, output)


async def agent_self(r: Request) -> web.StreamResponse:
    r.authz().require("agent", r.agent.node, "read")
    return _json(views.agent_self(r.agent, r.state.datacenter))


# ---- catalog -----------------------------------------------------------------------------------


async def catalog_services(r: Request) -> web.StreamResponse:
    r.check_dc()
    authz = r.authz()
    idx = await r.block(lambda: r.state.services_index or r.state.nodes_index)
    out: dict[str, set[str]] = {}
    names: dict[str, str] = {}
    filtered = False
    meta_filter = _node_meta_filter(r)
    for key, bucket in r.state.by_name.items():
        for _agent, svc in bucket.values():
            if meta_filter and not all(views.node_meta().get(k) == v for k, v in meta_filter):
                continue
            if not authz.allowed("service", svc.spec.name, "read"):
                filtered = True
                continue
            names.setdefault(key, svc.spec.name)
            out.setdefault(names[key], set()).update(svc.spec.tags)
    headers = _meta_headers(idx)
    if filtered:
        headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
    return _json({k: sorted(v) for k, v in sorted(out.items())}, headers=headers)


def _tag_match(svc: ServiceState, tags: list[str]) -> bool:
    have = {t.lower() for t in svc.spec.tags}
    return all(t.lower() in have for t in tags)


async def _visible_instances(r: Request) -> tuple[int, list[tuple[Agent, ServiceState]], bool]:
    """The instances of the service named in the path after blocking, `?tag` (every tag, any case)
    and ACLs: (index, instances, whether ACLs filtered some out), for the catalog and health views."""
    authz = r.authz()
    name = r.arg
    idx = await r.block(lambda: r.state.index_for_name(name))
    tags = r.query.getall("tag", [])
    visible = []
    filtered = False
    for agent, svc in r.state.instances(name):
        if tags and not _tag_match(svc, tags):
            continue
        if not (authz.allowed("service", svc.spec.name, "read") and authz.allowed("node", agent.node, "read")):
            filtered = True
            continue
        visible.append((agent, svc))
    return idx, visible, filtered


def _require_service_name(r: Request) -> None:
    """`/v1/catalog/service/`, `/v1/health/service/` and `/v1/health/checks/` with nothing after the
    prefix: Consul refuses them before any lookup (agent/catalog_endpoint.go `CatalogServiceNodes`,
    agent/health_endpoint.go `healthServiceNodes` and `HealthServiceChecks`), it does not list nothing."""
    if not r.arg:
        raise ApiError(400, "Missing service name")


async def catalog_service(r: Request) -> web.StreamResponse:
    r.check_dc()
    _require_service_name(r)
    idx, visible, filtered = await _visible_instances(r)
    out = [views.catalog_service_node(agent, svc, r.state.datacenter) for agent, svc in visible]
    out = r.filter(out, _SERVICE_NODE_FIELDS, {"ServiceMeta", "NodeMeta", "TaggedAddresses",
                                               "ServiceTaggedAddresses", "ServiceWeights"})
    headers = _meta_headers(idx)
    if filtered:
        headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
    return _json(out, headers=headers)


async def catalog_nodes(r: Request) -> web.StreamResponse:
    r.check_dc()
    authz = r.authz()
    idx = await r.block(lambda: r.state.nodes_index)
    out = [views.node(a, r.state.datacenter) for a in sorted(r.state.nodes.values(), key=lambda a: a.node)
           if authz.allowed("node", a.node, "read")]
    return _json(out, headers=_meta_headers(idx))


def _node_or_none(r: Request, authz: Authorizer) -> Agent | None:
    agent = r.state.nodes.get(r.arg)
    if agent is None or not authz.allowed("node", agent.node, "read"):
        return None
    return agent


async def catalog_node_services(r: Request) -> web.StreamResponse:
    r.check_dc()
    authz = r.authz()
    idx = await r.block(lambda: r.state.services_index or r.state.nodes_index)
    agent = _node_or_none(r, authz)
    if agent is None:
        raise ApiError(404, "Node not found")
    services = [views.health_service(s) for s in agent.services.values()
                if authz.allowed("service", s.spec.name, "read")]
    return _json({"Node": views.node(agent, r.state.datacenter), "Services": services},
                 headers=_meta_headers(idx))


async def catalog_node(r: Request) -> web.StreamResponse:
    r.check_dc()
    authz = r.authz()
    idx = await r.block(lambda: r.state.services_index or r.state.nodes_index)
    agent = _node_or_none(r, authz)
    if agent is None:
        return _json(None, headers=_meta_headers(idx))
    services = {sid: views.health_service(s) for sid, s in agent.services.items()
                if authz.allowed("service", s.spec.name, "read")}
    return _json({"Node": views.node(agent, r.state.datacenter), "Services": services},
                 headers=_meta_headers(idx))


async def catalog_datacenters(r: Request) -> web.StreamResponse:
    return _json([r.state.datacenter])


# ---- health ------------------------------------------------------------------------------------


async def health_service(r: Request) -> web.StreamResponse:
    r.check_dc()
    _require_service_name(r)
    passing = False
    if "passing" in r.query:
        v = r.query["passing"]
        if v == "" or v in _TRUE:
            passing = True
        elif v not in _FALSE:
            raise ApiError(400, "Invalid value for ?passing")
    idx, visible, filtered = await _visible_instances(r)
    out = []
    for agent, svc in visible:
        checks = r.state.service_checks(agent, svc)
        if passing and (agent.serf_status != "passing" or any(c.status != "passing" for c in checks)):
            continue
        out.append({"Node": views.node(agent, r.state.datacenter), "Service": views.health_service(svc),
                    "Checks": [views.serf_check(agent), *(views.check(c) for c in checks)]})
    out = r.filter(out, {"Node", "Service", "Checks"}, {"Node", "Service"})
    headers = _meta_headers(idx)
    if filtered:
        headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
    return _json(out, headers=headers)


async def health_checks(r: Request) -> web.StreamResponse:
    r.check_dc()
    _require_service_name(r)
    authz = r.authz()
    name = r.arg
    idx = await r.block(lambda: r.state.index_for_name(name))
    out: list[dict[str, Any]] = []
    for agent, svc in r.state.instances(name):
        if authz.allowed("service", svc.spec.name, "read"):
            out.extend(views.check(c) for c in r.state.service_checks(agent, svc))
    out = r.filter(out, _CHECK_FIELDS, {"Definition"})
    return _json(out, headers=_meta_headers(idx))


async def health_node(r: Request) -> web.StreamResponse:
    r.check_dc()
    authz = r.authz()
    idx = await r.block(lambda: r.state.index)
    agent = _node_or_none(r, authz)
    out = []
    if agent is not None:
        out.append(views.serf_check(agent))
        out.extend(views.check(c) for c in agent.checks.values()
                   if not c.service_id or authz.allowed("service", c.service_name, "read"))
    out = r.filter(out, _CHECK_FIELDS, {"Definition"})
    return _json(out, headers=_meta_headers(idx))


async def status_leader(r: Request) -> web.StreamResponse:
    return _json("127.0.0.1:8300")


async def status_peers(r: Request) -> web.StreamResponse:
    return _json(["127.0.0.1:8300"])


# ---- routing -----------------------------------------------------------------------------------

# (path, is_prefix, methods, handler, stats pattern)
ROUTES: list[tuple[str, bool, tuple[str, ...], Handler, str]] = [
    ("/v1/agent/service/register", False, ("PUT",), register_service, ""),
    ("/v1/agent/service/deregister/", True, ("PUT",), deregister_service, "{id}"),
    ("/v1/agent/services", False, ("GET",), agent_services, ""),
    ("/v1/agent/service/", True, ("GET",), agent_service, "{id}"),
    ("/v1/agent/checks", False, ("GET",), agent_checks, ""),
    ("/v1/agent/check/register", False, ("PUT",), register_check, ""),
    ("/v1/agent/check/deregister/", True, ("PUT",), deregister_check, "{id}"),
    ("/v1/agent/check/pass/", True, ("PUT",), check_pass, "{id}"),
    ("/v1/agent/check/warn/", True, ("PUT",), check_warn, "{id}"),
    ("/v1/agent/check/fail/", True, ("PUT",), check_fail, "{id}"),
    ("/v1/agent/check/update/", True, ("PUT",), check_update, "{id}"),
    ("/v1/agent/self", False, ("GET",), agent_self, ""),
    ("/v1/catalog/services", False, ("GET",), catalog_services, ""),
    ("/v1/catalog/service/", True, ("GET",), catalog_service, "{name}"),
    ("/v1/catalog/nodes", False, ("GET",), catalog_nodes, ""),
    ("/v1/catalog/node-services/", True, ("GET",), catalog_node_services, "{node}"),
    ("/v1/catalog/node/", True, ("GET",), catalog_node, "{node}"),
    ("/v1/catalog/datacenters", False, ("GET",), catalog_datacenters, ""),
    ("/v1/health/service/", True, ("GET",), health_service, "{name}"),
    ("/v1/health/checks/", True, ("GET",), health_checks, "{service}"),
    ("/v1/health/node/", True, ("GET",), health_node, "{node}"),
    ("/v1/status/leader", False, ("GET",), status_leader, ""),
    ("/v1/status/peers", False, ("GET",), status_peers, ""),
    *kv_api.ROUTES,
]
_EXACT = {p: r for r in ROUTES for p in [r[0]] if not r[1]}
_PREFIXES = sorted((r for r in ROUTES if r[1]), key=lambda r: -len(r[0]))


def _route(path: str) -> tuple[tuple[str, bool, tuple[str, ...], Handler, str], str] | None:
    if path in _EXACT:
        return _EXACT[path], ""
    for route in _PREFIXES:
        if path.startswith(route[0]):
            return route, path[len(route[0]):]
    return None


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain", charset="utf-8",
                        headers=headers)


def make_app(sim: Sim, agent: Agent) -> web.Application:
    """The HTTP app of one agent."""
    policy = sim.acl.default_policy

    async def dispatch(req: web.Request) -> web.StreamResponse:
        path = req.path
        if path.startswith("/_sim/"):
            return await _sim_endpoint(sim, req)
        found = _route(path)
        pattern = (found[0][0] + found[0][4]) if found else "<unknown>"
        sim.stats[agent.addr][f"{req.method} {pattern}"] += 1
        extra = {"X-Consul-Default-ACL-Policy": policy}
        if found is None:
            return _text(404, NOT_FOUND if path.startswith("/v1/") else "404 page not found\n", extra)
        route, arg = found
        methods = route[2]
        allow = ",".join(("OPTIONS", *methods))
        if req.method == "OPTIONS":
            return web.Response(status=200, headers={"Allow": allow, **extra})
        if req.method not in methods:
            return _text(405, f"method {req.method} not allowed", {"Allow": allow, **extra})
        try:
            resp = await route[3](Request(sim, agent, req, arg))
        except ApiError as e:
            log.info("%s %s -> %d %s", req.method, req.path_qs, e.status, e.text)
            return _text(e.status, e.text, extra)
        resp.headers.update(extra)
        return resp

    app = web.Application(client_max_size=16 * 1024 * 1024, middlewares=[sim.faults.middleware])
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


async def _sim_endpoint(sim: Sim, req: web.Request) -> web.StreamResponse:
    if req.path == "/_sim/reset" and req.method == "POST":
        sim.kv.reset()  # first, so dropping the checks below invalidates (and logs) no session
        sim.state.reset()
        for agent in sim.state.agents.values():
            sim.state.set_serf_status(agent, "passing")
        return _json({"ok": True})
    found = await kv_api.sim_control(sim, req)
    if found is not None:
        return found
    if req.path == "/_sim/stats" and req.method == "GET":
        return _json({a: dict(c) for a, c in sim.stats.items()})
    if req.path == "/_sim/stats/reset" and req.method == "POST":
        sim.stats.clear()
        return _json({"ok": True})
    if req.path == "/_sim/registrations" and req.method == "GET":
        if sim.registration_log is None:
            return _text(404, "registration log is off (start with --registration-log)")
        since = int(req.query.get("since", "0") or 0)
        width = 6 if req.query.get("client") in ("1", "true") else 5  # five fields: what older readers unpack
        return _json({"next": len(sim.registration_log), "entries": [e[:width] for e in sim.registration_log[since:]]})
    if req.path == "/_sim/registrations/reset" and req.method == "POST" and sim.registration_log is not None:
        sim.registration_log.clear()
        return _json({"ok": True})
    return _text(404, "unknown simulator endpoint")
