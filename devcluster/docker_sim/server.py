"""HTTP face of the simulator: the Docker Engine API subset `service/docker/lookup.py` and
`service/docker/weave_proxy.py` use (through `service/docker/engine.py`), and the control API (`/_sim/...`,
outside any path Docker defines) that tests and the bench drive it with."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web

from devcluster.docker_sim import templates as t
from devcluster.docker_sim.engine import FilterError, SimContainer, SimEngine
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
        return _json(engine.inspect_body(c))
    if len(parts) == 4 and parts[1] == "containers" and parts[3] == "archive" and request.method in ("GET", "HEAD"):
        engine.stats[("HEAD " if request.method == "HEAD" else "") + "/containers/{id}/archive"] += 1
        return await _archive(request, engine, parts[2])
    if len(parts) == 4 and parts[1] == "containers" and parts[3] == "exec" and request.method == "POST":
        engine.stats["/containers/{id}/exec"] += 1
        return await _exec_create(request, engine, parts[2])
    if len(parts) == 4 and parts[1] == "exec" and parts[3] == "start" and request.method == "POST":
        engine.stats["/exec/{id}/start"] += 1
        return await _exec_start(request, engine, parts[2])
    if len(parts) == 4 and parts[1] == "exec" and parts[3] == "json":
        engine.stats["/exec/{id}/json"] += 1
        x = engine.execs.get(parts[2])
        if x is None:
            return _error(404, f"No such exec instance: {parts[2]}")
        info = t.exec_inspect(x.id, x.container.id, x.cmd, False, x.exit_code, x.pid)
        return _json(json.dumps(info, separators=(",", ":")).encode())
    engine.stats["not-found"] += 1
    return _error(404, "page not found")


async def _archive(request: web.Request, engine: SimEngine, ref: str) -> web.StreamResponse:
    """`GET|HEAD /containers/{id}/archive?path=`: a tar of the one file, and its stat as
    `X-Docker-Container-Path-Stat` (reference/weave.md §6.1). Only /etc/hosts exists here."""
    c = engine.lookup(ref)
    if c is None:
        return _error(404, f"No such container: {ref}")
    path = request.query.get("path", "")
    if not path:
        return _error(400, "bad parameter: path cannot be empty")
    if path != "/etc/hosts":
        return _error(404, f"Could not find the file {path} in container {ref}")
    text, mtime = engine.hosts_file(c)
    data = text.encode()
    mtime_iso = datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
    stat = {"name": "hosts", "size": len(data), "mode": 0o644, "mtime": mtime_iso, "linkTarget": ""}
    headers = {**t.HEADERS, "Content-Type": "application/x-tar",
               "X-Docker-Container-Path-Stat": base64.b64encode(json.dumps(stat, separators=(",", ":")).encode())
               .decode()}
    if request.method == "HEAD":
        return web.Response(status=200, headers=headers)
    resp = web.StreamResponse(status=200, headers=headers)  # chunked, as the engine answers it
    await resp.prepare(request)
    await resp.write(_tar_one("hosts", data, mtime))
    await resp.write_eof()
    return resp


def _tar_one(name: str, data: bytes, mtime: float) -> bytes:
    """A tar of one file as Go's archive/tar writes it: header, data padded to 512, two zero blocks
    (the 2048 bytes measured for a 361-byte hosts file; Python's tarfile would pad to 10240)."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, int(mtime)
    info.uname = info.gname = "root"
    pad = -len(data) % tarfile.BLOCKSIZE
    return info.tobuf(format=tarfile.USTAR_FORMAT) + data + b"\0" * pad + b"\0" * (2 * tarfile.BLOCKSIZE)


async def _exec_create(request: web.Request, engine: SimEngine, ref: str) -> web.Response:
    """`POST /containers/{id}/exec` (reference/weave.md §6.2): 201 `{"Id"}`; 404, 409 not running."""
    c = engine.lookup(ref)
    if c is None:
        return _error(404, f"No such container: {ref}")
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError as exc:
        return _error(400, f"invalid character in request body: {exc}")
    cmd = body.get("Cmd") if isinstance(body, dict) else None
    if not isinstance(cmd, list) or not cmd or not all(isinstance(a, str) for a in cmd):
        return _error(400, "No exec command specified")
    if not c.running:
        return _error(409, f"Container {c.id} is not running")
    x = engine.exec_create(c, cmd)
    return _json(json.dumps({"Id": x.id}).encode(), status=201)


class _RawStream(web.StreamResponse):
    """The hijacked connection of `POST /exec/{id}/start`: the daemon writes a status line and headers,
    then raw bytes with neither Content-Length nor chunking, and closes at the end (§6.2)."""

    _length_check = False


async def _exec_start(request: web.Request, engine: SimEngine, exec_id: str) -> web.StreamResponse:
    x = engine.execs.get(exec_id)
    if x is None:
        return _error(404, f"No such exec instance: {exec_id}")
    if not x.container.running:
        return _error(409, f"Container {x.container.id} is not running")
    frames = engine.exec_run(x)
    resp = _RawStream(status=200, headers={"Content-Type": "application/vnd.docker.raw-stream", **t.HEADERS})
    resp.force_close()
    await resp.prepare(request)
    out = io.BytesIO()
    for stream, payload in frames:  # [stream, 0, 0, 0, size uint32 big-endian] + payload
        out.write(bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload)
    await resp.write(out.getvalue())
    await resp.write_eof()
    return resp


async def _sim_weave_attach(request: web.Request) -> web.Response:
    c: SimContainer | None = request.app[ENGINE_KEY].weave_attach(request.match_info["ref"])
    if c is None:
        return web.json_response({"message": "no such Weave-proxied container"}, status=404)
    return web.json_response({"id": c.id, "weave_ips": c.weave.ips if c.weave else []})


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
    app.router.add_post("/_sim/containers/{ref}/weave-attach", _sim_weave_attach)
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
    listens: Iterable[tuple[str, int]], *, list_cost_us: float = 0.0, result_cost_us: float = 0.0,
    rewrite_inspect: bool = False,
) -> list[Running]:
    """Serve one simulated slave per (host, port); port 0 picks a free one. The costs model a listing's
    time on the real engine: per container held and per container returned, in microseconds.
    `rewrite_inspect`: answer inspects as the Weave proxy started with `--rewrite-inspect` would."""
    out: list[Running] = []
    faults = Faults(docker_profile(t.HEADERS))  # one rule set for every engine of the process
    try:
        for host, port in listens:
            engine = SimEngine(host_ip=host, list_cost_us=list_cost_us, result_cost_us=result_cost_us,
                               rewrite_inspect=rewrite_inspect)
            runner = web.AppRunner(make_app(engine, faults), access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, host, port, reuse_address=True)
            await site.start()
            server = site._server
            bound = server.sockets[0].getsockname()[1] if server and server.sockets else port  # type: ignore[attr-defined]
            out.append(Running(host, bound, engine, runner))
    except BaseException:
        await stop(out)
        raise
    return out


async def stop(running: Iterable[Running]) -> None:
    for r in running:
        await r.runner.cleanup()
