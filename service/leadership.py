"""Who writes: one holder of a Consul lock among several registrar instances.

The recipe (Consul's own, hashicorp/consul `api/lock.go`), the liveness registration its session is
bound to, the write gate and why two writers never overlap are docs/architecture.md §3.1; the
gate's arithmetic is `service.lease`, the liveness registration `service.liveness`, the Consul
calls `service.consul.lock`, behind the `SessionKV` interface of `service.clients`. Contending
ends at once on stop (`Stop.race`); holding ends by releasing the key, then destroying the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

from service.clients import SessionKV as SessionKV
from service.lease import LEASE_MARGIN as LEASE_MARGIN
from service.lease import LOCK_DELAY_BOUNDS as LOCK_DELAY_BOUNDS
from service.lease import LOCK_FLAG as LOCK_FLAG
from service.lease import LOCK_TTL_BOUNDS as LOCK_TTL_BOUNDS
from service.lease import SERF_HEALTH as SERF_HEALTH
from service.lease import AliveCheck as AliveCheck
from service.lease import Lease as Lease
from service.lease import LockSettings as LockSettings
from service.lease import alive_check as alive_check
from service.lease import decode_entry, holder_fields
from service.lease import holder_value as holder_value
from service.lease import lease_seconds as lease_seconds
from service.lease import lock_key as lock_key
from service.liveness import Liveness
from service.retry import Stop, Stopped, farewell

log = logging.getLogger(__name__)


class LockLost(Exception):
    """The session or the key is no longer ours."""


class SessionsUnavailable(Exception):
    """The agent does not offer sessions (404/405 on session create: an old agent, or a proxy in
    front of Consul that refuses the endpoint)."""


class Role(StrEnum):
    CONTENDING = "contending"  # not known yet who writes (readiness only: the gate is shut meanwhile)
    STANDBY = "standby"
    WRITER = "writer"


class Leadership:
    """Contends for the lock, holds it, and tells the rest of the registrar when it may write.

    `on_acquired` runs (awaited) after the lock is taken and before `may_write()` turns true for
    event work: the caller runs its full resync there (docs/architecture.md §3.1). `on_lost` runs when the lock
    is lost or released. Both are called from the lock's own task, one at a time.
    """

    def __init__(self, client: SessionKV, settings: LockSettings, *, value: bytes,
                 on_acquired: Callable[[], Awaitable[None]] | None = None,
                 on_lost: Callable[[str], Awaitable[None]] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[Role, str], None] | None = None, optional: bool = False,
                 on_standby: Callable[[], None] | None = None, stop: Stop | None = None) -> None:
        self._client = client
        self.settings = settings
        self._value = value
        self._on_acquired = on_acquired
        self._on_lost = on_lost
        self._on_change = on_change
        self._on_standby = on_standby  # called whenever another instance is seen holding the lock
        self._clock = clock
        self._optional = optional  # --lock auto: without sessions, write without a lock
        self.unlocked = False  # True once `optional` found no sessions: the only instance, always writing
        self._session: str | None = None
        self._held = False
        self._lease = Lease(settings.lease_seconds, clock)
        self._liveness = Liveness(client, settings.alive)
        self._stop = stop if stop is not None else Stop()  # every wait of the lock's loops ends on it
        self.since: float | None = None  # wall time we became writer
        self.holder: dict[str, Any] | None = None  # the value of the key as last read
        self.detail = "not started"
        self.writer_event = asyncio.Event()  # set while we are the writer (for waiters)
        self._running = False
        self._finished = asyncio.Event()
        self._last_failure: str | None = None  # the cause last logged: a repeat is logged at debug level

    # ------------------------------------------------------------------ the gate
    def may_write(self) -> bool:
        return self.unlocked or (self._held and self._lease.open())

    @property
    def role(self) -> Role:
        return Role.WRITER if self.may_write() else Role.STANDBY

    # ------------------------------------------------------------------ the loop
    async def run(self) -> None:
        """Contend, hold, step down, contend again: until `stop()`."""
        self._running = True
        try:
            await self._run()
        finally:
            self._finished.set()

    async def _run(self) -> None:
        try:
            await self._contend_until_stopped()
        finally:
            await self._liveness.deregister()

    async def _contend_until_stopped(self) -> None:
        while not self._stop.is_set():
            try:
                # contending (a standby's blocking watch of the key included) ends at once on stop;
                # holding ends by itself on stop, releasing the key first
                if await self._stop.race(self._contend()):
                    await self._hold()
            except asyncio.CancelledError:
                raise
            except Stopped:
                pass
            except SessionsUnavailable as exc:
                if self._optional:
                    await self._write_unlocked(str(exc))
                    return
                self._failed(logging.ERROR, f"lock: the agent offers no sessions ({exc}); --lock on needs them")
            except Exception as exc:  # agent down, session refused: try again shortly
                self._failed(logging.WARNING, f"lock: {type(exc).__name__}: {exc}")
            await self._step_down("lock attempt ended")
            await self._destroy_session()
            with contextlib.suppress(Stopped):
                await self._stop.sleep(self.settings.retry_seconds)

    def _failed(self, level: int, detail: str) -> None:
        """An attempt failed: say why, once per distinct cause (the loop asks again every
        `retry_seconds` for as long as it lasts; the answers are counted in mcr_call_errors_total)."""
        self.detail = detail
        repeated = detail == self._last_failure
        self._last_failure = detail
        log.log(logging.DEBUG if repeated else level, "%s; retrying in %.1fs", detail, self.settings.retry_seconds)

    async def stop(self, grace: float = 10.0) -> None:
        """Release the key, then destroy the session, so the next holder need not wait (the lock
        task does both on its way out; this waits for it)."""
        self._stop.set()
        if self._running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._finished.wait(), grace)

    async def _write_unlocked(self, why: str) -> None:
        """--lock auto against an agent without sessions: this instance writes without a lock
        (and says so, since a second instance would then write too)."""
        self.unlocked = True
        self.since = time.time()
        self.detail = f"writer without a lock: the agent offers no sessions ({why}); run a single instance"
        log.warning("%s", self.detail)
        self._notify(Role.WRITER, "no sessions")
        if self._on_acquired is not None:
            await self._on_acquired()
        self.writer_event.set()
        await self._stop.wait()

    async def _contend(self) -> bool:
        """Until the key is ours (True) or stop (False)."""
        checks = await self._liveness.checks()
        sent = self._clock()
        self._session = await self._client.create_session(
            name="marathon-consul-registrar", ttl_seconds=self.settings.ttl_seconds,
            lock_delay_seconds=self.settings.lock_delay_seconds, checks=checks)
        lease_from = sent
        index: int | None = None
        while not self._stop.is_set():
            # wake at least every TTL/2: our own (idle) session needs renewing while we wait
            index, entry = await self._client.get_key(
                self.settings.key, index=index,
                wait_seconds=min(self.settings.watch_wait_seconds, self.settings.ttl_seconds / 2))
            self.holder = decode_entry(entry)
            holder_session = (entry or {}).get("Session")
            if holder_session and holder_session != self._session and self._is_predecessor(entry):
                await self._take_over_from_predecessor(str(holder_session))
                index = None
                continue
            if holder_session and holder_session != self._session:
                self.detail = f"standby: lock held by {self.holder}"
                if self._on_standby is not None:
                    self._on_standby()
                lease_from = await self._renew_or_raise(lease_from)  # our idle session must stay alive
                continue
            sent = self._clock()
            if await self._client.acquire(self.settings.key, self._value, self._session, LOCK_FLAG):
                self._lease.acknowledged(sent)  # the acquire proves the session alive after `sent`
                return True
            # false with no holder: an invalidated session's lock-delay is running (Consul §3)
            self.detail = "standby: lock-delay of the previous holder running"
            lease_from = await self._renew_or_raise(lease_from)
            with contextlib.suppress(Stopped):
                await self._stop.sleep(self.settings.lock_delay_poll_seconds)
            index = None
        return False

    def _is_predecessor(self, entry: dict[str, Any] | None) -> bool:
        """Does the key name an earlier run of this very instance? Same host name, same advertised
        host and same listen port, another pid. This process holds that port now, and a live
        process (even a stopped one) keeps its listening socket, so that run is dead: its session
        only lingers until its TTL runs out. A restarted single instance then need not wait up to
        2 x TTL + lock-delay for its own dead session."""
        mine = holder_fields(self._value)
        theirs = (decode_entry(entry) or {}).get("holder")
        if not mine or not isinstance(theirs, dict):
            return False
        same = all(theirs.get(k) == mine.get(k) for k in ("hostname", "host", "port"))
        return same and theirs.get("pid") != mine.get("pid") and bool(mine.get("port"))

    async def _take_over_from_predecessor(self, session: str) -> None:
        """Release the key in the dead run's name (a release sets no lock-delay), then destroy
        its session."""
        log.warning("lock %s is held by an earlier run of this instance (session %s), which is gone: "
                    "releasing it", self.settings.key, session)
        with contextlib.suppress(Exception):
            await self._client.release(self.settings.key, self._value, session, LOCK_FLAG)
        try:
            await self._client.destroy_session(session)
        except Exception as exc:  # any failure has the same consequence, said there
            _log_destroy_failed(session, exc, self.settings.ttl_seconds)

    async def _renew_or_raise(self, last_sent: float) -> float:
        """Renew when half the TTL has passed since the last renew; returns when it was sent."""
        now = self._clock()
        if now - last_sent < self.settings.ttl_seconds / 2 or self._session is None:
            return last_sent
        if not await self._client.renew_session(self._session):
            raise LockLost("session expired")
        return now

    async def _hold(self) -> None:
        self._held = True
        self._last_failure = None
        self.since = time.time()
        self.detail = "writer"
        log.info("lock %s acquired: this instance writes", self.settings.key)
        self._notify(Role.WRITER, "acquired")
        renew = asyncio.create_task(self._renew_loop(), name="lock-renew")
        watch = asyncio.create_task(self._watch_loop(), name="lock-watch")
        stop = asyncio.create_task(self._stop.wait(), name="lock-stop")
        # the new writer's resync runs while the lock is renewed and watched (it may outlast a TTL)
        acquired = asyncio.create_task(self._acquired(), name="lock-acquired")
        try:
            done, _ = await asyncio.wait({renew, watch, stop}, return_when=asyncio.FIRST_COMPLETED)
            if self._stop.is_set():  # also when a client's wait in renew or watch saw it first
                await self._release()
            for task in done - {stop}:
                exc = task.exception()
                await self._step_down(str(exc) if exc is not None else "lock watch ended")
        finally:
            for task in (renew, watch, stop, acquired):
                task.cancel()
            await asyncio.gather(renew, watch, stop, acquired, return_exceptions=True)

    async def _acquired(self) -> None:
        try:
            if self._on_acquired is not None:
                await self._on_acquired()
        except Exception as exc:  # the writer's first resync failed: the resync loop tries again
            log.error("lock: the new writer's first resync failed: %s", exc)
        if self._held:
            self.writer_event.set()

    async def _release(self) -> None:
        """Shut the gate, then give the key back (its value stays, naming us as the last holder)."""
        session = self._session
        if not self._shut_gate():
            return
        if session is not None:
            try:
                with farewell():  # sent after the stop signal
                    await asyncio.wait_for(self._client.release(self.settings.key, self._value, session, LOCK_FLAG),
                                           5.0)
            except Exception as exc:  # destroying the session releases it anyway
                log.warning("lock: releasing %s failed (%s)", self.settings.key, exc)
        await self._announce_lost("released on shutdown")

    async def _renew_loop(self) -> None:
        """Renew every `renew_seconds`; each acknowledged renew extends the lease to L from its
        send. Failed renewals are tried again at the same pace. When the lease has run out (Consul
        unreachable, or this process held up: a large resync's parsing, a SIGSTOP) the gate is
        shut by itself (see `Lease`) and renewals go on until a TTL after the send of the last
        acknowledged one: a renew Consul acknowledges meanwhile proves the session, so the lock,
        still ours after its send, and reopens the gate for L as any renew does (two writers still
        never overlap: docs/architecture.md §3.1). Past that TTL the lock is lost."""
        assert self._session is not None
        every = self.settings.renew_seconds
        last_sent = self._lease.until - self._lease.seconds  # the acquire's send
        lapsed_since: float | None = None
        while self._held:
            await self._stop.sleep(max(0.0, last_sent + every - self._clock()))
            sent = last_sent = self._clock()
            acked = self._lease.until - self._lease.seconds  # the send of the last acknowledged renew
            if not self._lease.open():
                if sent - acked >= self.settings.ttl_seconds:
                    raise LockLost(f"session not renewed within its TTL of {self.settings.ttl_seconds:g}s "
                                   f"(the write lease of {self._lease.seconds:g}s ran out first)")
                if lapsed_since is None:
                    lapsed_since = sent
                    log.warning("lock: the write lease of %gs ran out %.1fs ago without an acknowledged renew "
                                "(Consul unreachable, or this process was held up); writes wait for the next "
                                "acknowledged renew", self._lease.seconds, sent - self._lease.until)
            try:
                alive = await asyncio.wait_for(self._client.renew_session(self._session),
                                               max(0.1, acked + self.settings.ttl_seconds - sent))
            except (asyncio.CancelledError, Stopped):
                raise
            except Exception as exc:
                if self._clock() - acked >= self.settings.ttl_seconds:
                    raise LockLost(f"session not renewed within its TTL of {self.settings.ttl_seconds:g}s: "
                                   f"{str(exc) or type(exc).__name__}") from exc
                log.warning("lock: renewing the session failed (%s); retrying", exc)
                continue
            if not alive:
                raise LockLost("session expired (renew answered 404)")
            if self._held:  # a step-down meanwhile keeps the gate shut
                self._lease.acknowledged(sent)
                if lapsed_since is not None:
                    log.warning("lock: renewed %.1fs after the write lease ran out; writes resume",
                                self._clock() - lapsed_since)
                    lapsed_since = None

    async def _watch_loop(self) -> None:
        index: int | None = None
        while self._held:
            try:
                index, entry = await self._client.get_key(self.settings.key, index=index,
                                                         wait_seconds=self.settings.watch_wait_seconds)
            except (asyncio.CancelledError, Stopped):
                raise
            except Exception as exc:  # the renew loop decides; a flaky read alone loses nothing
                log.warning("lock: watching %s failed (%s)", self.settings.key, exc)
                await self._stop.sleep(self.settings.retry_seconds)
                index = None
                continue
            if entry is None:
                raise LockLost(f"key {self.settings.key} deleted")
            if entry.get("Session") != self._session:
                self.holder = decode_entry(entry)
                raise LockLost(f"key {self.settings.key} now held by {entry.get('Session') or 'nobody'}")

    def _shut_gate(self) -> bool:
        """No write passes from now on; True if we were the writer."""
        was_held = self._held
        self._held = False
        self._lease.shut()
        self.writer_event.clear()
        return was_held

    async def _step_down(self, reason: str) -> None:
        if self._shut_gate():  # the gate shuts before anything else happens
            await self._announce_lost(reason)

    async def _announce_lost(self, reason: str) -> None:
        self.since = None
        self.detail = f"standby: {reason}"
        log.warning("lock %s given up (%s): this instance stops writing", self.settings.key, reason)
        self._notify(Role.STANDBY, reason)
        if self._on_lost is not None:
            await self._on_lost(reason)

    async def _destroy_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            try:
                with farewell():  # also on the way out, after the stop signal
                    await asyncio.wait_for(self._client.destroy_session(session), 5.0)
            except Exception as exc:  # any failure has the same consequence, said there
                _log_destroy_failed(session, exc, self.settings.ttl_seconds)

    def _notify(self, role: Role, reason: str) -> None:
        if self._on_change is not None:
            self._on_change(role, reason)


def _log_destroy_failed(session: str, exc: BaseException, ttl: float) -> None:
    """A session we could not destroy still ends, by its TTL; until then (and for its lock-delay)
    no one takes the lock. Said once per failure, at warning: the hand-over is slower, not wrong."""
    log.warning("could not destroy Consul session %s (%s): it ends by its TTL within %gs, and the next "
                "holder waits that long plus the lock-delay", session, str(exc) or type(exc).__name__, 2 * ttl)
