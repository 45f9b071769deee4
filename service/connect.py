"""How the registrar connects to Consul, Docker and Marathon: TLS contexts and token-carrying clients.

One place builds every SSL context, so the three systems follow one set of rules:
- verification is on whenever TLS is on, unless the operator turns it off explicitly;
- a CA file (and for Consul a CA directory) replaces the system store; without one the system
  store is used;
- a client certificate is presented when configured (Docker's `cert.pem`/`key.pem`, Consul's
  `CONSUL_CLIENT_CERT`/`CONSUL_CLIENT_KEY`);
- a server name (`--docker-tls-server-name`, `CONSUL_TLS_SERVER_NAME`) replaces the URL's host for
  SNI and the certificate check, for agents reached by IP whose certificates name e.g.
  `server.dc1.consul`. aiohttp takes a server name per request only, and py-consul makes the
  requests, so the context itself carries it (`_NamedContext.wrap_bio`, which asyncio's SSL
  transport calls with the URL's host).

py-consul's aio client builds its own SSL context from `verify`/`cert` only (no CA directory, no
server name) and reads `CONSUL_HTTP_TOKEN` from the env over the token it is given, once. So
`consul_client` builds it without TLS and hands it our session, and the token is a property that
asks a `TokenSource` at every request: a rotated token file takes effect on the next call.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import Any

import aiohttp
import consul.aio
import consul.base

from service import version
from service.tokens import TokenSource


class TLSConfigError(ValueError):
    """A certificate, key or CA that cannot be loaded; the message names the system and the file."""


@dataclass(frozen=True, slots=True)
class TLSOptions:
    """TLS towards one system. `verify=False` still encrypts (and presents a client certificate)."""

    verify: bool = True
    ca_file: str | None = None
    ca_path: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None

    def for_host(self, host: str) -> TLSOptions:
        """The files of one slave: `{host}` in a path is the task's host (per-slave certificates)."""
        def sub(path: str | None) -> str | None:
            return path.replace("{host}", host) if path else path
        return TLSOptions(self.verify, sub(self.ca_file), sub(self.ca_path), sub(self.cert_file), sub(self.key_file),
                          self.server_name)


def docker_files(opts: TLSOptions) -> TLSOptions:
    """Docker's cert directory with the files that are not there left out: no ca.pem means the
    system store, no cert.pem/key.pem pair means no client certificate (an engine without
    --tlsverify asks for none)."""
    def present(path: str | None) -> str | None:
        return path if path and os.path.isfile(path) else None
    cert, key = present(opts.cert_file), present(opts.key_file)
    return TLSOptions(verify=opts.verify, ca_file=present(opts.ca_file), cert_file=cert if cert and key else None,
                      key_file=key if cert and key else None, server_name=opts.server_name)


class _NamedContext(ssl.SSLContext):
    """An SSLContext that checks (and sends as SNI) a fixed server name instead of the URL's host."""

    server_name: str | None = None

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, server_side: bool = False,
                 server_hostname: str | bytes | None = None, session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side, self.server_name or server_hostname, session)


def ssl_context(opts: TLSOptions, system: str) -> ssl.SSLContext:
    """A client context for `opts`; a file that cannot be loaded raises TLSConfigError naming
    `system` ("docker on 127.0.0.3", "consul", "marathon") and the file."""
    ctx = _NamedContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.server_name = opts.server_name
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if opts.verify:
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            if opts.ca_file or opts.ca_path:
                ctx.load_verify_locations(cafile=opts.ca_file, capath=opts.ca_path)
            else:
                ctx.load_default_certs()
        except (OSError, ssl.SSLError) as exc:
            raise TLSConfigError(f"{system}: cannot load CA {opts.ca_file or opts.ca_path!r}: {_why(exc)}") from None
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if opts.cert_file or opts.key_file:
        if not (opts.cert_file and opts.key_file):
            raise TLSConfigError(f"{system}: a client certificate needs both a certificate and a key file")
        try:
            ctx.load_cert_chain(opts.cert_file, opts.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise TLSConfigError(f"{system}: cannot load client certificate {opts.cert_file!r} / key "
                                 f"{opts.key_file!r}: {_why(exc)}") from None
    return ctx


def _why(exc: OSError | ssl.SSLError) -> str:
    return f"{exc.strerror or exc}" if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError) else str(exc)


def tls_reason(exc: BaseException, *, https: bool) -> str | None:
    """What an operator needs to hear when `exc` (from a request to an `https` or plain URL) is a
    TLS problem, else None. Certificate failures are named by OpenSSL's verify message ("certificate
    has expired", "unable to get local issuer certificate", "IP address mismatch, ..."). Two failures
    reach the client only as a closed connection (TLS 1.3 sends the server's "certificate required"
    alert after the handshake, and asyncio drops it; a TLS server given plain HTTP just hangs up),
    so for those the likely cause is named as such."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, aiohttp.ClientConnectorCertificateError):
            cur = cur.certificate_error
            continue
        if isinstance(cur, ssl.SSLCertVerificationError):
            return f"TLS: server certificate rejected: {cur.verify_message or cur.reason}"
        if isinstance(cur, aiohttp.ClientConnectorSSLError) and cur.os_error is not None:
            cur = cur.os_error  # aiohttp's wrapper is an SSLError too, without OpenSSL's reason
            continue
        if isinstance(cur, ssl.SSLError):
            reason = (getattr(cur, "reason", None) or str(cur)).upper()
            if any(r in reason for r in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG")):
                return "TLS: the server does not speak TLS on this port (an http:// URL?)"
            if "CERTIFICATE_REQUIRED" in reason or "HANDSHAKE_FAILURE" in reason:
                # the same words as a closed connection below: which of the two a client sees is timing
                return ("TLS: the server rejected the handshake: it may require a client certificate (none, or "
                        "one it does not accept, was sent)")
            return f"TLS: {getattr(cur, 'reason', None) or cur}"
        # TLS 1.3 sends the server's "certificate required" after the handshake: depending on timing
        # the client sees an SSL alert, a closed connection or a reset (all three seen here)
        reset = isinstance(cur, OSError) and cur.errno == errno.ECONNRESET
        if isinstance(cur, aiohttp.ServerDisconnectedError) or (reset and https):
            if https:
                return ("TLS: the server closed the connection without answering: it may require a client "
                        "certificate (none, or one it does not accept, was sent)")
            return "the server closed the connection without answering: plain HTTP against a TLS port? (use https://)"
        cur = cur.__cause__ or cur.__context__
    return None


def user_agent() -> str:
    """Names this process in every Consul request (an agent's access log, the test world's write
    log), so "which instance wrote this" has an answer when several run."""
    return f"marathon-consul-registrar/{version()} (pid {os.getpid()}; {socket.gethostname()})"


class _HTTP(consul.aio.HTTPClient):  # type: ignore[misc]
    """py-consul's aio transport on a session we build (our SSL context, our limits)."""

    def __init__(self, host: str, port: int, scheme: str, *, ssl_ctx: ssl.SSLContext | None, limit: int,
                 timeout: float) -> None:
        consul.base.HTTPClient.__init__(self, host, port, scheme, verify=ssl_ctx is not None)
        self.loop = None
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit, ssl=ssl_ctx if ssl_ctx is not None else False),
            timeout=aiohttp.ClientTimeout(total=timeout), headers={"User-Agent": user_agent()})


class _Consul(consul.aio.Consul):  # type: ignore[misc]
    """py-consul's aio client with our transport, whose token is asked for at every request (see
    the module docstring)."""

    def __init__(self, *, token: TokenSource, ssl_ctx: ssl.SSLContext | None, limit: int, timeout: float,
                 **kw: Any) -> None:
        self._token_source = token
        self._transport = (ssl_ctx, limit, timeout)
        super().__init__(**kw)

    def http_connect(self, host: str, port: int, scheme: Any, verify: bool | str = True,
                     cert: Any = None) -> consul.aio.HTTPClient:
        ssl_ctx, limit, timeout = self._transport
        return _HTTP(host, port, scheme, ssl_ctx=ssl_ctx, limit=limit, timeout=timeout)

    @property
    def token(self) -> str | None:
        return self._token_source()

    @token.setter
    def token(self, _: str | None) -> None:
        """py-consul's constructor assigns os.getenv("CONSUL_HTTP_TOKEN", token): ignored, the
        configuration already chose between the env, the option and the token file."""


def consul_client(url: str, *, token: TokenSource, tls: TLSOptions | None, timeout: float,
                  limit: int = 100) -> consul.aio.Consul:
    """A py-consul aio client for the agent at `url`, with our SSL context for https:// URLs (py-consul
    would build one per client, loading the system store: profiled at ~5% of a burst's CPU over 20
    agents, and it could not take a CA directory or a server name)."""
    parsed = urllib.parse.urlsplit(url)
    https = parsed.scheme == "https"
    return _Consul(
        token=token, ssl_ctx=ssl_context(tls or TLSOptions(), "consul") if https else None, limit=limit,
        timeout=timeout, host=parsed.hostname or "127.0.0.1", port=parsed.port or (443 if https else 8500),
        scheme=parsed.scheme or "http")
