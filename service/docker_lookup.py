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
`inspect`, and for Weave: `archive`, `exec-create`, `exec-start`, `exec-inspect`).

Weave-proxied containers (issue 12; the facts are in reference/weave.md)
    Weave's Docker API proxy wraps a container's entrypoint in `/w/w`, binds its volume at `/w` and
    puts the Weave IP on an interface `ethwe` that Docker never learns about: `NetworkSettings` keeps
    the docker0 address (§0, §2.2). Such a container is recognised from the listing we already have
    -- `Command` starting with `/w/w`, or a mount at `/w` (§1.4) -- so a non-proxied container costs
    nothing more. For a proxied one the Weave IP is read, in this order:
    1. inspect: the top-level `NetworkSettings.IPAddress`, if it is none of the `Networks` addresses
       (only the proxy's `--rewrite-inspect` makes them differ: it rewrites exactly that field, §3)
       and lies in `--overlay-cidr`. The inspect also confirms the markers (`Config.Entrypoint[0]`,
       the `/w` bind, `WEAVE_CIDR` -- `WEAVE_CIDR=none` means "left alone", §1.3) and `State.Running`;
    2. `GET /containers/{id}/archive?path=/etc/hosts`: the `# created by Weave - BEGIN` ... `END`
       block the proxy writes, its `# container hostname` lines (§2.3, §6.1). No process is started
       in the container, so it works for images without a shell. A `HEAD` first (~1.5 ms, the GET
       ~60 ms) skips the GET while the file is still Docker's own (not newer than `StartedAt`);
    3. with `weave_exec` (`--weave-exec-lookup`) only: `ip -4 -o addr show dev ethwe` through the exec
       API, the stream demultiplexed and the exit code read from `GET /exec/{id}/json` (§6.2). It
       needs an `ip` binary in the image (exit 126/127 otherwise: not tried again for that container).
    No block and no `ethwe` yet means "not attached yet" (the proxy attaches after Docker's `start`
    event, §7): the Container says `weave_pending`, the task is retried, never registered with its
    docker0 address. A found answer is cached per container id while the container runs (forgotten
    when a listing shows it stopped or gone); lookups run single-flight per container and at most
    INSPECT_CONCURRENCY at a time per engine. Containers whose addresses all lie outside
    `--overlay-cidr` are logged and counted once (`mcr_overlay_addresses_rejected_total`).
"""

from __future__ import annotations

import asyncio
import base64
import io
import ipaddress
import json
import logging
import re
import ssl
import tarfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from service.connect import TLSConfigError, TLSOptions, docker_files, ssl_context, tls_reason
from service.errors import CONFIG, GARBAGE, GONE, CallError, Classified, classify_status, classify_transport, record
from service.metrics import Metrics
from service.model import (
    DEFAULT_OVERLAY_CIDRS,
    OUTSIDE_OVERLAY,
    WEAVE_LOOKUP_FAILED,
    WEAVE_NOT_ATTACHED,
    Cidr,
    Container,
    in_overlay,
)

log = logging.getLogger(__name__)

TASK_ID_KEY = "MESOS_TASK_ID"
NAME_PREFIX = "mesos-"
INSPECT_CONCURRENCY = 16  # per engine; the reference saw 50 concurrent inspects served in ~6 ms

_LABEL_QUERY = "all=1&filters=" + quote(json.dumps({"label": [TASK_ID_KEY]}, separators=(",", ":")))
_NAME_QUERY = "all=1&filters=" + quote(json.dumps({"name": [NAME_PREFIX]}, separators=(",", ":")))

# Weave Docker API proxy markers and lookups (reference/weave.md §1.4, §2.3, §6)
WEAVE_ENTRYPOINT = "/w/w"
WEAVE_VOLUME = "/w"
WEAVE_CIDR_ENV = "WEAVE_CIDR="
HOSTS_BEGIN = "# created by Weave - BEGIN"
HOSTS_END = "# created by Weave - END"
HOSTS_SECTION = "# container hostname"
ETHWE_CMD = ["ip", "-4", "-o", "addr", "show", "dev", "ethwe"]
_EXEC_MISSING = (126, 127)  # "executable file not found": 126 on 20.10 (§6.2), 127 from a shell
_EXEC_EXIT_POLLS = 20  # GET /exec/{id}/json while it still says Running, 5 ms apart
_INET = re.compile(r"\binet\s+(\d+\.\d+\.\d+\.\d+)/\d+")


class DockerLookupError(CallError):
    """A Docker Engine API call failed (unreachable, timed out, non-2xx, unparsable); `verdict` and
    `cause` say what the answer meant (RETRY unless classified otherwise)."""


@dataclass(frozen=True, slots=True)
class _Weave:
    """What the Weave lookup found for one container (see the module docstring)."""

    proxied: bool = True
    ips: tuple[str, ...] = ()
    source: str = ""  # rewrite-inspect | etc-hosts | exec
    pending: str = ""  # WEAVE_NOT_ATTACHED | WEAVE_LOOKUP_FAILED when ips is empty
    stopped: bool = False  # the inspect says not running (or gone): the listing was stale


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
    weave: dict[str, _Weave] = field(default_factory=dict)  # container id -> final answer (while running)
    weave_runs: dict[str, asyncio.Task[_Weave]] = field(default_factory=dict)  # lookups in flight
    no_exec: set[str] = field(default_factory=set)  # container ids whose image has no `ip` binary
    noted: set[str] = field(default_factory=set)  # container ids whose overlay address was judged


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
        overlay_cidrs: tuple[Cidr, ...] = DEFAULT_OVERLAY_CIDRS,
        weave_exec: bool = False,
        tls: TLSOptions | None = None,
    ) -> None:
        self.url_template = url_template
        self._tls = tls  # Docker's TLS conventions (service.config): paths may hold {host}
        self.networks = tuple(networks)
        self.overlay_cidrs = tuple(overlay_cidrs)
        self.weave_exec = weave_exec
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
                    _keep(engine.current.raw, entry, task_id)
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
            if c.weave_proxied and c.running and c.id not in engine.weave:
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
            ctx: ssl.SSLContext | bool = True
            if self._tls is not None or parts.scheme == "https":
                try:
                    ctx = ssl_context(docker_files((self._tls or TLSOptions()).for_host(host)), f"docker on {host}")
                except TLSConfigError as exc:
                    raise DockerLookupError(str(exc)) from None
            connector = aiohttp.TCPConnector(limit=32, ttl_dns_cache=300, ssl=ctx)
            scheme = "https" if parts.scheme == "https" or self._tls is not None else "http"
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
                       json_body: bool = True, method: str = "GET", payload: Any = None, expect: int = 200,
                       allow: tuple[int, ...] = (), send_headers: Mapping[str, str] | None = None,
                       ) -> tuple[Any, Mapping[str, str]]:
        """`method` base+path (with `payload` as a JSON body): the body (parsed as JSON unless
        `json_body` is false; None for an allowed 404 or a status in `allow`) and the headers. Every
        other answer than `expect` is one DockerLookupError naming the slave and the call."""
        t0 = time.perf_counter()
        allowed = (*allow, 404) if allow_404 else allow
        try:
            async with e.session.request(method, e.base + path, json=payload, headers=send_headers) as resp:
                body = await resp.read()
                if resp.status in allowed:
                    if resp.status == 404:
                        record(self._metrics, system="docker", call=call, target=e.base, classified=GONE,
                               message=f"docker on {e.host}: {call} {path}: gone")
                    return None, resp.headers
                if resp.status != expect:
                    text = body[:200].decode(errors="replace").strip()
                    raise self._fail(e, call, classify_status(resp.status, text),
                                     f"{call} answered {resp.status}: {text}")
                headers = resp.headers
            return (json.loads(body) if json_body else body), headers
        except DockerLookupError:
            raise
        except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError: not the engine's JSON
            if not isinstance(exc, (aiohttp.ClientError, OSError)):  # an SSL verify failure is a ValueError too
                raise self._fail(e, call, GARBAGE, f"{call} answered 200 with a body that is not JSON: {exc}") from exc
            failure = self._transport_failure(e, call, exc)
            raise failure from exc
        except Exception as exc:
            failure = self._transport_failure(e, call, exc)
            if failure is exc:
                raise  # not the engine's answer: a bug of ours, which must stay loud
            raise failure from exc
        finally:
            self._metrics.docker_latency.labels(call).observe(time.perf_counter() - t0)

    def _transport_failure(self, e: _Engine, call: str, exc: Exception) -> Exception:
        """The error for a request that got no answer (refused, reset, timed out, TLS failed); an
        exception that is no answer of the engine's (a bug of ours) is returned as it is."""
        classified = classify_transport(exc)
        if classified is None:
            return exc
        why = tls_reason(exc, https=e.base.startswith("https://")) or repr(exc)
        detail = (f"{call} timed out after {self._timeout.total} s" if isinstance(exc, TimeoutError)
                  else f"{call} failed: {why}")
        return self._fail(e, call, classified, detail)

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
                _forget_stopped(e, listing)
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
            id=entry["Id"], task_id=task_id, network_ips=ordered, running=entry.get("State") == "running",
            weave_proxied=bool(entry.get("Weave")),
        )

    # ---- Weave-proxied containers (module docstring; reference/weave.md) ------------------------

    async def _finish(self, e: _Engine, c: Container) -> Container:
        """`c` with its Weave IP when it is proxied; judge (log and count) its overlay address once."""
        if c.weave_proxied and c.running:
            w = e.weave.get(c.id) or await self._weave(e, c.id)
            c = replace(c, weave_proxied=w.proxied, weave_ips=w.ips, weave_source=w.source,
                        weave_pending=w.pending, running=not w.stopped)
        if c.id not in e.noted:
            _, reason = c.overlay_address(self.networks, self.overlay_cidrs)
            if reason == OUTSIDE_OVERLAY:
                addresses = c.weave_ips if c.weave_proxied else tuple(c.network_ips.values())
                log.warning("docker on %s: task %s container %s: %s %s outside --overlay-cidr %s: not an overlay "
                            "address", e.host, c.task_id, c.id[:12], "Weave IP" if c.weave_proxied else "address",
                            ",".join(addresses), ",".join(map(str, self.overlay_cidrs)))
                self._metrics.overlay_rejected.labels(reason).inc()
            if reason not in (WEAVE_NOT_ATTACHED, WEAVE_LOOKUP_FAILED):  # final: a container's IPs do not move
                e.noted.add(c.id)
        return c

    async def _weave(self, e: _Engine, cid: str) -> _Weave:
        """The Weave lookup of container `cid`: single-flight, and cached once it is final."""
        task = e.weave_runs.get(cid)
        if task is None:
            task = e.weave_runs[cid] = asyncio.create_task(self._weave_now(e, cid))
            task.add_done_callback(lambda _t: e.weave_runs.pop(cid, None))
            task.add_done_callback(consume_exception)
        return await asyncio.shield(task)

    async def _weave_now(self, e: _Engine, cid: str) -> _Weave:
        async with e.inspect_limit:
            try:
                w = await self._weave_lookup(e, await self._prefix(e), cid)
            except DockerLookupError as exc:
                log.warning("Weave IP lookup of container %s failed: %s", cid[:12], exc)
                w = _Weave(pending=WEAVE_LOOKUP_FAILED)
        result = w.source or ("not-proxied" if not w.proxied else "stopped" if w.stopped else w.pending)
        self._metrics.weave_lookups.labels(result).inc()
        if w.ips or not w.proxied:
            e.weave[cid] = w
        return w

    async def _weave_lookup(self, e: _Engine, prefix: str, cid: str) -> _Weave:
        """Inspect, then the rewritten inspect IP, the /etc/hosts block, and (optionally) exec."""
        info = await self._get(e, "inspect", f"{prefix}/containers/{cid}/json", allow_404=True)
        if not isinstance(info, dict) or not (info.get("State") or {}).get("Running"):
            return _Weave(pending=WEAVE_NOT_ATTACHED, stopped=True)
        if not weave_proxied_inspect(info):
            return _Weave(proxied=False)
        rewritten = rewritten_ip(info)
        if rewritten and in_overlay(rewritten, self.overlay_cidrs):
            return _Weave(ips=(rewritten,), source="rewrite-inspect")
        ips = await self._hosts_block_ips(e, prefix, cid, (info.get("State") or {}).get("StartedAt"))
        if ips:
            return _Weave(ips=ips, source="etc-hosts")
        if self.weave_exec and cid not in e.no_exec:
            ips = await self._exec_ethwe(e, prefix, cid)
            if ips:
                return _Weave(ips=ips, source="exec")
        if rewritten:  # the proxy's answer, outside --overlay-cidr: judged (and rejected) as such
            return _Weave(ips=(rewritten,), source="rewrite-inspect")
        return _Weave(pending=WEAVE_NOT_ATTACHED)

    async def _hosts_block_ips(self, e: _Engine, prefix: str, cid: str, started_at: Any) -> tuple[str, ...]:
        """The Weave IPs of the container's /etc/hosts block, read with the archive endpoint (§6.1):
        a tar of one file, `hosts`. 404 (gone, or no such file) reads as "no block".

        `HEAD` first: it answers only the stat header, ~1.5 ms on the test world's engine, where the
        `GET` costs ~60 ms (20.10 tars in a re-executed, chrooted dockerd). Docker writes the file
        before the process starts and Weave rewrites it after Docker's `start` event (§1.6, §7), so a
        file not newer than `State.StartedAt` is Docker's own: "not attached yet", without the GET.
        The retries of a just-started proxied container then cost ~2 ms each, not ~60."""
        path = f"{prefix}/containers/{cid}/archive?path=/etc/hosts"
        stat_body, headers = await self._request(e, "archive-stat", path, method="HEAD", allow_404=True,
                                                 json_body=False)
        if stat_body is None:
            return ()
        stat = path_stat(headers)
        if stat is not None and (stat.get("size") == 0 or not _newer(stat.get("mtime"), started_at)):
            return ()  # empty (created, never started), or Docker's own file of this start
        body, _ = await self._request(e, "archive", path, allow_404=True, json_body=False,
                                      # the daemon gzips this answer when the client accepts it (§6.1)
                                      send_headers={"Accept-Encoding": "identity"})
        if body is None:
            return ()
        try:
            text = tar_single_file(body)
        except (tarfile.TarError, ValueError) as exc:
            raise DockerLookupError(f"docker on {e.host} ({e.base}): archive of /etc/hosts in {cid[:12]} is not "
                                    f"a one-file tar: {exc}") from exc
        return weave_hosts_ips(text)

    async def _exec_ethwe(self, e: _Engine, prefix: str, cid: str) -> tuple[str, ...]:
        """`ip -4 -o addr show dev ethwe` in the container (§6.2): create, start (the hijacked,
        multiplexed stream, read to EOF), then the exit code. 404/409 (gone, stopped, paused) and a
        non-zero exit ("can't find device 'ethwe'") read as "not attached". Sent to the proxy rather
        than dockerd, the exec is wrapped in `/w/w` and waits for `ethwe` (§1.7): before the attach it
        runs into the timeout, which is a `weave-lookup-failed` retry like any engine failure."""
        created, _ = await self._request(
            e, "exec-create", f"{prefix}/containers/{cid}/exec", method="POST", expect=201, allow=(404, 409),
            payload={"Cmd": ETHWE_CMD, "AttachStdout": True, "AttachStderr": True, "Tty": False})
        exec_id = created.get("Id") if isinstance(created, dict) else None
        if not isinstance(exec_id, str) or not exec_id:
            return ()
        raw, _ = await self._request(e, "exec-start", f"{prefix}/exec/{exec_id}/start", method="POST",
                                     payload={"Detach": False, "Tty": False}, json_body=False, allow=(404, 409))
        if raw is None:
            return ()
        try:
            stdout, stderr = demux_stream(raw)
        except ValueError as exc:
            raise DockerLookupError(f"docker on {e.host} ({e.base}): exec stream of {cid[:12]}: {exc}") from exc
        code = await self._exec_exit_code(e, prefix, exec_id)
        if code in _EXEC_MISSING:
            e.no_exec.add(cid)
            log.warning("container %s has no `ip` binary (exit %s: %s): its Weave IP is read from /etc/hosts only",
                        cid[:12], code, (stdout + stderr).decode(errors="replace").strip()[:200])
            return ()
        if code != 0:
            return ()
        return tuple(_INET.findall(stdout.decode(errors="replace")))

    async def _exec_exit_code(self, e: _Engine, prefix: str, exec_id: str) -> int | None:
        """`ExitCode` of a finished exec; the stream can end a moment before the daemon records the
        exit, so a `Running` answer is asked again (bounded). None if it never says."""
        for _ in range(_EXEC_EXIT_POLLS):
            info = await self._get(e, "exec-inspect", f"{prefix}/exec/{exec_id}/json", allow_404=True)
            if not isinstance(info, dict):
                return None
            if not info.get("Running"):
                code = info.get("ExitCode")
                return code if isinstance(code, int) else None
            await asyncio.sleep(0.005)
        return None


def weave_proxied_inspect(info: Mapping[str, Any]) -> bool:
    """Was this container created through the Weave proxy, and not left alone by it? (§1.3, §1.4)

    Any of `Config.Entrypoint[0] == "/w/w"`, a bind or mount at `/w`, or a `WEAVE_CIDR` env entry;
    but the first `WEAVE_CIDR` being exactly `none` means the proxy left the container alone."""
    config = info.get("Config") or {}
    weave_cidr = next((x[len(WEAVE_CIDR_ENV):] for x in config.get("Env") or () if isinstance(x, str)
                       and x.startswith(WEAVE_CIDR_ENV)), None)
    if weave_cidr == "none":
        return False
    entrypoint = config.get("Entrypoint")
    if isinstance(entrypoint, list) and entrypoint and entrypoint[0] == WEAVE_ENTRYPOINT:
        return True
    binds = (info.get("HostConfig") or {}).get("Binds") or ()
    if any(isinstance(b, str) and b.split(":")[1:2] == [WEAVE_VOLUME] for b in binds):
        return True
    if any(isinstance(m, dict) and m.get("Destination") == WEAVE_VOLUME for m in info.get("Mounts") or ()):
        return True
    return weave_cidr is not None


def rewritten_ip(info: Mapping[str, Any]) -> str | None:
    """The top-level `NetworkSettings.IPAddress` when the Weave proxy's `--rewrite-inspect` set it.

    Docker (API >= 1.21) copies it from the default `bridge` endpoint, or leaves it empty; the proxy
    replaces exactly it (and `IPPrefixLen`, `MacAddress`) with the first Weave IP and leaves
    `Networks` alone (reference/weave.md §3). So a value that none of `Networks` has is the proxy's."""
    settings = info.get("NetworkSettings") or {}
    top = settings.get("IPAddress")
    networks = settings.get("Networks")
    if not isinstance(top, str) or not top or not isinstance(networks, dict):
        return None
    if any(isinstance(n, dict) and n.get("IPAddress") == top for n in networks.values()):
        return None
    return top


def weave_hosts_ips(text: str) -> tuple[str, ...]:
    """The IPs of the `# container hostname` lines inside a complete Weave block (§2.3): one line per
    Weave CIDR, in `WEAVE_CIDR` order, `<ip> <names>` with any whitespace (v1.2-v1.9 use 4 spaces,
    v2 pads to 15). Nothing unless both markers are there: no block is "not attached (yet)", and a
    block without its END is a write in progress."""
    lines = [line.strip() for line in text.splitlines()]
    try:
        begin = lines.index(HOSTS_BEGIN)
        end = lines.index(HOSTS_END, begin + 1)
    except ValueError:
        return ()
    ips: list[str] = []
    in_section = False
    for line in lines[begin + 1:end]:
        if line.startswith("#"):
            in_section = line == HOSTS_SECTION
        elif not line:
            in_section = False
        elif in_section:
            ip = line.split()[0]
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                continue
            ips.append(ip)
    return tuple(ips)


def tar_single_file(body: bytes, limit: int = 1 << 20) -> str:
    """The text of the one regular file in an archive-endpoint tar (§6.1)."""
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
        member = tar.next()
        if member is None or not member.isfile():
            raise ValueError("no regular file in it")
        if member.size > limit:
            raise ValueError(f"{member.name} is {member.size} bytes")
        f = tar.extractfile(member)
        if f is None:
            raise ValueError(f"{member.name} cannot be read")
        return f.read().decode(errors="replace")


def _newer(mtime: Any, started_at: Any) -> bool:
    """Is RFC 3339 `mtime` later than `started_at` (both UTC, as the engine writes them)? True when
    either cannot be read, so that an unknown answer costs the GET, never a missed block. Go trims
    trailing zeros of the fraction, so the fractions are padded before comparing."""
    def key(value: Any) -> tuple[str, str] | None:
        if not isinstance(value, str) or not value.endswith("Z") or len(value) < 20:
            return None
        whole, _, fraction = value[:-1].partition(".")
        return (whole, fraction.ljust(9, "0")) if len(whole) == 19 and (fraction.isdigit() or not fraction) else None

    m, s = key(mtime), key(started_at)
    return m is None or s is None or m > s


def path_stat(headers: Mapping[str, str]) -> dict[str, Any] | None:
    """`X-Docker-Container-Path-Stat`: base64 of `{name,size,mode,mtime,linkTarget}` (§6.1); None if
    absent or unreadable (it is only a shortcut)."""
    raw = headers.get("X-Docker-Container-Path-Stat")
    if not raw:
        return None
    try:
        stat = json.loads(base64.b64decode(raw))
    except ValueError:
        return None
    return stat if isinstance(stat, dict) else None


def demux_stream(raw: bytes) -> tuple[bytes, bytes]:
    """(stdout, stderr) of a non-TTY attach/exec stream: frames of an 8-byte header
    `[stream, 0, 0, 0, size (uint32 big-endian)]` and `size` bytes of payload (§6.2)."""
    out, err = bytearray(), bytearray()
    pos = 0
    while pos < len(raw):
        header = raw[pos:pos + 8]
        if len(header) < 8 or header[0] not in (0, 1, 2) or header[1:4] != b"\0\0\0":
            raise ValueError(f"bad frame header at byte {pos}: {header.hex()}")
        size = int.from_bytes(header[4:8], "big")
        payload = raw[pos + 8:pos + 8 + size]
        if len(payload) < size:
            raise ValueError(f"frame at byte {pos} announces {size} bytes, {len(payload)} follow")
        (err if header[0] == 2 else out).extend(payload)
        pos += 8 + size
    return bytes(out), bytes(err)


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
            "Weave": weave_proxied_entry(entry),
        }


def weave_proxied_entry(entry: Mapping[str, Any]) -> bool:
    """Weave proxy markers visible in a list entry (reference/weave.md §1.4): `Command` is
    `Path + Args`, so it starts with `/w/w`; `Mounts` holds the `/w` bind. (`WEAVE_CIDR` is in the env,
    which only an inspect shows.)"""
    command = entry.get("Command")
    if isinstance(command, str) and (command == WEAVE_ENTRYPOINT or command.startswith(WEAVE_ENTRYPOINT + " ")):
        return True
    return any(isinstance(m, dict) and m.get("Destination") == WEAVE_VOLUME for m in entry.get("Mounts") or ())


def _forget_stopped(e: _Engine, listing: _Listing) -> None:
    """Drop the per-container Weave answers of containers this listing shows stopped or gone: a
    restarted container gets Docker's hosts file back until the proxy re-attaches it (§6.1)."""
    if not (e.weave or e.noted or e.no_exec):
        return
    running = {x["Id"] for x in listing.raw.values() if x.get("State") == "running"}
    for cid in [c for c in e.weave if c not in running]:
        del e.weave[cid]
    e.noted &= running
    e.no_exec &= running


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
