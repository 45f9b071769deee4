"""The registrar's vocabulary: immutable values that cross module boundaries.

Marathon JSON, Docker JSON and Consul JSON are parsed into these at the edges, so the pure core
(`naming`, `desired`) and the reconciler never touch raw payloads of three systems with three
versions' worth of shapes. Everything here is hashable and comparable, which is what makes
"desired == actual, so write nothing" a plain equality test. The Consul side of it (a
registration, its checks, and the rules of "does a held registration match ours") is
`service.registration`, re-exported here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

# what we write into Consul and how a held registration is compared: many importers take them from here
from service.registration import ConsulCheck as ConsulCheck
from service.registration import OwnedService as OwnedService
from service.registration import Registration as Registration

Cidr = ipaddress.IPv4Network | ipaddress.IPv6Network
# Weave's default IP allocation range (`--ipalloc-range`, reference/weave.md §2.2 routes): only an address
# inside `--overlay-cidr` counts as an overlay address (docs/architecture.md §6.2).
DEFAULT_OVERLAY_CIDRS: tuple[Cidr, ...] = (ipaddress.ip_network("10.32.0.0/12"),)
# Why a container has no overlay address (bounded metric label values, see `Container.overlay_address`)
NO_OVERLAY_IP = "no-overlay-ip"
OUTSIDE_OVERLAY = "address-outside-overlay"
WEAVE_NOT_ATTACHED = "weave-ip-not-attached"
WEAVE_LOOKUP_FAILED = "weave-lookup-failed"


def in_overlay(ip: str, cidrs: tuple[Cidr, ...]) -> bool:
    """Is `ip` inside one of `cidrs`? (False for anything that is not an IP address.)

    Asked twice per registration (the lookup's judgement, the address choice) for addresses that
    do not change: parsing the address each time was ~3 us of a burst's ~500 per registration, so
    verdicts are kept per address for the `cidrs` last asked about (bounded: forgotten wholesale
    past `_VERDICTS_MAX`, and whenever another `cidrs` is asked about)."""
    global _verdicts_for, _verdicts
    if not isinstance(ip, str):  # what an engine or Marathon sent in its place: no verdict kept
        return _in_overlay(ip, cidrs)
    if cidrs is not _verdicts_for:
        _verdicts_for, _verdicts = cidrs, {}
    verdict = _verdicts.get(ip)
    if verdict is None:
        verdict = _in_overlay(ip, cidrs)
        if len(_verdicts) >= _VERDICTS_MAX:
            _verdicts = {}
        _verdicts[ip] = verdict
    return verdict


def _in_overlay(ip: str, cidrs: tuple[Cidr, ...]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in net for net in cidrs)


_VERDICTS_MAX = 16384  # ~1 MB at most; a resync of more addresses only recomputes
_verdicts_for: tuple[Cidr, ...] | None = None
_verdicts: dict[str, bool] = {}


class AddressMode(StrEnum):
    AUTO = "auto"
    OVERLAY = "overlay"
    HOST = "host"


class Naming(StrEnum):
    DNS = "dns"
    FLAT = "flat"


class NameOverride(StrEnum):
    """Which `consul.name` / `SERVICE_NAME` / `SERVICE_<port>_NAME` values an app may claim
    (`--allow-name-override`): on a shared cluster one team's app must not take another's name."""

    GROUP = "group"  # only names inside the app's own top-level group (service.naming.within_group)
    ANY = "any"  # every override is honoured (registrator's behaviour)
    NONE = "none"  # overrides are ignored: every app registers under its derived name


# The operator's default for --allow-name-override (config, `names`, the reconciler's settings); the
# pure naming functions default to ANY so that a library caller gets registrator's behaviour.
DEFAULT_NAME_OVERRIDE = NameOverride.GROUP


class HealthCheckMode(StrEnum):
    """Who runs HTTP/TCP checks: Consul itself (docs/architecture.md §2), a TTL check mirroring Marathon's
    verdict (for agents that cannot reach the host ports), or both. Validated once, in config."""

    CONSUL = "consul"
    MARATHON = "marathon"
    BOTH = "both"


class TaskState(StrEnum):
    """Mesos task states as Marathon reports them. `Task.state` stays a `str`:
    a newer Marathon may report a state this list lacks, and that must not fail a parse; every
    comparison in the registrar is against these members."""

    STAGING = "TASK_STAGING"
    STARTING = "TASK_STARTING"
    RUNNING = "TASK_RUNNING"
    KILLING = "TASK_KILLING"
    FINISHED = "TASK_FINISHED"
    FAILED = "TASK_FAILED"
    KILLED = "TASK_KILLED"
    ERROR = "TASK_ERROR"
    LOST = "TASK_LOST"
    DROPPED = "TASK_DROPPED"
    UNREACHABLE = "TASK_UNREACHABLE"
    GONE = "TASK_GONE"
    GONE_BY_OPERATOR = "TASK_GONE_BY_OPERATOR"
    UNKNOWN = "TASK_UNKNOWN"


class NetworkMode(StrEnum):
    BRIDGE = "BRIDGE"
    HOST = "HOST"
    USER = "USER"  # 1.4 USER / 1.5+ `container` networks


@dataclass(frozen=True, slots=True)
class PortMapping:
    """One port of an app: `container_port` is what the service listens on inside its container
    (the overlay port); `host_port` is the port Marathon asked for on the host (0 = any, None = no
    host port at all, e.g. a USER-network mapping without hostPort). The task's actual host port
    comes from `Task.ports`, by index."""

    container_port: int
    host_port: int | None = 0
    name: str | None = None
    protocol: str = "tcp"
    container: str | None = None  # a pod endpoint's container (None for an app's port)


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """A Marathon app health check, normalised across versions (Marathon's defaults)."""

    protocol: str = "HTTP"  # HTTP HTTPS TCP COMMAND MESOS_HTTP MESOS_HTTPS MESOS_TCP
    path: str = "/"
    port_index: int = 0
    port: int | None = None  # a fixed port wins over port_index
    interval_seconds: int = 60
    timeout_seconds: int = 20
    grace_period_seconds: int = 300
    max_consecutive_failures: int = 3
    command: str | None = None
    container: str | None = None  # a pod container's check (None for an app's)


@dataclass(frozen=True, slots=True)
class ReadinessCheck:
    """A Marathon app readiness check (`readinessChecks[]`, Marathon's defaults). Marathon runs it
    only during deployments and reports no result outside them, so Consul runs it on every
    registration of the task (reference/marathon-ucr-pods.md §4)."""

    name: str = "readinessCheck"
    protocol: str = "HTTP"  # HTTP | HTTPS
    path: str = "/"
    port_name: str = "http-api"
    interval_seconds: int = 30
    timeout_seconds: int = 10


class RunSpecKind(StrEnum):
    """What Marathon runs: an app (`/v2/apps`) or a pod (`/v2/pods`); both become an `App` here,
    a pod's instances `Task`s, so naming, ownership and the diff treat them alike."""

    APP = "app"
    POD = "pod"


@dataclass(frozen=True, slots=True)
class App:
    """What the registrar needs of a Marathon app (or pod) definition, whatever the Marathon version."""

    id: str  # "/web/customer1/site1"
    version: str = ""
    network_mode: NetworkMode = NetworkMode.BRIDGE
    port_mappings: tuple[PortMapping, ...] = ()
    health_checks: tuple[HealthCheck, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    # Run by the Mesos (unified) containerizer: no Docker engine knows the container, so a container
    # network's address comes from Marathon's `ipAddresses` / pod status (reference/marathon-ucr-pods.md §1)
    mesos_containerizer: bool = False
    readiness_checks: tuple[ReadinessCheck, ...] = ()
    kind: RunSpecKind = RunSpecKind.APP

    @property
    def addresses_from_marathon(self) -> bool:
        """Does Marathon's task report carry this task's overlay address? Only for a container
        network under the Mesos containerizer: for host and container/bridge networking, and for
        Docker-containerizer tasks, `ipAddresses` is the agent's or docker0's address."""
        return self.mesos_containerizer and self.network_mode is NetworkMode.USER

    def __hash__(self) -> int:
        return hash((self.id, self.version))


@dataclass(frozen=True, slots=True)
class Task:
    """A Marathon task as the REST API or a status_update_event reports it (for a pod: one instance,
    `id` the instance id, `ports` its endpoints' allocated host ports in endpoint order)."""

    id: str
    app_id: str
    host: str
    state: str = TaskState.RUNNING
    ports: tuple[int, ...] = ()  # host ports by port index
    ip_addresses: tuple[str, ...] = ()
    app_version: str = ""
    # Marathon's view of each health check by index: True alive, False failing, None unknown yet
    health: tuple[bool | None, ...] = ()
    # (network name, address) pairs where Marathon names the network (pod status), in its order
    named_ips: tuple[tuple[str, str], ...] = ()


def marathon_overlay_address(task: Task, networks: tuple[str, ...], cidrs: tuple[Cidr, ...]) -> tuple[str | None, str]:
    """The overlay address of a task whose container network Marathon reports (a UCR app's
    `ipAddresses`, a pod instance's `networks`): `(ip, "")` or `(None, reason)`, as
    `Container.overlay_address`. Addresses of the operator's `networks` come first where Marathon
    names them, then the rest in Marathon's order; the first inside `cidrs` wins, so an address of
    another network (a second CNI network, a bridge) is never taken for the overlay's."""
    named = [ip for name in networks for n, ip in task.named_ips if n == name]
    candidates = [*named, *task.ip_addresses]
    for ip in candidates:
        if in_overlay(ip, cidrs):
            return ip, ""
    return None, OUTSIDE_OVERLAY if candidates else NO_OVERLAY_IP


@dataclass(frozen=True, slots=True)
class Container:
    """A task's container on its slave: which networks gave it which IP."""

    id: str
    task_id: str
    network_ips: Mapping[str, str] = field(default_factory=dict)  # network name -> IPv4, empties dropped
    running: bool = True
    # Created through the Weave Docker API proxy (reference/weave.md §1.4): the overlay IP is on `ethwe`,
    # which Docker never sees, so `network_ips` holds only the docker0 address and is not used.
    weave_proxied: bool = False
    weave_ips: tuple[str, ...] = ()  # the Weave IPs read through the Docker API, Weave's order
    weave_source: str = ""  # where they were read: rewrite-inspect | etc-hosts | exec
    weave_pending: str = ""  # no weave_ips: WEAVE_NOT_ATTACHED (yet) or WEAVE_LOOKUP_FAILED

    def __hash__(self) -> int:
        return hash((self.id, self.task_id))

    def overlay_address(self, networks: tuple[str, ...], cidrs: tuple[Cidr, ...]) -> tuple[str | None, str]:
        """`(ip, "")`, or `(None, reason)` with a bounded reason (docs/architecture.md §6.2).

        The candidates are the Weave IPs for a proxied container, else the IPs on `networks` in the
        operator's order; the first inside `cidrs` wins. An address outside them is never an overlay
        address: a proxied container's docker0 address, or a non-overlay bridge's, would otherwise be
        registered as one (issue 12)."""
        if self.weave_proxied:
            candidates: tuple[str, ...] = self.weave_ips
        else:
            candidates = tuple(ip for name in networks if (ip := self.network_ips.get(name)))
        for ip in candidates:
            if in_overlay(ip, cidrs):
                return ip, ""
        if candidates:
            return None, OUTSIDE_OVERLAY
        if self.weave_proxied:
            return None, self.weave_pending or WEAVE_NOT_ATTACHED
        return None, NO_OVERLAY_IP

    def overlay_ip(self, networks: tuple[str, ...]) -> str | None:
        """The first non-empty IP among `networks`, in the operator's order (docs/architecture.md §6.2)."""
        for name in networks:
            ip = self.network_ips.get(name)
            if ip:
                return ip
        return None


@dataclass(frozen=True, slots=True)
class Skip:
    """Why a task gets no registration now (logged and counted, never silent)."""

    task_id: str
    reason: str  # a short, bounded metric label value: "no-overlay-ip", "register-false", ...
    detail: str = ""
    retry: bool = False  # True: the answer may change (e.g. container not up yet); try again later
    # True: the lookup was refused (a REPORT answer, docs/architecture.md §8): the task's registrations
    # are left as they are and the task is left to the next resync, not retried soon
    reported: bool = False
    # True: the task's registrations are kept as they are, and that is the answer (TASK_UNREACHABLE:
    # the task may still serve; Consul's serfHealth already fails a node that is really gone)
    keep: bool = False


@dataclass(frozen=True, slots=True)
class PodsRead:
    """`GET /v2/pods/::status` as the resync uses it: the usable pods (each an `App` with its
    instances as `Task`s), the malformed ones' errors by pod id (reported, skipped, their
    registrations kept), and whether this Marathon has pods at all (404: none, < 1.4)."""

    pods: tuple[tuple[App, tuple[Task, ...]], ...] = ()
    malformed: Mapping[str, str] = field(default_factory=dict)
    supported: bool = True
