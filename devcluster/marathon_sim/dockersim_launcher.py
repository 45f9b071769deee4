"""Launch tasks on a `devcluster.docker_sim` slave instead of a real Docker engine (benchmarks).

`--slave HOST=dockersim+http://HOST:2375:NET` selects this backend. It has the `SlaveDocker`
interface the scheduler uses, but "starting a container" is one call to the simulator's control
API (`POST /_sim/containers`) with the task id, the Docker network and the host port, and the
inspect is the simulator's Docker-shaped `GET /containers/{id}/json`, so the scheduler's
TASK_RUNNING / `ipAddresses` logic runs unchanged. That lets one Marathon simulator hold 10,000
tasks over 20 slaves on two cores, which real engines cannot (docker-test-hosts §2: ~230 ms per
real container start).

Not modelled: container deaths (docker_sim has no event stream, so `watch_deaths` just waits),
`docker exec` (COMMAND health checks fail), image pulls. Calls are blocking because the scheduler
runs them in threads, like the real backend's Docker SDK calls; they use one keep-alive
`http.client` connection per thread, not `requests`: profiled deploying 10,000 tasks, requests'
per-call environment lookups (netrc, CA paths) and adapters were most of the simulator's CPU.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from devcluster.marathon_sim.config import SlaveConfig
from devcluster.marathon_sim.launcher import TASK_LABEL, LaunchError, LaunchSpec, SlaveDocker

log = logging.getLogger("marathon_sim.dockersim")

SCHEME = "dockersim+"
API = "/v1.41"


def is_dockersim(slave: SlaveConfig) -> bool:
    return slave.docker_url.startswith(SCHEME)


class SimError(Exception):
    """docker_sim could not be reached or answered an error."""


class SimSlaveDocker:
    """A slave whose engine is a docker_sim address (see the module docstring)."""

    def __init__(self, slave: SlaveConfig) -> None:
        self.slave = slave
        self.base = slave.docker_url[len(SCHEME):].rstrip("/")
        parts = urlsplit(self.base)
        self._addr = (parts.hostname or "127.0.0.1", parts.port or 2375)
        self._local = threading.local()
        self._stopping = threading.Event()

    def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, decoded JSON or None); one retry on a fresh connection if a kept-alive one died."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (1, 2):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = http.client.HTTPConnection(*self._addr, timeout=30)
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise SimError(f"docker_sim {self.base}: {method} {path}: {exc}") from exc
                continue
            try:
                return resp.status, json.loads(raw) if raw and raw[:1] in b"[{" else None
            except ValueError:
                return resp.status, None
        raise AssertionError("unreachable")

    def ping(self) -> None:
        status, _ = self._call("GET", "/_ping")
        if status != 200:
            raise SimError(f"docker_sim {self.base}: /_ping answered {status}")

    def run(self, spec: LaunchSpec) -> str:
        """One control-API create; the task id comes from the MESOS_TASK_ID label, as on a real slave."""
        item: dict[str, Any] = {"task_id": spec.labels.get(TASK_LABEL) or spec.env.get("MESOS_TASK_ID", ""),
                                "name": spec.name, "network": spec.network_mode}
        if spec.ports:
            port_key, (_, host_port) = next(iter(spec.ports.items()))
            item["container_port"] = int(port_key.split("/")[0])
            item["host_port"] = host_port
        try:
            status, out = self._call("POST", "/_sim/containers", [item])
        except SimError as exc:
            raise LaunchError(f"Failed to launch container: {exc}") from exc
        if status != 201:
            raise LaunchError(f"Failed to launch container: {status} {out}")
        return str(out[0]["id"])

    def inspect(self, container_id: str) -> dict[str, Any]:
        status, out = self._call("GET", f"{API}/containers/{container_id}/json")
        if status != 200:
            raise SimError(f"docker_sim {self.base}: inspect {container_id[:12]} answered {status}")
        return dict(out)

    def stop(self, container_id: str, grace: float) -> None:
        """No processes here, so nothing to signal: a graceful stop is a removal."""
        self.remove(container_id)

    def remove(self, container_id: str) -> None:
        try:
            self._call("DELETE", f"/_sim/containers/{container_id}")
        except SimError as exc:  # the simulator may be gone first at teardown
            log.debug("remove %s on %s failed: %s", container_id[:12], self.slave.host, exc)

    def exec(self, container_id: str, command: str) -> tuple[int, str]:
        return 126, "docker_sim slaves cannot exec"

    def containers_labelled(self, label: str) -> list[str]:
        """docker_sim containers carry only MESOS_TASK_ID, so the shutdown sweep by the simulator's
        pid label finds nothing; the tracked removals are what cleans up here."""
        return []

    def published_ports(self) -> set[int]:
        try:
            _, entries = self._call("GET", f"{API}/containers/json")
        except SimError:
            return set()
        return {int(p["PublicPort"]) for c in entries for p in c.get("Ports") or [] if p.get("PublicPort")}

    def watch_deaths(self, on_die: Callable[[str, dict[str, str]], None]) -> None:
        self._stopping.wait()

    def stop_watching(self) -> None:
        self._stopping.set()


def make_slave_docker(slave: SlaveConfig) -> SlaveDocker | SimSlaveDocker:
    """The hook `__main__` uses: a docker_sim slave by URL scheme, else a real engine."""
    return SimSlaveDocker(slave) if is_dockersim(slave) else SlaveDocker(slave)
