"""What the registrar writes into Consul, and whether what an agent holds is that.

`Registration` (with its `ConsulCheck`s) is one service instance we want on one agent; the Consul
client parses what an agent holds back into `OwnedService`, whose `matches` decides "nothing to
write" (docs/architecture.md §4, §6.3). Pure values and rules: the resync's diff, the ledger and the
writer compare with them, the Consul client only parses into them. Consul echoes durations in Go's
form and leaves out fields older agents do not return, so the comparison of checks is by value and
over the fields echoed (`same_check`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from service.ownership import META_APP_ID, META_TASK_ID


@dataclass(frozen=True, slots=True)
class ConsulCheck:
    """A Consul check attached to a registration. Exactly one of http/tcp/ttl is set."""

    check_id: str
    name: str
    http: str | None = None
    tcp: str | None = None
    ttl: str | None = None
    interval: str | None = None  # Go duration string, e.g. "10s"
    timeout: str | None = None
    tls_skip_verify: bool = False
    notes: str = ""

    @property
    def kind(self) -> str:
        return "http" if self.http else "tcp" if self.tcp else "ttl"

    def to_consul(self) -> dict[str, object]:
        body: dict[str, object] = {"CheckID": self.check_id, "Name": self.name}
        if self.http:
            body["HTTP"] = self.http
        if self.tcp:
            body["TCP"] = self.tcp
        if self.ttl:
            body["TTL"] = self.ttl
        if self.interval:
            body["Interval"] = self.interval
        if self.timeout:
            body["Timeout"] = self.timeout
        if self.tls_skip_verify:
            body["TLSSkipVerify"] = True
        if self.notes:
            body["Notes"] = self.notes
        return body


@dataclass(frozen=True, slots=True)
class Registration:
    """One Consul service instance the registrar wants on the agent of `agent_host`."""

    agent_host: str
    service_id: str
    name: str
    tags: tuple[str, ...]
    address: str
    port: int
    meta: tuple[tuple[str, str], ...]  # sorted pairs, so equality ignores order
    checks: tuple[ConsulCheck, ...] = ()

    @property
    def meta_dict(self) -> dict[str, str]:
        return dict(self.meta)

    def meta_get(self, key: str, default: str = "") -> str:
        """One Meta value without building a dict (resyncs ask this of 10,000 registrations)."""
        for k, v in self.meta:
            if k == key:
                return v
        return default

    @property
    def task_id(self) -> str:
        return self.meta_get(META_TASK_ID)

    @property
    def app_id(self) -> str:
        return self.meta_get(META_APP_ID)

    def to_consul(self) -> dict[str, object]:
        """The body of PUT /v1/agent/service/register."""
        body: dict[str, object] = {
            "ID": self.service_id,
            "Name": self.name,
            "Tags": list(self.tags),
            "Address": self.address,
            "Port": self.port,
            "Meta": self.meta_dict,
        }
        if self.checks:
            body["Checks"] = [c.to_consul() for c in self.checks]
        return body


# -- Does a registration an agent holds match ours? ------------------------------------------------

_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration_seconds(value: object) -> float | None:
    """Consul echoes durations in Go's canonical form ("1m0s" for our "60s"); compare by value."""
    if value in (None, "", 0):
        return None
    if isinstance(value, (int, float)):
        return value / 1e9  # a JSON number is nanoseconds
    text = str(value)
    parts = _GO_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.lstrip("+"):
        return None
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    return seconds or None


def same_check(desired: ConsulCheck, actual: ConsulCheck, actual_type: str) -> bool:
    """Does the agent's check match what we want? Fields Consul does not echo back count as equal
    (older agents return no `Definition`), fields it does echo must match."""
    if (desired.check_id, desired.name, desired.notes) != (actual.check_id, actual.name, actual.notes):
        return False
    if actual_type and actual_type != desired.kind:
        return False
    for name in ("http", "tcp"):
        if getattr(actual, name) is not None and getattr(actual, name) != getattr(desired, name):
            return False
    for name in ("interval", "timeout", "ttl"):
        got = go_duration_seconds(getattr(actual, name))
        if got is not None and got != go_duration_seconds(getattr(desired, name)):
            return False
    return True


@dataclass(frozen=True, slots=True)
class OwnedService:
    """One of our registrations as an agent holds it, with its checks' live state."""

    registration: Registration
    check_types: Mapping[str, str]  # check id -> "http" | "tcp" | "ttl" | ...
    check_status: Mapping[str, str]  # check id -> passing | warning | critical

    def matches(self, desired: Registration) -> bool:
        actual = self.registration
        if (actual.service_id, actual.name, actual.tags, actual.address, actual.port, actual.meta) != (
            desired.service_id, desired.name, desired.tags, desired.address, desired.port, desired.meta
        ):
            return False
        if len(actual.checks) != len(desired.checks):
            return False
        by_id = {c.check_id: c for c in actual.checks}
        return all(
            c.check_id in by_id and same_check(c, by_id[c.check_id], self.check_types.get(c.check_id, ""))
            for c in desired.checks
        )
