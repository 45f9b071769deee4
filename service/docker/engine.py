"""Talk to one slave's Docker Engine API: its session, its API version, and one error contract for
every call. The container lookup (service.docker.lookup) and the Weave proxy support
(service.docker.weave_proxy) make their calls through here.

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

The API version is negotiated once per engine, from the `Api-Version` header of `GET /_ping` (else
`GET /version`), and is exactly what the engine says it speaks (never pinned above it: a 20.10
engine answers 400 to anything over 1.41). Every call has a timeout; every failure raises
`DockerLookupError` naming the slave, so the caller's retry/back-off applies. Every call is timed
in `metrics.docker_latency` by call name (`ping`, `version`, `list`, `list-task`, `list-named`,
`inspect`, and for Weave: `archive`, `exec-create`, `exec-start`, `exec-inspect`).

The back-off is the engine's, not the work's (`service.retry.Cooldown`, docs/architecture.md §7):
the lookup makes no retries of its own (the step's work is retried), so while an engine answers
429/5xx, refuses connections or times out, every call to it, whatever work asks, waits out one
shared back-off (`ENGINE_BACKOFF`) and one call at a time probes it.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from service.backoff import Backoff
from service.connect import TLSConfigError, TLSOptions, docker_files, ssl_context, tls_reason
from service.errors import (
    CONFIG,
    GARBAGE,
    GONE,
    CallError,
    Classified,
    classify_status,
    classify_transport,
    record,
    target_unwell,
)
from service.errors import consume_exception as consume_exception
from service.metrics import Metrics
from service.retry import Cooldown, Stop, watching

INSPECT_CONCURRENCY = 16  # per engine; the reference saw 50 concurrent inspects served in ~6 ms
# One engine's shared back-off while it cannot answer (as an agent's: service.consul.call.CALL_BACKOFF)
ENGINE_BACKOFF = Backoff(initial=0.1, cap=2.0)


class DockerLookupError(CallError):
    """A Docker Engine API call failed (unreachable, timed out, non-2xx, unparsable); `verdict` and
    `cause` say what the answer meant (RETRY unless classified otherwise)."""


@dataclass(slots=True, eq=False)
class Engine:
    """One engine's connection: the session, the negotiated API prefix, and the bound on the
    per-container calls (inspects, Weave lookups) in flight at once, so a burst cannot flood it."""

    host: str  # the slave the engine was first asked for (for messages)
    base: str  # "http://127.0.0.2:2375" or "http://docker" for a unix socket
    session: aiohttp.ClientSession
    prefix: str | None = None  # "/v1.41" once negotiated
    version_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    inspect_limit: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(INSPECT_CONCURRENCY))
    cooldown: Cooldown = field(default_factory=lambda: Cooldown(ENGINE_BACKOFF))


class DockerEngines:
    """Opens engines and makes their calls under one error contract. `tls` holds Docker's TLS
    conventions (service.config), whose paths may hold {host}. Which engine serves which host, and
    what is known of it beyond the connection, is the caller's (ContainerLookup's)."""

    def __init__(self, *, metrics: Metrics, timeout: float, tls: TLSOptions | None, stop: Stop | None = None) -> None:
        self._tls = tls
        self._stop = stop
        self._metrics = metrics
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def open(self, host: str, url: str) -> Engine:
        """A session for the engine at `url`: `tcp://host:2375` (also `http://`, `https://`) or
        `unix:///path.sock`; `host` names it in messages and picks its TLS files."""
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
        return Engine(host=host, base=base, session=session)

    async def get(self, e: Engine, call: str, path: str, *, allow_404: bool = False) -> Any:
        """GET base+path, parse JSON; DockerLookupError on any failure (None for an allowed 404)."""
        body, _ = await self.request(e, call, path, allow_404=allow_404)
        return body

    async def request(self, e: Engine, call: str, path: str, *, allow_404: bool = False,
                       json_body: bool = True, method: str = "GET", payload: Any = None, expect: int = 200,
                       allow: tuple[int, ...] = (), send_headers: Mapping[str, str] | None = None,
                       ) -> tuple[Any, Mapping[str, str]]:
        """`method` base+path (with `payload` as a JSON body): the body (parsed as JSON unless
        `json_body` is false; None for an allowed 404 or a status in `allow`) and the headers. Every
        other answer than `expect` is one DockerLookupError naming the slave and the call."""
        cooldown = e.cooldown
        probe = await cooldown.ready(watching(self._stop)) if cooldown.cooling else False
        try:
            result = await self._request(e, call, path, allow_404=allow_404, json_body=json_body, method=method,
                                         payload=payload, expect=expect, allow=allow, send_headers=send_headers)
        except DockerLookupError as exc:
            if target_unwell(Classified(exc.verdict, exc.cause)):
                cooldown.failed()
            else:
                cooldown.succeeded()  # an answer, if not the one wanted
            raise
        except BaseException:
            if probe:
                cooldown.abandoned()  # cancelled, or a bug of ours: no answer either way
            raise
        cooldown.succeeded()
        return result

    async def _request(self, e: Engine, call: str, path: str, *, allow_404: bool, json_body: bool, method: str,
                       payload: Any, expect: int, allow: tuple[int, ...], send_headers: Mapping[str, str] | None,
                       ) -> tuple[Any, Mapping[str, str]]:
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
                    raise self.fail(e, call, classify_status(resp.status, text),
                                     f"{call} answered {resp.status}: {text}")
                headers = resp.headers
            return (json.loads(body) if json_body else body), headers
        except DockerLookupError:
            raise
        except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError: not the engine's JSON
            if not isinstance(exc, (aiohttp.ClientError, OSError)):  # an SSL verify failure is a ValueError too
                raise self.fail(e, call, GARBAGE, f"{call} answered 200 with a body that is not JSON: {exc}") from exc
            failure = self._transport_failure(e, call, exc)
            raise failure from exc
        except Exception as exc:
            failure = self._transport_failure(e, call, exc)
            if failure is exc:
                raise  # not the engine's answer: a bug of ours, which must stay loud
            raise failure from exc
        finally:
            self._metrics.labelled(self._metrics.docker_latency, call).observe(time.perf_counter() - t0)

    async def listing(self, e: Engine, call: str, path: str) -> list[dict[str, Any]]:
        """GET a container listing (`/containers/json?...`): its entries that have an `Id`. JSON that
        is not a list is garbage (REPORT), never a crash later."""
        payload, _ = await self.request(e, call, path)
        if not isinstance(payload, list):
            raise self.fail(e, call, GARBAGE, "container listing is not a JSON list")
        return [x for x in payload if isinstance(x, dict) and x.get("Id")]

    def _transport_failure(self, e: Engine, call: str, exc: Exception) -> Exception:
        """The error for a request that got no answer (refused, reset, timed out, TLS failed); an
        exception that is no answer of the engine's (a bug of ours) is returned as it is."""
        classified = classify_transport(exc)
        if classified is None:
            return exc
        why = tls_reason(exc, https=e.base.startswith("https://")) or repr(exc)
        detail = (f"{call} timed out after {self._timeout.total} s" if isinstance(exc, TimeoutError)
                  else f"{call} failed: {why}")
        return self.fail(e, call, classified, detail)

    def fail(self, e: Engine, call: str, classified: Classified, detail: str) -> DockerLookupError:
        """Count (and, for a REPORT, log once) a failed answer; the error to raise for it."""
        message = f"docker on {e.host} ({e.base}): {detail}"
        record(self._metrics, system="docker", call=call, target=e.base, classified=classified, message=message)
        return DockerLookupError(message, classified)

    async def prefix(self, e: Engine) -> str:
        """`/v<ApiVersion>` as the engine reports it; asked once per engine.

        From the `Api-Version` header of `GET /_ping`, as the docker CLI negotiates: measured on the
        test world's engines, `/_ping` answers in ~0.4 ms and `/version` in 5-7 ms (it gathers
        component versions), and this is on the path of the first event from every slave. An
        engine whose ping carries no such header (older than API 1.25) is asked `/version`."""
        if e.prefix is None:
            async with e.version_lock:
                if e.prefix is None:
                    _, headers = await self.request(e, "ping", "/_ping", json_body=False)
                    api = headers.get("Api-Version") or None
                    if api is None:
                        info = await self.get(e, "version", "/version")
                        api = info.get("ApiVersion") if isinstance(info, dict) else None
                    if not isinstance(api, str) or not api:
                        raise self.fail(e, "version", GARBAGE, "/version has no ApiVersion")
                    e.prefix = f"/v{api}"
        return e.prefix
