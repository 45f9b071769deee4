"""Find a Marathon task's container, and its overlay IPs, on the task's slave (docs/architecture.md §6.2): task id
-> Container, from cached per-slave listings. The Engine API calls (sessions, version, errors) are
service.docker.engine's; the Weave IPs of Weave-proxied containers are service.docker.weave_proxy's.

Why one listing per slave, not one call per event
    `GET /containers/json?filters={"label":["MESOS_TASK_ID"]}` returns every labelled task container
    of a slave with its labels, state and `NetworkSettings.Networks.*.IPAddress` -- all we need, with
    no inspect. So a burst is served from one listing per slave:
    - single-flight: concurrent callers share the listing in flight; at most one more listing is
      queued behind it (it starts when the first ends, and serves everyone who needed a newer one),
      so an engine never sees more than one listing of ours at a time;
    - a finished listing is reused for `list_ttl` seconds;
    - a task id missing from the listing triggers at most one re-list before `None` (the container
      may have started after the listing we reused). On a slave whose containers carry the label,
      that re-list is narrowed to the task: `filters={"label":["MESOS_TASK_ID=<id>"]}`. Measured on
      the test world's 20.10 engine with 100 containers: 20 ms for the whole label listing, 5 ms for
      the narrowed one, and the narrowed answer is one entry to parse instead of N. Without it, a
      deployment whose tasks start one by one (each TASK_RUNNING arriving after the last listing)
      costs a whole listing -- O(containers on the slave) of parsing -- per event, which measured
      ~60 tasks/s over 20 simulated slaves of 250 containers; narrowed, the same run is bounded by
      the event rate. Concurrent probes for one task id share one request.

Marathon < 1.4 sets no label, only `MESOS_TASK_ID` in the container env, which the listing does not
return. So when the narrowed probe finds nothing, the slave is listed "full" (every `mesos-` named
container, an unlabelled one inspected once in its life: `listing.py`, which reads every listing).
A slave where a full listing found unlabelled task containers is "legacy": its listings are full
ones (a miss goes straight to a full re-list, coalesced like any listing) until none are left.
`containers()` (for resyncs) always lists full.

Listings use `all=1`: a task whose container has exited is then reported with `running=False`
instead of looking "not started yet" and costing a re-list on every event for it. Containers are
built from the raw entries only when asked for, so a listing of 250 costs one `json.loads`, not 250
object constructions.

Every container returned is judged once against `--overlay-cidr`: one whose addresses all lie
outside it is logged and counted (`mcr_overlay_addresses_rejected_total`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace

from service.connect import TLSOptions
from service.docker.engine import DockerEngines, Engine
from service.docker.engine import DockerLookupError as DockerLookupError
from service.docker.listing import Entry, every_task, keep, labelled, one_task
from service.docker.weave_proxy import WeaveCache, WeaveProxy
from service.errors import consume_exception as consume_exception
from service.metrics import Metrics
from service.model import (
    DEFAULT_OVERLAY_CIDRS,
    OUTSIDE_OVERLAY,
    WEAVE_LOOKUP_FAILED,
    WEAVE_NOT_ATTACHED,
    Cidr,
    Container,
)
from service.retry import Stop

log = logging.getLogger(__name__)

@dataclass(slots=True)
class _Listing:
    """One snapshot of a slave's task containers; `started` is when its request was sent. `raw`
    holds the engine's entries by task id; Containers are built on first use and kept."""

    started: float
    full: bool
    raw: dict[str, Entry]
    built: dict[str, Container] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class _Run:
    """A listing in flight or queued. `started` is +inf until it actually starts."""

    full: bool
    started: float = float("inf")
    task: asyncio.Task[_Listing] | None = None


@dataclass(slots=True, eq=False)
class _Slave:
    """Per-engine state of the lookup: the engine's connection, the listing caches, the Weave answers."""

    engine: Engine
    current: _Listing | None = None
    inflight: _Run | None = None
    pending: _Run | None = None
    legacy: bool = False  # unlabelled task containers were seen: every listing is full
    probes: dict[str, asyncio.Task[Entry | None]] = field(default_factory=dict)
    env_cache: dict[str, str | None] = field(default_factory=dict)  # container id -> task id or None
    weave: WeaveCache = field(default_factory=WeaveCache)
    noted: set[str] = field(default_factory=set)  # container ids whose overlay address was judged


class ContainerLookup:
    """Task id -> Container on a slave's Docker engine; see the module docstring for the model.

    `url_template` is `tcp://{host}:2375` (also `http://`) or `unix:///path.sock`; without `{host}`
    one engine serves every host. `networks` is the operator's `--networks`, in order: each returned
    Container lists those networks first, in that order, so `c.overlay_ip(lookup.networks)` is the
    answer docs/architecture.md §6.2 asks for.
    """

    def __init__(
        self,
        url_template: str,
        networks: tuple[str, ...],
        *,
        metrics: Metrics,
        timeout: float = 5.0,
        list_ttl: float = 1.0,
        hit_ttl: float = 30.0,
        overlay_cidrs: tuple[Cidr, ...] = DEFAULT_OVERLAY_CIDRS,
        weave_exec: bool = False,
        tls: TLSOptions | None = None,
        stop: Stop | None = None,
    ) -> None:
        """`stop`: the process's stop signal, which ends the engines' back-off waits at once."""
        self.url_template = url_template
        self.networks = tuple(networks)
        self.overlay_cidrs = tuple(overlay_cidrs)
        self.weave_exec = weave_exec
        self._metrics = metrics
        self._docker = DockerEngines(metrics=metrics, timeout=timeout, tls=tls, stop=stop)
        self._weave = WeaveProxy(self._docker, metrics=metrics, overlay_cidrs=self.overlay_cidrs,
                                 weave_exec=weave_exec)
        self._list_ttl = list_ttl
        # A task id is never reused and a container's overlay IP does not change while it lives, so
        # a listing that *has* the task answers `find()` for `hit_ttl`; a miss asks the engine for
        # that one task, and a resync takes a listing at most `list_ttl` old. A burst then costs one
        # listing per slave, not one per slave per second.
        self._hit_ttl = max(hit_ttl, list_ttl)
        self._engines: dict[str, _Slave] = {}
        self._closed = False

    # ---- public API -------------------------------------------------------------------------

    async def find(self, host: str, task_id: str) -> Container | None:
        """The container of `task_id` on `host`, or None if the engine has none (after one re-list)."""
        call_start = time.monotonic()
        engine = self._engine(host)
        listing = await self._listing(engine, not_before=call_start - self._hit_ttl, full=False)
        found = self._get_container(listing, task_id)
        # A cached listing taken before the container ran says nothing about now (a new task's
        # container is listed as "created" while it starts): only a running one is a hit.
        if found is not None and (found.running or listing.started >= call_start):
            return await self._finish(engine, found)
        if listing.full and listing.started >= call_start:
            return None  # already a complete listing taken after we were asked: a re-list adds nothing
        if not listing.full:  # a labelled slave: ask for this one task
            entry = await self._probe(engine, task_id)
            if entry is not None:
                if engine.current is not None:  # later events for this task hit the listing
                    keep(engine.current.raw, entry, task_id)
                    engine.current.built.pop(task_id, None)
                return await self._finish(engine, self._build(entry, task_id))
        # Unlabelled (Marathon < 1.4) or gone: a full listing newer than the one that missed.
        not_before = max(call_start, listing.started + 1e-9)
        listing = await self._listing(engine, not_before=not_before, full=True)
        found = self._get_container(listing, task_id)
        return None if found is None else await self._finish(engine, found)

    async def containers(self, host: str) -> dict[str, Container]:
        """Every task container on `host` (labelled or not), by task id; for resyncs."""
        engine = self._engine(host)
        listing = await self._listing(engine, not_before=time.monotonic() - self._list_ttl, full=True)
        found = {tid: c for tid in list(listing.raw) if (c := self._get_container(listing, tid)) is not None}
        out: dict[str, Container] = {}
        new_proxied: list[str] = []
        for tid, c in found.items():
            if c.weave_proxied and c.running and c.id not in engine.weave.answers:
                new_proxied.append(tid)
            else:
                out[tid] = await self._finish(engine, c)  # no I/O: not proxied, or its answer is cached
        if new_proxied:  # a slave's new proxied containers are looked up concurrently (bounded per engine)
            done = await asyncio.gather(*(self._finish(engine, found[tid]) for tid in new_proxied))
            out.update(zip(new_proxied, done, strict=True))
        return out

    async def close(self) -> None:
        """Cancel listings in flight and close every engine session."""
        self._closed = True
        engines, self._engines = list(self._engines.values()), {}
        for e in engines:
            for run in (e.pending, e.inflight):
                if run is not None and run.task is not None:
                    run.task.cancel()
        for e in engines:
            await e.engine.session.close()

    # ---- engines ----------------------------------------------------------------------------

    def _engine(self, host: str) -> _Slave:
        if self._closed:
            raise DockerLookupError("docker lookup is closed")
        url = self.url_template.replace("{host}", host)
        engine = self._engines.get(url)
        if engine is None:
            engine = self._engines[url] = _Slave(self._docker.open(host, url))
        return engine

    # ---- single-flight listings -------------------------------------------------------------

    async def _listing(self, e: _Slave, *, not_before: float, full: bool) -> _Listing:
        """A listing that started at or after `not_before` (and is full if asked): the last one,
        the one in flight, the one queued behind it, or a new one -- whichever qualifies first."""
        cur = e.current
        if cur is not None and cur.started >= not_before and (cur.full or not full):
            return cur
        run = e.inflight
        if run is not None and run.started >= not_before and (run.full or not full):
            assert run.task is not None
            return await asyncio.shield(run.task)
        if e.pending is not None:  # starts after the in-flight one ends, so later than not_before
            e.pending.full |= full
            assert e.pending.task is not None
            return await asyncio.shield(e.pending.task)
        run = _Run(full=full)
        previous = e.inflight
        if previous is None:
            run.started = time.monotonic()
            e.inflight = run
        else:
            e.pending = run
        run.task = asyncio.create_task(self._run(e, run, previous))
        run.task.add_done_callback(consume_exception)
        return await asyncio.shield(run.task)

    async def _run(self, e: _Slave, run: _Run, previous: _Run | None) -> _Listing:
        if previous is not None and previous.task is not None:
            await asyncio.wait([previous.task])  # its outcome is its waiters' business
            if e.pending is run:
                e.pending = None
            e.inflight = run
            run.started = time.monotonic()
        try:
            listing = await self._refresh(e, full=run.full or e.legacy, started=run.started)
            if e.current is None or listing.started >= e.current.started:
                e.current = listing
                _forget_stopped(e, listing)
            return listing
        finally:
            if e.inflight is run:
                e.inflight = None

    async def _refresh(self, e: _Slave, *, full: bool, started: float) -> _Listing:
        prefix = await self._docker.prefix(e.engine)
        if not full:
            return _carry(e.current, _Listing(started=started, full=False,
                                              raw=await labelled(self._docker, e.engine, prefix)))
        raw, e.legacy = await every_task(self._docker, e.engine, prefix, e.env_cache)
        return _carry(e.current, _Listing(started=started, full=True, raw=raw))

    async def _probe(self, e: _Slave, task_id: str) -> Entry | None:
        """The list entry labelled with exactly `task_id`, asked now; one request per task at a time."""
        task = e.probes.get(task_id)
        if task is None:
            task = e.probes[task_id] = asyncio.create_task(self._probe_now(e, task_id))
            task.add_done_callback(lambda _t: e.probes.pop(task_id, None))
            task.add_done_callback(consume_exception)
        return await asyncio.shield(task)

    async def _probe_now(self, e: _Slave, task_id: str) -> Entry | None:
        return await one_task(self._docker, e.engine, await self._docker.prefix(e.engine), task_id)

    def _get_container(self, listing: _Listing, task_id: str) -> Container | None:
        c = listing.built.get(task_id)
        if c is None:
            entry = listing.raw.get(task_id)
            if entry is None:
                return None
            c = listing.built[task_id] = self._build(entry, task_id)
        return c

    def _build(self, entry: Entry, task_id: str) -> Container:
        ips = {name: ip for name, ip in entry.networks if ip}
        # operator's networks first, in their order, so a reader sees the preference
        ordered = {n: ips[n] for n in self.networks if n in ips}
        ordered.update((n, ip) for n, ip in ips.items() if n not in ordered)
        return Container(
            id=entry.id, task_id=task_id, network_ips=ordered, running=entry.state == "running",
            weave_proxied=entry.weave,
        )

    # ---- what a lookup returns: Weave IPs (service.docker.weave_proxy), the overlay judgement ----------

    async def _finish(self, e: _Slave, c: Container) -> Container:
        """`c` with its Weave IP when it is proxied; judge (log and count) its overlay address once."""
        if c.weave_proxied and c.running:
            w = e.weave.answers.get(c.id) or await self._weave.answer(e.weave, e.engine, c.id)
            c = replace(c, weave_proxied=w.proxied, weave_ips=w.ips, weave_source=w.source,
                        weave_pending=w.pending, running=not w.stopped)
        if c.id not in e.noted:
            _, reason = c.overlay_address(self.networks, self.overlay_cidrs)
            if reason == OUTSIDE_OVERLAY:
                addresses = c.weave_ips if c.weave_proxied else tuple(c.network_ips.values())
                log.warning("docker on %s: task %s container %s: %s %s outside --overlay-cidr %s: not an overlay "
                            "address", e.engine.host, c.task_id, c.id[:12],
                            "Weave IP" if c.weave_proxied else "address", ",".join(addresses),
                            ",".join(map(str, self.overlay_cidrs)))
                self._metrics.overlay_rejected.labels(reason).inc()
            if reason not in (WEAVE_NOT_ATTACHED, WEAVE_LOOKUP_FAILED):  # final: a container's IPs do not move
                e.noted.add(c.id)
        return c


def _carry(previous: _Listing | None, listing: _Listing) -> _Listing:
    """`listing` with each entry equal to `previous`'s replaced by the object `previous` holds, and
    its Container carried over: the previous listing lives until this one replaces it, and equal
    copies of 10,000 entries side by side were part of the resync's heap peak, which the idle
    process keeps (issue 20)."""
    if previous is None:
        return listing
    old, built, raw = previous.raw, previous.built, listing.raw
    for task_id, entry in raw.items():
        held = old.get(task_id)
        if held is not None and held.id == entry.id and held.state == entry.state \
                and held.networks == entry.networks and held.weave == entry.weave:  # Entry.__eq__, no tuples
            raw[task_id] = held
            container = built.get(task_id)
            if container is not None:
                listing.built[task_id] = container
    return listing


def _forget_stopped(e: _Slave, listing: _Listing) -> None:
    """Drop the per-container Weave answers and overlay judgements of containers this listing shows
    stopped or gone: a restarted container gets Docker's hosts file back until the proxy re-attaches
    it (reference/weave.md §6.1)."""
    if not (e.weave.answers or e.noted or e.weave.no_exec):
        return
    running = {x.id for x in listing.raw.values() if x.state == "running"}
    e.weave.forget(running)
    e.noted &= running


