"""`python -m bench SCENARIO|all`: run benchmarks, print a table, write JSON to bench/results/.

Scenarios (issue 5): burst, steady, resync, memory, real, smoke. `all` runs burst, resync (which
also measures memory: the registrar idle with 10,000 registrations after a resync), steady, real.
`scale` (issue 20, not in `all`: ~25 min) is resync + memory at 100,000 tasks over 50 agents.
Each scenario's JSON goes to bench/results/<scenario>-<UTC time>.json and bench/results/<scenario>.json
(the latest); `all` also writes bench/results/all.json. Logs of every process: bench/results/logs/.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import fuzz, procs, scenarios

RESULTS = Path(__file__).resolve().parent / "results"

SCENARIOS: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
    "burst": scenarios.burst,
    "steady": scenarios.steady,
    "resync": scenarios.resync,
    "memory": scenarios.resync,  # same world: the memory figure is taken at the end of it
    "scale": scenarios.scale,  # issue 20: resync and memory at 100,000 tasks over 50 agents
    "real": scenarios.real,
    "smoke": scenarios.smoke,
    "fuzz": fuzz.run,  # issue 9: hostile callbacks, the SSE parser, forged events (in-process, fakes)
}
ALL = ("burst", "resync", "steady", "real")


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {"cpus": os.cpu_count(), "cpu_model": model, "mem_gb": round(mem_kb / 1e6, 1),
            "kernel": platform.release(), "python": platform.python_version(), "load_before": os.getloadavg()}


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}".rstrip("0").rstrip(".") if abs(v) < 100 else f"{v:,.1f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items()) or "{}"
    return str(v)


def rows(result: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(scenario, figure, registrar, floor, ratio) rows of one result."""
    name = result["scenario"]
    reg, floor, ratios = result.get("registrar", {}), result.get("floor", {}), result.get("ratios", {})
    out: list[tuple[str, str, str, str, str]] = []
    if name in ("burst", "smoke", "real"):
        for key in ("wall_s", "reg_per_s", "p50_ms", "p99_ms", "max_ms", "cpu_s", "cpu_s_per_1000",
                    "peak_rss_mb", "registered", "delivery_errors", "world_cpu_s", "rate_bound", "outside_calls"):
            r, f = reg.get(key), floor.get(key)
            numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (r, f))
            out.append((name, key, _fmt(r), _fmt(f),
                        _fmt(ratios.get(key, scenarios._ratio(r, f) if numbers else None))))
    elif name == "steady":
        for key in ("events_per_s", "p50_ms", "p99_ms", "max_ms", "running", "killed", "cpu_s", "cpu_share",
                    "peak_rss_mb", "unmatched", "unmatched_killed_while_staging",
                    "unmatched_killed_before_registered", "converged",
                    "missing_at_end", "orphans_at_end", "delivery_errors"):
            r, f = reg.get(key), floor.get(key)
            numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (r, f))
            ratio = scenarios._ratio(r, f) if numbers else None
            out.append((name, key, _fmt(r), _fmt(f), _fmt(ratio)))
    elif name in ("resync", "memory", "scale"):
        fs = floor.get("blind_resync_s")
        n = f"{result['setup']['tasks']:,}"
        out.append((name, f"first resync ({n} missing) s", _fmt(reg["initial_resync"]["seconds"]), _fmt(fs),
                    _fmt(scenarios._ratio(reg["initial_resync"]["seconds"], fs))))
        for label, key in (("no drift", "no_drift"), ("10% drift", "drift_10pct")):
            d = reg[key]
            ratio = scenarios._ratio(d["seconds"], fs)
            out.append((name, f"{label}: resync s", _fmt(d["seconds"]), _fmt(fs), _fmt(ratio)))
            out.append((name, f"{label}: wall from trigger s", _fmt(d["wall_s"]), "-", "-"))
            out.append((name, f"{label}: Consul writes", _fmt(d["writes"]), _fmt(floor.get("writes")), "-"))
            out.append((name, f"{label}: registrar CPU s", _fmt(d["cpu_s"]), _fmt(floor.get("cpu_s")), "-"))
        d = reg["drift_10pct"]
        out.append((name, "10% drift: made / needed writes", f"{_fmt(d['found'])} / {_fmt(d['needed_writes'])}",
                    "-", "-"))
        m = reg["memory_idle"]
        if floor.get("complete") is False:
            out.append((name, "floor: stopped at its limit (s) / registered", "-",
                        f"{_fmt(floor.get('stopped_at_s'))} / {_fmt(floor.get('writes'))}", "projected"))
        mem = "memory" if name != "scale" else name
        out.append((mem, f"RSS idle, {n} managed MB", _fmt(m["rss_mb"]), _fmt(floor.get("rss_mb")),
                    _fmt(ratios.get("rss_mb"))))
        out.append((mem, "peak RSS MB", _fmt(m["peak_rss_mb"]), _fmt(floor.get("peak_rss_mb")), "-"))
    for t in result.get("targets", []):
        out.append((name, "TARGET " + t["target"], _fmt(t["value"]), "", "met" if t["met"] else "MISSED"))
    return out


def table(results: list[dict[str, Any]]) -> str:
    all_rows = [("scenario", "figure", "registrar", "floor", "ratio")]
    for r in results:
        if "error" in r:
            all_rows.append((r["scenario"], "ERROR", r["error"][:80], "", ""))
        else:
            all_rows += rows(r)
    widths = [max(len(row[i]) for row in all_rows) for i in range(5)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in all_rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


async def run(names: list[str]) -> list[dict[str, Any]]:
    results = []
    for name in names:
        t0 = time.monotonic()
        print(f"--- {name} ...", flush=True)
        try:
            result = await SCENARIOS[name]()
            if name == "memory":
                result["scenario"] = "memory"
        except Exception as exc:
            traceback.print_exc()
            result = {"scenario": name, "error": f"{type(exc).__name__}: {exc}"}
        result["duration_s"] = round(time.monotonic() - t0, 1)
        print(f"--- {name} done in {result['duration_s']} s", flush=True)
        write(name, result)
        results.append(result)
    return results


def write(name: str, result: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(result, indent=2, sort_keys=True)
    (RESULTS / f"{name}-{stamp}.json").write_text(text)
    (RESULTS / f"{name}.json").write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=[*SCENARIOS, "all"])
    p.add_argument("--profile", action="store_true",
                   help="py-spy record the system under test in the measured windows -> bench/results/profiles/")
    args = p.parse_args(argv)
    procs.PROFILE = args.profile
    names = list(ALL) if args.scenario == "all" else [args.scenario]
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    info = machine()
    results = asyncio.run(run(names))
    total = round(time.monotonic() - t0, 1)
    print()
    print(f"python -m bench {args.scenario}   {started:%Y-%m-%d %H:%M} UTC   {info['cpus']} x {info['cpu_model']}, "
          f"{info['mem_gb']} GB   total {total} s")
    print(table(results))
    if args.scenario == "all":
        (RESULTS / "all.json").write_text(json.dumps(
            {"command": "python -m bench all", "started": started.isoformat(), "total_s": total, "machine": info,
             "results": results}, indent=2, sort_keys=True))
    failed = any("error" in r for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
