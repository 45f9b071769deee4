"""A throw-away PKI (devcluster.pki, openssl) and HTTPS servers on 127.0.0.5x, for the TLS tests.

Everything the tests need to fail in each of TLS's ways: a CA and a second, unrelated one; server
certificates for an IP, for a DNS name only (to be reached through a server-name override), and
one that expired yesterday; a client certificate for the servers that require one.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from devcluster.pki import CA, Cert

__all__ = ["PKI", "Cert", "make_pki", "serve", "server_context"]


@dataclass(frozen=True)
class PKI:
    main: CA
    other: CA

    @property
    def ca(self) -> Cert:
        return self.main.ca

    @property
    def other_ca(self) -> Cert:
        return self.other.ca

    def issue(self, name: str, *, san: str, days: int = 30, client: bool = False) -> Cert:
        return self.main.issue(name, san=san, days=days, client=client)


def make_pki(root: Path) -> PKI:
    return PKI(CA.create(root / "main"), CA.create(root / "other", name="other-ca"))


def server_context(cert: Cert, *, client_ca: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert.cert, cert.key)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca)
    return ctx


@contextlib.asynccontextmanager
async def serve(app: web.Application, host: str, ctx: ssl.SSLContext | None) -> AsyncIterator[int]:
    """`app` on host:<free port>, over TLS when `ctx` is given; yields the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=ctx)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()
