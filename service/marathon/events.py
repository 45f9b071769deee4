"""Marathon event JSON -> a small set of typed hints for the reconciler (marathon.md §3).

Events are hints, not a replica (docs/architecture.md §2): each one only says which task or which apps may
have changed, and the reconciler re-reads Marathon before it writes anything. So this parser keeps
what identifies the work key (task id, app ids, instance id) plus the few fields that are useful
for logging and fast paths, and ignores everything else. It is the gate of `POST /v1/events`, so
it is strict about the fields it needs (a bad body is a 400 with a reason the metrics can count)
and tolerant of everything it does not need (unknown fields, unknown event types).

`EventError.reason` is one of a bounded set of labels (`REASONS`), safe as a metric label; the
message names the event type and the field.

Decoding with bounds (`decode_event_body`, `decode_event_text`) is `event_json`'s; the hints
themselves are plain values in `service.hints`.

Ids are checked against Marathon's own rules (marathon.md §6.1): an event naming an app id Marathon
could never have produced (`..`, `_`, upper case, empty segments) is forged or broken, and turning it
into a Marathon read (`GET /v2/apps/<id>`, whose path it would otherwise shape) is the one cost a
forged event can cause (docs/architecture.md §2), so it is refused at the door.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from service.hints import POD_EVENTS as POD_EVENTS
from service.hints import AppEvent as AppEvent
from service.hints import HealthEvent as HealthEvent
from service.hints import IgnoredEvent as IgnoredEvent
from service.hints import InstanceEvent as InstanceEvent
from service.hints import TaskEvent as TaskEvent
from service.marathon.event_error import EventError as EventError
from service.marathon.event_json import MAX_JSON_DEPTH as MAX_JSON_DEPTH
from service.marathon.event_json import MAX_JSON_VALUES as MAX_JSON_VALUES
from service.marathon.event_json import decode_event_body as decode_event_body
from service.marathon.event_json import decode_event_text as decode_event_text
from service.marathon.parse import ip_addresses_from_json, ports_from_json
from service.marathon.task_ids import app_id_from_instance_id, parse_task_id

# Every label `events_rejected_total{reason}` can carry, for either transport: the body-level ones
# (`too-large`, `bad-encoding`: Content-Encoding that does not decode) are the callback handler's.
REASONS = ("too-large", "bad-encoding", "not-utf8", "not-json", "too-deep", "too-many-values", "bad-number",
           "not-an-object", "no-event-type", "bad-field", "bad-app-id")

DEPLOYMENT_EVENTS = frozenset(
    {"deployment_info", "deployment_success", "deployment_failed", "deployment_step_success",
     "deployment_step_failure"}
)
HEALTH_EVENTS = frozenset({"health_status_changed_event", "instance_health_changed_event"})
# Event types Marathon defines (1.3-1.10) that carry nothing the registrar acts on: instance and
# health-check bookkeeping that a status_update_event or a re-read already covers, groups (their apps
# get their own events), the scheduler and the bus itself.
IGNORED_EVENTS = frozenset(
    {
        "unknown_instance_terminated_event", "failed_health_check_event",
        "unhealthy_instance_kill_event", "unhealthy_task_kill_event", "add_health_check_event",
        "remove_health_check_event",
        "group_change_success", "group_change_failed", "event_stream_attached", "event_stream_detached",
        "subscribe_event", "unsubscribe_event", "scheduler_registered_event",
        "scheduler_reregistered_event", "scheduler_disconnected_event", "framework_message_event",
    }
)
KNOWN_EVENT_TYPES = (
    frozenset({"status_update_event", "api_post_event", "app_terminated_event", "instance_changed_event"})
    | DEPLOYMENT_EVENTS | HEALTH_EVENTS | POD_EVENTS | IGNORED_EVENTS
)


Event = TaskEvent | AppEvent | HealthEvent | InstanceEvent | IgnoredEvent


def parse_event(obj: object) -> Event:
    """A decoded JSON body -> an `Event`; `EventError` if it is not a usable Marathon event."""
    if not isinstance(obj, Mapping):
        raise EventError("not-an-object", f"event body must be a JSON object, got {_json_kind(obj)}")
    event_type = obj.get("eventType")
    if event_type is None:
        raise EventError("no-event-type", "event body has no 'eventType' field")
    if not isinstance(event_type, str) or not event_type:
        raise EventError("no-event-type", f"event field 'eventType' must be a non-empty string, got {event_type!r}")
    parser = _PARSERS.get(event_type)
    if parser is not None:
        return parser(_Fields(obj, event_type))
    if event_type in DEPLOYMENT_EVENTS:
        return _deployment(_Fields(obj, event_type))
    return IgnoredEvent(event_type, known=event_type in KNOWN_EVENT_TYPES)


def _json_kind(obj: object) -> str:
    if obj is None:
        return "null"
    return {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(obj), type(obj).__name__
    )


class _Fields:
    """Typed access to one event's fields, raising `EventError("bad-field", ...)` with context."""

    def __init__(self, obj: Mapping[str, Any], event_type: str) -> None:
        self.obj = obj
        self.event_type = event_type

    def error(self, message: str) -> EventError:
        return EventError("bad-field", f"{self.event_type}: {message}", event_type=self.event_type)

    def text(self, key: str, *, required: bool = True, default: str = "") -> str:
        value = self.obj.get(key)
        if value is None:
            if required:
                raise self.error(f"field {key!r} missing")
            return default
        if not isinstance(value, str) or (required and not value):
            raise self.error(f"field {key!r} must be a non-empty string, got {_short(value)}")
        return value

    def obj_field(self, key: str) -> Mapping[str, Any]:
        value = self.obj.get(key)
        if value is None:
            raise self.error(f"field {key!r} missing")
        if not isinstance(value, Mapping):
            raise self.error(f"field {key!r} must be an object, got {_short(value)}")
        return value

    def app_id(self, value: object, path: str) -> str:
        """`value` as a canonical Marathon app id, or `EventError("bad-app-id")` naming the field."""
        if not isinstance(value, str) or not value:
            raise self.error(f"field {path!r} must be an app id, got {_short(value)}")
        if not is_app_id(value):
            raise EventError("bad-app-id", f"{self.event_type}: field {path!r} is not a Marathon app id "
                                           f"(marathon.md §6.1): {_short(value)}", event_type=self.event_type)
        return "/" + value.strip("/")

    def host(self, key: str) -> str:
        """The agent host, which the reconciler puts into Docker and Consul URLs (`{host}`): only a
        hostname or an IP literal is accepted, never something that rewrites the URL around it."""
        value = self.text(key, required=False)
        if value and not _is_host(value):
            raise self.error(f"field {key!r} must be a hostname or an IP address, got {_short(value)}")
        return value

    def wrap(self, exc: ValueError) -> EventError:
        """A parse/task-id ValueError, re-raised as this event's bad-field error."""
        return self.error(str(exc))


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# Marathon's PathId segment rule (marathon.md §6.1), minus the `.`/`..` navigation segments that
# Marathon canonicalises away before it ever writes an id into an event.
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_APP_ID = re.compile(rf"/?{_LABEL}(?:\.{_LABEL})*(?:/{_LABEL}(?:\.{_LABEL})*)*")
# RFC 1123 host names (underscores tolerated: some internal DNS zones have them) and IPv4 literals.
_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}"
                       r"[A-Za-z0-9_])?)*\.?")


def is_app_id(value: str) -> bool:
    """Whether `value` is an app id as Marathon writes it: `/seg/seg`, segments of `[a-z0-9.-]`."""
    return _APP_ID.fullmatch(value) is not None


def _is_host(value: str) -> bool:
    if len(value) <= 253 and _HOSTNAME.fullmatch(value):
        return True
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _status_update(f: _Fields) -> TaskEvent:
    """A task's status; its id must name the app the event names, as every id Marathon makes does
    (the safe path of the app id is the task id's prefix, marathon.md §6.3)."""
    task_id = f.text("taskId")
    app_id = f.text("appId", required=False)
    try:
        parsed = parse_task_id(task_id)
        owner = parsed.app_id
        ports = ports_from_json(f.obj, "")
        ips = ip_addresses_from_json(f.obj, "")
    except ValueError as exc:
        raise f.wrap(exc) from None
    app_id = f.app_id(app_id or owner, "appId" if app_id else "taskId")
    if owner != app_id:
        raise f.error(f"field 'taskId' is not a task of app {app_id!r}: {_short(task_id)}")
    # `<pod>.instance-<uuid>.<container>`: no incarnation (an app task since 1.8 has `._app.<n>`)
    is_pod_task = parsed.format == "instance" and parsed.incarnation is None and parsed.container is not None
    return TaskEvent(
        pod_instance=parsed.instance_id if is_pod_task else "",
        task_id=task_id,
        app_id=app_id,
        state=f.text("taskStatus"),
        host=f.host("host"),
        ports=ports,
        ip_addresses=ips,
        app_version=f.text("version", required=False),
        event_type=f.event_type,
    )


def _api_post(f: _Fields) -> AppEvent:
    definition = f.obj_field("appDefinition")
    return AppEvent((f.app_id(definition.get("id"), "appDefinition.id"),), f.event_type)


def _app_terminated(f: _Fields) -> AppEvent:
    return AppEvent((f.app_id(f.text("appId"), "appId"),), f.event_type)


def _pod_changed(f: _Fields) -> AppEvent:
    """`pod_*_event`: the pod id is the request path after `/v2/pods` (`uri`, e.g. `/v2/pods/web-pod`,
    perhaps with a `::status`-style suffix or a query)."""
    uri = f.text("uri")
    path = uri.split("?", 1)[0].split("::", 1)[0]
    if not path.startswith("/v2/pods/"):
        raise f.error(f"field 'uri' is not a /v2/pods/<id> path: {_short(uri)}")
    return AppEvent((f.app_id(path.removeprefix("/v2/pods"), "uri"),), f.event_type)


def _instance_changed(f: _Fields) -> InstanceEvent:
    instance_id = f.text("instanceId")
    app_id = f.text("runSpecId", required=False) or _derive_app_id(f, None, instance_id)
    return InstanceEvent(instance_id=instance_id, app_id=f.app_id(app_id, "runSpecId"),
                         condition=f.text("condition"), event_type=f.event_type)


def _deployment(f: _Fields) -> AppEvent:
    """Every app id a deployment touches, from `plan.steps[].actions[]` and `currentStep`.

    Only the actions count: the heavy plan format (<= 1.6) also carries `plan.original` and
    `plan.target`, whole root groups whose apps mostly did not change, so they are not read.
    """
    plan = f.obj_field("plan")
    steps = plan.get("steps", [])
    if not isinstance(steps, list):
        raise f.error(f"field 'plan.steps' must be a list, got {_short(steps)}")
    found: dict[str, None] = {}  # insertion-ordered set
    for i, step in enumerate(steps):
        for app_id in _step_app_ids(f, step, f"plan.steps[{i}]"):
            found[app_id] = None
    current = f.obj.get("currentStep")
    if current is not None:
        for app_id in _step_app_ids(f, current, "currentStep"):
            found[app_id] = None
    return AppEvent(tuple(found), f.event_type)


def _step_app_ids(f: _Fields, step: object, path: str) -> Iterator[str]:
    # A step is `{actions: [...]}`; very old Marathons wrote a bare list of actions.
    if isinstance(step, Mapping):
        actions = step.get("actions", [])
    else:
        actions = step
    if not isinstance(actions, list):
        raise f.error(f"field '{path}.actions' must be a list, got {_short(actions)}")
    for j, action in enumerate(actions):
        if not isinstance(action, Mapping):
            raise f.error(f"field '{path}.actions[{j}]' must be an object, got {_short(action)}")
        for key in ("app", "pod"):
            value = action.get(key)
            if value is None:
                continue
            yield f.app_id(value, f"{path}.actions[{j}].{key}")


def _health_status_changed(f: _Fields) -> HealthEvent:
    """Marathon-level checks; `taskId` in <= 1.3, `instanceId` from 1.4."""
    task_id = f.text("taskId", required=False) or None
    instance_id = f.text("instanceId", required=False) or None
    if task_id is None and instance_id is None:
        raise f.error("field 'instanceId' (or 'taskId') missing")
    alive = f.obj.get("alive")
    if not isinstance(alive, bool):
        raise f.error(f"field 'alive' must be a boolean, got {_short(alive)}")
    app_id = f.text("appId", required=False) or _derive_app_id(f, task_id, instance_id)
    return HealthEvent(f.app_id(app_id, "appId"), task_id, instance_id, alive, f.event_type)


def _instance_health_changed(f: _Fields) -> HealthEvent:
    instance_id = f.text("instanceId")
    healthy = f.obj.get("healthy")
    if healthy is not None and not isinstance(healthy, bool):
        raise f.error(f"field 'healthy' must be a boolean or null, got {_short(healthy)}")
    app_id = f.text("runSpecId", required=False) or _derive_app_id(f, None, instance_id)
    return HealthEvent(f.app_id(app_id, "runSpecId"), None, instance_id, healthy, f.event_type)


def _derive_app_id(f: _Fields, task_id: str | None, instance_id: str | None) -> str:
    try:
        if task_id is not None:
            return parse_task_id(task_id).app_id
        return app_id_from_instance_id(instance_id or "")
    except ValueError as exc:
        raise f.wrap(exc) from None


_PARSERS: dict[str, Callable[[_Fields], Event]] = {
    "status_update_event": _status_update,
    "api_post_event": _api_post,
    "app_terminated_event": _app_terminated,
    "instance_changed_event": _instance_changed,
    "pod_created_event": _pod_changed,
    "pod_updated_event": _pod_changed,
    "pod_deleted_event": _pod_changed,
    "health_status_changed_event": _health_status_changed,
    "instance_health_changed_event": _instance_health_changed,
}
