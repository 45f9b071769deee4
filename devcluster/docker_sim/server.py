"""HTTP face of the simulator: the Docker Engine API subset `service/docker_lookup.py` uses, and the
control API (`/_sim/...`, outside any path Docker defines) that tests and the bench drive it with."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web

from devcluster.docker_sim import templates as t
from devcluster.docker_sim.engine import FilterError, SimEngine
from devcluster.faults import Faults, docker_profile

ENGINE_KEY: web.AppKey[SimEngine] = web.AppKey("engine", SimEngine)
_VERSIONED = re.compile(r"^/v(\d+)\.(\d+)(/.*)$")
_VERSION_BODY = json.dumps(t.VERSION, separators=(",", ":")).encode()
_MAX_API = tuple(int(x) for x in t.API_VERSION.split("."))


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json", headers=t.HEADERS)


def _error(status: int, message: str) -> web.Response:
    return _json(json.dumps({"message": message}).encode(), status)


async def _docker(request: web.Request) -> web.StreamResponse:
    """Route `/[vX.Y]/...` like dockerd: a version above the engine's is refused with its message."""
    engine = request.app[ENGINE_KEY]
    path = request.path
    m = _VERSIONED.match(path)
    if m:
        if (int(m[1]), int(m[2])) > _MAX_API:
            engine.stats["rejected-version"] += 1
            return _error(400, f"client version {m[1]}.{m[2]} is too new. "
                               f"Maximum supported API version is {t.API_VERSION}")
        path = m[3]
    if path == "/_ping":
        engine.stats["/_ping"] += 1
        return web.Response(text="OK", headers={**t.HEADERS, "Cache-Control": "no-cache, no-store, must-revalidate",
                                                "Pragma": "no-cache"})
    if path == "/version":
        engine.stats["/version"] += 1
        return _json(_VERSION_BODY)
    if path == "/containers/json":
        engine.stats["/containers/json"] += 1
        filters = request.query.get("filters", "")
        engine.stats[f"/containers/json?filters={_filter_kind(filters)}"] += 1
        all_ = request.query.get("all", "") in ("1", "true", "True")
        try:
            body, returned = engine.listing(filters, all_)
        except FilterError as exc:
            return _error(400, str(exc))
        delay = engine.list_delay(returned)
        if delay:
            # The engine's scan (and rendering) cost. A sleep, not a busy loop: on a real cluster that
            # CPU is burnt by dockerd on the slave, not on the registrar's cores the bench measures.
            await asyncio.sleep(delay)
        return _json(body)
    parts = path.split("/")
    if len(parts) == 4 and parts[1] == "containers" and parts[3] == "json":
        engine.stats["/containers/{id}/json"] += 1
        c = engine.lookup(parts[2])
        if c is None:
            return _error(404, f"No such container: {parts[2]}")
        return _json(c.inspect_json)
    engine.stats["not-found"] += 1
    return _error(404, "page not found")


def _filter_kind(filters: str) -> str:
    """`label`, `label=value` (narrowed to one value), `name`, `label,name`, `none` or `invalid`: a
    bounded stats key per listing."""
    if not filters:
        return "none"
    try:
        raw = json.loads(filters)
        keys = [f"{k}=value" if any("=" in str(v) for v in raw[k]) else k for k in sorted(raw)]
    except (ValueError, TypeError, AttributeError):
        return "invalid"
    return ",".join(keys) or "none"


async def _sim_create(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    try:
        items = await request.json()
        if isinstance(items, dict):
            items = [items]
        made = [engine.create(item) for item in items]
    except (ValueError, KeyError, TypeError) as exc:
        return web.json_response({"message": f"bad container spec: {exc!r}"}, status=400)
    return web.json_response([{"id": c.id, "name": c.name, "task_id": c.task_id} for c in made], status=201)


async def _sim_delete(request: web.Request) -> web.Response:
    removed = request.app[ENGINE_KEY].delete(request.match_info["ref"])
    if not removed:
        return web.json_response({"message": "no such container"}, status=404)
    return web.json_response({"removed": removed})


async def _sim_reset(request: web.Request) -> web.Response:
    request.app[ENGINE_KEY].reset()
    return web.json_response({"reset": True})


async def _sim_stats(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    return web.json_response({"requests": dict(engine.stats), "containers": len(engine.containers)})


def make_app(engine: SimEngine, faults: Faults | None = None) -> web.Application:
    """One engine's app; `faults` (shared by the process's engines) answers `/_sim/faults`."""
    faults = faults or Faults(docker_profile(t.HEADERS))
    app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[faults.middleware])
    app[ENGINE_KEY] = engine
    app.router.add_post("/_sim/containers", _sim_create)
    app.router.add_delete("/_sim/containers/{ref}", _sim_delete)
    app.router.add_post("/_sim/reset", _sim_reset)
    app.router.add_get("/_sim/stats", _sim_stats)
    app.router.add_route("*", "/{tail:.*}", _docker)
    return app


@dataclass
class Running:
    """A started simulated slave: where it listens and its state (for in-process tests and bench)."""

    host: str
    port: int
    engine: SimEngine
    runner: web.AppRunner

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"


async def start(
    listens: Iterable[tuple[str, int]], *, list_cost_us: float = 0.0, result_cost_us: float = 0.0
) -> list[Running]:
    """Serve one simulated slave per (host, port); port 0 picks a free one. The costs model a listing's
    time on the real engine: per container held and per container returned, in microseconds."""
    out: list[Running] = []
    faults = Faults(docker_profile(t.HEADERS))  # one rule set for every engine of the process
    try:
        for host, port in listens:
            engine = SimEngine(host_ip=host, list_cost_us=list_cost_us, result_cost_us=result_cost_us)
            runner = web.AppRunner(make_app(engine, faults), access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, host, port, reuse_address=True)
            await site.start()
            server = site._server
            bound = server.sockets[0].getsockname()[1] if server and server.sockets else port  # type: ignore[union-attr]
            out.append(Running(host, bound, engine, runner))
    except BaseException:
        await stop(out)
        raise
    return out


async def stop(running: Iterable[Running]) -> None:
    for r in running:
        await r.runner.cleanup()
