"""One option's value, checked: each function returns the value (or what it means) or raises
`ConfigError` naming the option, so a bad value stops the start with one line (service.config)."""

from __future__ import annotations

import ipaddress
import os
import urllib.parse

from service.connect import TLSConfigError, TLSOptions, docker_files, ssl_context
from service.model import Cidr
from service.tokens import TokenFileError, read_token

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


class ConfigError(ValueError):
    """A bad option value; the message names the option and what is wrong."""


def checked_url(option: str, value: str, schemes: tuple[str, ...]) -> str:
    parsed = urllib.parse.urlsplit(value.replace("{host}", "placeholder"))
    if parsed.scheme not in schemes or not (parsed.netloc or parsed.path):
        raise ConfigError(f"--{option}: {value!r} is not a {'/'.join(schemes)} URL")
    return value


def choice(option: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"--{option}: {value!r} is not one of {', '.join(choices)}")
    return value


def number(option: str, value: str, kind: type[int] | type[float], minimum: float) -> int | float:
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(f"--{option}: {value!r} is not a number") from None
    if number < minimum:
        raise ConfigError(f"--{option}: {value} is below the minimum {minimum}")
    return number


def cidrs(option: str, value: str) -> tuple[Cidr, ...]:
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


def boolean(option: str, value: str) -> bool:
    v = str(value).strip().lower()
    if v not in _TRUE + _FALSE:
        raise ConfigError(f"--{option}: {value!r} is not one of true, false")
    return v in _TRUE


def https(url: str) -> str:
    """CONSUL_HTTP_SSL=true: Consul's tools switch the scheme and keep the address."""
    return "https://" + url[len("http://"):] if url.startswith("http://") else url


def readable_file(option: str, path: str | None) -> str | None:
    if not path:
        return None
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise ConfigError(f"--{option}: {path!r} is not a readable file")
    return path


def directory(option: str, path: str | None) -> str | None:
    if not path:
        return None
    if not os.path.isdir(path):
        raise ConfigError(f"--{option}: {path!r} is not a directory")
    return path


def token_file(option: str, path: str | None) -> str | None:
    """A token file must be readable and hold a token at start; later it may change (service.tokens)."""
    if not path:
        return None
    try:
        read_token(path)
    except TokenFileError as exc:
        raise ConfigError(f"--{option}: {exc}") from None
    return path


def tls_files(system: str, opts: TLSOptions) -> TLSOptions:
    """Load the files once now, so a bad one stops the start with one line, not every call later."""
    try:
        ssl_context(opts, system)
    except TLSConfigError as exc:
        option = {"consul": "consul-cacert", "marathon": "marathon-cacert"}[system]
        if "client certificate" in str(exc):
            option = "consul-client-cert"
        raise ConfigError(f"--{option}: {exc}") from None
    return opts


def docker_tls_options(cert_path: str, verify: bool, server_name: str | None) -> TLSOptions:
    """Docker's conventions: ca.pem, cert.pem, key.pem in DOCKER_CERT_PATH; the client certificate is
    optional (an engine without --tlsverify does not ask for one). With `{host}` in the path each
    slave has its own files, checked when the slave is first used; without it they are checked now."""
    path = os.path.expanduser(cert_path)
    opts = TLSOptions(verify=verify, ca_file=os.path.join(path, "ca.pem"), cert_file=os.path.join(path, "cert.pem"),
                      key_file=os.path.join(path, "key.pem"), server_name=server_name)
    if "{host}" in path:
        return opts
    opts = docker_files(opts)
    try:
        ssl_context(opts, "docker")
    except TLSConfigError as exc:
        raise ConfigError(f"--docker-cert-path: {exc}") from None
    return opts
