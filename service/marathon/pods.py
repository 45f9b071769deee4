"""Marathon pod status JSON (`GET /v2/pods/::status`, `GET /v2/pods/{id}::status`) -> `App` + `Task`s.

Why a pod becomes an `App` with one `Task` per instance: naming, ownership, the diff and the per-app
step then treat pods exactly as apps (one work key per pod id, one registration per instance and
endpoint), and only this module knows the pod JSON (reference/marathon-ucr-pods.md §2.2,
marathon-pods-api.md §1.6). The mapping:

- the pod's endpoints, across its containers in order, are the port mappings (the second and later
  get the multi-port suffix from their endpoint name); `containerPort` is the registered port,
  `hostPort` absent means no host port on a `container` network and "any" on host networking
  (Marathon's PodNormalization);
- an instance is a `Task`: id = the instance id, host = `agentHostname`, addresses from
  `networks[].addresses` (named, so the operator's `--networks` order applies), host ports from the
  endpoints' `allocatedHostPort` in endpoint order (cut at the first one not allocated yet, so a
  missing one is waited for, never shifted onto another endpoint), state from the containers
  (any `TASK_UNREACHABLE` -> unreachable; a STABLE/DEGRADED instance with a running container ->
  running; TERMINAL -> its containers' terminal state);
- the containers' Mesos health checks (`http`/`tcp` on a named endpoint, `exec`) are health checks on
  that endpoint's port, as `MESOS_HTTP(S)`/`MESOS_TCP`/`COMMAND` app checks; Marathon's verdict
  (`endpoints[].healthy`, else the container's `healthy` condition) feeds the TTL mirrors.

Malformed pods: a pod whose `id` is readable but whose rest is not is reported (its error, by pod id)
and skipped by the caller, which keeps its registrations as they are (never a wrong address); an
answer whose items have no readable id is unusable as a whole (`ValueError`), as for apps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from service.marathon.parse import _MODES_15, _env, _get, _int, _labels, _list, _obj, _short, _where
from service.model import App, HealthCheck, NetworkMode, PortMapping, RunSpecKind, Task, TaskState

_HEALTHY_TRUE = {"true": True, "false": False}


def pod_id_of(obj: Any, path: str) -> str:
    """The canonical id of a pod status item, or `ValueError` when it has none."""
    item = _obj(obj, "", path)
    pod_id: str = _get(item, "id", str, "", f"{path}.id")
    if not pod_id.strip("/"):
        raise ValueError(f"{path}.id: expected a pod id, got {pod_id!r}")
    return "/" + pod_id.strip("/")


def pod_statuses_from_json(obj: Any) -> tuple[list[tuple[App, list[Task]]], dict[str, str]]:
    """`GET /v2/pods/::status` (a JSON array) -> the usable pods, and the malformed ones' errors by id."""
    if not isinstance(obj, list):
        raise ValueError(f"pods status response: expected a list, got {_short(obj)}")
    pods: list[tuple[App, list[Task]]] = []
    malformed: dict[str, str] = {}
    for i, item in enumerate(obj):
        pod_id = pod_id_of(item, f"pods[{i}]")
        try:
            pods.append(pod_status_from_json(item))
        except ValueError as exc:
            malformed[pod_id] = str(exc)
    return pods, malformed


def pod_status_from_json(obj: Any) -> tuple[App, list[Task]]:
    """One `PodStatus` -> the pod as an `App` and its instances as `Task`s (`ValueError` if malformed)."""
    pod_id = pod_id_of(obj, "pod")
    ctx = f"pod {pod_id!r}"
    status = _obj(obj, ctx, "")
    spec = _get(status, "spec", Mapping, ctx, "spec")
    app = _pod_app(pod_id, spec, ctx)
    instances = _list(status, "instances", ctx, "instances")
    return app, [_instance(app, _obj(inst, ctx, f"instances[{i}]"), ctx, f"instances[{i}]")
                 for i, inst in enumerate(instances)]


def _pod_app(pod_id: str, spec: Mapping[str, Any], ctx: str) -> App:
    networks = _list(spec, "networks", ctx, "spec.networks")
    mode = NetworkMode.HOST  # a pod without networks runs on the host's (Marathon's default)
    if networks:
        first = _obj(networks[0], ctx, "spec.networks[0]")
        name = _get(first, "mode", str, ctx, "spec.networks[0].mode", "container")
        if name not in _MODES_15:
            raise ValueError(f"{_where(ctx, 'spec.networks[0].mode')}: unknown network mode {name!r}")
        mode = _MODES_15[name]
    mappings: list[PortMapping] = []
    checks: list[HealthCheck] = []
    containers = _list(spec, "containers", ctx, "spec.containers")
    if not containers:
        raise ValueError(f"{_where(ctx, 'spec.containers')}: a pod has at least one container")
    pending: list[tuple[Mapping[str, Any], str, str]] = []
    for c, raw in enumerate(containers):
        path = f"spec.containers[{c}]"
        container = _obj(raw, ctx, path)
        cname = _get(container, "name", str, ctx, f"{path}.name")
        for e, raw_ep in enumerate(_list(container, "endpoints", ctx, f"{path}.endpoints")):
            ep_path = f"{path}.endpoints[{e}]"
            ep = _obj(raw_ep, ctx, ep_path)
            mappings.append(PortMapping(
                container_port=_int(ep, "containerPort", ctx, f"{ep_path}.containerPort", 0),
                host_port=_int(ep, "hostPort", ctx, f"{ep_path}.hostPort",
                               None if mode is NetworkMode.USER else 0),
                name=_get(ep, "name", str, ctx, f"{ep_path}.name"),
                protocol=_protocol(ep, ctx, ep_path),
                container=cname,
            ))
        hc = _get(container, "healthCheck", Mapping, ctx, f"{path}.healthCheck", None)
        if hc is not None:
            pending.append((hc, cname, f"{path}.healthCheck"))
    for hc, cname, path in pending:  # after every endpoint is known: a check may name any of them
        checks.append(_health_check(hc, cname, mappings, ctx, path))
    return App(
        id=pod_id, version=_get(spec, "version", str, ctx, "spec.version", ""), network_mode=mode,
        port_mappings=tuple(mappings), health_checks=tuple(checks),
        labels=_labels(spec, ctx), env=_env({"env": _get(spec, "environment", Mapping, ctx, "spec.environment", {})},
                                            ctx),
        mesos_containerizer=True, kind=RunSpecKind.POD,
    )


def _protocol(ep: Mapping[str, Any], ctx: str, path: str) -> str:
    protocols = _list(ep, "protocol", ctx, f"{path}.protocol")
    if not protocols:
        return "tcp"
    if not isinstance(protocols[0], str):
        raise ValueError(f"{_where(ctx, f'{path}.protocol[0]')}: expected a string, got {_short(protocols[0])}")
    return protocols[0]


def _health_check(hc: Mapping[str, Any], cname: str, mappings: Sequence[PortMapping], ctx: str,
                  path: str) -> HealthCheck:
    default = HealthCheck()
    common: dict[str, Any] = {
        "container": cname,
        "interval_seconds": _int(hc, "intervalSeconds", ctx, f"{path}.intervalSeconds", default.interval_seconds),
        "timeout_seconds": _int(hc, "timeoutSeconds", ctx, f"{path}.timeoutSeconds", default.timeout_seconds),
        "grace_period_seconds": _int(hc, "gracePeriodSeconds", ctx, f"{path}.gracePeriodSeconds",
                                     default.grace_period_seconds),
        "max_consecutive_failures": _int(hc, "maxConsecutiveFailures", ctx, f"{path}.maxConsecutiveFailures",
                                         default.max_consecutive_failures),
    }
    for kind in ("http", "tcp"):
        probe = _get(hc, kind, Mapping, ctx, f"{path}.{kind}", None)
        if probe is None:
            continue
        endpoint = _get(probe, "endpoint", str, ctx, f"{path}.{kind}.endpoint")
        index = next((i for i, m in enumerate(mappings) if m.name == endpoint), None)
        if index is None:
            raise ValueError(f"{_where(ctx, f'{path}.{kind}.endpoint')}: no endpoint named {endpoint!r}")
        if kind == "tcp":
            return HealthCheck(protocol="MESOS_TCP", port_index=index, **common)
        scheme = _get(probe, "scheme", str, ctx, f"{path}.http.scheme", "HTTP").upper()
        return HealthCheck(protocol="MESOS_HTTPS" if scheme == "HTTPS" else "MESOS_HTTP",
                           path=_get(probe, "path", str, ctx, f"{path}.http.path", "/"), port_index=index, **common)
    command = _get(hc, "exec", Mapping, ctx, f"{path}.exec", None)
    if command is None:
        raise ValueError(f"{_where(ctx, path)}: expected one of http, tcp or exec")
    inner = _get(command, "command", Mapping, ctx, f"{path}.exec.command", {})
    shell = _get(inner, "shell", str, ctx, f"{path}.exec.command.shell", None)
    return HealthCheck(protocol="COMMAND", command=shell, **common)


def _instance(app: App, inst: Mapping[str, Any], ctx: str, path: str) -> Task:
    instance_id = _get(inst, "id", str, ctx, f"{path}.id")
    statuses: dict[str, Mapping[str, Any]] = {}
    for c, raw in enumerate(_list(inst, "containers", ctx, f"{path}.containers")):
        container = _obj(raw, ctx, f"{path}.containers[{c}]")
        statuses[_get(container, "name", str, ctx, f"{path}.containers[{c}].name")] = container
    named: list[tuple[str, str]] = []
    for n, raw in enumerate(_list(inst, "networks", ctx, f"{path}.networks")):
        network = _obj(raw, ctx, f"{path}.networks[{n}]")
        name = _get(network, "name", str, ctx, f"{path}.networks[{n}].name", "")
        for a, addr in enumerate(_list(network, "addresses", ctx, f"{path}.networks[{n}].addresses")):
            if not isinstance(addr, str):
                raise ValueError(f"{_where(ctx, f'{path}.networks[{n}].addresses[{a}]')}: expected a string, "
                                 f"got {_short(addr)}")
            named.append((name, addr))
    return Task(
        id=instance_id, app_id=app.id, host=_get(inst, "agentHostname", str, ctx, f"{path}.agentHostname", ""),
        state=_state(inst, statuses, ctx, path), ports=_host_ports(app, statuses, ctx, path),
        ip_addresses=tuple(addr for _, addr in named), app_version=app.version,
        health=_health(app, statuses, ctx, path), named_ips=tuple(named),
    )


def _state(inst: Mapping[str, Any], containers: Mapping[str, Mapping[str, Any]], ctx: str, path: str) -> str:
    status = _get(inst, "status", str, ctx, f"{path}.status")
    states = [_get(c, "status", str, ctx, f"{path}.containers[{name}].status", "TASK_STAGING")
              for name, c in containers.items()]
    message = _get(inst, "message", str, ctx, f"{path}.message", "")
    if TaskState.UNREACHABLE in states or "unreachable" in message:
        return TaskState.UNREACHABLE
    if status in ("STABLE", "DEGRADED") and TaskState.RUNNING in states:
        return TaskState.RUNNING
    if status == "TERMINAL":
        return next((s for s in states if s != TaskState.RUNNING), TaskState.KILLED)
    return TaskState.STAGING


def _endpoint_status(containers: Mapping[str, Mapping[str, Any]], mapping: PortMapping, ctx: str,
                     path: str) -> Mapping[str, Any] | None:
    container = containers.get(mapping.container or "")
    if container is None:
        return None
    for e, raw in enumerate(_list(container, "endpoints", ctx, f"{path}.containers[{mapping.container}].endpoints")):
        ep = _obj(raw, ctx, f"{path}.containers[{mapping.container}].endpoints[{e}]")
        if ep.get("name") == mapping.name:
            return ep
    return None


def _host_ports(app: App, containers: Mapping[str, Mapping[str, Any]], ctx: str, path: str) -> tuple[int, ...]:
    ports: list[int] = []
    for mapping in app.port_mappings:
        if mapping.host_port is None:
            continue
        ep = _endpoint_status(containers, mapping, ctx, path)
        port = None if ep is None else _int(ep, "allocatedHostPort", ctx, f"{path}.endpoints.allocatedHostPort", None)
        if port is None:
            break  # not allocated (yet): fewer ports than mappings, which desired waits for
        ports.append(port)
    return tuple(ports)


def _health(app: App, containers: Mapping[str, Mapping[str, Any]], ctx: str, path: str) -> tuple[bool | None, ...]:
    """Marathon's verdict per health check: the checked endpoint's `healthy`, else the container's
    `healthy` condition (`"true"`/`"false"`), else unknown."""
    out: list[bool | None] = []
    for hc in app.health_checks:
        mapping = None if hc.protocol == "COMMAND" else app.port_mappings[hc.port_index]
        cname = hc.container
        container = containers.get(cname or "")
        verdict: bool | None = None
        if mapping is not None and container is not None:
            ep = _endpoint_status(containers, mapping, ctx, path)
            healthy = None if ep is None else ep.get("healthy")
            verdict = healthy if isinstance(healthy, bool) else None
        if verdict is None and container is not None:
            for cond in _list(container, "conditions", ctx, f"{path}.containers[{cname}].conditions"):
                if isinstance(cond, Mapping) and cond.get("name") == "healthy":
                    verdict = _HEALTHY_TRUE.get(str(cond.get("value")).lower())
        out.append(verdict)
    return tuple(out)
