"""Docker side of a slave: launch, inspect, kill, exec, and watch container deaths.

It plays the Mesos Docker containerizer + docker executor (reference §7, §8): container name
`mesos-<uuid4>` (Mesos >= 1.4), env `-e K=V`, the Marathon label `MESOS_TASK_ID=<task id>`,
published ports bound explicitly on the slave's IP (slave 1 would otherwise bind 0.0.0.0 and clash
with slave 2, reference docker-test-hosts §4), and TASK_RUNNING only after `docker inspect` succeeded.

Everything here is blocking Docker SDK code; the scheduler calls it through `asyncio.to_thread`, so
several containers start concurrently. Kills use `remove(force=True)` (SIGKILL): busybox httpd as
PID 1 ignores SIGTERM, so `docker stop` would wait its whole timeout.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker
from docker.errors import APIError, DockerException, NotFound

from devcluster.marathon_sim.config import SlaveConfig

log = logging.getLogger("marathon_sim.launcher")

TASK_LABEL = "MESOS_TASK_ID"
WEAVE_DOMAIN = "weave.local"  # weaveDNS's default domain (reference weave.md §1.5)
WEAVE_PROXY_DNS = "172.17.0.1"  # the proxy adds the Docker bridge's IP as DNS server (§1.5): slave 3's docker0
SIM_LABEL = "marathon-sim.pid"  # lets a test or an operator find what one simulator process launched


@dataclass
class LaunchSpec:
    name: str
    image: str
    entrypoint: list[str] | None
    command: list[str] | None
    env: dict[str, str]
    labels: dict[str, str]
    network_mode: str  # "host", "container:<id>" (share that one's network namespace) or a Docker network
    ports: dict[str, tuple[str, int]] = field(default_factory=dict)  # "80/tcp" -> (slave ip, host port)
    privileged: bool = False
    force_pull: bool = False
    extra_hosts: dict[str, str] = field(default_factory=dict)  # name -> IP, Docker's --add-host
    volumes: list[str] = field(default_factory=list)  # "hostPath:containerPath:ro|rw", as docker run -v


class LaunchError(Exception):
    """The container could not be started; the message becomes the TASK_FAILED message."""

    def __init__(self, message: str, *, port_clash: bool = False) -> None:
        super().__init__(message)
        self.port_clash = port_clash


def container_ip(inspect: dict[str, Any]) -> str | None:
    """The docker executor's rule (§8.4): `Networks.<NetworkMode>.IPAddress`, else the deprecated
    top-level `NetworkSettings.IPAddress`; empty means none (host networking)."""
    settings = inspect.get("NetworkSettings") or {}
    mode = (inspect.get("HostConfig") or {}).get("NetworkMode", "")
    nets = settings.get("Networks") or {}
    if mode == "default":
        mode = "bridge"
    if mode in nets:
        return nets[mode].get("IPAddress") or None
    return settings.get("IPAddress") or None


class SlaveDocker:
    def __init__(self, slave: SlaveConfig) -> None:
        self.slave = slave
        self.client = docker.DockerClient(base_url=slave.docker_url, max_pool_size=20)
        self._events_stream: Any = None
        self._stopping = threading.Event()

    def ping(self) -> None:
        self.client.ping()

    def run(self, spec: LaunchSpec) -> str:
        """Create and start; returns the container id. A container that was created but failed to
        start is removed, as Mesos does not leave half-launched tasks behind."""
        if spec.force_pull:
            try:
                self.client.images.pull(spec.image)
            except DockerException as exc:
                log.warning("pull of %s failed: %s", spec.image, exc)
        kwargs: dict[str, Any] = {
            "image": spec.image, "name": spec.name, "detach": True, "environment": spec.env,
            "labels": spec.labels, "privileged": spec.privileged,
        }
        if spec.extra_hosts:
            kwargs["extra_hosts"] = dict(spec.extra_hosts)
        if spec.volumes:
            kwargs["volumes"] = list(spec.volumes)
        if spec.entrypoint is not None:
            kwargs["entrypoint"] = spec.entrypoint
        if spec.command is not None:
            kwargs["command"] = spec.command
        if spec.network_mode == "host" or spec.network_mode.startswith("container:"):
            # a pod's containers join the network namespace of its instance's first one (Mesos: the
            # executor's container); they publish nothing of their own
            kwargs["network_mode"] = spec.network_mode
        else:
            kwargs["network"] = spec.network_mode
            kwargs["ports"] = dict(spec.ports)
            if self.slave.weave_proxy_dir:
                self._as_weave_proxy_creates(spec, kwargs)
        try:
            container = self.client.containers.create(**kwargs)
        except NotFound as exc:
            raise LaunchError(f"Failed to launch container: {exc.explanation or exc}") from exc
        except DockerException as exc:
            raise LaunchError(f"Failed to launch container: {exc}") from exc
        try:
            container.start()
        except DockerException as exc:
            self.remove(container.id)
            text = str(exc)
            clash = "port is already allocated" in text or "address already in use" in text
            raise LaunchError(f"Failed to launch container: {text}", port_clash=clash) from exc
        return str(container.id)

    def _as_weave_proxy_creates(self, spec: LaunchSpec, kwargs: dict[str, Any]) -> None:
        """What Weave's proxy makes of a create (reference weave.md §1.4, §1.5; W@v1.9.8
        proxy/create_container_interceptor.go): the `/w` volume bound read-only, the entrypoint
        wrapped in `/w/w` (the image's own entrypoint, and its Cmd when none was given), hostname
        and domain `weave.local` when the name fits in 64, DNS through the bridge, search `.`."""
        env = spec.env
        if next((v for k, v in env.items() if k == "WEAVE_CIDR"), None) == "none":
            return  # the proxy leaves it alone (§1.3)
        image = self.client.api.inspect_image(spec.image).get("Config") or {}
        entrypoint = spec.entrypoint if spec.entrypoint is not None else list(image.get("Entrypoint") or [])
        if not entrypoint or entrypoint[0] != "/w/w":
            kwargs["entrypoint"] = ["/w/w", *entrypoint]
        if spec.command is None and image.get("Cmd"):
            kwargs["command"] = list(image["Cmd"])
        kwargs["volumes"] = [*kwargs.get("volumes", []), f"{self.slave.weave_proxy_dir}:/w:ro"]
        if len(spec.name) + 1 + len(WEAVE_DOMAIN) <= 64:
            kwargs["hostname"], kwargs["domainname"] = spec.name, WEAVE_DOMAIN
            kwargs["dns_search"] = ["."]
        else:
            kwargs["dns_search"] = [WEAVE_DOMAIN]
        kwargs["dns"] = [WEAVE_PROXY_DNS]

    def inspect(self, container_id: str) -> dict[str, Any]:
        attrs: dict[str, Any] = self.client.api.inspect_container(container_id)
        return attrs

    def stop(self, container_id: str, grace: float) -> None:
        """The docker executor's kill with a grace period (Marathon's `taskKillGracePeriodSeconds`
        becomes the Mesos KillPolicy; the executor runs `docker stop -t <grace>`): SIGTERM (the
        image's STOPSIGNAL), SIGKILL after `grace` seconds."""
        try:
            self.client.api.stop(container_id, timeout=max(1, round(grace)))
        except NotFound:
            pass
        except APIError as exc:
            log.warning("stop %s on %s failed: %s", container_id[:12], self.slave.host, exc)

    def remove(self, container_id: str) -> None:
        try:
            self.client.api.remove_container(container_id, force=True)
        except NotFound:
            pass
        except APIError as exc:
            if "already in progress" not in str(exc):
                log.warning("remove %s on %s failed: %s", container_id[:12], self.slave.host, exc)

    def exec(self, container_id: str, command: str) -> tuple[int, str]:
        """A COMMAND health check: `sh -c <command>` inside the task's container."""
        result = self.client.api.exec_create(container_id, ["sh", "-c", command])
        output = self.client.api.exec_start(result["Id"])
        code = self.client.api.exec_inspect(result["Id"]).get("ExitCode")
        return (code if code is not None else -1), output.decode(errors="replace")[-200:]

    def containers_labelled(self, label: str) -> list[str]:
        """Ids of all containers (running or not) carrying `label` (`key=value`)."""
        try:
            return [c["Id"] for c in self.client.api.containers(all=True, filters={"label": label})]
        except DockerException as exc:
            log.warning("listing containers on %s failed: %s", self.slave.host, exc)
            return []

    def published_ports(self) -> set[int]:
        """Host ports held by any container on this engine (ours or another simulator's)."""
        used: set[int] = set()
        try:
            for c in self.client.api.containers():
                for p in c.get("Ports") or []:
                    if p.get("PublicPort"):
                        used.add(int(p["PublicPort"]))
        except DockerException as exc:
            log.warning("listing containers on %s failed: %s", self.slave.host, exc)
        return used

    def watch_deaths(self, on_die: Callable[[str, dict[str, str]], None]) -> None:
        """Blocking: follow the engine's `die` events and call on_die(container id, attributes)
        (attributes hold the labels, so MESOS_TASK_ID, plus exitCode). Reconnects until stopped."""
        while not self._stopping.is_set():
            try:
                self._events_stream = self.client.events(
                    decode=True, filters={"type": "container", "event": "die"})
                for event in self._events_stream:
                    actor = event.get("Actor") or {}
                    on_die(actor.get("ID", event.get("id", "")), actor.get("Attributes") or {})
            except Exception as exc:  # the stream dies with the engine or when closed by stop()
                if self._stopping.is_set():
                    return
                log.warning("docker events on %s: %s; reconnecting", self.slave.host, exc)
                self._stopping.wait(1.0)

    def stop_watching(self) -> None:
        self._stopping.set()
        stream = self._events_stream
        if stream is not None:
            try:
                stream.close()
            except Exception:  # closing a half-read HTTP stream can raise; we are shutting down anyway
                pass
