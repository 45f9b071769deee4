"""`sync` without `--dry-run` writes, so it takes the cluster's lock as `serve` does (same key,
session and write gate): never a second writer beside a serving instance. Each case starts the real
command (`python -m service sync`, with flags or with MCR_* env as an operator gives them) against
the in-process Consul and Marathon simulators. What it repairs is an orphan of this cluster planted
in agent A (a registration of an app Marathon does not have): its removal is the write."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from devcluster.marathon_sim.app_json import AppSpec
from devcluster.marathon_sim.config import SlaveConfig
from devcluster.marathon_sim.state import AppRecord, Task
from service.leadership import lock_key
from service.ownership import META_APP_ID, META_CLUSTER_ID, META_TASK_ID, OWNER_MARKER
from tests.devcluster import sim_inprocess

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = "sync-lock"
KEY = lock_key(CLUSTER)
ORPHAN = "mcr-gone.1-0"
HOLDER = {"host": "10.9.8.7", "port": 8080, "pid": 4242, "version": "9.9", "hostname": "slave-7"}


async def consul_put(url: str, path: str, body: Any = None, *, data: bytes | None = None) -> Any:
    async with aiohttp.ClientSession() as http, http.put(f"{url}{path}", json=body, data=data) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json(content_type=None)


async def consul_get(url: str, path: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(f"{url}{path}") as resp:
        return await resp.json(content_type=None) if resp.status == 200 else None


async def plant_orphan(agent: str) -> None:
    await consul_put(agent, "/v1/agent/service/register", {
        "ID": ORPHAN, "Name": "gone", "Address": "10.32.0.9", "Port": 80,
        "Meta": {**OWNER_MARKER, META_APP_ID: "/gone", META_TASK_ID: "gone.1", META_CLUSTER_ID: CLUSTER}})


async def services(agent: str) -> set[str]:
    return set(await consul_get(agent, "/v1/agent/services") or {})


async def sessions(agent: str) -> set[str]:
    return {s["ID"] for s in await consul_get(agent, "/v1/session/list") or []}


async def key_session(agent: str) -> str | None:
    entries = await consul_get(agent, f"/v1/kv/{KEY}")
    return entries[0].get("Session") if entries else None


async def hold_lock(agent: str) -> str:
    """Another instance (a serving registrar elsewhere) holds the cluster's lock."""
    session = (await consul_put(agent, "/v1/session/create", {"Name": "marathon-consul-registrar", "TTL": "60s"}))["ID"]
    assert await consul_put(agent, f"/v1/kv/{KEY}?acquire={session}", data=json.dumps(HOLDER).encode()) is True
    return str(session)


def run_task_on(marathon: sim_inprocess.Served, host: str) -> None:
    """An app with one running task on `host` (host networking, no ports: nothing to register): a
    fresh registrar reads the agents of the hosts Marathon names (and the catalog found through
    them), so this is what leads it to agent A."""
    assert marathon.marathon is not None
    registry = marathon.marathon.reg
    spec = AppSpec(id="/web", image="busybox", version="2026-12-08T00:00:00.000Z")
    slave = SlaveConfig(host=host, docker_url="tcp://127.0.0.1:1", overlay_network="weave")
    task = Task(task_id="web.t1", instance_id="web.t1", app_id="/web", slave=slave, slave_id="S0",
                version=spec.version, state="TASK_RUNNING")
    registry.apps["/web"] = AppRecord(spec=spec, tasks={task.task_id: task})


@asynccontextmanager
async def world() -> AsyncIterator[tuple[str, str, str]]:
    """(Marathon URL, agent A's URL, the --docker template); agent A is also the lock agent, the
    task's container runs in the engine of its host."""
    async with sim_inprocess.consul() as consul, sim_inprocess.marathon() as marathon, \
            sim_inprocess.docker() as docker:
        agent = consul.urls[0]
        await plant_orphan(agent)
        run_task_on(marathon, sim_inprocess.HOST1)
        engine = docker.urls[0]
        async with aiohttp.ClientSession() as http, http.post(f"{engine}/_sim/containers", json=[
                {"task_id": "web.t1", "ip": "10.32.0.9", "network": "weave"}]) as resp:
            assert resp.status in (200, 201), await resp.text()
        yield marathon.urls[0], agent, engine.replace(sim_inprocess.HOST1, "{host}").replace("http", "tcp")


async def sync(*flags: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "sync", *flags, stdout=PIPE, stderr=PIPE, cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("MCR_")}, "PYTHONPATH": str(ROOT),
             **(env or {})})
    try:
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return int(proc.returncode or 0), out.decode(), err.decode()


def flags(marathon: str, agent: str, docker: str) -> list[str]:
    port = agent.rsplit(":", 1)[1]
    return ["--marathon", marathon, "--consul", f"http://{{host}}:{port}", "--lock-agent", agent, "--docker", docker,
            "--cluster-id", CLUSTER, "--log-level", "DEBUG"]


async def test_sync_while_another_instance_holds_the_lock_says_who_and_writes_nothing() -> None:
    async with world() as (marathon, agent, docker):
        other = await hold_lock(agent)
        code, out, err = await sync(*flags(marathon, agent, docker))
        assert (code, out) == (1, ""), err
        assert "Traceback" not in err, err
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"marathon-consul-registrar: sync: the lock {KEY} is held by 10.9.8.7:8080 "), err
        assert "slave-7" in last and "pid 4242" in last and other in last, last
        assert "--lock off" in last and "nothing was written" in last, last
        assert ORPHAN in await services(agent)  # nothing written
        assert await sessions(agent) == {other}, err  # ours destroyed on the way out
        assert await key_session(agent) == other

        # --dry-run takes no lock: it reads and reports while the other instance writes
        code, out, err = await sync(*flags(marathon, agent, docker), "--dry-run")
        assert code == 0, err
        assert ORPHAN in json.dumps(json.loads(out)["orphan"]), out
        assert await sessions(agent) == {other}


async def test_sync_with_the_lock_free_takes_it_repairs_and_gives_it_back() -> None:
    """Started as an operator in the registrar's container would, with its MCR_* env."""
    async with world() as (marathon, agent, docker):
        port = agent.rsplit(":", 1)[1]
        env = {"MCR_MARATHON": marathon, "MCR_CONSUL": f"http://{{host}}:{port}", "MCR_LOCK_AGENT": agent,
               "MCR_CLUSTER_ID": CLUSTER, "MCR_LOCK": "on", "MCR_DOCKER": docker}
        code, out, err = await sync(env=env)
        assert code == 0, err
        assert json.loads(out)["counts"] == {"drifted": 0, "missing": 0, "orphan": 1}, out
        assert ORPHAN not in await services(agent)
        assert await sessions(agent) == set()  # the session destroyed at exit
        assert await key_session(agent) is None  # the key released
        entries = await consul_get(agent, f"/v1/kv/{KEY}")
        assert entries is not None, "the key was never acquired"  # the value names its last holder


async def test_sync_with_lock_off_writes_beside_a_holder() -> None:
    """--lock off is the operator's way out (two writers while both run): no lock asked for."""
    async with world() as (marathon, agent, docker):
        other = await hold_lock(agent)
        code, _, err = await sync(*flags(marathon, agent, docker), "--lock", "off")
        assert code == 0, err
        assert ORPHAN not in await services(agent)
        assert await sessions(agent) == {other}


async def test_sync_through_an_unreachable_lock_agent_gives_up_in_bounded_time_and_writes_nothing() -> None:
    """The wait for the lock is the lock-delay (a previous holder's may be running) and 5 s."""
    async with world() as (marathon, agent, docker):
        nobody = f"http://127.0.0.1:{sim_inprocess.free_port('127.0.0.1')}"
        argv = [*flags(marathon, agent, docker), "--lock-agent", nobody, "--lock", "on", "--lock-delay", "0"]
        code, out, err = await sync(*argv)  # a sync that waited for ever would fail at its 60 s timeout
        assert (code, out) == (1, ""), err
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"marathon-consul-registrar: sync: could not take the lock {KEY} through "
                               f"--lock-agent {nobody} within 5s"), err
        assert "nothing was written" in last, last
        assert ORPHAN in await services(agent)


async def test_sync_stopped_by_sigterm_gives_the_lock_back() -> None:
    """SIGTERM is how a sync is stopped (`timeout`, a Job's deadline, systemd, Ctrl-\\ aside): it must
    give the key back and destroy its session on its way out, as serve does. A session left to its
    TTL keeps every serving instance from writing for up to 2 x TTL + the lock-delay (45 s by default:
    the session is bound to serfHealth only, which stays passing)."""
    async with world() as (marathon, agent, docker):
        # the resync's read of the apps hangs: the sync holds the lock, nothing written yet
        async with aiohttp.ClientSession() as http, http.post(f"{marathon}/_sim/faults", json={
                "path": "^/v2/apps$", "method": "GET", "mode": "slow", "delay": 30}) as resp:
            assert resp.status == 201, await resp.text()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", "sync", *flags(marathon, agent, docker), "--lock", "on",
            stdout=PIPE, stderr=PIPE, cwd=ROOT,
            env={**{k: v for k, v in os.environ.items() if not k.startswith("MCR_")}, "PYTHONPATH": str(ROOT)})
        try:
            async with asyncio.timeout(30):
                while await key_session(agent) is None:
                    assert proc.returncode is None, (await proc.communicate())[1].decode()
                    await asyncio.sleep(0.05)
            proc.terminate()
            async with asyncio.timeout(15):
                out, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        text = err.decode()
        assert proc.returncode == 143 and out == b"", text
        assert "Traceback" not in text, text
        last = text.strip().splitlines()[-1]
        assert last.startswith("marathon-consul-registrar: sync: stopped (SIGTERM)"), text
        assert await key_session(agent) is None, text  # the key given back
        assert await sessions(agent) == set(), text  # the session destroyed
        assert ORPHAN in await services(agent)  # stopped before its repairs
