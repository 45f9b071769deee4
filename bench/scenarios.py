"""The scenarios of issue 5. Each builds its own world (bench/world.py), runs the registrar and then
the floor on the same input, and returns a result dict; `finally` stops every process it started
(marathon_sim removes its containers on SIGTERM), even when a scenario fails."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from bench.procs import LOG_DIR, ROOT, Proc, Profiler
from bench.world import (
    SLAVES,
    Sims,
    Target,
    app_ids,
    percentile,
    service_id,
    start_floor,
    start_registrar,
)

Result = dict[str, Any]


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def _lat_stats(lat: list[float]) -> dict[str, float | None]:
    if not lat:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"p50_ms": round(percentile(lat, 50) * 1e3, 1), "p99_ms": round(percentile(lat, 99) * 1e3, 1),
            "max_ms": round(max(lat) * 1e3, 1)}


async def _metrics(target: Target) -> dict[str, float]:
    """The registrar's Prometheus text, flattened to {name{labels}: value}."""
    async with aiohttp.ClientSession() as s, s.get(f"{target.url}/metrics") as r:
        text = await r.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                out[key] = float(value)
            except ValueError:
                pass
    return out


# ---- burst ------------------------------------------------------------------------------------

async def _run_burst(sims: Sims, target: Target, held: dict[str, bytes], limit_s: float) -> Result:
    """Deliver every held TASK_RUNNING event to `target` at once; wait until Consul has them all."""
    relay = sims.relay
    relay.sent.clear()
    relay.errors = 0
    relay.target = target.events_url
    cursor, _ = await sims.consul_log()
    want = {service_id(t): t for t in held}
    profiler = Profiler(target.proc.pid, target.proc.name)
    calls0 = await _outside_calls(target)
    world0 = _world_cpu(sims)
    cpu0 = target.proc.cpu()
    blast = asyncio.create_task(relay.blast(held.items()))
    seen = await sims.wait_registered(set(want), limit_s=limit_s, since=cursor)
    await blast
    profiler.stop()
    cpu = target.proc.cpu() - cpu0
    world = {k: round(v - world0[k], 2) for k, v in _world_cpu(sims).items()}
    calls = {k: round(v - calls0.get(k, 0.0), 4) for k, v in (await _outside_calls(target)).items()}
    mem = target.proc.memory()
    first_sent = min(relay.sent.values())
    last_sent = max(relay.sent.values())
    lat = [seen[sid] - relay.sent[(tid, "TASK_RUNNING")] for sid, tid in want.items() if sid in seen]
    wall = (max(seen.values()) - first_sent) if seen else None
    return {"tasks": len(held), "registered": len(seen), "delivery_errors": relay.errors,
            "wall_s": round(wall, 3) if wall else None,
            "delivery_s": round(last_sent - first_sent, 3),
            "reg_per_s": round(len(seen) / wall, 1) if wall else None,
            **_lat_stats([max(0.0, x) for x in lat]),
            "cpu_s": round(cpu, 2), "cpu_s_per_1000": round(cpu / max(1, len(seen)) * 1000, 3),
            "rss_mb": mem.get("VmRSS"), "peak_rss_mb": mem.get("VmHWM"),
            "world_cpu_s": world, "rate_bound": _rate_bound(len(seen), cpu, world),
            **({"outside_calls": calls} if calls else {})}


def _world_cpu(sims: Sims) -> dict[str, float]:
    """CPU seconds so far of everything else the burst runs on these cores: each simulator process
    and the bench process itself (the relay, polling Consul's log)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out = {p.name.removeprefix(f"{sims.tag}-"): p.cpu() for p in sims.procs if p.alive()}
    out["bench (relay)"] = usage.ru_utime + usage.ru_stime
    return out


def _rate_bound(registered: int, cpu: float, world: dict[str, float]) -> float | None:
    """The highest rate this burst's CPU seconds allow on this machine's cores: the system under
    test and its world share them, so the wall time is at least their sum over the cores (and at
    least the busiest single process, which runs on one). What a registrar at this CPU cost could
    reach with an idle machine and a perfect scheduler; the measured rate is below it."""
    cores = os.cpu_count() or 1
    floor_s = max(cpu, *world.values(), (cpu + sum(world.values())) / cores)
    return round(registered / floor_s, 1) if floor_s > 0 else None


async def _outside_calls(target: Target) -> dict[str, float]:
    """The registrar's outside calls so far, from its own histograms: "<system>:<call> n" (count)
    and "<system>:<call> s" (seconds). Empty for the floor, which has no /metrics."""
    try:
        metrics = await _metrics(target)
    except (aiohttp.ClientError, ValueError):
        return {}
    out: dict[str, float] = {}
    for key, value in metrics.items():
        for system in ("marathon", "docker", "consul"):
            prefix = f"mcr_{system}_request_seconds_"
            kind, _, labels = key.removeprefix(prefix).partition("{")
            if key.startswith(prefix) and kind in ("count", "sum") and 'call="' in labels:
                call = labels.split('call="', 1)[1].split('"', 1)[0]
                out[f"{system}:{call} {'n' if kind == 'count' else 's'}"] = value
    return out


async def burst(*, n_tasks: int = 5000, n_apps: int = 500, slaves: tuple[str, ...] = SLAVES,
                tag: str = "burst") -> Result:
    sims = Sims(tag, slaves=slaves)
    procs: list[Proc] = []
    try:
        await sims.start()
        reg = await start_registrar(sims, tag)  # subscribed, first resync done on an empty world
        procs.append(reg.proc)
        await sims.unsubscribe_relay()  # no callbacks during the deployment
        t0 = time.monotonic()
        await sims.deploy({a: n_tasks // n_apps for a in app_ids(n_apps)})
        deploy_s = time.monotonic() - t0
        held = await sims.running_events()
        if len(held) != n_tasks:
            raise RuntimeError(f"relay holds {len(held)} TASK_RUNNING events, expected {n_tasks}")
        await sims.consul_reset()
        r = await _run_burst(sims, reg, held, limit_s=120)
        reg.proc.stop()
        await sims.consul_reset()
        floor = await start_floor(tag)
        procs.append(floor.proc)
        f = await _run_burst(sims, floor, held, limit_s=120)
        floor.proc.stop()
        return {"scenario": tag, "setup": {"tasks": n_tasks, "apps": n_apps, "slaves": len(slaves),
                                           "deploy_s": round(deploy_s, 1)},
                "registrar": r, "floor": f,
                "ratios": {"reg_per_s": _ratio(r["reg_per_s"], f["reg_per_s"]),
                           "cpu_s": _ratio(r["cpu_s"], f["cpu_s"]), "p99_ms": _ratio(r["p99_ms"], f["p99_ms"])},
                "targets": [
                    _target("burst reg/s >= 1000", r["reg_per_s"], ">=", 1000),
                    _target("burst >= 0.7 x floor rate", _ratio(r["reg_per_s"], f["reg_per_s"]), ">=", 0.7),
                    _target("burst p99 <= 2000 ms", r["p99_ms"], "<=", 2000),
                    _target("burst CPU <= 1.0 s / 1000 reg", r["cpu_s_per_1000"], "<=", 1.0),
                    _target("burst reg/s >= 3000 (issue 20)", r["reg_per_s"], ">=", 3000),
                    _target("burst p99 <= 700 ms (issue 20)", r["p99_ms"], "<=", 700),
                ] if tag == "burst" else []}
    finally:
        for p in procs:
            p.stop()
        await sims.close()


def _target(name: str, value: float | None, op: str, bound: float) -> dict[str, Any]:
    met = value is not None and (value >= bound if op == ">=" else value <= bound)
    return {"target": name, "value": value, "met": met}


async def smoke() -> Result:
    """~30 s: a 400-task burst over 5 slaves of their own addresses; asserts the figures are sane."""
    result = await burst(n_tasks=400, n_apps=40, slaves=tuple(f"127.0.2.{i}" for i in range(1, 6)), tag="smoke")
    for who in ("registrar", "floor"):
        r = result[who]
        assert r["registered"] == r["tasks"] == 400, (who, r)
        assert r["delivery_errors"] == 0, (who, r)
        assert r["reg_per_s"] and r["reg_per_s"] > 20, (who, r)
        assert r["p99_ms"] is not None and 0 <= r["p50_ms"] <= r["p99_ms"] <= r["max_ms"] < 30_000, (who, r)
        assert r["cpu_s"] > 0 and r["peak_rss_mb"] and 10 < r["peak_rss_mb"] < 1000, (who, r)
    result["targets"] = [_target("smoke: every task registered, registrar and floor", 1, ">=", 1)]
    return result


# ---- resync + memory ----------------------------------------------------------------------------

async def _resync_now(sims: Sims, reg: Target) -> dict[str, Any]:
    """Drop Marathon's event stream: the registrar reconnects and resyncs (no replay on SSE).
    Returns the registrar's own resync duration (its histogram's sum delta) and the wall time."""
    before = await _metrics(reg)
    profiler = Profiler(reg.proc.pid, f"{reg.proc.name}-{len(before)}")
    key_ok = 'mcr_resyncs_total{result="ok"}'
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as s, s.post(f"{sims.marathon_url}/_sim/event-streams/drop") as r:
        await r.read()
    while True:
        # every poll renders the registrar's whole /metrics on the cores it resyncs on: at 20 ms that
        # was ~7 % of its CPU during a resync (py-spy, 10,000 tasks); the seconds reported are its own
        # histogram's, so the poll only sets the wall time's resolution
        await asyncio.sleep(0.1)
        now = await _metrics(reg)
        if sum(v for k, v in now.items() if k.startswith("mcr_resyncs_total")) > \
                sum(v for k, v in before.items() if k.startswith("mcr_resyncs_total")):
            break
        if time.monotonic() - t0 > 120:
            raise RuntimeError("no resync within 120 s of the stream drop")
    wall = time.monotonic() - t0
    profiler.stop()
    dur = now["mcr_resync_duration_seconds_sum"] - before.get("mcr_resync_duration_seconds_sum", 0.0)
    return {"seconds": round(dur, 3), "wall_s": round(wall, 3), "ok": now.get(key_ok, 0) > before.get(key_ok, 0)}


async def _owned(sims: Sims) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every registration with the registrar's Meta, on every agent: id -> (agent host, service)."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for h in sims.slaves:
        body = await sims._req("GET", f"{sims.consul(h)}/v1/agent/services")
        out.update({sid: (h, s) for sid, s in body.items()
                    if (s.get("Meta") or {}).get("managed-by") == "marathon-consul-registrar"})
    return out


async def _drift(sims: Sims, fraction: float) -> dict[str, Any]:
    """Make `fraction` of the registrations wrong, in thirds: missing, orphan (ours, no task), changed."""
    owned = await _owned(sims)
    ids = sorted(owned)
    n = int(len(ids) * fraction)
    missing, changed = ids[0:n:3], ids[1:n:3]
    orphans = n - len(missing) - len(changed)
    slots = asyncio.Semaphore(32)

    async def put(host: str, path: str, body: Any = None) -> None:
        async with slots:
            await sims._req("PUT", f"{sims.consul(host)}{path}", body)

    jobs = [put(owned[sid][0], f"/v1/agent/service/deregister/{sid}") for sid in missing]
    for sid in changed:
        host, svc = owned[sid]
        jobs.append(put(host, "/v1/agent/service/register", {
            "ID": sid, "Name": svc["Service"], "Tags": svc["Tags"], "Address": svc["Address"],
            "Port": svc["Port"] + 1000, "Meta": svc["Meta"]}))
    for i in range(orphans):
        host, svc = owned[ids[i]]
        jobs.append(put(host, "/v1/agent/service/register", {
            "ID": f"mcr-ghost{i}.{i}-0", "Name": svc["Service"], "Tags": svc["Tags"], "Address": "10.47.0.1",
            "Port": 80, "Meta": {**svc["Meta"], "marathon-task-id": f"ghost{i}.{i}"}}))
    await asyncio.gather(*jobs)
    return {"missing": len(missing), "changed": len(changed), "orphan": orphans,
            "needed_writes": {"service/register": len(missing) + len(changed), "service/deregister": orphans}}


async def _floor_resync(sims: Sims, tag: str) -> dict[str, Any]:
    proc = Proc(f"{tag}-floor-resync", ["bench.floor", "resync", "--marathon", sims.marathon_url,
                                        "--consul", "http://{host}:" + str(sims.consul_port),
                                        "--docker", "http://{host}:2375", "--concurrency", "16",
                                        "--limit-s", "840"])
    try:
        await asyncio.to_thread(proc.proc.wait, 900)
        lines = [x for x in proc.tail(20000).splitlines() if x.startswith("{")]
        if not lines:
            raise RuntimeError(f"floor resync failed:\n{proc.tail()}")
        return dict(json.loads(lines[-1]))
    finally:
        proc.stop()


async def resync(*, n_apps: int = 1000, per_app: int = 10, tag: str = "resync") -> Result:
    """Also yields the `memory` figures: RSS with 10,000 managed registrations, after a resync, idle."""
    result = await _resync_world(n_apps=n_apps, per_app=per_app, tag=tag, slaves=SLAVES, deploy_limit_s=300)
    reg, nodrift, drifted = result["registrar"], result["registrar"]["no_drift"], result["registrar"]["drift_10pct"]
    rss = reg["memory_idle"]["rss_mb"]
    result["targets"] = [
        _target("resync no drift <= 3 s", nodrift["seconds"], "<=", 3.0),
        _target("resync no drift: zero writes", sum(nodrift["writes"].values()), "<=", 0),
        _target("resync 10% drift <= 5 s", drifted["seconds"], "<=", 5.0),
        _target("resync 10% drift: exactly the needed writes", 1 if drifted["exact"] else 0, ">=", 1),
        _target("memory <= 150 MB RSS at 10,000 registrations", rss, "<=", 150),
        _target("memory <= 80 MB RSS at 10,000 registrations (issue 20)", rss, "<=", 80),
    ]
    return result


SCALE_SLAVES = tuple(f"127.0.3.{i}" for i in range(1, 51))  # not the other scenarios' addresses


async def scale(*, n_apps: int = 10_000, per_app: int = 10, tag: str = "scale") -> Result:
    """Issue 20: `resync` at 100,000 tasks (10,000 apps x 10) over 50 agents and engines."""
    result = await _resync_world(n_apps=n_apps, per_app=per_app, tag=tag, slaves=SCALE_SLAVES,
                                 deploy_limit_s=900, network="weave")
    reg, nodrift, drifted = result["registrar"], result["registrar"]["no_drift"], result["registrar"]["drift_10pct"]
    result["targets"] = [
        _target("scale: no drift <= 10 s", nodrift["seconds"], "<=", 10.0),
        _target("scale: no drift: zero writes", sum(nodrift["writes"].values()), "<=", 0),
        _target("scale: 10% drift <= 15 s", drifted["seconds"], "<=", 15.0),
        _target("scale: 10% drift: exactly the needed writes", 1 if drifted["exact"] else 0, ">=", 1),
        _target("scale: RSS idle <= 400 MB", reg["memory_idle"]["rss_mb"], "<=", 400),
    ]
    return result


async def _resync_world(*, n_apps: int, per_app: int, tag: str, slaves: tuple[str, ...], deploy_limit_s: float,
                        network: str = "bridge") -> Result:
    """n_apps x per_app tasks over `slaves` (Marathon 1.10, the registrar on SSE): the first resync, one
    with no drift, one with 10 % drift, RSS idle after it, then the floor's blind re-registration."""
    sims = Sims(tag, slaves=slaves, marathon_version="1.10")
    procs: list[Proc] = []
    try:
        await sims.start()
        t0 = time.monotonic()
        await sims.deploy({a: per_app for a in app_ids(n_apps)}, limit_s=deploy_limit_s, network=network)
        deploy_s = time.monotonic() - t0
        n = n_apps * per_app
        t0 = time.monotonic()
        reg = await start_registrar(sims, tag, events="sse", ready_timeout=max(300.0, n / 100))
        procs.append(reg.proc)
        m = await _metrics(reg)
        initial = {"seconds": round(m.get("mcr_resync_duration_seconds_sum", 0.0), 3),
                   "wall_to_ready_s": round(time.monotonic() - t0, 3)}
        owned = await _owned(sims)
        if len(owned) != n:
            raise RuntimeError(f"after the first resync Consul holds {len(owned)} of {n} registrations")
        cpu0 = reg.proc.cpu()
        await _reset_stats(sims)
        nodrift = await _resync_now(sims, reg)
        nodrift["cpu_s"] = round(reg.proc.cpu() - cpu0, 2)
        nodrift["writes"] = await sims.consul_writes()
        nodrift["reads"] = await sims.consul_reads()
        drift = await _drift(sims, 0.10)
        await _reset_stats(sims)
        cpu0 = reg.proc.cpu()
        drifted = await _resync_now(sims, reg)
        drifted["cpu_s"] = round(reg.proc.cpu() - cpu0, 2)
        drifted["writes"] = await sims.consul_writes()
        drifted["found"] = {k: drift[k] for k in ("missing", "changed", "orphan")}
        drifted["needed_writes"] = drift["needed_writes"]
        owned = await _owned(sims)
        drifted["converged"] = len(owned) == n and all(s["Port"] == 80 for _, s in owned.values())
        drifted["exact"] = drifted["writes"] == drift["needed_writes"] and drifted["converged"]
        await asyncio.sleep(3.0)  # idle
        mem = reg.proc.memory()
        reg.proc.stop()
        try:
            floor = await _floor_resync(sims, tag)
        except Exception as exc:  # the registrar's figures stand without it
            floor = {"seconds": None, "registered": None, "failed": None, "rss_mb": None, "hwm_mb": None,
                     "error": f"{type(exc).__name__}: {exc}"[:300]}
        if floor.get("complete") is False and floor.get("registered"):
            # stopped at its time limit: what the whole pass would take at the rate it had
            floor["projected_s"] = round(floor["seconds"] * floor["tasks"] / floor["registered"], 1)
        fs = floor.get("projected_s") or floor["seconds"]
        return {
            "scenario": tag,
            "setup": {"tasks": n, "apps": n_apps, "agents": len(sims.slaves), "deploy_s": round(deploy_s, 1),
                      "network": network},
            "registrar": {"initial_resync": initial, "no_drift": nodrift, "drift_10pct": drifted,
                          "memory_idle": {"rss_mb": mem.get("VmRSS"), "peak_rss_mb": mem.get("VmHWM"),
                                          "managed": len(owned)}},
            "floor": {"blind_resync_s": round(fs, 3) if fs is not None else None, "writes": floor["registered"],
                      "failed": floor["failed"], "rss_mb": floor["rss_mb"], "peak_rss_mb": floor["hwm_mb"],
                      "cpu_s": floor.get("cpu_s"), "complete": floor.get("complete"),
                      "stopped_at_s": floor["seconds"] if floor.get("complete") is False else None,
                      **({"error": floor["error"]} if "error" in floor else {})},
            "ratios": {"no_drift_s": _ratio(nodrift["seconds"], fs),
                       "drift_s": _ratio(drifted["seconds"], fs),
                       "rss_mb": _ratio(mem.get("VmRSS"), floor["rss_mb"])},
        }
    finally:
        for p in procs:
            p.stop()
        await sims.close()


async def _reset_stats(sims: Sims) -> None:
    await sims._req("POST", f"{sims.consul(sims.slaves[0])}/_sim/stats/reset")


# ---- steady -----------------------------------------------------------------------------------

async def _run_steady(sims: Sims, target: Target, apps: list[str], seconds: float, rate: float) -> Result:
    """Scale apps up and down so that Marathon emits ~`rate` RUNNING+KILLED events/s; the relay
    forwards each at once. Latency: event sent -> registration (RUNNING) / deregistration (KILLED)."""
    relay = sims.relay
    relay.target = target.events_url
    relay.mode = "forward"
    step = 10  # tasks per scale operation
    tick = 2 * step / rate  # each tick: +step on one app, -step on another
    lag = len(apps) // 2
    size = {a: step for a in apps}
    await relay.drain()
    relay.sent.clear()
    relay.errors = 0
    cursor, _ = await sims.consul_log()
    cpu0 = target.proc.cpu()
    t_start = time.monotonic()
    i = 0
    ops: list[asyncio.Task[None]] = []
    while time.monotonic() - t_start < seconds:
        up = apps[i % len(apps)]
        size[up] += step
        ops.append(asyncio.create_task(sims.scale(up, size[up])))
        if i >= lag:
            down = apps[(i - lag) % len(apps)]
            size[down] -= step
            ops.append(asyncio.create_task(sims.scale(down, size[down])))
        i += 1
        await asyncio.sleep(max(0.0, t_start + i * tick - time.monotonic()))
    t_end = time.monotonic()
    await asyncio.gather(*ops)
    await asyncio.sleep(5.0)  # the last launches/kills finish and are delivered
    await relay.drain()
    cpu = target.proc.cpu() - cpu0
    wall = time.monotonic() - t_start
    _, entries = await sims.consul_log(cursor)
    reg_t: dict[str, float] = {}
    dereg_t: dict[str, float] = {}
    for op, sid, _a, mono, _w in entries:
        (reg_t if op == "register" else dereg_t).setdefault(sid, mono)
    lat_run: list[float] = []
    lat_kill: list[float] = []
    missing = 0
    never_running = killed_first = 0
    for (tid, state), sent in relay.sent.items():
        got = (reg_t if state == "TASK_RUNNING" else dereg_t).get(service_id(tid))
        if got is None:
            missing += 1
            # Not losses (the convergence check below is the proof): a task killed while staging has
            # nothing to deregister, and one killed before its batch was worked is never registered.
            if (tid, "TASK_KILLED") in relay.sent and service_id(tid) not in reg_t:
                if (tid, "TASK_RUNNING") in relay.sent:
                    killed_first += 1
                else:
                    never_running += 1
            continue
        (lat_run if state == "TASK_RUNNING" else lat_kill).append(max(0.0, got - sent))
    n_events = sum(1 for t in relay.sent.values() if t <= t_end)
    want = {service_id(t["id"]) for t in await sims.running_tasks()}
    held = set(await _owned(sims))
    return {"events": len(relay.sent), "events_per_s": round(n_events / (t_end - t_start), 1),
            "running_events": len(lat_run), "killed_events": len(lat_kill), "unmatched": missing,
            "unmatched_killed_while_staging": never_running, "unmatched_killed_before_registered": killed_first,
            "converged": want == held, "missing_at_end": len(want - held), "orphans_at_end": len(held - want),
            "delivery_errors": relay.errors, **_lat_stats(lat_run + lat_kill),
            "running": _lat_stats(lat_run), "killed": _lat_stats(lat_kill),
            "cpu_s": round(cpu, 2), "cpu_share": round(cpu / wall, 3), "peak_rss_mb": target.proc.memory()["VmHWM"]}


async def steady(*, seconds: float = 60.0, rate: float = 200.0, n_apps: int = 40, tag: str = "steady") -> Result:
    sims = Sims(tag)
    procs: list[Proc] = []
    try:
        await sims.start()
        reg = await start_registrar(sims, tag)
        procs.append(reg.proc)
        sims.relay.mode = "forward"
        sims.relay.target = reg.events_url
        await sims.events_via_sse()
        apps = app_ids(n_apps, prefix="steady")
        cursor, _ = await sims.consul_log()
        await sims.deploy({a: 10 for a in apps})
        # the warm-up's own events must be registered before the measured window opens
        warm = {service_id(t["id"]) for t in await sims.running_tasks()}
        await sims.wait_registered(warm, limit_s=120, since=cursor)
        await sims.relay.drain()
        r = await _run_steady(sims, reg, apps, seconds, rate)
        reg.proc.stop()
        floor = await start_floor(tag)
        procs.append(floor.proc)
        f = await _run_steady(sims, floor, apps, seconds, rate)
        floor.proc.stop()
        return {"scenario": tag, "setup": {"seconds": seconds, "target_rate": rate, "apps": n_apps},
                "registrar": r, "floor": f,
                "ratios": {"p99_ms": _ratio(r["p99_ms"], f["p99_ms"]), "max_ms": _ratio(r["max_ms"], f["max_ms"]),
                           "cpu_s": _ratio(r["cpu_s"], f["cpu_s"])},
                "targets": [_target("steady p99 <= 50 ms", r["p99_ms"], "<=", 50),
                            _target("steady max <= 250 ms", r["max_ms"], "<=", 250),
                            _target("steady p99 <= 1.5 x floor p99 (issue 20)", _ratio(r["p99_ms"], f["p99_ms"]),
                                    "<=", 1.5)]}
    finally:
        for p in procs:
            p.stop()
        await sims.close()


# ---- real -------------------------------------------------------------------------------------

async def _engine_cost(host: str) -> dict[str, Any]:
    """Median time of the engine's label listing (all task containers) and of one narrowed to a
    task id, with what the slave holds now: the real numbers behind docker_sim's cost model."""
    base = f"http://{host}:2375/v1.41/containers/json?all=1&filters="
    async with aiohttp.ClientSession() as s:
        async with s.get(base + '{"label":["MESOS_TASK_ID"]}') as r:
            entries = await r.json()
        tid = entries[0]["Labels"]["MESOS_TASK_ID"] if entries else "none"
        out: dict[str, Any] = {"containers": len(entries)}
        for name, q in (("list_all_ms", '{"label":["MESOS_TASK_ID"]}'),
                        ("list_one_ms", json.dumps({"label": [f"MESOS_TASK_ID={tid}"]}))):
            times = []
            for _ in range(15):
                t0 = time.perf_counter()
                async with s.get(base + q) as r:
                    await r.read()
                times.append(time.perf_counter() - t0)
            out[name] = round(statistics.median(times) * 1e3, 2)
    return out


async def _engine_answers(socket_path: str) -> bool:
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=socket_path),
                                         timeout=aiohttp.ClientTimeout(total=2)) as s, \
                s.get("http://engine/_ping") as r:
            return r.status == 200
    except (aiohttp.ClientError, OSError, TimeoutError):
        return False


@contextlib.asynccontextmanager
async def _test_world() -> AsyncIterator[None]:
    """`real` runs on the test world's two Docker engines: bring the world up when they do not
    answer (`python -m devcluster up` is idempotent), and take it down afterwards only if this run
    brought it up, so `python -m bench all` works on a fresh machine and leaves a running world be."""
    from devcluster.topology import SLAVES as WORLD

    if all([await _engine_answers(str(s.docker_socket)) for s in WORLD]):
        yield
        return
    LOG_DIR.mkdir(parents=True, exist_ok=True)

    def devcluster(action: str) -> None:
        with open(LOG_DIR / f"real-devcluster-{action}.log", "wb") as log:
            subprocess.run([sys.executable, "-m", "devcluster", action], cwd=ROOT, stdout=log,
                           stderr=subprocess.STDOUT, check=True, timeout=300)

    await asyncio.to_thread(devcluster, "up")
    try:
        yield
    finally:
        await asyncio.to_thread(devcluster, "down")


async def real(*, n_apps: int = 6, per_app: int = 10, tag: str = "real") -> Result:
    async with _test_world():
        return await _real(n_apps=n_apps, per_app=per_app, tag=tag)


async def _real(*, n_apps: int, per_app: int, tag: str) -> Result:
    from devcluster.topology import SLAVES as WORLD

    slaves = tuple(s.host for s in WORLD)
    sims = Sims(tag, slaves=slaves, docker="real", consul_port=18500)
    procs: list[Proc] = []
    try:
        await sims.start(real_slaves={s.host: f"unix://{s.docker_socket}:{s.overlay_network}" for s in WORLD})
        reg = await start_registrar(sims, tag)
        procs.append(reg.proc)
        await sims.unsubscribe_relay()  # no callbacks during the deployment
        t0 = time.monotonic()
        await sims.deploy({a: per_app for a in app_ids(n_apps, prefix="real")}, limit_s=300)
        deploy_s = time.monotonic() - t0
        held = await sims.running_events()
        engines = {h: await _engine_cost(h) for h in slaves}
        await sims.consul_reset()
        r = await _run_burst(sims, reg, held, limit_s=60)
        reg.proc.stop()
        await sims.consul_reset()
        floor = await start_floor(tag, consul_port=18500)
        procs.append(floor.proc)
        f = await _run_burst(sims, floor, held, limit_s=60)
        floor.proc.stop()
        ratio = _ratio(r["reg_per_s"], f["reg_per_s"])
        return {"scenario": tag, "setup": {"tasks": len(held), "slaves": list(slaves), "deploy_s": round(deploy_s, 1),
                                           "engines": engines},
                "registrar": r, "floor": f, "ratios": {"reg_per_s": ratio, "p99_ms": _ratio(r["p99_ms"], f["p99_ms"])},
                "targets": [_target("real >= 1.0 x floor rate", ratio, ">=", 1.0)]}
    finally:
        for p in procs:
            p.stop()
        await sims.close()


