"""The hints the reconciler takes: what an event says may have changed (docs/architecture.md §2).

Plain values, no parsing: `service.marathon.events` makes them out of Marathon's event JSON, the
reconcile core acts on them. Kept apart from the parser so that the core imports values, not the
Marathon package (docs/architecture.md §9).
"""

from __future__ import annotations

from dataclasses import dataclass

# Pod definition changes: they carry only `uri` (reference/marathon-ucr-pods.md §2.4)
POD_EVENTS = frozenset({"pod_created_event", "pod_updated_event", "pod_deleted_event"})


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
    this event alone (condition `Killed`, reference/marathon-ucr-pods.md §3.3). Its `host` is not
    kept: the removal goes by the instance's registrations we hold, so a malformed host must not
    cost a valid expunge."""

    instance_id: str
    app_id: str
    condition: str
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
