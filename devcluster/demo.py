"""The demo: the registrar against the local test world, ending with what it registered.

Starts the registrar (pid in RUN_DIR/registrar.pid, stopped by `python -m devcluster down`) or, with
`--as-app`, deploys it as the Marathon app of deploy/marathon.json from its image (2 instances, on two
of the three slaves; the simulator removes them at `down`), then deploys /web/customer1/site1 with 3 instances
and an HTTP health check, and beside it the pod /web-pod (one instance on the CNI slave, slave 4, under
the Mesos containerizer: no Docker API knows it), waits for Consul to hold 3 passing instances of the
app and the pod's, then prints Consul's view, the DNS answers and one overlay IP's HTTP answer.

Every run takes over whatever an earlier one left, in any order of the modes: the registrar of the
other mode is removed (the host process stopped, or the Marathon app deleted), an app is deleted
and its deployment waited out before it is posted again, and with `--world plain|tls`
(`scripts/demo`) a world up in the other mode is taken down and brought up in this one.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devcluster.image import ROOT, ensure_image
from devcluster.topology import RUN_DIR, SLAVES, marathon_url, world_tls_dir
from devcluster.world_http import open_url

APP = "/web/customer1/site1"
REGISTRAR = "http://127.0.0.1:8000"
APP_JSON = {
    "id": APP, "instances": 3, "cpus": 0.1, "mem": 32,
    "cmd": "mkdir -p /www && echo \"hello from $HOST:$PORT0 ($MESOS_TASK_ID)\" > /www/index.html && "
           "exec httpd -f -p 80 -h /www",
    "container": {"type": "DOCKER", "docker": {"image": "local/busybox:1"},
                  "portMappings": [{"containerPort": 80, "hostPort": 0, "protocol": "tcp", "name": "http"}]},
    "networks": [{"mode": "container/bridge"}],
    "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/", "portIndex": 0, "intervalSeconds": 2,
                      "timeoutSeconds": 1, "gracePeriodSeconds": 10}],
}
POD = "/web-pod"
POD_JSON = {
    "id": POD, "networks": [{"mode": "container", "name": "weave"}],
    "containers": [{"name": "httpd", "resources": {"cpus": 0.1, "mem": 32},
                    "image": {"kind": "DOCKER", "id": "local/busybox:1"},
                    "exec": {"command": {"shell": "mkdir -p /www && echo \"hello from pod $MESOS_TASK_ID\" > "
                                                  "/www/index.html && exec httpd -f -p 80 -h /www"}},
                    "endpoints": [{"name": "http", "containerPort": 80}],
                    "healthCheck": {"http": {"endpoint": "http", "path": "/"}, "delaySeconds": 0,
                                    "intervalSeconds": 2}}],
}


def call(method: str, url: str, body: object = None) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    try:
        with open_url(method, url, data, {"Content-Type": "application/json"}, timeout=10) as resp:
            text = resp.read().decode()
            return resp.status, json.loads(text) if text else None
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError as err:
        return 0, str(err)


def wait(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise SystemExit(f"demo: timed out waiting for {what}")


def _check_target(check: dict[str, Any]) -> str:
    """What a check probes (the slave's mapped host port), or its name for the node's own check."""
    definition = check.get("Definition") or {}
    return str(definition.get("HTTP") or definition.get("TCP") or check["Name"])


def stop_local_registrar() -> None:
    pid_file = RUN_DIR / "registrar.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
            time.sleep(1)
        except (OSError, ValueError):
            pass
        pid_file.unlink(missing_ok=True)


def registrar_app_id() -> str:
    return str(json.loads((ROOT / "deploy" / "marathon.json").read_text())["id"])


def remove_app(marathon: str, app_id: str, what: str) -> None:
    """Delete `app_id` (forcing past a deployment still running for it) and wait until Marathon no
    longer has it and no deployment touches it: a POST of the same id before that is refused with
    409 "already exists" (the app's StopApplication step still runs after GET answers 404)."""
    app_url = f"{marathon}/v2/apps{app_id}"
    if call("GET", app_url)[0] == 200:
        call("DELETE", f"{app_url}?force=true")

    def gone() -> bool:
        status, deployments = call("GET", f"{marathon}/v2/deployments")
        busy = status == 200 and isinstance(deployments, list) and any(
            app_id in (d.get("affectedApps") or []) for d in deployments if isinstance(d, dict))
        return call("GET", app_url)[0] == 404 and not busy

    wait(f"the old {what} to go", gone, 60)


def start_registrar(marathon: str) -> None:
    """The registrar as a host process; in the TLS world with the options `devcluster up --tls` prints.
    A registrar app an `--as-app` run left is removed first (two registrars would share the lock)."""
    from devcluster.__main__ import world_registrar_options

    remove_app(marathon, registrar_app_id(), "registrar app")
    stop_local_registrar()
    pid_file = RUN_DIR / "registrar.pid"
    log = open(RUN_DIR / "registrar.log", "ab")  # handed to the child
    options = world_registrar_options()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--marathon", marathon, "--listen", "127.0.0.1:8000", *options,
         "--callback-url", f"{REGISTRAR}/v1/events", "--resync-interval", "30",
         # the lock is held through slave 1's agent: the test world has no agent on 127.0.0.1
         "--lock-agent", SLAVES[0].consul_url],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    pid_file.write_text(str(proc.pid))
    wait("the registrar to be ready", lambda: call("GET", f"{REGISTRAR}/ready")[0] == 200, 30)
    print(f"registrar running (pid {proc.pid}), {REGISTRAR}/metrics, log {RUN_DIR / 'registrar.log'}"
          + ("\n  over TLS: Marathon https with basic auth, Consul https with a client certificate, "
             "Docker on 2376 with a client certificate" if options else ""))


def _resolves_marathon_for_tasks(marathon: str) -> bool:
    """Whether the simulator gives its containers a name for itself (`--extra-host`, set by
    `devcluster up` since the registrar runs as an app): read from its command line."""
    if marathon != marathon_url():
        return True  # a simulator of the caller's own: the caller knows
    try:
        pid = int((RUN_DIR / "marathon-sim.pid").read_text())
        return b"--extra-host" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False


def deploy_registrar_app(marathon: str) -> None:
    """deploy/marathon.json unchanged, from the image built here (`ensure_image`)."""
    if not _resolves_marathon_for_tasks(marathon):
        raise SystemExit("demo: this Marathon simulator was started before it named itself to its tasks "
                         "(--extra-host); restart the world: .venv/bin/python -m devcluster down, "
                         "then ./scripts/demo --as-app")
    stop_local_registrar()
    print("making the image current on the slaves (the first time builds it: minutes)")
    ensure_image(log=lambda msg: print(f"  {msg}"))
    spec = json.loads((ROOT / "deploy" / "marathon.json").read_text())
    tls_dir = world_tls_dir()
    if tls_dir is not None:  # the certificates mounted, the TLS settings in env (devcluster.__main__.as_tls_app)
        from devcluster.__main__ import as_tls_app
        spec = as_tls_app(spec, tls_dir)
    app_url = f"{marathon}/v2/apps{spec['id']}"
    remove_app(marathon, spec["id"], "registrar app")
    status, body = call("POST", f"{marathon}/v2/apps", spec)
    if status != 201:
        raise SystemExit(f"demo: Marathon refused deploy/marathon.json: {status} {body}")

    def deployed() -> list[dict[str, Any]] | None:
        status, body = call("GET", app_url)
        if status != 200 or not isinstance(body, dict) or body["app"]["deployments"]:
            return None
        tasks = [t for t in body["app"].get("tasks", []) if t.get("state") == "TASK_RUNNING"]
        return tasks if len(tasks) == spec["instances"] else None

    tasks = wait("the registrar app (healthy and ready)", deployed, 120)
    print(f"registrar running as the Marathon app {spec['id']} (HOST networking):")
    for t in tasks:
        url = f"http://{t['host']}:{t['ports'][0]}"
        role = call("GET", f"{url}/v1/registrations")[1]
        print(f"  {t['id']} on {t['host']}: {url}/metrics  "
              f"role {role['leadership']['role'] if isinstance(role, dict) else '?'}")


def ensure_world(*, tls: bool, as_app: bool) -> None:
    """The world up in the mode asked for: one up in the other mode (or, for `--as-app`, with a
    Marathon simulator started before it named itself to its tasks) is taken down first."""
    from devcluster import __main__ as world

    running = world._alive(RUN_DIR / "marathon-sim.pid") is not None
    if running and (bool(world_tls_dir()) != tls or (as_app and not _resolves_marathon_for_tasks(marathon_url()))):
        print(f"demo: the world is up {'with' if world_tls_dir() else 'without'} TLS; taking it down first")
        world.down()
    world.up("1.10", tls=tls)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devcluster.demo", description=__doc__)
    parser.add_argument("--as-app", action="store_true",
                        help="run the registrar as the Marathon app of deploy/marathon.json, from its image")
    parser.add_argument("--marathon", help="the Marathon simulator (default: the world's, "
                                           "https with basic auth in the TLS world)")
    parser.add_argument("--world", choices=["plain", "tls"],
                        help="bring the test world up in this mode first (taking down one up in the other "
                             "mode); without it the world is used as it is")
    args = parser.parse_args(argv)
    if args.world is not None:
        ensure_world(tls=args.world == "tls", as_app=args.as_app)
    marathon = args.marathon or marathon_url()
    if args.as_app:
        deploy_registrar_app(marathon)
    else:
        start_registrar(marathon)
    remove_app(marathon, APP, "demo app")
    status, body = call("POST", f"{marathon}/v2/apps", APP_JSON)
    if status != 201:
        raise SystemExit(f"demo: Marathon refused the app: {status} {body}")
    print(f"deployed {APP} with 3 instances")
    if call("GET", f"{marathon}/v2/pods{POD}")[0] == 200:
        call("DELETE", f"{marathon}/v2/pods{POD}")
        wait("the old demo pod to go", lambda: call("GET", f"{marathon}/v2/pods{POD}")[0] == 404, 30)
    status, body = call("POST", f"{marathon}/v2/pods", POD_JSON)
    if status != 201:
        raise SystemExit(f"demo: Marathon refused the pod: {status} {body}")
    print(f"deployed the pod {POD} (Mesos containerizer on Weave's CNI plugin)")
    consul = SLAVES[0].consul_url

    def three_passing() -> list[dict[str, Any]] | None:
        status, body = call("GET", f"{consul}/v1/health/service/web?passing=1")
        return body if status == 200 and isinstance(body, list) and len(body) == 3 else None

    instances = wait("3 passing instances of web in Consul", three_passing, 60)
    print("\nConsul holds (service web):")
    for inst in sorted(instances, key=lambda i: i["Service"]["Address"]):
        svc = inst["Service"]
        checks = ", ".join(f"{c['Status']} {_check_target(c)}" for c in inst["Checks"])
        print(f"  {svc['ID']}\n    node {inst['Node']['Node']}  address {svc['Address']}:{svc['Port']}  "
              f"tags {svc['Tags']}\n    checks: {checks}")
    name = "site1.customer1.web.service.dc1.consul"
    print(f"\n$ dig @127.0.0.1 -p 8600 {name} +short")
    out = subprocess.run(["dig", "@127.0.0.1", "-p", "8600", name, "+short"], capture_output=True, text=True)
    print(out.stdout.rstrip())

    def pod_passing() -> list[dict[str, Any]] | None:
        status, body = call("GET", f"{consul}/v1/health/service/web-pod?passing=1")
        return body if status == 200 and isinstance(body, list) and len(body) == 1 else None

    [pod] = wait("the pod's instance of web-pod passing in Consul", pod_passing, 60)
    svc = pod["Service"]
    print(f"\nConsul holds (service web-pod): {svc['ID']}\n    node {pod['Node']['Node']}  "
          f"address {svc['Address']}:{svc['Port']}  checks: "
          + ", ".join(f"{c['Status']} {_check_target(c)}" for c in pod["Checks"]))
    print("\n$ dig @127.0.0.1 -p 8600 web-pod.service.consul +short")
    out = subprocess.run(["dig", "@127.0.0.1", "-p", "8600", "web-pod.service.consul", "+short"],
                         capture_output=True, text=True)
    print(out.stdout.rstrip())
    ip = instances[0]["Service"]["Address"]
    print(f"\n$ curl http://{ip}:80/")
    with urllib.request.urlopen(f"http://{ip}:80/", timeout=5) as resp:
        print(resp.read().decode().rstrip())
    print("\nStop everything with: .venv/bin/python -m devcluster down")


if __name__ == "__main__":
    main()
