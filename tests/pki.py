"""A throw-away PKI made by Debian's openssl, and HTTPS servers on 127.0.0.5x, for the TLS tests.

Everything the tests need to fail in each of TLS's ways: a CA and a second, unrelated one; server
certificates for an IP, for a DNS name only (to be reached through a server-name override), and
one that expired yesterday; a client certificate for the servers that require one.
"""

from __future__ import annotations

import contextlib
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path


@dataclass(frozen=True)
class PKI:
    root: Path
    ca: Cert
    other_ca: Cert

    def issue(self, name: str, *, san: str, days: int = 30, ca: Cert | None = None, client: bool = False) -> Cert:
        """A certificate `name` signed by `ca` (default: the CA) with subjectAltName `san`; negative
        `days` gives one that has already expired."""
        ca = ca or self.ca
        ext = self.root / f"{name}.ext"
        usage = "clientAuth" if client else "serverAuth"
        ext.write_text(f"subjectAltName={san}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=self.root)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", str(ca.cert), "-CAkey", str(ca.key), "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", str(days), "-extfile", str(ext), cwd=self.root)
        return Cert(self.root / f"{name}.pem", self.root / f"{name}.key")


def make_pki(root: Path) -> PKI:
    def ca(name: str) -> Cert:
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
                 "-subj", f"/CN={name}", "-days", "30", cwd=root)
        return Cert(root / f"{name}.pem", root / f"{name}.key")
    return PKI(root, ca("ca"), ca("other-ca"))


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
