"""`python -m devcluster up|down|status`: bring the whole test world up, or stop exactly what we started.

Slaves are real dockerd processes (devcluster/slaves-up.sh, verified in the reference); the two
simulators run as background processes whose pids go to RUN_DIR. `up` twice is harmless: a part
whose pid file names a live process is left alone.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from devcluster.topology import (
    CONSUL_DNS,
    CONSUL_HTTP_PORT,
    MARATHON_LISTEN,
    MARATHON_URL,
    RUN_DIR,
    SLAVES,
)

HERE = Path(__file__).resolve().parent


def _alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def _wait_tcp(host: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"devcluster: nothing listening on {host}:{port} after {timeout:.0f} s")


def _start(name: str, argv: list[str], wait_for: tuple[str, int]) -> None:
    pid_file = RUN_DIR / f"{name}.pid"
    if _alive(pid_file):
        return
    log = open(RUN_DIR / f"{name}.log", "ab")  # handed to the child, closed by it
    proc = subprocess.Popen(
        [sys.executable, "-m", *argv], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, cwd=HERE.parent,
    )
    pid_file.write_text(str(proc.pid))
    try:
        _wait_tcp(*wait_for)
    except SystemExit:
        print((RUN_DIR / f"{name}.log").read_text()[-3000:], file=sys.stderr)
        raise


def _stop(name: str, timeout: float = 10.0) -> None:
    pid_file = RUN_DIR / f"{name}.pid"
    pid = _alive(pid_file)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


def consul_sim_argv() -> list[str]:
    argv = ["devcluster.consul_sim"]
    for s in SLAVES:
        argv += ["--agent", f"{s.host}:{CONSUL_HTTP_PORT}={s.name}"]
    return [*argv, "--dns", f"{CONSUL_DNS[0]}:{CONSUL_DNS[1]}"]


def marathon_sim_argv(version: str, listen: tuple[str, int] = MARATHON_LISTEN) -> list[str]:
    argv = ["devcluster.marathon_sim", "--listen", f"{listen[0]}:{listen[1]}", "--marathon-version", version]
    for s in SLAVES:
        argv += ["--slave", f"{s.host}=unix://{s.docker_socket}:{s.overlay_network}"]
    return argv


def up(marathon_version: str) -> None:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(["bash", str(HERE / "slaves-up.sh")], check=True, stdout=subprocess.DEVNULL)
    _start("consul-sim", consul_sim_argv(), (SLAVES[0].host, CONSUL_HTTP_PORT))
    _start("marathon-sim", marathon_sim_argv(marathon_version), MARATHON_LISTEN)
    print("test world is up")
    for s in SLAVES:
        print(f"  {s.name}: host {s.host}, docker {s.docker_url}, consul agent {s.consul_url}, "
              f"overlay network '{s.overlay_network}'")
    print(f"  marathon simulator {marathon_version}: {MARATHON_URL}")
    print(f"  consul DNS: dig @{CONSUL_DNS[0]} -p {CONSUL_DNS[1]} web.service.consul")
    print(f"  logs and pid files: {RUN_DIR}")


def down() -> None:
    _stop("registrar")  # the demo's, if it ran
    _stop("marathon-sim")
    _stop("consul-sim")
    subprocess.run(["bash", str(HERE / "slaves-down.sh")], check=False, stdout=subprocess.DEVNULL)
    print("test world is down")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devcluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start slaves, Consul simulator and Marathon simulator")
    p_up.add_argument("--marathon-version", choices=["1.4", "1.10"], default="1.10")
    sub.add_parser("down", help="stop everything `up` started and remove its containers")
    args = parser.parse_args()
    if args.command == "up":
        up(args.marathon_version)
    else:
        down()


if __name__ == "__main__":
    main()
