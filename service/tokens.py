"""Tokens from files, re-read when the file changes: rotation without a restart.

Why files: orchestrators hand secrets over as files (a Vault agent's sink, a Kubernetes or DC/OS
secret volume) and rotate them by replacing the file, often by swapping a symlink. Why polled and
not pushed: a caller asks `TokenFile()` for the token at every request, and the file is looked at
(one `stat`) at most once per `min_interval`, so a rotation takes effect within that interval on
the next request, with no watcher task to start and stop; `(inode, mtime, size)` changes whenever
the file (or the symlink's target) is replaced or rewritten.

A file that becomes unreadable or empty keeps the last good token (logged once, without the token):
a half-written file during a rotation must not log the registrar out. Every value read is registered
with `service.redact`, so the new token is as hidden in logs as the first.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from service.redact import register

log = logging.getLogger(__name__)

TokenSource = Callable[[], "str | None"]


class TokenFileError(Exception):
    """The token file cannot be read, or is empty, at start."""


def read_token(path: str) -> str:
    """The token in `path` (surrounding whitespace stripped, as Consul's CLI does)."""
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"cannot read {path!r}: {exc.strerror if isinstance(exc, OSError) else exc}") from None
    if not token:
        raise TokenFileError(f"{path!r} is empty")
    return token


class TokenFile:
    """The token in a file, as of at most `min_interval` seconds ago. `what` names it in logs."""

    def __init__(self, path: str, *, what: str, min_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.what = what
        self._min_interval = min_interval
        self._clock = clock
        self._stamp = self._stat()
        self._value = read_token(path)
        register([self._value])
        self._checked = clock()
        self._complaint: str | None = None  # the last problem logged, so it is logged once
        self.rotations = 0

    def __call__(self) -> str:
        now = self._clock()
        if now - self._checked >= self._min_interval:
            self._checked = now
            self._refresh()
        return self._value

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _refresh(self) -> None:
        stamp = self._stat()
        if stamp is not None and stamp == self._stamp:
            return
        try:
            value = read_token(self.path)
        except TokenFileError as exc:
            self._complain(f"{self.what}: token file {exc}; keeping the last token")
            return
        self._stamp = stamp
        self._complaint = None
        if value != self._value:
            register([value])
            self._value = value
            self.rotations += 1
            log.info("%s: token file %s changed; using the new token", self.what, self.path)

    def _complain(self, message: str) -> None:
        if message != self._complaint:
            self._complaint = message
            log.warning("%s", message)


def static(token: str | None) -> TokenSource:
    """A token that never changes (given on the command line or in the env)."""
    return lambda: token
