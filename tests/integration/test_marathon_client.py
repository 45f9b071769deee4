"""MarathonClient and CallbackSubscription against small fake Marathons on loopback."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from service.marathon.client import MarathonClient, MarathonError
from service.marathon.subscription import CallbackSubscription
from service.metrics import Metrics
from service.model import NetworkMode

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

APP_JSON: dict[str, Any] = {
    "id": "/web/customer1/site1",
    "version": "2024-01-01T00:00:00.000Z",
    "container": {"type": "DOCKER", "docker": {"image": "busybox", "network": "BRIDGE",
                                               "portMappings": [{"containerPort": 80, "hostPort": 0}]}},
    "labels": {"consul.tags": "x"},
}
TASK_JSON: dict[str, Any] = {
    "id": "web_customer1_site1.6f0b1d0e-0000-11ee-8000-000000000001",
    "appId": "/web/customer1/site1",
    "host": "127.0.0.2",
    "state": "TASK_RUNNING",
    "ports": [31005],
    "ipAddresses": [{"ipAddress": "172.17.0.2", "protocol": "IPv4"}],
}


class FakeMarathon:
    """An aiohttp server whose routes the test fills in; it records every request it sees."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.requests: list[web.Request] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            self.requests.append(request)
            return await handler(request)

        self.app.middlewares.append(record)

    def route(self, method: str, path: str, handler: Handler) -> None:
        self.app.router.add_route(method, path, handler)

    def json(self, method: str, path: str, body: Any, status: int = 200) -> None:
        async def handler(_: web.Request) -> web.Response:
            return web.json_response(body, status=status)
        self.route(method, path, handler)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    @property
    def host_port(self) -> str:
        return self.url.split("://", 1)[1]

    async def start(self) -> None:
        # Short shutdown: tests leave handlers hanging on purpose, cleanup must not wait for them.
        self.runner = web.AppRunner(self.app, shutdown_timeout=0.2)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()


@asynccontextmanager
async def marathons(n: int = 1) -> AsyncIterator[list[FakeMarathon]]:
    servers = [FakeMarathon() for _ in range(n)]
    try:
        yield servers
    finally:
        for s in servers:
            await s.stop()


def dead_url() -> str:
    """A loopback URL nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def client(urls: list[str], session: aiohttp.ClientSession, metrics: Metrics, **kw: Any) -> MarathonClient:
    kw.setdefault("backoff_initial", 0.01)
    kw.setdefault("backoff_max", 0.02)
    return MarathonClient(urls, session=session, metrics=metrics, **kw)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels or None)
    return value or 0.0


INFO_14 = {"name": "marathon", "version": "1.4.13", "event_subscriber": {"type": "http_callback",
                                                                         "http_endpoints": []}}
INFO_110 = {"name": "marathon", "version": "1.10.17", "elected": True}


# --- endpoints, leader, failover ---------------------------------------------------------------


async def test_first_url_down_moves_to_second(session: aiohttp.ClientSession) -> None:
    m = Metrics()
    async with marathons(1) as (up,):
        up.json("GET", "/v2/info", INFO_110)
        up.json("GET", "/v2/leader", {"leader": "somewhere-else:8080"})
        await up.start()
        c = client([dead_url(), up.url], session, m)
        assert await c.info() == INFO_110
        assert c.current.display == up.url
        assert sample(m, "mcr_retries_total", system="marathon") == 1
        # The failover stays: the next call goes straight to the live master.
        up.requests.clear()
        await c.info()
        assert up.paths() == ["/v2/info"]
        assert sample(m, "mcr_retries_total", system="marathon") == 1


async def test_5xx_moves_to_next_url(session: aiohttp.ClientSession) -> None:
    m = Metrics()
    async with marathons(2) as (standby, leader):
        standby.json("GET", "/v2/leader", {"message": "There is no leader"}, status=404)
        standby.json("GET", "/v2/info", {"message": "Leader currently not available"}, status=503)
        leader.json("GET", "/v2/leader", {"message": "There is no leader"}, status=404)
        leader.json("GET", "/v2/info", INFO_110)
        await standby.start()
        await leader.start()
        c = client([standby.url, leader.url], session, m)
        assert (await c.info())["version"] == "1.10.17"
        assert standby.paths() == ["/v2/leader", "/v2/info"]
        assert leader.paths() == ["/v2/leader", "/v2/info"]


async def test_leader_is_preferred(session: aiohttp.ClientSession) -> None:
    m = Metrics()
    async with marathons(2) as (a, b):
        leader: dict[str, str] = {}

        async def leader_answer(_: web.Request) -> web.Response:
            return web.json_response(leader)

        for s in (a, b):
            s.route("GET", "/v2/leader", leader_answer)
            s.json("GET", "/v2/info", INFO_110)
        await a.start()
        await b.start()
        leader["leader"] = b.host_port
        c = client([a.url, b.url], session, m)
        await c.info()
        await c.info()
        assert a.paths() == ["/v2/leader"]
        assert b.paths() == ["/v2/info", "/v2/info"]
        assert c.current_index == 1
        assert sample(m, "mcr_retries_total", system="marathon") == 0


async def test_leader_not_listed_keeps_current(session: aiohttp.ClientSession) -> None:
    async with marathons(2) as (a, b):
        for s in (a, b):
            s.json("GET", "/v2/leader", {"leader": "marathon-9.example.net:8080"})
            s.json("GET", "/v2/info", INFO_110)
        await a.start()
        await b.start()
        c = client([a.url, b.url], session, Metrics())
        await c.info()
        await c.info()
        assert a.paths() == ["/v2/leader", "/v2/info", "/v2/info"]
        assert b.paths() == []


async def test_leader_question_refused_does_not_fail_the_call(session: aiohttp.ClientSession) -> None:
    async with marathons(2) as (a, b):
        a.json("GET", "/v2/leader", {"message": "Not Authorized to perform this action!"}, status=403)
        a.json("GET", "/v2/info", INFO_110)
        await a.start()
        await b.start()
        c = client([a.url, b.url], session, Metrics())
        assert await c.info() == INFO_110
        await c.info()
        assert a.paths() == ["/v2/leader", "/v2/info", "/v2/info"]  # asked once, then left alone


async def test_basic_auth_from_url_and_password_never_shown(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "s3cr%40t"  # percent-encoded '@' in the URL: the password is "s3cr@t"
    async with marathons(1) as (s,):
        s.json("GET", "/v2/info", INFO_110)
        s.json("GET", "/v2/apps/bad", {"message": "no"}, status=422)
        s.json("GET", "/v2/leader", {"leader": "x:1"})
        await s.start()
        url = s.url.replace("http://", f"http://admin:{secret}@")
        c = client([dead_url().replace("http://", f"http://admin:{secret}@"), url], session, Metrics())
        await c.info()
        assert s.requests[-1].headers["Authorization"] == aiohttp.encode_basic_auth("admin", "s3cr@t")
        with pytest.raises(MarathonError) as err:
            await c.app_with_tasks("/bad")
        assert err.value.status == 422
        shown = str(err.value) + " ".join(r.getMessage() for r in caplog.records) + repr(c.endpoints)
        assert "s3cr" not in shown
        encoded = aiohttp.encode_basic_auth("admin", "s3cr@t").split()[1]
        assert encoded not in shown  # not even base64-encoded
        assert "admin" not in str(err.value)


async def test_no_auth_header_without_credentials(session: aiohttp.ClientSession) -> None:
    async with marathons(1) as (s,):
        s.json("GET", "/v2/info", INFO_110)
        await s.start()
        await client([s.url], session, Metrics()).info()
        assert "Authorization" not in s.requests[0].headers


# --- retries and errors ------------------------------------------------------------------------


async def test_always_503_exact_attempts_then_error(session: aiohttp.ClientSession) -> None:
    m = Metrics()
    async with marathons(1) as (s,):
        s.json("GET", "/v2/info", {"message": "Leader currently not available"}, status=503)
        await s.start()
        c = client([s.url], session, m, attempts=4)
        with pytest.raises(MarathonError) as err:
            await c.info()
        assert len(s.requests) == 4
        assert err.value.status == 503
        assert "Leader currently not available" in err.value.body
        assert sample(m, "mcr_retries_total", system="marathon") == 3
        assert sample(m, "mcr_marathon_request_seconds_count", call="info") == 4


async def test_attempts_cover_every_url(session: aiohttp.ClientSession) -> None:
    async with marathons(1) as (s,):
        s.json("GET", "/v2/info", INFO_110)
        s.json("GET", "/v2/leader", {"leader": "x:1"})
        await s.start()
        urls = [dead_url(), dead_url(), dead_url(), s.url]
        assert await client(urls, session, Metrics(), attempts=2).info() == INFO_110


async def test_all_down_gives_marathon_error_without_status(session: aiohttp.ClientSession) -> None:
    c = client([dead_url(), dead_url()], session, Metrics(), attempts=3)
    with pytest.raises(MarathonError) as err:
        await c.info()
    assert err.value.status is None
    assert "3 attempts" in str(err.value)


async def test_4xx_is_not_retried(session: aiohttp.ClientSession) -> None:
    m = Metrics()
    async with marathons(1) as (s,):
        s.json("GET", "/v2/eventSubscriptions", {"message": "http event callback system is not running"},
               status=400)
        await s.start()
        with pytest.raises(MarathonError) as err:
            await client([s.url], session, m).subscriptions()
        assert len(s.requests) == 1
        assert err.value.status == 400
        assert "callback system is not running" in str(err.value)
        assert sample(m, "mcr_retries_total", system="marathon") == 0


async def test_200_that_is_not_json_is_an_error(session: aiohttp.ClientSession) -> None:
    async with marathons(1) as (s,):
        async def html(_: web.Request) -> web.Response:
            return web.Response(text="<html>login</html>", content_type="text/html")
        s.route("GET", "/v2/info", html)
        await s.start()
        with pytest.raises(MarathonError, match="not JSON"):
            await client([s.url], session, Metrics()).info()
        assert len(s.requests) == 1


async def test_each_attempt_has_a_timeout(session: aiohttp.ClientSession) -> None:
    async with marathons(1) as (s,):
        async def slow(_: web.Request) -> web.Response:
            await asyncio.sleep(5)
            return web.json_response(INFO_110)
        s.route("GET", "/v2/info", slow)
        await s.start()
        c = client([s.url], session, Metrics(), timeout=0.2, attempts=2)
        started = time.monotonic()
        with pytest.raises(MarathonError):
            await c.info()
        assert time.monotonic() - started < 2
        assert len(s.requests) == 2


# --- the calls ---------------------------------------------------------------------------------


async def test_apps_with_tasks_asks_for_embedded_tasks(session: aiohttp.ClientSession) -> None:
    async with marathons(1) as (s,):
        s.json("GET", "/v2/apps", {"apps": [dict(APP_JSON, tasks=[TASK_JSON])]})
        await s.start()
        result = await client([s.url], session, Metrics()).apps_with_tasks()
        assert s.requests[0].query.getall("embed") == ["apps.tasks"]
        [(app, tasks)] = result
        assert app.id == "/web/customer1/site1"
        assert app.network_mode is NetworkMode.BRIDGE
        assert [t.id for t in tasks] == [TASK_JSON["id"]]
        assert tasks[0].ports == (31005,)


async def test_app_with_tasks_is_one_read(session: aiohttp.ClientSession) -> None:
    async with marathons(1) as (s,):
        s.json("GET", "/v2/apps/web/customer1/site1", {"app": dict(APP_JSON, tasks=[TASK_JSON])})
        await s.start()
        c = client([s.url], session, Metrics())
        found = await c.app_with_tasks("/web/customer1/site1")
        assert found is not None
        app, tasks = found
        assert app.labels == {"consul.tags": "x"}
        assert [t.host for t in tasks] == ["127.0.0.2"]
        assert tasks[0].app_id == "/web/customer1/site1"
        assert len(s.requests) == 1


async def test_unknown_app_is_none(session: aiohttp.ClientSession) -> None:
    m = Metrics()
    async with marathons(1) as (s,):
        s.json("GET", "/v2/apps/gone", {"message": "App '/gone' does not exist"}, status=404)
        await s.start()
        c = client([s.url], session, m)
        assert await c.app_with_tasks("/gone") is None
        assert len(s.requests) == 1
        assert sample(m, "mcr_retries_total", system="marathon") == 0


async def test_unusable_shape_is_a_marathon_error(session: aiohttp.ClientSession) -> None:
    async with marathons(1) as (s,):
        s.json("GET", "/v2/apps", {"unexpected": []})
        await s.start()
        with pytest.raises(MarathonError, match="unexpected response"):
            await client([s.url], session, Metrics()).apps_with_tasks()


@pytest.mark.parametrize(("info", "transport"), [
    (INFO_14, "callback"),
    (INFO_110, "sse"),
    (dict(INFO_110, event_subscriber=None), "sse"),  # 1.4 without --event_subscriber
])
async def test_event_transport(session: aiohttp.ClientSession, info: dict[str, Any], transport: str) -> None:
    async with marathons(1) as (s,):
        s.json("GET", "/v2/info", info)
        await s.start()
        assert await client([s.url], session, Metrics()).event_transport() == transport


# --- callback subscription ---------------------------------------------------------------------


def subscriptions_api(s: FakeMarathon, urls: list[str], hang: bool = False) -> None:
    """Marathon 1.4's /v2/eventSubscriptions, strict about Content-Type the way Jersey is."""

    async def listing(_: web.Request) -> web.Response:
        return web.json_response({"callbackUrls": list(urls)})

    async def change(request: web.Request) -> web.Response:
        if hang:
            await asyncio.sleep(30)
        if request.headers.get("Content-Type") != "application/json":
            return web.json_response({"message": "Unsupported Media Type"}, status=415)
        url = request.query["callbackUrl"]
        if request.method == "POST":
            if url not in urls:
                urls.append(url)
            kind = "subscribe_event"
        else:
            if url in urls:
                urls.remove(url)
            kind = "unsubscribe_event"
        return web.json_response({"clientIp": "127.0.0.1", "callbackUrl": url, "eventType": kind})

    s.route("GET", "/v2/eventSubscriptions", listing)
    s.route("POST", "/v2/eventSubscriptions", change)
    s.route("DELETE", "/v2/eventSubscriptions", change)


CALLBACK = "http://127.0.0.5:8000/v1/events?x=1&y=2"


async def test_subscription_ensure_and_remove(session: aiohttp.ClientSession) -> None:
    m = Metrics()
    urls = ["http://other:9090/events"]
    async with marathons(1) as (s,):
        subscriptions_api(s, urls)
        await s.start()
        sub = CallbackSubscription(client([s.url], session, m), CALLBACK, m)

        assert await sub.ensure() is True
        assert urls == ["http://other:9090/events", CALLBACK]
        post = s.requests[-1]
        assert post.method == "POST"
        assert post.headers["Content-Type"] == "application/json"
        assert post.query["callbackUrl"] == CALLBACK
        assert await post.read() == b""
        assert sample(m, "mcr_callback_subscribed") == 1

        s.requests.clear()
        assert await sub.ensure() is False  # present: only looked at
        assert [r.method for r in s.requests] == ["GET"]

        urls.remove(CALLBACK)  # someone removed us
        assert await sub.ensure() is True
        assert CALLBACK in urls

        assert await sub.remove() is True
        delete = s.requests[-1]
        assert delete.method == "DELETE"
        assert delete.headers["Content-Type"] == "application/json"
        assert delete.query["callbackUrl"] == CALLBACK
        assert urls == ["http://other:9090/events"]
        assert sample(m, "mcr_callback_subscribed") == 0


async def test_subscription_ensure_fails_without_callbacks(session: aiohttp.ClientSession) -> None:
    m = Metrics()
    m.subscription.set(1)
    async with marathons(1) as (s,):
        s.json("GET", "/v2/eventSubscriptions", {"message": "http event callback system is not running"},
               status=400)
        await s.start()
        sub = CallbackSubscription(client([s.url], session, m), CALLBACK, m)
        with pytest.raises(MarathonError):
            await sub.ensure()
        assert sample(m, "mcr_callback_subscribed") == 0


async def test_subscription_remove_is_bounded(session: aiohttp.ClientSession) -> None:
    m = Metrics()
    async with marathons(1) as (s,):
        subscriptions_api(s, [CALLBACK], hang=True)
        await s.start()
        sub = CallbackSubscription(client([s.url], session, m, timeout=10), CALLBACK, m, remove_timeout=0.3)
        started = time.monotonic()
        assert await sub.remove() is False
        assert time.monotonic() - started < 2


async def test_subscription_remove_with_marathon_down(session: aiohttp.ClientSession) -> None:
    m = Metrics()
    sub = CallbackSubscription(client([dead_url()], session, m), CALLBACK, m)
    assert await sub.remove() is False
