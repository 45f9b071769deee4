"""Marathon event JSON -> a small set of typed hints for the reconciler (marathon.md §3).

Events are hints, not a replica (docs/architecture.md §2): each one only says which task or which apps may
have changed, and the reconciler re-reads Marathon before it writes anything. So this parser keeps
what identifies the work key (task id, app ids, instance id) plus the few fields that are useful
for logging and fast paths, and ignores everything else. It is the gate of `POST /v1/events`, so
it is strict about the fields it needs (a bad body is a 400 with a reason the metrics can count)
and tolerant of everything it does not need (unknown fields, unknown event types).

`EventError.reason` is one of a bounded set of labels (`REASONS`), safe as a metric label; the
message names the event type and the field.

Decoding (`decode_event_body`, `decode_event_text`) is here too, because the body is hostile until
proven otherwise (the callback endpoint is unauthenticated by nature) and both transports need the
same guarantees: CPython's C JSON decoder recurses once per nesting level, so `[[[…]]]` a thousand
levels deep raises `RecursionError` (a 500 and a Marathon back-off, issue 9). Nesting is therefore
measured *before* decoding, without recursion, and bounded by `MAX_JSON_DEPTH`; everything else
that can go wrong (invalid UTF-8, `NaN`/`Infinity`, integers beyond Python's 4300-digit limit,
syntax) becomes an `EventError` with its own reason, so no body can end as an internal exception.

Ids are checked against Marathon's own rules (marathon.md §6.1): an event naming an app id Marathon
could never have produced (`..`, `_`, upper case, empty segments) is forged or broken, and turning it
into a Marathon read (`GET /v2/apps/<id>`, whose path it would otherwise shape) is the one cost a
forged event can cause (docs/architecture.md §2), so it is refused at the door.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from service.marathon.parse import ip_addresses_from_json, ports_from_json
from service.marathon.task_ids import app_id_from_instance_id, parse_task_id

# Every label `events_rejected_total{reason}` can carry, for either transport: the body-level ones
# (`too-large`, `bad-encoding`: Content-Encoding that does not decode) are the callback handler's.
REASONS = ("too-large", "bad-encoding", "not-utf8", "not-json", "too-deep", "too-many-values", "bad-number",
           "not-an-object", "no-event-type", "bad-field", "bad-app-id")

# Deep enough for any event Marathon writes (a heavy deployment plan nests two levels per app-id
# segment plus about ten for the app itself, so 256 fits app ids over 100 segments deep), shallow
# enough that the decoder and everything after it (repr in error messages, logging) stays far from
# the interpreter's recursion limit of 1000, whatever the caller's stack depth.
MAX_JSON_DEPTH = 256

# What decoding costs is the number of values, not bytes: 4 MB of `[],[],…` (1.4 million lists) or
# of one object's 400,000 members takes the decoder 0.6 s on the CI machine, 4 MB of Marathon's own
# app JSON 0.12 s. Counted as the `[`, `:` and `,` outside strings (each value but the first follows
# one of them), Marathon's app JSON has one per 9.5 bytes (the 1.4 simulator's rendering of the
# demo app: 110 in 1,040 bytes), so a real event of the callback's 4 MB limit counts 440,000; the cap
# is one per 8 bytes of that limit, and a capped hostile body decodes in at most ~0.35 s.
MAX_JSON_VALUES = 4 * 1024 * 1024 // 8

DEPLOYMENT_EVENTS = frozenset(
    {"deployment_info", "deployment_success", "deployment_failed", "deployment_step_success",
     "deployment_step_failure"}
)
HEALTH_EVENTS = frozenset({"health_status_changed_event", "instance_health_changed_event"})
# Pod definition changes: they carry only `uri` (reference/marathon-ucr-pods.md §2.4)
POD_EVENTS = frozenset({"pod_created_event", "pod_updated_event", "pod_deleted_event"})
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
    # a pod container's task (`<pod>.instance-<uuid>.<container>`): its instance id, which is what a
    # pod's registrations are keyed by; "" for an app's task
    pod_instance: str = ""


@dataclass(frozen=True, slots=True)
class AppEvent:
    """These apps may have changed (definition, deployment, deletion): re-read them and their tasks."""

    app_ids: tuple[str, ...]
    event_type: str


@dataclass(frozen=True, slots=True)
class InstanceEvent:
    """`instance_changed_event`: instance `instance_id` of app or pod `app_id` has a new `condition`
    (`Running`, `Unreachable`, `Killed`, ...). The expunge of an unreachable instance is announced by
    this event alone (condition `Killed`, reference/marathon-ucr-pods.md §3.3)."""

    instance_id: str
    app_id: str
    condition: str
    host: str
    event_type: str = "instance_changed_event"


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


Event = TaskEvent | AppEvent | HealthEvent | InstanceEvent | IgnoredEvent


# One JSON string token; possessive, and ending at a closing quote *or the end of the text*, so it
# matches from every quote and the scan stays linear even for unterminated strings.
_JSON_STRING = re.compile(r'"(?:[^"\\]+|\\.?)*+(?:"|\Z)', re.DOTALL)
_AS_PARENS = bytes.maketrans(b"[{]}", b"(())")  # only the depth matters, not which bracket
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))
_PAREN_STEP = bytes.maketrans(b"()", b"\x02\x00")  # opener 2, closer 0: depth = running sum - count
_SHRINK_ABOVE = 64 * 1024  # brackets; below this the exact scan is cheap enough
_SHRINK_PASSES = 8


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `text`, read as JSON, nests arrays/objects deeper than `limit`, found without recursion.

    Brackets inside strings do not count. The common case (at most `limit` brackets at all) costs
    two `str.count`s; otherwise strings are cut out and the running depth is computed by C-level
    iterators (no Python bytecode per bracket), stopping at the first level past the limit. For
    invalid JSON the answer is only meaningful up to the first syntax error, which is as far as the
    decoder goes too.

    Megabytes of brackets would still cost about a second that way, so a long bracket string is
    first shrunk by up to `_SHRINK_PASSES` rounds of deleting adjacent `()` pairs (bytes.replace, C
    speed). Deleting a balanced pair leaves every other position's depth as it was, and a round
    lowers the maximum by at most one, so the shrunk string under-counts by at most the rounds
    run: such a body is accepted up to `limit` and rejected beyond `limit + _SHRINK_PASSES` (264,
    still far from the interpreter's recursion limit).
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    outside_strings = _JSON_STRING.sub("", text).encode("utf-8", errors="surrogatepass")
    parens = outside_strings.translate(_AS_PARENS, _NOT_BRACKETS)
    if len(parens) > _SHRINK_ABOVE:
        for _ in range(_SHRINK_PASSES):
            shorter = parens.replace(b"()", b"")
            if len(shorter) == len(parens):
                break
            parens = shorter
        if parens.count(b"(") <= limit:
            return False
    depths = map(operator.sub, itertools.accumulate(parens.translate(_PAREN_STEP)), itertools.count(1))
    return any(map(limit.__lt__, depths))


def json_values_exceed(text: str, limit: int = MAX_JSON_VALUES) -> bool:
    """Whether `text` holds more than `limit` JSON values, counted before decoding as the `[`, `:`
    and `,` outside strings plus one (an upper bound: an object's member counts its key's comma and
    its value's colon). Three `str.count`s (about 20 ms for 4 MB) unless that count is over the
    limit; only then are strings cut out, so punctuation inside strings never rejects a body."""
    if text.count("[") + text.count(":") + text.count(",") < limit:
        return False
    outside_strings = _JSON_STRING.sub("", text)
    return outside_strings.count("[") + outside_strings.count(":") + outside_strings.count(",") >= limit


def _reject_constant(name: str) -> object:
    raise EventError("bad-number", f"body is not JSON: {name} is not a JSON number (RFC 8259 §6)")


def decode_event_body(raw: bytes | bytearray) -> object:
    """A callback body -> its decoded JSON value; `EventError` with a bounded reason otherwise.

    The body is read as UTF-8 whatever Content-Type and charset the poster declared: Marathon always
    sends UTF-8 (marathon.md §1.3), JSON exchanged between systems must be UTF-8 (RFC 8259 §8.1), and a
    declared charset is one more thing a forged request could lie about.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventError("not-utf8", f"body is not UTF-8: invalid byte at offset {exc.start}") from None
    return decode_event_text(text)


def decode_event_text(text: str) -> object:
    """Decoded text of one event -> its JSON value, with nesting bounded by `MAX_JSON_DEPTH` and the
    number of values by `MAX_JSON_VALUES`.

    Duplicate keys keep their last value, as Marathon's own parser does: events are hints, so a
    duplicate can at most aim a re-read at another app, which the poster could do directly anyway.
    """
    text = text.removeprefix("\ufeff")  # RFC 8259 §8.1: a parser may ignore a byte order mark
    if not text.strip():
        raise EventError("not-json", "body is empty, expected a JSON object")
    if json_depth_exceeds(text):
        raise EventError("too-deep", f"body nests arrays/objects deeper than {MAX_JSON_DEPTH} levels")
    if json_values_exceed(text):
        raise EventError("too-many-values", f"body holds more than {MAX_JSON_VALUES} JSON values "
                                            f"(the cap on one event)")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise EventError("not-json", f"body is not JSON: {exc}") from None
    except EventError:
        raise
    except ValueError as exc:  # int(): "Exceeds the limit (4300 digits) for integer string conversion"
        raise EventError("bad-number", f"body is not usable JSON: {exc}") from None


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
                         condition=f.text("condition"), host=f.host("host"), event_type=f.event_type)


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
