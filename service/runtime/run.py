"""`serve`: the stages of a start, in order, and a stop that ends every one of them in seconds.

Start: the HTTP face listens; the cluster identity is resolved (--cluster-id, else Marathon's
frameworkId); the core is built for it (lock, reconciler behind the lock's gate) and starts
contending; the event transport is picked and the source started (callbacks: subscribed); then
the resync loop runs until stop. Stop (SIGTERM/SIGINT): whatever stage is under way is cancelled,
calls in flight included; the lock is given back first (the standby takes over while we tidy up),
then the source is closed (callbacks: unsubscribed), then the HTTP face and the clients. Each step
is bounded so the whole stop fits in `STOP_BUDGET` seconds, below Marathon's and Docker's grace
periods, whatever is unreachable.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from service.config import Config, Transport
from service.redact import register
from service.retry import Stop, Stopped
from service.runtime.core import Core
from service.runtime.face import HttpFace
from service.runtime.parts import Outside, connect
from service.runtime.sources import Callbacks, EventSource, Stream, pick_transport, until_answered
from service.tokens import read_token
from service.web import Readiness

log = logging.getLogger("service")

STOP_BUDGET = 4.0  # seconds from the stop signal to the process's exit
RELEASE_GRACE = 2.0  # of it, for giving the lock back
UNSUBSCRIBE_GRACE = 1.0  # of it, for the callback unsubscription


async def identify(config: Config, outside: Outside, readiness: Readiness, stop: Stop) -> str:
    """This cluster's identity: --cluster-id, else Marathon's frameworkId (asked until it answers)."""
    cluster_id = config.cluster_id
    if cluster_id is None:
        cluster_id = await until_answered(outside.marathon.framework_id,
                                          "cannot read Marathon's frameworkId from /v2/info", readiness, stop)
    log.info("cluster identity: %s", cluster_id)
    return cluster_id


class Registrar:
    """One run of `serve`: the parts made so far, so that stop ends exactly those."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stop = Stop()
        secret = read_token(config.callback_secret_file) if config.callback_secret_file else None
        register([secret])
        self._callback_url = config.callback_url if secret is None or config.callback_url is None else \
            f"{config.callback_url.rstrip('/')}/{secret}"
        self.readiness = Readiness()
        self.outside = connect(config, self.stop)
        self.face = HttpFace(config, self.outside.metrics, self.readiness, secret)
        self.core: Core | None = None
        self.source: EventSource | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        try:
            await self.face.start()
            life = asyncio.create_task(self._live(), name="life")
            stopped = asyncio.create_task(self.stop.wait(), name="stop-signal")
            await asyncio.wait({life, stopped}, return_when=asyncio.FIRST_COMPLETED)
            log.info("stopping")
            self.stop.set()
            life.cancel()  # a call in flight (to a Marathon that never answers) ends here
            stopped.cancel()
            await asyncio.gather(life, stopped, return_exceptions=True)
            failed = None if life.cancelled() else life.exception()
            if failed is not None and not isinstance(failed, Stopped):
                raise failed
        finally:
            try:
                async with asyncio.timeout(STOP_BUDGET):
                    await self._close()
            except TimeoutError:
                log.warning("stop: not everything was closed within %.0fs; exiting anyway", STOP_BUDGET)

    async def _live(self) -> None:
        cluster_id = await identify(self.config, self.outside, self.readiness, self.stop)
        core = self.core = Core(self.config, self.outside, cluster_id=cluster_id, readiness=self.readiness)
        self.face.serve(core)
        core.start()
        transport = await pick_transport(self.config, self.outside, self.readiness, self.stop)
        log.info("event transport: %s", transport)
        if transport is Transport.CALLBACK:
            assert self._callback_url is not None
            self.source = Callbacks(self.outside, self._callback_url, self.readiness,
                                    remove_timeout=UNSUBSCRIBE_GRACE)
        else:
            self.source = Stream(self.outside, core.intake, self.readiness, core.resync_now)
        await self.source.start(self.stop)
        if transport is Transport.CALLBACK:
            core.resync_now()  # events that happened before are only visible in state
        await core.resync_loop(self.source, self.stop)

    async def _close(self) -> None:
        if self.core is not None:
            await self.core.release(RELEASE_GRACE)
        if self.source is not None:
            await self.source.close()
        await self.face.stop()
        if self.core is not None:
            await self.core.close()
        await self.outside.close()


async def serve(config: Config) -> None:
    await Registrar(config).run()

