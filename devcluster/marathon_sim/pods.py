"""Pods on the Mesos-containerizer (CNI) slave: instances, their container tasks, status and events.

A pod instance is what Mesos makes of a task group: one network namespace shared by its containers
(reference marathon-ucr-pods.md §2.1). Here the namespace belongs to a first container (the
stand-in for the executor's), on the slave's overlay network (`container` mode) or the host's
(`host` mode), and every pod container joins it (`container:<id>`), so they share one address and
the endpoints' host ports are published on it. The address is reported as Mesos' network/cni
isolator reports it (named by network, §1.1), per task in `ipAddresses` and per instance in the pod
status's `networks`. Each container is a Marathon task `<pod safe path>.instance-<uuid>.<container>`
whose `appId` is the pod id (§2.4); every task update publishes `status_update_event`, every
instance condition change `instance_changed_event`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from devcluster.marathon_sim import events as ev
from devcluster.marathon_sim.bus import EventBus
from devcluster.marathon_sim.clock import timestamp
from devcluster.marathon_sim.config import SimConfig, SlaveConfig
from devcluster.marathon_sim.launcher import SIM_LABEL, TASK_LABEL, LaunchError, LaunchSpec, container_ip
from devcluster.marathon_sim.pod_json import PodSpec
from devcluster.marathon_sim.state import Registry, Task, condition_of
from devcluster.marathon_sim.task_ids import safe_path

log = logging.getLogger("marathon_sim.pods")

HOST_PORT_RANGE = (31000, 32000)
NETNS_IMAGE = "local/busybox:1"  # the network namespace holder's image (on every world slave)
INSTANCE_LABEL = "marathon-sim.instance"


@dataclass
class PodInstance:
    instance_id: str
    pod_id: str
    slave: SlaveConfig
    slave_id: str
    version: str
    tasks: dict[str, Task]  # container name -> its task
    host_ports: dict[str, int] = field(default_factory=dict)  # endpoint name -> allocated host port
    healthy: dict[str, bool | None] = field(default_factory=dict)  # container name -> Mesos health
    netns_id: str | None = None
    launching: bool = True  # _launch still runs: container ids may still arrive
    condition: str = ""  # the last one announced by instance_changed_event
    status_since: str = field(default_factory=timestamp)
    kill_requested: bool = False
    health_tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def host(self) -> str:
        return self.slave.host

    def first(self) -> Task:
        return next(iter(self.tasks.values()))


@dataclass
class PodRecord:
    spec: PodSpec
    instances: dict[str, PodInstance] = field(default_factory=dict)
    versions: list[str] = field(default_factory=list)
    deleting: bool = False


class Pods:
    def __init__(self, cfg: SimConfig, reg: Registry, bus: EventBus, dockers: dict[str, Any]) -> None:
        self.cfg = cfg
        self.reg = reg
        self.bus = bus
        self.dockers = dockers
        self.pods: dict[str, PodRecord] = {}
        self.unplaceable: set[str] = set()  # partitioned agents: no offers, no new instances
        self._background: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # ------------------------------------------------------------------ lookups

    def instances(self) -> list[PodInstance]:
        return [i for rec in self.pods.values() for i in rec.instances.values()]

    def find(self, container_task_id: str) -> tuple[PodRecord, PodInstance, Task] | None:
        for rec in self.pods.values():
            for inst in rec.instances.values():
                for task in inst.tasks.values():
                    if task.task_id == container_task_id:
                        return rec, inst, task
        return None

    # ------------------------------------------------------------------ operations

    def create(self, spec: PodSpec, *, client_ip: str, uri: str) -> str:
        spec.version = timestamp()
        rec = PodRecord(spec=spec, versions=[spec.version])
        self.pods[spec.id] = rec
        self.bus.publish(ev.pod_event("pod_created_event", client_ip, uri))
        self._scale(rec)
        return str(uuid.uuid4())

    def update(self, rec: PodRecord, spec: PodSpec, *, client_ip: str, uri: str) -> str:
        """A new version replaces every instance (a restart deployment without upgrade strategy)."""
        spec.version = timestamp()
        restart = spec.raw != rec.spec.raw and {**spec.raw, "scaling": None} != {**rec.spec.raw, "scaling": None}
        rec.spec = spec
        rec.versions.append(spec.version)
        self.bus.publish(ev.pod_event("pod_updated_event", client_ip, uri))
        if restart:
            for inst in list(rec.instances.values()):
                self._spawn(self.kill_instance(rec, inst))
        self._scale(rec)
        return str(uuid.uuid4())

    def delete(self, rec: PodRecord, *, client_ip: str, uri: str) -> str:
        rec.deleting = True
        self.bus.publish(ev.pod_event("pod_deleted_event", client_ip, uri))
        self._spawn(self._stop_pod(rec))
        return str(uuid.uuid4())

    async def _stop_pod(self, rec: PodRecord) -> None:
        await asyncio.gather(*(self.kill_instance(rec, i) for i in list(rec.instances.values())))
        if self.pods.get(rec.spec.id) is rec:
            del self.pods[rec.spec.id]
        self.bus.publish(ev.app_terminated(rec.spec.id))  # StopPod runs stopRunSpec (§2.4)

    def _scale(self, rec: PodRecord) -> None:
        live = [i for i in rec.instances.values() if not i.kill_requested]
        for inst in sorted(live, key=lambda i: i.status_since, reverse=True)[rec.spec.instances:]:
            self._spawn(self.kill_instance(rec, inst))  # killSelection YOUNGEST_FIRST
        for _ in range(rec.spec.instances - len(live)):
            slave = self._place()
            if slave is None:
                log.error("no Mesos-containerizer slave can take an instance of %s", rec.spec.id)
                return
            inst = self._new_instance(rec, slave)
            self._spawn(self._launch(rec, inst))

    def _place(self) -> SlaveConfig | None:
        slaves = [s for s in self.cfg.slaves if s.containerizer == "mesos" and s.host not in self.unplaceable]
        if not slaves:
            return None
        load = {s.host: sum(1 for i in self.instances() if i.host == s.host) for s in slaves}
        return min(slaves, key=lambda s: load[s.host])

    def _new_instance(self, rec: PodRecord, slave: SlaveConfig) -> PodInstance:
        spec = rec.spec
        instance_id = f"{safe_path(spec.id)}.instance-{uuid.uuid1()}"
        tasks = {c.name: Task(task_id=f"{instance_id}.{c.name}", instance_id=instance_id, app_id=spec.id,
                              slave=slave, slave_id=self.reg.slave_ids[slave.host], version=spec.version,
                              container_name=f"mesos-{uuid.uuid4()}") for c in spec.containers}
        inst = PodInstance(instance_id=instance_id, pod_id=spec.id, slave=slave,
                           slave_id=self.reg.slave_ids[slave.host], version=spec.version, tasks=tasks)
        rec.instances[instance_id] = inst
        self._publish_tasks(inst)
        return inst

    def _publish_tasks(self, inst: PodInstance, condition: str | None = None) -> None:
        """One status_update_event per container task, one instance_changed_event if the
        instance's condition changed."""
        for task in inst.tasks.values():
            self.bus.publish(ev.status_update(task))
        new = condition or condition_of(inst.first())
        if new != inst.condition or condition is not None:
            inst.condition = new
            inst.status_since = timestamp()
            self.bus.publish(ev.instance_changed(inst.first(), new))

    def _allocate_ports(self, rec: PodRecord, inst: PodInstance) -> None:
        used = self.reg.used_host_ports.setdefault(inst.host, set())
        if rec.spec.host_networking:  # the world's slaves share one network namespace
            used = set().union(*self.reg.used_host_ports.values())
        free = [p for p in range(HOST_PORT_RANGE[0], HOST_PORT_RANGE[1] + 1) if p not in used]
        random.shuffle(free)
        for _, e in rec.spec.endpoints():
            if e.host_port is not None:
                inst.host_ports[e.name] = e.host_port or free.pop()
        self.reg.used_host_ports.setdefault(inst.host, set()).update(inst.host_ports.values())
        for c in rec.spec.containers:
            inst.tasks[c.name].ports = [inst.host_ports[e.name] for e in c.endpoints if e.name in inst.host_ports]

    async def _launch(self, rec: PodRecord, inst: PodInstance) -> None:
        try:
            await self._launch_containers(rec, inst)
        finally:
            inst.launching = False

    async def _launch_containers(self, rec: PodRecord, inst: PodInstance) -> None:
        spec = rec.spec
        docker = self.dockers[inst.host]
        self._allocate_ports(rec, inst)
        network = "host" if spec.host_networking else inst.slave.overlay_network
        ports: dict[str, tuple[str, int]] = {}
        if not spec.host_networking:
            for _, e in spec.endpoints():
                if e.name in inst.host_ports and e.container_port is not None:
                    for proto in e.protocol:
                        ports[f"{e.container_port}/{proto}"] = (inst.host, inst.host_ports[e.name])
        sim = {SIM_LABEL: str(_pid()), INSTANCE_LABEL: inst.instance_id}
        try:
            inst.netns_id = await asyncio.to_thread(docker.run, LaunchSpec(
                name=f"mesos-{uuid.uuid4()}", image=NETNS_IMAGE, entrypoint=["sleep"], command=["2147483647"],
                env={}, labels=sim, network_mode=network, ports=ports))
            info = await asyncio.to_thread(docker.inspect, inst.netns_id)
        except Exception as exc:  # a failed launch or a vanished container fails the instance
            self._spawn(self._instance_failed(rec, inst, None, "TASK_FAILED", f"Failed to launch container: {exc}"))
            return
        ip = container_ip(info) or inst.host  # host networking: the agent fills in its own IP (§1.1)
        for c in spec.containers:
            task = inst.tasks[c.name]
            if inst.kill_requested:
                return
            env = {**{k: v for k, v in spec.environment.items() if isinstance(v, str)},
                   **{k: v for k, v in c.environment.items() if isinstance(v, str)},
                   "MESOS_TASK_ID": task.task_id, "MARATHON_APP_ID": spec.id, "MESOS_CONTAINER_NAME": c.name}
            for e in c.endpoints:
                port = inst.host_ports.get(e.name) if spec.host_networking else e.container_port
                if port:
                    env[f"ENDPOINT_{e.name.upper().replace('-', '_')}"] = str(port)
            launch = LaunchSpec(name=task.container_name, image=c.image,
                                entrypoint=c.command[:1] if c.command else None,
                                command=c.command[1:] if c.command else None, env=env,
                                labels={TASK_LABEL: task.task_id, **sim}, network_mode=f"container:{inst.netns_id}")
            try:
                task.container_id = await asyncio.to_thread(docker.run, launch)
            except LaunchError as exc:
                self._spawn(self._instance_failed(rec, inst, task, "TASK_FAILED", str(exc)))
                return
            task.ip_addresses = [{"ipAddress": ip, "protocol": "IPv4"}]
        if inst.kill_requested:
            return
        for task in inst.tasks.values():
            task.state = "TASK_RUNNING"
            task.started_at = timestamp()
        self._publish_tasks(inst)
        log.info("pod instance %s running on %s ip=%s host ports=%s", inst.instance_id, inst.host, ip,
                 inst.host_ports)
        self.start_health(rec, inst)

    async def kill_instance(self, rec: PodRecord, inst: PodInstance) -> None:
        if inst.kill_requested:
            return
        inst.kill_requested = True
        self.stop_health(inst)
        for task in inst.tasks.values():
            task.kill_requested = True
            task.state = "TASK_KILLING"
        self._publish_tasks(inst)
        await self._remove_containers(inst)
        for task in inst.tasks.values():
            task.state = "TASK_KILLED"
        self._publish_tasks(inst)
        self.forget(rec, inst)

    async def _remove_containers(self, inst: PodInstance) -> None:
        docker = self.dockers[inst.host]
        for _ in range(200):  # a launch in flight sets the ids when it returns
            if not inst.launching:
                break
            await asyncio.sleep(0.05)
        ids = [t.container_id for t in inst.tasks.values() if t.container_id] + [inst.netns_id]
        await asyncio.gather(*(asyncio.to_thread(docker.remove, cid) for cid in ids if cid))

    def forget(self, rec: PodRecord, inst: PodInstance) -> None:
        rec.instances.pop(inst.instance_id, None)
        self.reg.used_host_ports.get(inst.host, set()).difference_update(inst.host_ports.values())

    async def _instance_failed(self, rec: PodRecord, inst: PodInstance, failed: Task | None, state: str,
                               message: str) -> None:
        """A container ended on its own: the instance is terminal, its other tasks are killed, and
        a new instance replaces it after the back-off (1 s)."""
        inst.kill_requested = True
        self.stop_health(inst)
        for task in inst.tasks.values():
            task.kill_requested = True
            task.state = state if task is failed or failed is None else "TASK_KILLED"
            task.message = message if task is failed or failed is None else ""
        self._publish_tasks(inst)
        await self._remove_containers(inst)
        self.forget(rec, inst)
        log.info("pod instance %s %s (%s); replacement in 1 s", inst.instance_id, state, message)
        await asyncio.sleep(1.0)
        if not rec.deleting and self.pods.get(rec.spec.id) is rec:
            self._scale(rec)

    def on_container_died(self, host: str, container_id: str, attributes: dict[str, str]) -> None:
        found = self.find(attributes.get(TASK_LABEL, ""))
        if found is None:
            return
        rec, inst, task = found
        if inst.kill_requested or inst.host != host:
            return
        code = attributes.get("exitCode", "?")
        state = "TASK_FINISHED" if code == "0" else "TASK_FAILED"
        self._spawn(self._instance_failed(rec, inst, task, state, f"Container exited with status {code}"))

    # ------------------------------------------------------------------ Mesos health checks

    def start_health(self, rec: PodRecord, inst: PodInstance) -> None:
        for c in rec.spec.containers:
            if c.health_check is not None:
                inst.healthy[c.name] = None
                inst.health_tasks.append(self._spawn(self._health_loop(rec, inst, c.name, c.health_check)))

    def stop_health(self, inst: PodInstance) -> None:
        for t in inst.health_tasks:
            if t is not asyncio.current_task():
                t.cancel()
        inst.health_tasks.clear()

    async def _health_loop(self, rec: PodRecord, inst: PodInstance, name: str, hc: dict[str, Any]) -> None:
        """The Mesos-level check from inside the pod's network namespace: HTTP on the endpoint's
        container port at the instance address (host mode: the host port), TCP, or a command."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        await asyncio.sleep(float(hc.get("delaySeconds", 15)))
        task = inst.tasks[name]
        while not inst.kill_requested and task.state == "TASK_RUNNING":
            ok = await self._probe(rec, inst, task, hc)
            if ok != inst.healthy.get(name):
                inst.healthy[name] = ok
                self.bus.publish(ev.status_update(task))  # a Mesos health flip is a task update
                self.bus.publish(ev.instance_health_changed(task, self.instance_healthy(inst)))
            await asyncio.sleep(float(hc.get("intervalSeconds", 60)))

    async def _probe(self, rec: PodRecord, inst: PodInstance, task: Task, hc: dict[str, Any]) -> bool:
        timeout = float(hc.get("timeoutSeconds", 20))
        if "exec" in hc:
            cmd = (hc["exec"].get("command") or {}).get("shell", "true")
            with contextlib.suppress(Exception):
                code, _ = await asyncio.wait_for(
                    asyncio.to_thread(self.dockers[inst.host].exec, task.container_id, cmd), timeout)
                return bool(code == 0)
            return False
        probe = hc.get("http") or hc.get("tcp") or {}
        endpoint = next((e for _, e in rec.spec.endpoints() if e.name == probe.get("endpoint")), None)
        if endpoint is None or not task.ip_addresses:
            return False
        if rec.spec.host_networking:
            host, port = inst.host, inst.host_ports.get(endpoint.name, 0)
        else:
            host, port = task.ip_addresses[0]["ipAddress"], endpoint.container_port or 0
        try:
            if "tcp" in hc:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
                writer.close()
                return True
            scheme = "https" if hc["http"].get("scheme") == "HTTPS" else "http"
            url = f"{scheme}://{host}:{port}{hc['http'].get('path', '/')}"
            assert self._session is not None
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=timeout), ssl=False) as resp:
                return 200 <= resp.status < 400
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    @staticmethod
    def instance_healthy(inst: PodInstance) -> bool | None:
        values = list(inst.healthy.values())
        if any(v is False for v in values):
            return False
        return True if values and all(values) else None

    async def shutdown(self) -> None:
        for t in list(self._background):
            t.cancel()
        for inst in self.instances():
            inst.kill_requested = True
        await asyncio.gather(*(self._remove_containers(i) for i in self.instances()), return_exceptions=True)
        if self._session is not None:
            with contextlib.suppress(Exception):
                await self._session.close()


def _pid() -> int:
    import os

    return os.getpid()
