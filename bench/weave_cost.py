"""What the Weave lookups of a proxied container cost on a real engine (issue 12, docs/weave.md).

    python -m bench.weave_cost [--docker unix:///var/lib/devcluster/s1.sock] [-n 40]

Creates ONE container of its own on the engine, made as Weave's proxy makes one (entrypoint `/w/w`,
the `/w` bind, `WEAVE_CIDR`; reference/weave.md §1.4, §8), "attaches" it as `weave attach` does
(the /etc/hosts block, an `ethwe` with 10.32.9.9/12, through an exec with NET_ADMIN), times each
lookup step `-n` times with the registrar's own code, prints medians and p95s, and removes it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import docker

from devcluster.docker_sim.templates import weave_hosts
from service.docker.engine import DockerEngines
from service.docker.weave_proxy import WeaveCache, WeaveProxy
from service.metrics import Metrics
from service.model import DEFAULT_OVERLAY_CIDRS

IMAGE = "local/busybox:1"
WEAVE_IP = "10.32.9.9"


def make_container(client: docker.DockerClient, wdir: Path) -> Any:
    (wdir / "w").write_text('#!/bin/sh\nexec "$@"\n')
    (wdir / "w").chmod(0o755)
    name = f"mesos-{uuid.uuid4()}"
    c = client.containers.run(IMAGE, ["/bin/sleep", "3600"], entrypoint=["/w/w"], name=name, detach=True,
                              environment={"WEAVE_CIDR": "net:default", "MESOS_TASK_ID": "weave_cost.1"},
                              volumes={str(wdir): {"bind": "/w", "mode": "ro"}}, cap_add=["NET_ADMIN"])
    script = ('printf "%s" "$B" > /etc/hosts && ip link add ethwe type veth peer name ethwepeer && '
              f"ip addr add {WEAVE_IP}/12 dev ethwe && ip link set ethwe up")
    code, out = c.exec_run(["sh", "-c", script], environment={"B": weave_hosts([WEAVE_IP], f"{name}.weave.local")})
    if code != 0:
        raise SystemExit(f"attach failed: {out!r}")
    return c


async def measure(url: str, cid: str, n: int) -> list[tuple[str, float, float, Any]]:
    metrics = Metrics()
    docker_engines = DockerEngines(metrics=metrics, timeout=5.0, tls=None)
    weave = WeaveProxy(docker_engines, metrics=metrics, overlay_cidrs=DEFAULT_OVERLAY_CIDRS, weave_exec=True)
    cache = WeaveCache()
    e = docker_engines.open("slave", url)
    prefix = await docker_engines.prefix(e)
    archive = f"{prefix}/containers/{cid}/archive?path=/etc/hosts"
    info = await docker_engines.get(e, "inspect", f"{prefix}/containers/{cid}/json")
    started = info["State"]["StartedAt"]
    steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("inspect", lambda: docker_engines.get(e, "inspect", f"{prefix}/containers/{cid}/json")),
        ("HEAD archive (stat only)",
         lambda: docker_engines.request(e, "archive-stat", archive, method="HEAD", json_body=False)),
        ("(2) /etc/hosts: HEAD + GET archive + parse", lambda: weave.hosts_block_ips(e, prefix, cid, started)),
        ("(3) exec: create + start + inspect", lambda: weave.exec_ethwe(cache, e, prefix, cid)),
        ("lookup, attached: inspect + (2)", lambda: weave.lookup(cache, e, prefix, cid)),
        # a file not newer than StartedAt is Docker's own: what a just-started container's retries cost
        ("(2) while not attached: HEAD only", lambda: weave.hosts_block_ips(e, prefix, cid, "2999-01-01T00:00:00Z")),
    ]
    out = []
    try:
        for label, step in steps:
            await step()  # warm the connection
            times, result = [], None
            for _ in range(n):
                t0 = time.perf_counter()
                result = await step()
                times.append((time.perf_counter() - t0) * 1000)
            out.append((label, statistics.median(times), statistics.quantiles(times, n=20)[18], result))
    finally:
        await e.session.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.weave_cost", description=__doc__)
    ap.add_argument("--docker", default="unix:///var/lib/devcluster/s1.sock", help="the engine (default slave 1)")
    ap.add_argument("--url", default="tcp://127.0.0.2:2375", help="where the registrar reaches it")
    ap.add_argument("-n", type=int, default=40)
    args = ap.parse_args()
    client = docker.DockerClient(base_url=args.docker)
    with tempfile.TemporaryDirectory(prefix="weave-w-") as tmp:
        c = make_container(client, Path(tmp))
        try:
            rows = asyncio.run(measure(args.url, c.id, args.n))
        finally:
            c.remove(force=True)
            client.close()
    for label, median, p95, result in rows:
        shown = getattr(result, "ips", result if isinstance(result, tuple) and "HEAD" not in label[:4] else "")
        print(f"{label:44s} median {median:6.2f} ms   p95 {p95:6.2f} ms   n={args.n}   {shown}")


if __name__ == "__main__":
    main()
