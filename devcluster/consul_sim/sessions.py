"""Sessions, the KV store, lock-delays and session TTL timers (reference/consul-sessions.md §1-§4).

Pure state: the HTTP handlers (`kv_api`) decode and authorize, this module applies the writes the
way Consul's state store does. Like `state.py`, every mutation is synchronous on the one asyncio
loop, so there are no locks. Indexes come from the shared `State` counter (Consul's raft index is
one counter for every table); the sessions table index, the KV table index (max of entries and
tombstones, `kvsMaxIndex`) and each tombstone's index are kept here, so a blocking read of one
table is not woken by a write to another table's index.

Time: TTL expiry and lock-delays use `SimClock`, which is CLOCK_MONOTONIC plus an offset that only
`POST /_sim/clock/advance` moves (default: real time). A test can thus cross a 2 x TTL expiry or a
15 s lock-delay in one call instead of waiting; the check runner, blocking waits and the agents'
TTL checks stay on real time.

Errors raised here are the server's (`agent/consul/*`), so `ApiError` texts carry the layering a
client agent answers with (§0): `rpc error making call: ` for the agent->server hop, plus
`apply failed: ` (session FSM errors) or `raft apply failed: ` (KV FSM errors) from modern
`raftApplyWithEncoder` (hashicorp/consul PR #9991). The simulator's agents are client agents
(`/v1/agent/self` says `Server: false`), so the hop prefix is always there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from devcluster.consul_sim.state import State
from devcluster.consul_sim.validation import ApiError

log = logging.getLogger("consul_sim.sessions")

RPC_PREFIX = "rpc error making call: "  # hashicorp/consul: agent/pool/pool.go `RPC`
SESSION_APPLY = "apply failed: "  # hashicorp/consul: agent/consul/session_endpoint.go `Apply`
KV_APPLY = "raft apply failed: "  # hashicorp/consul: agent/consul/kvs_endpoint.go `Apply`
TTL_MULTIPLIER = 2  # structs.SessionTTLMultiplier: the leader's timer is TTL x 2 (session_ttl.go)
MAX_LOCK_DELAY_NS = 60 * 10**9  # structs.MaxLockDelay, applied in state/session.go deleteSessionTxn
SERF_CHECK = "serfHealth"


def server_error(text: str, apply_prefix: str = "") -> ApiError:
    """A plain (500) error from the servers, as seen through a client agent (§0)."""
    return ApiError(500, RPC_PREFIX + apply_prefix + text)


class SimClock:
    """Monotonic seconds plus a test-controlled offset (`/_sim/clock/advance`); see module doc."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.monotonic() + self.offset


@dataclass
class Session:
    """`structs.Session` (hashicorp/consul: agent/structs/structs.go)."""

    id: str
    name: str
    node: str
    lock_delay_ns: int
    behavior: str
    ttl: str  # as sent; "" = no TTL
    ttl_ns: int
    node_checks: list[str]
    service_checks: list[dict[str, str]] | None
    checks: list[str]  # the deprecated field, kept only when it is not the default
    create_index: int = 0
    modify_index: int = 0

    def check_ids(self) -> list[str]:
        """`Session.CheckIDs` (structs_ce.go): Checks, NodeChecks, then ServiceChecks' IDs."""
        out = list(dict.fromkeys([*self.checks, *self.node_checks,
                                  *(c["ID"] for c in self.service_checks or [])]))
        return out

    def view(self) -> dict[str, Any]:
        """Key order and omitempty as emitted (§2)."""
        out: dict[str, Any] = {"ID": self.id, "Name": self.name, "Node": self.node,
                               "LockDelay": self.lock_delay_ns, "Behavior": self.behavior, "TTL": self.ttl,
                               "NodeChecks": list(self.node_checks),
                               "ServiceChecks": [dict(c) for c in self.service_checks]
                               if self.service_checks is not None else None}
        if self.checks:
            out["Checks"] = list(self.checks)
        out["CreateIndex"] = self.create_index
        out["ModifyIndex"] = self.modify_index
        return out


@dataclass
class DirEntry:
    """`structs.DirEntry`; `Equal` compares LockIndex, Key, Flags, Value, Session."""

    key: str
    value: bytes | None
    flags: int = 0
    lock_index: int = 0
    session: str = ""
    create_index: int = 0
    modify_index: int = 0

    def same_content(self, other: DirEntry) -> bool:
        return (self.lock_index, self.key, self.flags, self.value, self.session) == (
            other.lock_index, other.key, other.flags, other.value, other.session)


@dataclass
class SessionKV:
    """Sessions + KV of the simulated datacenter, shared by every agent."""

    state: State
    clock: SimClock = field(default_factory=SimClock)
    sessions: dict[str, Session] = field(default_factory=dict)
    session_index: int = 0
    kv: dict[str, DirEntry] = field(default_factory=dict)
    kv_index: int = 0
    tombstones: dict[str, int] = field(default_factory=dict)
    lock_delays: dict[str, float] = field(default_factory=dict)  # key -> SimClock expiry
    ttl_deadlines: dict[str, float] = field(default_factory=dict)  # session id -> SimClock expiry
    ttl_min_ns: int = 10 * 10**9  # session_ttl_min (agent/consul/config.go default 10s)
    # (op, subject) -> the request log; set by the HTTP layer (`Sim.log_registration`)
    on_invalidate: Callable[[str, str], None] | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _timer_task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.state.check_invalidated = self.check_invalidated

    # ---- sessions -------------------------------------------------------------------------

    def create(self, s: Session) -> str:
        """`sessionCreateTxn` (agent/consul/state/session.go, session_ce.go) after the endpoint's
        pre-raft checks, which the handler has done. Raises the state-store errors."""
        agent = self.state.nodes.get(s.node)
        if agent is None:
            raise server_error("Missing node registration", SESSION_APPLY)
        for cid in s.check_ids():
            if cid == SERF_CHECK:
                status = agent.serf_status
            else:
                chk = agent.checks.get(cid)
                if chk is None:
                    raise server_error(f"Missing check '{cid}' registration", SESSION_APPLY)
                status = chk.status
            if status == "critical":
                raise server_error(f"Check '{cid}' is in critical state", SESSION_APPLY)
        s.id = str(uuid.uuid4())
        idx = self.state._bump()
        s.create_index = s.modify_index = idx
        self.sessions[s.id] = s
        self.session_index = idx
        if s.ttl_ns > 0:
            self._arm(s)
        return s.id

    def renew(self, sid: str) -> Session | None:
        """`Session.Renew`: re-arms the 2 x TTL timer, writes nothing (no index bump)."""
        s = self.sessions.get(sid)
        if s is not None and s.ttl_ns > 0:
            self._arm(s)
        return s

    def destroy(self, sid: str, why: str = "destroy") -> bool:
        """`deleteSessionTxn` (agent/consul/state/session.go): the session goes, its keys are
        released or deleted per Behavior, and each such key gets a lock-delay of
        min(LockDelay, 60s) from now. Explicit destroy is an invalidation too (§3)."""
        s = self.sessions.pop(sid, None)
        if s is None:
            return False
        self.ttl_deadlines.pop(sid, None)
        idx = self.state._bump()
        self.session_index = idx
        delay = min(s.lock_delay_ns, MAX_LOCK_DELAY_NS) / 1e9
        for key, e in list(self.kv.items()):
            if e.session != sid:
                continue
            if s.behavior == "delete":
                del self.kv[key]
                self.tombstones[key] = idx
            else:
                e.session = ""
                e.modify_index = idx
            self.kv_index = idx
            if delay > 0:
                self.lock_delays[key] = self.clock.now() + delay
        self._wake.set()
        log.info("session %s invalidated (%s)", sid, why)
        if self.on_invalidate is not None and why != "destroy":
            self.on_invalidate(f"session-invalidate-{why}", sid)
        return True

    def check_invalidated(self, node: str, check_id: str) -> None:
        """A check on `node` went critical or was deregistered (or the node's serfHealth went
        critical): every session bound to it is invalidated (state/catalog.go `ensureCheckTxn`,
        `deleteCheckTxn`)."""
        for s in list(self.sessions.values()):
            if s.node == node and check_id in s.check_ids():
                self.destroy(s.id, "check")

    def node_sessions(self, node: str) -> list[Session]:
        return [s for s in self.sessions.values() if s.node == node]

    # ---- TTL timers -----------------------------------------------------------------------

    def _arm(self, s: Session) -> None:
        """`resetSessionTimer`: fire `invalidateSession` TTL x 2 from now (session_ttl.go)."""
        self.ttl_deadlines[s.id] = self.clock.now() + TTL_MULTIPLIER * s.ttl_ns / 1e9
        if self._timer_task is None:
            self._timer_task = asyncio.get_running_loop().create_task(self._timer_loop())
        self._wake.set()

    def advance(self, seconds: float) -> None:
        """Move the SimClock forward (test control); due TTL timers fire right away."""
        self.clock.offset += seconds
        self._expire_due()
        self._wake.set()

    def _expire_due(self) -> None:
        now = self.clock.now()
        for sid, deadline in list(self.ttl_deadlines.items()):
            if deadline <= now and sid in self.sessions:
                self.destroy(sid, "ttl")

    async def _timer_loop(self) -> None:
        while True:
            self._wake.clear()
            self._expire_due()
            wait = None
            if self.ttl_deadlines:
                wait = max(0.0, min(self.ttl_deadlines.values()) - self.clock.now())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def close(self) -> None:
        if self._timer_task is not None:
            self._timer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer_task

    def reset(self) -> None:
        """Forget every session, key, tombstone and lock-delay (`/_sim/reset`)."""
        self.sessions.clear()
        self.ttl_deadlines.clear()
        self.kv.clear()
        self.tombstones.clear()
        self.lock_delays.clear()
        idx = self.state._bump()
        self.session_index = self.kv_index = idx

    # ---- KV -------------------------------------------------------------------------------

    def kv_prefix_index(self, prefix: str) -> int:
        """`kvsListTxn`: max ModifyIndex of entries or tombstones under the prefix; the whole
        table's index for prefix ""."""
        if prefix == "":
            return self.kv_index
        idx = 0
        for k, e in self.kv.items():
            if k.startswith(prefix):
                idx = max(idx, e.modify_index)
        for k, i in self.tombstones.items():
            if k.startswith(prefix):
                idx = max(idx, i)
        return idx

    def list(self, prefix: str) -> list[DirEntry]:
        return [self.kv[k] for k in sorted(self.kv) if k.startswith(prefix)]

    def _write(self, entry: DirEntry, *, update_session: bool) -> None:
        """`kvsSetTxn` (agent/consul/state/kvs.go): keeps CreateIndex (and Session unless told
        otherwise); an identical write is skipped and bumps nothing."""
        existing = self.kv.get(entry.key)
        if not update_session:
            entry.session = existing.session if existing else ""
        if existing is not None and existing.same_content(entry):
            return
        idx = self.state._bump()
        entry.create_index = existing.create_index if existing else idx
        entry.modify_index = idx
        self.kv[entry.key] = entry
        self.tombstones.pop(entry.key, None)
        self.kv_index = idx

    def set(self, key: str, value: bytes | None, flags: int) -> bool:
        """Plain PUT: LockIndex is the request's 0, the holder's Session is kept."""
        self._write(DirEntry(key, value, flags), update_session=False)
        return True

    def cas(self, key: str, value: bytes | None, flags: int, cidx: int) -> bool:
        """`kvsSetCASTxn`: 0 = only if absent, N = only if ModifyIndex == N."""
        existing = self.kv.get(key)
        if (cidx == 0 and existing is not None) or (cidx != 0 and existing is None):
            return False
        if existing is not None and cidx != 0 and existing.modify_index != cidx:
            return False
        self._write(DirEntry(key, value, flags), update_session=False)
        return True

    def lock_delay_active(self, key: str) -> bool:
        """`kvsPreApply`: an acquire is refused (false) while the key's lock-delay runs."""
        expiry = self.lock_delays.get(key)
        if expiry is None:
            return False
        if expiry <= self.clock.now():
            del self.lock_delays[key]
            return False
        return True

    def acquire(self, key: str, value: bytes | None, flags: int, sid: str) -> bool:
        """`kvsPreApply` lock-delay check, then `kvsLockTxn`."""
        if self.lock_delay_active(key):
            log.warning("Rejecting lock of key due to lock-delay key=%s", key)
            return False
        if sid == "":
            raise server_error("missing session", KV_APPLY)
        if sid not in self.sessions:
            raise server_error(f'invalid session "{sid}"', KV_APPLY)
        existing = self.kv.get(key)
        entry = DirEntry(key, value, flags, session=sid)
        if existing is None:
            entry.lock_index = 1
        elif existing.session == sid:
            entry.lock_index = existing.lock_index
        elif existing.session:
            return False
        else:
            entry.lock_index = existing.lock_index + 1
        self._write(entry, update_session=True)
        return True

    def release(self, key: str, value: bytes | None, flags: int, sid: str) -> bool:
        """`kvsUnlockTxn`: only the holder's session; Value/Flags come from the request."""
        if sid == "":
            raise server_error("missing session", KV_APPLY)
        existing = self.kv.get(key)
        if existing is None or existing.session != sid:
            return False
        self._write(DirEntry(key, value, flags, lock_index=existing.lock_index), update_session=True)
        return True

    def delete(self, key: str) -> bool:
        if key in self.kv:
            del self.kv[key]
            idx = self.state._bump()
            self.tombstones[key] = idx
            self.kv_index = idx
        return True

    def delete_cas(self, key: str, cidx: int) -> bool:
        """`kvsDeleteCASTxn`: true also when the key does not exist."""
        e = self.kv.get(key)
        if e is None or e.modify_index != cidx:
            return e is None
        return self.delete(key)

    def delete_tree(self, prefix: str) -> bool:
        keys = [k for k in self.kv if k.startswith(prefix)]
        if keys:
            idx = self.state._bump()
            for k in keys:
                del self.kv[k]
                self.tombstones[k] = idx
            self.kv_index = idx
        return True
