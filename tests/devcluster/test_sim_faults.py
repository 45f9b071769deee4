"""Error injection (`devcluster/faults.py`) in each simulator: injected answers carry the exact
status, body and headers of the real system, rules expire after their duration or count, `reset`
really resets the connection, every injected answer is counted, and `/_sim/` stays untouched."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from devcluster.faults import CONSUL_NO_LEADER, CONSUL_TOO_MANY_CONNS, GARBAGE
from tests.devcluster.sim_inprocess import HOST1, HOST2, consul, docker, marathon, raw_get

REGISTER = {"Name": "web", "ID": "web-1", "Port": 80}


async def add(http: aiohttp.ClientSession, base: str, rule: dict[str, Any]) -> dict[str, Any]:
    async with http.post(f"{base}/_sim/faults", json=rule) as resp:
        body = await resp.json()
        assert resp.status == 201, body
        return body  # type: ignore[no-any-return]


async def rules(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with http.get(f"{base}/_sim/faults") as resp:
        assert resp.status == 200
        return await resp.json()  # type: ignore[no-any-return]


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str, CIMultiDictProxy[str]]:
    async with http.get(url) as resp:
        return resp.status, await resp.text(), resp.headers


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession() as s:
        yield s


# ---- Consul ------------------------------------------------------------------------------------


async def test_consul_500_no_leader_on_one_agent_for_count_answers(http: aiohttp.ClientSession) -> None:
    async with consul() as sim:
        a, b = sim.urls
        rule = await add(http, a, {"path": "^/v1/catalog/service/", "listen": HOST1, "status": 500, "count": 2})
        assert rule["id"] == 1 and rule["active"] is True and rule["hits"] == 0
        for _ in range(2):
            async with http.get(f"{a}/v1/catalog/service/web") as resp:
                assert resp.status == 500
                assert await resp.text() == "rpc error making call: No cluster leader"
                assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
            status, text, _ = await get(http, f"{b}/v1/catalog/service/web")  # the other agent answers
            assert (status, text) == (200, "[]")
        status, text, _ = await get(http, f"{a}/v1/catalog/service/web")  # spent after 2
        assert (status, text) == (200, "[]")
        status, _, _ = await get(http, f"{a}/v1/catalog/services")  # path not matched
        assert status == 200
        listed = await rules(http, b)  # one rule set for every agent of the process
        assert listed["injected"] == 2
        assert [(r["id"], r["hits"], r["active"]) for r in listed["rules"]] == [(1, 2, False)]


async def test_consul_429_is_the_connection_limiters_answer(http: aiohttp.ClientSession) -> None:
    async with consul() as sim:
        a = sim.urls[0]
        await add(http, a, {"path": "^/v1/agent/service/register$", "method": "put", "status": 429})
        async with http.put(f"{a}/v1/agent/service/register", json=REGISTER) as resp:
            assert resp.status == 429
            assert await resp.text() == ("Your IP is issuing too many concurrent connections, please rate limit "
                                         "your calls\n")
            assert resp.headers["Connection"] == "close"
            assert resp.headers["Content-Type"] == "text/plain"
        assert CONSUL_TOO_MANY_CONNS.endswith("\n") and CONSUL_NO_LEADER.startswith("rpc error")
        status, text, _ = await get(http, f"{a}/v1/agent/services")  # GET: method does not match
        assert (status, text) == (200, "{}")  # and the refused registration was not made


async def test_consul_rule_expires_after_its_duration(http: aiohttp.ClientSession) -> None:
    async with consul() as sim:
        a = sim.urls[0]
        await add(http, a, {"path": "^/v1/status/leader$", "status": 500, "duration": 0.4})
        t0 = time.monotonic()
        statuses = []
        while time.monotonic() - t0 < 0.9:
            statuses.append((await get(http, f"{a}/v1/status/leader"))[0])
            await asyncio.sleep(0.05)
        assert statuses[0] == 500 and statuses[-1] == 200
        assert statuses == sorted(statuses, reverse=True)  # 500s, then only 200s
        listed = (await rules(http, a))["rules"][0]
        assert listed["hits"] == statuses.count(500) and listed["active"] is False and listed["remaining"] == 0


async def test_consul_reset_aborts_the_connection(http: aiohttp.ClientSession) -> None:
    async with consul() as sim:
        a, b = sim.urls
        await add(http, a, {"path": "^/v1/agent/", "mode": "reset", "listen": f"{HOST2}:{a.rsplit(':', 1)[1]}"})
        with pytest.raises(ConnectionResetError):
            await raw_get(b, "/v1/agent/services")
        with pytest.raises(aiohttp.ClientOSError):  # what the registrar's client sees
            await get(http, f"{b}/v1/agent/services")
        assert (await get(http, f"{a}/v1/agent/services"))[0] == 200  # the other agent is fine
        # 1 raw attempt + aiohttp's 2 (it retries an idempotent request once on a reset)
        assert (await rules(http, a))["injected"] == 3


async def test_control_endpoints_are_never_faulted(http: aiohttp.ClientSession) -> None:
    async with consul() as sim:
        a = sim.urls[0]
        await add(http, a, {"path": "", "mode": "reset"})  # matches every path
        await add(http, a, {"path": "^/_sim/", "status": 500})
        async with http.post(f"{a}/_sim/reset") as resp:
            assert resp.status == 200
        assert len((await rules(http, a))["rules"]) == 2
        with pytest.raises(ConnectionResetError):
            await raw_get(a, "/v1/agent/self")
        async with http.delete(f"{a}/_sim/faults/1") as resp:
            assert (resp.status, await resp.json()) == (200, {"cleared": 1})
        assert (await get(http, f"{a}/v1/agent/self"))[0] == 200
        async with http.delete(f"{a}/_sim/faults") as resp:
            assert (resp.status, await resp.json()) == (200, {"cleared": 1})
        assert (await rules(http, a)) == {"rules": [], "injected": 1}


@pytest.mark.parametrize("rule, message", [
    ({"status": 500}, "path (a regular expression) is required"),
    ({"path": "("}, "path is not a regular expression"),
    ({"path": "x"}, "mode status needs a status from 100 to 599, got None"),
    ({"path": "x", "mode": "explode"}, "mode must be one of status, reset, garbage, slow"),
    ({"path": "x", "mode": "slow"}, "mode slow needs delay"),
    ({"path": "x", "mode": "reset", "status": 500}, "status is only for mode status"),
    ({"path": "x", "status": 500, "count": -1}, "count must be a non-negative integer"),
    ({"path": "x", "status": 500, "times": 2}, "unknown keys: times"),
])
async def test_bad_rules_are_400(http: aiohttp.ClientSession, rule: dict[str, Any], message: str) -> None:
    async with consul() as sim:
        async with http.post(f"{sim.urls[0]}/_sim/faults", json=rule) as resp:
            assert resp.status == 400
            assert message in (await resp.json())["message"]
        assert (await rules(http, sim.urls[0]))["rules"] == []


# ---- Marathon ----------------------------------------------------------------------------------


async def test_marathon_503_is_the_no_leader_page(http: aiohttp.ClientSession) -> None:
    async with marathon() as sim:
        m = sim.urls[0]
        await add(http, m, {"path": "^/v2/apps", "status": 503, "count": 1})
        async with http.get(f"{m}/v2/apps?embed=apps.tasks") as resp:
            assert resp.status == 503
            assert resp.headers["Content-Type"] == "text/html;charset=ISO-8859-1"
            page = await resp.text()
        assert "<title>Error 503 Could not determine the current leader</title>" in page
        assert ("<p>Problem accessing /v2/apps. Reason:\n<pre>    Could not determine the current leader</pre></p>"
                in page)
        status, text, _ = await get(http, f"{m}/v2/apps")
        assert (status, json.loads(text)) == (200, {"apps": []})


async def test_marathon_404_and_custom_bodies(http: aiohttp.ClientSession) -> None:
    async with marathon() as sim:
        m = sim.urls[0]
        await add(http, m, {"path": "^/v2/info$", "status": 404})
        await add(http, m, {"path": "^/v2/leader$", "status": 500, "body": "boom", "headers": {"X-Why": "test"}})
        status, text, _ = await get(http, f"{m}/v2/info")
        assert (status, text) == (404, '{"message":"HTTP 404 Not Found"}')
        status, text, headers = await get(http, f"{m}/v2/leader")
        assert (status, json.loads(text), headers["X-Why"]) == (500, {"message": "boom"}, "test")


async def test_marathon_garbage_is_200_and_not_json(http: aiohttp.ClientSession) -> None:
    async with marathon() as sim:
        m = sim.urls[0]
        await add(http, m, {"path": "^/v2/apps$", "mode": "garbage", "count": 1})
        async with http.get(f"{m}/v2/apps") as resp:
            assert resp.status == 200 and resp.content_type == "application/json"
            assert await resp.read() == GARBAGE
            with pytest.raises(json.JSONDecodeError):
                await resp.json()


async def test_marathon_slow_answers_normally_after_the_delay(http: aiohttp.ClientSession) -> None:
    async with marathon() as sim:
        m = sim.urls[0]
        await add(http, m, {"path": "^/v2/leader$", "mode": "slow", "delay": 0.5, "count": 1})
        t0 = time.monotonic()
        status, text, _ = await get(http, f"{m}/v2/leader")
        slow = time.monotonic() - t0
        assert (status, json.loads(text)) == (200, {"leader": f"{HOST1}:{m.rsplit(':', 1)[1]}"})
        assert slow >= 0.5
        t0 = time.monotonic()
        await get(http, f"{m}/v2/leader")
        assert time.monotonic() - t0 < 0.4
        assert (await rules(http, m))["rules"][0]["hits"] == 1


# ---- Docker ------------------------------------------------------------------------------------


async def test_docker_errors_are_message_json_with_the_engines_headers(http: aiohttp.ClientSession) -> None:
    async with docker() as sim:
        d1, d2 = sim.urls
        await add(http, d2, {"path": "^/v[0-9.]+/containers/json$", "listen": HOST1, "status": 500,
                             "body": "Cannot connect to containerd"})
        await add(http, d1, {"path": "^/_ping$", "listen": HOST1, "status": 404})
        status, text, headers = await get(http, f"{d1}/v1.41/containers/json")
        assert (status, json.loads(text)) == (500, {"message": "Cannot connect to containerd"})
        assert headers["Api-Version"] == "1.41" and headers["Content-Type"] == "application/json"
        status, text, _ = await get(http, f"{d1}/_ping")
        assert (status, json.loads(text)) == (404, {"message": "page not found"})
        status, text, _ = await get(http, f"{d2}/v1.41/containers/json")  # the other engine
        assert (status, text) == (200, "[]")
        assert (await rules(http, d1))["injected"] == 2


async def test_docker_reset(http: aiohttp.ClientSession) -> None:
    async with docker() as sim:
        d1 = sim.urls[0]
        await add(http, d1, {"path": "/containers/", "mode": "reset", "count": 1})
        with pytest.raises(ConnectionResetError):
            await raw_get(d1, "/v1.41/containers/json")
        assert (await get(http, f"{d1}/v1.41/containers/json"))[0] == 200
