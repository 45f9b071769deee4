"""Runs the agents' health checks the way a Consul agent does (reference §2).

One asyncio task per check. HTTP: `Method` (default GET) to the URL with User-Agent
`Consul Health Check`; 2xx passing, 429 warning, anything else or an error critical; Output
`HTTP GET <url>: 200 OK Output: <body>`. TCP: connect; `TCP connect <addr>: Success` or the dial
error. TTL: critical with `TTL expired` unless updated within the TTL. Intervals below 1 s are
clamped to 1 s; timeouts default to 10 s. `SuccessBeforePassing` / `FailuresBeforeWarning` /
`FailuresBeforeCritical` gate status flips like Consul's StatusHandler.

First run: Consul waits a random stagger within the interval before the first run. Here the stagger
is random within min(interval, 1 s), so a check with a short interval has a result within about a
second of registration — what users of a real agent see — and long intervals do not delay tests.

Other check kinds (gRPC, UDP, H2PING, alias, docker, OS service) are stored but not executed:
they stay at their initial status. Re-registering a check restarts its runner (as Consul does),
keeping the status.

Reaper: every `reap_interval` (Consul: 30 s), a service whose check has been critical longer than
its `DeregisterCriticalServiceAfter` (raised to at least `deregister_min`, Consul: 1 min) is
deregistered with all its checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import socket
import time

import aiohttp

from devcluster.consul_sim.state import Agent, CheckState, State

log = logging.getLogger("consul_sim.checks")

MIN_INTERVAL = 1.0
DEFAULT_TIMEOUT = 10.0
DEFAULT_OUTPUT_MAX = 4096


class CheckRunner:
    """Executes checks of every agent; registered as the state's `runner` hook."""

    def __init__(self, state: State, *, reap_interval: float = 30.0, deregister_min: float = 60.0) -> None:
        self.state = state
        self.reap_interval = reap_interval
        self.deregister_min = deregister_min
        self.tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.ttl_deadline: dict[tuple[str, str], float] = {}
        self._session: aiohttp.ClientSession | None = None
        self._reaper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.state.runner = self
        self._reaper = asyncio.create_task(self._reap_loop())

    async def close(self) -> None:
        for t in [*self.tasks.values(), *([self._reaper] if self._reaper else [])]:
            t.cancel()
        self.tasks.clear()
        if self._session is not None:
            await self._session.close()

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True, limit=0, ssl=False))
        return self._session

    # ---- hook ---------------------------------------------------------------------------------

    def check_started(self, agent: Agent, check: CheckState) -> None:
        key = (agent.addr, check.check_id)
        self.check_stopped(agent, check.check_id)
        kind = check.spec.kind
        if kind == "ttl":
            self.ttl_deadline[key] = time.monotonic() + check.spec.ttl / 1e9
            self.tasks[key] = asyncio.create_task(self._ttl_loop(agent, check))
        elif kind in ("http", "tcp"):
            self.tasks[key] = asyncio.create_task(self._interval_loop(agent, check))

    def check_stopped(self, agent: Agent, check_id: str) -> None:
        key = (agent.addr, check_id)
        task = self.tasks.pop(key, None)
        if task is not None:
            task.cancel()
        self.ttl_deadline.pop(key, None)

    def ttl_reset(self, agent: Agent, check_id: str) -> None:
        key = (agent.addr, check_id)
        chk = agent.checks.get(check_id)
        if key in self.ttl_deadline and chk is not None:
            self.ttl_deadline[key] = time.monotonic() + chk.spec.ttl / 1e9

    # ---- loops --------------------------------------------------------------------------------

    async def _ttl_loop(self, agent: Agent, check: CheckState) -> None:
        key = (agent.addr, check.check_id)
        while True:
            delay = self.ttl_deadline[key] - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            if agent.checks.get(check.check_id) is not check:
                return
            out = "TTL expired"
            if check.output and not check.output.startswith("TTL expired"):
                out = f"TTL expired (last output before timeout follows): {check.output}"
            if check.status != "critical":
                log.warning("Check missed TTL, is now critical check=%s", check.check_id)
            self.state.set_check_status(agent, check.check_id, "critical", out)
            self.ttl_deadline[key] = time.monotonic() + check.spec.ttl / 1e9

    async def _interval_loop(self, agent: Agent, check: CheckState) -> None:
        spec = check.spec
        interval = spec.interval / 1e9
        if interval < MIN_INTERVAL:
            log.warning("check has interval below minimum check=%s minimum_interval=1s", check.check_id)
            interval = MIN_INTERVAL
        timeout = spec.timeout / 1e9 if spec.timeout > 0 else DEFAULT_TIMEOUT
        successes = failures = 0
        await asyncio.sleep(random.uniform(0, min(interval, 1.0)))
        while agent.checks.get(check.check_id) is check:
            if spec.kind == "http":
                status, output = await self._http(check, timeout)
            else:
                status, output = await self._tcp(spec.tcp, timeout)
            limit = spec.output_max_size or DEFAULT_OUTPUT_MAX
            output = output[:limit]
            # StatusHandler: consecutive results needed before a flip
            if status in ("passing", "warning"):
                successes, failures = successes + 1, 0
                if successes >= spec.success_before_passing:
                    self.state.set_check_status(agent, check.check_id, status, output)
            else:
                successes, failures = 0, failures + 1
                warn_after = spec.failures_before_warning or spec.failures_before_critical
                if failures >= spec.failures_before_critical:
                    self.state.set_check_status(agent, check.check_id, "critical", output)
                elif failures >= warn_after:
                    self.state.set_check_status(agent, check.check_id, "warning", output)
            await asyncio.sleep(interval)

    async def _http(self, check: CheckState, limit_s: float) -> tuple[str, str]:
        spec = check.spec
        method = spec.method or "GET"
        headers: dict[str, str] = {"User-Agent": "Consul Health Check", "Accept": "text/plain, text/*, */*"}
        for k, vals in spec.header.items():
            if vals:
                headers[k] = vals[0]
        try:
            async with self.session().request(
                method, spec.http, headers=headers, data=spec.body or None,
                allow_redirects=not spec.disable_redirects, max_redirects=10,
                timeout=aiohttp.ClientTimeout(total=limit_s),
            ) as resp:
                body = (await resp.content.read(spec.output_max_size or DEFAULT_OUTPUT_MAX)).decode(
                    "utf-8", errors="replace")
                out = f"HTTP {method} {spec.http}: {resp.status} {resp.reason} Output: {body}"
                if 200 <= resp.status < 300:
                    return "passing", out
                if resp.status == 429:
                    return "warning", out
                return "critical", out
        except TimeoutError:
            return "critical", (f'{method.capitalize()} "{spec.http}": context deadline exceeded '
                                "(Client.Timeout exceeded while awaiting headers)")
        except aiohttp.ClientConnectorError as e:
            host = f"{e.host}:{e.port}"
            return "critical", f'{method.capitalize()} "{spec.http}": dial tcp {host}: {_dial_reason(e)}'
        except (aiohttp.ClientError, ValueError) as e:
            return "critical", f'{method.capitalize()} "{spec.http}": {e}'

    async def _tcp(self, addr: str, limit_s: float) -> tuple[str, str]:
        host, _, port = addr.rpartition(":")
        host = host.strip("[]")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), limit_s)
        except TimeoutError:
            return "critical", f"dial tcp {addr}: i/o timeout"
        except (OSError, ValueError) as e:
            return "critical", f"dial tcp {addr}: {_dial_reason(e)}"
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return "passing", f"TCP connect {addr}: Success"

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(self.reap_interval)
            self.reap()

    def reap(self) -> None:
        now = time.monotonic()
        for agent in list(self.state.agents.values()):
            for chk in list(agent.checks.values()):
                after = chk.spec.deregister_critical_service_after / 1e9
                if after <= 0 or chk.status != "critical" or chk.critical_since is None or not chk.service_id:
                    continue
                if now - chk.critical_since > max(after, self.deregister_min):
                    if chk.service_id in agent.services:
                        log.info("deregistered service with critical health due to exceeding health "
                                 "check's 'deregister_critical_service_after' timeout service=%s check=%s",
                                 chk.service_id, chk.check_id)
                        self.state.deregister_service(agent, chk.service_id)


def _dial_reason(e: BaseException) -> str:
    """Go's dial error wording for the common errnos (`connect: connection refused`, ...)."""
    err = getattr(e, "os_error", None) or e
    code = getattr(err, "errno", None)
    if code == errno.ECONNREFUSED:
        return "connect: connection refused"
    if code == errno.ENETUNREACH:
        return "connect: network is unreachable"
    if code == errno.EHOSTUNREACH:
        return "connect: no route to host"
    if isinstance(err, socket.gaierror):
        return f"lookup: {err.strerror}"
    return str(err)
