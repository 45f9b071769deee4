"""The one rule for Marathon's redirects, shared by the REST client and the event stream.

A standby sends a client to the leader: 1.7+ answers `/v2/events` with 302 to the leader's
`/v2/events` (marathon.md §2.1), and a proxy in front of a master may redirect any call. Both are
followed by hand, because aiohttp drops the credentials on a redirect to another host, while the
leader wants the same ones as the standby that sent us there.

- **Credentials go along only when the scheme is kept or raised.** A redirect from https to http
  would put a password (or a DC/OS token) on the wire in clear: it is followed without them (the
  target then refuses, and that refusal is logged once by the error contract). To a master named
  in `--marathon`, its own credentials go; to a host not named there (a leader known to its peers
  by another name), the credentials of the master that sent the redirect.
- **At most `MAX_REDIRECTS` hops**, for REST and the stream alike: a standby to the leader is one;
  more is a loop or a misconfigured proxy, a REPORT.
- A Location that is not http(s) is not followed (`RedirectError`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from yarl import URL

log = logging.getLogger(__name__)

REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 3
_RANK = {"http": 0, "https": 1}


class RedirectError(ValueError):
    """A redirect that cannot be followed (its Location is not an http(s) URL)."""


class Master(Protocol):
    """What the rule needs of a configured master (`client.Endpoint`)."""

    @property
    def host_port(self) -> tuple[str, int | None]: ...

    @property
    def headers(self) -> dict[str, str]: ...


def is_redirect(status: int, location: str | None) -> bool:
    return status in REDIRECTS and bool(location)


def follow(url: URL, location: str, *, sender: Master, masters: Sequence[Master]) -> tuple[URL, dict[str, str]]:
    """Where the redirect from `url` to `location` leads, and the headers (credentials) to send
    there. `sender` is the configured master the request chain started from."""
    target = url.join(URL(location))
    if target.scheme not in _RANK or not target.host:
        raise RedirectError(f"redirect from {url.with_query(None)} to a {target.scheme or 'relative'}: URL, "
                            "not http(s): not followed")
    if _RANK[target.scheme] < _RANK.get(url.scheme, 0):
        log.warning("Marathon %s redirects to %s (https to http): followed without credentials",
                    url.with_query(None), target.with_query(None))
        return target, {}
    host_port = ((target.host or "").lower(), target.port)
    named = next((m for m in masters if m.host_port == host_port), sender)
    return target, named.headers
