"""Start and stop private Consul simulator processes for the consul_sim tests.

Each test module runs its own simulator on addresses the test world never uses (agents on
127.0.0.20/21, DNS on 127.0.0.1:186xx), and stops it by pid, so these tests need neither Docker
nor `python -m devcluster up`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[2]
AGENT1 = "127.0.0.20"
AGENT2 = "127.0.0.21"


@dataclass
class SimProc:
    proc: subprocess.Popen[bytes]
    port: int
    dns_port: int
    log_path: Path

    def url(self, host: str = AGENT1) -> str:
        return f"http://{host}:{self.port}"

    def put(self, path: str, body: Any = None, host: str = AGENT1, **kw: Any) -> requests.Response:
        data = body if isinstance(body, (bytes, str)) or body is None else requests.compat.json.dumps(body)
        return requests.put(self.url(host) + path, data=data, timeout=30, **kw)

    def get(self, path: str, host: str = AGENT1, **kw: Any) -> requests.Response:
        return requests.get(self.url(host) + path, timeout=30, **kw)

    def reset(self) -> None:
        requests.post(self.url() + "/_sim/reset", timeout=5).raise_for_status()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _wait_tcp(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"consul simulator exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"consul simulator not listening on {host}:{port}")


@contextmanager
def consul_sim(port: int, dns_port: int, tmp: Path, *extra: str) -> Iterator[SimProc]:
    """Run `python -m devcluster.consul_sim` with two agents; stop it by pid afterwards."""
    log_path = tmp / f"consul-sim-{port}.log"
    argv = [sys.executable, "-m", "devcluster.consul_sim",
            "--agent", f"{AGENT1}:{port}=node-a", "--agent", f"{AGENT2}:{port}=node-b",
            "--dns", f"127.0.0.1:{dns_port}", *extra]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=REPO, start_new_session=True)
    try:
        _wait_tcp(AGENT1, port, proc)
        _wait_tcp(AGENT2, port, proc)
        yield SimProc(proc, port, dns_port, log_path)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
