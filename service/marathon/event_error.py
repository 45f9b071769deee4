"""The one error of a body that is not a Marathon event."""

from __future__ import annotations


class EventError(ValueError):
    """A body that is not a Marathon event; `reason` is a bounded label from `REASONS`."""

    def __init__(self, reason: str, message: str, *, event_type: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.event_type = event_type
