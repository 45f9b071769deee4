"""Child processes the bench starts (and only those: stopped by their own pid), and what /proc says
about them: CPU seconds (utime+stime) and resident memory (VmRSS, peak VmHWM)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / "bench" / "results" / "logs"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (its threads included), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of `pid` in MB (10^6 bytes)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) * 1024 / 1e6, 1)
    return out


class Proc:
    """`python -m <argv>` in a new session, logged to bench/results/logs/<name>.log."""

    def __init__(self, name: str, argv: list[str], code: Path = ROOT) -> None:
        """`code`: the tree whose modules run (another checkout, for a before/after pair)."""
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = LOG_DIR / f"{name}.log"
        env = {**os.environ, "PYTHONPATH": str(code)} if code != ROOT else None
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", *argv], stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=code, start_new_session=True, env=env)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def memory(self) -> dict[str, float]:
        return memory_mb(self.pid)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM this pid, SIGKILL after `timeout`; never anything but our own child."""
        if self.proc.poll() is not None:
            return
        os.kill(self.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait()


async def wait_http(url: str, proc: Proc, limit_s: float = 60.0, ok: tuple[int, ...] = (200,)) -> None:
    """Poll `url` until it answers one of `ok`; fail early with the log tail if `proc` died."""
    deadline = time.monotonic() + limit_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s:
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
            try:
                async with s.get(url) as r:
                    if r.status in ok:
                        return
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{proc.name}: {url} not ready after {limit_s:.0f} s:\n{proc.tail()}")


PROFILE_DIR = ROOT / "bench" / "results" / "profiles"
PROFILE = False  # set by `python -m bench --profile`


class Profiler:
    """`py-spy record` on one of our processes for the measured window (only with --profile; py-spy
    is a tool of the person profiling, not a dependency: `.venv/bin/pip install py-spy`)."""

    def __init__(self, pid: int, name: str) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        if not PROFILE:
            return
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
        spy = Path(sys.executable).parent / "py-spy"
        self.out = PROFILE_DIR / f"{name}.txt"
        self.proc = subprocess.Popen([str(spy), "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
                                      "--nonblocking", "-o", str(self.out)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
