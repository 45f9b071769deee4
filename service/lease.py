"""The lock's settings and the write gate's arithmetic (docs/architecture.md §3.1).

Pure values and one small clock-driven class, apart from the lock's loops in `service.leadership`,
so the arithmetic that keeps two writers apart is read (and unit-tested with an injected clock) on
its own: the lease L below the lock-delay, what counts as an acknowledged renew, how often to renew,
what the liveness check the session is bound to looks like, and the lock key and its value.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.ownership import LOCK_SERVICE_NAME, lock_alive_check_id, lock_alive_meta, lock_alive_service_id

LEASE_MARGIN = 1.0  # seconds the lock-delay outlasts the lease by (less for a lock-delay under 3 s)
SERF_HEALTH = "serfHealth"  # Consul's node check, kept beside ours (reference/consul-sessions.md §1)


def lease_seconds(ttl_seconds: float, lock_delay_seconds: float) -> float:
    """L: how long after the send of its last acknowledged renew a holder may still write. Below
    the lock-delay D by a margin (for the last write in flight, and clocks' rates), so that a next
    holder, who acquires no earlier than invalidation + D, never overlaps us (module docstring);
    never above the TTL. D = 0 leaves only the TTL bound."""
    if lock_delay_seconds <= 0:
        return ttl_seconds
    return min(ttl_seconds, lock_delay_seconds - min(LEASE_MARGIN, lock_delay_seconds / 3))


class Lease:
    """The write gate's arithmetic, on an injectable monotonic clock. `acknowledged(sent)` after
    every successful renew (or acquire) sent at `sent`; `open()` before every write."""

    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self.seconds = seconds
        self._clock = clock
        self.until = 0.0  # monotonic time from which we must not write

    def acknowledged(self, sent: float) -> None:
        """Consul answered a renew sent at `sent`: the session was alive after `sent`. A late answer
        to an earlier renew never shortens the lease."""
        self.until = max(self.until, sent + self.seconds)

    def open(self) -> bool:
        return self._clock() < self.until

    def shut(self) -> None:
        self.until = 0.0


@dataclass(frozen=True)
class AliveCheck:
    """This instance's liveness registration in the lock agent, which its session is bound to: a
    service (`service.ownership` marker `marathon-consul-registrar-lock`, never taken for a task's
    orphan) whose HTTP check asks our /health. A service check, not a node check: a critical
    node check would make every service on the node unhealthy. Reaped by the agent a minute after
    a crash (`DeregisterCriticalServiceAfter`, Consul's minimum), removed by us on a clean stop."""

    service_id: str
    name: str
    url: str
    interval_seconds: float = 1.0
    timeout_seconds: float = 2.0
    deregister_after_seconds: float = 60.0
    meta: tuple[tuple[str, str], ...] = ()

    @property
    def check_id(self) -> str:
        return lock_alive_check_id(self.service_id)


@dataclass(frozen=True)
class LockSettings:
    key: str
    ttl_seconds: float = 15
    lock_delay_seconds: float = 15
    watch_wait_seconds: float = 10.0
    retry_seconds: float = 1.0  # pause after a failed attempt (agent down, session refused)
    alive: AliveCheck | None = None  # None: the session is bound to serfHealth (and its TTL) only
    renew_every: float | None = None  # None: L/4 (three more tries before the lease ends), at most TTL/2

    @property
    def lease_seconds(self) -> float:
        return lease_seconds(self.ttl_seconds, self.lock_delay_seconds)

    @property
    def renew_seconds(self) -> float:
        if self.renew_every is not None:
            return self.renew_every
        return min(self.ttl_seconds / 2, self.lease_seconds / 4)

    @property
    def lock_delay_poll_seconds(self) -> float:
        """How often a contender retries an acquire refused by a running lock-delay."""
        return min(1.0, max(0.1, self.lock_delay_seconds / 10))


def alive_check(*, cluster_id: str, listen_host: str, listen_port: int, https: bool, interval_seconds: float,
                host: str | None) -> AliveCheck:
    """The liveness registration of this instance: the lock agent asks `/health` on our listen
    address, or on `host` ($HOST, the slave's name) when we listen on every address. The timeout
    (twice the interval, at least 2 s) spares a busy but live instance; a killed one is refused at once."""
    target = listen_host if listen_host not in ("", "0.0.0.0", "::") else (host or "127.0.0.1")
    if ":" in target:
        target = f"[{target}]"
    service_id = lock_alive_service_id(cluster_id, target, listen_port)
    return AliveCheck(service_id=service_id, name=LOCK_SERVICE_NAME,
                      url=f"{'https' if https else 'http'}://{target}:{listen_port}/health",
                      interval_seconds=interval_seconds, timeout_seconds=max(2.0, 2 * interval_seconds),
                      meta=tuple(sorted(lock_alive_meta(cluster_id).items())))


# Consul's lock flag (hashicorp/consul api/lock.go `LockFlagValue`): Go lockers treat a key without
# it as "in use for something else", so we set it too and interoperate with `consul lock`.
LOCK_FLAG = 0x2DDCCBC058A50C18
LOCK_TTL_BOUNDS = (10, 86400)  # Consul's session TTL bounds, seconds (10s..24h)
LOCK_DELAY_BOUNDS = (0, 60)  # Consul applies at most 60s (MaxLockDelay)


def holder_value(*, host: str, port: int, version: str) -> bytes:
    """What the key says about its holder: enough for an operator to find the process."""
    return json.dumps({"host": host, "port": port, "pid": os.getpid(), "version": version,
                       "hostname": socket.gethostname()}, sort_keys=True).encode()


def lock_key(cluster_id: str) -> str:
    """One lock per Marathon cluster: two clusters' registrars never wait for each other."""
    return f"marathon-consul-registrar/{cluster_id}/leader"


def holder_fields(value: object) -> dict[str, Any] | None:
    """The lock key's value (the JSON object naming its holder, `holder_value`), or None when it
    is absent or not such an object (a key written by someone else)."""
    if not isinstance(value, (str, bytes, bytearray)) or not value:
        return None
    try:
        fields = json.loads(value)
    except ValueError:  # UnicodeDecodeError included
        return None
    return fields if isinstance(fields, dict) else None


def decode_entry(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {"session": entry.get("Session"), "holder": holder_fields(entry.get("Value"))}
