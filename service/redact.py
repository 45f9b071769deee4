"""Keep secrets out of everything the registrar says: logs, error messages, `--help`, endpoints.

Why at the output and not only at the source: a secret reaches text in ways no call site controls
(an aiohttp exception quoting a URL, a traceback's repr of a header dict, a py-consul error echoing
a request). So every output path runs through `redact()`: the log formatter (`RedactingFormatter`,
which also covers tracebacks, since it redacts the whole formatted record), the HTTP endpoints (a
middleware in `service.runtime.face`), configuration errors and `--help` defaults (`service.cli`,
`service.config`).

`redact()` removes two kinds of things:
- every value registered in `SECRETS` (the Consul and Marathon tokens, basic-auth passwords and
  the `Authorization` header values built from them), wherever it appears. Token files register
  each value they read, so a rotated token is as hidden as the first one. Values shorter than
  `MIN_SECRET` are not registered: replacing every "ab" in the logs would make them unreadable, and
  such a value protects nothing;
- by shape, secrets never registered: `user:password@` in URLs, `token=`/`password=`/`secret=`
  query parameters, and `X-Consul-Token`/`Authorization` header values in reprs.

The test of the promise is an end-to-end scan (tests/e2e/test_secrets_e2e.py) of every log line and
endpoint of a real registrar process for the secrets it was given.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

MASK = "***"
MIN_SECRET = 4

_URL_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@'\"<>]*):[^/\s@'\"<>]*@")
_QUERY_SECRET = re.compile(r"(?i)(?P<head>\b(?:token|password|passwd|secret)=)[^&\s'\"<>]+")
_HEADER_SECRET = re.compile(
    r"(?i)(?P<head>\b(?:x-consul-token|authorization)['\"]?\s*[:=]\s*['\"]?)[^'\"\r\n,}]+")


class Secrets:
    """The secret values this process knows; thread-safe (logging may run in other threads)."""

    def __init__(self) -> None:
        self._values: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, *values: str | None) -> None:
        """Register values (None and short ones are ignored); idempotent."""
        new = {v for v in values if v and len(v) >= MIN_SECRET} - self._values
        if not new:
            return
        with self._lock:
            self._values = self._values | new
            # longest first, so a secret containing another is masked whole
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def redact(self, text: str) -> str:
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(MASK, text)
        text = _URL_USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
        text = _QUERY_SECRET.sub(lambda m: f"{m['head']}{MASK}", text)
        return _HEADER_SECRET.sub(lambda m: f"{m['head']}{MASK}", text)


SECRETS = Secrets()  # one per process: the log formatter and every output path share it


def redact(text: str) -> str:
    """`text` without any known secret or secret-shaped substring."""
    return SECRETS.redact(text)


def register(values: Iterable[str | None]) -> None:
    SECRETS.add(*values)


class RedactingFormatter(logging.Formatter):
    """A formatter whose whole output (message, arguments, traceback) is redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def install(level: str) -> None:
    """The process's logging: stderr, one line per record (plus tracebacks), always redacted."""
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
