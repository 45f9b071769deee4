"""Wiring for `serve` and `sync`: the parts built in order, the event source attached, resyncs run,
a clean stop at any stage (docs/architecture.md §3.2).

`run` orders the stages; `face` is the HTTP server; `sources` the event source (callbacks or SSE,
one interface) and the start-up reads of Marathon; `core` the lock, the reconcile core behind its
gate and the resync loop; `lock` the cluster's lock as serve and sync take it;
`parts` builds the clients; `sync` the one-shot resync.
"""

from service.runtime.run import serve
from service.runtime.sync import LockUnavailable, SyncStopped, sync_once

__all__ = ["LockUnavailable", "SyncStopped", "serve", "sync_once"]
