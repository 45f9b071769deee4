"""Reading the three outside systems: what Marathon runs, what the agents hold, where containers are.

`WorldReader.read_world()` is the resync's read, returned as one frozen `World`. The Marathon read
(`GET /v2/apps?embed=apps.tasks`) is the longest, so the agents and slaves already known (from the
ledger's locations and the Consul catalog) are read while Marathon renders its answer; hosts only
Marathon names are read after it. Each slave's containers come from one listing, not one lookup
per task. An agent that cannot be read is recorded in `unreachable`, never fatal: the resync still
repairs what it can see, and reads afresh whatever it schedules.

The per-app step uses the smaller reads: `read_agents` (one app's registrations on some agents),
`prefetch` (containers of tasks an event reported running, looked up while Marathon answers), and
`desired` (Marathon's view + containers -> the registrations, through the pure `desired` module).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from service.clients import ConsulAgent, ConsulAgentDirectory, ContainerSource, MarathonApps
from service.desired import desired_registrations
from service.errors import CallError, consume_exception
from service.metrics import Metrics
from service.model import AddressMode, App, Container, OwnedService, PodsRead, Registration, Skip, Task, TaskState
from service.naming import service_identity
from service.ownership import Claim, claim
from service.reconcile.settings import ReconcileSettings
from service.reconcile.work import AppWork

log = logging.getLogger(__name__)

Lookup = Container | Skip | None
Prefetched = dict[tuple[str, str], "asyncio.Future[Lookup]"]


@dataclass(frozen=True, slots=True)
class World:
    """One resync's read of everything."""

    apps: Mapping[str, tuple[App, tuple[Task, ...]]]  # app id -> definition and tasks
    owned: Mapping[str, OwnedService]  # service id -> our registration as its agent holds it
    owner_agent: Mapping[str, str]  # service id -> URL of the agent holding it
    listings: Mapping[str, Mapping[str, Container]]  # slave -> task id -> container
    unreachable: Mapping[str, str]  # agent URL -> error
    read_at: float  # monotonic time the reads began
    # Run specs whose registrations are left as they are: malformed pods (reported, skipped)
    held_apps: frozenset[str] = frozenset()
    pods_unread: bool = False  # the pods read failed: every pod registration is left as it is


class WorldReader:
    def __init__(self, *, marathon: MarathonApps, lookup: ContainerSource, agents: ConsulAgentDirectory,
                 metrics: Metrics, settings: ReconcileSettings) -> None:
        self.marathon = marathon
        self.lookup = lookup
        self.agents = agents
        self.metrics = metrics
        self.settings = settings
        self._logged_rewrites: set[str] = set()
        # Hosts Marathon named (or whose agent held our registrations): the only hosts an event may
        # send us to. Events are unauthenticated hints; a forged one naming some other host must
        # not make the registrar call that host's Docker API or Consul agent.
        self.known_hosts: set[str] = set()
        # Apps Marathon has: the last resync's list, plus apps a read found since (and minus those a
        # read did not). Only hints for other app ids are held to the read budget (budget.py).
        self.known_apps: set[str] = set()
        # Apps and pods of the Mesos containerizer (UCR): their tasks are never looked up in Docker,
        # not even speculatively while Marathon answers (Marathon reports their addresses).
        self.marathon_addressed: set[str] = set()
        # Ids known to be pods (from the resync, pod events, pod tasks): read with the pods API.
        self.pods: set[str] = set()
        self.pods_supported = True  # False once `/v2/pods/::status` answered 404 (a Marathon < 1.4)

    # ---------------------------------------------------------------- the resync's read
    async def read_world(self, known: set[str], held: Callable[[str], Registration | None] = lambda _sid: None
                         ) -> World:
        """Everything, reading the agents and slaves of `known` hosts while Marathon answers. `held`
        (service id -> the registration held, `Ledger.held`): an agent's entry equal to it is
        answered as that object (`AgentClient.owned`)."""
        read_at = time.monotonic()
        seen: dict[str, ConsulAgent] = {}
        owned: dict[str, OwnedService] = {}
        owner_agent: dict[str, str] = {}
        unreachable: dict[str, str] = {}

        async def read_agents(hosts: set[str]) -> None:
            for agent, result in await self._read_distinct(hosts, unreachable, seen, held):
                for sid, svc in result.items():
                    owned[sid] = svc
                    owner_agent[sid] = agent.url

        marathon = asyncio.gather(self.marathon.apps_with_tasks(), self._read_pods())
        early = asyncio.gather(read_agents(known | await self._catalog_hosts(known)), self.listings(known))
        try:
            apps, pods = await marathon
        finally:
            _, listings = await early
        if pods is not None:
            apps = [*apps, *((pod, list(instances)) for pod, instances in pods.pods)]
        task_hosts = {t.host for _, tasks in apps for t in tasks}
        self.known_hosts |= task_hosts | known
        self.known_apps = {app.id for app, _ in apps} | set(pods.malformed if pods is not None else ())
        late = task_hosts - known
        if not known:  # no earlier work to go by: the catalog, found through a task host, names the rest
            late |= await self._catalog_hosts(task_hosts)
        _, more = await asyncio.gather(read_agents(late), self.listings(late & task_hosts))
        listings.update(more)
        owned = self.claimed(owned, {t.id for _, tasks in apps for t in tasks})
        owner_agent = {sid: url for sid, url in owner_agent.items() if sid in owned}
        return World(apps={app.id: (app, tuple(tasks)) for app, tasks in apps}, owned=owned,
                     owner_agent=owner_agent, listings=listings, unreachable=unreachable, read_at=read_at,
                     held_apps=frozenset(pods.malformed) if pods is not None else frozenset(),
                     pods_unread=pods is None)

    async def _read_pods(self) -> PodsRead | None:
        """Every pod, or None when the read failed: apps are still resynced, pods' registrations are
        left as they are until a read succeeds (the client logged and counted the failure)."""
        try:
            read = await self.marathon.pods_with_instances()
        except CallError as exc:
            log.warning("pods not read, their registrations are left as they are: %s", exc)
            return None
        self.pods_supported = read.supported
        self.pods = {pod.id for pod, _ in read.pods} | set(read.malformed)
        return read

    async def run_spec(self, run_id: str) -> tuple[App, list[Task]] | None:
        """The app or pod `run_id` with its tasks (instances), None when Marathon knows neither: the
        kind known last is read first, a pod only after an app read found nothing."""
        if run_id in self.pods:
            found = await self.marathon.pod_with_instances(run_id)
            if found is not None:
                return found
            self.pods.discard(run_id)
            return await self.marathon.app_with_tasks(run_id)
        found = await self.marathon.app_with_tasks(run_id)
        if found is None and self.pods_supported:
            found = await self.marathon.pod_with_instances(run_id)
            if found is not None:
                self.pods.add(run_id)
        return found

    def claimed(self, owned: Mapping[str, OwnedService], marathon_tasks: set[str]) -> dict[str, OwnedService]:
        """What of the marked entries we may read back, change or remove: our cluster's, and legacy
        ones (no cluster id) whose task our Marathon runs (adopted: rewritten with our id). Another
        cluster's entries, and legacy ones of tasks we do not know, are never ours to touch."""
        cluster = self.settings.cluster_id
        out: dict[str, OwnedService] = {}
        for sid, svc in owned.items():
            who = claim(svc.registration.meta_dict, cluster)
            if who is Claim.OURS or (who is Claim.LEGACY and svc.registration.task_id in marathon_tasks):
                out[sid] = svc
        return out

    async def _catalog_hosts(self, known: set[str]) -> set[str]:
        """Agents of nodes with no task left may still hold our orphans: find them in the catalog."""
        if not self.agents.per_host or not known:
            return set()
        for host in sorted(known):
            try:
                return set(await self.agents.agent(host).catalog_node_addresses())
            except CallError as exc:
                log.warning("catalog read via %s failed: %s", host, exc)
        return set()

    async def _read_distinct(self, hosts: set[str], unreachable: dict[str, str], seen: dict[str, ConsulAgent],
                             held: Callable[[str], Registration | None],
                             ) -> list[tuple[ConsulAgent, dict[str, OwnedService]]]:
        """Our registrations on each agent of `hosts`, once per real agent: a host name and an IP
        may lead to the same agent (node), and `seen` remembers the nodes read already."""
        candidates = {a.url: a for a in (self.agents.agent(h) for h in hosts)}
        names = await asyncio.gather(*(a.node_name() for a in candidates.values()), return_exceptions=True)
        fresh: list[ConsulAgent] = []
        for agent, name in zip(candidates.values(), names, strict=True):
            if isinstance(name, BaseException):
                unreachable[agent.url] = str(name)
            elif name not in seen:
                seen[name] = agent
                fresh.append(agent)
        results = await asyncio.gather(*(a.owned(held=held) for a in fresh), return_exceptions=True)
        out = []
        for agent, result in zip(fresh, results, strict=True):
            if isinstance(result, BaseException):
                unreachable[agent.url] = str(result)
            else:
                out.append((agent, result))
        return out

    # ---------------------------------------------------------------- the per-app reads
    async def read_agents(self, hosts: Iterable[str], app_id: str
                          ) -> tuple[dict[str, OwnedService], dict[str, CallError]]:
        """`app_id`'s registrations on the agents of `hosts`, and the hosts whose agent failed (with
        the error, whose verdict tells a refusal from an outage)."""
        owned: dict[str, OwnedService] = {}
        unreachable: dict[str, CallError] = {}
        agents: dict[int, ConsulAgent] = {id(a): a for a in (self.agents.agent(h) for h in hosts)}

        async def read(agent: ConsulAgent) -> None:
            try:
                owned.update(await agent.owned(app_id))
            except CallError as exc:
                unreachable[agent.host] = exc

        await asyncio.gather(*(read(a) for a in agents.values()))
        return owned, unreachable

    async def container(self, host: str, task_id: str) -> Lookup:
        if self.settings.address_mode is AddressMode.HOST:
            return None
        try:
            return await self.lookup.find(host, task_id)
        except CallError as exc:
            if exc.reported:
                return Skip(task_id=task_id, reason="docker-refused", detail=str(exc), retry=True, reported=True)
            return Skip(task_id=task_id, reason="docker-unreachable", detail=str(exc), retry=True)

    def prefetch(self, work: AppWork, app_id: str = "") -> Prefetched:
        """Start the lookups of the containers of tasks reported running, before Marathon answers
        (not for an app or pod whose addresses Marathon reports, as far as the last read knew)."""
        if self.settings.address_mode is AddressMode.HOST or work.task_ids is None or \
                app_id in self.marathon_addressed:
            return {}
        out: Prefetched = {}
        for task_id, host in work.running_on.items():
            future = out[(host, task_id)] = asyncio.ensure_future(self.container(host, task_id))
            future.add_done_callback(consume_exception)  # an unused lookup must not log "never retrieved"
        return out

    async def listings(self, hosts: set[str]) -> dict[str, Mapping[str, Container]]:
        """One container listing per slave for a whole resync (slaves whose listing fails are left
        out, and their tasks looked up one by one, which fails the same way and is retried)."""
        if self.settings.address_mode is AddressMode.HOST:
            return {}
        ordered = sorted(hosts)
        results = await asyncio.gather(*(self.lookup.containers(h) for h in ordered), return_exceptions=True)
        return {h: r for h, r in zip(ordered, results, strict=True) if not isinstance(r, BaseException)}

    # ---------------------------------------------------------------- what Marathon asks for
    async def desired(self, app: App | None, tasks: Iterable[Task],
                      listings: Mapping[str, Mapping[str, Container]] | None = None,
                      prefetched: Prefetched | None = None) -> tuple[dict[str, Registration], list[Skip]]:
        """The registrations `tasks` of `app` should have, and the tasks skipped (with why)."""
        desired: dict[str, Registration] = {}
        skips: list[Skip] = []
        if app is None:
            return desired, skips
        self._log_rewrites(app)
        tasks = list(tasks)
        running = [t for t in tasks if t.state == TaskState.RUNNING]
        # TASK_UNREACHABLE keeps its registrations: desired_registrations says so without a container
        kept = [t for t in tasks if t.state == TaskState.UNREACHABLE]
        if app.mesos_containerizer:
            # no Docker engine knows the container; Marathon reports the address (issue 19)
            self.marathon_addressed.add(app.id)
            containers: list[Lookup] = [None] * len(running)
        elif listings is not None and all(t.host in listings for t in running):
            self.marathon_addressed.discard(app.id)
            containers = [listings[t.host].get(t.id) for t in running]
        else:
            self.marathon_addressed.discard(app.id)
            started = prefetched or {}
            containers = list(await asyncio.gather(
                *(started.get((t.host, t.id)) or self.container(t.host, t.id) for t in running)))
        policy = self.settings.policy
        for task, container in [*zip(running, containers, strict=True), *((t, None) for t in kept)]:
            if isinstance(container, Skip):
                skips.append(container)
                continue
            result = desired_registrations(app, task, container, policy)
            if isinstance(result, Skip):
                skips.append(result)
                self.metrics.skips.labels(result.reason).inc()
                continue
            for reg in result:
                desired[reg.service_id] = reg
        return desired, skips

    def _log_rewrites(self, app: App) -> None:
        """Names that are not valid DNS labels are registered rewritten, and overrides that
        --allow-name-override refuses are replaced by the derived name: say so once per app and
        message (every resync and event asks again), and count each refusal once with it."""
        for port_index in range(max(1, len(app.port_mappings))):
            identity = service_identity(app, port_index, self.settings.naming, self.settings.name_override)
            if identity is None:
                continue
            for message in identity.rewrites:
                if message not in self._logged_rewrites:
                    self._logged_rewrites.add(message)
                    log.warning("app %s: %s", app.id, message)
            for message in identity.refused:
                key = f"{app.id}\0{message}"
                if key not in self._logged_rewrites:
                    self._logged_rewrites.add(key)
                    self.metrics.name_overrides_refused.inc()
                    log.warning("app %s: %s", app.id, message)
