"""Find a Marathon task's container, and its overlay IPs, on the task's slave (DESIGN §2.7).

Why aiohttp and not the Docker SDK
    The registrar must register deployment bursts at >= 1,000 tasks/s on 2 cores (5,000
    TASK_RUNNING events over 20 slaves). The Docker SDK is blocking (requests): inside an event loop
    every call would need a thread, and the reference measured a 50-thread pool to be *slower* than
    sequential calls on 2 cores (50 inspects: ~40 ms threaded vs ~30 ms sequential, GIL plus
    requests overhead), while asyncio concurrency on aiohttp did the same 50 in ~6 ms
    (reference/docker-test-hosts.md §2). aiodocker would work too, but we use three GET endpoints
    and want our own control of sessions, timeouts and request coalescing, so aiohttp (already a
    dependency) talks to the Engine API directly: one ClientSession/connector per engine, reused
    (TCP, or a unix socket through aiohttp.UnixConnector).

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
return. So when the narrowed probe finds nothing, the slave is listed "full": every `mesos-` named
container (`filters={"name":["mesos-"]}`; the Mesos containerizer names every container so, and the
answer carries the labels of the labelled ones), inspecting only containers never seen before; the
container id -> task id answer is cached for the container's life (a container's env never
changes), so an unlabelled container is inspected once, not once per event. A slave where a full
listing found unlabelled task containers is "legacy": its listings are full ones (a miss goes
straight to a full re-list, coalesced like any listing) until none are left. `containers()` (for
resyncs) always lists full.

Listings use `all=1`: a task whose container has exited is then reported with `running=False`
instead of looking "not started yet" and costing a re-list on every event for it. Containers are
built from the raw entries only when asked for, so a listing of 250 costs one `json.loads`, not 250
object constructions.

The API version is negotiated once per engine, from the `Api-Version` header of `GET /_ping` (else
`GET /version`), and is exactly what the engine says it speaks (never pinned above it: a 20.10
engine answers 400 to anything over 1.41). Every call has a timeout; every failure raises
`DockerLookupError` naming the slave, so the caller's retry/back-off applies. Every call is timed
in `metrics.docker_latency` by call name (`ping`, `version`, `list`, `list-task`, `list-named`,
`inspect`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from service.errors import CONFIG, GARBAGE, GONE, CallError, Classified, classify_status, classify_transport, record
from service.metrics import Metrics
from service.model import Container

TASK_ID_KEY = "MESOS_TASK_ID"
NAME_PREFIX = "mesos-"
INSPECT_CONCURRENCY = 16  # per engine; the reference saw 50 concurrent inspects served in ~6 ms

_LABEL_QUERY = "all=1&filters=" + quote(json.dumps({"label": [TASK_ID_KEY]}, separators=(",", ":")))
_NAME_QUERY = "all=1&filters=" + quote(json.dumps({"name": [NAME_PREFIX]}, separators=(",", ":")))


class DockerLookupError(CallError):
    """A Docker Engine API call failed (unreachable, timed out, non-2xx, unparsable); `verdict` and
    `cause` say what the answer meant (RETRY unless classified otherwise)."""


@dataclass(slots=True)
class _Listing:
    """One snapshot of a slave's task containers; `started` is when its request was sent. `raw`
    holds the engine's entries by task id; Containers are built on first use and kept."""

    started: float
    full: bool
    raw: dict[str, Mapping[str, Any]]
    built: dict[str, Container] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class _Run:
    """A listing in flight or queued. `started` is +inf until it actually starts."""

    full: bool
    started: float = float("inf")
    task: asyncio.Task[_Listing] | None = None


@dataclass(slots=True, eq=False)
class _Engine:
    """Per-engine state: the session, the negotiated API prefix and the listing caches."""

    host: str  # the slave the engine was first asked for (for messages)
    base: str  # "http://127.0.0.2:2375" or "http://docker" for a unix socket
    session: aiohttp.ClientSession
    prefix: str | None = None  # "/v1.41" once negotiated
    version_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    current: _Listing | None = None
    inflight: _Run | None = None
    pending: _Run | None = None
    legacy: bool = False  # unlabelled task containers were seen: every listing is full
    probes: dict[str, asyncio.Task[Mapping[str, Any] | None]] = field(default_factory=dict)
    env_cache: dict[str, str | None] = field(default_factory=dict)  # container id -> task id or None
    inspect_limit: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(INSPECT_CONCURRENCY))


class ContainerLookup:
    """Task id -> Container on a slave's Docker engine; see the module docstring for the model.

    `url_template` is `tcp://{host}:2375` (also `http://`) or `unix:///path.sock`; without `{host}`
    one engine serves every host. `networks` is the operator's `--networks`, in order: each returned
    Container lists those networks first, in that order, so `c.overlay_ip(lookup.networks)` is the
    answer DESIGN §2.7 asks for.
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
    ) -> None:
        self.url_template = url_template
        self.networks = tuple(networks)
        self._metrics = metrics
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._list_ttl = list_ttl
        # A task id is never reused and a container's overlay IP does not change while it lives, so
        # a listing that *has* the task answers `find()` for `hit_ttl`; a miss asks the engine for
        # that one task, and a resync takes a listing at most `list_ttl` old. A burst then costs one
        # listing per slave, not one per slave per second.
        self._hit_ttl = max(hit_ttl, list_ttl)
        self._engines: dict[str, _Engine] = {}
        self._closed = False

    # ---- public API -------------------------------------------------------------------------

    async def find(self, host: str, task_id: str) -> Container | None:
        """The container of `task_id` on `host`, or None if the engine has none (after one re-list)."""
        call_start = time.monotonic()
        engine = self._engine(host)
        listing = await self._listing(engine, not_before=call_start - self._hit_ttl, full=False)
        found = self._get_container(listing, task_id)
        if found is not None:
            return found
        if listing.full and listing.started >= call_start:
            return None  # already a complete listing taken after we were asked: a re-list adds nothing
        if not listing.full:  # a labelled slave: ask for this one task
            entry = await self._probe(engine, task_id)
            if entry is not None:
                if engine.current is not None and task_id not in engine.current.raw:
                    _keep(engine.current.raw, entry, task_id)  # later events for this task hit the listing
                return self._build(entry, task_id)
        # Unlabelled (Marathon < 1.4) or gone: a full listing newer than the one that missed.
        not_before = max(call_start, listing.started + 1e-9)
        listing = await self._listing(engine, not_before=not_before, full=True)
        return self._get_container(listing, task_id)

    async def containers(self, host: str) -> dict[str, Container]:
        """Every task container on `host` (labelled or not), by task id; for resyncs."""
        engine = self._engine(host)
        listing = await self._listing(engine, not_before=time.monotonic() - self._list_ttl, full=True)
        return {tid: c for tid in list(listing.raw) if (c := self._get_container(listing, tid)) is not None}

    async def close(self) -> None:
        """Cancel listings in flight and close every engine session."""
        self._closed = True
        engines, self._engines = list(self._engines.values()), {}
        for e in engines:
            for run in (e.pending, e.inflight):
                if run is not None and run.task is not None:
                    run.task.cancel()
        for e in engines:
            await e.session.close()

    # ---- engines ----------------------------------------------------------------------------

    def _engine(self, host: str) -> _Engine:
        if self._closed:
            raise DockerLookupError("docker lookup is closed")
        url = self.url_template.replace("{host}", host)
        engine = self._engines.get(url)
        if engine is None:
            engine = self._engines[url] = self._open(host, url)
        return engine

    def _open(self, host: str, url: str) -> _Engine:
        parts = urlsplit(url)
        connector: aiohttp.BaseConnector
        if parts.scheme == "unix":
            connector = aiohttp.UnixConnector(path=parts.path, limit=32)
            base = "http://docker"
        elif parts.scheme in ("tcp", "http", "https"):
            connector = aiohttp.TCPConnector(limit=32, ttl_dns_cache=300)
            scheme = "https" if parts.scheme == "https" else "http"
            base = f"{scheme}://{parts.netloc}"
        else:
            raise DockerLookupError(f"docker on {host}: unsupported URL {url!r} (tcp://, http://, unix://)", CONFIG)
        session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, auto_decompress=False)
        return _Engine(host=host, base=base, session=session)

    async def _get(self, e: _Engine, call: str, path: str, *, allow_404: bool = False) -> Any:
        """GET base+path, parse JSON; DockerLookupError on any failure (None for an allowed 404)."""
        body, _ = await self._request(e, call, path, allow_404=allow_404)
        return body

    async def _request(self, e: _Engine, call: str, path: str, *, allow_404: bool = False,
                       json_body: bool = True) -> tuple[Any, Mapping[str, str]]:
        """GET base+path: the body (parsed as JSON unless `json_body` is false, None for an allowed
        404) and the headers. Every failure is one DockerLookupError naming the slave and the call."""
        t0 = time.perf_counter()
        try:
            async with e.session.get(e.base + path) as resp:
                body = await resp.read()
                if resp.status == 404 and allow_404:
                    record(self._metrics, system="docker", call=call, target=e.base, classified=GONE,
                           message=f"docker on {e.host}: {call} {path}: gone")
                    return None, resp.headers
                if resp.status != 200:
                    text = body[:200].decode(errors="replace").strip()
                    raise self._fail(e, call, classify_status(resp.status, text),
                                     f"{call} answered {resp.status}: {text}")
                headers = resp.headers
            return (json.loads(body) if json_body else body), headers
        except DockerLookupError:
            raise
        except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError: not the engine's JSON
            raise self._fail(e, call, GARBAGE, f"{call} answered 200 with a body that is not JSON: {exc}") from exc
        except Exception as exc:
            classified = classify_transport(exc)
            if classified is None:
                raise  # not the engine's answer: a bug of ours, which must stay loud
            detail = (f"{call} timed out after {self._timeout.total} s" if isinstance(exc, TimeoutError)
                      else f"{call} failed: {exc!r}")
            raise self._fail(e, call, classified, detail) from exc
        finally:
            self._metrics.docker_latency.labels(call).observe(time.perf_counter() - t0)

    def _entries(self, e: _Engine, call: str, payload: Any) -> list[dict[str, Any]]:
        """A listing's entries; JSON that is not a list is garbage (REPORT), never a crash later."""
        if not isinstance(payload, list):
            raise self._fail(e, call, GARBAGE, "container listing is not a JSON list")
        return [x for x in payload if isinstance(x, dict) and x.get("Id")]

    def _fail(self, e: _Engine, call: str, classified: Classified, detail: str) -> DockerLookupError:
        """Count (and, for a REPORT, log once) a failed answer; the error to raise for it."""
        message = f"docker on {e.host} ({e.base}): {detail}"
        record(self._metrics, system="docker", call=call, target=e.base, classified=classified, message=message)
        return DockerLookupError(message, classified)

    async def _prefix(self, e: _Engine) -> str:
        """`/v<ApiVersion>` as the engine reports it; asked once per engine.

        From the `Api-Version` header of `GET /_ping`, as the docker CLI negotiates: measured on the
        test world's engines, `/_ping` answers in ~0.4 ms and `/version` in 5-7 ms (it gathers
        component versions), and this is on the path of the first event from every slave. An
        engine whose ping carries no such header (older than API 1.25) is asked `/version`."""
        if e.prefix is None:
            async with e.version_lock:
                if e.prefix is None:
                    _, headers = await self._request(e, "ping", "/_ping", json_body=False)
                    api = headers.get("Api-Version") or None
                    if api is None:
                        info = await self._get(e, "version", "/version")
                        api = info.get("ApiVersion") if isinstance(info, dict) else None
                    if not isinstance(api, str) or not api:
                        raise self._fail(e, "version", GARBAGE, "/version has no ApiVersion")
                    e.prefix = f"/v{api}"
        return e.prefix

    # ---- single-flight listings -------------------------------------------------------------

    async def _listing(self, e: _Engine, *, not_before: float, full: bool) -> _Listing:
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

    async def _run(self, e: _Engine, run: _Run, previous: _Run | None) -> _Listing:
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
            return listing
        finally:
            if e.inflight is run:
                e.inflight = None

    async def _refresh(self, e: _Engine, *, full: bool, started: float) -> _Listing:
        prefix = await self._prefix(e)
        if not full:
            labelled = await self._get(e, "list", f"{prefix}/containers/json?{_LABEL_QUERY}")
            raw: dict[str, Mapping[str, Any]] = {}
            for entry in self._entries(e, "list", labelled):
                task_id = (entry.get("Labels") or {}).get(TASK_ID_KEY)
                if task_id:
                    _keep(raw, entry, task_id)
            return _Listing(started=started, full=False, raw=raw)
        named = await self._get(e, "list-named", f"{prefix}/containers/json?{_NAME_QUERY}")
        named = self._entries(e, "list-named", named)
        raw, e.legacy = await self._full(e, prefix, named)
        return _Listing(started=started, full=True, raw=raw)

    async def _full(
        self, e: _Engine, prefix: str, entries: list[dict[str, Any]]
    ) -> tuple[dict[str, Mapping[str, Any]], bool]:
        """Task containers among `mesos-` named entries: by label, else by the task id in their env
        (inspecting each container once in its life). Also: was any of them unlabelled?"""
        alive = {x["Id"] for x in entries}
        for cid in [c for c in e.env_cache if c not in alive]:  # forget removed containers
            del e.env_cache[cid]
        unseen = [x for x in entries
                  if not (x.get("Labels") or {}).get(TASK_ID_KEY) and x["Id"] not in e.env_cache]
        if unseen:
            answers = await asyncio.gather(*(self._inspect_task_id(e, prefix, x["Id"]) for x in unseen))
            for entry, (gone, task_id) in zip(unseen, answers, strict=True):
                if not gone:
                    e.env_cache[entry["Id"]] = task_id
        raw: dict[str, Mapping[str, Any]] = {}
        legacy = False
        for entry in entries:
            task_id = (entry.get("Labels") or {}).get(TASK_ID_KEY)
            if not task_id:
                task_id = e.env_cache.get(entry["Id"])
                legacy = legacy or bool(task_id)
            if task_id:
                _keep(raw, entry, task_id)
        return raw, legacy

    async def _probe(self, e: _Engine, task_id: str) -> Mapping[str, Any] | None:
        """The list entry labelled with exactly `task_id`, asked now; one request per task at a time."""
        task = e.probes.get(task_id)
        if task is None:
            task = e.probes[task_id] = asyncio.create_task(self._probe_now(e, task_id))
            task.add_done_callback(lambda _t: e.probes.pop(task_id, None))
            task.add_done_callback(consume_exception)
        return await asyncio.shield(task)

    async def _probe_now(self, e: _Engine, task_id: str) -> Mapping[str, Any] | None:
        prefix = await self._prefix(e)
        query = "all=1&filters=" + quote(json.dumps({"label": [f"{TASK_ID_KEY}={task_id}"]}, separators=(",", ":")))
        raw: dict[str, Mapping[str, Any]] = {}
        listed = await self._get(e, "list-task", f"{prefix}/containers/json?{query}")
        for entry in self._entries(e, "list-task", listed):
            if (entry.get("Labels") or {}).get(TASK_ID_KEY) == task_id:
                _keep(raw, entry, task_id)
        return raw.get(task_id)

    async def _inspect_task_id(self, e: _Engine, prefix: str, cid: str) -> tuple[bool, str | None]:
        """(gone, task id from Config.Env); gone = removed between listing and inspect."""
        async with e.inspect_limit:
            info = await self._get(e, "inspect", f"{prefix}/containers/{cid}/json", allow_404=True)
        if info is None:
            return True, None
        env = ((info.get("Config") or {}).get("Env") or []) if isinstance(info, dict) else []
        return False, _env_task_id(env)

    def _get_container(self, listing: _Listing, task_id: str) -> Container | None:
        c = listing.built.get(task_id)
        if c is None:
            entry = listing.raw.get(task_id)
            if entry is None:
                return None
            c = listing.built[task_id] = self._build(entry, task_id)
        return c

    def _build(self, entry: Mapping[str, Any], task_id: str) -> Container:
        networks = ((entry.get("NetworkSettings") or {}).get("Networks")) or {}
        ips = {name: n.get("IPAddress") for name, n in networks.items() if n and n.get("IPAddress")}
        # operator's networks first, in their order, so a reader sees the preference
        ordered = {n: ips[n] for n in self.networks if n in ips}
        ordered.update((n, ip) for n, ip in ips.items() if n not in ordered)
        return Container(
            id=entry["Id"], task_id=task_id, network_ips=ordered, running=entry.get("State") == "running"
        )


def _keep(raw: dict[str, Mapping[str, Any]], entry: Mapping[str, Any], task_id: str) -> None:
    """Record a list entry; of two containers claiming one task id, a running one wins. Only the
    fields `_build` reads are kept: a listing stays cached per slave, and whole engine entries
    (mounts, ports, labels, ...) for 10,000 containers cost tens of MB of RSS."""
    old = raw.get(task_id)
    if old is None or (entry.get("State") == "running" and old.get("State") != "running"):
        networks = ((entry.get("NetworkSettings") or {}).get("Networks")) or {}
        raw[task_id] = {
            "Id": entry["Id"], "State": entry.get("State"),
            "NetworkSettings": {"Networks": {name: {"IPAddress": n.get("IPAddress")}
                                             for name, n in networks.items() if n}},
        }


def _env_task_id(env: Iterable[str]) -> str | None:
    prefix = TASK_ID_KEY + "="
    for item in env:
        if isinstance(item, str) and item.startswith(prefix):
            return item[len(prefix):] or None
    return None


def consume_exception(task: asyncio.Future[Any]) -> None:
    """Waiters get the error; this only keeps asyncio from logging it when none are left (or when
    nobody ends up waiting, as for the reconciler's unused early lookups)."""
    if not task.cancelled():
        task.exception()
