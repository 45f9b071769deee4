"""`marathon-consul-registrar sync`: one resync, then exit.

With `--dry-run` it only reads, and takes no lock. Otherwise it writes, so it takes the cluster's
lock first, as `serve` does (`service.runtime.lock`: the same key, session and write gate): a
`sync` beside a serving instance would be a second writer. It waits a bounded time for the lock
(a previous holder's lock-delay may be running), and gives up at once, naming the holder, when
another instance holds it; on its way out it releases the key and destroys its session, also when
stopped by SIGTERM (a session left to its TTL would keep every serving instance from writing for up
to 2 x TTL + the lock-delay).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable

from service.config import Config
from service.leadership import Leadership
from service.reconcile import Drift
from service.runtime.lock import lock_for
from service.runtime.parts import Outside, build_reconciler, connect

LOCK_SLACK = 5.0  # seconds waited for the lock beyond the lock-delay (a few rounds of a slow agent)
RELEASE_GRACE = 5.0  # seconds for releasing the key and destroying the session on the way out
IDLE_WITHIN = 120.0  # seconds for the repairs the resync scheduled


class LockUnavailable(Exception):
    """`sync` could not take the cluster's lock, so it wrote nothing; the message says why in one line."""


class SyncStopped(Exception):
    """SIGTERM stopped `sync`; it gave the lock back on its way out. The message says so in one line."""


def _holder(leadership: Leadership) -> str:
    seen = leadership.holder or {}
    fields = seen.get("holder")
    if not isinstance(fields, dict):  # a key someone else wrote (e.g. `consul lock`)
        return f"session {seen.get('session')}"
    where = f"{fields.get('host')}:{fields.get('port')}" if fields.get("port") else str(fields.get("host"))
    return (f"{where} (hostname {fields.get('hostname')}, pid {fields.get('pid')}, "
            f"version {fields.get('version')}, session {seen.get('session')})")


@contextlib.asynccontextmanager
async def _holding(config: Config, outside: Outside, cluster_id: str) -> AsyncIterator[Callable[[], bool] | None]:
    """The lock held for the body (its write gate yielded), or None with `--lock off`."""
    elsewhere = asyncio.Event()
    lock = lock_for(config, outside, cluster_id=cluster_id, serving=False, on_standby=elsewhere.set)
    if lock is None:
        yield None
        return
    leadership, client = lock
    task = asyncio.create_task(leadership.run(), name="lock")
    try:
        waits = [asyncio.ensure_future(leadership.writer_event.wait()), asyncio.ensure_future(elsewhere.wait())]
        within = config.lock_delay + LOCK_SLACK
        try:
            await asyncio.wait([*waits, task], timeout=within, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        key = leadership.settings.key
        if not leadership.may_write():
            if elsewhere.is_set():
                raise LockUnavailable(
                    f"the lock {key} is held by {_holder(leadership)}: another instance writes for this cluster; "
                    "stop it, or run sync with --lock off (two writers while both run); nothing was written")
            raise LockUnavailable(f"could not take the lock {key} through --lock-agent {config.lock_agent} within "
                                  f"{within:g}s ({leadership.detail}); nothing was written")
        yield leadership.may_write
        if not leadership.may_write():
            raise LockUnavailable(f"lost the lock {key} during the sync ({leadership.detail}); the writes after "
                                  "that were not sent")
    finally:
        await leadership.stop(grace=RELEASE_GRACE)  # releases the key, destroys the session
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()


async def sync_once(config: Config, *, dry_run: bool) -> Drift:
    """One resync (repairing unless dry_run), then exit. SIGTERM cancels it, so that the way out
    (the lock's release, the sessions closed) runs as on Ctrl-C; it raises `SyncStopped`."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    terminated = False

    def terminate() -> None:
        nonlocal terminated
        if not terminated:  # a second SIGTERM does not cut the (bounded) way out short
            terminated = True
            task.cancel()

    loop.add_signal_handler(signal.SIGTERM, terminate)
    try:
        return await _sync(config, dry_run=dry_run)
    except asyncio.CancelledError:
        if not terminated:
            raise
        task.uncancel()
        why = "; nothing was written" if dry_run else " before its repairs were done; its lock, if any, given back"
        raise SyncStopped(f"stopped (SIGTERM){why}") from None
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


async def _sync(config: Config, *, dry_run: bool) -> Drift:
    outside = connect(config)
    try:
        # never take another cluster's registrations for ours, in a one-off sync least of all
        cluster_id = config.cluster_id or await outside.marathon.framework_id()
        if dry_run:
            return await _resync(config, outside, cluster_id, dry_run=True, may_write=None)
        async with _holding(config, outside, cluster_id) as may_write:
            return await _resync(config, outside, cluster_id, dry_run=False, may_write=may_write)
    finally:
        await outside.close()


async def _resync(config: Config, outside: Outside, cluster_id: str, *, dry_run: bool,
                  may_write: Callable[[], bool] | None) -> Drift:
    parts = build_reconciler(config, outside, cluster_id=cluster_id, may_write=may_write)
    parts.reconciler.start()
    try:
        drift = await parts.reconciler.resync(dry_run=dry_run)
        if not dry_run:
            async with asyncio.timeout(IDLE_WITHIN):
                await parts.reconciler.wait_idle()
        return drift
    finally:
        await parts.close()

