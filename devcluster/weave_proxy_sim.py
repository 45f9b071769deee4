"""Slave 3's Weave Docker API proxy, as far as a registrar can see it (reference weave.md §1.6, §2, §3, §8).

    python -m devcluster.weave_proxy_sim --docker unix:///var/lib/devcluster/s3.sock \\
        --listen 127.0.0.4:12375 --range 10.32.3.0/24

Concurrency model: one thread follows the engine's event stream; every `start` of a container the
proxy created (`Config.Entrypoint[0] == "/w/w"`, created so by the Marathon simulator's launcher for
a proxy slave, §1.4) schedules an attach on the asyncio loop after `--attach-delay` (Weave's attach
runs 0.3-1 s after the start event, §7; a container's env `DEVCLUSTER_WEAVE_ATTACH_DELAY` overrides it,
the test world's stand-in for an allocator without consensus). Attaches run one at a time in a worker
thread, as `weave attach` is one process each; `destroy` frees the address.

The attach is `weave attach --rewrite-hosts` of v1.6-v1.9, step for step as §8 verified: the
`/etc/hosts` block first (write, unlink, write, at `HostsPath`), then a veth `vethwepl<pid>` on the
`weave` bridge whose container end becomes `ethwe` with the allocated address, and last the
224.0.0.0/4 route, which releases the `/w/w` wrapper. Docker never learns the address.

The TCP listener is the proxy with `--rewrite-inspect`: every request goes to the engine unchanged
and streams back, except a 200 answer to `GET /containers/{id}/json`, whose top-level
`NetworkSettings.IPAddress`, `IPPrefixLen` and `MacAddress` become the attached `ethwe`'s (§3;
`Networks` untouched). Create and start are not intercepted here: the Marathon simulator, the only
client that creates containers on this slave, creates them as the proxy would.

`WEAVE_CIDR` (§1.2): unset, empty or `net:default` allocate from `--range`; `net:<cidr>` from that
CIDR; `ip:<cidr>` or a bare `<cidr>` claim that address; exactly `none` leaves the container alone.
A container env `DEVCLUSTER_WEAVE_NO_REWRITE_HOSTS=1` stands in for a proxy run with
`--no-rewrite-hosts` (so a registrar finds the address only through `ethwe`).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import re
import ssl
import subprocess
import threading
from dataclasses import dataclass
from typing import Any

import aiohttp
import docker
from aiohttp import web

from devcluster.docker_sim.templates import weave_hosts

log = logging.getLogger("weave_proxy_sim")

OVERLAY_PREFIX_LEN = 12  # the allocator's default subnet 10.32.0.0/12
MTU = 1376  # fast datapath (§2.1)
INSPECT = re.compile(r"^(/v[0-9.]+)?/containers/[^/]+/json$")
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


@dataclass
class Attached:
    ip: str
    prefix_len: int
    mac: str


class Allocator:
    """Weave's IPAM, reduced to one subnet range: an address per container id, freed on destroy."""

    def __init__(self, default_range: str) -> None:
        self.default = ipaddress.ip_network(default_range)
        self.owned: dict[str, list[str]] = {}
        self.lock = threading.Lock()

    def addresses(self, cid: str, weave_cidr: str | None) -> list[tuple[str, int]] | None:
        """(ip, prefix length) per `WEAVE_CIDR` token, or None when the container is to be left alone."""
        if weave_cidr == "none":
            return None
        tokens = (weave_cidr or "").split() or ["net:default"]
        with self.lock:
            if cid in self.owned:  # a restarted container keeps its addresses (v1.5+, §7)
                return [(ip, OVERLAY_PREFIX_LEN) for ip in self.owned[cid]]
            taken = {ip for ips in self.owned.values() for ip in ips}
            out: list[tuple[str, int]] = []
            for token in tokens:
                if token.startswith("net:"):
                    net = self.default if token == "net:default" else ipaddress.ip_network(token[4:], strict=False)
                    ip = next(str(h) for h in net.hosts() if str(h) not in taken and not str(h).endswith(".0"))
                    out.append((ip, OVERLAY_PREFIX_LEN if token == "net:default" else net.prefixlen))
                else:
                    iface = ipaddress.ip_interface(token.removeprefix("ip:"))
                    out.append((str(iface.ip), iface.network.prefixlen))
                taken.add(out[-1][0])
            self.owned[cid] = [ip for ip, _ in out]
            return out

    def free(self, cid: str) -> None:
        with self.lock:
            self.owned.pop(cid, None)


def _env(info: dict[str, Any], key: str) -> str | None:
    """The first `KEY=` entry of the container's env (the proxy reads only the first, §1.2)."""
    prefix = key + "="
    return next((e[len(prefix):] for e in (info.get("Config") or {}).get("Env") or [] if e.startswith(prefix)), None)


def proxied(info: dict[str, Any]) -> bool:
    """Attached at start only if created through the proxy and running, not on the host's network (§1.3)."""
    entry = (info.get("Config") or {}).get("Entrypoint") or []
    mode = (info.get("HostConfig") or {}).get("NetworkMode", "")
    return bool(entry) and entry[0] == "/w/w" and bool((info.get("State") or {}).get("Running")) \
        and mode != "host" and not mode.startswith("container:")


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=10).stdout


class WeaveProxy:
    def __init__(self, engine_url: str, allocator: Allocator, *, bridge: str, delay: float) -> None:
        self.engine_url = engine_url
        self.client = docker.DockerClient(base_url=engine_url, timeout=30)
        self.alloc = allocator
        self.bridge = bridge
        self.delay = delay
        self.attached: dict[str, Attached] = {}
        self.attach_lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None

    # ---------------------------------------------------------------- attach

    def attach(self, cid: str) -> None:
        with self.attach_lock:
            try:
                info = self.client.api.inspect_container(cid)
            except docker.errors.NotFound:
                return
            if not proxied(info) or cid in self.attached:
                return
            addresses = self.alloc.addresses(cid, _env(info, "WEAVE_CIDR"))
            if addresses is None:
                log.info("leaving container %s alone: WEAVE_CIDR=none", cid[:12])
                return
            pid = str(info["State"]["Pid"])
            try:
                if _env(info, "DEVCLUSTER_WEAVE_NO_REWRITE_HOSTS") != "1":
                    self._rewrite_hosts(info, [ip for ip, _ in addresses])
                mac = self._veth(pid, addresses)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
                err = getattr(exc, "stderr", "") or exc
                log.warning("attach of %s failed (it stopped?): %s", cid[:12], err)
                return
            ip, prefix_len = addresses[0]
            self.attached[cid] = Attached(ip, prefix_len, mac)
            log.info("attached %s (pid %s): ethwe %s", cid[:12], pid, " ".join(f"{i}/{p}" for i, p in addresses))

    def _rewrite_hosts(self, info: dict[str, Any], ips: list[str]) -> None:
        """§2.3: the whole file becomes Weave's block; unlinked in between so Docker leaves it alone."""
        config = info.get("Config") or {}
        fqdn = config.get("Hostname") or info["Id"][:12]
        if config.get("Domainname"):
            fqdn = f"{fqdn}.{config['Domainname'].rstrip('.')}"
        path = info["HostsPath"]
        text = weave_hosts(ips, fqdn)
        with open(path, "w") as f:
            f.write(text)
        os.unlink(path)
        with open(path, "w") as f:
            f.write(text)

    def _veth(self, pid: str, addresses: list[tuple[str, int]]) -> str:
        """§2.1, §2.2, in §8's order; returns ethwe's MAC."""
        host_end, peer = f"vethwepl{pid[:7]}", f"vethwepg{pid[:7]}"
        ns = ("nsenter", "-t", pid, "-n")
        _run("ip", "link", "add", "name", host_end, "mtu", str(MTU), "type", "veth", "peer", "name", peer,
             "mtu", str(MTU))
        try:
            _run("ip", "link", "set", host_end, "master", self.bridge)
            _run("ip", "link", "set", peer, "netns", pid)
        except subprocess.CalledProcessError:
            subprocess.run(["ip", "link", "del", host_end], capture_output=True, timeout=10)
            raise
        _run(*ns, "ip", "link", "set", peer, "name", "ethwe")
        for ip, prefix_len in addresses:
            _run(*ns, "ip", "addr", "add", f"{ip}/{prefix_len}", "dev", "ethwe")
        _run(*ns, "ip", "link", "set", "ethwe", "up")
        _run("ip", "link", "set", host_end, "up")
        _run(*ns, "ip", "route", "add", "224.0.0.0/4", "dev", "ethwe")  # last: releases /w/w
        link = _run(*ns, "ip", "-o", "link", "show", "ethwe")
        match = re.search(r"link/ether ([0-9a-f:]{17})", link)
        return match.group(1) if match else ""

    def _schedule(self, cid: str) -> None:
        delay = self.delay
        try:
            custom = _env(self.client.api.inspect_container(cid), "DEVCLUSTER_WEAVE_ATTACH_DELAY")
            delay = float(custom) if custom else delay
        except (docker.errors.NotFound, ValueError):
            pass
        assert self.loop is not None
        self.loop.call_soon_threadsafe(lambda: self.loop.call_later(  # type: ignore[union-attr]
            delay, lambda: self.loop.run_in_executor(None, self.attach, cid)))  # type: ignore[union-attr]

    def follow_events(self) -> None:
        """The proxy's Docker event subscription (§1.6): attach on start, forget on die, free on destroy."""
        for c in self.client.api.containers(filters={"status": "running"}):  # re-attach on proxy start
            self._schedule(c["Id"])
        for event in self.client.events(decode=True, filters={"type": "container"}):
            cid, action = event.get("id", ""), event.get("Action") or event.get("status")
            if action == "start":
                self.attached.pop(cid, None)
                self._schedule(cid)
            elif action == "die":
                self.attached.pop(cid, None)
            elif action == "destroy":
                self.attached.pop(cid, None)
                self.alloc.free(cid)

    # ---------------------------------------------------------------- --rewrite-inspect

    async def forward(self, request: web.Request) -> web.StreamResponse:
        session: aiohttp.ClientSession = request.app["engine"]
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS | {"host"}}
        async with session.request(request.method, f"http://docker{request.path_qs}", data=body or None,
                                   headers=headers, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                                   auto_decompress=False) as upstream:
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
            if request.method == "GET" and upstream.status == 200 and INSPECT.match(request.path):
                info = json.loads(await upstream.read())
                self.rewrite(info)
                return web.Response(status=200, body=json.dumps(info).encode(), headers=out_headers)
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=out_headers)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    def rewrite(self, info: dict[str, Any]) -> None:
        """Exactly three keys, from the first Weave address; nothing when not attached yet (§3)."""
        got = self.attached.get(info.get("Id", ""))
        if got is None:
            return
        settings = info.setdefault("NetworkSettings", {})
        settings.update(IPAddress=got.ip, IPPrefixLen=got.prefix_len, MacAddress=got.mac)


async def serve(proxy: WeaveProxy, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
    proxy.loop = asyncio.get_running_loop()
    app = web.Application(client_max_size=64 << 20)
    socket_path = proxy.engine_url.removeprefix("unix://")
    app["engine"] = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=socket_path))
    app.router.add_route("*", "/{tail:.*}", proxy.forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=tls).start()
    threading.Thread(target=proxy.follow_events, name="docker-events", daemon=True).start()
    log.info("Weave proxy stand-in on tcp://%s:%d%s for %s (rewrite-inspect), range %s", host, port,
             " (TLS, client certificate required)" if tls else "", proxy.engine_url, proxy.alloc.default)
    await asyncio.Event().wait()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m devcluster.weave_proxy_sim", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docker", required=True, help="the slave's engine (unix://...)")
    p.add_argument("--listen", required=True, metavar="HOST:PORT", help="the proxy's TCP address")
    p.add_argument("--range", default="10.32.3.0/24", help="the allocator's range for WEAVE_CIDR net:default")
    p.add_argument("--bridge", default="weave")
    p.add_argument("--attach-delay", type=float, default=0.3, help="seconds from start event to attach")
    # weave launch-proxy --tlsverify --tlscacert --tlscert --tlskey: the proxy takes Docker's TLS flags
    p.add_argument("--tlsverify", action="store_true", help="TLS, client certificates from --tlscacert required")
    p.add_argument("--tlscacert")
    p.add_argument("--tlscert")
    p.add_argument("--tlskey")
    a = p.parse_args()
    tls = None
    if a.tlsverify:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=a.tlscacert)
        tls.verify_mode = ssl.CERT_REQUIRED
        tls.load_cert_chain(a.tlscert, a.tlskey)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    host, _, port = a.listen.rpartition(":")
    proxy = WeaveProxy(a.docker, Allocator(a.range), bridge=a.bridge, delay=a.attach_delay)
    asyncio.run(serve(proxy, host, int(port), tls))


if __name__ == "__main__":
    main()
