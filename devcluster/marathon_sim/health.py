"""Health checks that really probe the task, on the app's intervals.

Target: the task's host and the host port at `portIndex` (or `port`), because that is where
Marathon-level checks go for BRIDGE/HOST tasks; a container-network port without a host port is
probed on the container IP and container port instead. MESOS_HTTP/MESOS_TCP are probed the same way
(in Mesos they run from inside the task's network namespace; from this machine the host port is
the equivalent). COMMAND checks run `sh -c <value>` in the container with `docker exec`
(exit 0 = healthy), as Mesos' docker executor does.

Rules honoured: `gracePeriodSeconds` (failures before the first success inside the grace period are
ignored), `intervalSeconds`, `timeoutSeconds`, `maxConsecutiveFailures` (reported to the scheduler,
which kills: Marathon-level 0 = never kill; Mesos-level 0 = kill on the first failure). HTTP is
healthy for 200-399 (and 1xx with `ignoreHttp1xx`), TCP when a connection opens.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable

import aiohttp

from devcluster.marathon_sim.app_json import AppSpec, HealthCheck
from devcluster.marathon_sim.launcher import SlaveDocker
from devcluster.marathon_sim.state import HealthResult, Task

log = logging.getLogger("marathon_sim.health")

Report = Callable[[Task, HealthResult, bool, str | None], Awaitable[None]]


def target(task: Task, spec: AppSpec, check: HealthCheck) -> tuple[str, int] | None:
    if check.port is not None:
        return task.host, check.port
    index = check.port_index or 0
    if spec.container_networking and index < len(spec.port_mappings):
        mapping = spec.port_mappings[index]
        if mapping.host_port is None and task.ip_addresses:
            return task.ip_addresses[0]["ipAddress"], mapping.container_port
    if index < len(task.ports):
        return task.host, task.ports[index]
    return None


async def probe(task: Task, spec: AppSpec, check: HealthCheck, docker: SlaveDocker,
                session: aiohttp.ClientSession) -> str | None:
    """None when healthy, else the failure cause (what Marathon puts in lastFailureCause)."""
    timeout = check.timeout_seconds
    if check.protocol == "COMMAND":
        if not task.container_id:
            return "no container"
        try:
            code, out = await asyncio.wait_for(
                asyncio.to_thread(docker.exec, task.container_id, check.command or "true"), timeout)
        except TimeoutError:
            return f"Command timed out after {timeout} s"
        except Exception as exc:  # exec on a dying container: a failed check, not a crash
            return str(exc)
        return None if code == 0 else f"Command exited with status {code}: {out.strip()}"
    where = target(task, spec, check)
    if where is None:
        return "no port to check"
    host, port = where
    try:
        if check.protocol in {"TCP", "MESOS_TCP"}:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            writer.close()
            return None
        scheme = "https" if check.protocol in {"HTTPS", "MESOS_HTTPS"} else "http"
        url = f"{scheme}://{host}:{port}{check.path or '/'}"
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False,
                               ssl=insecure if scheme == "https" else True) as resp:
            if 200 <= resp.status < 400 or (check.ignore_http1xx and 100 <= resp.status < 200):
                return None
            return f"{resp.status} {resp.reason}"
    except TimeoutError:
        return f"Timed out after {timeout} s"
    except (aiohttp.ClientError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"


async def run_check(task: Task, spec: AppSpec, result: HealthResult, docker: SlaveDocker,
                    session: aiohttp.ClientSession, report: Report) -> None:
    """One check's loop for one task, until cancelled (kill, failure, app deletion)."""
    check = result.check
    started = time.monotonic()
    while task.active and not task.kill_requested:
        cause = await probe(task, spec, check, docker, session)
        in_grace = time.monotonic() - started < check.grace_period_seconds
        if cause is not None and in_grace and result.first_success is None:
            log.debug("%s: failure in grace period ignored: %s", task.task_id, cause)
        else:
            await report(task, result, cause is None, cause)
        await asyncio.sleep(check.interval_seconds)
