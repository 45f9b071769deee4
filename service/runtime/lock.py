"""The cluster's Consul lock as `serve` and `sync` both take it: one key per cluster identity, the
session through `--lock-agent`, the same write gate (docs/architecture.md §3.1). Built here once,
so that a one-shot `sync` cannot drift from what a serving instance contends for."""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable

from service import version
from service.config import Config, LockMode
from service.consul.lock import ConsulLockClient
from service.leadership import Leadership, LockSettings, alive_check, holder_value, lock_key
from service.runtime.parts import Outside


def lock_for(config: Config, outside: Outside, *, cluster_id: str, serving: bool,
             on_acquired: Callable[[], Awaitable[None]] | None = None,
             on_lost: Callable[[str], Awaitable[None]] | None = None,
             on_standby: Callable[[], None] | None = None) -> tuple[Leadership, ConsulLockClient] | None:
    """The lock's loop and its client, or None with `--lock off`.

    `serving`: this process listens (`serve`). Only then is its session bound to a check of its
    /health, and only then does the key's value carry its listen port: a holder with the same
    host and port is taken for an earlier run of this very instance (`Leadership._is_predecessor`),
    which is true of a process that holds that port now and false of a `sync` started beside it.
    A `sync` holds no port and blocks at most a second per read of the key, so it leaves in time."""
    if config.lock is LockMode.OFF:
        return None
    host = os.environ.get("HOST")
    alive = None
    if serving and config.lock_check_interval > 0:  # the session is also bound to a check of our /health
        alive = alive_check(cluster_id=cluster_id, listen_host=config.listen_host, listen_port=config.listen_port,
                            https=bool(config.listen_tls_cert), interval_seconds=config.lock_check_interval,
                            host=host)
    settings = LockSettings(key=lock_key(cluster_id), ttl_seconds=config.lock_ttl,
                            lock_delay_seconds=config.lock_delay, alive=alive,
                            **({} if serving else {"watch_wait_seconds": 1.0}))
    client = ConsulLockClient(config.lock_agent, token=outside.consul_token, wait_seconds=settings.watch_wait_seconds,
                              tls=config.consul_tls, metrics=outside.metrics, cooldowns=outside.consul_cooldowns,
                              stop=outside.stop)
    value = holder_value(host=host or socket.gethostname(), port=config.listen_port if serving else 0,
                         version=version())
    leadership = Leadership(client, settings, value=value, on_acquired=on_acquired, on_lost=on_lost,
                            optional=config.lock is LockMode.AUTO, on_standby=on_standby, stop=outside.stop)
    return leadership, client
