"""A throw-away certificate authority for the TLS test world, made by Debian's openssl.

`python -m devcluster up --tls` (and the TLS tests, through tests/pki.py) use it. Why openssl and
not a Python library: the project pins no crypto package, and openssl is what an operator would
use, so the files have the shapes real deployments have (PEM, RSA 2048, subjectAltName, extended
key usage). Everything lives under one directory and is thrown away with it.

`make_world_pki(dir)` lays out what the world needs:

    ca.pem, ca.key                      the CA every server and client certificate chains to
    dockerd-<host>.pem/.key             a slave's dockerd server certificate (--tlsverify)
    consul.pem/.key                     the Consul simulator's agents (every agent IP, server.dc1.consul)
    marathon.pem/.key                   the Marathon simulators (127.0.0.1, the app tests' own, localhost,
                                        marathon.service.consul: the name deploy/marathon.json uses)
    client.pem/.key                     the registrar's client certificate (Consul verify_incoming)
    docker/<host>/ca.pem,cert.pem,key.pem   DOCKER_CERT_PATH layout, per slave ({host} in the path)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

IMAGE_UID = 10001  # the registrar image's user and group (Dockerfile)


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {result.stderr.strip()[-500:]}")


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path


@dataclass(frozen=True)
class CA:
    root: Path
    ca: Cert

    @classmethod
    def create(cls, root: Path, name: str = "ca", days: int = 30) -> CA:
        root.mkdir(parents=True, exist_ok=True)
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
                 "-subj", f"/CN=devcluster {name}", "-days", str(days), cwd=root)
        return cls(root, Cert(root / f"{name}.pem", root / f"{name}.key"))

    def issue(self, name: str, *, san: str, days: int = 30, client: bool = False) -> Cert:
        """A certificate `name` signed by this CA with subjectAltName `san` (e.g. `IP:127.0.0.3,DNS:x`);
        a negative `days` gives one that expired already (openssl x509 takes it)."""
        ext = self.root / f"{name}.ext"
        usage = "clientAuth" if client else "serverAuth"
        ext.write_text(f"subjectAltName={san}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=self.root)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", str(self.ca.cert), "-CAkey", str(self.ca.key),
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", str(days), "-extfile", str(ext), cwd=self.root)
        return Cert(self.root / f"{name}.pem", self.root / f"{name}.key")


def make_world_pki(root: Path, *, slaves: Iterable[str], agents: Iterable[str],
                   marathon_host: str = "127.0.0.1", marathon_extra_hosts: Iterable[str] = ()) -> CA:
    """The files listed in the module docstring, for `slaves` (dockerd hosts) and `agents` (IPs)."""
    slaves = list(slaves)
    ca = CA.create(root)
    client = ca.issue("client", san="DNS:marathon-consul-registrar", client=True)
    for host in slaves:
        ca.issue(f"dockerd-{host}", san=f"IP:{host},DNS:localhost")
        d = root / "docker" / host
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(ca.ca.cert, d / "ca.pem")
        shutil.copy(client.cert, d / "cert.pem")
        shutil.copy(client.key, d / "key.pem")
    # the registrar's private keys belong to the image's user (Dockerfile: USER 10001), as an operator
    # mounting them into its container makes them; root on the host reads them all the same
    for key in [client.key, *(root / "docker" / h / "key.pem" for h in slaves)]:
        os.chown(key, IMAGE_UID, IMAGE_UID)
    ips = ",".join(f"IP:{a}" for a in agents)
    ca.issue("consul", san=f"{ips},DNS:server.dc1.consul,DNS:localhost")
    extra = "".join(f",IP:{h}" for h in marathon_extra_hosts)
    ca.issue("marathon", san=f"IP:{marathon_host}{extra},DNS:localhost,DNS:marathon.service.consul")
    return ca


if __name__ == "__main__":
    from devcluster.topology import SLAVES
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "devcluster-pki")
    make_world_pki(target, slaves=[s.host for s in SLAVES], agents=[s.host for s in SLAVES])
    print(f"certificates in {target}")
