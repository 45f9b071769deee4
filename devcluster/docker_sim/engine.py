"""One simulated slave's Docker engine: its containers, pre-rendered, and the listing filters.

Every container's list entry and inspect document are rendered to JSON bytes once, when it is
created: a listing is then a filter over the containers plus a `b","`.join, so 500 containers list
in well under a millisecond of sim CPU (the bench measures the registrar, not the simulator). The
joined body is also cached per query until the next change.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import re
import secrets
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from devcluster.docker_sim import templates as t

TASK_ID_KEY = "MESOS_TASK_ID"
# Auto-assigned overlay IPs when a create request gives none: unique across every simulated slave of
# the process, inside the test world's /12 but away from the real slaves' 10.32.1/2.x ranges.
_AUTO_IPS = (str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.36.0.1")) + i)) for i in itertools.count())
_PIDS = itertools.count(40000)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class FilterError(ValueError):
    """A `filters` query the engine would answer 400 to."""


@dataclass(slots=True, eq=False)
class SimContainer:
    id: str
    name: str
    task_id: str
    labels: dict[str, str]
    running: bool
    list_json: bytes
    inspect_json: bytes


@dataclass(eq=False)
class SimEngine:
    """The state behind one `--listen` address."""

    host_ip: str
    list_cost_us: float = 0.0  # per container held (the engine's scan)
    result_cost_us: float = 0.0  # per container returned (the engine's rendering)
    containers: dict[str, SimContainer] = field(default_factory=dict)  # id -> container, creation order
    stats: Counter[str] = field(default_factory=Counter)
    _generation: int = 0
    _list_cache: dict[tuple[str, bool], tuple[bytes, int]] = field(default_factory=dict)

    # ---- control ------------------------------------------------------------------------------

    def create(self, spec: dict[str, Any]) -> SimContainer:
        """Create one container from a control-API item:
        {task_id, ip?, network?="weave", host_port?, container_port?=80, label?=true, running?=true, name?}.
        network "host" means HOST networking (no IP); "bridge" is the `--bridge=weave` layout."""
        task_id = str(spec["task_id"])
        network = str(spec.get("network") or "weave")
        label = bool(spec.get("label", True))
        running = bool(spec.get("running", True))
        host_port = spec.get("host_port")
        container_port = int(spec.get("container_port") or 80)
        name = str(spec.get("name") or f"mesos-{uuid.uuid4()}")
        cid = secrets.token_hex(32)
        ip = "" if network == "host" else str(spec.get("ip") or next(_AUTO_IPS))
        mac = "02:42:" + ":".join(f"{int(o):02x}" for o in ip.split(".")) if ip else ""
        labels = {TASK_ID_KEY: task_id} if label else {}
        env = [f"{TASK_ID_KEY}={task_id}", "MESOS_SANDBOX=/mnt/mesos/sandbox", f"MESOS_CONTAINER_NAME={name}"]
        now = time.time()
        created_iso = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
        network_mode = {"bridge": "default", "host": "host"}.get(network, network)
        net_id, ep_id = secrets.token_hex(32), secrets.token_hex(32)
        ports_list: list[dict[str, Any]] = []
        port_bindings: dict[str, Any] = {}
        ports_inspect: dict[str, Any] = {}
        if host_port and network != "host":
            ports_list = [{"IP": self.host_ip, "PrivatePort": container_port, "PublicPort": int(host_port),
                           "Type": "tcp"}]
            port_bindings = {f"{container_port}/tcp": [{"HostIp": self.host_ip, "HostPort": str(host_port)}]}
            ports_inspect = {f"{container_port}/tcp": [{"HostIp": self.host_ip, "HostPort": str(host_port)}]}
        entry = t.list_entry(
            cid=cid, name=name, created=int(now), ports=ports_list, labels=labels,
            state="running" if running else "exited",
            status="Up 2 minutes" if running else "Exited (137) 1 second ago", network_mode=network_mode,
            networks={network: t.endpoint(net_id, ep_id, ip, mac, None)},
        )
        doc = t.inspect(
            cid=cid, name=name, created_iso=created_iso, running=running, pid=next(_PIDS),
            started_iso=created_iso, network_mode=network_mode, port_bindings=port_bindings,
            ports=ports_inspect, env=env, labels=labels,
            networks={network: t.endpoint(net_id, ep_id, ip, mac, [cid[:12]] if network != "host" else None)},
        )
        if network == "bridge":  # the default network also fills the legacy top-level fields
            doc["NetworkSettings"].update(EndpointID=ep_id, Gateway=t.OVERLAY_GATEWAY, IPAddress=ip,
                                          IPPrefixLen=t.OVERLAY_PREFIX_LEN, MacAddress=mac)
        c = SimContainer(cid, name, task_id, labels, running, _dumps(entry), _dumps(doc))
        self.containers[cid] = c
        self._changed()
        return c

    def delete(self, key: str) -> list[str]:
        """Remove containers by id (full or unique prefix), name or task id; returns removed ids."""
        ids = [c.id for c in self.containers.values() if key in (c.id, c.name, c.task_id)]
        if not ids:
            found = self.lookup(key)
            ids = [found.id] if found else []
        for cid in ids:
            del self.containers[cid]
        if ids:
            self._changed()
        return ids

    def reset(self) -> None:
        self.containers.clear()
        self.stats.clear()
        self._changed()

    def _changed(self) -> None:
        self._generation += 1
        self._list_cache.clear()

    # ---- engine API ---------------------------------------------------------------------------

    def lookup(self, ref: str) -> SimContainer | None:
        """Like the engine: full id, then exact name (with or without '/'), then a unique id prefix."""
        c = self.containers.get(ref)
        if c is not None:
            return c
        name = ref.lstrip("/")
        for c in self.containers.values():
            if c.name == name:
                return c
        matches = [c for c in self.containers.values() if c.id.startswith(ref)] if ref else []
        return matches[0] if len(matches) == 1 else None

    def listing(self, filters_param: str, all_: bool) -> tuple[bytes, int]:
        """The body of `GET /containers/json` and how many entries it holds; FilterError for what
        the engine rejects."""
        key = (filters_param, all_)
        cached = self._list_cache.get(key)
        if cached is not None:
            return cached
        match = _compile_filters(filters_param)
        selected = [c.list_json for c in reversed(self.containers.values())  # newest first, like Docker
                    if (all_ or c.running) and match(c)]
        if len(self._list_cache) > 64:  # narrowed per-task queries would pile up otherwise
            self._list_cache.clear()
        out = self._list_cache[key] = (b"[" + b",".join(selected) + b"]", len(selected))
        return out

    def list_delay(self, returned: int) -> float:
        """Seconds the real engine would spend on a listing (0 unless a cost model is set)."""
        return (self.list_cost_us * len(self.containers) + self.result_cost_us * returned) / 1e6


def _compile_filters(param: str) -> Any:
    """`filters` JSON -> predicate. Values of one key OR together for `name`/`id`, AND for `label`
    (Docker's rules); different keys AND. Only the keys this simulator models are accepted."""
    if not param:
        return lambda c: True
    try:
        raw = json.loads(param)
    except ValueError as exc:
        raise FilterError(f"invalid filter: {exc}") from exc
    if not isinstance(raw, dict):
        raise FilterError("invalid filter: not an object")
    tests = []
    for key, values in raw.items():
        # both the list form and the legacy {"value": true} map form
        vals = list(values) if isinstance(values, list | dict) else [values]
        if key == "label":
            pairs = [v.split("=", 1) if "=" in v else [v, None] for v in vals]
            tests.append(lambda c, pairs=pairs: all(
                k in c.labels and (want is None or c.labels[k] == want) for k, want in pairs))
        elif key == "name":
            regexes = [re.compile(v) for v in vals]
            tests.append(lambda c, rx=regexes: any(r.search("/" + c.name) for r in rx))
        elif key == "id":
            tests.append(lambda c, ids=vals: any(c.id.startswith(i) for i in ids))
        elif key == "status":
            tests.append(lambda c, st=vals: ("running" if c.running else "exited") in st)
        else:
            raise FilterError(f"invalid filter '{key}'")
    return lambda c: all(test(c) for test in tests)
