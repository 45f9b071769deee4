"""Simulator configuration and the version switches derived from `--marathon-version`.

Behaviour that changed between Marathon releases is gated here, by version number, so the rest of
the code asks "does this Marathon have X" instead of comparing version strings everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SlaveConfig:
    """One Mesos slave: the host Marathon reports, its Docker engine, the Docker network of the overlay."""

    host: str
    docker_url: str
    overlay_network: str
    # Weave's proxy layout: the host directory of the proxy's `/w` volume. Containers of non-host apps
    # are created as the proxy's create interceptor makes them (reference weave.md §1.4, §1.5).
    weave_proxy_dir: str | None = None
    # "mesos": the Mesos (unified) containerizer on Weave's CNI plugin, which runs `container.type:
    # MESOS` apps and pods (and no Docker-containerizer task); DOCKER_URL is then the private runtime
    # that stands in for it (reference marathon-ucr-pods.md §1.3), never a Docker API of the slave
    containerizer: str = "docker"

    @classmethod
    def parse(cls, text: str) -> SlaveConfig:
        """`HOST=DOCKER_URL:OVERLAY_NETWORK[+weave-proxy=W_DIR|+mesos]`; the network is split off at
        the *last* colon because the Docker URL has colons of its own."""
        mesos = text.endswith("+mesos")
        text = text.removesuffix("+mesos")
        text, _, proxy = text.partition("+weave-proxy=")
        host, sep, rest = text.partition("=")
        url, sep2, network = rest.rpartition(":")
        if not sep or not sep2 or not host or not url or not network or "/" in network:
            raise ValueError(f"--slave must be HOST=DOCKER_URL:OVERLAY_NETWORK[+weave-proxy=W_DIR|+mesos], "
                             f"got {text!r}")
        return cls(host=host, docker_url=url, overlay_network=network, weave_proxy_dir=proxy or None,
                   containerizer="mesos" if mesos else "docker")


@dataclass(frozen=True)
class SimConfig:
    version: tuple[int, int]
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    slaves: tuple[SlaveConfig, ...] = ()
    heartbeat_interval: float = 10.0
    standby_of: str | None = None
    http_endpoints: tuple[str, ...] = ()
    http_event_request_timeout: float = 10.0
    http_event_callback_slow_consumer_timeout: float = 10.0
    default_network_name: str | None = "weave"
    strict_deployment_lock: bool = False
    # the TLS world (`devcluster up --tls`): HTTPS with this certificate, and HTTP basic auth as
    # Marathon's --http_credentials gives it (every path but the simulator's own /_sim/ control)
    tls_cert: str | None = None
    tls_key: str | None = None
    http_credentials: str | None = None  # "user:password"
    # `NAME:IP` pairs every task container resolves (Docker's --add-host): the test world's stand-in
    # for a slave's own resolver (in a cluster, dnsmasq forwarding `.consul` to the local agent)
    extra_hosts: tuple[str, ...] = ()

    @property
    def version_string(self) -> str:
        return f"{self.version[0]}.{self.version[1]}.0"

    @property
    def callbacks(self) -> bool:
        """HTTP callback subscriptions exist up to 1.4 (removed in 1.5); the sim always enables them
        there, as if started with `--event_subscriber http_callback`."""
        return self.version < (1, 5)

    @property
    def instance_task_ids(self) -> bool:
        """`<safe>.instance-<uuid>._app.<n>` from 1.8, legacy `<safe>.<uuid>` before."""
        return self.version >= (1, 8)

    @property
    def new_app_json(self) -> bool:
        """`networks` + `container.portMappings` output shape from 1.5."""
        return self.version >= (1, 5)

    @property
    def omit_empty_task_fields(self) -> bool:
        """1.4's task writer leaves out empty ipAddresses/servicePorts/healthCheckResults."""
        return self.version < (1, 5)

    @property
    def failed_health_check_key(self) -> str:
        """`failed_health_check_event` names the instance id `instanceId` in 1.4, `taskId` from 1.5."""
        return "instanceId" if self.version < (1, 5) else "taskId"

    @property
    def role_field(self) -> bool:
        return self.version >= (1, 9)

    @property
    def max_outstanding_messages(self) -> int:
        return 50 if self.version < (1, 5) else 1024

    @property
    def close_slow_sse_consumers(self) -> bool:
        """Up to 1.7 events beyond the buffer are dropped; from 1.8 the connection is closed."""
        return self.version >= (1, 8)

    def light_plan(self, plan_format: str | None) -> bool:
        """Whether deployment events carry the light plan for an SSE client asking `plan-format`."""
        if self.version >= (1, 8):
            return True
        if self.version >= (1, 7):
            return True  # light by default; heavy only with a deprecated feature the sim lacks
        if self.version >= (1, 5):
            return plan_format == "light"  # 1.5.9+ accepts the parameter; heavy by default
        return False

    @property
    def listen(self) -> str:
        return f"{self.listen_host}:{self.listen_port}"


def parse_version(text: str) -> tuple[int, int]:
    parts = text.split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:2]) or parts[0] != "1":
        raise ValueError(f"--marathon-version must look like 1.4 or 1.10, got {text!r}")
    version = (int(parts[0]), int(parts[1]))
    if not (1, 4) <= version <= (1, 10):
        raise ValueError("--marathon-version: the simulator models 1.4 to 1.10")
    return version
