"""Simulator answers that used to differ from the real systems' (issue 9): each test pins what
Consul or Marathon really does, with the source that says so."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from tests.devcluster.sim_inprocess import consul, marathon


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession() as s:
        yield s


def app(app_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": app_id, "cmd": "sleep 1000", "instances": 0, "cpus": 0.1, "mem": 32,
            "container": {"type": "DOCKER", "docker": {"image": "busybox"},
                          "portMappings": [{"containerPort": 80, "hostPort": 0}]},
            "networks": [{"mode": "container/bridge"}], **extra}


@pytest.mark.parametrize("prefix", ["/v1/health/service/", "/v1/catalog/service/", "/v1/health/checks/"])
async def test_consul_service_reads_without_a_name_are_400(http: aiohttp.ClientSession, prefix: str) -> None:
    # agent/health_endpoint.go healthServiceNodes / HealthServiceChecks, agent/catalog_endpoint.go
    # CatalogServiceNodes: an empty name after the prefix is refused before any lookup.
    async with consul() as sim:
        async with http.get(sim.urls[0] + prefix) as resp:
            assert (resp.status, await resp.text()) == (400, "Missing service name")
        async with http.get(sim.urls[0] + prefix + "web") as resp:
            assert (resp.status, await resp.text()) == (200, "[]")


@pytest.mark.parametrize("version", [(1, 4), (1, 10)])
async def test_marathon_app_health_check_timeout_may_reach_the_interval(http: aiohttp.ClientSession,
                                                                        version: tuple[int, int]) -> None:
    # Only readiness checks (AppValidation.scala readinessCheckValidator) and pod health checks
    # (PodsValidation.scala healthCheckValidator) need timeoutSeconds < intervalSeconds.
    checks = [{"protocol": "HTTP", "path": "/", "portIndex": 0, "intervalSeconds": 10, "timeoutSeconds": 20},
              {"protocol": "TCP", "portIndex": 0, "intervalSeconds": 5, "timeoutSeconds": 5}]
    async with marathon(version) as sim:
        body = app("/web/slowcheck", healthChecks=checks)
        async with http.post(sim.urls[0] + "/v2/apps", json=body) as resp:
            assert resp.status == 201, await resp.text()
        async with http.get(sim.urls[0] + "/v2/apps/web/slowcheck") as resp:
            got = (await resp.json())["app"]["healthChecks"]
        assert [(h["intervalSeconds"], h["timeoutSeconds"]) for h in got] == [(10, 20), (5, 5)]


async def test_marathon_group_listing(http: aiohttp.ClientSession) -> None:
    # AppsResource.show: ListApps = ^((?:.+/)|)\*$ -> {"*": [AppInfo with tasks, counts, deployments]};
    # AppTasksResource.indexJson: GroupTasks, the same regex -> {"tasks": [...]};
    # RestResource.unknownGroup -> 404 "Group '<id>' does not exist".
    async with marathon() as sim:
        base = sim.urls[0]
        for app_id in ("/web/customer1/site1", "/web/customer2/site2", "/other/x"):
            async with http.post(base + "/v2/apps", json=app(app_id)) as resp:
                assert resp.status == 201

        async def ids(path: str) -> list[str]:
            async with http.get(base + path) as resp:
                assert resp.status == 200, path
                body = await resp.json()
            assert list(body) == ["*"]
            assert all({"tasks", "tasksRunning", "deployments"} <= set(a) for a in body["*"])
            return sorted(a["id"] for a in body["*"])

        assert await ids("/v2/apps/web/*") == ["/web/customer1/site1", "/web/customer2/site2"]
        assert await ids("/v2/apps/web/customer1/*") == ["/web/customer1/site1"]
        assert await ids("/v2/apps/*") == ["/other/x", "/web/customer1/site1", "/web/customer2/site2"]
        async with http.get(base + "/v2/apps/web/*/tasks") as resp:
            assert (resp.status, await resp.json()) == (200, {"tasks": []})
        for path in ("/v2/apps/nope/*", "/v2/apps/web/site1/*", "/v2/apps/nope/*/tasks"):
            async with http.get(base + path) as resp:
                group = path.removeprefix("/v2/apps").split("/*")[0]
                assert (resp.status, json.loads(await resp.text())) == (
                    404, {"message": f"Group '{group}' does not exist"})
        async with http.delete(base + "/v2/apps/other/x") as resp:
            assert resp.status == 200
        assert await ids("/v2/apps/other/*") == []  # the group outlives its last app, as in Marathon
