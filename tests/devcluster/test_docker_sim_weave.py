"""The simulator's Weave-proxied containers, archive and exec endpoints: the shapes the real 20.10
engine answered on slave 1 (reference/weave.md §6, measured again for issue 12) and what Weave's proxy
changes (§1.4, §3)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import tarfile
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from devcluster.docker_sim import Running, start, stop
from devcluster.docker_sim import templates as t
from tests.devcluster import sim_inprocess

sim = sim_inprocess.sim  # the fixture: one simulated Docker engine

V = "/v1.41"
EXEC_KEYS = ["ID", "Running", "ExitCode", "ProcessConfig", "OpenStdin", "OpenStderr", "OpenStdout", "CanRemove",
             "ContainerID", "DetachKeys", "Pid"]  # the order the 20.10 engine answered
ETHWE = ["ip", "-4", "-o", "addr", "show", "dev", "ethwe"]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        yield s


def base(r: Running) -> str:
    return f"http://{r.host}:{r.port}"


async def create(http: aiohttp.ClientSession, r: Running, **spec: Any) -> dict[str, str]:
    async with http.post(base(r) + "/_sim/containers", json=[{"task_id": "web.1", **spec}]) as resp:
        assert resp.status == 201, await resp.text()
        return (await resp.json())[0]


async def inspect(http: aiohttp.ClientSession, r: Running, cid: str) -> dict[str, Any]:
    async with http.get(f"{base(r)}{V}/containers/{cid}/json") as resp:
        assert resp.status == 200
        return await resp.json()


async def exec_run(http: aiohttp.ClientSession, r: Running, cid: str, cmd: list[str]) -> tuple[bytes, dict]:
    async with http.post(f"{base(r)}{V}/containers/{cid}/exec",
                         json={"Cmd": cmd, "AttachStdout": True, "AttachStderr": True, "Tty": False}) as resp:
        assert resp.status == 201
        exec_id = (await resp.json())["Id"]
    async with http.post(f"{base(r)}{V}/exec/{exec_id}/start", json={"Detach": False, "Tty": False}) as resp:
        assert resp.status == 200 and resp.content_type == "application/vnd.docker.raw-stream"
        raw = await resp.read()
    async with http.get(f"{base(r)}{V}/exec/{exec_id}/json") as resp:
        info = await resp.json()
    return raw, info


async def test_proxied_container_looks_as_the_proxy_makes_it(sim: Running, http: aiohttp.ClientSession) -> None:
    made = await create(http, sim, weave_proxy=True, ip="172.17.0.9", weave_ips=["10.32.0.3"], host_port=31001)
    doc = await inspect(http, sim, made["id"])
    assert doc["Path"] == "/w/w" and doc["Args"] == t.COMMAND
    assert doc["Config"]["Entrypoint"] == ["/w/w"] and doc["Config"]["Cmd"] == t.COMMAND
    assert doc["Config"]["Env"][0] == "WEAVE_CIDR=net:default"
    assert doc["HostConfig"]["Binds"] == [t.WEAVE_BIND] and t.WEAVE_BIND.endswith(":/w:ro")
    assert [m["Destination"] for m in doc["Mounts"]] == ["/w"]
    name = made["name"]
    assert (doc["Config"]["Hostname"], doc["Config"]["Domainname"]) == (name, "weave.local")
    assert (doc["HostConfig"]["Dns"], doc["HostConfig"]["DnsSearch"]) == (["172.17.0.1"], ["."])
    ns = doc["NetworkSettings"]
    # Docker never learns the Weave IP: docker0's address, top level and under Networks.bridge (§0)
    assert ns["IPAddress"] == ns["Networks"]["bridge"]["IPAddress"] == "172.17.0.9"
    assert list(ns["Networks"]) == ["bridge"] and ns["Networks"]["bridge"]["IPPrefixLen"] == 16
    async with http.get(f"{base(sim)}{V}/containers/json?all=1") as resp:
        [entry] = await resp.json()
    assert entry["Command"] == "/w/w /bin/httpd -f -p 80" and entry["Mounts"] == [t.WEAVE_MOUNT]
    assert entry["NetworkSettings"]["Networks"]["bridge"]["IPAddress"] == "172.17.0.9"


async def test_long_name_gets_no_weave_hostname(sim: Running, http: aiohttp.ClientSession) -> None:
    made = await create(http, sim, weave_proxy=True, name="mesos-" + "x" * 54, weave_cidr=None)
    doc = await inspect(http, sim, made["id"])
    assert (doc["Config"]["Hostname"], doc["Config"]["Domainname"]) == (made["id"][:12], "")
    assert not any(e.startswith("WEAVE_CIDR=") for e in doc["Config"]["Env"])


async def test_rewrite_inspect_changes_exactly_three_fields() -> None:
    running = await start([("127.0.0.1", 0), ("127.0.0.1", 0)], rewrite_inspect=True)
    try:
        proxy = running[0]
        async with aiohttp.ClientSession() as http:
            attached = await create(http, proxy, weave_proxy=True, ip="172.17.0.9", weave_ips=["10.32.0.3"])
            waiting = await create(http, proxy, weave_proxy=True, ip="172.17.0.10", weave_attached=False)
            plain = (await inspect(http, proxy, attached["id"]))
            before = await inspect(http, proxy, waiting["id"])
            async with http.post(f"{base(proxy)}/_sim/containers/{waiting['id']}/weave-attach") as resp:
                assert resp.status == 200
            after = await inspect(http, proxy, waiting["id"])
    finally:
        await stop(running)
    ns = plain["NetworkSettings"]
    assert (ns["IPAddress"], ns["IPPrefixLen"]) == ("10.32.0.3", 12) and ns["MacAddress"].startswith("7a:")
    assert ns["Networks"]["bridge"]["IPAddress"] == "172.17.0.9" and ns["Gateway"] == "172.17.0.1"
    # nothing is rewritten while the container has no Weave IP yet (§3)
    assert before["NetworkSettings"]["IPAddress"] == "172.17.0.10"
    changed = {k for k in after["NetworkSettings"] if after["NetworkSettings"][k] != before["NetworkSettings"][k]}
    assert changed == {"IPAddress", "IPPrefixLen", "MacAddress"}
    assert {k for k in after if after[k] != before[k]} == {"NetworkSettings"}


async def test_archive_of_etc_hosts(sim: Running, http: aiohttp.ClientSession) -> None:
    made = await create(http, sim, weave_proxy=True, ip="172.17.0.9", weave_ips=["10.32.0.3"], weave_attached=False,
                        name="c1")
    url = f"{base(sim)}{V}/containers/{made['id']}/archive?path=/etc/hosts"

    async def hosts() -> tuple[str, dict[str, Any], aiohttp.ClientResponse]:
        async with http.get(url) as resp:
            body = await resp.read()
        with tarfile.open(fileobj=io.BytesIO(body)) as tar:
            [member] = tar.getmembers()
            assert (member.name, member.mode, member.uname, member.isfile()) == ("hosts", 0o644, "root", True)
            text = tar.extractfile(member).read().decode()  # type: ignore[union-attr]
        assert len(body) == 2048
        return text, json.loads(base64.b64decode(resp.headers["X-Docker-Container-Path-Stat"])), resp

    text, stat, resp = await hosts()
    assert resp.status == 200 and resp.headers["Content-Type"] == "application/x-tar"
    assert resp.headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in resp.headers
    assert text == t.docker_hosts("172.17.0.9", "c1") and text.endswith("172.17.0.9\tc1\n")
    assert list(stat) == ["name", "size", "mode", "mtime", "linkTarget"]
    assert (stat["name"], stat["size"], stat["mode"], stat["linkTarget"]) == ("hosts", len(text), 420, "")
    async with http.post(f"{base(sim)}/_sim/containers/c1/weave-attach") as r:
        assert r.status == 200
    text, stat, _ = await hosts()
    assert text == t.weave_hosts(["10.32.0.3"], "c1.weave.local") and stat["size"] == len(text) == 361
    async with http.head(url) as resp:
        assert resp.status == 200 and await resp.read() == b""
        assert json.loads(base64.b64decode(resp.headers["X-Docker-Container-Path-Stat"]))["size"] == 361
    async with http.get(f"{base(sim)}{V}/containers/c1/archive?path=/etc/nope") as resp:
        assert resp.status == 404
        assert await resp.json() == {"message": "Could not find the file /etc/nope in container c1"}
    async with http.get(f"{base(sim)}{V}/containers/nosuch/archive?path=/etc/hosts") as resp:
        assert resp.status == 404 and await resp.json() == {"message": "No such container: nosuch"}


async def test_exec_stream_frames_and_exit_codes(sim: Running, http: aiohttp.ClientSession) -> None:
    made = await create(http, sim, weave_proxy=True, ip="172.17.0.9", weave_ips=["10.32.0.3", "10.2.7.1"],
                        weave_attached=False)
    cid = made["id"]
    raw, info = await exec_run(http, sim, cid, ETHWE)
    assert raw == bytes.fromhex("020000000000001e") + b"ip: can't find device 'ethwe'\n"  # measured bytes
    assert list(info) == EXEC_KEYS and (info["Running"], info["ExitCode"], info["ContainerID"]) == (False, 1, cid)
    assert info["ProcessConfig"] == {"tty": False, "entrypoint": "ip", "arguments": ETHWE[1:], "privileged": False}
    async with http.post(f"{base(sim)}/_sim/containers/{cid}/weave-attach") as resp:
        assert resp.status == 200
    raw, info = await exec_run(http, sim, cid, ETHWE)
    lines = (t.ip_addr_line(6, "ethwe", "10.32.0.3", 12) + t.ip_addr_line(6, "ethwe", "10.2.7.1", 12)).encode()
    assert raw == bytes([1, 0, 0, 0]) + len(lines).to_bytes(4, "big") + lines and info["ExitCode"] == 0
    assert raw[8:].decode().splitlines()[1].startswith("6: ethwe    inet 10.2.7.1/12 scope global ethwe\\ ")
    raw, info = await exec_run(http, sim, cid, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
    assert b"inet 172.17.0.9/16" in raw and info["ExitCode"] == 0

    shellless = await create(http, sim, weave_proxy=True, ip_binary=False)
    raw, info = await exec_run(http, sim, shellless["id"], ETHWE)
    assert raw[0] == 1 and raw[8:] == t.exec_not_found("ip").encode() and info["ExitCode"] == 126


async def test_exec_start_is_a_raw_stream_closed_at_the_end(sim: Running, http: aiohttp.ClientSession) -> None:
    """No Content-Length and no chunking: the daemon hijacks the connection and closes it (§6.2)."""
    made = await create(http, sim, weave_proxy=True, weave_ips=["10.32.0.3"])
    async with http.post(f"{base(sim)}{V}/containers/{made['id']}/exec", json={"Cmd": ETHWE}) as resp:
        exec_id = (await resp.json())["Id"]
    reader, writer = await asyncio.open_connection(sim.host, sim.port)
    body = b'{"Detach":false,"Tty":false}'
    writer.write(f"POST {V}/exec/{exec_id}/start HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    data = await asyncio.wait_for(reader.read(), 5)  # returns at EOF: the server closed
    writer.close()
    head, _, stream = data.partition(b"\r\n\r\n")
    headers = head.decode().lower()
    assert headers.startswith("http/1.1 200 ok") and "content-type: application/vnd.docker.raw-stream" in headers
    assert "content-length" not in headers and "transfer-encoding" not in headers
    assert stream[:1] == b"\x01" and int.from_bytes(stream[4:8], "big") == len(stream) - 8


async def test_exec_errors(sim: Running, http: aiohttp.ClientSession) -> None:
    stopped = await create(http, sim, weave_proxy=True, running=False)
    async with http.post(f"{base(sim)}{V}/containers/{stopped['id']}/exec", json={"Cmd": ETHWE}) as resp:
        assert resp.status == 409
        assert await resp.json() == {"message": f"Container {stopped['id']} is not running"}
    async with http.post(f"{base(sim)}{V}/containers/nosuch/exec", json={"Cmd": ETHWE}) as resp:
        assert resp.status == 404 and await resp.json() == {"message": "No such container: nosuch"}
    running = await create(http, sim, weave_proxy=True)
    async with http.post(f"{base(sim)}{V}/containers/{running['id']}/exec", json={"Cmd": []}) as resp:
        assert resp.status == 400 and await resp.json() == {"message": "No exec command specified"}
    async with http.post(f"{base(sim)}{V}/exec/nosuch/start", json={"Detach": False}) as resp:
        assert resp.status == 404 and await resp.json() == {"message": "No such exec instance: nosuch"}
    async with http.get(f"{base(sim)}/_sim/stats") as resp:
        stats = (await resp.json())["requests"]
    assert stats["/containers/{id}/exec"] == 3 and stats["/exec/{id}/start"] == 1
