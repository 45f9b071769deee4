"""`/v2/pods` with Marathon's status codes, headers and messages (reference marathon-pods-api.md §0-§1).

Pod ids contain slashes and the status/versions views are suffixes (`/v2/pods/{id}::status`), so
one route takes the tail and dispatches by hand, as PodsResource's `{id:.+}::status` patterns do.
A missing pod answers as Marathon's RestResource does: `GET /v2/pods/{id}` with the double-encoded
message (the JSON text `{"message": "pod with /x does not exist"}` wrapped again), every other path `Pod '/x' does not
exist`; from 1.9 both carry `"details": []` (raml.Error).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from devcluster.marathon_sim.config import SimConfig
from devcluster.marathon_sim.pod_json import PodInvalid, parse_pod, render_pod
from devcluster.marathon_sim.pod_status import render_status
from devcluster.marathon_sim.pods import Pods

DEPLOYMENT_HEADER = "Marathon-Deployment-Id"


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(body, separators=(",", ":")),
                        content_type="application/json", headers=headers)


async def json_body(request: web.Request) -> Any:
    """A request's JSON body (an empty body is null); Marathon's 400 "Invalid JSON" otherwise. One
    rule for the apps and the pods resources."""
    try:
        return json.loads(await request.text() or "null")
    except json.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=json.dumps({"message": "Invalid JSON", "details": [
            {"path": "/", "errors": [str(exc)]}]}), content_type="application/json") from exc


class PodsApi:
    def __init__(self, cfg: SimConfig, pods: Pods) -> None:
        self.cfg = cfg
        self.pods = pods

    def add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_route("HEAD", "/v2/pods", self.capability)
        r.add_get("/v2/pods", self.list_pods, allow_head=False)
        r.add_post("/v2/pods", self.create)
        r.add_route("HEAD", "/v2/pods/", self.capability)
        r.add_get("/v2/pods/", self.list_pods, allow_head=False)
        r.add_post("/v2/pods/", self.create)
        r.add_route("*", "/v2/pods/{tail:.+}", self.pod_route)

    def _error(self, message: str) -> dict[str, Any]:
        return {"message": message, **({"details": []} if self.cfg.version >= (1, 9) else {})}

    def _unknown(self, pod_id: str) -> web.Response:
        return _json(self._error(f"Pod '{pod_id}' does not exist"), 404)

    def _location(self, path: str) -> str:
        """JAX-RS resolves `new URI(x)` against the base URI (marathon-pods-api.md §1.2, §1.5)."""
        return f"{'https' if self.cfg.tls_cert else 'http'}://{self.cfg.listen}/{path.lstrip('/')}"

    async def capability(self, _: web.Request) -> web.Response:
        """`HEAD /v2/pods`: 200 with an empty body where pods are supported (§1.1)."""
        return web.Response(status=200)

    async def list_pods(self, _: web.Request) -> web.Response:
        return _json([render_pod(rec.spec, self.cfg) for rec in self.pods.pods.values() if not rec.deleting])

    async def create(self, request: web.Request) -> web.Response:
        try:
            spec = parse_pod(await json_body(request), self.cfg)
        except PodInvalid as exc:
            return _json(exc.body(), 422)
        if spec.id in self.pods.pods:
            return _json({"message": f"A pod with id [{spec.id}] already exists."}, 409)
        dep = self.pods.create(spec, client_ip=request.remote or "", uri=request.path)
        return _json(render_pod(spec, self.cfg), 201,
                     headers={"Location": self._location(spec.id), DEPLOYMENT_HEADER: dep})

    async def pod_route(self, request: web.Request) -> web.Response:
        tail = request.match_info["tail"]
        if tail == "::status" and request.method == "GET":
            return _json([render_status(rec, self.cfg) for rec in self.pods.pods.values()])
        pod_id, view = tail, ""
        for suffix in ("::status", "::versions"):
            if suffix in tail:
                pod_id, _, rest = tail.partition(suffix)
                view = suffix + rest
                break
        pod_id = "/" + "/".join(s for s in pod_id.split("/") if s)
        rec = self.pods.pods.get(pod_id)
        if view == "::status" and request.method == "GET":
            return self._unknown(pod_id) if rec is None else _json(render_status(rec, self.cfg))
        if view == "::versions" and request.method == "GET":
            return self._unknown(pod_id) if rec is None else _json(list(rec.versions))
        if view.startswith("::versions/") and request.method == "GET":
            version = view[len("::versions/"):]
            if rec is None or version not in rec.versions:
                return self._unknown(pod_id)
            return _json(render_pod(rec.spec, self.cfg))  # the simulator keeps only the current spec
        if view:
            return web.Response(status=405, text="HTTP method not allowed")
        if request.method == "GET":
            if rec is None:  # notFound(s"""{"message": "pod with $id does not exist"}""") wraps it again
                return _json(self._error(json.dumps({"message": f"pod with {pod_id} does not exist"})), 404)
            return _json(render_pod(rec.spec, self.cfg))
        if request.method == "DELETE":
            if rec is None or rec.deleting:
                return self._unknown(pod_id)
            dep = self.pods.delete(rec, client_ip=request.remote or "", uri=request.path)
            return web.Response(status=202, headers={"Location": self._location(dep), DEPLOYMENT_HEADER: dep})
        if request.method == "PUT":
            return await self._put(request, pod_id)
        return web.Response(status=405, text="HTTP method not allowed")

    async def _put(self, request: web.Request, pod_id: str) -> web.Response:
        body = await json_body(request)
        if isinstance(body, dict) and "id" not in body:
            body = {**body, "id": pod_id}
        try:
            spec = parse_pod(body, self.cfg, pod_id=pod_id)
        except PodInvalid as exc:
            return _json(exc.body(), 422)
        rec = self.pods.pods.get(pod_id)
        if rec is None or rec.deleting:
            dep = self.pods.create(spec, client_ip=request.remote or "", uri=request.path)
            return _json(render_pod(spec, self.cfg), 201,
                         headers={"Location": self._location(spec.id), DEPLOYMENT_HEADER: dep})
        dep = self.pods.update(rec, spec, client_ip=request.remote or "", uri=request.path)
        return _json(render_pod(spec, self.cfg), 200, headers={DEPLOYMENT_HEADER: dep})
