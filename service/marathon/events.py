"""Marathon event JSON -> a small set of typed hints for the reconciler (marathon.md §3).

Events are hints, not a replica (DESIGN §2.1): each one only says which task or which apps may
have changed, and the reconciler re-reads Marathon before it writes anything. So this parser keeps
what identifies the work key (task id, app ids, instance id) plus the few fields that are useful
for logging and fast paths, and ignores everything else. It is the gate of `POST /v1/events`, so
it is strict about the fields it needs (a bad body is a 400 with a reason the metrics can count)
and tolerant of everything it does not need (unknown fields, unknown event types).

`EventError.reason` is one of a bounded set of labels (`REASONS`), safe as a metric label; the
message names the event type and the field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from service.marathon.parse import ip_addresses_from_json, ports_from_json
from service.marathon.task_ids import app_id_from_instance_id, parse_task_id

REASONS = ("not-an-object", "no-event-type", "bad-field")

DEPLOYMENT_EVENTS = frozenset(
    {"deployment_info", "deployment_success", "deployment_failed", "deployment_step_success",
     "deployment_step_failure"}
)
HEALTH_EVENTS = frozenset({"health_status_changed_event", "instance_health_changed_event"})
# Event types Marathon defines (1.3-1.10) that carry nothing the registrar acts on: instance and
# health-check bookkeeping that a status_update_event or a re-read already covers, pods (not
# registered), groups (their apps get their own events), the scheduler and the bus itself.
IGNORED_EVENTS = frozenset(
    {
        "instance_changed_event", "unknown_instance_terminated_event", "failed_health_check_event",
        "unhealthy_instance_kill_event", "unhealthy_task_kill_event", "add_health_check_event",
        "remove_health_check_event", "pod_created_event", "pod_updated_event", "pod_deleted_event",
        "group_change_success", "group_change_failed", "event_stream_attached", "event_stream_detached",
        "subscribe_event", "unsubscribe_event", "scheduler_registered_event",
        "scheduler_reregistered_event", "scheduler_disconnected_event", "framework_message_event",
    }
)
KNOWN_EVENT_TYPES = (
    frozenset({"status_update_event", "api_post_event", "app_terminated_event"})
    | DEPLOYMENT_EVENTS | HEALTH_EVENTS | IGNORED_EVENTS
)


class EventError(ValueError):
    """A body that is not a Marathon event; `reason` is a bounded label from `REASONS`."""

    def __init__(self, reason: str, message: str, *, event_type: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.event_type = event_type


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """`status_update_event`: task `task_id` of app `app_id` is now in `state`."""

    task_id: str
    app_id: str
    state: str
    host: str
    ports: tuple[int, ...]
    ip_addresses: tuple[str, ...]
    app_version: str
    event_type: str = "status_update_event"


@dataclass(frozen=True, slots=True)
class AppEvent:
    """These apps may have changed (definition, deployment, deletion): re-read them and their tasks."""

    app_ids: tuple[str, ...]
    event_type: str


@dataclass(frozen=True, slots=True)
class HealthEvent:
    """Marathon's health view of one task/instance changed (drives mirrored TTL checks).

    `alive` is None when Marathon says it has no result yet (`healthy: null`, 1.4+).
    """

    app_id: str
    task_id: str | None
    instance_id: str | None
    alive: bool | None
    event_type: str


@dataclass(frozen=True, slots=True)
class IgnoredEvent:
    """A well-formed event the registrar does not act on; `known` is False for types Marathon does
    not define (so callers can keep unknown type names out of metric labels)."""

    event_type: str
    known: bool = True


Event = TaskEvent | AppEvent | HealthEvent | IgnoredEvent


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

    def wrap(self, exc: ValueError) -> EventError:
        """A parse/task-id ValueError, re-raised as this event's bad-field error."""
        return self.error(str(exc))


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _status_update(f: _Fields) -> TaskEvent:
    task_id = f.text("taskId")
    app_id = f.text("appId", required=False)
    try:
        app_id = app_id or parse_task_id(task_id).app_id
        ports = ports_from_json(f.obj, "")
        ips = ip_addresses_from_json(f.obj, "")
    except ValueError as exc:
        raise f.wrap(exc) from None
    return TaskEvent(
        task_id=task_id,
        app_id=app_id,
        state=f.text("taskStatus"),
        host=f.text("host", required=False),
        ports=ports,
        ip_addresses=ips,
        app_version=f.text("version", required=False),
        event_type=f.event_type,
    )


def _api_post(f: _Fields) -> AppEvent:
    definition = f.obj_field("appDefinition")
    app_id = definition.get("id")
    if not isinstance(app_id, str) or not app_id.strip("/"):
        raise f.error(f"field 'appDefinition.id' must be an app id, got {_short(app_id)}")
    return AppEvent(("/" + app_id.strip("/"),), f.event_type)


def _app_terminated(f: _Fields) -> AppEvent:
    return AppEvent((f.text("appId"),), f.event_type)


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
            if not isinstance(value, str) or not value:
                raise f.error(f"field '{path}.actions[{j}].{key}' must be an app id, got {_short(value)}")
            yield value


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
    return HealthEvent(app_id, task_id, instance_id, alive, f.event_type)


def _instance_health_changed(f: _Fields) -> HealthEvent:
    instance_id = f.text("instanceId")
    healthy = f.obj.get("healthy")
    if healthy is not None and not isinstance(healthy, bool):
        raise f.error(f"field 'healthy' must be a boolean or null, got {_short(healthy)}")
    app_id = f.text("runSpecId", required=False) or _derive_app_id(f, None, instance_id)
    return HealthEvent(app_id, None, instance_id, healthy, f.event_type)


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
    "health_status_changed_event": _health_status_changed,
    "instance_health_changed_event": _instance_health_changed,
}
