"""Operator-facing configuration: the `serve` options of the README, each also read from MCR_<OPTION>.

Precedence: command line, then `MCR_<OPTION>` env, then the default (which may itself come from the
Marathon-provided env: `$HOST`, `$PORT0`, and Consul's and Docker's own names such as
`CONSUL_HTTP_TOKEN`). A default that depends on another option (`DERIVED`: the lock agent from
`--consul`, the callback URL from `--listen`) is derived in `config_from_args`, after flags and env
are merged, so it follows that option however it was given. Validation happens here, once, so a
bad value stops the process at start with one line naming the option.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from service.connect import TLSOptions
from service.leadership import LOCK_DELAY_BOUNDS, LOCK_TTL_BOUNDS
from service.model import (
    DEFAULT_NAME_OVERRIDE,
    DEFAULT_OVERLAY_CIDRS,
    AddressMode,
    Cidr,
    HealthCheckMode,
    NameOverride,
    Naming,
)
from service.option_checks import ConfigError as ConfigError
from service.option_checks import (
    boolean,
    checked_url,
    choice,
    cidrs,
    directory,
    docker_tls_options,
    https,
    number,
    readable_file,
    tls_files,
    token_file,
)
from service.ownership import CLUSTER_ID, CLUSTER_ID_RULE
from service.redact import redact
from service.tokens import read_token


class Transport(StrEnum):
    """--events: how Marathon's events reach us (AUTO is resolved at start, from /v2/info)."""

    AUTO = "auto"
    CALLBACK = "callback"
    SSE = "sse"


class LockMode(StrEnum):
    """--lock: AUTO holds the lock unless the agent offers no sessions; OFF is a single instance."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


@dataclass(frozen=True)
class Config:
    marathon: tuple[str, ...]
    events: Transport
    listen_host: str
    listen_port: int
    callback_url: str | None
    consul: str
    consul_token: str | None
    docker: str
    networks: tuple[str, ...]
    address_mode: AddressMode
    naming: Naming
    resync_interval: float
    health_checks: HealthCheckMode
    workers: int
    log_level: str
    lock: LockMode = LockMode.AUTO
    lock_ttl: int = 15
    lock_delay: int = 15
    lock_agent: str = "http://127.0.0.1:8500"
    lock_check_interval: float = 1.0  # the lock session's liveness check (0: none); see service.leadership
    cluster_id: str | None = None
    overlay_cidrs: tuple[Cidr, ...] = DEFAULT_OVERLAY_CIDRS
    weave_exec_lookup: bool = False
    allow_name_override: NameOverride = DEFAULT_NAME_OVERRIDE
    consul_token_file: str | None = None  # wins over consul_token (as in Consul's own API client)
    marathon_token_file: str | None = None
    docker_tls: TLSOptions | None = None  # None: plain TCP; paths may hold {host} (per-slave certificates)
    consul_tls: TLSOptions | None = None  # for https:// agent URLs (and the lock agent)
    marathon_tls: TLSOptions | None = None  # for https:// Marathon URLs
    listen_tls_cert: str | None = None
    listen_tls_key: str | None = None
    callback_secret_file: str | None = None


# option -> (default, help); defaults that depend on the environment are computed in `_defaults`
OPTIONS: dict[str, str] = {
    "marathon": "Marathon URL(s), comma separated; user:password@ in a URL for basic auth",
    "events": "event transport: auto (callbacks if /v2/info shows an http_callback subscriber, else SSE), "
              "callback or sse",
    "listen": "HOST:PORT of the registrar's HTTP server",
    "callback-url": "URL Marathon posts events to (callback transport)",
    "consul": "Consul agent URL template; {host} = the task's host",
    "consul-token": "Consul ACL token",
    "docker": "Docker Engine API URL template of each slave; {host} = the task's host",
    "networks": "Docker networks (and the CNI network names of pod instances) whose IP is the overlay IP, in order of "
                "preference",
    "address-mode": "without an overlay IP: auto = fall back to host:hostPort, overlay = wait, host = always host",
    "naming": "naming strategy: dns (name = first path segment, tags = deeper levels) or flat",
    "resync-interval": "seconds between full resyncs",
    "health-checks": "which checks Consul runs: consul (translated Marathon checks), marathon (TTL checks "
                     "mirroring Marathon's verdict) or both",
    "workers": "apps reconciled concurrently",
    "log-level": "DEBUG, INFO, WARNING or ERROR",
    "lock": "one writer among several instances through a Consul lock: auto (on when the agent offers "
            "sessions), on, or off (a single instance)",
    "lock-ttl": "seconds: the lock session's TTL (Consul: 10 to 86400), the backstop for a holder whose renewals stop",
    "lock-delay": "seconds: Consul's lock-delay after a holder's session is invalidated (0 to 60); the holder "
                  "writes only within this minus min(1, this/3) of its last acknowledged renew",
    "lock-agent": "Consul agent URL the lock session is held through",
    "lock-check-interval": "seconds between the lock agent's checks of this instance's /health, to which the "
                           "lock session is bound (1 or more; 0: no such check, serfHealth and the TTL only)",
    "cluster-id": "identity of this Marathon cluster in Meta and the lock key (default: Marathon's frameworkId)",
    "overlay-cidr": "CIDR(s) of the overlay, comma separated; an address outside them is never registered as "
                    "an overlay address",
    "weave-exec-lookup": "also read a Weave-proxied container's IP with `ip addr show dev ethwe` through the "
                         "exec API when its /etc/hosts has no Weave block (true/false)",
    "allow-name-override": "which consul.name / SERVICE_NAME overrides an app may claim: group (its top-level "
                           "group's name or <group>-*), any, or none",
    "consul-token-file": "file holding the Consul ACL token, re-read when it changes; wins over --consul-token",
    "marathon-token-file": "file holding a DC/OS-style Marathon token (Authorization: token=...), re-read when "
                           "it changes; wins over user:password@",
    "marathon-cacert": "CA file for https:// Marathon URLs (default: the system store)",
    "docker-tls": "TLS to the Docker Engine API: off, verify (server certificate checked against ca.pem) or "
                  "no-verify; an https:// --docker URL means verify",
    "docker-cert-path": "directory with ca.pem, cert.pem, key.pem (client certificate optional); {host} = the "
                        "task's host for per-slave certificates",
    "docker-tls-server-name": "name the Docker engines' certificates are checked against (default: the host)",
    "consul-http-ssl": "true: talk HTTPS to the Consul agents (http:// URLs become https://)",
    "consul-http-ssl-verify": "false: do not check the agents' certificates",
    "consul-cacert": "CA file for the agents' certificates",
    "consul-capath": "directory of CA files for the agents' certificates",
    "consul-client-cert": "client certificate presented to the agents (with --consul-client-key)",
    "consul-client-key": "key of --consul-client-cert",
    "consul-tls-server-name": "name the agents' certificates are checked against (default: the host)",
    "listen-tls-cert": "certificate (chain) of the registrar's own HTTP server; with --listen-tls-key it serves HTTPS",
    "listen-tls-key": "key of --listen-tls-cert",
    "callback-secret-file": "file holding a secret: Marathon posts to /v1/events/<secret>, any other "
                            "/v1/events path is answered 404 and counted",
}
# Options that may be given without a value (meaning "true").
FLAGS = frozenset({"weave-exec-lookup", "consul-http-ssl", "consul-http-ssl-verify"})


# a callback secret becomes a URL path segment: unreserved characters only, long enough to guess at
_URL_SECRET = re.compile(r"[A-Za-z0-9._~-]{16,256}")

# options whose value is itself a secret: never shown, not even as a default in --help
SECRET_OPTIONS = frozenset({"consul-token"})


def secret_values(config: Config) -> list[str]:
    """Every secret the configuration holds, as it may appear in text: the Consul token, each
    Marathon password and the `Authorization: Basic` value built from it (see service.redact)."""
    values: list[str | None] = [config.consul_token]
    for url in config.marathon:
        parts = urllib.parse.urlsplit(url)
        if parts.password:
            user, password = urllib.parse.unquote(parts.username or ""), urllib.parse.unquote(parts.password)
            basic = base64.b64encode(f"{user}:{password}".encode()).decode()
            values += [parts.password, password, basic]
    return [v for v in values if v]


# options whose default is derived from other options once all are merged: what --help shows
DERIVED = {
    "lock-agent": "--consul with {host} = $HOST (127.0.0.1 without $HOST)",
    "callback-url": "http://$HOST:<--listen's port>/v1/events with $HOST (https with --listen-tls-cert)",
}
# the Marathon-provided env a derivation reads, carried in the parsed arguments
_DERIVED_ENV = "derived_env"


def _defaults(env: Mapping[str, str]) -> dict[str, str | None]:
    port0 = env.get("PORT0")
    return {
        "marathon": "http://127.0.0.1:8080",
        "events": "auto",
        "listen": f"0.0.0.0:{port0}" if port0 else "0.0.0.0:8000",
        "callback-url": None,  # derived: DERIVED
        "consul": "http://{host}:8500",
        "consul-token": env.get("CONSUL_HTTP_TOKEN"),
        "docker": "tcp://{host}:2375",
        "networks": "weave,bridge",
        "address-mode": "auto",
        "naming": "dns",
        "resync-interval": "60",
        "health-checks": "consul",
        "workers": "16",
        "log-level": "INFO",
        "lock": "auto",
        "lock-ttl": "15",
        "lock-delay": "15",
        "lock-agent": None,  # derived: DERIVED
        "lock-check-interval": "1",
        "cluster-id": None,
        "overlay-cidr": ",".join(map(str, DEFAULT_OVERLAY_CIDRS)),
        "weave-exec-lookup": "false",
        "allow-name-override": DEFAULT_NAME_OVERRIDE.value,
        "consul-token-file": env.get("CONSUL_HTTP_TOKEN_FILE"),
        "marathon-token-file": None,
        "marathon-cacert": None,
        "docker-tls": "verify" if env.get("DOCKER_TLS_VERIFY") else "off",  # Docker: any non-empty value
        "docker-cert-path": env.get("DOCKER_CERT_PATH") or os.path.join(env.get("HOME") or "~", ".docker"),
        "docker-tls-server-name": None,
        "consul-http-ssl": env.get("CONSUL_HTTP_SSL") or "false",
        "consul-http-ssl-verify": env.get("CONSUL_HTTP_SSL_VERIFY") or "true",
        "consul-cacert": env.get("CONSUL_CACERT"),
        "consul-capath": env.get("CONSUL_CAPATH"),
        "consul-client-cert": env.get("CONSUL_CLIENT_CERT"),
        "consul-client-key": env.get("CONSUL_CLIENT_KEY"),
        "consul-tls-server-name": env.get("CONSUL_TLS_SERVER_NAME"),
        "listen-tls-cert": None,
        "listen-tls-key": None,
        "callback-secret-file": None,
    }


def _lock_agent_default(consul: str, host: str | None) -> str:
    """The agent on this instance's own host (Marathon sets $HOST), so the session is bound to the
    health of the node the instance runs on; else the agent template's fixed URL, else loopback."""
    return consul.replace("{host}", host or "127.0.0.1")


def _callback_url_default(host: str | None, port: int, tls: bool) -> str | None:
    """Where this process listens, by the node name Marathon knows it by ($HOST; deploy/README.md:
    HOST networking, so that is the address it really listens on). Nothing without $HOST."""
    return f"{'https' if tls else 'http'}://{host}:{port}/v1/events" if host else None


def env_name(option: str) -> str:
    return "MCR_" + option.upper().replace("-", "_")


def add_serve_options(parser: argparse.ArgumentParser, env: Mapping[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    defaults = _defaults(env)
    parser.set_defaults(**{_DERIVED_ENV: {"HOST": env.get("HOST") or None}})
    for option, help_text in OPTIONS.items():
        default = env.get(env_name(option), defaults[option])
        if default is None:
            shown = DERIVED.get(option, "(none)")
        else:
            shown = "***" if option in SECRET_OPTIONS and default else redact(default)
        flag: dict[str, Any] = {"nargs": "?", "const": "true"} if option in FLAGS else {}
        parser.add_argument(f"--{option}", default=default, metavar=option.split("-")[-1].upper(),
                            help=f"{help_text} [env {env_name(option)}; default {shown}]", **flag)


def config_from_args(args: argparse.Namespace) -> Config:
    marathon = tuple(u.strip().rstrip("/") for u in str(args.marathon).split(",") if u.strip())
    if not marathon:
        raise ConfigError("--marathon: no URL given")
    for url in marathon:
        checked_url("marathon", url, ("http", "https"))
    host, sep, port = str(args.listen).rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--listen: {args.listen!r} is not HOST:PORT")
    events = Transport(choice("events", args.events, tuple(Transport)))
    derived_env: Mapping[str, str | None] = getattr(args, _DERIVED_ENV, None) or {}
    listen_cert, listen_key = args.listen_tls_cert or None, args.listen_tls_key or None
    callback_url = args.callback_url or None
    if callback_url:
        checked_url("callback-url", callback_url, ("http", "https"))
    else:
        callback_url = _callback_url_default(derived_env.get("HOST"), int(port), bool(listen_cert and listen_key))
    if callback_url is None and events is Transport.CALLBACK:
        raise ConfigError("--callback-url: required with --events callback (or run under Marathon with $HOST/$PORT0)")
    networks = tuple(n.strip() for n in str(args.networks).split(",") if n.strip())
    if not networks:
        raise ConfigError("--networks: no network name given")
    try:
        address_mode = AddressMode(args.address_mode)
    except ValueError:
        raise ConfigError(f"--address-mode: {args.address_mode!r} is not one of auto, overlay, host") from None
    try:
        naming = Naming(args.naming)
    except ValueError:
        raise ConfigError(f"--naming: {args.naming!r} is not one of dns, flat") from None
    lock = LockMode(choice("lock", args.lock, tuple(LockMode)))
    lock_ttl = int(number("lock-ttl", args.lock_ttl, int, LOCK_TTL_BOUNDS[0]))
    if lock_ttl > LOCK_TTL_BOUNDS[1]:
        raise ConfigError(f"--lock-ttl: {lock_ttl} is above Consul's maximum {LOCK_TTL_BOUNDS[1]} (24h)")
    lock_delay = int(number("lock-delay", args.lock_delay, int, LOCK_DELAY_BOUNDS[0]))
    if lock_delay > LOCK_DELAY_BOUNDS[1]:
        raise ConfigError(f"--lock-delay: {lock_delay} is above Consul's maximum {LOCK_DELAY_BOUNDS[1]}")
    lock_check_interval = float(number("lock-check-interval", args.lock_check_interval, float, 0))
    if 0 < lock_check_interval < 1:
        raise ConfigError(f"--lock-check-interval: {lock_check_interval:g} is below Consul's minimum 1 (0: no check)")
    cluster_id = (args.cluster_id or "").strip() or None
    if cluster_id is not None and not CLUSTER_ID.fullmatch(cluster_id):
        raise ConfigError(f"--cluster-id: {cluster_id!r} must be {CLUSTER_ID_RULE}")
    allow_name_override = NameOverride(choice("allow-name-override", args.allow_name_override,
                                               tuple(m.value for m in NameOverride)))
    consul_token_file = token_file("consul-token-file", args.consul_token_file)
    marathon_token_file = token_file("marathon-token-file", args.marathon_token_file)
    consul_url = checked_url("consul", args.consul, ("http", "https"))
    lock_agent = args.lock_agent or _lock_agent_default(consul_url, derived_env.get("HOST"))
    consul_tls = None
    if boolean("consul-http-ssl", args.consul_http_ssl):
        consul_url, lock_agent = https(consul_url), https(lock_agent)
    if consul_url.startswith("https://") or lock_agent.startswith("https://"):
        consul_tls = tls_files("consul", TLSOptions(
            verify=boolean("consul-http-ssl-verify", args.consul_http_ssl_verify),
            ca_file=readable_file("consul-cacert", args.consul_cacert),
            ca_path=directory("consul-capath", args.consul_capath),
            cert_file=readable_file("consul-client-cert", args.consul_client_cert),
            key_file=readable_file("consul-client-key", args.consul_client_key),
            server_name=args.consul_tls_server_name or None))
    docker = checked_url("docker", args.docker, ("tcp", "http", "https", "unix"))
    docker_mode = choice("docker-tls", args.docker_tls, ("off", "verify", "no-verify"))
    if docker_mode == "off" and docker.startswith("https://"):
        docker_mode = "verify"
    docker_tls = None
    if docker_mode != "off":
        if docker.startswith(("unix://", "http://")):
            raise ConfigError(f"--docker-tls: {docker_mode} needs a tcp:// or https:// --docker URL, not {docker!r}")
        docker_tls = docker_tls_options(args.docker_cert_path, docker_mode == "verify",
                                        args.docker_tls_server_name or None)
    marathon_tls = None
    if any(u.startswith("https://") for u in marathon) or args.marathon_cacert:
        marathon_tls = tls_files("marathon", TLSOptions(ca_file=readable_file("marathon-cacert", args.marathon_cacert)))
    if bool(listen_cert) != bool(listen_key):
        raise ConfigError("--listen-tls-cert: needs --listen-tls-key too (and the other way round)")
    if listen_cert and listen_key and callback_url and callback_url.startswith("http://"):
        # Marathon cannot post plain HTTP to a TLS listener: an explicit http:// URL is meant for
        # this server (as the derived default is), so it speaks the server's scheme
        callback_url = "https://" + callback_url[len("http://"):]
    if listen_cert and listen_key:
        readable_file("listen-tls-cert", listen_cert)
        readable_file("listen-tls-key", listen_key)
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(listen_cert, listen_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"--listen-tls-cert: cannot load {listen_cert!r} with key {listen_key!r}: "
                              f"{exc}") from None
    callback_secret_file = token_file("callback-secret-file", args.callback_secret_file)
    if callback_secret_file is not None:
        secret = read_token(callback_secret_file)
        if not _URL_SECRET.fullmatch(secret):
            raise ConfigError("--callback-secret-file: the secret must be 16-256 of letters, digits, '-', '_', '.' "
                              "or '~' (it becomes a URL path segment)")
    level = str(args.log_level).upper()
    choice("log-level", level, ("DEBUG", "INFO", "WARNING", "ERROR"))
    return Config(
        marathon=marathon, events=events, listen_host=host or "0.0.0.0", listen_port=int(port),
        callback_url=callback_url,
        consul=checked_url("consul", consul_url, ("http", "https")),
        consul_token=args.consul_token or None,
        docker=docker,
        networks=networks, address_mode=address_mode, naming=naming,
        resync_interval=float(number("resync-interval", args.resync_interval, float, 1.0)),
        health_checks=HealthCheckMode(choice("health-checks", args.health_checks,
                                              tuple(m.value for m in HealthCheckMode))),
        workers=int(number("workers", args.workers, int, 1)),
        log_level=level,
        lock=lock, lock_ttl=lock_ttl, lock_delay=lock_delay, lock_check_interval=lock_check_interval,
        lock_agent=checked_url("lock-agent", lock_agent, ("http", "https")),
        cluster_id=cluster_id,
        overlay_cidrs=cidrs("overlay-cidr", str(args.overlay_cidr)),
        weave_exec_lookup=boolean("weave-exec-lookup", args.weave_exec_lookup),
        allow_name_override=allow_name_override,
        consul_token_file=consul_token_file, marathon_token_file=marathon_token_file,
        docker_tls=docker_tls, consul_tls=consul_tls, marathon_tls=marathon_tls,
        listen_tls_cert=listen_cert, listen_tls_key=listen_key, callback_secret_file=callback_secret_file,
    )
