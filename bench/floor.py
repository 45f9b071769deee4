"""The floor: the naive least work for the same input, with plain aiohttp and no framework.

Per TASK_RUNNING event: one Docker lookup by label (`GET /v1.41/containers/json?filters=
{"label":["MESOS_TASK_ID=<id>"]}` on the task's slave) and one Consul register call on the task's
agent; per TASK_KILLED: one deregister. At most `--concurrency` tasks in flight (the registrar's
`--workers`). It re-reads nothing, coalesces nothing, retries nothing and owns nothing, so it is
what any registrar must at least pay; the bench reports the registrar's figures as ratios to it.

    python -m bench.floor serve --listen 127.0.0.1:P --consul 'http://{host}:8500' \
        --docker 'http://{host}:2375' --concurrency 16          (callback receiver, like the registrar)
    python -m bench.floor resync --marathon URL ...              (one pass over every running task,
                                                                  prints a JSON line and exits)

Service ids, names and Meta follow the registrar's (`mcr-<task id>-0`, first app-id segment as the
name, the ownership Meta), so Consul holds the same thing either way and the same log matches both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

NETWORKS = ("weave", "bridge")


class Floor:
    def __init__(self, consul: str, docker: str, concurrency: int) -> None:
        self.consul = consul
        self.docker = docker
        self.slots = asyncio.Semaphore(concurrency)
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                             timeout=aiohttp.ClientTimeout(total=30))
        self.done = 0
        self.failed = 0
        self.pending: set[asyncio.Task[None]] = set()

    async def register(self, task_id: str, app_id: str, host: str) -> None:
        async with self.slots:
            try:
                filters = quote(json.dumps({"label": [f"MESOS_TASK_ID={task_id}"]}))
                url = self.docker.replace("{host}", host) + f"/v1.41/containers/json?all=1&filters={filters}"
                async with self.session.get(url) as r:
                    entries = await r.json(content_type=None)
                if not entries:
                    self.failed += 1
                    return
                c = entries[0]
                nets = c.get("NetworkSettings", {}).get("Networks", {})
                ip = next((nets[n]["IPAddress"] for n in NETWORKS if nets.get(n, {}).get("IPAddress")), host)
                port = (c.get("Ports") or [{}])[0].get("PrivatePort", 80)
                segments = app_id.strip("/").split("/")
                body = {"ID": f"mcr-{task_id}-0", "Name": segments[0], "Address": ip, "Port": port,
                        "Tags": [".".join(reversed(segments[1:i + 1])) for i in range(1, len(segments))],
                        "Meta": {"managed-by": "marathon-consul-registrar", "marathon-app-id": app_id,
                                 "marathon-task-id": task_id, "marathon-host": host, "port-index": "0",
                                 "address-source": "overlay"}}
                url = self.consul.replace("{host}", host) + "/v1/agent/service/register"
                async with self.session.put(url, json=body) as r:
                    await r.read()
                    if r.status != 200:
                        self.failed += 1
                        return
                self.done += 1
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
                self.failed += 1

    async def deregister(self, task_id: str, host: str) -> None:
        async with self.slots:
            url = self.consul.replace("{host}", host) + f"/v1/agent/service/deregister/mcr-{task_id}-0"
            try:
                async with self.session.put(url) as r:
                    await r.read()
                self.done += 1
            except (aiohttp.ClientError, TimeoutError, OSError):
                self.failed += 1

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)


async def serve(args: argparse.Namespace) -> None:
    floor = Floor(args.consul, args.docker, args.concurrency)

    async def events(request: web.Request) -> web.Response:
        obj = json.loads(await request.read())
        if obj.get("eventType") == "status_update_event":
            state = obj.get("taskStatus")
            if state == "TASK_RUNNING":
                floor.spawn(floor.register(obj["taskId"], obj["appId"], obj["host"]))
            elif state in ("TASK_KILLED", "TASK_FAILED", "TASK_FINISHED", "TASK_LOST"):
                floor.spawn(floor.deregister(obj["taskId"], obj["host"]))
        return web.Response(status=202)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"done": floor.done, "failed": floor.failed, "pending": len(floor.pending)})

    app = web.Application(client_max_size=32 * 1024 * 1024)
    app.router.add_post("/v1/events", events)
    app.router.add_get("/health", health)
    host, _, port = args.listen.rpartition(":")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, int(port)).start()
    await asyncio.Event().wait()  # until SIGTERM (default action: exit)


async def resync(args: argparse.Namespace) -> None:
    """Blind re-registration of every running task: the naive resync."""
    floor = Floor(args.consul, args.docker, args.concurrency)
    started = time.monotonic()
    async with floor.session.get(args.marathon + "/v2/apps", params={"embed": "apps.tasks"},
                                 timeout=aiohttp.ClientTimeout(total=300)) as r:
        apps = (await r.json())["apps"]
    tasks = [(t["id"], a["id"], t["host"]) for a in apps for t in a.get("tasks", [])
             if t.get("state", "TASK_RUNNING") == "TASK_RUNNING"]
    del apps
    complete = True
    try:  # at 100,000 tasks the floor's narrowed lookups alone take ~10 min: stop at the limit, say so
        await asyncio.wait_for(asyncio.gather(*(floor.register(*t) for t in tasks)),
                               max(1.0, args.limit_s - (time.monotonic() - started)))
    except TimeoutError:
        complete = False
    seconds = time.monotonic() - started
    await floor.session.close()
    text = await asyncio.to_thread(Path("/proc/self/status").read_text)
    status = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    print(json.dumps({"seconds": seconds, "registered": floor.done, "failed": floor.failed, "tasks": len(tasks),
                      "complete": complete,
                      "cpu_s": round(sum(os.times()[:2]), 2),
                      "hwm_mb": round(int(status["VmHWM"].split()[0]) * 1024 / 1e6, 1),
                      "rss_mb": round(int(status["VmRSS"].split()[0]) * 1024 / 1e6, 1)}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["serve", "resync"])
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--marathon", default="")
    p.add_argument("--consul", default="http://{host}:8500")
    p.add_argument("--docker", default="http://{host}:2375")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--limit-s", type=float, default=840.0,
                   help="resync: stop after this long and report what was done (default %(default)s)")
    args = p.parse_args()
    asyncio.run(serve(args) if args.mode == "serve" else resync(args))


if __name__ == "__main__":
    main()
