"""`python -m bench.failover`: how long writes stop when the writer goes, and whether two writers
ever overlap (issues 10 and 20). Needs the test world (`python -m devcluster up`), whose Consul
simulator keeps the write log (`GET /_sim/registrations?client=1`: op, service id, agent,
CLOCK_MONOTONIC time and the writer's User-Agent, which names its pid).

Two registrar instances on a Marathon 1.10 simulator of the bench's own, on the world's slaves (its
own framework id, so its lock key and its tasks are no other registrar's in the world), each
holding its session through another slave's agent, with the lock settings of the deploy JSON
(`deploy/marathon.json` of the tree under test) and with the CLI defaults. For each way of going,
the writer is stopped and at the same moment the app is scaled up by one:

- SIGTERM (clean stop: the key is released, the standby acquires at once);
- SIGKILL (crash: the session must be invalidated, by the liveness check, serfHealth or the TTL,
  then the lock-delay runs);
- SIGSTOP (paused): as SIGKILL until the standby writes; then SIGCONT, one more scale-up, 3 s of
  quiet: the resumed instance, with Marathon's events of its pause to work off, must write nothing.

Reported per case: seconds until the standby says it is the writer, until the new task is in Consul
(what a user sees), and the overlap: writes of the old writer logged after the new writer's first
write (must be 0; "n/a" for a tree whose requests do not name their pid) and, for the paused writer, the
writes its own counters (`mcr_registrations_total`, `mcr_deregistrations_total`) gained from SIGSTOP
to the end (every tree has them). `--code DIR` runs another
checkout's registrar (the bench and the world stay this tree's): a before/after pair. Results go to
bench/results/failover[-<label>].json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.procs import Proc, free_port
from devcluster.__main__ import marathon_sim_argv

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MARATHON = "http://127.0.0.1:8080"  # replaced by the bench's own Marathon simulator (`main`)
CLUSTER: str | None = None  # its framework id
AGENTS = ("http://127.0.0.2:8500", "http://127.0.0.3:8500")  # one per instance's lock session
THIRD_AGENT = "http://127.0.0.4:8500"
APP = "/bench/failover/site"
CASES = {"clean": signal.SIGTERM, "crash": signal.SIGKILL, "paused": signal.SIGSTOP}
LOCK_ENV = {"MCR_LOCK_TTL": "--lock-ttl", "MCR_LOCK_DELAY": "--lock-delay",
            "MCR_LOCK_CHECK_INTERVAL": "--lock-check-interval"}
PID = re.compile(r"\(pid (\d+)")


def call(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)


def wait(what: str, cond: Any, limit: float, every: float = 0.05) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        try:
            if cond():
                return time.monotonic() - start
        except Exception:
            pass
        time.sleep(every)
    raise SystemExit(f"failover bench: timed out after {limit}s waiting for {what}")


def role(url: str) -> str:
    status, body = call("GET", f"{url}/v1/registrations")
    return str(body["leadership"]["role"]) if status == 200 else "down"


def ours(cluster: str | None) -> list[tuple[str, str]]:
    """(agent, service id) of the bench app's registrations (of one cluster, or of any)."""
    out = []
    for agent in (*AGENTS, THIRD_AGENT):  # tasks land on any of the world's three slaves
        _, body = call("GET", f"{agent}/v1/agent/services")
        out += [(agent, sid) for sid, s in (body or {}).items() if (s.get("Meta") or {}).get("marathon-app-id") == APP
                and (cluster is None or (s.get("Meta") or {}).get("marathon-cluster-id") == cluster)]
    return out


def registered() -> int:
    """The bench app's registrations by this run's Marathon cluster (earlier runs' Marathons had
    other framework ids: what they left is another cluster's, which no registrar of ours removes)."""
    return len(ours(CLUSTER))


def forget_earlier_runs() -> None:
    for agent, sid in ours(None):
        call("PUT", f"{agent}/v1/agent/service/deregister/{sid}")


def writes_counted(url: str) -> float:
    """The instance's own count of its successful Consul writes (every tree has these counters)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(("mcr_registrations_total{", "mcr_deregistrations_total{"))
               and 'result="error"' not in line)


def settings_of(code: Path) -> dict[str, list[str]]:
    """The lock options of the tree's deploy JSON, and none (its CLI defaults)."""
    env = json.loads((code / "deploy" / "marathon.json").read_text())["env"]
    deploy = [arg for name, flag in LOCK_ENV.items() if name in env for arg in (flag, env[name])]
    label = ", ".join(f"{flag[2:]} {env[name]}" for name, flag in LOCK_ENV.items() if name in env)
    return {f"deploy JSON ({label})": deploy, "CLI defaults": []}


def write_log(since: int) -> list[list[Any]]:
    status, body = call("GET", f"{AGENTS[0]}/_sim/registrations?client=1&since={since}")
    if status != 200:
        raise SystemExit(f"failover bench: the world's Consul simulator keeps no write log ({status}): "
                         "restart the world from this tree (python -m devcluster down && python -m devcluster up)")
    return list(body["entries"])


def log_cursor() -> int:
    status, body = call("GET", f"{AGENTS[0]}/_sim/registrations?since=999999999")
    return int(body["next"]) if status == 200 else 0


def overlap(entries: list[list[Any]], old_pid: int, new_pid: int) -> int | None:
    """Task (de)registrations by the old writer logged after the new writer's first one; None
    when the writers' requests do not name their pid."""
    writes = [(e[3], int(m.group(1))) for e in entries
              if e[0] in ("register", "deregister") and str(e[1]).startswith("mcr-")
              and (m := PID.search(str(e[5]))) is not None]
    if not writes:
        return None
    firsts = [t for t, pid in writes if pid == new_pid]
    if not firsts:
        return None
    return sum(1 for t, pid in writes if pid == old_pid and t >= min(firsts))


def start(code: Path, agent: str, lock: list[str], tag: str) -> tuple[Proc, str]:
    port = free_port()
    proc = Proc(f"failover-{tag}-{port}", [
        "service", "serve", "--marathon", MARATHON, "--events", "sse", "--listen", f"127.0.0.1:{port}",
        "--resync-interval", "30", "--lock", "on", *lock, "--lock-agent", agent, "--log-level", "WARNING"], code=code)
    url = f"http://127.0.0.1:{port}"
    wait("registrar /ready", lambda: call("GET", f"{url}/ready")[0] == 200, 60)
    return proc, url


def scale(n: int) -> None:
    status, body = call("PUT", f"{MARATHON}/v2/apps{APP}", {"instances": n})
    assert status == 200, (status, body)


def case(code: Path, lock: list[str], how: str) -> dict[str, Any]:
    call("DELETE", f"{MARATHON}/v2/apps{APP}")
    wait("app gone", lambda: call("GET", f"{MARATHON}/v2/apps{APP}")[0] == 404, 60)
    a, a_url = start(code, AGENTS[0], lock, "a")
    b: Proc | None = None
    try:
        wait("a writes", lambda: role(a_url) == "writer", 60)
        b, b_url = start(code, AGENTS[1], lock, "b")
        assert call("POST", f"{MARATHON}/v2/apps", {
            "id": APP, "instances": 1, "cpus": 0.1, "mem": 32,
            "cmd": "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 80 -h /www",
            "container": {"type": "DOCKER", "docker": {"image": "local/busybox:1"},
                          "portMappings": [{"containerPort": 80, "hostPort": 0, "name": "http"}]},
            "networks": [{"mode": "container/bridge"}]})[0] == 201
        wait("first task registered", lambda: registered() == 1, 60)
        cursor = log_cursor()
        a_writes = writes_counted(a_url)
        os.kill(a.pid, CASES[how])
        t0 = time.monotonic()
        scale(2)
        wait("standby becomes the writer", lambda: role(b_url) == "writer", 120)
        writer_s = time.monotonic() - t0
        wait("second task registered", lambda: registered() == 2, 120)
        out: dict[str, Any] = {"writer_s": round(writer_s, 2), "writes_resumed_s": round(time.monotonic() - t0, 2)}
        if how == "paused":
            os.kill(a.pid, signal.SIGCONT)  # its event stream holds the scale-up it slept through
            scale(3)
            wait("third task registered", lambda: registered() == 3, 60)
            time.sleep(3.0)
            out["resumed_role"] = role(a_url)
            out["resumed_writes"] = writes_counted(a_url) - a_writes  # by its own counters: must be 0
        out["overlap"] = overlap(write_log(cursor), a.pid, b.pid)
        return out
    finally:
        if a.alive():
            os.kill(a.pid, signal.SIGCONT)
        call("DELETE", f"{MARATHON}/v2/apps{APP}")  # while a writer runs, so it deregisters the tasks
        try:
            wait("the app's registrations gone", lambda: registered() == 0, 20)
        except SystemExit as exc:
            print(exc, flush=True)
        a.stop()
        if b is not None:
            b.stop()
        call("DELETE", f"{MARATHON}/v2/apps{APP}")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__.split("\n\n")[0])
    p.add_argument("--code", type=Path, default=ROOT, help="checkout whose registrar runs (default: this one)")
    p.add_argument("--label", default="", help="results go to bench/results/failover-<label>.json")
    p.add_argument("--cases", default=",".join(CASES), help="comma separated: " + ", ".join(CASES))
    p.add_argument("--settings", default="", help="only settings whose name contains this")
    p.add_argument("--repeat", type=int, default=1, help="runs of each case")
    args = p.parse_args()
    code = args.code.resolve()
    load = os.getloadavg()
    print(f"code {code}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    global MARATHON, CLUSTER
    port = free_port()
    marathon = Proc(f"failover-marathon-{port}", marathon_sim_argv("1.10", ("127.0.0.1", port)))
    MARATHON = f"http://127.0.0.1:{port}"
    try:
        wait("the bench's Marathon simulator", lambda: call("GET", f"{MARATHON}/v2/info")[0] == 200, 30)
        CLUSTER = str(call("GET", f"{MARATHON}/v2/info")[1]["frameworkId"])
        forget_earlier_runs()
        out = run(code, args)
    finally:
        marathon.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"failover-{args.label}.json" if args.label else "failover.json"
    (RESULTS / name).write_text(json.dumps({
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "code": str(code),
        "load_average": [round(x, 2) for x in load], "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "results": out}, indent=2) + "\n")


def run(code: Path, args: argparse.Namespace) -> dict[str, dict[str, list[dict[str, Any]]]]:
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name, lock in settings_of(code).items():
        if args.settings not in name:
            continue
        for how in args.cases.split(","):
            for _ in range(args.repeat):
                figures = case(code, lock, how)
                out.setdefault(name, {}).setdefault(how, []).append(figures)
                ov = figures["overlap"]
                print(f"{name:50} {how:6} writer after {figures['writer_s']:6.2f} s, writes resumed after "
                      f"{figures['writes_resumed_s']:6.2f} s, old writer's writes after the new one's first: "
                      f"{'n/a' if ov is None else ov}"
                      + (f"; its own writes after SIGCONT: {figures['resumed_writes']:g}" if how == "paused" else ""),
                      flush=True)
    return out


if __name__ == "__main__":
    main()
