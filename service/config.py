"""Operator-facing configuration: the `serve` options of the README, each also read from MCR_<OPTION>.

Precedence: command line, then `MCR_<OPTION>` env, then the default (which may itself come from the
Marathon-provided env: `$HOST`, `$PORT0`, and Consul's `CONSUL_HTTP_TOKEN`). Validation happens
here, once, so a bad value stops the process at start with one line naming the option.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.model import DEFAULT_OVERLAY_CIDRS, AddressMode, Cidr, HealthCheckMode, NameOverride, Naming

# a cluster id goes into a KV path and a Meta value: keep it to characters both take as they are
_CLUSTER_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


class ConfigError(ValueError):
    """A bad option value; the message names the option and what is wrong."""


@dataclass(frozen=True)
class Config:
    marathon: tuple[str, ...]
    events: str
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
    lock: str = "auto"
    lock_ttl: int = 15
    lock_delay: int = 15
    lock_agent: str = "http://127.0.0.1:8500"
    cluster_id: str | None = None
    overlay_cidrs: tuple[Cidr, ...] = DEFAULT_OVERLAY_CIDRS
    weave_exec_lookup: bool = False
    allow_name_override: NameOverride = NameOverride.GROUP


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
    "networks": "Docker networks whose IP is the overlay IP, in order of preference",
    "address-mode": "without an overlay IP: auto = fall back to host:hostPort, overlay = wait, host = always host",
    "naming": "naming strategy: dns (name = first path segment, tags = deeper levels) or flat",
    "resync-interval": "seconds between full resyncs",
    "health-checks": "which checks Consul runs: consul (translated Marathon checks), marathon (TTL checks "
                     "mirroring Marathon's verdict) or both",
    "workers": "apps reconciled concurrently",
    "log-level": "DEBUG, INFO, WARNING or ERROR",
    "lock": "one writer among several instances through a Consul lock: auto (on when the agent offers "
            "sessions), on, or off (a single instance)",
    "lock-ttl": "seconds: the lock session's TTL (Consul: 10 to 86400); renewed every TTL/2",
    "lock-delay": "seconds: Consul's lock-delay after a holder's session is invalidated (0 to 60)",
    "lock-agent": "Consul agent URL the lock session is held through",
    "cluster-id": "identity of this Marathon cluster in Meta and the lock key (default: Marathon's frameworkId)",
    "overlay-cidr": "CIDR(s) of the overlay, comma separated; an address outside them is never registered as "
                    "an overlay address",
    "weave-exec-lookup": "also read a Weave-proxied container's IP with `ip addr show dev ethwe` through the "
                         "exec API when its /etc/hosts has no Weave block (true/false)",
    "allow-name-override": "which consul.name / SERVICE_NAME overrides an app may claim: group (its top-level "
                           "group's name or <group>-*), any, or none",
}
# Options that may be given without a value (meaning "true").
FLAGS = frozenset({"weave-exec-lookup"})
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


def _defaults(env: Mapping[str, str]) -> dict[str, str | None]:
    port0 = env.get("PORT0")
    host = env.get("HOST")
    return {
        "marathon": "http://127.0.0.1:8080",
        "events": "auto",
        "listen": f"0.0.0.0:{port0}" if port0 else "0.0.0.0:8000",
        "callback-url": f"http://{host}:{port0}/v1/events" if host and port0 else None,
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
        "lock-agent": _lock_agent_default(env),
        "cluster-id": None,
        "overlay-cidr": ",".join(map(str, DEFAULT_OVERLAY_CIDRS)),
        "weave-exec-lookup": "false",
        "allow-name-override": "group",
    }


def _lock_agent_default(env: Mapping[str, str]) -> str:
    """The agent on this instance's own host (Marathon sets $HOST), so the session is bound to the
    health of the node the instance runs on; else the agent template's fixed URL, else loopback."""
    template = env.get(env_name("consul"), "http://{host}:8500")
    if "{host}" not in template:
        return template
    return template.replace("{host}", env.get("HOST") or "127.0.0.1")


def env_name(option: str) -> str:
    return "MCR_" + option.upper().replace("-", "_")


def add_serve_options(parser: argparse.ArgumentParser, env: Mapping[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    defaults = _defaults(env)
    for option, help_text in OPTIONS.items():
        default = env.get(env_name(option), defaults[option])
        shown = "(none)" if default is None else ("***" if option == "consul-token" and default else default)
        flag: dict[str, Any] = {"nargs": "?", "const": "true"} if option in FLAGS else {}
        parser.add_argument(f"--{option}", default=default, metavar=option.split("-")[-1].upper(),
                            help=f"{help_text} [env {env_name(option)}; default {shown}]", **flag)


def _url(option: str, value: str, schemes: tuple[str, ...]) -> str:
    parsed = urllib.parse.urlsplit(value.replace("{host}", "placeholder"))
    if parsed.scheme not in schemes or not (parsed.netloc or parsed.path):
        raise ConfigError(f"--{option}: {value!r} is not a {'/'.join(schemes)} URL")
    return value


def _choice(option: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"--{option}: {value!r} is not one of {', '.join(choices)}")
    return value


def _number(option: str, value: str, kind: type[int] | type[float], minimum: float) -> int | float:
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(f"--{option}: {value!r} is not a number") from None
    if number < minimum:
        raise ConfigError(f"--{option}: {value} is below the minimum {minimum}")
    return number


def _cidrs(option: str, value: str) -> tuple[Cidr, ...]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ConfigError(f"--{option}: no CIDR given")
    out = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item, strict=True))
        except ValueError as exc:
            raise ConfigError(f"--{option}: {item!r} is not a CIDR ({exc})") from None
    return tuple(out)


def _bool(option: str, value: str) -> bool:
    v = str(value).strip().lower()
    if v not in _TRUE + _FALSE:
        raise ConfigError(f"--{option}: {value!r} is not one of true, false")
    return v in _TRUE


def config_from_args(args: argparse.Namespace) -> Config:
    marathon = tuple(u.strip().rstrip("/") for u in str(args.marathon).split(",") if u.strip())
    if not marathon:
        raise ConfigError("--marathon: no URL given")
    for url in marathon:
        _url("marathon", url, ("http", "https"))
    host, sep, port = str(args.listen).rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--listen: {args.listen!r} is not HOST:PORT")
    events = _choice("events", args.events, ("auto", "callback", "sse"))
    callback_url = args.callback_url or None
    if callback_url:
        _url("callback-url", callback_url, ("http", "https"))
    elif events == "callback":
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
    lock = _choice("lock", args.lock, ("auto", "on", "off"))
    lock_ttl = int(_number("lock-ttl", args.lock_ttl, int, 10))
    if lock_ttl > 86400:
        raise ConfigError(f"--lock-ttl: {lock_ttl} is above Consul's maximum 86400 (24h)")
    lock_delay = int(_number("lock-delay", args.lock_delay, int, 0))
    if lock_delay > 60:
        raise ConfigError(f"--lock-delay: {lock_delay} is above Consul's maximum 60")
    cluster_id = (args.cluster_id or "").strip() or None
    if cluster_id is not None and not _CLUSTER_ID.fullmatch(cluster_id):
        raise ConfigError(f"--cluster-id: {cluster_id!r} must be 1-128 of letters, digits, '.', '_' or '-'")
    allow_name_override = NameOverride(_choice("allow-name-override", args.allow_name_override,
                                               tuple(m.value for m in NameOverride)))
    level = str(args.log_level).upper()
    _choice("log-level", level, ("DEBUG", "INFO", "WARNING", "ERROR"))
    return Config(
        marathon=marathon, events=events, listen_host=host or "0.0.0.0", listen_port=int(port),
        callback_url=callback_url,
        consul=_url("consul", args.consul, ("http", "https")),
        consul_token=args.consul_token or None,
        docker=_url("docker", args.docker, ("tcp", "http", "unix")),
        networks=networks, address_mode=address_mode, naming=naming,
        resync_interval=float(_number("resync-interval", args.resync_interval, float, 1.0)),
        health_checks=HealthCheckMode(_choice("health-checks", args.health_checks,
                                              tuple(m.value for m in HealthCheckMode))),
        workers=int(_number("workers", args.workers, int, 1)),
        log_level=level,
        lock=lock, lock_ttl=lock_ttl, lock_delay=lock_delay,
        lock_agent=_url("lock-agent", args.lock_agent, ("http", "https")),
        cluster_id=cluster_id,
        overlay_cidrs=_cidrs("overlay-cidr", str(args.overlay_cidr)),
        weave_exec_lookup=_bool("weave-exec-lookup", args.weave_exec_lookup),
        allow_name_override=allow_name_override,
    )
