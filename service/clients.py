"""One small interface per outside system, as the reconciler uses it (after registrator's
`bridge/types.go`).

The reconcile package depends on these Protocols, not on the concrete clients, so the unit tests'
in-memory fakes (tests/unit/fakes.py) satisfy the same types as `MarathonClient`, `ContainerLookup`
and `ConsulAgents` without casts, and a new source (another IP lookup, a TLS client) only has to
offer these methods. Each method's failure is an exception of the client's own module
(`MarathonError`, `DockerLookupError`, `ConsulError`), all `service.errors.CallError`s carrying a
verdict: the per-app step turns a RETRY into a retry of the affected work and a REPORT into work
left to the next resync (docs/architecture.md §8).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from service.lease import AliveCheck
from service.model import App, Container, OwnedService, PodsRead, Registration, Task


class MarathonApps(Protocol):
    async def app_with_tasks(self, app_id: str) -> tuple[App, list[Task]] | None:
        """One app with its tasks, None when Marathon does not know it."""
        ...

    async def apps_with_tasks(self) -> list[tuple[App, list[Task]]]:
        """Every app with its tasks, in one read (the resync's view)."""
        ...

    async def pods_with_instances(self) -> PodsRead:
        """Every pod with its instances (`App`, `Task`s), in one read; none on a Marathon without pods."""
        ...

    async def pod_with_instances(self, pod_id: str) -> tuple[App, list[Task]] | None:
        """One pod with its instances, None when Marathon does not know it."""
        ...


class ContainerSource(Protocol):
    async def find(self, host: str, task_id: str) -> Container | None:
        """The container of `task_id` on slave `host`, None when there is none."""
        ...

    async def containers(self, host: str) -> dict[str, Container]:
        """Every task container on `host`, by task id (one listing serves a whole resync)."""
        ...

    async def close(self) -> None: ...


class ConsulAgent(Protocol):
    """The Consul agent of one host."""

    @property
    def host(self) -> str: ...

    @property
    def url(self) -> str: ...

    async def node_name(self) -> str: ...

    async def owned(self, app_id: str | None = None,
                    held: Callable[[str], Registration | None] | None = None) -> dict[str, OwnedService]: ...

    async def register(self, reg: Registration) -> None: ...

    async def deregister(self, service_id: str) -> bool: ...

    async def set_ttl(self, check_id: str, status: str, output: str) -> None: ...

    async def catalog_node_addresses(self) -> list[str]: ...

    async def close(self) -> None: ...


class ConsulAgentDirectory(Protocol):
    """The directory of agents by task host (`--consul` URL template)."""

    @property
    def per_host(self) -> bool:
        """False when every host shares one agent (a fixed URL): there is no catalog to walk."""
        ...

    def agent(self, host: str) -> ConsulAgent: ...

    def url_for(self, host: str) -> str: ...

    async def close(self) -> None: ...


class SessionKV(Protocol):
    """The Consul calls the lock needs (implemented by `service.consul.lock.ConsulLockClient`)."""

    async def create_session(self, *, name: str, ttl_seconds: float, lock_delay_seconds: float,
                             checks: list[str] | None = None) -> str: ...

    async def register_alive(self, alive: AliveCheck) -> None: ...

    async def deregister_alive(self, service_id: str) -> None: ...

    async def renew_session(self, session_id: str) -> bool:
        """False when Consul no longer knows the session (404)."""
        ...

    async def destroy_session(self, session_id: str) -> None: ...

    async def get_key(self, key: str, *, index: int | None, wait_seconds: float) -> tuple[int, dict[str, Any] | None]:
        """(X-Consul-Index, the KV entry or None)."""
        ...

    async def acquire(self, key: str, value: bytes, session_id: str, flags: int) -> bool: ...

    async def release(self, key: str, value: bytes, session_id: str, flags: int) -> bool: ...
