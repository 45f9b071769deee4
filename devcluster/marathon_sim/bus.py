"""The event bus: every published event goes to every attached SSE stream and callback dispatcher.

Publishing never blocks: SSE handles have bounded per-client buffers (Marathon's
`event_stream_max_outstanding_messages`) and callbacks are fire-and-forget tasks, so a slow consumer
cannot slow the simulator down, as in Marathon.
"""

from __future__ import annotations

import logging
from typing import Protocol

from devcluster.marathon_sim.events import Event

log = logging.getLogger("marathon_sim.bus")


class Sink(Protocol):
    def offer(self, event: Event) -> None: ...


class EventBus:
    def __init__(self) -> None:
        self._sinks: list[Sink] = []

    def attach(self, sink: Sink) -> None:
        self._sinks.append(sink)

    def detach(self, sink: Sink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)

    def publish(self, event: Event) -> None:
        log.debug("event %s %s", event.event_type, event.data)
        for sink in list(self._sinks):
            sink.offer(event)
