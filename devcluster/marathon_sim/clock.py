"""Marathon's timestamp format, in one place because every event and REST object carries one."""

from __future__ import annotations

from datetime import UTC, datetime


def timestamp(at: datetime | None = None) -> str:
    """`yyyy-MM-dd'T'HH:mm:ss.SSS'Z'` in UTC, always three millisecond digits (Marathon's Timestamp)."""
    at = at or datetime.now(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
