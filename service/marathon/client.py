"""Marathon REST client: the few calls the registrar makes, against a cluster of Marathons.

Which master is asked, the retries, the per-master back-off, redirects and credentials are
`masters.py` (`Masters`, which this client extends); what an answer means is here, and JSON becomes
model types through the pure parsers of `parse.py`, `pods.py` and `apps_json.py`, so the shapes
of a dozen Marathon versions are handled (and unit-tested) in one place.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from service.errors import GARBAGE, RETRY, Classified
from service.marathon.apps_json import NotJSON, apps_from_bytes
from service.marathon.endpoint import Endpoint, MarathonError, app_path
from service.marathon.masters import Masters
from service.marathon.parse import app_with_tasks_from_json
from service.marathon.pods import pod_status_from_json, pod_statuses_from_json
from service.model import App, PodsRead, Task
from service.ownership import CLUSTER_ID, CLUSTER_ID_RULE

EventTransport = Literal["callback", "sse"]

_NOT_READY = Classified(RETRY, "unavailable")

__all__ = ["Endpoint", "EventTransport", "MarathonClient", "MarathonError", "app_path"]


class MarathonClient(Masters):
    """Async client for the Marathon REST calls the registrar makes. Share one per process."""

    # -- the calls ------------------------------------------------------------------------------

    async def info(self) -> dict[str, Any]:
        """`GET /v2/info`: name, version, leader, and (≤ 1.4) the event subscriber config."""
        obj = await self._call("info", "GET", "/v2/info")
        return obj if isinstance(obj, dict) else {}

    async def framework_id(self) -> str:
        """Marathon's Mesos framework id (`/v2/info`): the identity of this Marathon cluster.

        A Marathon not registered with Mesos yet answers without one (or `null`): RETRY, the
        start-up loop asks again. Any other value cannot name the cluster (a proxy's own JSON, a
        value that is not a string): REPORT (garbage), the error says what came and that
        `--cluster-id` names the cluster instead. Both are counted under `call="info"`."""
        obj = await self._call("info", "GET", "/v2/info")
        value = obj.get("frameworkId") if isinstance(obj, dict) else None
        if isinstance(value, str) and CLUSTER_ID.fullmatch(value):
            return value
        if isinstance(obj, dict) and value in (None, ""):
            classified = _NOT_READY
            reason = "no frameworkId in the answer: Marathon is not registered with Mesos yet (or set --cluster-id)"
        elif isinstance(value, str):  # it would be a lock key's path segment and a Meta value
            shown = json.dumps(value) if len(value) <= 80 else json.dumps(value[:77]) + "..."
            classified, reason = GARBAGE, (f"frameworkId {shown} is not {CLUSTER_ID_RULE}: it cannot name this "
                                           "cluster; set --cluster-id")
        else:
            shown = json.dumps(value if isinstance(obj, dict) else obj)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            what = f"frameworkId is {shown}, not a string" if isinstance(obj, dict) else \
                f"the answer is {shown}, not a JSON object"
            classified, reason = GARBAGE, f"{what}: it cannot name this cluster; set --cluster-id"
        error = MarathonError("GET", str(self.current.url("/v2/info")), 200, reason=reason, classified=classified)
        self._record("info", self.current, classified, str(error))
        raise error

    async def event_transport(self) -> EventTransport:
        """`callback` when Marathon runs the http_callback subscriber (≤ 1.4, docs/architecture.md §6.1), else `sse`."""
        sub = (await self.info()).get("event_subscriber")
        return "callback" if isinstance(sub, dict) and sub.get("type") == "http_callback" else "sse"

    async def apps_with_tasks(self) -> list[tuple[App, list[Task]]]:
        """Every app with its tasks in one call: the resync's view of Marathon."""
        raw = await self._call("apps", "GET", "/v2/apps", params=[("embed", "apps.tasks")], undecoded=True)
        with self._shape("apps", "GET", "/v2/apps"):
            if raw is None:  # an empty body: not the shape of an answer
                raise ValueError("apps response: expected an object, got an empty body")
            try:
                return await apps_from_bytes(raw)  # not holding the loop for a large cluster's answer
            except NotJSON as e:  # as for every other call: garbage, "not JSON"
                not_json = e
        raise self._not_json("apps", self.current, "GET", str(self.current.url("/v2/apps")), 200, raw,
                             not_json) from not_json

    async def app_with_tasks(self, app_id: str) -> tuple[App, list[Task]] | None:
        """The app definition and its tasks in one read (`GET /v2/apps/{id}` always embeds tasks),
        or None when Marathon does not know the app (404)."""
        obj = await self._call("app", "GET", "/v2/apps" + app_path(app_id), ok_statuses=(404,))
        if obj is None:
            return None
        with self._shape("app", "GET", "/v2/apps" + app_path(app_id)):
            return app_with_tasks_from_json(obj.get("app", obj) if isinstance(obj, dict) else obj)

    async def subscriptions(self) -> list[str]:
        """The callback URLs Marathon posts events to (≤ 1.4; 400 when callbacks are off)."""
        obj = await self._call("subscriptions", "GET", "/v2/eventSubscriptions")
        urls = obj.get("callbackUrls") if isinstance(obj, dict) else None
        return [u for u in urls or [] if isinstance(u, str)]

    # The resource is @Consumes(application/json): without the header Jersey may answer 415,
    # even though the body is empty (docs/architecture.md §6.1).
    _JSON_EMPTY = {"Content-Type": "application/json"}

    async def subscribe(self, callback_url: str) -> None:
        """Add `callback_url` to Marathon's subscribers (idempotent: a repeat is a 200 no-op)."""
        await self._call("subscribe", "POST", "/v2/eventSubscriptions",
                         params=[("callbackUrl", callback_url)], headers=self._JSON_EMPTY, data=b"")

    async def unsubscribe(self, callback_url: str) -> None:
        """Remove `callback_url` from Marathon's subscribers (unknown URLs are a 200 too)."""
        await self._call("unsubscribe", "DELETE", "/v2/eventSubscriptions",
                         params=[("callbackUrl", callback_url)], headers=self._JSON_EMPTY, data=b"")

    # -- pods (Marathon 1.4+, reference/marathon-pods-api.md §1.6) ------------------------------------

    async def pods_with_instances(self) -> PodsRead:
        """Every pod with its instances in one call (`GET /v2/pods/::status`); a Marathon without
        pods answers 404 (`supported=False`, no pods). A malformed pod is reported (logged, counted
        as a garbage answer) and left out, by id, so the caller keeps its registrations."""
        obj = await self._call("pods", "GET", "/v2/pods/::status", ok_statuses=(404,))
        if obj is None:
            return PodsRead(supported=False)
        with self._shape("pods", "GET", "/v2/pods/::status"):
            pods, malformed = pod_statuses_from_json(obj)
        if malformed:
            shown = "; ".join(f"{pid}: {why}" for pid, why in sorted(malformed.items())[:3])
            self._record("pods", self.current, GARBAGE,
                         f"Marathon GET /v2/pods/::status: {len(malformed)} malformed pods left as they are: {shown}")
        return PodsRead(pods=tuple((app, tuple(tasks)) for app, tasks in pods), malformed=malformed)

    async def pod_with_instances(self, pod_id: str) -> tuple[App, list[Task]] | None:
        """One pod and its instances (`GET /v2/pods/{id}::status`), None when Marathon does not know
        the pod (404, also on a Marathon without pods)."""
        path = "/v2/pods" + app_path(pod_id) + "::status"
        obj = await self._call("pod", "GET", path, ok_statuses=(404,))
        if obj is None:
            return None
        with self._shape("pod", "GET", path):
            return pod_status_from_json(obj)
