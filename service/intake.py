"""One door for Marathon events, whichever transport brought them (callback POST or SSE).

Parsing and validation live in `service.marathon.events`; this module counts, and turns an event
into a hint for the reconciler. It never waits on Consul or Docker, so the callback handler can
answer Marathon within milliseconds (docs/architecture.md §6.1).
"""

from __future__ import annotations

import time

from service.hints import IgnoredEvent
from service.marathon.events import KNOWN_EVENT_TYPES, EventError, parse_event
from service.metrics import Metrics
from service.reconcile import Reconciler


class EventIntake:
    def __init__(self, reconciler: Reconciler | None, metrics: Metrics) -> None:
        """`reconciler` None: the registrar is still starting (its cluster identity is not known
        yet); events are checked and counted, and left to the first resync, which reads them all."""
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
        # a poster inventing types must not grow the metric's label set without bound
        kind = event.event_type if event.event_type in KNOWN_EVENT_TYPES else "other"
        self.metrics.labelled(self.metrics.events_received, kind).inc()
        if isinstance(event, IgnoredEvent):
            self.metrics.events_ignored.inc()
            return "ignored"
        if self.reconciler is None:
            return "ignored"  # still starting: the first resync reads it
        self.reconciler.hint(event, received)
        return "queued"
