"""In-memory stand-ins for Marathon, Docker and the Consul agents, for fast reconciler tests.

They implement just the methods the reconciler calls, with the same semantics as the real
clients (owned() returns only registrations with our Meta; deregistering an unknown id is False).
The end-to-end tests run the same logic against the simulators and real engines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from service.consul.agents import ConsulError
from service.model import App, Container, HealthCheck, OwnedService, PodsRead, PortMapping, Registration, Task
from service.ownership import META_APP_ID, is_ours


def web_app(app_id: str = "/web/customer1/site1", checks: tuple[HealthCheck, ...] = ()) -> App:
    return App(id=app_id, version="v1", port_mappings=(PortMapping(container_port=80, host_port=0, name="http"),),
               health_checks=checks)


@dataclass
class FakeMarathon:
    apps: dict[str, App] = field(default_factory=dict)
    tasks: dict[str, dict[str, Task]] = field(default_factory=dict)
    reads: int = 0

    async def app_with_tasks(self, app_id: str) -> tuple[App, list[Task]] | None:
        self.reads += 1
        if app_id not in self.apps:
            return None
        return self.apps[app_id], list(self.tasks.get(app_id, {}).values())

    async def apps_with_tasks(self) -> list[tuple[App, list[Task]]]:
        self.reads += 1
        return [(app, list(self.tasks.get(app.id, {}).values())) for app in self.apps.values()]

    # Pods, as the client gives them (service.marathon.pods): an App and its instances as Tasks.
    pods: dict[str, App] = field(default_factory=dict)
    instances: dict[str, dict[str, Task]] = field(default_factory=dict)
    malformed_pods: dict[str, str] = field(default_factory=dict)
    pods_supported: bool = True
    pod_reads: int = 0

    async def pods_with_instances(self) -> PodsRead:
        self.pod_reads += 1
        if not self.pods_supported:
            return PodsRead(supported=False)
        return PodsRead(pods=tuple((pod, tuple(self.instances.get(pod.id, {}).values()))
                                   for pod in self.pods.values()), malformed=dict(self.malformed_pods))

    async def pod_with_instances(self, pod_id: str) -> tuple[App, list[Task]] | None:
        self.pod_reads += 1
        if pod_id not in self.pods:
            return None
        return self.pods[pod_id], list(self.instances.get(pod_id, {}).values())


@dataclass
class FakeLookup:
    by_task: dict[str, Container] = field(default_factory=dict)  # task id -> container
    hosts: dict[str, str] = field(default_factory=dict)  # task id -> slave
    listings: int = 0
    finds: int = 0

    async def find(self, host: str, task_id: str) -> Container | None:
        self.finds += 1
        return self.by_task.get(task_id) if self.hosts.get(task_id, host) == host else None

    async def containers(self, host: str) -> dict[str, Container]:
        self.listings += 1
        return {tid: c for tid, c in self.by_task.items() if self.hosts.get(tid) == host}

    async def close(self) -> None:
        return None


class FakeAgent:
    def __init__(self, host: str) -> None:
        self.host = host
        self.url = f"http://{host}:8500"
        self.services: dict[str, Registration] = {}
        self.foreign: dict[str, dict[str, object]] = {}
        self.status: dict[str, str] = {}
        self.writes = 0
        self.reads = 0
        self.down = False
        self.refuse: ConsulError | None = None  # every call answers this (a REPORT, say) when set

    def _check(self) -> None:
        if self.down:
            raise ConsulError(f"consul agent {self.url}: connection refused")
        if self.refuse is not None:
            raise self.refuse

    async def node_name(self) -> str:
        self._check()
        return f"node-{self.host}"

    async def owned(self, app_id: str | None = None,
                    held: Callable[[str], Registration | None] | None = None) -> dict[str, OwnedService]:
        self._check()
        self.reads += 1
        return {
            sid: OwnedService(reg, {c.check_id: c.kind for c in reg.checks},
                              {c.check_id: self.status.get(c.check_id, "critical") for c in reg.checks})
            for sid, reg in self.services.items()
            if is_ours(reg.meta_dict) and (app_id is None or reg.meta_dict.get(META_APP_ID) == app_id)
        }

    async def register(self, reg: Registration) -> None:
        self._check()
        self.writes += 1
        self.services[reg.service_id] = reg

    async def deregister(self, service_id: str) -> bool:
        self._check()
        self.writes += 1
        return self.services.pop(service_id, None) is not None

    async def set_ttl(self, check_id: str, status: str, output: str) -> None:
        self._check()
        self.writes += 1
        self.status[check_id] = status

    async def catalog_node_addresses(self) -> list[str]:
        self._check()
        return []

    async def close(self) -> None:
        return None


class FakeAgents:
    per_host = True

    def __init__(self) -> None:
        self.agents: dict[str, FakeAgent] = {}

    def agent(self, host: str) -> FakeAgent:
        return self.agents.setdefault(host, FakeAgent(host))

    def url_for(self, host: str) -> str:
        return self.agent(host).url

    def managed(self) -> dict[str, Registration]:
        return {sid: reg for a in self.agents.values() for sid, reg in a.services.items()}

    def writes(self) -> int:
        return sum(a.writes for a in self.agents.values())

    def reads(self) -> int:
        return sum(a.reads for a in self.agents.values())

    async def close(self) -> None:
        return None
