"""In-memory truth of the simulated Marathon: apps, their tasks, running deployments.

Single-threaded by design: everything here is touched only from the asyncio loop (Docker calls run
in threads but hand their results back to the loop), so no locks guard the dicts. Per-app
`asyncio.Lock`s serialise deployments of one app, the way Marathon locks an app during a deployment.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

from devcluster.marathon_sim.app_json import AppSpec, HealthCheck
from devcluster.marathon_sim.clock import timestamp
from devcluster.marathon_sim.config import SimConfig, SlaveConfig

TERMINAL = {"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_LOST", "TASK_DROPPED",
            "TASK_GONE", "TASK_GONE_BY_OPERATOR", "TASK_UNKNOWN"}
CONDITION = {"TASK_STAGING": "Staging", "TASK_STARTING": "Starting", "TASK_RUNNING": "Running",
             "TASK_KILLING": "Killing", "TASK_KILLED": "Killed", "TASK_FAILED": "Failed",
             "TASK_FINISHED": "Finished", "TASK_ERROR": "Error", "TASK_UNREACHABLE": "Unreachable",
             "TASK_GONE": "Gone", "TASK_GONE_BY_OPERATOR": "Gone", "TASK_DROPPED": "Dropped",
             "TASK_UNKNOWN": "Unknown"}


def condition_of(task: Task) -> str:
    """Marathon's instance condition name for the task (`instance_changed_event`'s `condition`)."""
    if task.unreachable_inactive:
        return "UnreachableInactive"
    return CONDITION.get(task.state, "Unknown")


@dataclass
class HealthResult:
    """One health check's state for one task (the task JSON's healthCheckResults entry)."""

    check: HealthCheck
    alive: bool | None = None  # None: no result yet
    consecutive_failures: int = 0
    first_success: str | None = None
    last_success: str | None = None
    last_failure: str | None = None
    last_failure_cause: str | None = None

    def to_json(self, instance_id: str) -> dict[str, Any]:
        out: dict[str, Any] = {"alive": bool(self.alive), "consecutiveFailures": self.consecutive_failures}
        for key, val in (("firstSuccess", self.first_success), ("lastSuccess", self.last_success),
                         ("lastFailure", self.last_failure), ("lastFailureCause", self.last_failure_cause)):
            if val is not None:
                out[key] = val
        out["instanceId"] = instance_id
        return out


@dataclass
class Task:
    task_id: str
    instance_id: str
    app_id: str
    slave: SlaveConfig
    slave_id: str
    version: str
    state: str = "TASK_STAGING"
    message: str = ""
    staged_at: str = field(default_factory=timestamp)
    started_at: str | None = None
    ports: list[int] = field(default_factory=list)  # host ports, by port index
    ip_addresses: list[dict[str, str]] = field(default_factory=list)
    container_name: str = ""
    container_id: str | None = None
    kill_requested: bool = False
    ready: bool = False  # every readiness check of the app answered one of its ready codes
    # its agent is partitioned (TASK_UNREACHABLE) for longer than unreachableStrategy.inactiveAfterSeconds:
    # no longer active to Marathon (marathon-ucr-pods.md §3.2), still listed until the expunge
    unreachable_inactive: bool = False
    health: list[HealthResult] = field(default_factory=list)
    health_tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def host(self) -> str:
        return self.slave.host

    @property
    def active(self) -> bool:
        return self.state not in TERMINAL

    @property
    def healthy(self) -> bool | None:
        """Instance health as Marathon derives it: None until every check has a result."""
        if not self.health:
            return None
        if any(h.alive is False for h in self.health):
            return False
        if all(h.alive for h in self.health):
            return True
        return None

    def to_json(self, spec: AppSpec, cfg: SimConfig) -> dict[str, Any]:
        """The REST task object (§5.2); 1.4 omits empty arrays and inactive-only fields."""
        omit = cfg.omit_empty_task_fields
        results = [h.to_json(self.instance_id) for h in self.health if h.alive is not None]
        out: dict[str, Any] = {"appId": self.app_id}
        if results or not omit:
            out["healthCheckResults"] = results
        out["host"] = self.host
        out["id"] = self.task_id
        if self.ip_addresses or not omit:
            out["ipAddresses"] = list(self.ip_addresses)
        # UnreachableInactive is not active to Marathon: TaskWrites leaves out ports, stagedAt,
        # startedAt and version (marathon-ucr-pods.md §3.2); ipAddresses stay
        marathon_active = self.active and not self.unreachable_inactive
        if marathon_active or not omit:
            out["ports"] = list(self.ports) if marathon_active else []
        sports = spec.service_ports()
        if sports or not omit:
            out["servicePorts"] = sports
        out["slaveId"] = self.slave_id
        out["state"] = self.state
        if marathon_active:
            out["stagedAt"] = self.staged_at
            if self.started_at:
                out["startedAt"] = self.started_at
            out["version"] = self.version
        out["localVolumes"] = []
        if cfg.role_field:
            out["role"] = "*"
        return out


@dataclass
class Deployment:
    id: str
    version: str
    steps: list[list[dict[str, str]]]
    affected_apps: list[str]
    current_step: int = 1

    def plan_light(self) -> dict[str, Any]:
        return {"id": self.id, "steps": [{"actions": a} for a in self.steps], "version": self.version}

    def to_json(self) -> dict[str, Any]:
        step = self.steps[self.current_step - 1] if self.steps else []
        return {"id": self.id, "version": self.version, "affectedApps": list(self.affected_apps),
                "affectedPods": [], "steps": [{"actions": a} for a in self.steps],
                "currentActions": [{"action": a["action"], "app": a["app"], "readinessCheckResults": []}
                                   for a in step],
                "currentStep": self.current_step, "totalSteps": len(self.steps)}


@dataclass
class AppRecord:
    spec: AppSpec
    tasks: dict[str, Task] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    launch_delay: float = 0.0  # current back-off for replacements; grows by backoffFactor
    last_task_failure: dict[str, Any] | None = None
    deleted: bool = False
    # set on every state change of one of its tasks (Scheduler._publish_task): a deployment step
    # waits on it instead of polling, so 10,000 deployments at once do not spin the loop
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def active_tasks(self) -> list[Task]:
        return [t for t in self.tasks.values() if t.active]


class Registry:
    """Apps, deployments, service- and host-port bookkeeping."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.apps: dict[str, AppRecord] = {}
        self.deployments: dict[str, Deployment] = {}
        self.framework_id = f"{uuid.uuid4()}-0000"
        master = uuid.uuid4()
        self.slave_ids = {s.host: f"{master}-S{i}" for i, s in enumerate(cfg.slaves)}
        self._next_service_port = 10000
        # service port -> ids of the apps that were given it (checked against the app's current
        # ports before use): picking a port must not walk every app (10,000 apps: quadratic)
        self._service_port_apps: dict[int, set[str]] = {}
        self.used_host_ports: dict[str, set[int]] = {s.host: set() for s in cfg.slaves}
        # active (non-terminal) tasks per slave, kept by the scheduler where a task is launched and
        # where it ends: placement reads it instead of walking every task per launch
        self.active_on: dict[str, int] = {s.host: 0 for s in cfg.slaves}

    def all_tasks(self) -> list[Task]:
        return [t for rec in self.apps.values() for t in rec.tasks.values()]

    def find_task(self, task_id: str) -> tuple[AppRecord, Task] | None:
        for rec in self.apps.values():
            if task_id in rec.tasks:
                return rec, rec.tasks[task_id]
        return None

    def assign_service_ports(self, spec: AppSpec, previous: AppSpec | None) -> None:
        """Service ports 0 get 10000+ (Marathon's default range), kept across updates by index."""
        old = previous.service_ports() if previous else []

        def used(port: int) -> bool:
            """Another app that exists has `port` as one of its service ports now."""
            for app_id in self._service_port_apps.get(port, ()):
                rec = self.apps.get(app_id)
                if app_id != spec.id and rec is not None and port in rec.spec.service_ports():
                    return True
            return False

        def pick(i: int) -> int:
            if i < len(old) and old[i]:
                return old[i]
            while used(self._next_service_port):
                self._next_service_port += 1
            self._next_service_port += 1
            return self._next_service_port - 1

        for i, m in enumerate(spec.port_mappings):
            if not m.service_port:
                m.service_port = pick(i)
        for i, d in enumerate(spec.port_definitions):
            if not d.port:
                d.port = pick(i)
        for port in spec.service_ports():
            if port:
                self._service_port_apps.setdefault(port, set()).add(spec.id)

    def tasks_on(self, host: str) -> int:
        return sum(1 for t in self.all_tasks() if t.active and t.host == host)
