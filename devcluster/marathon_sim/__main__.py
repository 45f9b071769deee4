"""`python -m devcluster.marathon_sim`: run the Marathon simulator.

    python -m devcluster.marathon_sim --listen 127.0.0.1:8080 --marathon-version 1.10 \\
        --slave 127.0.0.2=unix:///var/lib/devcluster/s1.sock:bridge \\
        --slave 127.0.0.3=unix:///var/lib/devcluster/s2.sock:weave

Logs go to stderr. SIGTERM/SIGINT: remove every container this process launched, then exit.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
import os
import signal
import ssl
import sys
import threading
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from devcluster.marathon_sim.bus import EventBus
from devcluster.marathon_sim.callbacks import CallbackDispatcher
from devcluster.marathon_sim.config import SimConfig, SlaveConfig, parse_version
from devcluster.marathon_sim.dockersim_launcher import make_slave_docker
from devcluster.marathon_sim.http_api import Api
from devcluster.marathon_sim.launcher import SIM_LABEL
from devcluster.marathon_sim.scheduler import Scheduler
from devcluster.marathon_sim.sse import EventStreams
from devcluster.marathon_sim.state import Registry

log = logging.getLogger("marathon_sim")


def parse_args(argv: list[str] | None = None) -> SimConfig:
    p = argparse.ArgumentParser(prog="python -m devcluster.marathon_sim", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT of the REST API (default %(default)s)")
    p.add_argument("--marathon-version", default="1.10", help="1.4 .. 1.10 (default %(default)s)")
    p.add_argument("--slave", action="append", default=[], metavar="HOST=DOCKER_URL:OVERLAY_NETWORK",
                   help="a Mesos slave: its host, its Docker engine, its overlay's Docker network (repeat)")
    p.add_argument("--heartbeat-interval", type=float, default=10.0,
                   help="SSE heartbeat period in seconds (Jetty's default %(default)s)")
    p.add_argument("--standby-of", metavar="URL", help="run as a standby of the leader at URL")
    p.add_argument("--event-subscriber", choices=["http_callback"],
                   help="accepted for symmetry with Marathon; callbacks are always on in 1.4 mode")
    p.add_argument("--http-endpoints", default="", help="comma-separated callback URLs subscribed at start (1.4)")
    p.add_argument("--http-event-request-timeout", type=float, default=10.0,
                   help="callback request timeout in seconds (Marathon's http_event_request_timeout, 10 s)")
    p.add_argument("--http-event-callback-slow-consumer-timeout", type=float, default=10.0,
                   help="a 2xx callback answer slower than this counts as a failure (default 10 s)")
    p.add_argument("--default-network-name", default="weave",
                   help="network of container/USER apps that name none (default %(default)s)")
    p.add_argument("--strict-deployment-lock", action="store_true",
                   help="409 for a change to an app under deployment unless ?force=true (real Marathon); "
                        "default: every change supersedes the running deployment")
    p.add_argument("--tls-cert", help="serve HTTPS with this certificate (with --tls-key)")
    p.add_argument("--tls-key")
    p.add_argument("--http-credentials", metavar="USER:PASSWORD",
                   help="require HTTP basic auth, as Marathon's --http_credentials (not on /_sim/)")
    p.add_argument("--extra-host", action="append", default=[], metavar="NAME:IP",
                   help="a name every task container resolves to IP (repeat): stands in for the slaves' "
                        "resolver, e.g. marathon.service.consul:127.0.0.1 where a cluster has Consul DNS")
    p.add_argument("--log-level", default="INFO")
    a = p.parse_args(argv)
    if bool(a.tls_cert) != bool(a.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if a.http_credentials is not None and ":" not in a.http_credentials:
        p.error("--http-credentials: want USER:PASSWORD")
    try:
        version = parse_version(a.marathon_version)
        slaves = tuple(SlaveConfig.parse(s) for s in a.slave)
    except ValueError as exc:
        p.error(str(exc))
    host, _, port = a.listen.rpartition(":")
    if any(not n or not ip for n, _, ip in (e.partition(":") for e in a.extra_host)):
        p.error("--extra-host must be NAME:IP")
    if a.event_subscriber and version >= (1, 5):
        p.error("--event-subscriber does not exist from Marathon 1.5 on")
    if a.http_endpoints and version >= (1, 5):
        p.error("--http-endpoints does not exist from Marathon 1.5 on")
    logging.basicConfig(level=a.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return SimConfig(version=version, listen_host=host or "127.0.0.1", listen_port=int(port), slaves=slaves,
                     heartbeat_interval=a.heartbeat_interval, standby_of=a.standby_of,
                     http_endpoints=tuple(u for u in a.http_endpoints.split(",") if u),
                     http_event_request_timeout=a.http_event_request_timeout,
                     http_event_callback_slow_consumer_timeout=a.http_event_callback_slow_consumer_timeout,
                     default_network_name=a.default_network_name or None,
                     strict_deployment_lock=a.strict_deployment_lock, tls_cert=a.tls_cert, tls_key=a.tls_key,
                     http_credentials=a.http_credentials,
                     extra_hosts=tuple(a.extra_host))


def basic_auth(credentials: str) -> Middleware:
    """Marathon's --http_credentials: 401 with a Basic challenge unless the request carries them.
    The simulator's own /_sim/ control paths stay open, so a test can still inject faults."""
    user, _, password = credentials.partition(":")
    expected = aiohttp.encode_basic_auth(user, password).encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/_sim/") and not hmac.compare_digest(
                request.headers.get("Authorization", "").encode(), expected):
            return web.json_response({"message": "Invalid username or password."}, status=401,
                                     headers={"WWW-Authenticate": 'Basic realm="Mesosphere Marathon"'})
        return await handler(request)

    return middleware


async def serve(cfg: SimConfig) -> None:
    loop = asyncio.get_running_loop()
    bus = EventBus()
    registry = Registry(cfg)
    dockers: dict[str, Any] = {}  # SlaveDocker or, for dockersim+ URLs, SimSlaveDocker
    if not cfg.standby_of:
        for slave in cfg.slaves:
            d = make_slave_docker(slave)
            try:
                await asyncio.to_thread(d.ping)
            except Exception as exc:
                raise SystemExit(f"marathon_sim: slave {slave.host} Docker at {slave.docker_url} is not "
                                 f"reachable ({exc}); start the slaves (bash devcluster/slaves-up.sh)") from exc
            dockers[slave.host] = d
    scheduler = Scheduler(cfg, registry, bus, dockers)
    streams = EventStreams(cfg, bus)
    callbacks = None
    if cfg.callbacks:
        callbacks = CallbackDispatcher(cfg)
        for url in cfg.http_endpoints:
            callbacks.subscribe(url)
        bus.attach(callbacks)
        log.warning("HttpCallbackEventSubscriber support is deprecated with Marathon 1.4")
    api = Api(cfg, registry, scheduler, streams, callbacks)
    watchers = []
    for host, d in dockers.items():
        def on_die(cid: str, attrs: dict[str, str], host: str = host) -> None:
            loop.call_soon_threadsafe(scheduler.on_container_died, host, cid, attrs)
            loop.call_soon_threadsafe(api.pods.on_container_died, host, cid, attrs)
        t = threading.Thread(target=d.watch_deaths, args=(on_die,), daemon=True, name=f"docker-events-{host}")
        t.start()
        watchers.append(t)

    app = api.build()
    if cfg.http_credentials:
        app.middlewares.insert(0, basic_auth(cfg.http_credentials))
    tls = None
    if cfg.tls_cert and cfg.tls_key:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, cfg.listen_host, cfg.listen_port, reuse_address=True, ssl_context=tls)
    await site.start()
    log.info("Marathon %s simulator on %s://%s (%s), slaves: %s", cfg.version_string, "https" if tls else "http",
             cfg.listen,
             "standby of " + cfg.standby_of if cfg.standby_of else "leader",
             ", ".join(f"{s.host}={s.docker_url}:{s.overlay_network}" for s in cfg.slaves) or "none")

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: removing the containers this process launched")
    streams.drop_all()
    await api.pods.shutdown()
    await scheduler.shutdown()
    for d in dockers.values():
        d.stop_watching()
    if callbacks is not None:
        await callbacks.close()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    asyncio.run(serve(cfg))
    # last sweep, after every launch thread has finished: nothing labelled with our pid may survive
    if not cfg.standby_of:
        for slave in cfg.slaves:
            d = make_slave_docker(slave)
            for cid in d.containers_labelled(f"{SIM_LABEL}={os.getpid()}"):
                d.remove(cid)


if __name__ == "__main__":
    main()
