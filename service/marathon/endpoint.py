"""What a Marathon call is addressed to and what its failure says: one master (`Endpoint`, with its
credentials kept out of every repr and log), `MarathonError` (a call failed for good, with the
status and the start of the body, where Marathon explains itself), and `Transient` (an attempt
failed in a way worth retrying on the next master; the client's own, never raised to callers)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from service.errors import CallError, Classified

_BODY_IN_ERROR = 500  # characters of a response body kept in MarathonError


class MarathonError(CallError):
    """A Marathon call failed for good: a non-retryable answer, or retries exhausted.

    `status` is the HTTP status (None when no master answered at all); `body` the start of the
    response body, which is where Marathon explains itself (e.g. the 400 "http event callback
    system is not running" of a Marathon without callbacks).
    """

    def __init__(self, method: str, url: str, status: int | None, body: str = "", reason: str = "",
                 classified: Classified | None = None) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.body = body[:_BODY_IN_ERROR]
        self.reason = reason
        what = f"HTTP {status}" if status is not None else "no answer"
        why = f" ({reason})" if reason else ""
        said = f": {self.body}" if self.body else ""
        super().__init__(f"Marathon {method} {url} -> {what}{why}{said}", classified)


class Transient(Exception):
    """An attempt failed in a way worth retrying on the next endpoint (internal)."""

    def __init__(self, endpoint_index: int, status: int | None, body: str, reason: str,
                 classified: Classified) -> None:
        super().__init__(reason)
        self.classified = classified
        self.endpoint_index = endpoint_index
        self.status = status
        self.body = body
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One Marathon master: its base URL without credentials, and the credentials apart.

    The credentials are kept as a ready `Authorization` value, excluded from `repr`, so that
    logging an endpoint (or a structure holding one) never prints the password.
    """

    base: URL
    authorization: str | None = field(default=None, repr=False)
    # DC/OS-style `Authorization: token=<t>` (--marathon-token-file), asked at every request so a
    # rotated file takes effect without a restart; it replaces basic auth when both are given
    token: Callable[[], str | None] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        u = URL(url.strip())
        if not u.scheme or not u.host:
            raise ValueError(f"not an absolute Marathon URL: {url.rsplit('@', 1)[-1]}")
        authorization = None
        if u.user is not None:
            authorization = aiohttp.encode_basic_auth(u.user, u.password or "")
        return cls(base=u.with_user(None).with_query(None).with_fragment(None), authorization=authorization)

    @property
    def headers(self) -> dict[str, str]:
        """Headers every request to this master carries (only credentials, today)."""
        token = self.token() if self.token is not None else None
        if token:
            return {"Authorization": f"token={token}"}
        return {"Authorization": self.authorization} if self.authorization else {}

    @property
    def display(self) -> str:
        """The URL as logs show it: never the password."""
        return str(self.base)

    @property
    def host_port(self) -> tuple[str, int | None]:
        return ((self.base.host or "").lower(), self.base.port)

    def url(self, path: str) -> URL:
        """`path` (starting with /) under the base URL, keeping a base path (Marathon behind a proxy)."""
        return self.base.with_path(self.base.path.rstrip("/") + path)


def app_path(app_id: str) -> str:
    """`/web/customer1/site1` -> `/web/customer1/site1`, tolerant of a missing leading slash."""
    return "/" + app_id.strip("/")
