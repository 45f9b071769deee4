"""Marathon REST and event JSON -> model types, for every shape Marathon 1.4-1.10 produces.

Why one module: the app JSON changed shape in 1.5 (the "networking API overhaul",
docs/architecture.md §6.1) and the task JSON differs between REST and `status_update_event`.
Everything after this module sees one `App` and one `Task`, whatever the version.

Parsing rules:
- Unknown fields are ignored (Marathon adds fields in every release).
- Missing optional fields take Marathon's defaults (health checks: interval 60 s, timeout 20 s,
  grace 300 s, 3 failures).
- A field of the wrong type raises `ValueError` naming the field path (e.g.
  `app '/web': healthChecks[0].portIndex: expected an integer, got 'x'`), because silently
  guessing would register wrong addresses.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from service.marathon.task_ids import parse_task_id
from service.model import App, HealthCheck, NetworkMode, PortMapping, ReadinessCheck, Task

_MISSING: Any = object()

# 1.5+ `networks[].mode` -> model network mode
_MODES_15 = {"host": NetworkMode.HOST, "container/bridge": NetworkMode.BRIDGE, "container": NetworkMode.USER}
# 1.4 `container.docker.network`; NONE has no ports to publish, so it behaves like HOST for us
# (port definitions, if any, are host ports).
_MODES_14 = {
    "BRIDGE": NetworkMode.BRIDGE,
    "HOST": NetworkMode.HOST,
    "USER": NetworkMode.USER,
    "NONE": NetworkMode.HOST,
}


# --- small typed getters ------------------------------------------------------------------------


def _where(ctx: str, path: str) -> str:
    return f"{ctx}: {path}" if ctx else path


def _get(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], ctx: str, path: str,
         default: Any = _MISSING) -> Any:
    """obj[key] checked against `kind`; a missing key or JSON null gives `default` (or raises)."""
    value = obj.get(key)
    if value is None:
        if default is _MISSING:
            raise ValueError(f"{_where(ctx, path)}: field missing")
        return default
    # bool is an int subclass in Python; Marathon never means a boolean where it wants a number.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise ValueError(f"{_where(ctx, path)}: expected {_kind_name(kind)}, got {value!r}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "a boolean", float: "a number",
             Mapping: "an object", list: "a list", dict: "an object"}
    return " or ".join(names.get(k, k.__name__) for k in _as_tuple(kind))


def _int(obj: Mapping[str, Any], key: str, ctx: str, path: str, default: Any = _MISSING) -> Any:
    return _get(obj, key, int, ctx, path, default)


def _obj(value: Any, ctx: str, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{_where(ctx, path)}: expected an object, got {_short(value)}")
    return value


def obj_at(value: Any, path: str) -> Mapping[str, Any]:
    """`value` as an object, else the parser's ValueError naming `path` (for `apps_json`)."""
    return _obj(value, "", path)


def _list(obj: Mapping[str, Any], key: str, ctx: str, path: str) -> Sequence[Any]:
    value: list[Any] = _get(obj, key, list, ctx, path, [])
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- apps ---------------------------------------------------------------------------------------


def app_from_json(obj: Mapping[str, Any]) -> App:
    """An app definition (`GET /v2/apps[/{id}]` item or `api_post_event.appDefinition`) -> `App`.

    Accepts the 1.4 shape (`container.docker.network`, `container.docker.portMappings`,
    `ipAddress`, `ports`/`portDefinitions`) and the 1.5+ shape (`networks`,
    `container.portMappings`, `portDefinitions`).
    """
    app = _obj(obj, "", "app")
    app_id = _get(app, "id", str, "app", "id")
    if not app_id.strip("/"):
        raise ValueError(f"app: id: expected an app id, got {app_id!r}")
    app_id = "/" + app_id.strip("/")
    ctx = f"app {app_id!r}"
    mode = _network_mode(app, ctx)
    container, _ = _container(app, ctx)
    # Marathon's default containerizer is Docker once a `container` is given (its `type` default);
    # a command app without one runs under the Mesos containerizer.
    kind = _get(container, "type", str, ctx, "container.type", "DOCKER" if container else "MESOS")
    return App(
        id=app_id,
        version=_get(app, "version", str, ctx, "version", ""),
        network_mode=mode,
        port_mappings=_port_mappings(app, mode, ctx),
        health_checks=tuple(
            _health_check(_obj(hc, ctx, f"healthChecks[{i}]"), ctx, f"healthChecks[{i}]")
            for i, hc in enumerate(_list(app, "healthChecks", ctx, "healthChecks"))
        ),
        labels=_labels(app, ctx),
        env=_env(app, ctx),
        mesos_containerizer=kind.upper() == "MESOS",
        readiness_checks=tuple(
            _readiness_check(_obj(rc, ctx, f"readinessChecks[{i}]"), ctx, f"readinessChecks[{i}]")
            for i, rc in enumerate(_list(app, "readinessChecks", ctx, "readinessChecks"))
        ),
    )


def _readiness_check(rc: Mapping[str, Any], ctx: str, path: str) -> ReadinessCheck:
    default = ReadinessCheck()
    return ReadinessCheck(
        name=_get(rc, "name", str, ctx, f"{path}.name", default.name),
        protocol=_get(rc, "protocol", str, ctx, f"{path}.protocol", default.protocol).upper(),
        path=_get(rc, "path", str, ctx, f"{path}.path", default.path),
        port_name=_get(rc, "portName", str, ctx, f"{path}.portName", default.port_name),
        interval_seconds=_int(rc, "intervalSeconds", ctx, f"{path}.intervalSeconds", default.interval_seconds),
        timeout_seconds=_int(rc, "timeoutSeconds", ctx, f"{path}.timeoutSeconds", default.timeout_seconds),
    )


def _container(app: Mapping[str, Any], ctx: str) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    container = _get(app, "container", Mapping, ctx, "container", {})
    docker = _get(container, "docker", Mapping, ctx, "container.docker", {})
    return container, docker


def _network_mode(app: Mapping[str, Any], ctx: str) -> NetworkMode:
    networks = _list(app, "networks", ctx, "networks")
    if networks:  # 1.5+ shape; the Docker containerizer supports one network, so the first decides
        first = _obj(networks[0], ctx, "networks[0]")
        mode = _get(first, "mode", str, ctx, "networks[0].mode", "container")
        if mode not in _MODES_15:
            raise ValueError(f"{_where(ctx, 'networks[0].mode')}: unknown network mode {mode!r}")
        return _MODES_15[mode]
    _, docker = _container(app, ctx)
    network = _get(docker, "network", str, ctx, "container.docker.network", None)
    if network is not None:
        if network.upper() not in _MODES_14:
            raise ValueError(f"{_where(ctx, 'container.docker.network')}: unknown network {network!r}")
        return _MODES_14[network.upper()]
    # 1.4 IP-per-task without a Docker network (e.g. the Mesos containerizer) is a USER network
    if _get(app, "ipAddress", Mapping, ctx, "ipAddress", None) is not None:
        return NetworkMode.USER
    return NetworkMode.HOST  # Marathon's default for both shapes


def _port_mappings(app: Mapping[str, Any], mode: NetworkMode, ctx: str) -> tuple[PortMapping, ...]:
    if mode is NetworkMode.HOST:
        return _host_ports(app, ctx)
    container, docker = _container(app, ctx)
    for holder, path in ((container, "container.portMappings"), (docker, "container.docker.portMappings")):
        if holder.get("portMappings") is not None:
            items = _get(holder, "portMappings", list, ctx, path)
            return tuple(
                _port_mapping(_obj(pm, ctx, f"{path}[{i}]"), mode, ctx, f"{path}[{i}]")
                for i, pm in enumerate(items)
            )
    # 1.4 IP-per-task without port mappings: the discovery ports are the container's ports
    ip_address = _get(app, "ipAddress", Mapping, ctx, "ipAddress", {})
    discovery = _get(ip_address, "discovery", Mapping, ctx, "ipAddress.discovery", {})
    path = "ipAddress.discovery.ports"
    return tuple(
        PortMapping(
            container_port=_int(_obj(p, ctx, f"{path}[{i}]"), "number", ctx, f"{path}[{i}].number"),
            host_port=None,
            name=_get(p, "name", str, ctx, f"{path}[{i}].name", None),
            protocol=_get(p, "protocol", str, ctx, f"{path}[{i}].protocol", "tcp"),
        )
        for i, p in enumerate(_list(discovery, "ports", ctx, path))
    )


def _port_mapping(pm: Mapping[str, Any], mode: NetworkMode, ctx: str, path: str) -> PortMapping:
    # An absent hostPort means "random host port" on BRIDGE but "no host port" on a container
    # network (1.5+ made hostPort optional exactly for that).
    absent_host_port = 0 if mode is NetworkMode.BRIDGE else None
    return PortMapping(
        container_port=_int(pm, "containerPort", ctx, f"{path}.containerPort", 0),
        host_port=_int(pm, "hostPort", ctx, f"{path}.hostPort", absent_host_port),
        name=_get(pm, "name", str, ctx, f"{path}.name", None),
        protocol=_get(pm, "protocol", str, ctx, f"{path}.protocol", "tcp"),
    )


def _host_ports(app: Mapping[str, Any], ctx: str) -> tuple[PortMapping, ...]:
    """HOST networking: the port definitions are the ports (the process listens on the host)."""
    if app.get("portDefinitions") is not None:
        path = "portDefinitions"
        return tuple(
            PortMapping(
                container_port=_int(_obj(pd, ctx, f"{path}[{i}]"), "port", ctx, f"{path}[{i}].port", 0),
                host_port=0,
                name=_get(pd, "name", str, ctx, f"{path}[{i}].name", None),
                protocol=_get(pd, "protocol", str, ctx, f"{path}[{i}].protocol", "tcp"),
            )
            for i, pd in enumerate(_list(app, path, ctx, path))
        )
    ports = _list(app, "ports", ctx, "ports")
    for i, port in enumerate(ports):
        if not isinstance(port, int) or isinstance(port, bool):
            raise ValueError(f"{_where(ctx, f'ports[{i}]')}: expected an integer, got {_short(port)}")
    return tuple(PortMapping(container_port=p, host_port=0) for p in ports)


def _health_check(hc: Mapping[str, Any], ctx: str, path: str) -> HealthCheck:
    default = HealthCheck()
    command = _get(hc, "command", Mapping, ctx, f"{path}.command", None)
    return HealthCheck(
        protocol=_get(hc, "protocol", str, ctx, f"{path}.protocol", default.protocol).upper(),
        path=_get(hc, "path", str, ctx, f"{path}.path", default.path),
        port_index=_int(hc, "portIndex", ctx, f"{path}.portIndex", default.port_index),
        port=_int(hc, "port", ctx, f"{path}.port", None),
        interval_seconds=_int(hc, "intervalSeconds", ctx, f"{path}.intervalSeconds", default.interval_seconds),
        timeout_seconds=_int(hc, "timeoutSeconds", ctx, f"{path}.timeoutSeconds", default.timeout_seconds),
        grace_period_seconds=_int(
            hc, "gracePeriodSeconds", ctx, f"{path}.gracePeriodSeconds", default.grace_period_seconds
        ),
        max_consecutive_failures=_int(
            hc, "maxConsecutiveFailures", ctx, f"{path}.maxConsecutiveFailures", default.max_consecutive_failures
        ),
        command=None if command is None else _get(command, "value", str, ctx, f"{path}.command.value", None),
    )


def _labels(app: Mapping[str, Any], ctx: str) -> dict[str, str]:
    labels = _get(app, "labels", Mapping, ctx, "labels", {})
    for key, value in labels.items():
        if not isinstance(value, str):
            raise ValueError(f"{_where(ctx, f'labels.{key}')}: expected a string, got {_short(value)}")
    return dict(labels)


def _env(app: Mapping[str, Any], ctx: str) -> dict[str, str]:
    """String values only: `{"secret": "..."}` references are resolved by Mesos, not readable here."""
    env = _get(app, "env", Mapping, ctx, "env", {})
    out: dict[str, str] = {}
    for key, value in env.items():
        if isinstance(value, str):
            out[key] = value
        elif not isinstance(value, Mapping):
            raise ValueError(
                f"{_where(ctx, f'env.{key}')}: expected a string or a secret reference, got {_short(value)}"
            )
    return out


# --- tasks --------------------------------------------------------------------------------------


def task_from_json(obj: Mapping[str, Any], *, app_id: str | None = None) -> Task:
    """A REST task (`/v2/apps/{id}/tasks`, `embed=apps.tasks`) or a `status_update_event` -> `Task`.

    REST names the id `id` and the state `state`; the event says `taskId` and `taskStatus`.
    The app id comes from `appId` when present (Marathon's advice, §9), else from `app_id`
    (the enclosing app of an embedded task), else from the task id.
    """
    task = _obj(obj, "", "task")
    key = "taskId" if "taskId" in task and "id" not in task else "id"
    task_id = sys.intern(_get(task, key, str, "task", key))
    ctx = f"task {task_id!r}"
    state_key = "taskStatus" if "taskStatus" in task and "state" not in task else "state"
    resolved_app = _get(task, "appId", str, ctx, "appId", None) or app_id
    if not resolved_app:
        try:
            resolved_app = parse_task_id(task_id).app_id
        except ValueError as exc:
            raise ValueError(f"{_where(ctx, 'appId')}: missing and not derivable ({exc})") from None
    # app id, host, state and version repeat over many tasks: one string each (a resync holds every
    # task at once, and its heap's peak is the idle process's RSS, issue 20)
    return Task(
        id=task_id,
        app_id=sys.intern(resolved_app),
        host=sys.intern(_get(task, "host", str, ctx, "host", "")),
        # Marathon's own default before Mesos has reported anything (§3.1)
        state=sys.intern(_get(task, state_key, str, ctx, state_key, "TASK_STAGING")),
        ports=ports_from_json(task, ctx),
        ip_addresses=ip_addresses_from_json(task, ctx),
        app_version=sys.intern(_get(task, "version", str, ctx, "version", "")),
        health=_health(task, ctx),
    )


def ports_from_json(obj: Mapping[str, Any], ctx: str) -> tuple[int, ...]:
    """The `ports` list (host ports) of a task or event; absent (1.4, inactive task) -> ()."""
    ports = _list(obj, "ports", ctx, "ports")
    for i, port in enumerate(ports):
        if not isinstance(port, int) or isinstance(port, bool):
            raise ValueError(f"{_where(ctx, f'ports[{i}]')}: expected an integer, got {_short(port)}")
    return tuple(ports)


def ip_addresses_from_json(obj: Mapping[str, Any], ctx: str) -> tuple[str, ...]:
    """`ipAddresses: [{ipAddress, protocol}]` -> the addresses; absent (<= 1.3, 1.4 empty) -> ()."""
    out = []
    for i, item in enumerate(_list(obj, "ipAddresses", ctx, "ipAddresses")):
        entry = _obj(item, ctx, f"ipAddresses[{i}]")
        out.append(_get(entry, "ipAddress", str, ctx, f"ipAddresses[{i}].ipAddress"))
    return tuple(out)


def _health(task: Mapping[str, Any], ctx: str) -> tuple[bool | None, ...]:
    out: list[bool | None] = []
    for i, item in enumerate(_list(task, "healthCheckResults", ctx, "healthCheckResults")):
        result = _obj(item, ctx, f"healthCheckResults[{i}]")
        out.append(_get(result, "alive", bool, ctx, f"healthCheckResults[{i}].alive", None))
    return tuple(out)


def app_with_tasks_from_json(obj: Mapping[str, Any]) -> tuple[App, list[Task]]:
    """One app with its embedded `tasks` (`GET /v2/apps/{id}` -> `["app"]`, or a list item)."""
    app = app_from_json(obj)
    tasks = _list(obj, "tasks", f"app {app.id!r}", "tasks")
    return app, [
        task_from_json(_obj(t, f"app {app.id!r}", f"tasks[{i}]"), app_id=app.id) for i, t in enumerate(tasks)
    ]


def apps_from_json(obj: Mapping[str, Any]) -> list[tuple[App, list[Task]]]:
    """`GET /v2/apps?embed=apps.tasks` -> every app with its tasks."""
    body = _obj(obj, "", "apps response")
    if body.get("apps") is None:
        raise ValueError("apps response: apps: field missing")
    return [
        app_with_tasks_from_json(_obj(a, "", f"apps[{i}]"))
        for i, a in enumerate(_get(body, "apps", list, "apps response", "apps"))
    ]
