"""What "ours" means in Consul, in one place: the marker, the Meta keys, the service and check id
formats (and their parsing back), the cluster claim and the agent-side filter expressions
(docs/architecture.md §5 says what each is for). The agent-side filter asks for the marker only;
the cluster is told apart here (`claim`), since Consul's filter language cannot say "this key
equals X or is absent" portably. Pure strings (and one regular expression): `model`, `desired`
and `service.consul` import it, it imports nothing of ours.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Hashable, Iterable, Mapping
from enum import StrEnum
from typing import TypeVar

MANAGED_BY = "marathon-consul-registrar"

# Meta keys of every registration (README "What gets registered"; operators filter on them)
META_MANAGED_BY = "managed-by"
META_APP_ID = "marathon-app-id"
META_TASK_ID = "marathon-task-id"
META_HOST = "marathon-host"
META_PORT_INDEX = "port-index"
META_ADDRESS_SOURCE = "address-source"
META_CLUSTER_ID = "marathon-cluster-id"
# A pod instance's registration also says what it is and which container/endpoint it serves
# (`marathon-task-id` holds the instance id: a pod's work is per instance, not per container task)
META_POD_INSTANCE = "marathon-pod-instance"
META_POD_CONTAINER = "pod-container"
META_POD_ENDPOINT = "pod-endpoint"

# The Meta pairs that make a registration ours. Every one must match for `is_ours`.
OWNER_MARKER: Mapping[str, str] = {META_MANAGED_BY: MANAGED_BY}

# A cluster identity (--cluster-id, or Marathon's frameworkId): a path segment of the lock key and a
# Meta value, so one rule for both (a Mesos framework id, `<master uuid>-<number>`, fits it)
CLUSTER_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
CLUSTER_ID_RULE = "1-128 of letters, digits, '.', '_' or '-'"

SERVICE_ID_PREFIX = "mcr-"
MAX_FILTERED_SERVICES = 64  # beyond this a filter expression costs more than reading every check


_OWN_VALUE = frozenset({META_TASK_ID, META_POD_INSTANCE})  # Meta keys whose value no other registration has
_Shared = TypeVar("_Shared", bound=Hashable)
_SHARED: dict[Hashable, Hashable] = {}
_SHARED_MAX = 200_000  # distinct values kept; then the table starts over (a bound, not an eviction policy)


def shared(value: _Shared) -> _Shared:
    """One object for equal immutable values that many registrations repeat (a Meta pair, a name,
    a tags tuple): the ledger holds every registration we own, and at 10,000 registrations each
    parsed one held ~1.9 KB, most of it copies of the same pairs and strings (issue 20)."""
    got = _SHARED.get(value)
    if got is None:
        if len(_SHARED) >= _SHARED_MAX:
            _SHARED.clear()
        _SHARED[value] = got = value
    return got  # type: ignore[return-value]


def shared_meta(pairs: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Sorted Meta pairs, each shared (`shared`) unless its value is this registration's own; an own
    value (a task id) is interned, as Marathon's task ids are when parsed, so a resync's fresh copy
    of a task id is the ledger's string and goes at once (issue 20)."""
    return tuple(sorted(((p[0], sys.intern(p[1])) if type(p[1]) is str else p) if p[0] in _OWN_VALUE else shared(p)
                        for p in pairs))


def ownership_meta(*, app_id: str, task_id: str, host: str, port_index: int,
                   address_source: str, cluster_id: str | None = None,
                   pod_endpoint: tuple[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    """The Meta of one registration as sorted pairs (`Registration.meta`), marker included.
    `pod_endpoint` (container, endpoint name) marks a pod instance's registration."""
    meta = {
        **OWNER_MARKER,
        META_APP_ID: app_id,
        META_TASK_ID: task_id,
        META_HOST: host,
        META_PORT_INDEX: str(port_index),
        META_ADDRESS_SOURCE: address_source,
    }
    if cluster_id is not None:
        meta[META_CLUSTER_ID] = cluster_id
    if pod_endpoint is not None:
        meta[META_POD_INSTANCE] = task_id
        meta[META_POD_CONTAINER], meta[META_POD_ENDPOINT] = pod_endpoint
    return shared_meta(meta.items())


class Claim(StrEnum):
    OURS = "ours"  # our marker and our cluster
    LEGACY = "legacy"  # our marker, no cluster id: written before cluster ids existed
    FOREIGN = "foreign"  # our marker, another cluster's id: never touched
    NOT_OURS = "not-ours"  # no marker: never touched


def claim(meta: Mapping[str, str], cluster_id: str | None) -> Claim:
    """Whose is an agent's entry with this Meta? With no cluster identity configured (a library
    caller, the unit tests) every marked entry counts as ours, as before cluster ids."""
    if not is_ours(meta):
        return Claim.NOT_OURS
    if cluster_id is None:
        return Claim.OURS
    theirs = meta.get(META_CLUSTER_ID)
    if theirs is None or theirs == "":
        return Claim.LEGACY
    return Claim.OURS if theirs == cluster_id else Claim.FOREIGN


def is_ours(meta: Mapping[str, str]) -> bool:
    """Does an agent's entry with this Meta belong to us? (The same test as `owned_filter`.)"""
    return all(meta.get(k) == v for k, v in OWNER_MARKER.items())


def service_id(task_id: str, port_index: int) -> str:
    """Deterministic from task and port, so a restarted registrar finds its own registrations."""
    return f"{SERVICE_ID_PREFIX}{task_id}-{port_index}"


def check_id(sid: str, hc_index: int) -> str:
    """The Consul check translated from Marathon health check `hc_index` (0-based) of `sid`."""
    return f"service:{sid}:{hc_index + 1}"


def mirror_check_id(sid: str, hc_index: int) -> str:
    """The TTL check mirroring Marathon's verdict beside a translated HTTP/TCP check: its own id,
    still ending in the 1-based index so that `health_check_index` reads both forms."""
    return f"service:{sid}:marathon:{hc_index + 1}"


def readiness_check_id(sid: str, rc_index: int) -> str:
    """The Consul check translated from Marathon readiness check `rc_index` (0-based) of `sid`."""
    return f"service:{sid}:ready:{rc_index + 1}"


def health_check_index(check: str) -> int:
    """The 0-based Marathon health check index a check id of ours was made from."""
    return int(check.rsplit(":", 1)[1]) - 1


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def owned_filter(app_id: str | None = None) -> str:
    """A `?filter=` expression for our services on an agent (optionally of one app)."""
    terms = [f"Meta[{_quoted(k)}] == {_quoted(v)}" for k, v in OWNER_MARKER.items()]
    if app_id is not None:
        terms.append(f"Meta[{_quoted(META_APP_ID)}] == {_quoted(app_id)}")
    return " and ".join(terms)


def checks_filter(service_ids: Iterable[str]) -> str | None:
    """A filter for the checks of `service_ids` only: per-app work on an agent holding thousands of
    checks must not download and parse all of them (the 10% drift resync spent most of its time so).
    None (read every check) when the expression would cost more than it saves."""
    ids = list(service_ids)
    if len(ids) > MAX_FILTERED_SERVICES:
        return None
    return " or ".join(f"ServiceID == {_quoted(sid)}" for sid in ids)


# The lock holder's own liveness registration (docs/architecture.md §3.1): a service in the lock
# agent with an HTTP check of the instance's /health, to which its lock session is bound. Its own
# marker value, so the resync (which asks for `OWNER_MARKER`) never takes it for a task's orphan;
# an operator finds every instance with `Meta["managed-by"] == "marathon-consul-registrar-lock"`.
LOCK_MANAGED_BY = "marathon-consul-registrar-lock"
LOCK_SERVICE_NAME = "marathon-consul-registrar"


def lock_alive_service_id(cluster_id: str, host: str, port: int) -> str:
    """One per instance on an agent: two clusters' instances on one host differ in cluster and
    port (host networking), instances on two hosts sharing one lock agent (`--lock-agent`) in the
    host their check asks. Deterministic, so a restarted instance replaces its dead run's entry."""
    return f"{LOCK_SERVICE_NAME}-lock-{cluster_id}-{re.sub(r'[^A-Za-z0-9.-]', '-', host)}-{port}"


def lock_alive_check_id(service_id: str) -> str:
    """The id Consul gives the one check of a service registered with `Check` (`service:<id>`)."""
    return f"service:{service_id}"


def lock_alive_meta(cluster_id: str) -> dict[str, str]:
    return {META_MANAGED_BY: LOCK_MANAGED_BY, META_CLUSTER_ID: cluster_id}
