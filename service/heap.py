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
import gc
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


# The cyclic collector's youngest generation is collected after this many allocations beyond
# deallocations (CPython's default is 700).
GEN0_THRESHOLD = 10_000


def tune_collector() -> None:
    """Make the cyclic garbage collector cheaper for a process that allocates fast and keeps little.

    Measured on a 5,000-event burst (python -m bench burst's world, gc.callbacks): the collector took
    ~0.5 of the registrar's ~3 CPU-s, about 540 young collections, 50 middle and 5 full ones, each full one
    walking every object the imports made (aiohttp, py-consul, prometheus: ~60,000). Almost everything the
    event path allocates (requests, tasks, futures, parsed JSON) is freed by reference counting within
    milliseconds, so a young collection every 700 net allocations mostly walks objects about to go anyway.
    Called once the modules are loaded: `gc.freeze()` moves what exists then (modules, classes, the
    configuration) out of every later collection, and the young generation is collected every
    `GEN0_THRESHOLD` allocations. Cyclic garbage waits a little longer (at most that many objects)."""
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
