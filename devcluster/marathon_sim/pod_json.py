"""Pod definitions (`/v2/pods`): validation with Marathon's answers, and the normalized pod it echoes.

Reference: shared/reference/marathon-pods-api.md §1.2 (the normalized body), §2 (the two 422
renderings: RAML/JSON failures as `Invalid JSON`, validator failures as `Object is not valid`) and
marathon-ucr-pods.md §2.1 (fields). The simulator runs what it can: containers with a Docker image
(UCR pulls Docker images itself), `host` or `container` networks; an endpoint without `hostPort` in
`container` mode keeps none (PodNormalization), elsewhere it gets `hostPort: 0` (allocate).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from devcluster.marathon_sim.config import SimConfig

# RAML strings.PathId (types/stringTypes.raml): what fails it is "Invalid JSON" / error.pattern
PATH_ID_RE = re.compile(r"^(\/?((\.\.)|(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*"
                        r"([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9]))?($|\/))+$")
RESERVED = ("restart", "tasks", "versions", ".", "..")
EXECUTOR_RESOURCES = {"cpus": 0.1, "mem": 32, "disk": 10}  # RAML ExecutorResources defaults
DEFAULT_UNREACHABLE = {"inactiveAfterSeconds": 300, "expungeAfterSeconds": 600}


class PodInvalid(Exception):
    """A 422: `message` is "Invalid JSON" (RAML/JSON) or "Object is not valid" (validator)."""

    def __init__(self, message: str, details: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        return {"message": self.message, "details": self.details}


@dataclass
class Endpoint:
    name: str
    container_port: int | None
    host_port: int | None  # None: no host port (container mode without hostPort); 0: allocate
    protocol: list[str] = field(default_factory=lambda: ["tcp"])
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class PodContainer:
    name: str
    image: str
    resources: dict[str, float]
    endpoints: list[Endpoint]
    environment: dict[str, str]
    labels: dict[str, str]
    command: list[str] | None  # exec.command: shell -> ["sh", "-c", shell], argv as given
    health_check: dict[str, Any] | None
    raw: dict[str, Any]


@dataclass
class PodSpec:
    id: str
    instances: int
    containers: list[PodContainer]
    networks: list[dict[str, Any]]  # normalized: [{"mode": "host"}] or [{"name", "mode": "container", "labels"}]
    environment: dict[str, str]
    labels: dict[str, str]
    unreachable: dict[str, int] | None  # None: "disabled"
    raw: dict[str, Any]
    version: str = ""

    @property
    def host_networking(self) -> bool:
        return bool(self.networks[0]["mode"] == "host")

    def endpoints(self) -> list[tuple[PodContainer, Endpoint]]:
        return [(c, e) for c in self.containers for e in c.endpoints]


class _Details:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, path: str, msg: str) -> None:
        for d in self.items:
            if d["path"] == path:
                d["errors"].append(msg)
                return
        self.items.append({"path": path, "errors": [msg]})


def _check_json(body: Any) -> None:
    """The RAML reader's failures (thrown before any validator): `Invalid JSON`."""
    if not isinstance(body, dict):
        raise PodInvalid("Invalid JSON", [{"path": "", "errors": ["error.expected.jsobject"]}])
    bad = _Details()
    pid = body.get("id")
    if pid is None:
        bad.add("/id", "error.path.missing")
    elif not isinstance(pid, str):
        bad.add("/id", "error.expected.jsstring")
    elif not pid or not PATH_ID_RE.match(pid):
        bad.add("/id", "error.pattern")
    containers = body.get("containers")
    if containers is None:
        bad.add("/containers", "error.path.missing")
    elif not isinstance(containers, list):
        bad.add("/containers", "error.expected.jsarray")
    elif not containers:
        bad.add("/containers", "error.minLength")
    else:
        for i, c in enumerate(containers):
            if not isinstance(c, dict):
                bad.add(f"/containers({i})", "error.expected.jsobject")
            elif not isinstance(c.get("name"), str):
                bad.add(f"/containers({i})/name", "error.path.missing")
            elif not isinstance(c.get("resources"), dict):
                bad.add(f"/containers({i})/resources", "error.path.missing")
    if bad.items:
        raise PodInvalid("Invalid JSON", bad.items)


def _endpoint(raw: Any, path: str, container_mode: bool, host_mode: bool, errors: _Details) -> Endpoint | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        errors.add(path + "/name", "error.path.missing")
        return None
    cport, hport = raw.get("containerPort"), raw.get("hostPort")
    if container_mode and cport is None:
        errors.add(path + "/containerPort", "is required when using container-mode networking")
    if host_mode and cport is not None:
        errors.add(path + "/containerPort", "is not allowed when using host-mode networking")
    if hport is None and not container_mode:
        hport = 0  # PodNormalization: hostPort 0 unless some network is container mode
    proto = raw.get("protocol", ["tcp"])
    return Endpoint(name=raw["name"], container_port=cport, host_port=hport,
                    protocol=list(proto) if isinstance(proto, list) else ["tcp"],
                    labels=dict(raw.get("labels") or {}))


def _command(exec_: Any) -> list[str] | None:
    cmd = (exec_ or {}).get("command") if isinstance(exec_, dict) else None
    if not isinstance(cmd, dict):
        return None
    if isinstance(cmd.get("shell"), str):
        return ["sh", "-c", cmd["shell"]]
    if isinstance(cmd.get("argv"), list) and cmd["argv"]:
        return [str(a) for a in cmd["argv"]]
    return None


def parse_pod(body: Any, cfg: SimConfig, *, pod_id: str | None = None) -> PodSpec:
    """Validate a POST/PUT body; PodInvalid carries the 422 body."""
    _check_json(body)
    errors = _Details()
    raw_id: str = body["id"]
    if not raw_id.startswith("/"):
        errors.add("/id", "Path needs to be absolute")
    segments = [s for s in raw_id.split("/") if s]
    if not segments:
        errors.add("/id", "Path must contain at least one path element")
    elif segments[-1] in RESERVED:
        errors.add("/id", "must not end with any of the following reserved keywords: " + ", ".join(RESERVED))
    pid = "/" + "/".join(segments)
    if pod_id is not None and pid != pod_id:
        errors.add("/id", "The 'id' field in the body does not match the id in the URL")

    networks = body.get("networks") or [{"mode": "host"}]
    modes = [n.get("mode", "container") if isinstance(n, dict) else "?" for n in networks]
    container_mode = "container" in modes
    host_mode = "host" in modes
    if (host_mode or "container/bridge" in modes) and len(networks) > 1:
        errors.add("/networks", "May specify a single host network, single bridge network, or else 1-to-n "
                                "container networks")
    normalized: list[dict[str, Any]] = []
    for n, mode in zip(networks, modes, strict=True):
        if mode == "host":
            if isinstance(n, dict) and (n.get("name") or n.get("labels")):
                errors.add("/networks", "Host networks may not have names or labels")
            normalized.append({"mode": "host"})
        elif mode == "container":
            name = n.get("name") or cfg.default_network_name
            if not name:
                errors.add("/networks", "Network name must be specified when container network is selected.")
            normalized.append({"name": name, "mode": "container", "labels": dict(n.get("labels") or {})})
        else:
            errors.add("/networks", "the simulator runs pods on host or container networks only")
    names = [n.get("name") for n in normalized if n.get("name")]
    if len(names) != len(set(names)):
        errors.add("/networks", "Duplicate networks are not allowed")

    containers: list[PodContainer] = []
    for i, c in enumerate(body["containers"]):
        p = f"/containers({i})"
        image = c.get("image")
        if not (isinstance(image, dict) and image.get("kind", "DOCKER") == "DOCKER" and image.get("id")):
            errors.add(p + "/image", "the simulator runs containers with a Docker image only (image.kind DOCKER)")
        endpoints = [e for j, raw in enumerate(c.get("endpoints") or [])
                     if (e := _endpoint(raw, f"{p}/endpoints({j})", container_mode, host_mode, errors))]
        res = c["resources"]
        resources = {"cpus": res.get("cpus", 1.0), "mem": res.get("mem", 128.0), "disk": res.get("disk", 0.0),
                     "gpus": res.get("gpus", 0)}
        hc = c.get("healthCheck")
        if isinstance(hc, dict) and sum(k in hc for k in ("http", "tcp", "exec")) > 1:
            errors.add(p + "/healthCheck", "Only one of http, tcp, or command may be specified")
        if isinstance(hc, dict):
            ep_name = (hc.get("http") or hc.get("tcp") or {}).get("endpoint")
            if ep_name is not None and ep_name not in {e.name for e in endpoints}:
                errors.add(p + "/healthCheck", "contained in the container endpoints")
        containers.append(PodContainer(
            name=c["name"], image=(image or {}).get("id", "") if isinstance(image, dict) else "",
            resources=resources, endpoints=endpoints, environment=dict(c.get("environment") or {}),
            labels=dict(c.get("labels") or {}), command=_command(c.get("exec")),
            health_check=hc if isinstance(hc, dict) else None, raw=c))
    cnames = [c.name for c in containers]
    if len(cnames) != len(set(cnames)):
        errors.add("/containers", "container names must be unique")
    eps = [e for c in containers for e in c.endpoints]
    if len({e.name for e in eps}) != len(eps):
        errors.add("/", "endpoint names nust be unique across all containers")  # sic, Marathon's spelling
    cports = [e.container_port for e in eps if e.container_port]
    if len(set(cports)) != len(cports):
        errors.add("/", "container ports must be unique across all containers")
    hports = [e.host_port for e in eps if e.host_port]
    if len(set(hports)) != len(hports):
        errors.add("/", "host ports must be unique across all containers")

    scaling = body.get("scaling") or {}
    instances = scaling.get("instances", 1) if isinstance(scaling, dict) else 1
    if not isinstance(instances, int) or instances < 0:
        errors.add("/scaling/instances", "got a negative or non-integer number of instances")
        instances = 1
    scheduling = body.get("scheduling") or {}
    unreachable_raw = scheduling.get("unreachableStrategy", DEFAULT_UNREACHABLE) \
        if isinstance(scheduling, dict) else DEFAULT_UNREACHABLE
    unreachable = parse_unreachable(unreachable_raw, "/scheduling/unreachableStrategy", errors)
    if errors.items:
        raise PodInvalid("Object is not valid", errors.items)
    return PodSpec(id=pid, instances=instances, containers=containers, networks=normalized,
                   environment=dict(body.get("environment") or {}), labels=dict(body.get("labels") or {}),
                   unreachable=unreachable, raw=copy.deepcopy(body))


def parse_unreachable(raw: Any, path: str, errors: Any) -> dict[str, int] | None:
    """`"disabled"` or `{inactiveAfterSeconds, expungeAfterSeconds}` (defaults 300/600, inactive <=
    expunge), reference marathon-ucr-pods.md §3.1."""
    if raw == "disabled":
        return None
    if not isinstance(raw, dict):
        errors.add(path, "error.expected.jsobject")
        return dict(DEFAULT_UNREACHABLE)
    out = {k: raw.get(k, v) for k, v in DEFAULT_UNREACHABLE.items()}
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in out.values()):
        errors.add(path, "inactiveAfterSeconds and expungeAfterSeconds must be numbers >= 0")
        return dict(DEFAULT_UNREACHABLE)
    if out["inactiveAfterSeconds"] > out["expungeAfterSeconds"]:
        errors.add(path, "inactiveAfterSeconds must be less or equal to expungeAfterSeconds")
    return out


def _endpoint_json(e: Endpoint) -> dict[str, Any]:
    out: dict[str, Any] = {"name": e.name}
    if e.container_port is not None:
        out["containerPort"] = e.container_port
    if e.host_port is not None:
        out["hostPort"] = e.host_port
    out["protocol"] = list(e.protocol)
    out["labels"] = dict(e.labels)
    return out


def render_pod(spec: PodSpec, cfg: SimConfig) -> dict[str, Any]:
    """The normalized pod (PodConversion.toRaml): what POST answers and GET returns."""
    containers = []
    for c in spec.containers:
        out = {k: copy.deepcopy(v) for k, v in c.raw.items() if k not in {"endpoints", "resources"}}
        out["resources"] = dict(c.resources)
        out["endpoints"] = [_endpoint_json(e) for e in c.endpoints]
        out.setdefault("environment", {})
        out.setdefault("labels", {})
        containers.append(out)
    scheduling = spec.raw.get("scheduling")
    raw_sched: dict[str, Any] = scheduling if isinstance(scheduling, dict) else {}
    pod: dict[str, Any] = {
        "id": spec.id, "version": spec.version, "containers": containers,
        "environment": dict(spec.environment), "labels": dict(spec.labels),
        "scaling": {"kind": "fixed", "instances": spec.instances}, "secrets": {},
        "scheduling": {
            "backoff": {"backoff": 1, "backoffFactor": 1.15, "maxLaunchDelay": 300},
            "upgrade": {"minimumHealthCapacity": 1, "maximumOverCapacity": 1},
            "placement": {"constraints": list(raw_sched.get("placement", {}).get("constraints", [])),
                          "acceptedResourceRoles": []},
            "killSelection": "YOUNGEST_FIRST",
            "unreachableStrategy": dict(spec.unreachable) if spec.unreachable is not None else "disabled",
        },
        "volumes": [], "networks": copy.deepcopy(spec.networks), "executorResources": dict(EXECUTOR_RESOURCES),
    }
    if cfg.role_field:
        pod["role"] = "*"
    return pod
