"""One door for Marathon events, whichever transport brought them (callback POST or SSE).

Parsing and validation live in `service.marathon.events`; this module counts, and turns an event
into a hint for the reconciler. It never waits on Consul or Docker, so the callback handler can
answer Marathon within milliseconds (DESIGN §2.10).
"""

from __future__ import annotations

import time

from service.marathon.events import EventError, IgnoredEvent, parse_event
from service.metrics import Metrics
from service.reconciler import Reconciler

# Event types Marathon 0.x-1.10 defines (marathon.md §3); anything else is counted as "other" so a
# poster inventing types cannot grow the metric's label set without bound.
KNOWN_EVENT_TYPES = frozenset({
    "status_update_event", "instance_changed_event", "instance_health_changed_event", "health_status_changed_event",
    "failed_health_check_event", "unhealthy_task_kill_event", "unhealthy_instance_kill_event",
    "api_post_event", "app_terminated_event", "group_change_success", "group_change_failed",
    "deployment_info", "deployment_success", "deployment_failed", "deployment_step_success",
    "deployment_step_failure", "deployment_handler_event", "framework_message_event", "add_health_check_event",
    "remove_health_check_event", "subscribe_event", "unsubscribe_event", "event_stream_attached",
    "event_stream_detached", "scheduler_registered_event", "scheduler_reregistered_event",
    "scheduler_disconnected_event", "pod_created_event", "pod_updated_event", "pod_deleted_event",
    "unknown_instance_terminated_event", "instance_update_event",
})


class EventIntake:
    def __init__(self, reconciler: Reconciler, metrics: Metrics) -> None:
        self.reconciler = reconciler
        self.metrics = metrics

    def accept(self, obj: object) -> str:
        """Queue the event's hint; "queued" or "ignored". Raises EventError for a body that is no event."""
        received = time.monotonic()
        try:
            event = parse_event(obj)
        except EventError as exc:
            self.metrics.events_rejected.labels(exc.reason).inc()
            raise
        kind = event.event_type if event.event_type in KNOWN_EVENT_TYPES else "other"
        self.metrics.events_received.labels(kind).inc()
        if isinstance(event, IgnoredEvent):
            self.metrics.events_ignored.inc()
            return "ignored"
        self.reconciler.hint(event, received)
        return "queued"
