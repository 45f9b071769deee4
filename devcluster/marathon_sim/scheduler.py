"""Marathon's scheduler and Mesos' task lifecycle, simplified: deployments, launches, kills, failures.

Concurrency model: one asyncio loop owns all state. A deployment is an asyncio task per app (a new
one on the same app needs `force=true`, like Marathon's app lock); its steps launch/kill tasks
concurrently, each Docker call in a thread. Every task walks
TASK_STAGING -> TASK_STARTING -> TASK_RUNNING (after a successful `docker inspect`), and ends as
TASK_KILLING -> TASK_KILLED when the simulator kills it, or TASK_FAILED / TASK_FINISHED when its
container dies on its own (seen on the slave's Docker event stream); a failed task is replaced after
the app's launch back-off (backoffSeconds, times backoffFactor per failure, capped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import re
import uuid
from typing import Any

import aiohttp

from devcluster.marathon_sim import events as ev
from devcluster.marathon_sim.app_json import AppSpec, render_app
from devcluster.marathon_sim.bus import EventBus
from devcluster.marathon_sim.clock import timestamp
from devcluster.marathon_sim.config import SimConfig, SlaveConfig
from devcluster.marathon_sim.health import run_check
from devcluster.marathon_sim.launcher import SIM_LABEL, TASK_LABEL, LaunchError, LaunchSpec, SlaveDocker, container_ip
from devcluster.marathon_sim.state import AppRecord, Deployment, HealthResult, Registry, Task
from devcluster.marathon_sim.task_ids import new_task_id

log = logging.getLogger("marathon_sim.scheduler")

HOST_PORT_RANGE = (31000, 32000)
SANDBOX = "/mnt/mesos/sandbox"


class AppLocked(Exception):
    def __init__(self, deployment_ids: list[str]) -> None:
        super().__init__("App is locked by one or more deployments.")
        self.deployment_ids = deployment_ids


def _double(v: float) -> str:
    """Scala Double.toString for the resource env vars: 0.5 -> "0.5", 256 -> "256.0"."""
    return repr(float(v))


def task_env(spec: AppSpec, task: Task, container_name: str, effective_ports: list[int],
             cfg: SimConfig) -> dict[str, str]:
    """Environment of §7 and §8.2, app `env` last so it overrides."""
    env: dict[str, str] = {
        "MESOS_TASK_ID": task.task_id, "MARATHON_APP_ID": spec.id, "MARATHON_APP_VERSION": spec.version,
        "MARATHON_APP_DOCKER_IMAGE": spec.image, "MARATHON_APP_RESOURCE_CPUS": _double(spec.cpus),
        "MARATHON_APP_RESOURCE_MEM": _double(spec.mem), "MARATHON_APP_RESOURCE_DISK": _double(spec.disk),
        "MARATHON_APP_RESOURCE_GPUS": str(spec.gpus),
    }
    if cfg.version >= (1, 9):
        env["MARATHON_APP_ENFORCE_GROUP_ROLE"] = "FALSE"
    keys = []
    for k, v in spec.labels.items():
        key = re.sub(r"[^a-zA-Z0-9_]+", "_", k).upper()
        if len(key) >= 493 or len(v) >= 512:
            continue
        keys.append(key)
        env[f"MARATHON_APP_LABEL_{key}"] = v
    env["MARATHON_APP_LABELS"] = " ".join(keys)
    env["HOST"] = task.host
    if spec.network == "host":
        declared = [(d.port if spec.require_ports else 0, d.name) for d in spec.port_definitions]
    else:
        declared = [(m.container_port, m.name) for m in spec.port_mappings]
    for i, port in enumerate(effective_ports):
        env[f"PORT{i}"] = str(port)
        requested, name = declared[i] if i < len(declared) else (0, None)
        env[f"PORT_{requested or port}"] = str(port)
        if name:
            env[f"PORT_{name.upper()}"] = str(port)
    if effective_ports:
        env["PORT"] = str(effective_ports[0])
        env["PORTS"] = ",".join(str(p) for p in effective_ports)
    env["MESOS_SANDBOX"] = SANDBOX
    env["MESOS_CONTAINER_NAME"] = container_name
    for k, v in spec.env.items():
        if isinstance(v, str):
            env[k] = v
    return env


class Scheduler:
    def __init__(self, cfg: SimConfig, registry: Registry, bus: EventBus, dockers: dict[str, SlaveDocker]) -> None:
        self.cfg = cfg
        self.reg = registry
        self.bus = bus
        self.dockers = dockers
        self.slaves: list[SlaveConfig] = list(cfg.slaves)
        self._deploying: dict[str, tuple[Deployment, asyncio.Task[None]]] = {}
        self._render_cache: dict[str, tuple[tuple[str, int], dict[str, Any]]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.launched: dict[str, tuple[str, str]] = {}  # container id -> (host, task id), for shutdown

    # ------------------------------------------------------------------ helpers

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _publish_task(self, task: Task) -> None:
        self.bus.publish(ev.status_update(task))
        self.bus.publish(ev.instance_changed(task))
        rec = self.reg.apps.get(task.app_id)
        if rec is not None:
            rec.changed.set()  # wakes the app's deployment step (`_reach`)

    def _end(self, task: Task, state: str) -> None:
        """A task reaches a terminal state: the one place placement's per-slave count goes down."""
        if task.active and task.host in self.reg.active_on:
            self.reg.active_on[task.host] -= 1
        task.state = state

    def root_group(self) -> dict[str, Any]:
        """A flat root group (apps not nested in subgroups) for heavy deployment plans. Only versions
        that can send heavy plans pay for it, and each app version is rendered once: rendering every
        app for every deployment made deploying 1,000 apps quadratic."""
        if self.cfg.version < (1, 7):  # 1.7+ sends light plans only
            apps = [self._rendered(r.spec) for r in self.reg.apps.values() if not r.deleted]
        else:
            apps = []
        return {"id": "/", "apps": apps, "groups": [], "dependencies": [],
                "version": max((a["version"] for a in apps), default=timestamp())}

    def _rendered(self, spec: AppSpec) -> dict[str, Any]:
        key = (spec.version, spec.instances)
        cached = self._render_cache.get(spec.id)
        if cached is None or cached[0] != key:
            cached = self._render_cache[spec.id] = (key, render_app(spec, self.cfg))
        return cached[1]

    def deployment_ids_for(self, app_id: str) -> list[dict[str, str]]:
        d = self._deploying.get(app_id)
        return [{"id": d[0].id}] if d else []

    # ------------------------------------------------------------------ app operations

    def _lock_or_cancel(self, app_id: str, force: bool) -> None:
        current = self._deploying.get(app_id)
        if current is None or current[1].done():
            return
        if not force and self.cfg.strict_deployment_lock:
            raise AppLocked([current[0].id])
        # without --strict-deployment-lock every change acts as `force=true`: the running deployment
        # is cancelled (deployment_failed) and the new one takes over
        current[1].cancel()

    def create_app(self, spec: AppSpec, *, client_ip: str, uri: str) -> Deployment:
        version = timestamp()
        spec.version = spec.last_scaling_at = spec.last_config_change_at = version
        self.reg.assign_service_ports(spec, None)
        original = self.root_group()
        rec = AppRecord(spec=spec, launch_delay=spec.backoff_seconds)
        self.reg.apps[spec.id] = rec
        self.bus.publish(ev.api_post(client_ip, uri, render_app(spec, self.cfg)))
        self.bus.publish(ev.group_change_success(_parent(spec.id), version))
        steps = [[{"action": "StartApplication", "app": spec.id}], [{"action": "ScaleApplication", "app": spec.id}]]
        return self._start_deployment(rec, steps, version, original)

    def update_app(self, rec: AppRecord, new: AppSpec, *, client_ip: str, uri: str, force: bool,
                   scale_only: bool) -> Deployment:
        self._lock_or_cancel(rec.spec.id, force)
        original = self.root_group()
        version = timestamp()
        old = rec.spec
        restart = not scale_only and new.config_key() != old.config_key()
        new.version = version
        new.last_scaling_at = version
        new.last_config_change_at = version if restart else old.last_config_change_at
        self.reg.assign_service_ports(new, old)
        rec.spec = new
        if restart:
            rec.launch_delay = new.backoff_seconds  # Marathon resets the launch delay on a config change
        self.bus.publish(ev.api_post(client_ip, uri, render_app(new, self.cfg)))
        self.bus.publish(ev.group_change_success(_parent(new.id), version))
        action = "RestartApplication" if restart else "ScaleApplication"
        return self._start_deployment(rec, [[{"action": action, "app": new.id}]], version, original)

    def delete_app(self, rec: AppRecord, *, force: bool) -> Deployment:
        self._lock_or_cancel(rec.spec.id, force)
        original = self.root_group()
        version = timestamp()
        rec.deleted = True
        self.bus.publish(ev.group_change_success(_parent(rec.spec.id), version))
        return self._start_deployment(rec, [[{"action": "StopApplication", "app": rec.spec.id}]], version, original)

    def _start_deployment(self, rec: AppRecord, steps: list[list[dict[str, str]]], version: str,
                          original: dict[str, Any]) -> Deployment:
        dep = Deployment(id=str(uuid.uuid4()), version=version, steps=steps, affected_apps=[rec.spec.id])
        self.reg.deployments[dep.id] = dep
        task = self._spawn(self._run_deployment(rec, dep, original))
        self._deploying[rec.spec.id] = (dep, task)
        return dep

    async def _run_deployment(self, rec: AppRecord, dep: Deployment, original: dict[str, Any]) -> None:
        target = self.root_group()
        groups = (original, target)
        try:
            for i, step in enumerate(dep.steps):
                dep.current_step = i + 1
                self.bus.publish(ev.deployment_step("deployment_info", dep, i, groups))
                for action in step:
                    await self._perform(rec, action["action"])
                self.bus.publish(ev.deployment_step("deployment_step_success", dep, i, groups))
            self.bus.publish(ev.deployment_done("deployment_success", dep, groups))
        except asyncio.CancelledError:
            self.bus.publish(ev.deployment_done("deployment_failed", dep, groups, "The upgrade has been cancelled"))
            raise
        except Exception as exc:
            log.exception("deployment %s failed", dep.id)
            self.bus.publish(ev.deployment_done("deployment_failed", dep, groups, str(exc)))
        finally:
            self.reg.deployments.pop(dep.id, None)
            current = self._deploying.get(rec.spec.id)
            if current and current[0] is dep:
                del self._deploying[rec.spec.id]

    async def _perform(self, rec: AppRecord, action: str) -> None:
        if action == "StartApplication":
            return
        if action == "StopApplication":
            await asyncio.gather(*(self.kill_task(rec, t) for t in rec.active_tasks()))
            self.reg.apps.pop(rec.spec.id, None)
            self.bus.publish(ev.app_terminated(rec.spec.id))
            return
        if action == "RestartApplication":
            await self._replace(rec)
            return
        await self._reach(rec, fresh_only=False)

    def _usable(self, rec: AppRecord, t: Task) -> bool:
        """Counts towards a deployment step: running, not being killed, healthy if the app has
        health checks, ready if it has readiness checks (Marathon's ReadinessBehavior)."""
        return (t.state == "TASK_RUNNING" and not t.kill_requested
                and (not rec.spec.health_checks or bool(t.healthy))
                and (not rec.spec.readiness_checks or t.ready))

    async def _replace(self, rec: AppRecord) -> None:
        """RestartApplication as Marathon's TaskReplaceActor does it, by the app's upgradeStrategy:
        at least ceil(instances x minimumHealthCapacity) tasks stay up and at most
        floor(instances x (1 + maximumOverCapacity)) exist. Old tasks above the minimum are killed at
        once; new ones start within the capacity; each new task that becomes healthy and ready lets
        one more old task go. With hostname:UNIQUE a new task waits for a free slave, as Marathon
        waits for a matching offer."""
        spec = rec.spec
        n = spec.instances
        min_healthy = math.ceil(n * spec.minimum_health_capacity)
        max_capacity = max(n, math.floor(n * (1 + spec.maximum_over_capacity)))
        while True:
            old = [t for t in rec.active_tasks() if t.version != spec.version and not t.kill_requested]
            new = [t for t in rec.active_tasks() if t.version == spec.version and not t.kill_requested]
            ready_new = [t for t in new if self._usable(rec, t)]
            if not old and len(ready_new) >= n:
                return
            keep_old = max(0, min(len(old), min_healthy - len(ready_new)))
            # the ones not (yet) running go first, then the oldest
            victims = sorted(old, key=lambda t: (t.state == "TASK_RUNNING", t.staged_at))[:len(old) - keep_old]
            for t in victims:
                self._spawn(self.kill_task(rec, t))
            occupying = [t for t in rec.active_tasks() if t.version != spec.version] + new
            room = min(n - len(new), max_capacity - len(occupying))
            if room > 0:
                self.launch(rec, room)
            await asyncio.sleep(0.1)

    async def _reach(self, rec: AppRecord, *, fresh_only: bool) -> None:
        """Scale to `instances` and wait until that many tasks of the current version run (and are
        healthy, if the app has health checks), like a deployment step."""
        version = rec.spec.version
        current = [t for t in rec.active_tasks() if not t.kill_requested]
        if fresh_only:
            current = [t for t in current if t.version == version]
        excess = len(current) - rec.spec.instances
        if excess > 0:
            # newest first, the ones not yet running before those that are
            victims = sorted(current, key=lambda t: (t.state == "TASK_RUNNING", t.staged_at), reverse=False)[:excess]
            await asyncio.gather(*(self.kill_task(rec, t) for t in victims))
        while True:
            rec.changed.clear()
            alive = [t for t in rec.active_tasks() if not t.kill_requested
                     and (not fresh_only or t.version == version)]
            if len(alive) < rec.spec.instances:  # again and again: a constraint may let only some start
                self.launch(rec, rec.spec.instances - len(alive))
            ready = [t for t in alive if self._usable(rec, t)]
            if len(ready) >= rec.spec.instances:
                return
            # a task state change wakes this at once; health and readiness results (and a slave
            # freed by another app) are seen by the poll. 10,000 deployments each polling every
            # 50 ms kept the loop busy with nothing to do (issue 20)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05 if self._polled(rec) else 2.0):  # no task per wait
                    await rec.changed.wait()

    @staticmethod
    def _polled(rec: AppRecord) -> bool:
        """Whether a deployment step of `rec` can become done without a task state change: health
        and readiness results, and constraints that wait for a slave (hostname UNIQUE). Others
        are woken by their tasks' changes; their slow poll only covers a launch that found no
        slave (none configured, or only Weave-proxy slaves for a container-network app)."""
        return bool(rec.spec.health_checks or rec.spec.readiness_checks or rec.spec.constraints)

    # ------------------------------------------------------------------ tasks

    def _place(self, n: int, rec: AppRecord | None = None) -> list[SlaveConfig]:
        """Spread: each new task goes to the slave with the fewest active tasks (ties: slave order).
        Constraint `["hostname", "UNIQUE"]` leaves out the slaves where the app has an active task (one
        being killed still holds its slave until it is gone, as in Marathon); fewer than `n` slaves
        may come back then, and the rest waits, like a Marathon launch waiting for a matching offer."""
        counts = {s.host: self.reg.active_on.get(s.host, 0) for s in self.slaves}
        candidates = list(self.slaves)
        if rec is not None:
            candidates = [s for s in candidates if self._may_run(rec.spec, s)]
        unique = rec is not None and any(isinstance(c, list) and c[:2] == ["hostname", "UNIQUE"]
                                         for c in rec.spec.constraints)
        if unique and rec is not None:
            taken = {t.host for t in rec.tasks.values() if t.active}
            candidates = [s for s in candidates if s.host not in taken]
        out = []
        for _ in range(n):
            if not candidates:
                break
            slave = min(candidates, key=lambda s: counts[s.host])
            counts[slave.host] += 1
            out.append(slave)
            if unique:
                candidates.remove(slave)
        return out

    @staticmethod
    def _may_run(spec: AppSpec, slave: SlaveConfig) -> bool:
        """Constraints `["hostname", "CLUSTER", value]` and `["hostname", "LIKE", regex]` (Marathon's
        field `hostname` is the slave's host); and no app on a named container network goes to a
        Weave-proxy slave: that slave has no such Docker network, and a cluster mixing layouts
        keeps those apps off it with a constraint (reference weave.md §1.3). `container.type: MESOS`
        apps run only on a Mesos-containerizer (CNI) slave, and only they run there."""
        for c in spec.constraints:
            if isinstance(c, list) and len(c) == 3 and c[0] == "hostname":
                if c[1] == "CLUSTER" and slave.host != c[2]:
                    return False
                if c[1] == "LIKE" and not re.fullmatch(str(c[2]), slave.host):
                    return False
        if (slave.containerizer == "mesos") != (spec.container_type == "MESOS"):
            return False
        return not (slave.weave_proxy_dir and spec.container_networking)

    def launch(self, rec: AppRecord, n: int) -> list[Task]:
        if not self.slaves:
            log.error("no slaves: cannot launch %d tasks of %s", n, rec.spec.id)
            return []
        tasks = []
        for slave in self._place(n, rec):
            task_id, instance_id = new_task_id(rec.spec.id, instance_style=self.cfg.instance_task_ids)
            task = Task(task_id=task_id, instance_id=instance_id, app_id=rec.spec.id, slave=slave,
                        slave_id=self.reg.slave_ids[slave.host], version=rec.spec.version,
                        container_name=f"mesos-{uuid.uuid4()}")
            rec.tasks[task_id] = task
            self.reg.active_on[slave.host] = self.reg.active_on.get(slave.host, 0) + 1
            tasks.append(task)
            self._publish_task(task)  # TASK_STAGING
            self._spawn(self._start_task(rec, task))
        return tasks

    def _host_ports(self, spec: AppSpec, slave: SlaveConfig, taken: set[int]) -> list[int | None]:
        """Host port per port index (None: no host port, a container network without hostPort)."""
        used = self.reg.used_host_ports.setdefault(slave.host, set()) | taken
        if spec.network == "host":
            # the test world's slaves share one network namespace: a host-networked task must not
            # take a port another slave's task listens on (separate machines would not care)
            for ports in self.reg.used_host_ports.values():
                used = used | ports
        out: list[int | None] = []
        if spec.network == "host":
            wanted: list[int | None] = [d.port if spec.require_ports else 0 for d in spec.port_definitions]
        else:
            wanted = [m.host_port for m in spec.port_mappings]
        free: list[int] = []
        if 0 in wanted:  # only then: the list is a walk over the whole range
            free = [p for p in range(HOST_PORT_RANGE[0], HOST_PORT_RANGE[1] + 1) if p not in used]
            random.shuffle(free)
        for w in wanted:
            out.append(None if w is None else (w or free.pop()))
        return out

    async def _start_task(self, rec: AppRecord, task: Task) -> None:
        spec = rec.spec
        docker = self.dockers[task.host]
        taken: set[int] = set()
        container_id = ""
        for attempt in range(5):
            host_ports = self._host_ports(spec, task.slave, taken)
            task.ports = [p for p in host_ports if p is not None]
            self.reg.used_host_ports[task.host].update(task.ports)
            launch = self._launch_spec(spec, task, host_ports)
            try:
                container_id = task.container_id = await asyncio.to_thread(docker.run, launch)
                break
            except LaunchError as exc:
                self.reg.used_host_ports[task.host].difference_update(task.ports)
                if exc.port_clash and attempt < 4:
                    taken |= await asyncio.to_thread(docker.published_ports)
                    taken |= set(task.ports)
                    continue
                if task.active:
                    await self._task_failed(rec, task, "TASK_FAILED", str(exc))
                return
        self.launched[container_id] = (task.host, task.task_id)
        if task.kill_requested or not task.active:
            return
        task.state = "TASK_STARTING"
        self._publish_task(task)
        try:
            info = await asyncio.to_thread(docker.inspect, container_id)
        except Exception as exc:  # container vanished between start and inspect
            if task.active and not task.kill_requested:
                await self._task_failed(rec, task, "TASK_FAILED", f"docker inspect failed: {exc}")
            return
        if not task.active or task.kill_requested:
            return
        ip = container_ip(info)
        task.ip_addresses = [{"ipAddress": ip or task.host, "protocol": "IPv4"}]
        task.state = "TASK_RUNNING"
        task.started_at = timestamp()
        self._publish_task(task)
        log.info("%s running on %s as %s ip=%s ports=%s", task.task_id, task.host, task.container_name, ip,
                 task.ports)
        self._start_health(rec, task)
        if spec.readiness_checks:
            self._spawn(self._readiness(rec, task))

    async def _readiness(self, rec: AppRecord, task: Task) -> None:
        """Marathon's ReadinessCheckExecutor: GET `path` on the task's port named `portName` every
        `intervalSeconds` until every check answers one of `httpStatusCodesForReady`."""
        spec = rec.spec
        names = ([d.name for d in spec.port_definitions] if spec.network == "host"
                 else [m.name for m in spec.port_mappings])
        if self._session is None:
            self._session = aiohttp.ClientSession()
        pending = list(spec.readiness_checks)
        while pending and task.active and not task.kill_requested:
            for rc in list(pending):
                index = names.index(rc["portName"]) if rc["portName"] in names else None
                if index is None or index >= len(task.ports):
                    log.warning("%s: readiness check %s: no port named %s", task.task_id, rc["name"], rc["portName"])
                    return
                scheme = "https" if rc["protocol"] == "HTTPS" else "http"
                url = f"{scheme}://{task.host}:{task.ports[index]}{rc['path']}"
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=rc["timeoutSeconds"]),
                                                 ssl=scheme != "https") as resp:
                        if resp.status in rc["httpStatusCodesForReady"]:
                            pending.remove(rc)
            if pending:
                await asyncio.sleep(min(float(c["intervalSeconds"]) for c in pending))
        task.ready = not pending

    def _launch_spec(self, spec: AppSpec, task: Task, host_ports: list[int | None]) -> LaunchSpec:
        slave = task.slave
        if spec.network == "host":
            effective = [p or 0 for p in host_ports]
            network_mode = "host"
        else:
            effective = []
            for m, hp in zip(spec.port_mappings, host_ports, strict=True):
                effective.append(hp if hp is not None else (m.container_port or random.randint(1025, 65535)))
            name = spec.network_name
            # BRIDGE and the `weave` container network are the slave's overlay network in this world
            network_mode = slave.overlay_network if spec.network == "bridge" or name == "weave" else str(name)
        ports: dict[str, tuple[str, int]] = {}
        if network_mode != "host":
            for m, hp in zip(spec.port_mappings, host_ports, strict=True):
                if hp is None:
                    continue
                for proto in m.protocol.split(","):
                    ports[f"{m.container_port}/{proto}"] = (slave.host, hp)
        labels = {TASK_LABEL: task.task_id, SIM_LABEL: str(_pid())}
        for p in spec.parameters:
            if p["key"] == "label" and "=" in p["value"]:
                k, _, v = p["value"].partition("=")
                labels[k] = v
        if spec.args:
            entrypoint, command = None, list(spec.args)
        elif spec.cmd:
            entrypoint, command = ["/bin/sh"], ["-c", spec.cmd]  # Mesos: shell=true -> sh -c
        else:
            entrypoint, command = None, None
        return LaunchSpec(name=task.container_name, image=spec.image, entrypoint=entrypoint, command=command,
                          env=task_env(spec, task, task.container_name, effective, self.cfg), labels=labels,
                          network_mode=network_mode, ports=ports, privileged=spec.privileged,
                          force_pull=spec.force_pull_image,
                          extra_hosts=dict(e.split(":", 1) for e in self.cfg.extra_hosts),
                          volumes=[f"{v['hostPath']}:{v['containerPath']}:{v['mode'].lower()}" for v in spec.volumes])

    async def kill_task(self, rec: AppRecord, task: Task) -> None:
        """Marathon asked: TASK_KILLING, remove the container (SIGKILL), TASK_KILLED."""
        if task.kill_requested or not task.active:
            return
        task.kill_requested = True
        self._stop_health(task)
        task.state = "TASK_KILLING"
        self._publish_task(task)
        # a launch still in flight sets container_id when it returns; wait briefly for it
        for _ in range(200):
            if task.container_id is not None:
                break
            await asyncio.sleep(0.05)
        if task.container_id:
            grace = rec.spec.task_kill_grace_period_seconds
            if grace:  # SIGTERM, SIGKILL after the grace period (docker stop -t), then the removal
                await asyncio.to_thread(self.dockers[task.host].stop, task.container_id, grace)
            await asyncio.to_thread(self.dockers[task.host].remove, task.container_id)
            self.launched.pop(task.container_id, None)
        self._end(task, "TASK_KILLED")
        task.message = "Container exited with status 137"
        self._publish_task(task)
        self._forget(rec, task)

    def _forget(self, rec: AppRecord, task: Task) -> None:
        rec.tasks.pop(task.task_id, None)
        self.reg.used_host_ports.get(task.host, set()).difference_update(task.ports)

    async def _task_failed(self, rec: AppRecord, task: Task, state: str, message: str) -> None:
        """A task ended without being asked to: record, forget, replace after the back-off."""
        self._stop_health(task)
        self._end(task, state)
        task.message = message
        self._publish_task(task)
        rec.last_task_failure = {"appId": task.app_id, "host": task.host, "message": message,
                                 "state": state, "taskId": task.task_id, "timestamp": timestamp(),
                                 "version": task.version, "slaveId": task.slave_id}
        if task.container_id:
            await asyncio.to_thread(self.dockers[task.host].remove, task.container_id)
            self.launched.pop(task.container_id, None)
        self._forget(rec, task)
        delay = rec.launch_delay or rec.spec.backoff_seconds
        rec.launch_delay = min(delay * rec.spec.backoff_factor, rec.spec.max_launch_delay_seconds)
        log.info("%s %s (%s); replacement in %.1f s", task.task_id, state, message, delay)
        self._spawn(self._replace_later(rec, delay))

    async def _replace_later(self, rec: AppRecord, delay: float) -> None:
        await asyncio.sleep(delay)
        if rec.deleted or self.reg.apps.get(rec.spec.id) is not rec:
            return
        missing = rec.spec.instances - len([t for t in rec.active_tasks() if not t.kill_requested])
        if missing > 0:
            self.launch(rec, missing)

    def on_container_died(self, host: str, container_id: str, attributes: dict[str, str]) -> None:
        """Called on the loop for each Docker `die` event of the slave."""
        task_id = attributes.get(TASK_LABEL)
        found = self.reg.find_task(task_id) if task_id else None
        if found is None:
            return
        rec, task = found
        if task.kill_requested or not task.active or task.host != host:
            return
        code = attributes.get("exitCode", "?")
        state = "TASK_FINISHED" if code == "0" else "TASK_FAILED"
        task.container_id = task.container_id or container_id
        self._spawn(self._task_failed(rec, task, state, f"Container exited with status {code}"))

    # ------------------------------------------------------------------ health

    def _start_health(self, rec: AppRecord, task: Task) -> None:
        if not rec.spec.health_checks:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession()
        task.health = [HealthResult(check=hc) for hc in rec.spec.health_checks]
        for result in task.health:
            task.health_tasks.append(self._spawn(
                run_check(task, rec.spec, result, self.dockers[task.host], self._session, self._report_health)))

    def _stop_health(self, task: Task) -> None:
        for t in task.health_tasks:
            if t is not asyncio.current_task():
                t.cancel()
        task.health_tasks.clear()

    async def _report_health(self, task: Task, result: HealthResult, ok: bool, cause: str | None) -> None:
        found = self.reg.find_task(task.task_id)
        if found is None or not task.active or task.kill_requested:
            return
        rec = found[0]
        now = timestamp()
        before_alive, before_instance = result.alive, task.healthy
        if ok:
            result.consecutive_failures = 0
            result.first_success = result.first_success or now
            result.last_success = now
            result.alive = True
        else:
            result.consecutive_failures += 1
            result.last_failure = now
            result.last_failure_cause = cause
            result.alive = False
        check = result.check
        if not ok and check.marathon_level:
            self.bus.publish(ev.failed_health_check(self.cfg, task, check))
        if result.alive != before_alive:
            if check.marathon_level:
                self.bus.publish(ev.health_status_changed(task, bool(result.alive)))
            else:
                self.bus.publish(ev.status_update(task))  # a Mesos health flip is a task update
        if task.healthy != before_instance:
            self.bus.publish(ev.instance_health_changed(task, task.healthy))
        if ok:
            return
        limit = check.max_consecutive_failures
        if check.marathon_level and limit > 0 and result.consecutive_failures >= limit:
            self.bus.publish(ev.unhealthy_instance_kill(task, cause or "unhealthy", now))
            await self._kill_and_replace(rec, task)
        elif not check.marathon_level and result.consecutive_failures >= max(limit, 1):
            await self._kill_and_replace(rec, task)

    async def _kill_and_replace(self, rec: AppRecord, task: Task) -> None:
        await self.kill_task(rec, task)
        self._spawn(self._replace_later(rec, rec.launch_delay or rec.spec.backoff_seconds))

    # ------------------------------------------------------------------ shutdown

    async def shutdown(self) -> None:
        """Remove every container this process launched (SIGTERM handler)."""
        for t in self.reg.all_tasks():
            t.kill_requested = True  # their `die` events are ours, not failures
        for _, deploying in list(self._deploying.values()):
            deploying.cancel()
        for background in list(self._background):
            background.cancel()
        removals = [asyncio.to_thread(self.dockers[host].remove, cid) for cid, (host, _) in self.launched.items()
                    if host in self.dockers]
        await asyncio.gather(*removals, return_exceptions=True)
        removed = len(removals)
        # launches still in flight when we stopped: find them by the label this process put on them
        await asyncio.sleep(0.3)
        for docker in self.dockers.values():
            for cid in await asyncio.to_thread(docker.containers_labelled, f"{SIM_LABEL}={_pid()}"):
                await asyncio.to_thread(docker.remove, cid)
                removed += 1
        log.info("removed %d containers", removed)
        self.launched.clear()
        if self._session is not None:
            with contextlib.suppress(Exception):
                await self._session.close()


def _parent(app_id: str) -> str:
    parent = app_id.rsplit("/", 1)[0]
    return parent or "/"


def _pid() -> int:
    import os

    return os.getpid()
