"""`python -m bench.pair A=<tree> B=<tree> [...]`: paired resync + memory runs of registrar trees on
one bench world (issue 20's memory work was judged with it).

The world is `bench resync`'s (`--apps` x 10 tasks over 20 simulated agents and engines, Marathon
1.10 on SSE; `--scale`: 50 agents and the Weave network, as `bench scale`), deployed once. Each tree
(a checkout, e.g. `git archive <commit> | tar -x -C /tmp/before`) is then run in turn, the trees
interleaved for `--rounds`: its first resync, 3 s idle, a no-drift resync, a 10 % drift resync,
3 s idle. One JSON line per run: resync seconds and CPU seconds (from /proc, less sensitive to the
machine's load than the seconds), writes, whether the drift resync made exactly the needed writes,
RSS after the first resync and after the drift one, the peak, and the load average. The drift
resync repairs what `_drift` broke, so every run starts from the same registered world.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from bench import scenarios
from bench.procs import Proc, free_port, wait_http
from bench.world import CONCURRENCY, DOCKER_PORT, SLAVES, Sims, Target, app_ids


async def _start(sims: Sims, name: str, code: Path, ready_timeout: float) -> tuple[Target, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = ["service", "serve", "--marathon", sims.marathon_url, "--events", "sse", "--listen", f"127.0.0.1:{port}",
            "--consul", "http://{host}:" + str(sims.consul_port), "--docker", "tcp://{host}:" + str(DOCKER_PORT),
            "--resync-interval", "3600", "--workers", str(CONCURRENCY), "--log-level", "WARNING", "--lock", "off"]
    proc = Proc(name, argv, code=code)
    t0 = time.monotonic()
    await wait_http(f"{url}/ready", proc, limit_s=ready_timeout)
    return Target(proc, url), time.monotonic() - t0


async def _one(sims: Sims, label: str, code: Path, tasks: int) -> dict[str, Any]:
    reg, ready = await _start(sims, f"pair-{label}", code, max(300.0, tasks / 100))
    try:
        first_cpu = reg.proc.cpu()
        await asyncio.sleep(3.0)
        after_first = reg.proc.memory()
        await scenarios._reset_stats(sims)
        cpu0 = reg.proc.cpu()
        nodrift = await scenarios._resync_now(sims, reg)
        nodrift_cpu = reg.proc.cpu() - cpu0
        nodrift_writes = sum((await sims.consul_writes()).values())
        drift = await scenarios._drift(sims, 0.10)
        await scenarios._reset_stats(sims)
        cpu0 = reg.proc.cpu()
        drifted = await scenarios._resync_now(sims, reg)
        drift_cpu = reg.proc.cpu() - cpu0
        writes = await sims.consul_writes()
        owned = await scenarios._owned(sims)
        exact = writes == drift["needed_writes"] and len(owned) == tasks and \
            all(s["Port"] == 80 for _, s in owned.values())
        await asyncio.sleep(3.0)
        mem = reg.proc.memory()
        return {"label": label, "load": round(os.getloadavg()[0], 2), "ready_s": round(ready, 1),
                "first_cpu_s": round(first_cpu, 2), "rss_after_first_mb": after_first.get("VmRSS"),
                "nodrift_s": nodrift["seconds"], "nodrift_cpu_s": round(nodrift_cpu, 2), "nodrift_ok": nodrift["ok"],
                "nodrift_writes": nodrift_writes, "drift_s": drifted["seconds"], "drift_cpu_s": round(drift_cpu, 2),
                "drift_ok": drifted["ok"], "drift_exact": exact, "rss_mb": mem.get("VmRSS"),
                "peak_rss_mb": mem.get("VmHWM")}
    finally:
        reg.proc.stop()


async def run(trees: list[tuple[str, Path]], *, apps: int, rounds: int, scale: bool) -> list[dict[str, Any]]:
    slaves = scenarios.SCALE_SLAVES if scale else SLAVES
    sims = Sims("pair", slaves=slaves, marathon_version="1.10")
    out = []
    try:
        await sims.start()
        t0 = time.monotonic()
        await sims.deploy({a: 10 for a in app_ids(apps)}, limit_s=900, network="weave" if scale else "bridge")
        print(json.dumps({"deployed": apps * 10, "agents": len(slaves), "s": round(time.monotonic() - t0, 1)}),
              flush=True)
        for r in range(rounds):
            for label, code in trees:
                result = await _one(sims, f"{label}{r}", code, apps * 10)
                print(json.dumps(result), flush=True)
                out.append(result)
    finally:
        await sims.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pair", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trees", nargs="+", metavar="LABEL=PATH", help="a label and the root of a registrar tree")
    p.add_argument("--apps", type=int, default=1000, help="apps of 10 tasks (default 1,000: 10,000 tasks)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--scale", action="store_true", help="50 agents and the Weave network, as `bench scale`")
    args = p.parse_args(argv)
    trees = []
    for spec in args.trees:
        label, sep, path = spec.partition("=")
        if not sep or not label or not Path(path, "service").is_dir():
            p.error(f"{spec!r}: expected LABEL=PATH of a tree with service/")
        trees.append((label, Path(path).resolve()))
    asyncio.run(run(trees, apps=args.apps, rounds=args.rounds, scale=args.scale))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
