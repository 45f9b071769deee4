"""Give the heap a resync freed back to the operating system (glibc's `malloc_trim`).

A resync parses everything at once: Marathon's apps with their tasks (tens of MB of JSON at
100,000 tasks), every agent's registrations, every slave's containers. Python frees those objects
when the resync ends, but glibc keeps the freed pages of its heap for later allocations, so the
process's RSS stays at the resync's peak while it idles until the next one. `malloc_trim(0)`
returns the free pages (also in the middle of the heap, glibc >= 2.8). Where there is no glibc
(musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Return free heap pages to the OS; True if any were."""
    return bool(_TRIM(0)) if _TRIM is not None else False
