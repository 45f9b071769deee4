"""The registrar's parts, each built once with what it needs.

Two steps, because the second needs an answer from Marathon: `Outside` (the HTTP session, the
Marathon client, the Consul token, the metrics) is what the start-up stages use before the cluster
identity is known; `build_reconciler` makes the reconcile core once the identity and the write gate
are (so no part is changed after it was built).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from service.config import Config
from service.connect import ssl_context
from service.consul.agents import ConsulAgents
from service.consul.call import AgentCooldowns
from service.docker.lookup import ContainerLookup
from service.marathon.client import MarathonClient
from service.metrics import Metrics
from service.reconcile import Reconciler, ReconcileSettings
from service.reconcile.settings import ttl_floor_for
from service.retry import Stop
from service.tokens import TokenFile, TokenSource, static


def consul_token(config: Config) -> TokenSource:
    """The Consul token as of now: from --consul-token-file (re-read when it changes) if given, as
    Consul's own API client prefers the file, else the fixed --consul-token."""
    if config.consul_token_file:
        return TokenFile(config.consul_token_file, what="consul token")
    return static(config.consul_token)


@dataclass
class Outside:
    """What every stage talks through, from the first second on."""

    metrics: Metrics
    session: aiohttp.ClientSession
    marathon: MarathonClient
    consul_token: TokenSource  # one source: the lock and the agents rotate together
    consul_cooldowns: AgentCooldowns  # one back-off per agent, for the lock's calls and the registrations'
    stop: Stop  # the process's stop signal: every client's waits (back-off, retries) end on it

    async def close(self) -> None:
        await self.session.close()


def connect(config: Config, stop: Stop | None = None) -> Outside:
    """The clients of the start-up stages; `stop` (the process's, else one of its own) reaches every
    client built from here, so that no back-off or retry wait outlives the stop signal."""
    stop = stop if stop is not None else Stop()
    metrics = Metrics()
    connector = aiohttp.TCPConnector(ssl=ssl_context(config.marathon_tls, "marathon")) if config.marathon_tls else None
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5), connector=connector)
    marathon_token = None
    if config.marathon_token_file:
        marathon_token = TokenFile(config.marathon_token_file, what="marathon token")
    marathon = MarathonClient(list(config.marathon), session=session, metrics=metrics, token=marathon_token,
                              stop=stop)
    return Outside(metrics, session, marathon, consul_token(config), AgentCooldowns(), stop)


@dataclass
class ReconcileParts:
    reconciler: Reconciler
    lookup: ContainerLookup
    agents: ConsulAgents

    async def close(self) -> None:
        await self.reconciler.stop()
        await self.lookup.close()
        await self.agents.close()


def build_reconciler(config: Config, outside: Outside, *, cluster_id: str | None,
                     may_write: Callable[[], bool] | None) -> ReconcileParts:
    """The reconcile core for this cluster identity, writing only while `may_write()` says so."""
    lookup = ContainerLookup(config.docker, config.networks, metrics=outside.metrics,
                             overlay_cidrs=config.overlay_cidrs, weave_exec=config.weave_exec_lookup,
                             tls=config.docker_tls, stop=outside.stop)
    agents = ConsulAgents(config.consul, token=outside.consul_token, metrics=outside.metrics, tls=config.consul_tls,
                          cooldowns=outside.consul_cooldowns, stop=outside.stop)
    settings = ReconcileSettings(naming=config.naming, name_override=config.allow_name_override,
                                 address_mode=config.address_mode, networks=config.networks,
                                 overlay_cidrs=config.overlay_cidrs,
                                 workers=config.workers, health_checks=config.health_checks,
                                 ttl_floor_seconds=ttl_floor_for(config.resync_interval),
                                 cluster_id=cluster_id)
    reconciler = Reconciler(marathon=outside.marathon, lookup=lookup, agents=agents, metrics=outside.metrics,
                            settings=settings, may_write=may_write)
    return ReconcileParts(reconciler, lookup, agents)
