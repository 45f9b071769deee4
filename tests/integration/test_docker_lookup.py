"""ContainerLookup against the real Docker engines of the test world (devcluster/slaves-up.sh).

Containers are made the way the Mesos Docker containerizer makes them (name `mesos-<uuid4>`, env and
label `MESOS_TASK_ID`, ports bound on the slave IP) and are force-removed afterwards. Request counts
come from a counting proxy in front of the engine, so "one listing" and "inspected once" are
measured on the wire, not inferred from our own bookkeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import docker
import pytest
from aiohttp import web

from devcluster.docker_sim.templates import weave_hosts
from service.docker.lookup import ContainerLookup, DockerLookupError
from service.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "local/busybox:1"
S1 = ("127.0.0.2", "/var/lib/devcluster/s1.sock")
S2 = ("127.0.0.3", "/var/lib/devcluster/s2.sock")
NETWORKS = ("weave", "bridge")
_PORTS = iter(random.sample(range(31900, 32700), 800))


@dataclass
class Made:
    """A container this test module created: its task id, id and the IPs Docker gave it."""

    task_id: str
    id: str
    ips: dict[str, str]


def _ensure_slaves() -> None:
    try:
        proc = subprocess.run(["bash", str(ROOT / "devcluster/slaves-up.sh")], capture_output=True,
                              text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"cannot bring the slaves up with devcluster/slaves-up.sh: {exc!r}")
    if proc.returncode != 0:
        pytest.fail(f"devcluster/slaves-up.sh failed (rc {proc.returncode}): {proc.stderr.strip()[-2000:]}")


def _client(sock: str) -> docker.DockerClient:
    return docker.DockerClient(base_url=f"unix://{sock}", max_pool_size=16)


def _run(slave: tuple[str, str], client: docker.DockerClient, *, label: bool = True, network: str | None = None,
         host_network: bool = False, extra_network: str | None = None) -> Made:
    """Start a container like Mesos would; returns its task id, id and per-network IPs."""
    ip, _ = slave
    task_id = f"test_app.{uuid.uuid4()}"
    kwargs: dict[str, Any] = {
        "name": f"mesos-{uuid.uuid4()}", "detach": True, "environment": {"MESOS_TASK_ID": task_id},
        "labels": {"MESOS_TASK_ID": task_id} if label else {"test": "docker-lookup"},
    }
    if host_network:
        kwargs.update(network_mode="host", command=["/bin/sleep", "3600"])
    else:
        kwargs.update(command=["/bin/httpd", "-f", "-p", "80"], ports={"80/tcp": (ip, next(_PORTS))})
        if network:
            kwargs["network"] = network
    c = client.containers.run(IMAGE, **kwargs)
    if extra_network:
        client.networks.get(extra_network).connect(c)
    c.reload()
    nets = c.attrs["NetworkSettings"]["Networks"]
    return Made(task_id, c.id, {n: v["IPAddress"] for n, v in nets.items() if v.get("IPAddress")})


@pytest.fixture(scope="module")
def clients() -> Iterator[dict[str, docker.DockerClient]]:
    _ensure_slaves()
    cs = {S1[0]: _client(S1[1]), S2[0]: _client(S2[1])}
    for host, c in cs.items():
        try:
            c.ping()
        except Exception as exc:  # any failure here means "no slave"
            pytest.fail(f"slave {host}: docker engine not answering after slaves-up.sh: {exc!r}")
    yield cs
    for c in cs.values():
        c.close()


class Created:
    """Tracks containers by (client, id) and force-removes them all at teardown."""

    def __init__(self, clients: dict[str, docker.DockerClient]) -> None:
        self.clients = clients
        self.ids: list[tuple[str, str]] = []

    def run(self, slave: tuple[str, str], **kw: Any) -> Made:
        made = _run(slave, self.clients[slave[0]], **kw)
        self.ids.append((slave[0], made.id))
        return made

    def remove_all(self) -> None:
        def rm(item: tuple[str, str]) -> None:
            try:
                self.clients[item[0]].api.remove_container(item[1], force=True)
            except docker.errors.NotFound:
                pass

        with ThreadPoolExecutor(8) as ex:
            list(ex.map(rm, self.ids))


@pytest.fixture(scope="module")
def world(clients: dict[str, docker.DockerClient]) -> Iterator[dict[str, Any]]:
    """The module's containers, created in parallel (each costs ~0.2 s on the engine)."""
    made = Created(clients)
    try:
        with ThreadPoolExecutor(8) as ex:
            burst = [ex.submit(made.run, S1) for _ in range(10)]
            jobs = {
                "s1": ex.submit(made.run, S1),
                "s2": ex.submit(made.run, S2, network="weave"),
                "unlabelled": ex.submit(made.run, S1, label=False),
                "host": ex.submit(made.run, S1, host_network=True),
                "two_nets": ex.submit(made.run, S2, network="weave", extra_network="bridge"),
            }
            out: dict[str, Any] = {k: f.result() for k, f in jobs.items()}
            out["burst"] = [f.result() for f in burst]
        yield out
    finally:
        made.remove_all()


@pytest.fixture
def created(clients: dict[str, docker.DockerClient]) -> Iterator[Created]:
    made = Created(clients)
    try:
        yield made
    finally:
        made.remove_all()


class CountingProxy:
    """HTTP proxy to an engine's unix socket that counts requests by kind."""

    def __init__(self, sock: str) -> None:
        self.sock = sock
        self.counts: Counter[str] = Counter()
        self.paths: list[str] = []

    @staticmethod
    def kind(path: str, query: str) -> str:
        if path.endswith("/version"):
            return "version"
        if path.endswith("/_ping"):
            return "ping"
        if path.endswith("/containers/json"):
            if "name" in query:
                return "list-named"
            return "list-task" if "MESOS_TASK_ID%3D" in query or "MESOS_TASK_ID=" in query else "list-label"
        if path.endswith("/json") and "/containers/" in path:
            return "inspect:" + path.split("/containers/")[1].split("/")[0]
        return path

    async def handle(self, request: web.Request) -> web.Response:
        self.counts[self.kind(request.path, request.query_string)] += 1
        self.paths.append(request.path_qs)
        async with self.session.get("http://docker" + request.path_qs) as r:
            # the engine's own headers (Api-Version among them) pass through, as the engine sent them
            headers = {k: v for k, v in r.headers.items() if k.lower().startswith(("api-", "docker-", "ostype"))}
            return web.Response(body=await r.read(), status=r.status, headers=headers,
                                content_type=r.content_type)

    async def __aenter__(self) -> CountingProxy:
        self.session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=self.sock))
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()
        await self.session.close()

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"


@pytest.fixture
async def proxy_s1() -> AsyncIterator[CountingProxy]:
    async with CountingProxy(S1[1]) as p:
        yield p


def _count(metrics: Metrics, call: str) -> float:
    return metrics.registry.get_sample_value("mcr_docker_request_seconds_count", {"call": call}) or 0.0


# ---- layouts --------------------------------------------------------------------------------


@pytest.mark.world  # the slaves' real engines (devcluster/slaves-up.sh)
async def test_label_lookup_slave1_bridge_layout(world: dict[str, Any]) -> None:
    made: Made = world["s1"]
    lookup = ContainerLookup("tcp://{host}:2375", NETWORKS, metrics=Metrics())
    try:
        c = await lookup.find(S1[0], made.task_id)
    finally:
        await lookup.close()
    assert c is not None and c.id == made.id and c.running
    assert c.overlay_ip(NETWORKS) == made.ips["bridge"]
    assert c.overlay_ip(NETWORKS).startswith("10.32.1.")


@pytest.mark.world  # the slaves' real engines (devcluster/slaves-up.sh)
async def test_label_lookup_slave2_weave_layout(world: dict[str, Any]) -> None:
    made: Made = world["s2"]
    lookup = ContainerLookup("tcp://{host}:2375", NETWORKS, metrics=Metrics())
    try:
        c = await lookup.find(S2[0], made.task_id)
        assert await lookup.find(S1[0], made.task_id) is None  # another slave's engine, not this one
    finally:
        await lookup.close()
    assert c is not None and c.id == made.id
    assert c.network_ips == {"weave": made.ips["weave"]}
    assert c.overlay_ip(NETWORKS) == made.ips["weave"] and made.ips["weave"].startswith("10.32.2.")
    # also Weave's network plugin layout (`--net=weave`, reference/weave.md §5): fine with the defaults
    assert c.overlay_address(NETWORKS, lookup.overlay_cidrs) == (made.ips["weave"], "") and not c.weave_proxied


@pytest.mark.world  # the slaves' real engines (devcluster/slaves-up.sh)
async def test_unix_socket_template_serves_every_host(world: dict[str, Any]) -> None:
    made: Made = world["s1"]
    lookup = ContainerLookup(f"unix://{S1[1]}", NETWORKS, metrics=Metrics())
    try:
        c = await lookup.find("any-host-name", made.task_id)
    finally:
        await lookup.close()
    assert c is not None and c.overlay_ip(NETWORKS) == made.ips["bridge"]


@pytest.mark.world  # the slaves' real engines (devcluster/slaves-up.sh)
async def test_networks_order_decides_the_overlay_ip(world: dict[str, Any]) -> None:
    made: Made = world["two_nets"]
    assert set(made.ips) == {"weave", "bridge"}, made.ips
    for order in (("weave", "bridge"), ("bridge", "weave")):
        lookup = ContainerLookup("tcp://{host}:2375", order, metrics=Metrics())
        try:
            c = await lookup.find(S2[0], made.task_id)
        finally:
            await lookup.close()
        assert c is not None
        assert c.overlay_ip(lookup.networks) == made.ips[order[0]]
        assert list(c.network_ips) == list(order)  # the operator's order, for readers of the Container
    assert made.ips["bridge"].startswith("172.31.")  # slave 2's own bridge, not the overlay


@pytest.mark.world  # the slaves' real engines (devcluster/slaves-up.sh)
async def test_host_network_container_has_no_overlay_ip(world: dict[str, Any]) -> None:
    made: Made = world["host"]
    lookup = ContainerLookup("tcp://{host}:2375", NETWORKS, metrics=Metrics())
    try:
        c = await lookup.find(S1[0], made.task_id)
    finally:
        await lookup.close()
    assert c is not None and c.running
    assert c.network_ips == {} and c.overlay_ip(NETWORKS) is None


@pytest.mark.world  # the slaves' real engines (devcluster/slaves-up.sh)
async def test_exited_container_is_found_not_running(created: Created, clients: dict[str, Any]) -> None:
    made = created.run(S1)
    clients[S1[0]].api.kill(made.id)
    lookup = ContainerLookup("tcp://{host}:2375", NETWORKS, metrics=Metrics())
    try:
        c = await lookup.find(S1[0], made.task_id)
    finally:
        await lookup.close()
    assert c is not None and c.id == made.id and not c.running


# ---- fallback and request counts ------------------------------------------------------------


@pytest.mark.world  # the slaves' real engines (devcluster/slaves-up.sh)
async def test_env_fallback_inspects_each_container_once(world: dict[str, Any], proxy_s1: CountingProxy) -> None:
    made: Made = world["unlabelled"]
    metrics = Metrics()
    lookup = ContainerLookup(proxy_s1.url, NETWORKS, metrics=metrics, list_ttl=0.0)
    try:
        first = await lookup.find(S1[0], made.task_id)
        inspects_after_first = sum(n for k, n in proxy_s1.counts.items() if k.startswith("inspect:"))
        again = await lookup.find(S1[0], made.task_id)  # ttl 0: lists again, must not inspect again
        everything = await lookup.containers(S1[0])
    finally:
        await lookup.close()
    assert first is not None and first.id == made.id
    assert first.overlay_ip(NETWORKS) == made.ips["bridge"]
    assert again == first and everything[made.task_id].id == made.id
    assert proxy_s1.counts[f"inspect:{made.id}"] == 1, proxy_s1.counts
    # only unlabelled containers are ever inspected, each once
    inspects = {k: n for k, n in proxy_s1.counts.items() if k.startswith("inspect:")}
    assert all(n == 1 for n in inspects.values()), inspects
    assert sum(inspects.values()) == inspects_after_first
    assert _count(metrics, "inspect") == sum(inspects.values())
    # having seen an unlabelled task container, the slave stays in full mode: no miss-and-relist
    assert proxy_s1.counts["list-named"] >= 2


@pytest.mark.world  # the slaves' real engines (devcluster/slaves-up.sh)
async def test_burst_of_50_finds_makes_one_listing(world: dict[str, Any], proxy_s1: CountingProxy) -> None:
    burst: list[Made] = world["burst"]
    metrics = Metrics()
    lookup = ContainerLookup(proxy_s1.url, NETWORKS, metrics=metrics)
    tasks = [burst[i % len(burst)] for i in range(50)]
    try:
        t0 = time.perf_counter()
        found = await asyncio.gather(*(lookup.find(S1[0], m.task_id) for m in tasks))
        elapsed = time.perf_counter() - t0
    finally:
        await lookup.close()
    assert [c.id if c else None for c in found] == [m.id for m in tasks]
    assert [c.overlay_ip(NETWORKS) for c in found if c] == [m.ips["bridge"] for m in tasks]
    assert proxy_s1.counts["list-label"] == 1, proxy_s1.counts
    assert proxy_s1.counts["list-named"] == 0 and proxy_s1.counts["ping"] == 1, proxy_s1.counts
    assert not any(k.startswith("inspect:") for k in proxy_s1.counts), proxy_s1.counts
    assert _count(metrics, "list") == 1
    assert elapsed < 1.0, f"50 finds took {elapsed:.3f} s"


@pytest.mark.world  # the slaves' real engines (devcluster/slaves-up.sh)
async def test_api_version_is_negotiated_once(world: dict[str, Any], proxy_s1: CountingProxy) -> None:
    lookup = ContainerLookup(proxy_s1.url, NETWORKS, metrics=Metrics(), list_ttl=0.0)
    try:
        for m in world["burst"][:3]:
            assert await lookup.find(S1[0], m.task_id) is not None
    finally:
        await lookup.close()
    assert proxy_s1.counts["ping"] == 1, "the version comes from one ping's Api-Version header"
    assert proxy_s1.counts["version"] == 0, "GET /version is slow (5-7 ms) and not needed when ping says it"
    listed = [p for p in proxy_s1.paths if "/containers/" in p]
    assert listed and all(p.startswith("/v1.41/") for p in listed), listed


@pytest.mark.world  # the slaves' real engines (devcluster/slaves-up.sh)
async def test_missing_task_relists_once_then_none(world: dict[str, Any], proxy_s1: CountingProxy) -> None:
    lookup = ContainerLookup(proxy_s1.url, NETWORKS, metrics=Metrics())
    try:
        await lookup.find(S1[0], world["burst"][0].task_id)  # prime: one label listing
        assert await lookup.find(S1[0], "no_such_app.00000000-0000-0000-0000-000000000000") is None
    finally:
        await lookup.close()
    # the miss cost one narrowed probe and one full re-list (for unlabelled containers), not a loop
    assert proxy_s1.counts["list-label"] == 1, proxy_s1.counts
    assert proxy_s1.counts["list-task"] == 1 and proxy_s1.counts["list-named"] == 1, proxy_s1.counts


@pytest.mark.world  # the slaves' real engines (devcluster/slaves-up.sh)
async def test_container_started_after_the_cached_listing_is_found(
    world: dict[str, Any], created: Created
) -> None:
    lookup = ContainerLookup("tcp://{host}:2375", NETWORKS, metrics=Metrics(), list_ttl=60.0)
    try:
        assert await lookup.find(S2[0], world["s2"].task_id) is not None  # caches a listing for 60 s
        made = await asyncio.to_thread(created.run, S2, network="weave")
        c = await lookup.find(S2[0], made.task_id)
    finally:
        await lookup.close()
    assert c is not None and c.overlay_ip(NETWORKS) == made.ips["weave"]


@pytest.mark.world  # the slaves' real engines (devcluster/slaves-up.sh)
async def test_a_container_listed_before_it_ran_is_found_running_once_it_does(
    world: dict[str, Any], created: Created, clients: dict[str, Any]
) -> None:
    """A resync lists a new task's container while it is still "created"; the task's TASK_RUNNING
    comes seconds later. The cached listing must not answer "not running" for its lifetime (that
    held a new writer's registrations back by the listing's 30 s)."""
    client = clients[S1[0]]
    task_id = f"test_app.{uuid.uuid4()}"
    c = client.containers.create(IMAGE, command=["/bin/httpd", "-f", "-p", "80"], name=f"mesos-{uuid.uuid4()}",
                                 environment={"MESOS_TASK_ID": task_id}, labels={"MESOS_TASK_ID": task_id})
    created.ids.append((S1[0], c.id))
    lookup = ContainerLookup("tcp://{host}:2375", NETWORKS, metrics=Metrics(), list_ttl=60.0)
    try:
        listed = (await lookup.containers(S1[0]))[task_id]
        assert not listed.running  # the resync saw it before it ran
        await asyncio.to_thread(c.start)
        found = await lookup.find(S1[0], task_id)
    finally:
        await lookup.close()
    assert found is not None and found.running and found.overlay_ip(NETWORKS)


@pytest.mark.world  # the slaves' real engines (devcluster/slaves-up.sh)
async def test_just_started_container_costs_one_narrowed_probe(
    world: dict[str, Any], created: Created, proxy_s1: CountingProxy
) -> None:
    """A TASK_RUNNING after the cached listing: one `label=MESOS_TASK_ID=<id>` request, not a
    re-list of the whole slave; a second event for the task is then served from the listing."""
    lookup = ContainerLookup(proxy_s1.url, NETWORKS, metrics=Metrics(), list_ttl=60.0)
    try:
        assert await lookup.find(S1[0], world["s1"].task_id) is not None
        made = await asyncio.to_thread(created.run, S1)
        before = dict(proxy_s1.counts)
        c = await lookup.find(S1[0], made.task_id)
        again = await lookup.find(S1[0], made.task_id)
    finally:
        await lookup.close()
    assert c is not None and c.overlay_ip(NETWORKS) == made.ips["bridge"] and again == c
    spent = {k: n - before.get(k, 0) for k, n in proxy_s1.counts.items() if n != before.get(k, 0)}
    assert spent == {"list-task": 1}, spent


# ---- failures -------------------------------------------------------------------------------


@pytest.mark.world  # the slaves' real engines (devcluster/slaves-up.sh)
async def test_unreachable_engine_raises_within_timeout(clients: dict[str, Any]) -> None:
    lookup = ContainerLookup("tcp://{host}:2375", NETWORKS, metrics=Metrics(), timeout=1.0)
    t0 = time.monotonic()
    try:
        with pytest.raises(DockerLookupError, match=r"127\.0\.0\.9"):
            await lookup.find("127.0.0.9", "app.1")  # nothing listens there
    finally:
        await lookup.close()
    assert time.monotonic() - t0 < 1.0


async def test_silent_engine_times_out() -> None:
    """An engine that accepts and never answers (hung dockerd) must not hang the caller."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    lookup = ContainerLookup(f"tcp://127.0.0.1:{port}", NETWORKS, metrics=Metrics(), timeout=0.5)
    t0 = time.monotonic()
    try:
        with pytest.raises(DockerLookupError, match=r"slave-x.*timed out"):
            await lookup.find("slave-x", "app.1")
    finally:
        await lookup.close()
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()
    assert 0.4 < time.monotonic() - t0 < 1.5


@contextlib.asynccontextmanager
async def fake_engine(handler: Callable[[web.Request], Awaitable[web.Response]]) -> AsyncIterator[ContainerLookup]:
    """A ContainerLookup (1 s timeout) on a fake engine at 127.0.0.1 whose every GET `handler` answers."""
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    lookup = ContainerLookup(f"tcp://127.0.0.1:{port}", NETWORKS, metrics=Metrics(), timeout=1.0)
    try:
        yield lookup
    finally:
        await lookup.close()
        await runner.cleanup()


async def test_engine_error_status_raises() -> None:
    """A non-2xx answer (here: an API version the engine refuses) names the slave and the status."""

    async def too_new(request: web.Request) -> web.Response:
        if request.path == "/_ping":
            return web.Response(text="OK", headers={"Api-Version": "1.99"})
        return web.json_response({"message": "client version 1.99 is too new"}, status=400)

    async with fake_engine(too_new) as lookup:
        with pytest.raises(DockerLookupError, match=r"slave-y.*400.*too new"):
            await lookup.find("slave-y", "app.1")


async def test_engine_without_api_version_on_ping_is_asked_version() -> None:
    """Engines older than API 1.25 answer `/_ping` without `Api-Version`: `/version` then says it."""
    paths: list[str] = []

    async def old_engine(request: web.Request) -> web.Response:
        paths.append(request.path)
        if request.path == "/_ping":
            return web.Response(text="OK")
        if request.path == "/version":
            return web.json_response({"ApiVersion": "1.24"})
        if request.path == "/v1.24/containers/json":
            return web.json_response([{"Id": "c1", "Labels": {"MESOS_TASK_ID": "app.1"}, "State": "running",
                                       "NetworkSettings": {"Networks": {"weave": {"IPAddress": "10.32.0.9"}}}}])
        return web.json_response({"message": f"unexpected {request.path}"}, status=404)

    async with fake_engine(old_engine) as lookup:
        found = await lookup.find("slave-old", "app.1")
    assert found is not None and found.overlay_ip(NETWORKS) == "10.32.0.9"
    assert paths == ["/_ping", "/version", "/v1.24/containers/json"]


# ---- Weave-proxied containers on the real engine (issue 12, reference/weave.md §8) ------------------


def _proxied(created: Created, wdir: Path) -> tuple[Made, Any]:
    """A container on slave 1 made as Weave's proxy makes one (§1.4): entrypoint `/w/w` (here a
    wrapper that only execs), the `/w` bind, `WEAVE_CIDR`; NET_ADMIN so the test can "attach" it."""
    client = created.clients[S1[0]]
    task_id = f"test_app.{uuid.uuid4()}"
    c = client.containers.run(
        IMAGE, ["/bin/sleep", "3600"], entrypoint=["/w/w"], name=f"mesos-{uuid.uuid4()}", detach=True,
        environment={"WEAVE_CIDR": "net:default", "MESOS_TASK_ID": task_id}, labels={"MESOS_TASK_ID": task_id},
        volumes={str(wdir): {"bind": "/w", "mode": "ro"}}, cap_add=["NET_ADMIN"])
    created.ids.append((S1[0], c.id))
    c.reload()
    nets = c.attrs["NetworkSettings"]["Networks"]
    return Made(task_id, c.id, {n: v["IPAddress"] for n, v in nets.items() if v.get("IPAddress")}), c


def _attach(container: Any, ip: str, *, hosts: bool) -> None:
    """What `weave attach` does inside the container (§2.2, §2.3): the /etc/hosts block, then `ethwe`."""
    script = ("ip link add ethwe type veth peer name ethwepeer && ip addr add $IP/12 dev ethwe && "
              "ip link set ethwe up")
    if hosts:
        script = 'printf "%s" "$B" > /etc/hosts && ' + script
    block = weave_hosts([ip], f"{container.name}.weave.local")
    code, out = container.exec_run(["sh", "-c", script], environment={"IP": ip, "B": block})
    assert code == 0, out


@pytest.fixture(scope="module")
def weave_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wdir = tmp_path_factory.mktemp("weave-w")
    (wdir / "w").write_text('#!/bin/sh\nexec "$@"\n')
    (wdir / "w").chmod(0o755)
    return wdir


@pytest.mark.world  # the slaves' real engines (devcluster/slaves-up.sh)
async def test_proxied_container_on_the_real_engine(clients: dict[str, Any], created: Created,
                                                    weave_dir: Path) -> None:
    made, container = _proxied(created, weave_dir)
    docker_ip = made.ips["bridge"]
    metrics = Metrics()
    lookup = ContainerLookup("tcp://{host}:2375", NETWORKS, metrics=metrics, weave_exec=True)
    try:
        before = await lookup.find(S1[0], made.task_id)
        _attach(container, "10.32.9.1", hosts=True)
        after = await lookup.find(S1[0], made.task_id)
    finally:
        await lookup.close()
    assert before is not None and before.weave_proxied and before.network_ips == {"bridge": docker_ip}
    # Docker's own /etc/hosts, and `ip` answering "can't find device 'ethwe'" (exit 1): not attached yet
    assert (before.weave_ips, before.weave_pending) == ((), "weave-ip-not-attached")
    assert after is not None and (after.weave_ips, after.weave_source) == (("10.32.9.1",), "etc-hosts")
    # docker0 here is slave 1's weave bridge (10.32.1.x, inside the CIDR), and still not the answer
    assert after.overlay_address(NETWORKS, lookup.overlay_cidrs) == ("10.32.9.1", "")
    # Docker's own file is older than StartedAt: the HEAD answers "not attached" without the ~60 ms GET
    assert _count(metrics, "archive-stat") == 2 and _count(metrics, "archive") == 1
    assert _count(metrics, "exec-start") == 1


@pytest.mark.world  # the slaves' real engines (devcluster/slaves-up.sh)
async def test_proxied_container_without_hosts_rewrite_needs_exec(clients: dict[str, Any], created: Created,
                                                                  weave_dir: Path) -> None:
    made, container = _proxied(created, weave_dir)
    _attach(container, "10.32.9.2", hosts=False)  # a proxy run with --no-rewrite-hosts
    for weave_exec, expected in ((False, ((), "")), (True, (("10.32.9.2",), "exec"))):
        lookup = ContainerLookup("tcp://{host}:2375", NETWORKS, metrics=Metrics(), weave_exec=weave_exec)
        try:
            c = await lookup.find(S1[0], made.task_id)
        finally:
            await lookup.close()
        assert c is not None and (c.weave_ips, c.weave_source) == expected


@pytest.mark.world  # the slaves' real engines (devcluster/slaves-up.sh)
async def test_slave2_default_bridge_is_outside_the_overlay(clients: dict[str, Any], created: Created) -> None:
    """Slave 2's own default bridge (172.31/16) is a non-overlay bridge: its address is never registered
    as an overlay address; the container is counted once."""
    made = created.run(S2)
    metrics = Metrics()
    lookup = ContainerLookup("tcp://{host}:2375", NETWORKS, metrics=metrics)
    try:
        c = await lookup.find(S2[0], made.task_id)
        assert await lookup.find(S2[0], made.task_id) == c
    finally:
        await lookup.close()
    assert c is not None and c.network_ips == {"bridge": made.ips["bridge"]}
    assert made.ips["bridge"].startswith("172.31.")
    assert c.overlay_address(NETWORKS, lookup.overlay_cidrs) == (None, "address-outside-overlay")
    assert metrics.registry.get_sample_value("mcr_overlay_addresses_rejected_total",
                                             {"reason": "address-outside-overlay"}) == 1
