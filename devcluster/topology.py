"""Where every part of the test world lives; one place so tests, demo and bench agree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STATE_DIR = Path("/var/lib/devcluster")
RUN_DIR = STATE_DIR / "run"  # pid files and logs of the simulators


@dataclass(frozen=True)
class Slave:
    """One Mesos slave: its address (what Marathon reports as the task host), its Docker engine,
    and the Docker network that carries the Weave overlay on it."""

    name: str
    host: str
    docker_socket: str
    overlay_network: str

    @property
    def docker_url(self) -> str:
        return f"tcp://{self.host}:2375"

    @property
    def docker_local_url(self) -> str:
        return f"unix://{self.docker_socket}"

    @property
    def consul_url(self) -> str:
        return f"http://{self.host}:{CONSUL_HTTP_PORT}"


# slave 1: the article's layout (dockerd --bridge=weave), so the overlay IP is under Networks.bridge;
# slave 2: the Weave 1.x plugin layout, a Docker network named `weave` on the same bridge.
SLAVES = (
    Slave("slave1", "127.0.0.2", str(STATE_DIR / "s1.sock"), "bridge"),
    Slave("slave2", "127.0.0.3", str(STATE_DIR / "s2.sock"), "weave"),
)

CONSUL_HTTP_PORT = 8500
CONSUL_DNS = ("127.0.0.1", 8600)
CONSUL_DATACENTER = "dc1"
MARATHON_LISTEN = ("127.0.0.1", 8080)
MARATHON_URL = f"http://{MARATHON_LISTEN[0]}:{MARATHON_LISTEN[1]}"
IMAGE = "local/busybox:1"
OVERLAY_CIDR = "10.32.0.0/12"
