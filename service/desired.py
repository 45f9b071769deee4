"""Marathon app + task + container -> the Consul registrations the task should have. Pure.

This is the whole product decision in one function, kept free of I/O so every case is a table
row in a unit test. The reconciler compares the result with what the agent holds and writes only
the difference.

Result contract:
- `[]`: the task should have no registrations (it is not TASK_RUNNING: staging, killing or in
  any terminal state); the caller deregisters whatever it holds for the task.
- `Skip(keep=True)`: TASK_UNREACHABLE: whatever is registered stays as it is, through every resync,
  so a comeback to TASK_RUNNING writes nothing (reference/marathon-ucr-pods.md §3.5: the task may
  still serve, and Consul's `serfHealth` already fails a node that is really gone).
- `Skip(retry=False)`: the task should have no registrations for a reason worth counting (the app
  opted out, has no ports, ...); the caller deregisters too.
- `Skip(retry=True)`: the answer is not known yet (container not found, no overlay IP under
  `--address-mode overlay`, host ports not reported yet); the caller keeps what is registered and
  retries later.
- otherwise one `Registration` per port mapping that does not opt out, in port order.

Addresses (docs/architecture.md §2): `Address` = the container's overlay IP and `Port` = the container port,
because that is what is routable across the Weave overlay. Checks go to the task's host and mapped
host port instead, because the Consul agent is usually not on the overlay; a mapping without a host
port has nothing on the host, so its checks use the overlay address. `address-source` in `Meta`
records which address was used.

Where the overlay IP comes from: the Docker container on the task's slave, except for a container
network under the Mesos containerizer (UCR apps, every pod), where no Docker engine knows the
container and Marathon reports the address (`ipAddresses`, pod `networks`). Marathon's addresses
are never used otherwise: for host and container/bridge networking and Docker tasks they are the
agent's or docker0's (reference/marathon-ucr-pods.md §1.1). Either way only an address inside
`--overlay-cidr` counts.

Readiness checks (apps only) become HTTP checks on every registration of the task, so a task that is
not ready is passing on none of its ports.

Apps with HOST networking register host and host port in every address mode: their process
listens on the host, there is no container IP that could ever appear, so "waiting for the overlay
IP" (`overlay` mode) would wait forever.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.model import (
    DEFAULT_NAME_OVERRIDE,
    DEFAULT_OVERLAY_CIDRS,
    NO_OVERLAY_IP,
    OUTSIDE_OVERLAY,
    WEAVE_LOOKUP_FAILED,
    WEAVE_NOT_ATTACHED,
    AddressMode,
    App,
    Cidr,
    ConsulCheck,
    Container,
    HealthCheck,
    HealthCheckMode,
    NameOverride,
    Naming,
    NetworkMode,
    PortMapping,
    Registration,
    RunSpecKind,
    Skip,
    Task,
    TaskState,
    marathon_overlay_address,
)
from service.naming import Identity, service_identity
from service.ownership import check_id as make_check_id
from service.ownership import (
    health_check_index,
    mirror_check_id,
    ownership_meta,
    readiness_check_id,
    service_id,
)

HTTP_SCHEMES = {"HTTP": "http", "MESOS_HTTP": "http", "HTTPS": "https", "MESOS_HTTPS": "https"}
TCP_PROTOCOLS = frozenset({"TCP", "MESOS_TCP"})
COMMAND = "COMMAND"
# A mirrored COMMAND check is refreshed by the reconciler (health events and every resync), so its
# TTL must outlast the time between two refreshes, not just Marathon's own failure window.
TTL_FLOOR_SECONDS = 180
HEALTH_CHECK_MODES = tuple(m.value for m in HealthCheckMode)


@dataclass(frozen=True, slots=True)
class _Addressing:
    """Where a task's services point: `overlay_ip` set -> overlay, else host."""

    overlay_ip: str | None
    fallback: bool = False  # host addressing chosen by --address-mode auto for lack of an IP
    reason: str = NO_OVERLAY_IP  # why there is no overlay IP, when fallback

    @property
    def source(self) -> str:
        return "overlay" if self.overlay_ip else "host"


@dataclass(frozen=True, slots=True)
class RegistrationPolicy:
    """What the operator's options decide about every registration: built once from the
    configuration (`ReconcileSettings.policy`), handed to `desired_registrations` whole. A plain
    string for `health_checks` is checked here, once."""

    naming: Naming = Naming.DNS
    address_mode: AddressMode = AddressMode.AUTO
    networks: tuple[str, ...] = ("weave", "bridge")
    overlay_cidrs: tuple[Cidr, ...] = DEFAULT_OVERLAY_CIDRS  # only addresses inside count as overlay IPs
    name_override: NameOverride = DEFAULT_NAME_OVERRIDE  # --allow-name-override (service.naming)
    health_checks: HealthCheckMode = HealthCheckMode.CONSUL  # which checks Consul runs itself
    ttl_floor_seconds: int = TTL_FLOOR_SECONDS  # a mirrored (TTL) check's TTL, at least
    cluster_id: str | None = None  # Meta `marathon-cluster-id`

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "health_checks", HealthCheckMode(self.health_checks))
        except ValueError:
            raise ValueError(f"health_checks must be one of {', '.join(HEALTH_CHECK_MODES)}, "
                             f"got {self.health_checks!r}") from None

    @property
    def consul_runs(self) -> bool:
        """Consul runs the translated HTTP/TCP checks itself."""
        return self.health_checks is not HealthCheckMode.MARATHON

    @property
    def mirror(self) -> bool:
        """A TTL check mirrors Marathon's verdict."""
        return self.health_checks is not HealthCheckMode.CONSUL


def desired_registrations(app: App, task: Task, container: Container | None,
                          policy: RegistrationPolicy) -> list[Registration] | Skip:
    """What `task` of `app` should have in Consul (see the module docstring for the contract)."""
    if task.state == TaskState.UNREACHABLE:
        return Skip(task.id, "task-unreachable", "TASK_UNREACHABLE: its registrations are kept", keep=True)
    if task.state != TaskState.RUNNING:
        return []
    if not app.port_mappings:
        return Skip(task.id, "no-ports", f"app {app.id} defines no ports")
    identities = [service_identity(app, i, policy.naming, policy.name_override)
                  for i in range(len(app.port_mappings))]
    if all(identity is None for identity in identities):
        return Skip(task.id, "register-false",
                    "every port opted out (consul.register=false, SERVICE_IGNORE or SERVICE_<port>_IGNORE)")
    if not task.host:
        return Skip(task.id, "no-task-host", "Marathon reports no host for the task", retry=True)
    host_ports = task_host_ports(app, task)
    if isinstance(host_ports, Skip):
        return host_ports
    addressing = _addressing(app, task, container, policy.address_mode, policy.networks, policy.overlay_cidrs)
    if isinstance(addressing, Skip):
        return addressing
    registrations = [
        _registration(app, task, i, identity, host_ports, addressing, policy)
        for i, identity in enumerate(identities)
        if identity is not None and (addressing.overlay_ip or host_ports[i] is not None)
    ]
    if registrations:
        return registrations
    # Host addressing, and every remaining port is a container-network port without a host port.
    if addressing.fallback:
        return Skip(task.id, addressing.reason,
                    f"no IP on networks {','.join(policy.networks)} and no port has a host port", retry=True)
    return Skip(task.id, "no-host-port", "host addressing, and no port has a host port")


def task_host_ports(app: App, task: Task) -> list[int | None] | Skip:
    """The task's host port for each port mapping (None: the mapping asks for no host port).

    Marathon's `ports` lists only the host ports that exist, so a container-network mapping
    without `hostPort` takes no slot: mappings `[80 (no host port), 9000 (hostPort 0)]` with
    `ports: [31005]` give `[None, 31005]`.
    """
    wanted = sum(1 for pm in app.port_mappings if pm.host_port is not None)
    if len(task.ports) < wanted:
        return Skip(task.id, "missing-host-port",
                    f"app maps {wanted} host ports, Marathon reports {len(task.ports)} for the task", retry=True)
    reported = iter(task.ports)
    return [next(reported) if pm.host_port is not None else None for pm in app.port_mappings]


def _addressing(
    app: App, task: Task, container: Container | None, mode: AddressMode, networks: tuple[str, ...],
    cidrs: tuple[Cidr, ...],
) -> _Addressing | Skip:
    if app.network_mode is NetworkMode.HOST or mode is AddressMode.HOST:
        return _Addressing(None)
    if app.mesos_containerizer and app.network_mode is NetworkMode.BRIDGE:
        # UCR's mesos-bridge: the address Mesos reports is the bridge's, never routable; nothing else
        # could ever give an overlay address, so (as for HOST) the host's address in every mode
        return _Addressing(None)
    if app.addresses_from_marathon:  # no Docker container to ask (module docstring)
        ip, reason = marathon_overlay_address(task, networks, cidrs)
        if ip:
            return _Addressing(ip)
        if mode is AddressMode.OVERLAY:
            where = "address" + (f" inside --overlay-cidr {','.join(map(str, cidrs))}" if reason == OUTSIDE_OVERLAY
                                 else "")
            return Skip(task.id, reason, f"Marathon reports no container network {where} for the task", retry=True)
        return _Addressing(None, fallback=True, reason=reason)
    if container is None:
        return Skip(task.id, "container-not-found", "no container with this MESOS_TASK_ID on the host",
                    retry=True)
    if not container.running:
        return Skip(task.id, "container-not-running", f"container {container.id[:12]} is not running",
                    retry=True)
    ip, reason = container.overlay_address(networks, cidrs)
    if ip:
        return _Addressing(ip)
    if reason in (WEAVE_NOT_ATTACHED, WEAVE_LOOKUP_FAILED):
        # The Weave proxy attaches the IP after the container starts (reference/weave.md §7): wait for
        # it in every mode rather than register the address we would later have to replace.
        return Skip(task.id, reason, f"container {container.id[:12]} is Weave-proxied and its Weave IP is not "
                    f"{'attached yet' if reason == WEAVE_NOT_ATTACHED else 'readable now'}", retry=True)
    if mode is AddressMode.OVERLAY:
        where = "Weave IP" if container.weave_proxied else f"IP on networks {','.join(networks)}"
        if reason == OUTSIDE_OVERLAY:
            where += f" inside --overlay-cidr {','.join(map(str, cidrs))}"
        return Skip(task.id, reason, f"container {container.id[:12]} has no {where}", retry=True)
    return _Addressing(None, fallback=True, reason=reason)


def _registration(
    app: App,
    task: Task,
    port_index: int,
    identity: Identity,
    host_ports: list[int | None],
    addressing: _Addressing,
    policy: RegistrationPolicy,
) -> Registration:
    mapping = app.port_mappings[port_index]
    host_port = host_ports[port_index]
    sid = service_id(task.id, port_index)
    if addressing.overlay_ip:
        address, port = addressing.overlay_ip, mapping.container_port
    else:
        assert host_port is not None  # filtered by the caller
        address, port = task.host, host_port
    # Checks use the host port when there is one; otherwise only the overlay address exists.
    check_host, check_port = (task.host, host_port) if host_port is not None else (address, port)
    return Registration(
        agent_host=task.host,
        service_id=sid,
        name=identity.name,
        tags=identity.tags,
        address=address,
        port=port,
        meta=ownership_meta(app_id=app.id, task_id=task.id, host=task.host, port_index=port_index,
                            address_source=addressing.source, cluster_id=policy.cluster_id,
                            pod_endpoint=(mapping.container or "", mapping.name or "")
                            if app.kind is RunSpecKind.POD else None),
        checks=(
            *_checks(app, sid, port_index, mapping, host_port, check_host, check_port, policy),
            *_readiness_checks(app, task, sid, host_ports, addressing),
        ),
    )


def _readiness_checks(app: App, task: Task, sid: str, host_ports: list[int | None],
                      addressing: _Addressing) -> list[ConsulCheck]:
    """Each readiness check, on the port its `portName` names: the host port when the mapping has
    one, else the overlay address and container port (as health checks are targeted). A check
    naming no port of the app (Marathon refuses such an app) is left out."""
    checks = []
    for n, rc in enumerate(app.readiness_checks):
        index = next((i for i, pm in enumerate(app.port_mappings) if pm.name == rc.port_name), None)
        if index is None:
            continue
        host_port = host_ports[index]
        if host_port is not None:
            target = _host_port(task.host, host_port)
        elif addressing.overlay_ip:
            target = _host_port(addressing.overlay_ip, app.port_mappings[index].container_port)
        else:
            continue
        scheme = "https" if rc.protocol.upper() == "HTTPS" else "http"
        path = rc.path if rc.path.startswith("/") else "/" + rc.path
        checks.append(ConsulCheck(
            check_id=readiness_check_id(sid, n), name=f"Marathon readiness check {rc.name}",
            http=f"{scheme}://{target}{path}", interval=_duration(rc.interval_seconds),
            timeout=_duration(rc.timeout_seconds), tls_skip_verify=scheme == "https"))
    return checks


def _checks(
    app: App,
    sid: str,
    port_index: int,
    mapping: PortMapping,
    host_port: int | None,
    check_host: str,
    check_port: int,
    policy: RegistrationPolicy,
) -> list[ConsulCheck]:
    checks = []
    for hc_index, hc in enumerate(app.health_checks):
        protocol = hc.protocol.upper()
        check_id = make_check_id(sid, hc_index)
        name = f"Marathon {protocol} health check {hc_index + 1}"
        if protocol == COMMAND:
            # Not tied to a port: the task is healthy or not, so every port's service mirrors it.
            checks.append(_ttl_check(hc, hc_index, check_id, name, policy.ttl_floor_seconds))
        elif (protocol in HTTP_SCHEMES or protocol in TCP_PROTOCOLS) and _targets(
            hc, port_index, mapping, host_port
        ):
            if policy.consul_runs:
                checks.append(_network_check(hc, protocol, check_id, name, check_host, check_port))
            if policy.mirror:
                # its own id (still ending in the 1-based index), so it can sit beside the HTTP/TCP check
                checks.append(_ttl_check(hc, hc_index, mirror_check_id(sid, hc_index),
                                         f"{name} (Marathon's result)", policy.ttl_floor_seconds))
    return checks


def _targets(hc: HealthCheck, port_index: int, mapping: PortMapping, host_port: int | None) -> bool:
    """Does this Marathon check probe this port mapping? A fixed `port` wins over `portIndex`."""
    if hc.port is not None:
        return hc.port in {mapping.container_port, host_port, mapping.host_port or None} - {None}
    return hc.port_index == port_index


def _network_check(
    hc: HealthCheck, protocol: str, check_id: str, name: str, host: str, port: int
) -> ConsulCheck:
    target = _host_port(host, port)
    interval, timeout = _duration(hc.interval_seconds), _duration(hc.timeout_seconds)
    if protocol in TCP_PROTOCOLS:
        return ConsulCheck(check_id=check_id, name=name, tcp=target, interval=interval, timeout=timeout)
    scheme = HTTP_SCHEMES[protocol]
    path = hc.path if hc.path.startswith("/") else "/" + hc.path
    return ConsulCheck(
        check_id=check_id,
        name=name,
        http=f"{scheme}://{target}{path}",
        interval=interval,
        timeout=timeout,
        # Marathon does not verify certificates either, and tasks mostly use self-signed ones.
        tls_skip_verify=scheme == "https",
    )


def _ttl_check(hc: HealthCheck, hc_index: int, check_id: str, name: str, ttl_floor_seconds: int) -> ConsulCheck:
    """A TTL check mirroring Marathon's verdict: for COMMAND checks (Consul cannot run a command
    inside the container) and, with `health_checks` marathon/both, for HTTP/TCP checks too.

    The reconciler sets it passing/critical from the task's `healthCheckResults[hc_index]` (and
    `instance_health_changed_event`s); see `ttl_check_statuses`. The TTL covers Marathon's own
    failure window (interval x (maxConsecutiveFailures + 1)) and at least `ttl_floor_seconds`, so
    that it only expires when the registrar stops refreshing it, e.g. because it is down.
    """
    window = max(hc.interval_seconds, 1) * (max(hc.max_consecutive_failures, 0) + 1)
    command = f" ({hc.command})" if hc.command else ""
    return ConsulCheck(
        check_id=check_id,
        name=name,
        ttl=_duration(max(window, ttl_floor_seconds)),
        notes=f"Mirrors Marathon's {hc.protocol.upper()} health check {hc_index + 1}{command}; "
        "set by marathon-consul-registrar from Marathon's health result",
    )


def ttl_check_statuses(registration: Registration, task: Task) -> list[tuple[str, str]]:
    """`(check_id, "passing" | "critical")` for each mirrored TTL check whose Marathon result is
    known (`task.health[hc_index]`); unknown results are left out, so the check keeps its state
    (critical when new, which hides the task until Marathon calls it healthy)."""
    statuses = []
    for check in registration.checks:
        if check.ttl is None:
            continue
        hc_index = health_check_index(check.check_id)
        alive = task.health[hc_index] if hc_index < len(task.health) else None
        if alive is not None:
            statuses.append((check.check_id, "passing" if alive else "critical"))
    return statuses


def _duration(seconds: int) -> str:
    """Go duration string; Consul rejects a zero interval, so at least 1s."""
    return f"{max(seconds, 1)}s"


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
