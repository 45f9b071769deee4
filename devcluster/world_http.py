"""One HTTP call to a part of the test world, plain or TLS, for the demo and the tests.

In the TLS world (`python -m devcluster up --tls`) the Consul agents require a client certificate
and Marathon basic auth; a caller should not have to know which world it is in. `https://` URLs are
verified against the world's CA and present its client certificate; `user:password@` in a URL
becomes an `Authorization: Basic` header (urllib sends neither by itself).
"""

from __future__ import annotations

import base64
import functools
import ssl
import urllib.parse
import urllib.request
from http.client import HTTPResponse
from pathlib import Path

from devcluster.topology import world_tls_dir


@functools.lru_cache(maxsize=4)
def client_context(tls_dir: Path) -> ssl.SSLContext:
    """Verifies the world's servers against its CA and presents the world's client certificate."""
    ctx = ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))
    ctx.load_cert_chain(str(tls_dir / "client.pem"), str(tls_dir / "client.key"))
    return ctx


def split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """The URL without `user:password@`, and the basic-auth header those credentials make."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, {}
    netloc = parts.hostname or ""
    netloc += f":{parts.port}" if parts.port else ""
    token = base64.b64encode(f"{urllib.parse.unquote(parts.username)}:"
                             f"{urllib.parse.unquote(parts.password or '')}".encode()).decode()
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), {"Authorization": f"Basic {token}"}


def open_url(method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None,
             timeout: float = 10.0) -> HTTPResponse:
    """`urllib.request.urlopen` for the world: raises `urllib.error.HTTPError` on an error status,
    like urlopen. An `https://` URL outside the TLS world is verified against the system's CAs."""
    bare, auth = split_credentials(url)
    req = urllib.request.Request(bare, data=data, method=method, headers={**auth, **(headers or {})})
    tls_dir = world_tls_dir()
    context = client_context(tls_dir) if bare.startswith("https://") and tls_dir else None
    response: HTTPResponse = urllib.request.urlopen(req, timeout=timeout, context=context)
    return response
