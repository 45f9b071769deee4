"""Where every part of the test world lives; one place so tests, demo and bench agree.

The world runs plain or with TLS (`python -m devcluster up --tls`); `up --tls` leaves a mark
(`TLS_MARK`, holding the certificate directory) that `up` without it and `down` remove, so that the
URLs here are the ones the running world serves: `https://` Consul agents and Marathon (with basic
auth), Docker's TLS port 2376. Read the mark before starting a client, not once per process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STATE_DIR = Path("/var/lib/devcluster")
RUN_DIR = STATE_DIR / "run"  # pid files and logs of the simulators
TLS_MARK = RUN_DIR / "tls-world"  # present while the world runs with TLS: the certificate directory
# the TLS world's Marathon credentials (a test world's, printed by `up --tls`: nothing to protect)
TLS_MARATHON_CREDENTIALS = "registrar:devcluster-marathon-pw"


def world_tls_dir() -> Path | None:
    """The running world's certificate directory when it runs with TLS, else None."""
    try:
        return Path(TLS_MARK.read_text().strip())
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class Slave:
    """One Mesos slave: its address (what Marathon reports as the task host), its Docker engine,
    and the Docker network that carries the Weave overlay on it."""

    name: str
    host: str
    docker_socket: str
    overlay_network: str
    # "bridge" (the article's), "plugin" (a Docker network `weave`), "proxy" (Weave's Docker API
    # proxy: containers on a docker0-like bridge, the Weave IP on `ethwe`, unknown to Docker) or
    # "cni" (the Mesos containerizer on Weave's CNI plugin: no Docker API at all on the slave's address)
    layout: str = "bridge"

    @property
    def docker_url(self) -> str:
        """The slave's Docker API over TCP: plain on 2375, or TLS-only on 2376 (client certificate
        from `world_tls_dir()/docker/{host}`) in the TLS world. The CNI slave has none: nothing
        listens there, as on a Mesos agent that runs no Docker engine."""
        return f"tcp://{self.host}:{2376 if world_tls_dir() else 2375}"

    @property
    def containerizer(self) -> str:
        """Mesos' containerizer of the slave's tasks: "mesos" (UCR) on the CNI slave, else "docker"."""
        return "mesos" if self.layout == "cni" else "docker"

    @property
    def docker_local_url(self) -> str:
        return f"unix://{self.docker_socket}"

    @property
    def weave_proxy_url(self) -> str | None:
        """The slave's Weave proxy with `--rewrite-inspect` (proxy layout only), on Weave's TCP port."""
        return f"tcp://{self.host}:{WEAVE_PROXY_PORT}" if self.layout == "proxy" else None

    @property
    def consul_url(self) -> str:
        return f"{'https' if world_tls_dir() else 'http'}://{self.host}:{CONSUL_HTTP_PORT}"


# slave 1: the article's layout (dockerd --bridge=weave), so the overlay IP is under Networks.bridge;
# slave 2: the Weave 1.x plugin layout, a Docker network named `weave` on the same bridge;
# slave 3: Weave's recommended layout, the Docker API proxy (devcluster/weave_proxy_sim.py): containers
#   on the default bridge (docker0-like, 172.17.0.0/16), wrapped in /w/w, then attached to the `weave`
#   bridge with an `ethwe` from the allocator's range -- an IP Docker never learns.
SLAVES = (
    Slave("slave1", "127.0.0.2", str(STATE_DIR / "s1.sock"), "bridge", "bridge"),
    Slave("slave2", "127.0.0.3", str(STATE_DIR / "s2.sock"), "weave", "plugin"),
    Slave("slave3", "127.0.0.4", str(STATE_DIR / "s3.sock"), "bridge", "proxy"),
)
PROXY_SLAVE = SLAVES[2]
# slave 4: Weave's CNI plugin under the Mesos (unified) containerizer (reference marathon-ucr-pods.md
#   §1.3-§1.4): `container.type: MESOS` apps and pods run here. Its containers come from a private
#   runtime (a dockerd on a unix socket only, no TCP port: the stand-in for UCR, which no Docker API
#   knows), on the `weave` bridge with addresses from this slave's range, as the CNI plugin's IPAM
#   gives them; the host's address on the bridge (10.32.0.1) is the one the plugin gives the host
#   (`weave:expose`), so the local Consul agent reaches the overlay. Not in SLAVES: those are the
#   Docker-containerizer slaves (each with a Docker API the registrar may ask).
CNI_SLAVE = Slave("slave4", "127.0.0.5", str(STATE_DIR / "s4-ucr" / "runtime.sock"), "weave", "cni")
CNI_RANGE = "10.32.4.0/24"  # slave 4's share of the overlay (10.32.0.0/12)
ALL_SLAVES = (*SLAVES, CNI_SLAVE)  # every Mesos agent: each has a Consul agent
WEAVE_PROXY_PORT = 12375  # Weave's default TCP port for the proxy (reference weave.md §3)
WEAVE_PROXY_RANGE = "10.32.3.0/24"  # the allocator's range on slave 3 (inside the overlay 10.32.0.0/12)
WEAVE_PROXY_DIR = STATE_DIR / "weave-w"  # the proxy's /w volume: the weavewait stand-in and a static busybox

CONSUL_HTTP_PORT = 8500
CONSUL_DNS = ("127.0.0.1", 8600)
CONSUL_DATACENTER = "dc1"
MARATHON_LISTEN = ("127.0.0.1", 8080)
# the registrar-as-app tests' own Marathon simulators (tests/registrar_app.py), one per version
APP_MARATHON_HOSTS = {"1.10": "127.0.0.10", "1.4": "127.0.0.11"}


def marathon_url(listen: tuple[str, int] = MARATHON_LISTEN, *, tls: bool | None = None) -> str:
    """A Marathon simulator of the world (the world's own by default) as the registrar's --marathon
    takes it: HTTPS with basic auth, the credentials in the URL, when `tls` (default: when the world
    runs with TLS), else plain HTTP."""
    if tls if tls is not None else world_tls_dir():
        return f"https://{TLS_MARATHON_CREDENTIALS}@{listen[0]}:{listen[1]}"
    return f"http://{listen[0]}:{listen[1]}"
IMAGE = "local/busybox:1"
OVERLAY_CIDR = "10.32.0.0/12"
