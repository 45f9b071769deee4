"""One rule for Marathon's redirects (service/marathon/redirect.py), the same for a REST call and the
event stream: a standby's redirect to the leader is followed, with credentials only when the scheme
is kept or raised (never https to http), and at most the same number of hops for both.

Real servers (aiohttp, the https ones with a throw-away CA) on 127.0.0.61-62; the registrar's own
client and stream make the requests."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from service.backoff import Backoff
from service.marathon.client import MarathonClient, MarathonError
from service.marathon.redirect import MAX_REDIRECTS, RedirectError, follow
from service.marathon.sse import EventStream
from service.metrics import Metrics
from tests.pki import PKI, make_pki, serve, server_context

STANDBY, LEADER = "127.0.0.61", "127.0.0.62"
SENDER = aiohttp.encode_basic_auth("ops", "standby-pw")
OWN = aiohttp.encode_basic_auth("ops", "leader-pw")
ATTACHED = b'event: event_stream_attached\r\ndata: {"eventType":"event_stream_attached"}\r\n\r\n'


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


class Leader:
    """Answers the app read and the event stream, recording the Authorization of each request."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        self.streamed = asyncio.Event()

    async def app(self, request: web.Request) -> web.Response:
        self.seen.append(("rest", request.headers.get("Authorization")))
        return web.json_response({"app": {"id": "/web", "instances": 0, "tasks": []}})

    async def events(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(("events", request.headers.get("Authorization")))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(ATTACHED)
        self.streamed.set()
        return resp  # then the stream ends: enough to count as attached

    def build(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v2/apps/web", self.app)
        app.router.add_get("/v2/events", self.events)
        return app


def standby(target: str) -> web.Application:
    """A standby that sends every request on to `target` (Marathon 1.7+ answers /v2/events so)."""
    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{target}{request.path_qs}")

    app = web.Application()
    app.router.add_get("/{tail:.*}", redirect)
    return app


@asynccontextmanager
async def pair(pki: PKI, standby_scheme: str, leader_scheme: str) -> AsyncIterator[tuple[str, str, Leader]]:
    """A standby on STANDBY redirecting to the leader on LEADER; yields both base URLs and the leader."""
    leader = Leader()
    async with AsyncExitStack() as stack:
        lctx = server_context(pki.issue("leader", san=f"IP:{LEADER}")) if leader_scheme == "https" else None
        lport = await stack.enter_async_context(serve(leader.build(), LEADER, lctx))
        leader_url = f"{leader_scheme}://{LEADER}:{lport}"
        sctx = server_context(pki.issue("standby", san=f"IP:{STANDBY}")) if standby_scheme == "https" else None
        sport = await stack.enter_async_context(serve(standby(leader_url), STANDBY, sctx))
        yield f"{standby_scheme}://{STANDBY}:{sport}", leader_url, leader


@asynccontextmanager
async def session_trusting(ca: Path) -> AsyncIterator[aiohttp.ClientSession]:
    ctx = ssl.create_default_context(cafile=str(ca))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
        yield session


def with_credentials(url: str, password: str) -> str:
    return url.replace("://", f"://ops:{password}@", 1)


async def through_both_paths(urls: list[str], session: aiohttp.ClientSession, leader: Leader) -> None:
    """One REST read and one event-stream connect through the standby (urls[0])."""
    metrics = Metrics()
    client = MarathonClient(urls, session=session, metrics=metrics, attempts=1)
    client._leader_checked = True  # ask the standby, as after a failover: it redirects
    await client.app_with_tasks("/web")
    stream = EventStream(client, metrics=metrics, on_event=lambda e: None, on_connect=lambda: None,
                         backoff_initial=0.05, backoff_cap=0.05)
    task = asyncio.create_task(stream.run())
    try:
        await asyncio.wait_for(leader.streamed.wait(), 5)
    finally:
        stream.stop()
        await asyncio.wait_for(task, 2)


# (standby's scheme, leader's scheme, is the leader named in --marathon, what the leader receives)
@pytest.mark.parametrize("standby_scheme,leader_scheme,named,expected", [
    ("http", "http", False, SENDER),     # scheme kept: the standby's credentials go on
    ("http", "http", True, OWN),         # a named master gets its own credentials
    ("https", "https", False, SENDER),
    ("http", "https", False, SENDER),    # raised
    ("https", "http", False, None),      # lowered: followed, never with credentials
    ("https", "http", True, None),       # not even the leader's own
])
async def test_credentials_follow_a_redirect_only_when_the_scheme_is_kept_or_raised(
        pki: PKI, standby_scheme: str, leader_scheme: str, named: bool, expected: str | None) -> None:
    async with pair(pki, standby_scheme, leader_scheme) as (standby_url, leader_url, leader), \
            session_trusting(pki.ca.cert) as session:
        urls = [with_credentials(standby_url, "standby-pw")]
        if named:
            urls.append(with_credentials(leader_url, "leader-pw"))
        await through_both_paths(urls, session, leader)
    assert leader.seen[0] == ("rest", expected)
    assert ("events", expected) in leader.seen
    assert all(auth == expected for _, auth in leader.seen)


async def test_the_same_number_of_hops_for_rest_and_the_stream() -> None:
    hops: list[str] = []
    enough = asyncio.Event()

    async def loop(request: web.Request) -> web.Response:
        hops.append(request.path)
        if len(hops) == MAX_REDIRECTS + 1:
            enough.set()
        raise web.HTTPFound(request.path_qs)

    app = web.Application()
    app.router.add_get("/{tail:.*}", loop)
    async with serve(app, STANDBY, None) as port, aiohttp.ClientSession() as session:
        metrics = Metrics()
        client = MarathonClient([f"http://{STANDBY}:{port}"], session=session, metrics=metrics, attempts=1)
        with pytest.raises(MarathonError) as raised:
            await client.app_with_tasks("/web")
        assert (raised.value.verdict.value, raised.value.cause) == ("report", "redirect")
        rest_hops = len(hops)
        hops.clear()
        enough.clear()
        stream = EventStream(client, metrics=metrics, on_event=lambda e: None, on_connect=lambda: None,
                             backoff_initial=5.0, backoff_cap=5.0)
        # the jitter pinned to its ceiling: a draw under 0.1 s (one in fifty) would reconnect in the window
        stream.backoff = Backoff(initial=5.0, cap=5.0, uniform=lambda low, high: high)
        task = asyncio.create_task(stream.run())
        await asyncio.wait_for(enough.wait(), 5)
        await asyncio.sleep(0.1)  # then it backs off (5 s), sending nothing more
        stream.stop()
        await asyncio.wait_for(task, 2)
    assert rest_hops == len(hops) == MAX_REDIRECTS + 1 == 4


class Named:
    def __init__(self, url: str, auth: str) -> None:
        self.url = url
        self.headers = {"Authorization": auth}
        host, _, port = url.split("://")[1].partition(":")
        self.host_port = (host, int(port))


@pytest.mark.parametrize("url,location,to,auth", [
    ("http://a:8080/v2/events?x=1", "http://b:8080/v2/events?x=1", "http://b:8080/v2/events?x=1", SENDER),
    ("http://a:8080/v2/events", "http://n:8080/v2/events", "http://n:8080/v2/events", OWN),
    ("http://a:8080/v2/events", "/elsewhere", "http://a:8080/elsewhere", SENDER),
    ("https://a:8443/v2/events", "http://b:8080/v2/events", "http://b:8080/v2/events", None),
    ("https://a:8443/v2/events", "http://n:8080/v2/events", "http://n:8080/v2/events", None),
    ("http://a:8080/v2/events", "https://b:8443/v2/events", "https://b:8443/v2/events", SENDER),
])
def test_the_rule(url: str, location: str, to: str, auth: str | None) -> None:
    sender, named = Named("http://a:8080", SENDER), Named("http://n:8080", OWN)
    target, headers = follow(URL(url), location, sender=sender, masters=[sender, named])
    assert str(target) == to
    assert headers == ({"Authorization": auth} if auth else {})


@pytest.mark.parametrize("location", ["ftp://b/v2/events", "file:///etc/passwd", "javascript:alert(1)"])
def test_a_location_that_is_not_http_is_not_followed(location: str) -> None:
    sender = Named("http://a:8080", SENDER)
    with pytest.raises(RedirectError):
        follow(URL("http://a:8080/v2/events"), location, sender=sender, masters=[sender])
