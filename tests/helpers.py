"""Helpers shared by the integration and end-to-end tests: processes we start and stop by pid,
polling, and thin HTTP calls against the simulators and the registrar."""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from devcluster.topology import CNI_SLAVE, RUN_DIR, SLAVES
from devcluster.world_http import open_url

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], T], timeout: float = 15.0, interval: float = 0.1, what: str = "") -> T:
    """Poll until `condition()` is truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except Exception as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}: last value {last!r}")


def http(method: str, url: str, body: Any = None, *, headers: dict[str, str] | None = None,
         raw: bytes | None = None, timeout: float = 10.0) -> tuple[int, Any, dict[str, str]]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    hdrs = {"Content-Type": "application/json"} if data is not None else {}
    hdrs.update(headers or {})
    try:
        with open_url(method, url, data, hdrs, timeout) as resp:
            status, text, h = resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        status, text, h = err.code, err.read().decode(), dict(err.headers)
    try:
        return status, json.loads(text) if text else None, h
    except json.JSONDecodeError:
        return status, text, h


_LIVE: set[Process] = set()


@atexit.register
def _stop_leftovers() -> None:
    """A test that failed before its `finally` must not leave its processes running."""
    for proc in list(_LIVE):
        proc.stop(signal.SIGKILL, timeout=5)


class Process:
    """A child process we started, logged to a file, stopped by its pid (at the latest at exit)."""

    def __init__(self, argv: list[str], name: str, env: dict[str, str] | None = None, *, module: bool = True) -> None:
        """`argv` is a Python module and its arguments, or (`module=False`) a whole command line."""
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = RUN_DIR / f"test-{name}-{os.getpid()}.log"
        self.log = open(self.log_path, "wb")
        command = [sys.executable, "-m", *argv] if module else argv
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=ROOT, env={**os.environ, **(env or {})}, start_new_session=True)
        _LIVE.add(self)

    def tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        _LIVE.discard(self)
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        return self.proc.returncode


def world_is_up() -> bool:
    def listening(host: str, port: int) -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    return (all(listening(s.host, int(s.docker_url.rpartition(":")[2])) and listening(s.host, 8500) for s in SLAVES)
            # the CNI slave: its Consul agent and its private runtime's socket (it has no Docker port)
            and listening(CNI_SLAVE.host, 8500) and os.path.exists(CNI_SLAVE.docker_socket)
            and listening("127.0.0.1", 8080))


def ensure_world() -> None:
    """Bring the test world up if it is not (idempotent); fail loudly if it cannot come up."""
    if world_is_up():
        return
    result = subprocess.run([sys.executable, "-m", "devcluster", "up"], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0 or not world_is_up():
        raise RuntimeError(f"the test world did not come up:\n{result.stdout}\n{result.stderr}")
