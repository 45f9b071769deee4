"""`python -m bench.failover`: how long writes stop when the writer goes, with the lock's default
and minimum settings (issue 10). Needs the test world (`python -m devcluster up`).

Two registrar instances on the world's Marathon (1.10), each holding its session through another
slave's agent. For each setting and each way of going (SIGTERM: a clean stop releases the lock;
SIGKILL: the session must expire, up to 2 x TTL, then the lock-delay runs), the writer is stopped
and, at the same moment, the app is scaled up by one. Reported per case: seconds until the standby
says it is the writer, and until the new task is in Consul (what a user sees). Results go to
bench/results/failover.json.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.procs import Proc, free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MARATHON = "http://127.0.0.1:8080"
AGENTS = ("http://127.0.0.2:8500", "http://127.0.0.3:8500")
APP = "/bench/failover/site"
SETTINGS = {"default (ttl 15 s, delay 15 s)": ("15", "15"), "minimum (ttl 10 s, delay 0 s)": ("10", "0")}


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


def registered() -> int:
    n = 0
    for agent in AGENTS:
        _, body = call("GET", f"{agent}/v1/agent/services")
        n += sum(1 for s in (body or {}).values() if (s.get("Meta") or {}).get("marathon-app-id") == APP)
    return n


def start(agent: str, ttl: str, delay: str, tag: str) -> tuple[Proc, str]:
    port = free_port()
    proc = Proc(f"failover-{tag}-{port}", [
        "service", "serve", "--marathon", MARATHON, "--events", "sse", "--listen", f"127.0.0.1:{port}",
        "--resync-interval", "30", "--lock", "on", "--lock-ttl", ttl, "--lock-delay", delay,
        "--lock-agent", agent, "--log-level", "WARNING"])
    url = f"http://127.0.0.1:{port}"
    wait("registrar /ready", lambda: call("GET", f"{url}/ready")[0] == 200, 60)
    return proc, url


def case(ttl: str, delay: str, sig: signal.Signals) -> dict[str, float]:
    call("DELETE", f"{MARATHON}/v2/apps{APP}")
    wait("app gone", lambda: call("GET", f"{MARATHON}/v2/apps{APP}")[0] == 404, 60)
    a, a_url = start(AGENTS[0], ttl, delay, "a")
    wait("a writes", lambda: role(a_url) == "writer", 60)
    b, b_url = start(AGENTS[1], ttl, delay, "b")
    try:
        assert call("POST", f"{MARATHON}/v2/apps", {
            "id": APP, "instances": 1, "cpus": 0.1, "mem": 32,
            "cmd": "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 80 -h /www",
            "container": {"type": "DOCKER", "docker": {"image": "local/busybox:1"},
                          "portMappings": [{"containerPort": 80, "hostPort": 0, "name": "http"}]},
            "networks": [{"mode": "container/bridge"}]})[0] == 201
        wait("first task registered", lambda: registered() == 1, 60)
        os.kill(a.pid, sig)
        t0 = time.monotonic()
        assert call("PUT", f"{MARATHON}/v2/apps{APP}", {"instances": 2})[0] == 200
        wait("standby becomes the writer", lambda: role(b_url) == "writer", 120)
        writer_s = time.monotonic() - t0
        wait("second task registered", lambda: registered() == 2, 120)
        return {"writer_s": round(writer_s, 2), "writes_resumed_s": round(time.monotonic() - t0, 2)}
    finally:
        a.stop()
        b.stop()
        call("DELETE", f"{MARATHON}/v2/apps{APP}")


def main() -> None:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, (ttl, delay) in SETTINGS.items():
        for sig in (signal.SIGTERM, signal.SIGKILL):
            figures = case(ttl, delay, sig)
            out.setdefault(name, {})[sig.name] = figures
            print(f"{name:32} {sig.name:8} writer after {figures['writer_s']:6.2f} s, "
                  f"writes resumed after {figures['writes_resumed_s']:6.2f} s", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "failover.json").write_text(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                                        "results": out}, indent=2) + "\n")


if __name__ == "__main__":
    main()
