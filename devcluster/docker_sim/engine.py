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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from devcluster.docker_sim import templates as t

TASK_ID_KEY = "MESOS_TASK_ID"
# Auto-assigned overlay IPs when a create request gives none: unique across every simulated slave of
# the process, inside the test world's /12 but away from the real slaves' 10.32.1/2.x ranges.
_AUTO_IPS = (str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.36.0.1")) + i)) for i in itertools.count())
_PIDS = itertools.count(40000)
# docker0 addresses of Weave-proxied containers (reference/weave.md §0: Docker keeps eth0's address)
_DOCKER0_IPS = (str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("172.17.0.2")) + i)) for i in itertools.count())


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class FilterError(ValueError):
    """A `filters` query the engine would answer 400 to."""


@dataclass(slots=True, eq=False)
class SimWeave:
    """A Weave-proxied container's overlay side (reference/weave.md §1-§3): its Weave IPs, whether
    `weave attach` has run (the /etc/hosts block written, `ethwe` up), and the inspect document the
    proxy's `--rewrite-inspect` would answer once it has."""

    ips: list[str]
    attached: bool
    hosts_before: str  # Docker's own file
    hosts_after: str  # Weave's block
    hosts_mtime: float  # of Weave's block (once attached)
    started: float  # State.StartedAt; Docker wrote its own file just before
    rewritten_json: bytes  # inspect with NetworkSettings.IPAddress/IPPrefixLen/MacAddress replaced (§3)
    has_ip_binary: bool = True
    rewrite_hosts: bool = True  # False: the proxy ran with --no-rewrite-hosts (Docker's file stays)


@dataclass(slots=True, eq=False)
class SimExec:
    """One exec instance (`POST /containers/{id}/exec`); it runs when started."""

    id: str
    container: SimContainer
    cmd: list[str]
    exit_code: int | None = None
    pid: int = 0


@dataclass(slots=True, eq=False)
class SimContainer:
    id: str
    name: str
    task_id: str
    labels: dict[str, str]
    running: bool
    list_json: bytes
    inspect_json: bytes
    weave: SimWeave | None = None
    docker_ip: str = ""


@dataclass(eq=False)
class SimEngine:
    """The state behind one `--listen` address."""

    host_ip: str
    list_cost_us: float = 0.0  # per container held (the engine's scan)
    result_cost_us: float = 0.0  # per container returned (the engine's rendering)
    containers: dict[str, SimContainer] = field(default_factory=dict)  # id -> container, creation order
    stats: Counter[str] = field(default_factory=Counter)
    rewrite_inspect: bool = False  # answer inspects as the Weave proxy with --rewrite-inspect would (§3)
    execs: dict[str, SimExec] = field(default_factory=dict)
    _generation: int = 0
    _list_cache: dict[tuple[str, bool], tuple[bytes, int]] = field(default_factory=dict)

    # ---- control ------------------------------------------------------------------------------

    def create(self, spec: dict[str, Any]) -> SimContainer:
        """Create one container from a control-API item:
        {task_id, ip?, network?="weave", host_port?, container_port?=80, label?=true, running?=true, name?,
         weave_proxy?=false, weave_ips?, weave_cidr?, weave_attached?=true, ip_binary?=true,
         weave_rewrite_hosts?=true}.
        network "host" means HOST networking (no IP); "bridge" is the `--bridge=weave` layout; "weave"
        is also Weave's network plugin layout (`--net=weave`, driver weavemesh: the IP under
        `Networks.weave`, reference/weave.md §5).
        `weave_proxy` makes a container as Weave's Docker API proxy does (reference/weave.md §1.4-§1.5):
        entrypoint `/w/w`, the `/w` bind, `WEAVE_CIDR` in the env (unless `weave_cidr` is null), hostname
        and domain, on Docker's default bridge with a docker0 address (`ip`, else 172.17.x.y); its
        overlay IPs (`weave_ips`, else one auto IP) appear only once attached (now, or later with
        `weave_attach`)."""
        if spec.get("weave_proxy"):
            return self._create_proxied(spec)
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

    def _create_proxied(self, spec: dict[str, Any]) -> SimContainer:
        task_id = str(spec["task_id"])
        label = bool(spec.get("label", True))
        running = bool(spec.get("running", True))
        host_port = spec.get("host_port")
        container_port = int(spec.get("container_port") or 80)
        name = str(spec.get("name") or f"mesos-{uuid.uuid4()}")
        cid = secrets.token_hex(32)
        docker_ip = str(spec.get("ip") or next(_DOCKER0_IPS))
        weave_ips = [str(x) for x in spec.get("weave_ips") or [next(_AUTO_IPS)]]
        weave_cidr = spec.get("weave_cidr", "net:default")
        labels = {TASK_ID_KEY: task_id} if label else {}
        env = [f"{TASK_ID_KEY}={task_id}", "MESOS_SANDBOX=/mnt/mesos/sandbox", f"MESOS_CONTAINER_NAME={name}"]
        if weave_cidr is not None:
            env.insert(0, f"WEAVE_CIDR={weave_cidr}")
        # the proxy's hostname rule: name + "." + domain must fit in 64 characters (§1.5)
        hostname, domain = (name, t.WEAVE_DOMAIN) if len(name) + 1 + len(t.WEAVE_DOMAIN) <= 64 else (cid[:12], "")
        now = time.time()
        created_iso = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
        mac = "02:42:" + ":".join(f"{int(o):02x}" for o in docker_ip.split("."))
        net_id, ep_id = secrets.token_hex(32), secrets.token_hex(32)
        ports_list: list[dict[str, Any]] = []
        bindings: dict[str, Any] = {}
        if host_port:
            ports_list = [{"IP": self.host_ip, "PrivatePort": container_port, "PublicPort": int(host_port),
                           "Type": "tcp"}]
            bindings = {f"{container_port}/tcp": [{"HostIp": self.host_ip, "HostPort": str(host_port)}]}

        def bridge(aliases: list[str] | None) -> dict[str, Any]:
            return {**t.endpoint(net_id, ep_id, docker_ip, mac, aliases), "Gateway": t.DOCKER0_GATEWAY,
                    "IPPrefixLen": t.DOCKER0_PREFIX_LEN}

        entry = t.list_entry(
            cid=cid, name=name, created=int(now), ports=ports_list, labels=labels,
            state="running" if running else "exited",
            status="Up 2 minutes" if running else "Exited (137) 1 second ago", network_mode="default",
            networks={"bridge": bridge(None)}, entrypoint=t.WEAVE_ENTRYPOINT, mounts=[t.WEAVE_MOUNT],
        )
        doc = t.inspect(
            cid=cid, name=name, created_iso=created_iso, running=running, pid=next(_PIDS), started_iso=created_iso,
            network_mode="default", port_bindings=bindings, ports=bindings, env=env, labels=labels,
            networks={"bridge": bridge(None)}, entrypoint=t.WEAVE_ENTRYPOINT, binds=[t.WEAVE_BIND],
            mounts=[t.WEAVE_MOUNT], hostname=hostname, domainname=domain, dns=[t.DOCKER0_GATEWAY],
            dns_search=["."],
        )
        doc["NetworkSettings"].update(EndpointID=ep_id, Gateway=t.DOCKER0_GATEWAY, IPAddress=docker_ip,
                                      IPPrefixLen=t.DOCKER0_PREFIX_LEN, MacAddress=mac)
        rewritten = json.loads(json.dumps(doc))
        first = weave_ips[0]
        rewritten["NetworkSettings"].update(
            IPAddress=first, IPPrefixLen=t.WEAVE_PREFIX_LEN,
            MacAddress="7a:" + ":".join(f"{int(o):02x}" for o in first.split(".")) + ":01")
        fqdn = f"{hostname}.{domain}" if domain else hostname
        attached = bool(spec.get("weave_attached", True)) and running
        weave = SimWeave(ips=weave_ips, attached=attached,
                         hosts_before=t.docker_hosts(docker_ip, hostname), hosts_after=t.weave_hosts(weave_ips, fqdn),
                         # Weave writes its block 0.3-1 s after the start (§7)
                         hosts_mtime=now + 0.5, started=now, rewritten_json=_dumps(rewritten),
                         has_ip_binary=bool(spec.get("ip_binary", True)),
                         rewrite_hosts=bool(spec.get("weave_rewrite_hosts", True)))
        c = SimContainer(cid, name, task_id, labels, running, _dumps(entry), _dumps(doc), weave=weave,
                         docker_ip=docker_ip)
        self.containers[cid] = c
        self._changed()
        return c

    def weave_attach(self, key: str) -> SimContainer | None:
        """What `weave attach` does to a started proxied container (by id, name or task id; §2.3, §2.2):
        the /etc/hosts block, then `ethwe`; from now on the archive, exec and (with rewrite_inspect)
        inspect show the Weave IP."""
        c = self.lookup(key) or next((x for x in self.containers.values() if x.task_id == key), None)
        if c is None or c.weave is None:
            return None
        c.weave.attached = True
        c.weave.hosts_mtime = max(time.time(), c.weave.started + 0.001)
        return c

    def inspect_body(self, c: SimContainer) -> bytes:
        """The inspect document as this engine answers it (the proxy's rewrite, if it is one)."""
        if self.rewrite_inspect and c.weave is not None and c.weave.attached:
            return c.weave.rewritten_json
        return c.inspect_json

    def hosts_file(self, c: SimContainer) -> tuple[str, float]:
        """The container's /etc/hosts and its mtime (epoch seconds)."""
        if c.weave is not None:
            if c.weave.attached and c.weave.rewrite_hosts:
                return c.weave.hosts_after, c.weave.hosts_mtime
            return c.weave.hosts_before, c.weave.started - 0.005  # Docker writes it before the start
        return t.docker_hosts(c.docker_ip or _first_ip(c), c.id[:12]), time.time()

    def exec_create(self, c: SimContainer, cmd: list[str]) -> SimExec:
        x = SimExec(id=secrets.token_hex(32), container=c, cmd=cmd)
        self.execs[x.id] = x
        return x

    def exec_run(self, x: SimExec) -> list[tuple[int, bytes]]:
        """Run an exec: its output frames (stream 1 stdout, 2 stderr); sets its exit code. Models
        busybox `ip -4 -o addr show dev <dev>` (§6.2); any other command is "not found"."""
        c, cmd = x.container, x.cmd
        x.pid = next(_PIDS)
        weave = c.weave
        if cmd[0] != "ip" or (weave is not None and not weave.has_ip_binary):
            x.exit_code = 126
            return [(1, t.exec_not_found(cmd[0]).encode())]
        dev = cmd[cmd.index("dev") + 1] if "dev" in cmd[:-1] else ""
        if dev == "ethwe" and weave is not None and weave.attached:
            x.exit_code = 0
            return [(1, "".join(t.ip_addr_line(6, "ethwe", ip, t.WEAVE_PREFIX_LEN) for ip in weave.ips).encode())]
        if dev == "eth0" and (c.docker_ip or _first_ip(c)):
            x.exit_code = 0
            return [(1, t.ip_addr_line(5, "eth0", c.docker_ip or _first_ip(c), t.DOCKER0_PREFIX_LEN).encode())]
        x.exit_code = 1
        return [(2, f"ip: can't find device '{dev}'\n".encode())]

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
        self.execs.clear()
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


def _first_ip(c: SimContainer) -> str:
    networks = json.loads(c.inspect_json)["NetworkSettings"]["Networks"]
    return next((n["IPAddress"] for n in networks.values() if n.get("IPAddress")), "")


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
    tests: list[Callable[..., bool]] = []
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
