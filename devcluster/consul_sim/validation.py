"""Decode and validate agent API request bodies exactly as a Consul 1.15-1.20 agent does (pure).

Why so literal: the registrar must survive real Consul, so the simulator must refuse what Consul
refuses, with the same status and text (reference/consul.md §1-§3). Decoding follows Go's
`encoding/json` into Consul's structs: keys match case-insensitively, unknown keys are an error,
a wrong JSON type is an error that names the Go field, `null` leaves the zero value, and the first
error in document order wins (Go keeps decoding after a type error and reports the first one; a
check's own `UnmarshalJSON` aborts the whole decode when it fails). Then the handler's checks run
in the handler's order (§1.3); the first failure is raised as `ApiError(status, text)`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from devcluster.consul_sim.gojson import (
    GoJSONError,
    GoNumber,
    GoObject,
    go_int,
    go_kind,
    go_quote,
    parse,
    parse_duration,
)


class ApiError(Exception):
    """An HTTP error answer: status code and the plain-text body Consul writes."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


# ---- Go struct schemas -------------------------------------------------------------------------
# A type is one of: "string" "int" "bool" "duration" "any" "[]string" "map[string]string"
# "map[string][]string", or a tuple ("struct", name, fields), ("list", T), ("map", T),
# ("check", name, fields) — a struct whose Go type has its own UnmarshalJSON (errors abort).

_SERVICE_ADDRESS = ("struct", "ServiceAddress", {"Address": "string", "Port": "int"})
_WEIGHTS = ("struct", "Weights", {"Passing": "int", "Warning": "int"})

_CHECK_COMMON: dict[str, Any] = {
    "Name": "string", "Status": "string", "Notes": "string", "ScriptArgs": "[]string",
    "HTTP": "string", "Header": "map[string][]string", "Method": "string", "Body": "string",
    "DisableRedirects": "bool", "TCP": "string", "UDP": "string", "GRPC": "string",
    "GRPCUseTLS": "bool", "H2PING": "string", "H2PingUseTLS": "bool", "OSService": "string",
    "AliasNode": "string", "AliasService": "string", "DockerContainerID": "string", "Shell": "string",
    "TLSServerName": "string", "TLSSkipVerify": "bool", "Interval": "duration", "Timeout": "duration",
    "TTL": "duration", "SuccessBeforePassing": "int", "FailuresBeforeWarning": "int",
    "FailuresBeforeCritical": "int", "DeregisterCriticalServiceAfter": "duration", "OutputMaxSize": "int",
    # snake-case aliases of the custom UnmarshalJSON
    "args": "[]string", "script_args": "[]string", "deregister_critical_service_after": "duration",
    "docker_container_id": "string", "tls_server_name": "string", "tls_skip_verify": "bool",
    "grpc_use_tls": "bool", "h2ping_use_tls": "bool", "service_id": "string",
}
CHECK_TYPE = ("check", "CheckType", {"CheckID": "string", "ServiceID": "string", **_CHECK_COMMON})
CHECK_DEFINITION = ("check", "CheckDefinition",
                    {"ID": "string", "ServiceID": "string", "Token": "string", **_CHECK_COMMON})
SERVICE_DEFINITION = ("struct", "ServiceDefinition", {
    "Kind": "string", "ID": "string", "Name": "string", "Tags": "[]string", "Address": "string",
    "TaggedAddresses": ("map", _SERVICE_ADDRESS), "Meta": "map[string]string", "Port": "int",
    "SocketPath": "string", "Check": CHECK_TYPE, "Checks": ("list", CHECK_TYPE), "Weights": _WEIGHTS,
    "Token": "string", "EnableTagOverride": "bool", "Proxy": "any", "Connect": "any",
    "Locality": ("struct", "Locality", {"Region": "string", "Zone": "string"}),
    "enable_tag_override": "bool", "tagged_addresses": ("map", _SERVICE_ADDRESS),
})
CHECK_UPDATE = ("struct", "checkUpdate", {"Status": "string", "Output": "string"})

_DURATION_ORDER = ("Interval", "Timeout", "TTL", "DeregisterCriticalServiceAfter",
                   "deregister_critical_service_after")


class _Ctx:
    def __init__(self) -> None:
        self.saved: GoJSONError | None = None

    def save(self, msg: str) -> None:
        if self.saved is None:
            self.saved = GoJSONError(msg)


def _type_name(t: Any) -> str:
    if isinstance(t, str):
        return {"duration": "interface {}", "any": "interface {}"}.get(t, t)
    if t[0] == "list":
        return "[]" + _type_name(t[1])
    if t[0] == "map":
        return "map[string]" + _type_name(t[1])
    return f"structs.{t[1]}"


def _type_err(ctx: _Ctx, v: object, t: Any, path: str, detail: str = "") -> None:
    kind = go_kind(v) + (f" {detail}" if detail else "")
    ctx.save(f"json: cannot unmarshal {kind} into Go struct field {path} of type {_type_name(t)}")


def _decode(v: object, t: Any, path: str, ctx: _Ctx) -> Any:
    """Decode `v` into Go type `t`; type errors are saved, nested custom-decoder errors raise."""
    if v is None:
        return None
    if t == "any":
        return _plain(v)
    if t == "duration":
        return v  # interface{}: parsed later by the check's UnmarshalJSON
    if t == "string":
        if isinstance(v, str) and not isinstance(v, GoNumber):
            return v
        _type_err(ctx, v, t, path)
        return None
    if t == "bool":
        if isinstance(v, bool):
            return v
        _type_err(ctx, v, t, path)
        return None
    if t == "int":
        if isinstance(v, GoNumber):
            n = go_int(v)
            if n is not None:
                return n
            _type_err(ctx, v, t, path, str(v))
            return None
        _type_err(ctx, v, t, path)
        return None
    if t == "[]string":
        return _decode(v, ("list", "string"), path, ctx)
    if t == "map[string]string":
        return _decode(v, ("map", "string"), path, ctx)
    if t == "map[string][]string":
        return _decode(v, ("map", "[]string"), path, ctx)
    kind = t[0]
    if kind == "list":
        if not isinstance(v, list):
            _type_err(ctx, v, t, path)
            return None
        return [_decode(x, t[1], path, ctx) for x in v]
    if kind == "map":
        if not isinstance(v, GoObject):
            _type_err(ctx, v, t, path)
            return None
        return {k: _decode(x, t[1], f"{path}.{k}", ctx) for k, x in v.pairs}
    if kind == "struct":
        if not isinstance(v, GoObject):
            _type_err(ctx, v, t, path)
            return None
        return _decode_struct(v, t, path, ctx)
    if kind == "check":
        if not isinstance(v, GoObject):
            _type_err(ctx, v, t, path)
            return None
        inner = _Ctx()
        out = _decode_struct(v, t, t[1], inner)
        if inner.saved is not None:
            raise inner.saved
        for name in _DURATION_ORDER:
            raw = out.get(name)
            if isinstance(raw, GoNumber):
                out[name] = int(float(raw))
            elif isinstance(raw, str):
                out[name] = parse_duration(raw)  # raises GoJSONError: aborts the decode
            else:
                out[name] = None  # other JSON types are silently ignored by Consul's decoder
        return out
    raise AssertionError(t)


def _decode_struct(v: GoObject, t: Any, path: str, ctx: _Ctx) -> dict[str, Any]:
    fields: dict[str, Any] = t[2]
    folded = {name.lower(): name for name in fields}
    out: dict[str, Any] = {}
    for key, val in v.pairs:
        name = key if key in fields else folded.get(key.lower())
        if name is None:
            ctx.save(f"json: unknown field {go_quote(key)}")
            continue
        decoded = _decode(val, fields[name], f"{path}.{name}", ctx)
        if decoded is not None or (val is None and name not in out):
            out[name] = decoded
    return out


def _plain(v: object) -> Any:
    if isinstance(v, GoObject):
        return {k: _plain(x) for k, x in v.pairs}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, GoNumber):
        return float(v) if any(c in v for c in ".eE") else int(v)
    return v


def decode_body(body: bytes, t: Any) -> dict[str, Any]:
    """Decode a request body into struct type `t`, or raise the 400 Consul would answer."""
    try:
        v = parse(body)
        if v is None:
            return {}
        if not isinstance(v, GoObject):
            raise GoJSONError(f"json: cannot unmarshal {go_kind(v)} into Go value of type {_type_name(t)}")
        ctx = _Ctx()
        out = _decode(v, t, t[1], ctx) if t[0] == "check" else _decode_struct(v, t, t[1], ctx)
        if ctx.saved is not None:
            raise ctx.saved
        return out
    except GoJSONError as e:
        raise ApiError(400, f"Request decode failed: {e}") from None


# ---- the validated result ----------------------------------------------------------------------

VALID_STATUSES = ("passing", "warning", "critical")


@dataclass
class CheckSpec:
    """One check as the agent stores its definition (durations in nanoseconds)."""

    check_id: str = ""
    name: str = ""
    status: str = ""
    notes: str = ""
    service_id: str = ""
    script_args: list[str] = field(default_factory=list)
    http: str = ""
    header: dict[str, list[str]] = field(default_factory=dict)
    method: str = ""
    body: str = ""
    disable_redirects: bool = False
    tcp: str = ""
    udp: str = ""
    grpc: str = ""
    h2ping: str = ""
    os_service: str = ""
    alias_node: str = ""
    alias_service: str = ""
    docker_container_id: str = ""
    tls_server_name: str = ""
    tls_skip_verify: bool = False
    interval: int = 0
    timeout: int = 0
    ttl: int = 0
    success_before_passing: int = 0
    failures_before_warning: int = 0
    failures_before_critical: int = 0
    deregister_critical_service_after: int = 0
    output_max_size: int = 0

    def is_empty(self) -> bool:
        return self == CheckSpec()

    @property
    def kind(self) -> str:
        """Consul's `CheckType.Type()`."""
        if self.grpc:
            return "grpc"
        if self.http:
            return "http"
        if self.ttl > 0:
            return "ttl"
        if self.tcp:
            return "tcp"
        if self.udp:
            return "udp"
        if self.alias_node or self.alias_service:
            return "alias"
        if self.docker_container_id:
            return "docker"
        if self.script_args:
            return "script"
        if self.h2ping:
            return "h2ping"
        if self.os_service:
            return "os_service"
        return ""

    def validate(self) -> str | None:
        """Consul's `CheckType.Validate()`: the error text, or None."""
        interval_check = bool(self.script_args or self.http or self.tcp or self.udp or self.grpc
                              or self.h2ping or self.os_service)
        alias = bool(self.alias_node or self.alias_service)
        if self.interval > 0 and self.ttl > 0:
            return "Interval and TTL cannot both be specified"
        if interval_check and self.interval <= 0:
            return "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"
        if alias and self.interval > 0:
            return "Interval cannot be set for Alias checks"
        if alias and self.ttl > 0:
            return "TTL must be not be set for Alias checks"
        if not interval_check and not alias and self.ttl <= 0:
            return "TTL must be > 0 for TTL checks"
        if self.output_max_size < 0:
            return "MaxOutputMaxSize must be positive"
        if self.failures_before_warning > self.failures_before_critical:
            return "FailuresBeforeWarning can't be higher than FailuresBeforeCritical"
        return None


def _pick(d: dict[str, Any], *names: str, default: Any = None) -> Any:
    """The first non-zero value among a field and its snake-case alias (canonical name wins)."""
    for n in names:
        v = d.get(n)
        if v:
            return v
    return default


def check_from_decoded(d: dict[str, Any], *, id_key: str) -> CheckSpec:
    return CheckSpec(
        check_id=d.get(id_key) or "",
        name=d.get("Name") or "",
        status=d.get("Status") or "",
        notes=d.get("Notes") or "",
        service_id=_pick(d, "ServiceID", "service_id", default="") if id_key == "ID" else "",
        script_args=[a or "" for a in _pick(d, "ScriptArgs", "args", "script_args", default=[])],
        http=d.get("HTTP") or "",
        header={k: [x or "" for x in (v or [])] for k, v in (d.get("Header") or {}).items()},
        method=d.get("Method") or "",
        body=d.get("Body") or "",
        disable_redirects=bool(d.get("DisableRedirects")),
        tcp=d.get("TCP") or "",
        udp=d.get("UDP") or "",
        grpc=d.get("GRPC") or "",
        h2ping=d.get("H2PING") or "",
        os_service=d.get("OSService") or "",
        alias_node=d.get("AliasNode") or "",
        alias_service=d.get("AliasService") or "",
        docker_container_id=_pick(d, "DockerContainerID", "docker_container_id", default=""),
        tls_server_name=_pick(d, "TLSServerName", "tls_server_name", default=""),
        tls_skip_verify=bool(_pick(d, "TLSSkipVerify", "tls_skip_verify", default=False)),
        interval=d.get("Interval") or 0,
        timeout=d.get("Timeout") or 0,
        ttl=d.get("TTL") or 0,
        success_before_passing=d.get("SuccessBeforePassing") or 0,
        failures_before_warning=d.get("FailuresBeforeWarning") or 0,
        failures_before_critical=d.get("FailuresBeforeCritical") or 0,
        deregister_critical_service_after=_pick(
            d, "DeregisterCriticalServiceAfter", "deregister_critical_service_after", default=0),
        output_max_size=d.get("OutputMaxSize") or 0,
    )


@dataclass
class ServiceSpec:
    """A service registration after decoding and the pre-ACL validation steps."""

    id: str
    name: str
    tags: list[str]
    address: str
    port: int
    meta: dict[str, str]
    tagged_addresses: dict[str, dict[str, Any]]
    weights: dict[str, int] | None
    enable_tag_override: bool
    kind: str
    socket_path: str
    token: str
    proxy: Any
    connect: Any
    locality: dict[str, str] | None
    checks: list[CheckSpec]


_META_KEY = re.compile(r"^[a-zA-Z0-9_-]+$")


def is_any_address(addr: str) -> bool:
    """`ipaddr.IsAny`: 0.0.0.0, ::, [::]."""
    return addr in ("0.0.0.0", "::", "[::]")


def validate_weights(w: dict[str, int]) -> str | None:
    if w["Passing"] < 1:
        return "Passing must be greater than 0"
    if w["Warning"] < 0:
        return "Warning must be greater or equal than 0"
    if w["Passing"] > 65535 or w["Warning"] > 65535:
        return "DNS Weight must be between 0 and 65535"
    return None


def validate_meta(meta: dict[str, str], kind: str = "") -> str | None:
    if len(meta) > 64:
        return "Node metadata cannot contain more than 64 key/value pairs"
    for key, value in meta.items():
        reason = None
        if key == "":
            reason = "Key cannot be blank"
        elif not _META_KEY.match(key):
            reason = "Key contains invalid characters"
        elif len(key.encode()) > 128:
            reason = "Key is too long (limit: 128 characters)"
        elif key.startswith("consul-") and not (kind == "mesh-gateway" and key == "consul-wan-federation"):
            reason = "Key prefix 'consul-' is reserved for internal use"
        elif len(value.encode()) > 512:
            reason = "Value is too long (limit: 512 characters)"
        if reason:
            return f"Couldn't load metadata pair ('{key}', '{value}'): {reason}"
    return None


def decode_service(body: bytes) -> dict[str, Any]:
    """Step 1 of §1.3."""
    return decode_body(body, SERVICE_DEFINITION)


def precheck_service(d: dict[str, Any]) -> None:
    """Steps 2-3 of §1.3 (before the ACL token is resolved)."""
    if not d.get("Name"):
        raise ApiError(400, "Missing service name")
    if is_any_address(d.get("Address") or ""):
        raise ApiError(400, "Invalid service address")


def build_service(d: dict[str, Any]) -> ServiceSpec:
    """Steps 5-9 of §1.3 (after the token resolved, before the ACL vet)."""
    weights = None
    if d.get("Weights") is not None:
        w = d["Weights"]
        weights = {"Passing": w.get("Passing") or 0, "Warning": w.get("Warning") or 0}
        err = validate_weights(weights)
        if err:
            raise ApiError(400, f"Invalid Weights: {err}")
    meta = {k: (v or "") for k, v in (d.get("Meta") or {}).items()}
    kind = d.get("Kind") or ""
    err = validate_meta(meta, kind)
    if err:
        raise ApiError(400, f"Invalid Service Meta: {err}")
    checks: list[CheckSpec] = []
    if d.get("Check") is not None:
        c = check_from_decoded(d["Check"], id_key="CheckID")
        if not c.is_empty():
            checks.append(c)
    for raw in d.get("Checks") or []:
        checks.append(check_from_decoded(raw or {}, id_key="CheckID"))
    for c in checks:
        err = c.validate()
        if err:
            raise ApiError(400, f"Invalid check: {err}")
    for c in checks:
        if c.status and c.status not in VALID_STATUSES:
            raise ApiError(400, "Status for checks must 'passing', 'warning', 'critical'")
    tagged = d.get("TaggedAddresses") or d.get("tagged_addresses") or {}
    tagged = {k: {"Address": (v or {}).get("Address") or "", "Port": (v or {}).get("Port") or 0}
              for k, v in tagged.items()}
    locality = d.get("Locality")
    return ServiceSpec(
        id=d.get("ID") or d["Name"],
        name=d["Name"],
        tags=[t or "" for t in d.get("Tags") or []],
        address=d.get("Address") or "",
        port=d.get("Port") or 0,
        meta=meta,
        tagged_addresses=tagged,
        weights=weights,
        enable_tag_override=bool(d.get("EnableTagOverride") or d.get("enable_tag_override")),
        kind=kind,
        socket_path=d.get("SocketPath") or "",
        token=d.get("Token") or "",
        proxy=d.get("Proxy"),
        connect=d.get("Connect"),
        locality={k: v or "" for k, v in locality.items()} if locality else None,
        checks=checks,
    )


def _is_ipv4(a: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(a), ipaddress.IPv4Address)
    except ValueError:
        return False


def _is_ipv6(a: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(a), ipaddress.IPv6Address)
    except ValueError:
        return False


def finish_service(spec: ServiceSpec) -> None:
    """Step 11 (`Agent.AddService`: validateService + addServiceInternal); errors are 500s.

    Fills the defaults the agent adds: weights, lan/wan tagged addresses of an IP `Address`."""
    for name, addr in spec.tagged_addresses.items():
        a = addr["Address"]
        if name in ("lan_ipv4", "wan_ipv4") and not _is_ipv4(a):
            raise ApiError(500, f"Service tagged address {go_quote(name)} must be a valid ipv4 address")
        if name in ("lan_ipv6", "wan_ipv6") and not _is_ipv6(a):
            raise ApiError(500, f"Service tagged address {go_quote(name)} must be a valid ipv6 address")
    for c in spec.checks:
        if c.script_args:
            raise ApiError(500, "Scripts are disabled on this agent; to enable, configure "
                                "'enable_script_checks' or 'enable_local_script_checks' to true")
    if spec.weights is None:
        spec.weights = {"Passing": 1, "Warning": 1}
    if _is_ipv4(spec.address):
        for name in ("lan_ipv4", "wan_ipv4"):
            spec.tagged_addresses.setdefault(name, {"Address": spec.address, "Port": spec.port})
    elif _is_ipv6(spec.address):
        for name in ("lan_ipv6", "wan_ipv6"):
            spec.tagged_addresses.setdefault(name, {"Address": spec.address, "Port": spec.port})


def decode_check_register(body: bytes) -> CheckSpec:
    """`PUT /v1/agent/check/register` up to the token: decode, name, status, check type."""
    d = decode_body(body, CHECK_DEFINITION)
    c = check_from_decoded(d, id_key="ID")
    if not c.name:
        raise ApiError(400, "Missing check name")
    if c.status and c.status not in VALID_STATUSES:
        raise ApiError(400, "Bad check status")
    if not c.check_id:
        c.check_id = c.name
    return c


def validate_check_type(c: CheckSpec) -> None:
    err = c.validate()
    if err:
        raise ApiError(400, f"Invalid check: {err}")


def decode_check_update(body: bytes) -> tuple[str, str]:
    d = decode_body(body, CHECK_UPDATE)
    status = d.get("Status") or ""
    if status not in VALID_STATUSES:
        raise ApiError(400, f"Invalid check status: '{status}'")
    return status, d.get("Output") or ""


def parse_json_int(v: GoNumber) -> int | None:
    return go_int(v)
