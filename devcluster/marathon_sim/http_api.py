"""The REST API: the `/v2` subset the registrar uses, plus test-only endpoints under `/_sim`.

App ids contain slashes, so `/v2/apps/...` is one route dispatched by hand (`.../tasks` suffix =
the app's tasks), as Marathon's `AppsResource` does. In standby mode (`--standby-of URL`) a
middleware answers `/v2/events` with 302 to the leader (Marathon >= 1.7 behaviour, preserving the
query) and proxies every other `/v2` request to the leader, like `LeaderProxyFilter`; `/v2/leader`
and `/_sim` stay local.

Test-only endpoints (outside `/v2`, so nobody mistakes them for Marathon's API):
- `POST /_sim/event-streams/drop`: close every SSE stream now (as on a leader abdication).
- `POST /_sim/event-streams/silence`: keep streams open but write nothing, heartbeats included,
  until `POST /_sim/event-streams/resume` (events queue up, subject to the per-client buffer).
- `GET /_sim/subscribers`: per-callback-URL back-off state.
- `/_sim/faults`: error injection (`devcluster/faults.py`).
- `POST /_sim/agents/{host}/partition|reconnect`: an agent partition (`partition.py`).

Pods (`/v2/pods...`) are served by `pods_api.py`.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from devcluster.faults import MARATHON, Faults
from devcluster.marathon_sim import events as ev
from devcluster.marathon_sim.app_json import ValidationError, normalize_id, parse_app, render_app
from devcluster.marathon_sim.callbacks import CallbackDispatcher
from devcluster.marathon_sim.config import SimConfig
from devcluster.marathon_sim.partition import Partitions
from devcluster.marathon_sim.pods import Pods
from devcluster.marathon_sim.pods_api import PodsApi, json_body
from devcluster.marathon_sim.scheduler import AppLocked, Scheduler
from devcluster.marathon_sim.sse import EventStreams
from devcluster.marathon_sim.state import AppRecord, Registry

log = logging.getLogger("marathon_sim.http")

NOT_FOUND = {"message": "HTTP 404 Not Found"}
CALLBACKS_OFF = ("http event callback system is not running on this Marathon instance. Please re-start this "
                 "instance with\n\"--event_subscriber http_callback\".")


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(body, separators=(",", ":")),
                        content_type="application/json", headers=headers)


def _embeds(request: web.Request) -> set[str]:
    """`embed=apps.tasks` etc.; the prefix (`app.`, `apps.`, `group.apps.`) is optional."""
    out = set()
    for e in request.query.getall("embed", []):
        for prefix in ("group.apps.", "apps.", "app."):
            if e.startswith(prefix):
                e = e[len(prefix):]
                break
        out.add(e)
    return out


# Handlers are coroutines: aiohttp deprecates plain functions as handlers (DeprecationWarning
# "Bare functions are deprecated, use async ones").
async def _pong(_: web.Request) -> web.Response:
    return web.Response(text="pong")


async def _not_found(_: web.Request) -> web.Response:
    return _json(NOT_FOUND, 404)


class Api:
    def __init__(self, cfg: SimConfig, registry: Registry, scheduler: Scheduler, streams: EventStreams,
                 callbacks: CallbackDispatcher | None, pods: Pods | None = None) -> None:
        self.cfg = cfg
        self.pods = pods or Pods(cfg, registry, scheduler.bus, scheduler.dockers)
        self.partitions = Partitions(scheduler, self.pods)
        self.reg = registry
        self.sched = scheduler
        self.streams = streams
        self.callbacks = callbacks
        self._proxy_session: aiohttp.ClientSession | None = None
        self.faults = Faults(MARATHON)  # /_sim/faults
        # Every group an app was ever created in: Marathon keeps a group after its last app is
        # deleted (until the group itself is), so `GET /v2/apps/<group>/*` then answers `{"*":[]}`.
        self.groups: set[str] = {"/"}

    def build(self) -> web.Application:
        app = web.Application(middlewares=[self.faults.middleware, self._standby_middleware],
                              client_max_size=8 * 1024 * 1024)
        r = app.router
        r.add_get("/ping", _pong)
        r.add_get("/v2/info", self.info)
        r.add_get("/v2/leader", self.leader)
        r.add_get("/v2/apps", self.list_apps)
        r.add_post("/v2/apps", self.create_app)
        # Jersey matches a resource path with or without its trailing slash; Prometheus' Marathon SD
        # asks for `/v2/apps/?embed=apps.tasks`
        r.add_get("/v2/apps/", self.list_apps)
        r.add_post("/v2/apps/", self.create_app)
        r.add_route("*", "/v2/apps/{tail:.+}", self.app_route)
        r.add_get("/v2/tasks", self.list_tasks)
        r.add_get("/v2/deployments", self.list_deployments)
        r.add_get("/v2/events", self.streams.handle)
        r.add_route("*", "/v2/eventSubscriptions", self.event_subscriptions)
        r.add_post("/_sim/event-streams/drop", self.sim_drop)
        r.add_post("/_sim/event-streams/silence", self.sim_silence)
        r.add_post("/_sim/event-streams/resume", self.sim_resume)
        r.add_get("/_sim/subscribers", self.sim_subscribers)
        PodsApi(self.cfg, self.pods).add_routes(r)
        self.partitions.add_routes(r)
        r.add_route("*", "/v2/{tail:.*}", _not_found)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, _: web.Application) -> None:
        if self._proxy_session is not None:
            await self._proxy_session.close()

    # ------------------------------------------------------------------ standby

    @web.middleware
    async def _standby_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        leader = self.cfg.standby_of
        path = request.path
        if not leader or not path.startswith("/v2/") or path == "/v2/leader":
            response: web.StreamResponse = await handler(request)
            return response
        leader = leader.rstrip("/")
        if path == "/v2/events":
            location = f"{leader}/v2/events" + (f"?{request.query_string}" if request.query_string else "")
            return web.Response(status=302, headers={"Location": location})
        if self._proxy_session is None:
            self._proxy_session = aiohttp.ClientSession(auto_decompress=False)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in {"host", "content-length"}}
        body = await request.read()
        async with self._proxy_session.request(request.method, f"{leader}{request.path_qs}", headers=headers,
                                               data=body or None, allow_redirects=False) as upstream:
            data = await upstream.read()
            out_headers = {k: v for k, v in upstream.headers.items()
                           if k.lower() not in {"content-length", "transfer-encoding", "connection",
                                                "content-encoding", "date", "server"}}
            out_headers["X-Marathon-Via"] = f"1.1 {self.cfg.listen}"
            return web.Response(status=upstream.status, body=data, headers=out_headers)

    # ------------------------------------------------------------------ info

    def _leader_name(self) -> str:
        if self.cfg.standby_of:
            return urlsplit(self.cfg.standby_of).netloc
        return self.cfg.listen

    async def leader(self, _: web.Request) -> web.Response:
        return _json({"leader": self._leader_name()})

    async def info(self, _: web.Request) -> web.Response:
        mc: dict[str, Any] = {
            "master": "zk://127.0.0.1:2181/mesos", "failover_timeout": 604800, "framework_name": "marathon",
            "ha": True, "checkpoint": True, "local_port_min": 10000, "local_port_max": 20000, "executor": "//cmd",
            "hostname": self.cfg.listen_host, "webui_url": None, "mesos_role": None, "task_launch_timeout": 300000,
            "reconciliation_initial_delay": 15000, "reconciliation_interval": 600000, "mesos_user": "root",
            "leader_proxy_connection_timeout_ms": 5000, "leader_proxy_read_timeout_ms": 10000,
            "features": [] if self.cfg.version < (1, 5) else ["task_killing"],
            "mesos_leader_ui_url": "http://127.0.0.1:5050/", "env_vars_prefix": None,
            "mesos_bridge_name": "mesos-bridge", "default_network_name": self.cfg.default_network_name,
        }
        body: dict[str, Any] = {
            "name": "marathon", "version": self.cfg.version_string, "buildref": "marathon-sim",
            "elected": not self.cfg.standby_of, "leader": self._leader_name(),
            "frameworkId": self.reg.framework_id, "marathon_config": mc,
            "zookeeper_config": {"zk": "zk://127.0.0.1:2181/marathon", "zk_timeout": 10000,
                                 "zk_session_timeout": 10000, "zk_max_versions": 50},
        }
        if self.cfg.callbacks:
            body["event_subscriber"] = {"type": "http_callback",
                                        "http_endpoints": list(self.callbacks.subscribers) if self.callbacks else []}
        body["http_config"] = {"http_port": self.cfg.listen_port, "https_port": 8443}
        return _json(body)

    # ------------------------------------------------------------------ apps

    def _app_info(self, rec: AppRecord, embeds: set[str], *, single: bool) -> dict[str, Any]:
        out = render_app(rec.spec, self.cfg)
        tasks = rec.active_tasks()
        out["tasksStaged"] = sum(1 for t in tasks if t.state in {"TASK_STAGING", "TASK_STARTING"})
        out["tasksRunning"] = sum(1 for t in tasks if t.state == "TASK_RUNNING")
        out["tasksHealthy"] = sum(1 for t in tasks if rec.spec.health_checks and t.healthy is True)
        out["tasksUnhealthy"] = sum(1 for t in tasks if rec.spec.health_checks and t.healthy is False)
        out["deployments"] = self.sched.deployment_ids_for(rec.spec.id)
        if single or "tasks" in embeds:
            out["tasks"] = [t.to_json(rec.spec, self.cfg) for t in tasks]
        if (single or "lastTaskFailure" in embeds) and rec.last_task_failure:
            out["lastTaskFailure"] = rec.last_task_failure
        return out

    async def list_apps(self, request: web.Request) -> web.Response:
        embeds = _embeds(request)
        id_filter = request.query.get("id", "").lower()
        apps = [self._app_info(rec, embeds, single=False) for rec in self.reg.apps.values()
                if not rec.deleted and id_filter in rec.spec.id.lower()]
        return _json({"apps": apps})

    async def create_app(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        try:
            spec = parse_app(body, default_network_name=self.cfg.default_network_name)
        except ValidationError as exc:
            return _json(exc.body(), 422)
        existing = self.reg.apps.get(spec.id)
        if existing is not None:
            return _json({"message": f"An app with id [{spec.id}] already exists."}, 409)
        dep = self.sched.create_app(spec, client_ip=request.remote or "", uri=request.path)
        self._remember_groups(spec.id)
        rec = self.reg.apps[spec.id]
        out = self._app_info(rec, set(), single=False)
        out["deployments"] = [{"id": dep.id}]
        return _json(out, 201, headers={"Location": f"http://{self.cfg.listen}/v2/apps{spec.id}",
                                        "Marathon-Deployment-Id": dep.id})

    def _remember_groups(self, app_id: str) -> None:
        parts = app_id.strip("/").split("/")[:-1]
        self.groups.update("/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1))

    async def _group_listing(self, segments: list[str], *, tasks: bool) -> web.Response:
        r"""`GET /v2/apps/<group>/*` and `GET /v2/apps/<group>/*/tasks`: every app (every running
        task) under the group, transitively; `/v2/apps/*` is the root group. Marathon:
        `AppsResource.show` (`ListApps = ^((?:.+/)|)\*$` -> `{"*": [AppInfo...]}` with tasks, counts,
        deployments and lastTaskFailure embedded as for one app) and `AppTasksResource.indexJson`
        (`GroupTasks`, the same regex -> `{"tasks": [...]}`); an unknown group is 404
        `Group '<id>' does not exist` (RestResource.unknownGroup)."""
        group = "/" + "/".join(segments)
        if segments:
            group = normalize_id(group, _Ignore())
        if group not in self.groups:
            return _json({"message": f"Group '{group}' does not exist"}, 404)
        prefix = group.rstrip("/") + "/"
        recs = [rec for rec in self.reg.apps.values() if not rec.deleted and rec.spec.id.startswith(prefix)]
        if tasks:
            return _json({"tasks": [t.to_json(rec.spec, self.cfg) for rec in recs for t in rec.active_tasks()]})
        return _json({"*": [self._app_info(rec, set(), single=True) for rec in recs]})

    async def app_route(self, request: web.Request) -> web.Response:
        tail = request.match_info["tail"]
        segments = [s for s in tail.split("/") if s]
        if request.method == "GET" and segments[-1:] == ["*"]:
            return await self._group_listing(segments[:-1], tasks=False)
        if request.method == "GET" and segments[-2:] == ["*", "tasks"]:
            return await self._group_listing(segments[:-2], tasks=True)
        if segments and segments[-1] == "tasks" and request.method == "GET":
            app_id = normalize_id("/" + "/".join(segments[:-1]), _Ignore())
            rec = self.reg.apps.get(app_id)
            if rec is None or rec.deleted:
                return _json({"message": f"App '{app_id}' does not exist"}, 404)
            return _json({"tasks": [t.to_json(rec.spec, self.cfg) for t in rec.active_tasks()]})
        app_id = normalize_id("/" + "/".join(segments), _Ignore())
        rec = self.reg.apps.get(app_id)
        force = request.query.get("force", "false").lower() == "true"
        if request.method == "GET":
            if rec is None or rec.deleted:
                return _json({"message": f"App '{app_id}' does not exist"}, 404)
            return _json({"app": self._app_info(rec, _embeds(request), single=True)})
        if request.method == "PUT":
            return await self._put_app(request, app_id, rec, force)
        if request.method == "DELETE":
            if rec is None or rec.deleted:
                return _json({"message": f"App '{app_id}' does not exist"}, 404)
            try:
                dep = self.sched.delete_app(rec, force=force)
            except AppLocked as exc:
                return self._locked(exc)
            return _json({"version": dep.version, "deploymentId": dep.id}, headers={"Marathon-Deployment-Id": dep.id})
        return web.Response(status=405, text="HTTP method not allowed")

    def _locked(self, exc: AppLocked) -> web.Response:
        ids = exc.deployment_ids
        return _json({"message": "App is locked by one or more deployments. Override with the option "
                      "'?force=true'. View details at '/v2/deployments/<DEPLOYMENT_ID>'.",
                      "deployments": [{"id": i} for i in ids]}, 409)

    async def _put_app(self, request: web.Request, app_id: str, rec: AppRecord | None, force: bool) -> web.Response:
        body = await json_body(request)
        if rec is None or rec.deleted:
            if rec is not None:
                return self._locked(AppLocked([d["id"] for d in self.sched.deployment_ids_for(app_id)]))
            try:
                spec = parse_app(body, app_id=app_id, default_network_name=self.cfg.default_network_name)
            except ValidationError as exc:
                return _json(exc.body(), 422)
            dep = self.sched.create_app(spec, client_ip=request.remote or "", uri=request.path)
            self._remember_groups(spec.id)
            return _json({"version": dep.version, "deploymentId": dep.id}, 201,
                         headers={"Marathon-Deployment-Id": dep.id})
        scale_only = isinstance(body, dict) and set(body) <= {"id", "instances"} and "instances" in body
        try:
            spec = parse_app(body, app_id=app_id, base=rec.spec,
                             default_network_name=self.cfg.default_network_name)
        except ValidationError as exc:
            return _json(exc.body(), 422)
        try:
            dep = self.sched.update_app(rec, spec, client_ip=request.remote or "", uri=request.path, force=force,
                                        scale_only=scale_only)
        except AppLocked as exc:
            return self._locked(exc)
        return _json({"version": dep.version, "deploymentId": dep.id}, headers={"Marathon-Deployment-Id": dep.id})

    async def list_tasks(self, request: web.Request) -> web.Response:
        wanted = set(request.query.getall("status", []) + request.query.getall("status[]", []))
        states = {"running": {"TASK_RUNNING"}, "staging": {"TASK_STAGING", "TASK_STARTING"}}
        allowed = set().union(*(states.get(w, set()) for w in wanted)) if wanted else None
        tasks = [t.to_json(rec.spec, self.cfg) for rec in self.reg.apps.values() for t in rec.active_tasks()
                 if allowed is None or t.state in allowed]
        return _json({"tasks": tasks})

    async def list_deployments(self, _: web.Request) -> web.Response:
        return _json([d.to_json() for d in self.reg.deployments.values()])

    # ------------------------------------------------------------------ callbacks (<= 1.4)

    async def event_subscriptions(self, request: web.Request) -> web.Response:
        if not self.cfg.callbacks:
            return _json(NOT_FOUND, 404)  # the resource does not exist from 1.5 on
        if request.method not in {"GET", "POST", "DELETE"}:
            return web.Response(status=405, text="HTTP method not allowed")
        if self.callbacks is None:
            return _json({"message": CALLBACKS_OFF}, 400)
        if request.method != "GET" and request.content_type != "application/json":
            # the resource is @Consumes(application/json): Jersey answers 415 otherwise
            return _json({"message": "HTTP 415 Unsupported Media Type"}, 415)
        if request.method == "GET":
            return _json({"callbackUrls": list(self.callbacks.subscribers)})
        url = request.query.get("callbackUrl")
        client_ip = request.remote or ""
        if request.method == "POST":
            if not url or not _java_url_ok(url):
                return _json({"message": "Object is not valid", "details": [
                    {"path": "/callbackUrl", "errors": ["Callback URL is not valid"]}]}, 422)
            self.callbacks.subscribe(url)
            event = ev.subscription("subscribe_event", client_ip, url)
        else:
            url = url or ""
            self.callbacks.unsubscribe(url)
            event = ev.subscription("unsubscribe_event", client_ip, url)
        self.sched.bus.publish(event)
        return _json(event.data)

    # ------------------------------------------------------------------ test-only

    async def sim_drop(self, _: web.Request) -> web.Response:
        return _json({"dropped": self.streams.drop_all()})

    async def sim_silence(self, _: web.Request) -> web.Response:
        self.streams.silence()
        return _json({"silenced": len(self.streams.handles)})

    async def sim_resume(self, _: web.Request) -> web.Response:
        self.streams.resume()
        return _json({"resumed": len(self.streams.handles)})

    async def sim_subscribers(self, _: web.Request) -> web.Response:
        if self.callbacks is None:
            return _json({"subscribers": []})
        return _json(self.callbacks.state())


class _Ignore:
    """An error sink for ids in URLs: Marathon 404s on an unknown id rather than validating it."""

    def add(self, path: str, msg: str) -> None:
        pass


def _java_url_ok(url: str) -> bool:
    """What `new java.net.URL(url)` accepts: a known protocol handler and a well-formed rest."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https", "ftp", "file", "jar"}:
        return False
    return bool(parts.netloc) or parts.scheme in {"file", "jar"}
