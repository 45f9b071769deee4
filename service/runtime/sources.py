"""Where Marathon's events come from: HTTP callbacks (Marathon ≤ 1.4) or the SSE stream, behind one
interface, so the rest of the start and the resyncs need not know which.

`start` returns once the source runs (callbacks: subscribed; the stream: its task started, attached
when `Readiness.source_attached` says so); `before_resync` runs before every full resync (callbacks:
re-subscribe if our URL is gone); `close` ends it within a bounded time (callbacks: unsubscribe,
since a dead URL left subscribed costs Marathon a timeout per event).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from service.backoff import Backoff
from service.config import Config, Transport
from service.intake import EventIntake
from service.marathon.events import EventError
from service.marathon.sse import EventStream
from service.marathon.subscription import CallbackSubscription
from service.retry import Stop, farewell, retry
from service.runtime.parts import Outside
from service.web import Readiness

log = logging.getLogger("service")
T = TypeVar("T")

# Start-up loops (identity, transport pick, callback subscription) retry for as long as it takes.
STARTUP_BACKOFF = Backoff(initial=0.5, cap=30.0)

SSE_EVENT_TYPES = (
    "status_update_event", "instance_health_changed_event", "health_status_changed_event", "api_post_event",
    "app_terminated_event", "deployment_info", "deployment_success", "deployment_failed",
    "deployment_step_success", "deployment_step_failure",
    # the expunge of an unreachable instance comes only as this (issue 19), and pods' definitions
    "instance_changed_event", "pod_created_event", "pod_updated_event", "pod_deleted_event",
)


def _any_error(exc: BaseException) -> bool:
    return isinstance(exc, Exception)


def saying_why(readiness: Readiness, what: str) -> Callable[[int, BaseException, float], None]:
    """A start-up retry's `on_retry`: the reason goes to /ready and the log."""
    def on_retry(_: int, exc: BaseException, delay: float) -> None:
        readiness.source_detail = f"{what}: {exc}"
        log.warning("%s; retrying in %.1fs", readiness.source_detail, delay)
    return on_retry


async def until_answered(call: Callable[[], Awaitable[T]], what: str, readiness: Readiness, stop: Stop) -> T:
    """A start-up read of Marathon: asked until it answers or the stop signal comes (`Stopped`)."""
    return await retry(call, policy=STARTUP_BACKOFF, stop=stop, retry_on=_any_error,
                       on_retry=saying_why(readiness, what))


class EventSource(Protocol):
    async def start(self, stop: Stop) -> None: ...

    async def before_resync(self) -> None: ...

    async def close(self) -> None: ...


class Callbacks:
    """Marathon posts to our HTTP face; we keep our URL subscribed."""

    def __init__(self, outside: Outside, url: str, readiness: Readiness, *, remove_timeout: float) -> None:
        self._url = url
        self._readiness = readiness
        self._subscription = CallbackSubscription(outside.marathon, url, outside.metrics,
                                                  remove_timeout=remove_timeout)
        self._subscribed = False

    async def start(self, stop: Stop) -> None:
        self._subscribed = True  # from the first attempt on: a stop may cut one that Marathon took
        await retry(self._subscription.ensure, policy=STARTUP_BACKOFF, stop=stop, retry_on=_any_error,
                    on_retry=saying_why(self._readiness, f"cannot subscribe {self._url}"))
        self._readiness.source_attached = True

    async def before_resync(self) -> None:
        if await self._subscription.ensure():
            log.warning("callback subscription was gone; re-subscribed %s", self._url)

    async def close(self) -> None:
        if self._subscribed:
            with farewell():  # sent after the stop signal, bounded by its own timeout
                await self._subscription.remove()


class Stream:
    """We read Marathon's SSE stream; every (re)connect asks for a resync, since the stream has no
    replay and whatever happened meanwhile is only visible in state."""

    def __init__(self, outside: Outside, intake: EventIntake, readiness: Readiness,
                 resync_now: Callable[[], None]) -> None:
        self._intake = intake
        self._readiness = readiness
        self._resync_now = resync_now
        self._stream = EventStream(outside.marathon, session=outside.session, metrics=outside.metrics,
                                   on_event=self._on_event, on_connect=self._on_connect, event_types=SSE_EVENT_TYPES,
                                   stop=outside.stop)
        self._task: asyncio.Task[None] | None = None

    async def _on_event(self, obj: dict[str, Any]) -> None:
        try:
            self._intake.accept(obj)
        except EventError as exc:
            log.warning("event stream: rejected event: %s", exc)

    async def _on_connect(self) -> None:
        self._readiness.source_attached = True
        self._resync_now()

    async def start(self, stop: Stop) -> None:
        self._task = asyncio.create_task(self._stream.run(), name="event-stream")

    async def before_resync(self) -> None:
        return None

    async def close(self) -> None:
        self._stream.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


async def pick_transport(config: Config, outside: Outside, readiness: Readiness, stop: Stop) -> Transport:
    """--events, or with `auto` what Marathon's /v2/info offers (asked until it answers)."""
    if config.events is not Transport.AUTO:
        return config.events
    offered = Transport(await until_answered(outside.marathon.event_transport,
                                             "cannot reach Marathon to pick the event transport", readiness, stop))
    if offered is Transport.CALLBACK and not config.callback_url:
        log.warning("Marathon offers callbacks but no --callback-url is set; using the SSE stream")
        return Transport.SSE
    return offered
