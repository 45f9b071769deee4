"""HTTP handlers for `/v1/session/*` and `/v1/kv/*`, and the `/_sim/` controls they need.

Spec: /work/shared/reference/consul-sessions.md (cited as §n), which was read from
hashicorp/consul agent/session_endpoint.go, agent/kvs_endpoint.go (the agent side: body decode,
`Missing session`, `Missing key name`, `Conflicting flags`, query parsing, 404s) and
agent/consul/session_endpoint.go, agent/consul/kvs_endpoint.go (the server side: ACLs, TTL and
Behavior checks, lock-delay) plus agent/consul/state/{session,kvs}.go (the writes, in
`sessions.py`). Agent-side errors are plain; server-side ones carry the client agent's
`rpc error making call: ` hop prefix (`sessions.server_error`). Files read directly for this
module (hashicorp/consul): agent/session_endpoint.go @8c46a5c, agent/consul/session_endpoint.go
@d51b509, agent/kvs_endpoint.go @cf84c59, agent/consul/kvs_endpoint.go (CE 1.15+ `KVS.Get`,
`raft apply failed: %w`), agent/consul/state/kvs.go and session.go, agent/blockingquery.
The 413 text links developer.hashicorp.com as the reference gives for current builds; the
1.15-era file read still links www.consul.io.

Control endpoints (outside `/v1/`, like the other `/_sim/*`):
* `POST /_sim/nodes/<node>/down` / `up`: the node's serfHealth goes critical / passing, as when
  gossip marks a member failed (leader.go `handleFailedMember`). Down invalidates every session
  bound to that serfHealth; health and DNS drop the node's instances. The agent keeps answering
  HTTP (a process that is really gone is the fault injector's job).
* `POST /_sim/clock/advance?seconds=N`, `GET /_sim/clock`: moves the clock of session TTLs and
  lock-delays (sessions.SimClock); the default is real time.

Request log (`--registration-log`, `GET /_sim/registrations`): every accepted session/KV write is
logged next to the registrations as `[op, subject, agent, monotonic, wall]` (same five fields, so
existing readers keep working): `session-create` `<sid>?name=<Name>`, `session-renew` `<sid>`,
`session-destroy` `<sid>`, `session-invalidate-ttl|check` `<sid>` (agent ""), `kv-set` /
`kv-cas` / `kv-delete` / `kv-delete-tree` `<key>`, `kv-acquire` / `kv-release`
`<key>?session=<sid>`. Refused writes (a false acquire, a cas mismatch) are not logged.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from aiohttp import web

from devcluster.consul_sim.gojson import (
    GoJSONError,
    GoNumber,
    GoObject,
    duration_string,
    go_kind,
    parse,
    parse_duration,
)
from devcluster.consul_sim.sessions import (
    RPC_PREFIX,
    SERF_CHECK,
    DirEntry,
    Session,
    SessionKV,
    server_error,
)
from devcluster.consul_sim.validation import ApiError, _Ctx, _decode

if TYPE_CHECKING:
    from devcluster.consul_sim.acl import Authorizer
    from devcluster.consul_sim.http_api import Request, Sim

KV_MAX_VALUE_SIZE = 524288  # kv_max_value_size default (agent/config/runtime.go), §4
SESSION_TTL_MAX_NS = 24 * 3600 * 10**9  # structs.SessionTTLMax
_SESSION_FIELDS: dict[str, Any] = {
    "ID": "string", "Name": "string", "Node": "string", "NodeChecks": ("list", "string"),
    "Checks": ("list", "string"), "LockDelay": "any", "Behavior": "string", "TTL": "string",
    "ServiceChecks": ("list", ("struct", "ServiceCheck", {"ID": "string", "Namespace": "string"})),
}
_SESSION_VALUE_TYPE = "struct { LockDelay interface {}; *structs.Alias }"


def _json(obj: Any, headers: dict[str, str] | None = None, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(obj), content_type="application/json",
                        headers=headers)


def _meta(index: int) -> dict[str, str]:
    """`setMeta` (agent/http.go): read endpoints only; the index is never 0."""
    return {"X-Consul-Index": str(max(1, index)), "X-Consul-KnownLeader": "true",
            "X-Consul-LastContact": "0", "X-Consul-Effective-Consistency": "leader"}


def _authz(r: Request) -> Authorizer:
    """Token resolution happens on the servers for these endpoints, hence the hop prefix."""
    try:
        return r.authz()
    except ApiError as e:
        raise ApiError(e.status, RPC_PREFIX + e.text) from None


def _require(authz: Authorizer, resource: str, name: str, need: str) -> None:
    if not authz.allowed(resource, name, need):
        raise ApiError(403, RPC_PREFIX + authz.denied_text(resource, name, need))


def _parse(r: Request) -> None:
    """`HTTPHandlers.parse` (agent/http.go), which these handlers run before anything else:
    `parseConsistency`, then `parseWait` (the same checks `Request.block` makes later)."""
    if "stale" in r.query and "consistent" in r.query:
        raise ApiError(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
    if r.query.get("wait", ""):
        try:
            parse_duration(r.query["wait"])
        except GoJSONError:
            raise ApiError(400, "Invalid wait time") from None
    raw = r.query.get("index", "")
    if raw and (not raw.isascii() or not raw.isdigit() or int(raw) >= 2**64):
        raise ApiError(400, "Invalid index")
    r.check_dc()  # as the simulator's other endpoints: one datacenter


async def _block_lookup(r: Request, lookup: Callable[[], tuple[int, bool]]) -> None:
    """Blocking query over a lookup that may report "not found" (agent/blockingquery
    `Query`): a miss returns on its first pass if the table index is past ?index, but two misses
    in a row keep blocking until the object appears or ?wait runs out (§0)."""
    prev_missing = False

    def index_fn() -> int:
        nonlocal prev_missing
        idx, found = lookup()
        if not found and prev_missing:
            return 0
        prev_missing = not found
        return idx

    await r.block(index_fn)


def _parse_uint(raw: str) -> int:
    """Go `strconv.ParseUint(raw, 10, 64)`; its error is a plain (500) error at the agent."""
    if not raw or not raw.isascii() or not raw.isdigit():
        raise ApiError(500, f"strconv.ParseUint: parsing {json.dumps(raw)}: invalid syntax")
    n = int(raw)
    if n >= 2**64:
        raise ApiError(500, f"strconv.ParseUint: parsing {json.dumps(raw)}: value out of range")
    return n


def _log(r: Request, op: str, subject: str) -> None:
    r.sim.log_registration(op, subject, r.agent, r.req.headers.get("User-Agent", ""))


# ---- sessions ----------------------------------------------------------------------------------


def _decode_session(body: bytes) -> dict[str, Any]:
    """`Session.UnmarshalJSON` via lib.DecodeJSON: keys case-insensitive, unknown keys ignored
    (the custom unmarshaller uses plain json.Unmarshal), LockDelay string or number (§1)."""
    try:
        v = parse(body)
        if v is None:
            return {}
        if not isinstance(v, GoObject):
            raise GoJSONError(f"json: cannot unmarshal {go_kind(v)} into Go value of type {_SESSION_VALUE_TYPE}")
        folded = {k.lower(): k for k in _SESSION_FIELDS}
        ctx = _Ctx()
        out: dict[str, Any] = {}
        for key, val in v.pairs:
            name = key if key in _SESSION_FIELDS else folded.get(key.lower())
            if name is None:
                continue
            if val is None:
                if name in ("Checks", "NodeChecks", "ServiceChecks"):
                    out[name] = None  # null slice -> nil
                continue  # null leaves a string / LockDelay unchanged
            decoded = _decode(val, _SESSION_FIELDS[name], f".{name}", ctx)
            if decoded is not None or name == "LockDelay":
                out[name] = decoded if name != "LockDelay" else val
        if ctx.saved is not None:
            raise ctx.saved
        if "LockDelay" in out:
            raw = out["LockDelay"]
            if isinstance(raw, GoNumber):
                ns = int(float(raw))
            elif isinstance(raw, str):
                ns = parse_duration(raw)
            else:
                ns = 0  # other JSON types: the type switch matches nothing
            out["LockDelay"] = ns * 10**9 if ns < 1000 else ns  # lockDelayMinThreshold
        return out
    except GoJSONError as e:
        raise ApiError(400, f"Request decode failed: {e}") from None


async def session_create(r: Request) -> web.StreamResponse:
    """`SessionCreate` (agent/session_endpoint.go) then `Session.Apply` (agent/consul)."""
    body = await r.req.read()
    d = _decode_session(body) if (r.req.content_length or 0) > 0 else {}
    node = d.get("Node", r.agent.node)
    checks: list[str] | None = d["Checks"] if "Checks" in d else [SERF_CHECK]
    node_checks: list[str] | None = d["NodeChecks"] if "NodeChecks" in d else [SERF_CHECK]
    # fixupEmptySessionChecks, in its order
    if not checks:
        node_checks = []
    elif checks == [SERF_CHECK]:
        checks = None
    elif not node_checks:
        checks = None
    behavior = d.get("Behavior", "release") or "release"
    ttl = d.get("TTL", "")
    if r.query.get("dc", "") not in ("", r.state.datacenter):  # a client agent; checked after the body
        raise ApiError(500, "cross datacenter lock must be created at server agent")
    # server side: Session.Apply
    if node == "":
        raise server_error("Must provide Node")
    authz = _authz(r)
    _require(authz, "session", node, "write")
    if behavior not in ("release", "delete"):
        raise server_error(f"Invalid Behavior setting '{behavior}'")
    ttl_ns = 0
    if ttl != "":
        try:
            ttl_ns = parse_duration(ttl)
        except GoJSONError as e:
            raise server_error(f"Session TTL '{ttl}' invalid: {e}") from None
        ttl_min = _store(r).ttl_min_ns
        if ttl_ns != 0 and (ttl_ns < ttl_min or ttl_ns > SESSION_TTL_MAX_NS):
            raise server_error(f"Invalid Session TTL '{ttl_ns}', must be between "
                               f"[{duration_string(ttl_min)}={duration_string(SESSION_TTL_MAX_NS)}]")
    s = Session(id="", name=d.get("Name", ""), node=node, lock_delay_ns=d.get("LockDelay", 15 * 10**9),
                behavior=behavior, ttl=ttl, ttl_ns=ttl_ns, node_checks=list(node_checks or []),
                service_checks=d.get("ServiceChecks"), checks=list(checks or []))
    sid = _store(r).create(s)
    _log(r, "session-create", f"{sid}?name={quote(s.name)}")
    return _json({"ID": sid})


def _store(r: Request) -> SessionKV:
    return r.sim.kv


def _session_arg(r: Request) -> str:
    if r.arg == "":
        raise ApiError(400, "Missing session")
    return r.arg


async def session_destroy(r: Request) -> web.StreamResponse:
    """Idempotent: an unknown session is `200 true` (modern `Session.Apply` returns early)."""
    r.check_dc()
    sid = _session_arg(r)
    authz = _authz(r)
    s = _store(r).sessions.get(sid)
    if s is not None:
        _require(authz, "session", s.node, "write")
        _store(r).destroy(sid)
        _log(r, "session-destroy", sid)
    return _json(True)


async def session_renew(r: Request) -> web.StreamResponse:
    """`SessionRenew`: 404 `Session id '<id>' not found` when gone; the token is resolved
    before the lookup, `session:write` checked after it (agent/consul/session_endpoint.go `Renew`)."""
    _parse(r)
    sid = _session_arg(r)
    authz = _authz(r)
    s = _store(r).sessions.get(sid)
    if s is None:
        raise ApiError(404, f"Session id '{sid}' not found")
    _require(authz, "session", s.node, "write")
    _store(r).renew(sid)
    _log(r, "session-renew", sid)
    return _json([s.view()])


def _visible(authz: Authorizer, sessions: list[Session]) -> list[dict[str, Any]]:
    """Reads filter by `session:read` on the node instead of failing (§5)."""
    return [s.view() for s in sessions if authz.allowed("session", s.node, "read")]


async def session_info(r: Request) -> web.StreamResponse:
    """`200 [session]`, or `200 []` when absent (never 404)."""
    _parse(r)
    sid = _session_arg(r)
    authz = _authz(r)
    store = _store(r)
    await _block_lookup(r, lambda: (store.session_index, sid in store.sessions))
    s = store.sessions.get(sid)
    return _json(_visible(authz, [s] if s else []), headers=_meta(store.session_index))


async def session_list(r: Request) -> web.StreamResponse:
    _parse(r)
    authz = _authz(r)
    store = _store(r)
    await r.block(lambda: store.session_index)
    return _json(_visible(authz, list(store.sessions.values())), headers=_meta(store.session_index))


async def session_node(r: Request) -> web.StreamResponse:
    _parse(r)
    if r.arg == "":
        raise ApiError(400, "Missing node name")
    authz = _authz(r)
    store = _store(r)
    await r.block(lambda: store.session_index)
    return _json(_visible(authz, store.node_sessions(r.arg)), headers=_meta(store.session_index))


# ---- KV ----------------------------------------------------------------------------------------


def entry_view(e: DirEntry) -> dict[str, Any]:
    """`structs.DirEntry` JSON: Value base64 or null, Session omitted when empty (§4)."""
    out: dict[str, Any] = {"LockIndex": e.lock_index, "Key": e.key, "Flags": e.flags,
                           "Value": base64.b64encode(e.value).decode() if e.value is not None else None}
    if e.session:
        out["Session"] = e.session
    out["CreateIndex"] = e.create_index
    out["ModifyIndex"] = e.modify_index
    return out


def _missing_key(r: Request) -> None:
    if r.arg == "":
        raise ApiError(400, "Missing key name")


def _conflicting(r: Request, *flags: str) -> None:
    """`conflictingFlags` (agent/kvs_endpoint.go): body is `Conflicting flags: ` + Values.Encode()."""
    if sum(1 for f in flags if f in r.query) > 1:
        items = sorted(r.query.items(), key=lambda kv: kv[0])  # Encode sorts keys, keeps value order
        raise ApiError(400, "Conflicting flags: " + urlencode(items))


async def kv_endpoint(r: Request) -> web.StreamResponse:
    """`KVSEndpoint`: `parse` for every method, then by method (`?keys` picks the key list)."""
    _parse(r)
    if r.req.method == "GET":
        return await (kv_keys(r) if "keys" in r.query else kv_get(r))
    if r.req.method == "PUT":
        return await kv_put(r)
    return await kv_delete(r)


async def kv_get(r: Request) -> web.StreamResponse:
    recurse = "recurse" in r.query
    if not recurse:
        _missing_key(r)
    authz = _authz(r)
    store = _store(r)
    key = r.arg
    headers: dict[str, str]
    if recurse:
        await r.block(lambda: store.kv_prefix_index(key))
        entries = store.list(key)
        visible = [e for e in entries if authz.allowed("key", e.key, "read")]
        headers = _meta(store.kv_prefix_index(key))
        if len(visible) < len(entries):
            headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
        if not visible:
            return web.Response(status=404, headers=headers)
        return _json([entry_view(e) for e in visible], headers=headers)
    _require(authz, "key", key, "read")

    def lookup() -> tuple[int, bool]:
        e = store.kv.get(key)
        return (e.modify_index, True) if e else (store.kv_index, False)

    await _block_lookup(r, lookup)
    e = store.kv.get(key)
    headers = _meta(lookup()[0])
    if e is None:
        return web.Response(status=404, headers=headers)
    if "raw" in r.query:
        headers.update({"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"})
        return web.Response(body=e.value or b"", headers={**headers, "Content-Type": "text/plain"})
    return _json([entry_view(e)], headers=headers)


async def kv_keys(r: Request) -> web.StreamResponse:
    """`KVSGetKeys`: `?separator` (or the historic `?seperator`) collapses below the prefix."""
    sep = r.query.get("seperator", "")
    if "separator" in r.query:
        sep = r.query["separator"]
    authz = _authz(r)
    store = _store(r)
    prefix = r.arg
    await r.block(lambda: store.kv_prefix_index(prefix))
    keys: list[str] = []
    filtered = False
    for e in store.list(prefix):
        if not authz.allowed("key", e.key, "read"):
            filtered = True
            continue
        k = e.key
        if sep:
            i = k.find(sep, len(prefix))
            if i >= 0:
                k = k[: i + len(sep)]
        if not keys or keys[-1] != k:
            keys.append(k)
    headers = _meta(store.kv_prefix_index(prefix))
    if filtered:
        headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
    if not keys and prefix != "":
        return web.Response(status=404, headers=headers)
    return _json(keys, headers=headers)


async def kv_put(r: Request) -> web.StreamResponse:
    """`KVSPut` then `KVS.Apply` / `kvsPreApply` (ACL, lock-delay) and the state-store ops."""
    _missing_key(r)
    _conflicting(r, "cas", "acquire", "release")
    q = r.query
    flags = _parse_uint(q["flags"]) if "flags" in q else 0
    cas = _parse_uint(q["cas"]) if "cas" in q else None
    length = r.req.content_length or 0
    if length > KV_MAX_VALUE_SIZE:
        raise ApiError(413, f"Request body({length} bytes) too large, max size: {KV_MAX_VALUE_SIZE} bytes. "
                            "See https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size.")
    value = await r.req.read() or None  # bytes.Buffer.Bytes() of an empty body is nil
    key = r.arg
    store = _store(r)
    authz = _authz(r)
    _require(authz, "key", key, "write")
    if "acquire" in q:
        sid = q["acquire"]
        ok = store.acquire(key, value, flags, sid)
        if ok:
            _log(r, "kv-acquire", f"{key}?session={sid}")
        return _json(ok)
    if "release" in q:
        sid = q["release"]
        ok = store.release(key, value, flags, sid)
        if ok:
            _log(r, "kv-release", f"{key}?session={sid}")
        return _json(ok)
    if cas is not None:
        ok = store.cas(key, value, flags, cas)
        if ok:
            _log(r, "kv-cas", key)
        return _json(ok)
    store.set(key, value, flags)
    _log(r, "kv-set", key)
    return _json(True)


async def kv_delete(r: Request) -> web.StreamResponse:
    """`KVSDelete`: true unless a `?cas` does not match; `?recurse` needs write on the prefix."""
    _conflicting(r, "recurse", "cas")
    recurse = "recurse" in r.query
    if not recurse:
        _missing_key(r)
    cas = _parse_uint(r.query["cas"]) if "cas" in r.query else None
    key = r.arg
    store = _store(r)
    authz = _authz(r)
    if recurse:
        if not authz.allowed_prefix("key", key, "write"):
            raise ApiError(403, RPC_PREFIX + authz.denied_text("key", key, "write"))
        store.delete_tree(key)
        _log(r, "kv-delete-tree", key)
        return _json(True)
    _require(authz, "key", key, "write")
    if cas is not None:
        ok = store.delete_cas(key, cas)
        if ok:
            _log(r, "kv-delete", key)
        return _json(ok)
    store.delete(key)
    _log(r, "kv-delete", key)
    return _json(True)


# (path, is_prefix, methods, handler, stats pattern) — merged into http_api.ROUTES
ROUTES: list[tuple[str, bool, tuple[str, ...], Callable[[Request], Any], str]] = [
    ("/v1/session/create", False, ("PUT",), session_create, ""),
    ("/v1/session/destroy/", True, ("PUT",), session_destroy, "{id}"),
    ("/v1/session/renew/", True, ("PUT",), session_renew, "{id}"),
    ("/v1/session/info/", True, ("GET",), session_info, "{id}"),
    ("/v1/session/node/", True, ("GET",), session_node, "{node}"),
    ("/v1/session/list", False, ("GET",), session_list, ""),
    ("/v1/kv/", True, ("GET", "PUT", "DELETE"), kv_endpoint, "{key}"),
]

# ---- /_sim/ controls ---------------------------------------------------------------------------


async def sim_control(sim: Sim, req: web.Request) -> web.StreamResponse | None:
    """The `/_sim/nodes/*` and `/_sim/clock*` controls; None when the path is not one of them."""
    path = req.path
    if path.startswith("/_sim/nodes/") and req.method == "POST":
        node, _, action = path[len("/_sim/nodes/"):].rpartition("/")
        agent = sim.state.nodes.get(node)
        if action not in ("down", "up"):
            return None
        if agent is None:
            return web.Response(status=404, text=f"unknown node {node!r}", content_type="text/plain")
        sim.state.set_serf_status(agent, "critical" if action == "down" else "passing")
        return _json({"node": node, "serfHealth": agent.serf_status})
    if path == "/_sim/clock" and req.method == "GET":
        return _json({"offset": sim.kv.clock.offset})
    if path == "/_sim/clock/advance" and req.method == "POST":
        try:
            seconds = float(req.query.get("seconds", ""))
        except ValueError:
            return web.Response(status=400, text="want ?seconds=<float >= 0>", content_type="text/plain")
        if not seconds >= 0:
            return web.Response(status=400, text="want ?seconds=<float >= 0>", content_type="text/plain")
        sim.kv.advance(seconds)
        return _json({"offset": sim.kv.clock.offset})
    return None
