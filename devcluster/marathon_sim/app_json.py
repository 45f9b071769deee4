"""App definitions: parse and validate both input shapes, render the output shape of each version.

Input: the 1.4 networking shape (`container.docker.network`, `container.docker.portMappings`,
`ipAddress.networkName`, `portDefinitions`) and the 1.5+ shape (`networks`, `container.portMappings`)
are both accepted whatever the simulated version, because 1.5+ Marathon also accepts the old one.
Internally one normalised `AppSpec` holds the network as `host` / `bridge` / `container:<name>`.
Output follows reference §5.3: the 1.5+ shape from 1.5, the 1.4 shape (with `ipAddress`, top-level
`ports`) for 1.4. Validation errors use Marathon's 422 body `{"message":"Object is not valid",
"details":[{"path":..., "errors":[...]}]}`.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from devcluster.marathon_sim.config import SimConfig
from devcluster.marathon_sim.pod_json import parse_unreachable

SEGMENT_RE = re.compile(
    r"^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])|(\.|\.\.)$"
)
RESERVED_LAST = {"restart", "tasks", "versions"}
HEALTH_PROTOCOLS = {"HTTP", "HTTPS", "TCP", "COMMAND", "MESOS_HTTP", "MESOS_HTTPS", "MESOS_TCP"}
MARATHON_LEVEL = {"HTTP", "HTTPS", "TCP"}


class ValidationError(Exception):
    """Carries Marathon's 422 details list."""

    def __init__(self, details: list[dict[str, Any]]) -> None:
        super().__init__("Object is not valid")
        self.details = details

    def body(self) -> dict[str, Any]:
        return {"message": "Object is not valid", "details": self.details}


@dataclass
class PortMapping:
    container_port: int
    host_port: int | None  # None: no host port (container network without hostPort)
    service_port: int
    protocol: str = "tcp"
    name: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class PortDefinition:
    port: int  # requested host port (0 = any)
    protocol: str = "tcp"
    name: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class HealthCheck:
    protocol: str = "HTTP"
    path: str | None = "/"
    port_index: int | None = 0
    port: int | None = None
    interval_seconds: float = 60
    timeout_seconds: float = 20
    grace_period_seconds: float = 300
    max_consecutive_failures: int = 3
    ignore_http1xx: bool = False
    delay_seconds: float = 15
    command: str | None = None

    @property
    def marathon_level(self) -> bool:
        return self.protocol in MARATHON_LEVEL

    def to_json(self) -> dict[str, Any]:
        """The app health-check object (§5.4); numbers render as ints when whole, as Marathon's do."""
        out: dict[str, Any] = {
            "gracePeriodSeconds": _num(self.grace_period_seconds),
            "intervalSeconds": _num(self.interval_seconds),
            "maxConsecutiveFailures": self.max_consecutive_failures,
        }
        if self.protocol == "COMMAND":
            out["command"] = {"value": self.command}
        elif self.protocol in {"HTTP", "HTTPS", "MESOS_HTTP", "MESOS_HTTPS"}:
            out["path"] = self.path or "/"
        if self.protocol in {"HTTP", "HTTPS"}:
            out = {**out, "ignoreHttp1xx": self.ignore_http1xx}
            out = {k: out[k] for k in ("gracePeriodSeconds", "ignoreHttp1xx", "intervalSeconds",
                                         "maxConsecutiveFailures", "path")}
        if self.protocol != "COMMAND":
            if self.port is not None:
                out["port"] = self.port
            else:
                out["portIndex"] = self.port_index or 0
        out["protocol"] = self.protocol
        out["ipProtocol"] = "IPv4"
        out["timeoutSeconds"] = _num(self.timeout_seconds)
        out["delaySeconds"] = _num(self.delay_seconds)
        return out


@dataclass
class AppSpec:
    id: str
    instances: int = 1
    cmd: str | None = None
    args: list[str] | None = None
    cpus: float = 1.0
    mem: float = 128.0
    disk: float = 0.0
    gpus: int = 0
    env: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    image: str = ""
    force_pull_image: bool = False
    privileged: bool = False
    parameters: list[dict[str, str]] = field(default_factory=list)
    container_type: str = "DOCKER"  # DOCKER (Docker containerizer) or MESOS (UCR: the CNI slave only)
    network: str = "host"  # host | bridge | container:<name>
    port_mappings: list[PortMapping] = field(default_factory=list)
    port_definitions: list[PortDefinition] = field(default_factory=list)
    require_ports: bool = False
    health_checks: list[HealthCheck] = field(default_factory=list)
    backoff_seconds: float = 1.0
    backoff_factor: float = 1.15
    max_launch_delay_seconds: float = 300.0  # 3600 in the real default; 300 keeps tests sane
    minimum_health_capacity: float = 1.0
    maximum_over_capacity: float = 1.0
    constraints: list[Any] = field(default_factory=list)
    # Docker host volumes (container.volumes with hostPath): {"containerPath", "hostPath", "mode"}
    volumes: list[dict[str, str]] = field(default_factory=list)
    # readiness checks (HTTP only, as Marathon's ReadinessCheckExecutor): kept as given, echoed back
    readiness_checks: list[dict[str, Any]] = field(default_factory=list)
    task_kill_grace_period_seconds: float | None = None  # None: Mesos' default kill (no grace here)
    # unreachableStrategy: {inactiveAfterSeconds, expungeAfterSeconds}, None for "disabled"
    unreachable_strategy: dict[str, int] | None = field(
        default_factory=lambda: {"inactiveAfterSeconds": 300, "expungeAfterSeconds": 600})
    version: str = ""
    last_scaling_at: str = ""
    last_config_change_at: str = ""

    @property
    def network_name(self) -> str | None:
        return self.network.split(":", 1)[1] if self.network.startswith("container:") else None

    @property
    def container_networking(self) -> bool:
        return self.network.startswith("container:")

    def service_ports(self) -> list[int]:
        if self.network == "host":
            return [p.port for p in self.port_definitions]
        return [m.service_port for m in self.port_mappings]

    def config_key(self) -> dict[str, Any]:
        """Everything but instances and versions: a change here means a restart deployment."""
        d = copy.deepcopy(self.__dict__)
        for k in ("instances", "version", "last_scaling_at", "last_config_change_at"):
            d.pop(k)
        return d


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() else v


# ---------------------------------------------------------------------------------------------------
# parsing


class ErrorSink(Protocol):
    def add(self, path: str, msg: str) -> None: ...


class _Errors:
    def __init__(self) -> None:
        self.details: list[dict[str, Any]] = []

    def add(self, path: str, msg: str) -> None:
        for d in self.details:
            if d["path"] == path:
                d["errors"].append(msg)
                return
        self.details.append({"path": path, "errors": [msg]})


def normalize_id(raw: Any, errors: ErrorSink, path: str = "/id") -> str:
    """Absolute form, empty segments dropped, `.`/`..` resolved, each segment checked (§6.1)."""
    if not isinstance(raw, str) or not raw.strip("/"):
        errors.add(path, "error.path.missing" if raw is None else "must not be empty")
        return "/"
    segments: list[str] = []
    raw_segments = [s for s in raw.split("/") if s]
    for seg in raw_segments:
        if not SEGMENT_RE.fullmatch(seg):
            errors.add(path, f"must fully match regular expression '{SEGMENT_RE.pattern}'")
            return "/" + "/".join(raw_segments)
        if seg == ".":
            continue
        if seg == "..":
            if segments:
                segments.pop()
            continue
        segments.append(seg)
    if raw_segments and raw_segments[-1] in {".", ".."}:
        errors.add(path, "must not end with '.' or '..'")
    if segments and segments[-1] in RESERVED_LAST:
        errors.add(path, f"must not end with any of the following reserved words: {', '.join(sorted(RESERVED_LAST))}")
    if not segments:
        errors.add(path, "must not be empty")
    return "/" + "/".join(segments)


def _int(v: Any, errors: _Errors, path: str, default: int | None, lo: int = 0, hi: int = 65535) -> int | None:
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int | float) or int(v) != v:
        errors.add(path, "error.expected.jsnumber")
        return default
    if not lo <= int(v) <= hi:
        errors.add(path, f"got {int(v)}, expected between {lo} and {hi}")
    return int(v)


def _num_field(v: Any, errors: _Errors, path: str, default: float, lo: float = 0.0) -> float:
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int | float):
        errors.add(path, "error.expected.jsnumber")
        return default
    if v < lo:
        errors.add(path, f"got {v}, expected {lo} or more")
    return float(v)


def _str_map(v: Any, errors: _Errors, path: str, allow_secret: bool = False) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        errors.add(path, "error.expected.jsobject")
        return {}
    out: dict[str, Any] = {}
    for k, val in v.items():
        if isinstance(val, str) or (allow_secret and isinstance(val, dict) and "secret" in val):
            out[k] = val
        else:
            errors.add(f"{path}({k})", "error.expected.jsstring")
    return out


def parse_app(body: Any, *, app_id: str | None = None, base: AppSpec | None = None,
              default_network_name: str | None = None) -> AppSpec:
    """Validate a POST/PUT body into an AppSpec; `base` supplies fields a PUT leaves out.
    A container/USER network without a name gets `--default_network_name`, as in Marathon."""
    errors = _Errors()
    if not isinstance(body, dict):
        raise ValidationError([{"path": "/", "errors": ["error.expected.jsobject"]}])
    raw_id = body.get("id", app_id)
    if app_id is not None and raw_id is not None and normalize_id(raw_id, _Errors()) != app_id:
        errors.add("/id", "The 'id' field in the body does not match the id in the URL")
    spec_id = normalize_id(raw_id if raw_id is not None else app_id, errors)
    spec = copy.deepcopy(base) if base else AppSpec(id=spec_id)
    spec.id = spec_id

    if "instances" in body:
        spec.instances = _int(body["instances"], errors, "/instances", 1, 0, 10_000) or 0
    for key, attr in (("cpus", "cpus"), ("mem", "mem"), ("disk", "disk")):
        if key in body:
            setattr(spec, attr, _num_field(body[key], errors, f"/{key}", getattr(spec, attr)))
    if "gpus" in body:
        spec.gpus = _int(body["gpus"], errors, "/gpus", 0, 0, 1024) or 0
    if "cmd" in body:
        spec.cmd = body["cmd"] if isinstance(body["cmd"], str) and body["cmd"] else None
        if body["cmd"] is not None and not isinstance(body["cmd"], str):
            errors.add("/cmd", "error.expected.jsstring")
    if "args" in body:
        args = body["args"]
        if args is not None and (not isinstance(args, list) or not all(isinstance(a, str) for a in args)):
            errors.add("/args", "error.expected.jsarray")
            args = None
        spec.args = args or None
    if spec.cmd and spec.args:
        errors.add("/", "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'.")
    if "env" in body:
        spec.env = _str_map(body["env"], errors, "/env", allow_secret=True)
    if "labels" in body:
        spec.labels = _str_map(body["labels"], errors, "/labels")
    for key, attr in (("backoffSeconds", "backoff_seconds"), ("backoffFactor", "backoff_factor"),
                      ("maxLaunchDelaySeconds", "max_launch_delay_seconds")):
        if key in body:
            setattr(spec, attr, _num_field(body[key], errors, f"/{key}", getattr(spec, attr)))
    if "requirePorts" in body:
        spec.require_ports = bool(body["requirePorts"])
    if "constraints" in body and isinstance(body["constraints"], list):
        spec.constraints = body["constraints"]
    if "readinessChecks" in body:
        spec.readiness_checks = _parse_readiness_checks(body["readinessChecks"], errors)
    if "taskKillGracePeriodSeconds" in body:
        grace = body["taskKillGracePeriodSeconds"]
        if grace is not None and (not isinstance(grace, (int, float)) or isinstance(grace, bool) or grace <= 0):
            errors.add("/taskKillGracePeriodSeconds", "must be a positive number")  # AppValidation: > 0
        else:
            spec.task_kill_grace_period_seconds = float(grace) if grace is not None else None
    if "unreachableStrategy" in body:
        spec.unreachable_strategy = parse_unreachable(body["unreachableStrategy"], "/unreachableStrategy", errors)
    us = body.get("upgradeStrategy")
    if isinstance(us, dict):
        spec.minimum_health_capacity = _num_field(us.get("minimumHealthCapacity"), errors,
                                                  "/upgradeStrategy/minimumHealthCapacity", 1.0)
        spec.maximum_over_capacity = _num_field(us.get("maximumOverCapacity"), errors,
                                                "/upgradeStrategy/maximumOverCapacity", 1.0)

    if any(k in body for k in ("container", "networks", "ipAddress", "portDefinitions", "ports")):
        _parse_networking(body, spec, errors, default_network_name)
    if base is None and spec.network == "host" and "portDefinitions" not in body and "ports" not in body:
        spec.port_definitions = [PortDefinition(port=0)]  # Marathon gives a host-networked app one port
    if not spec.image:
        errors.add("/container", "the simulator runs containers with an image only: container.docker.image "
                                 "is required")
    if spec.container_type == "MESOS" and spec.network == "bridge":
        errors.add("/networks", "the simulator's Mesos containerizer has no mesos-bridge network")
    if "healthChecks" in body:
        spec.health_checks = _parse_health_checks(body["healthChecks"], spec, errors)
    if errors.details:
        raise ValidationError(errors.details)
    return spec


def _parse_networking(body: dict[str, Any], spec: AppSpec, errors: _Errors, default_net: str | None) -> None:
    container = body.get("container")
    if container is not None and not isinstance(container, dict):
        errors.add("/container", "error.expected.jsobject")
        container = None
    docker: dict[str, Any] = {}
    if container is not None:
        ctype = container.get("type", "DOCKER")
        if ctype not in {"DOCKER", "MESOS"}:
            errors.add("/container/type", "error.unknown.enum.literal")
        else:
            spec.container_type = ctype
        docker = container.get("docker") or {}
        if not isinstance(docker, dict):
            errors.add("/container/docker", "error.expected.jsobject")
            docker = {}
        image = docker.get("image")
        if not isinstance(image, str) or not image:
            errors.add("/container/docker/image", "must not be empty")
        else:
            spec.image = image
        spec.force_pull_image = bool(docker.get("forcePullImage", False))
        spec.privileged = bool(docker.get("privileged", False))
        params = docker.get("parameters") or []
        if not isinstance(params, list) or not all(
            isinstance(p, dict) and isinstance(p.get("key"), str) and isinstance(p.get("value"), str)
            for p in params
        ):
            errors.add("/container/docker/parameters", "error.expected.jsarray of {key, value}")
            params = []
        spec.parameters = params
        if "volumes" in container:
            spec.volumes = _parse_volumes(container["volumes"], errors)

    # which network: the 1.5+ `networks` wins over the 1.4 `docker.network` (Marathon rejects both)
    networks = body.get("networks")
    old_network = docker.get("network")
    if networks is not None and old_network is not None:
        errors.add("/networks", "cannot mix networks with container.docker.network")
    if networks is not None:
        if not isinstance(networks, list) or not networks:
            errors.add("/networks", "error.expected.jsarray")
            networks = [{"mode": "host"}]
        if len(networks) > 1:
            errors.add("/networks", "the Docker containerizer supports a single network")
        n0 = networks[0] if isinstance(networks[0], dict) else {}
        mode = n0.get("mode", "container")
        if mode == "host":
            spec.network = "host"
        elif mode == "container/bridge":
            spec.network = "bridge"
        elif mode == "container":
            name = n0.get("name") or default_net
            if not isinstance(name, str) or not name:
                errors.add("/networks(0)/name", "is required for container mode networks")
                name = "?"
            spec.network = f"container:{name}"
        else:
            errors.add("/networks(0)/mode", "error.unknown.enum.literal")
    elif old_network is not None:
        if old_network == "HOST":
            spec.network = "host"
        elif old_network == "BRIDGE":
            spec.network = "bridge"
        elif old_network == "USER":
            ip = body.get("ipAddress") or {}
            name = (ip.get("networkName") if isinstance(ip, dict) else None) or default_net
            if not isinstance(name, str) or not name:
                errors.add("/ipAddress/networkName", "is required for USER networking")
                name = "?"
            spec.network = f"container:{name}"
        elif old_network == "NONE":
            errors.add("/container/docker/network", "NONE networking is not supported by the simulator")
        else:
            errors.add("/container/docker/network", "error.unknown.enum.literal")
    elif spec.container_type == "MESOS" and isinstance(body.get("ipAddress"), dict):
        # 1.4 IP-per-task for the Mesos containerizer: `ipAddress.networkName` and its discovery ports,
        # which 1.5 migrates to container.portMappings without hostPort (marathon-ucr-pods.md §5)
        ip = body["ipAddress"]
        name = ip.get("networkName") or default_net
        if not isinstance(name, str) or not name:
            errors.add("/ipAddress/networkName", "is required for IP-per-task networking")
            name = "?"
        spec.network = f"container:{name}"
    elif container is not None and "networks" not in body:
        spec.network = "host"

    raw_mappings = None
    if container is not None:
        raw_mappings = container.get("portMappings")
        if raw_mappings is None:
            raw_mappings = docker.get("portMappings")
    if raw_mappings is None and spec.container_type == "MESOS" and isinstance(body.get("ipAddress"), dict):
        discovery = body["ipAddress"].get("discovery") or {}
        ports = discovery.get("ports") if isinstance(discovery, dict) else None
        if ports is not None and not isinstance(ports, list):
            errors.add("/ipAddress/discovery/ports", "error.expected.jsarray")
        raw_mappings = [{"containerPort": p.get("number"), "name": p.get("name"), "protocol": p.get("protocol", "tcp")}
                        if isinstance(p, dict) else p for p in (ports if isinstance(ports, list) else [])]
    if spec.network == "host":
        spec.port_mappings = []
        defs = body.get("portDefinitions")
        if defs is None and isinstance(body.get("ports"), list):
            defs = [{"port": p} for p in body["ports"]]
        if defs is not None:
            spec.port_definitions = _parse_port_definitions(defs, errors)
        if raw_mappings:
            errors.add("/container/portMappings", "portMappings are not allowed with host networking")
    else:
        spec.port_definitions = []
        spec.port_mappings = _parse_port_mappings(raw_mappings or [], spec.network, errors)


def _parse_volumes(raw: Any, errors: _Errors) -> list[dict[str, str]]:
    """Docker host volumes (what `docker run -v hostPath:containerPath:ro|rw` does). Persistent,
    external and secret volumes, and a relative hostPath (a path in the Mesos sandbox), are not
    simulated: refused, not dropped."""
    if not isinstance(raw, list):
        errors.add("/container/volumes", "error.expected.jsarray")
        return []
    out = []
    for i, v in enumerate(raw):
        p = f"/container/volumes({i})"
        if not isinstance(v, dict):
            errors.add(p, "error.expected.jsobject")
            continue
        if any(k in v for k in ("persistent", "external", "secret")):
            errors.add(p, "only Docker host volumes (hostPath) are supported by the simulator")
            continue
        given: dict[str, str] = {}  # the fields that are non-empty strings
        for key in ("containerPath", "hostPath", "mode"):
            value = v.get(key)
            if value is None:
                errors.add(f"{p}/{key}", "error.path.missing")
            elif not isinstance(value, str) or not value:
                errors.add(f"{p}/{key}", "must not be empty")
            else:
                given[key] = value
        if given.get("mode", "RO") not in ("RO", "RW"):
            errors.add(f"{p}/mode", "error.unknown.enum.literal")
        if not given.get("hostPath", "/").startswith("/"):
            errors.add(f"{p}/hostPath", "a sandbox-relative hostPath is not supported by the simulator")
        if len(given) == 3:
            out.append(given)
    return out


def _parse_port_definitions(defs: Any, errors: _Errors) -> list[PortDefinition]:
    if not isinstance(defs, list):
        errors.add("/portDefinitions", "error.expected.jsarray")
        return []
    out = []
    for i, d in enumerate(defs):
        if not isinstance(d, dict):
            errors.add(f"/portDefinitions({i})", "error.expected.jsobject")
            continue
        port = _int(d.get("port"), errors, f"/portDefinitions({i})/port", 0) or 0
        out.append(PortDefinition(port=port, protocol=d.get("protocol", "tcp"), name=d.get("name"),
                                  labels=_str_map(d.get("labels"), errors, f"/portDefinitions({i})/labels")))
    return out


def _parse_port_mappings(raw: Any, network: str, errors: _Errors) -> list[PortMapping]:
    if not isinstance(raw, list):
        errors.add("/container/portMappings", "error.expected.jsarray")
        return []
    out = []
    for i, m in enumerate(raw):
        p = f"/container/portMappings({i})"
        if not isinstance(m, dict):
            errors.add(p, "error.expected.jsobject")
            continue
        cport = _int(m.get("containerPort"), errors, f"{p}/containerPort", 0) or 0
        # bridge: hostPort defaults to 0 (allocate); container networks: no host port unless asked
        default_host = 0 if network == "bridge" else None
        hport = _int(m.get("hostPort"), errors, f"{p}/hostPort", default_host)
        if network == "bridge" and hport is None:
            hport = 0
        sport = _int(m.get("servicePort"), errors, f"{p}/servicePort", 0) or 0
        proto = m.get("protocol", "tcp")
        if proto not in {"tcp", "udp", "udp,tcp", "tcp,udp"}:
            errors.add(f"{p}/protocol", "error.unknown.enum.literal")
        name = m.get("name")
        if name is not None and not (isinstance(name, str) and re.fullmatch(r"[a-z0-9-]+", name)):
            errors.add(f"{p}/name", "must fully match regular expression '^[a-z0-9-]+$'")
        out.append(PortMapping(container_port=cport, host_port=hport, service_port=sport, protocol=proto,
                               name=name, labels=_str_map(m.get("labels"), errors, f"{p}/labels")))
    return out


def _parse_health_checks(raw: Any, spec: AppSpec, errors: _Errors) -> list[HealthCheck]:
    if not isinstance(raw, list):
        errors.add("/healthChecks", "error.expected.jsarray")
        return []
    out = []
    n_ports = len(spec.port_definitions) if spec.network == "host" else len(spec.port_mappings)
    for i, h in enumerate(raw):
        p = f"/healthChecks({i})"
        if not isinstance(h, dict):
            errors.add(p, "error.expected.jsobject")
            continue
        proto = h.get("protocol", "HTTP")
        if proto not in HEALTH_PROTOCOLS:
            errors.add(f"{p}/protocol", "error.unknown.enum.literal")
        hc = HealthCheck(protocol=proto)
        hc.path = h.get("path", "/") if proto in {"HTTP", "HTTPS", "MESOS_HTTP", "MESOS_HTTPS"} else None
        hc.port = _int(h.get("port"), errors, f"{p}/port", None)
        hc.port_index = _int(h.get("portIndex"), errors, f"{p}/portIndex", 0, 0, 1000)
        hc.interval_seconds = _num_field(h.get("intervalSeconds"), errors, f"{p}/intervalSeconds", 60)
        hc.timeout_seconds = _num_field(h.get("timeoutSeconds"), errors, f"{p}/timeoutSeconds", 20)
        hc.grace_period_seconds = _num_field(h.get("gracePeriodSeconds"), errors, f"{p}/gracePeriodSeconds", 300)
        hc.max_consecutive_failures = _int(h.get("maxConsecutiveFailures"), errors,
                                           f"{p}/maxConsecutiveFailures", 3, 0, 1_000_000) or 0
        hc.ignore_http1xx = bool(h.get("ignoreHttp1xx", False))
        hc.delay_seconds = _num_field(h.get("delaySeconds"), errors, f"{p}/delaySeconds", 15)
        if proto == "COMMAND":
            cmd = h.get("command")
            value = cmd.get("value") if isinstance(cmd, dict) else None
            if not isinstance(value, str) or not value:
                errors.add(f"{p}/command", "is required for COMMAND health checks")
            hc.command = value
        elif hc.port is None and (hc.port_index or 0) >= max(n_ports, 0) and n_ports >= 0:
            if (hc.port_index or 0) >= n_ports:
                errors.add(f"{p}/portIndex", "Health check port indices must address an element of the ports array "
                           "or container port mappings.")
        # No "timeoutSeconds must be smaller than intervalSeconds" here: Marathon has that rule only
        # for readiness checks (api/v2/validation/AppValidation.scala `readinessCheckValidator`) and
        # pod health checks (PodsValidation.scala `healthCheckValidator`); app health checks
        # (core/health/HealthCheck.scala) accept a timeout >= the interval.
        out.append(hc)
    return out


# ---------------------------------------------------------------------------------------------------
# rendering


def _labels(d: dict[str, str]) -> dict[str, str]:
    return dict(d)


def render_app(spec: AppSpec, cfg: SimConfig) -> dict[str, Any]:
    """The app definition as the simulated version returns it (without task counts/embeds)."""
    return _render_new(spec, cfg) if cfg.new_app_json else _render_14(spec)


def _parse_readiness_checks(raw: Any, errors: _Errors) -> list[dict[str, Any]]:
    """Marathon's ReadinessCheck: `name`, `protocol` (HTTP/HTTPS), `path`, `portName`,
    `intervalSeconds` (30), `timeoutSeconds` (10, must be < the interval), `httpStatusCodesForReady`
    ([200]), `preserveLastResponse`. Defaults filled in as Marathon renders them back."""
    if not isinstance(raw, list):
        errors.add("/readinessChecks", "error.expected.jsarray")
        return []
    out = []
    for i, rc in enumerate(raw):
        if not isinstance(rc, dict):
            errors.add(f"/readinessChecks({i})", "error.expected.jsobject")
            continue
        check = {"name": rc.get("name", "readinessCheck"), "protocol": rc.get("protocol", "HTTP"),
                 "path": rc.get("path", "/"), "portName": rc.get("portName", "http-api"),
                 "intervalSeconds": rc.get("intervalSeconds", 30), "timeoutSeconds": rc.get("timeoutSeconds", 10),
                 "httpStatusCodesForReady": rc.get("httpStatusCodesForReady", [200]),
                 "preserveLastResponse": bool(rc.get("preserveLastResponse", False))}
        if check["protocol"] not in ("HTTP", "HTTPS"):
            errors.add(f"/readinessChecks({i})/protocol", "error.unknown.enum.literal")
        if not check["timeoutSeconds"] < check["intervalSeconds"]:
            errors.add(f"/readinessChecks({i})", "timeoutSeconds must be < intervalSeconds")
        out.append(check)
    return out


def _head(spec: AppSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"id": spec.id}
    if spec.cmd is not None:
        out["cmd"] = spec.cmd
    if spec.args is not None:
        out["args"] = list(spec.args)
    out.update({"instances": spec.instances, "cpus": _num(spec.cpus), "mem": _num(spec.mem),
                "disk": _num(spec.disk), "gpus": spec.gpus, "constraints": list(spec.constraints),
                "env": dict(spec.env), "labels": _labels(spec.labels)})
    return out


def _mapping_json(m: PortMapping, with_host_default: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"containerPort": m.container_port}
    if m.host_port is not None:
        out["hostPort"] = m.host_port
    elif with_host_default:
        out["hostPort"] = 0
    out["servicePort"] = m.service_port
    out["protocol"] = m.protocol
    if m.name is not None:
        out["name"] = m.name
    out["labels"] = dict(m.labels)
    return out


def _port_def_json(d: PortDefinition) -> dict[str, Any]:
    out: dict[str, Any] = {"port": d.port, "protocol": d.protocol}
    if d.name is not None:
        out["name"] = d.name
    out["labels"] = dict(d.labels)
    return out


def _tail(spec: AppSpec) -> dict[str, Any]:
    return {
        "backoffSeconds": _num(spec.backoff_seconds), "backoffFactor": _num(spec.backoff_factor),
        "maxLaunchDelaySeconds": _num(spec.max_launch_delay_seconds),
        "upgradeStrategy": {"minimumHealthCapacity": _num(spec.minimum_health_capacity),
                            "maximumOverCapacity": _num(spec.maximum_over_capacity)},
        "unreachableStrategy": dict(spec.unreachable_strategy) if spec.unreachable_strategy else "disabled",
        "version": spec.version,
        "versionInfo": {"lastScalingAt": spec.last_scaling_at, "lastConfigChangeAt": spec.last_config_change_at},
        **({"readinessChecks": [dict(rc) for rc in spec.readiness_checks]} if spec.readiness_checks else {}),
        **({"taskKillGracePeriodSeconds": _num(spec.task_kill_grace_period_seconds)}
           if spec.task_kill_grace_period_seconds is not None else {}),
    }


def _render_new(spec: AppSpec, cfg: SimConfig) -> dict[str, Any]:
    out = _head(spec)
    docker: dict[str, Any] = {"image": spec.image, "forcePullImage": spec.force_pull_image}
    if spec.container_type == "DOCKER":  # privileged and parameters are the Docker containerizer's
        docker.update({"privileged": spec.privileged, "parameters": [dict(p) for p in spec.parameters]})
    container: dict[str, Any] = {"type": spec.container_type, "docker": docker}
    if spec.network != "host":
        container["portMappings"] = [_mapping_json(m, False) for m in spec.port_mappings]
    container["volumes"] = [dict(v) for v in spec.volumes]
    out["container"] = container
    if spec.network == "host":
        out["networks"] = [{"mode": "host"}]
        out["portDefinitions"] = [_port_def_json(d) for d in spec.port_definitions]
    elif spec.network == "bridge":
        out["networks"] = [{"mode": "container/bridge"}]
    else:
        out["networks"] = [{"mode": "container", "name": spec.network_name}]
    out["healthChecks"] = [h.to_json() for h in spec.health_checks]
    out["requirePorts"] = spec.require_ports
    out.update(_tail(spec))
    if cfg.role_field:
        out["role"] = "*"
    return out


def _render_14(spec: AppSpec) -> dict[str, Any]:
    out = _head(spec)
    docker_net = {"host": "HOST", "bridge": "BRIDGE"}.get(spec.network, "USER")
    if spec.container_type == "MESOS":  # no Docker network nor port mappings: IP-per-task is ipAddress
        docker: dict[str, Any] = {"image": spec.image, "forcePullImage": spec.force_pull_image}
    else:
        docker = {"image": spec.image, "network": docker_net}
        if spec.network != "host":
            docker["portMappings"] = [_mapping_json(m, True) for m in spec.port_mappings]
        docker.update({"privileged": spec.privileged, "parameters": [dict(p) for p in spec.parameters],
                       "forcePullImage": spec.force_pull_image})
    out["container"] = {"type": spec.container_type, "volumes": [dict(v) for v in spec.volumes], "docker": docker}
    if spec.container_networking:
        out["ipAddress"] = {"groups": [], "labels": {}, "discovery": {"ports": [
            {"number": m.container_port, "name": m.name or f"port{i}", "protocol": m.protocol}
            for i, m in enumerate(spec.port_mappings)]}, "networkName": spec.network_name}
    else:
        out["ipAddress"] = None
        sports = spec.service_ports()
        out["ports"] = sports
        if spec.network == "host":
            out["portDefinitions"] = [_port_def_json(d) for d in spec.port_definitions]
        else:
            out["portDefinitions"] = [
                {"port": m.service_port, "protocol": m.protocol, **({"name": m.name} if m.name else {}),
                 "labels": dict(m.labels)} for m in spec.port_mappings]
        out["requirePorts"] = spec.require_ports
    out["healthChecks"] = [h.to_json() for h in spec.health_checks]
    out.update(_tail(spec))
    return out
