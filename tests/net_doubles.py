"""Network doubles the reconciliation tests put between the registrar and Marathon, run as processes:

- `tcp LISTEN TARGET`: a plain TCP relay. Stopping it is a network partition: the registrar's
  callback endpoint (or its Marathon link) becomes unreachable while both processes live on.
- `blackhole-events LISTEN TARGET`: an HTTP proxy to Marathon's REST API whose `/v2/events` is a
  stream of heartbeats only, so the registrar reads real state but receives no events; the test
  then delivers events itself, in any order it likes.

    python -m tests.net_doubles tcp 127.0.0.1:9001 127.0.0.1:8000
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from aiohttp import ClientSession, TCPConnector, web

from devcluster.topology import world_tls_dir
from devcluster.world_http import client_context


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def tcp_relay(listen: tuple[str, int], target: tuple[str, int]) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(handle, *listen)
    print(f"relaying {listen} -> {target}", flush=True)
    async with server:
        await server.serve_forever()


async def blackhole_events(listen: tuple[str, int], target: str) -> None:
    """An HTTP proxy to Marathon (`target`, https with user:password@ in the TLS world) whose event
    stream never delivers an event."""
    tls_dir = world_tls_dir()
    session = ClientSession(connector=TCPConnector(ssl=client_context(tls_dir)) if tls_dir else None)

    async def events(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Accept") != "text/event-stream":
            return web.Response(status=405, text="HTTP method GET is not supported by this URL")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream;charset=UTF-8"})
        await resp.prepare(request)
        while True:
            await resp.write(b"\r\n")
            await asyncio.sleep(1.0)

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with session.request(request.method, target + request.rel_url.path_qs, data=body or None,
                                   headers=headers, allow_redirects=False) as up:
            payload = await up.read()
            keep = {k: v for k, v in up.headers.items() if k.lower() in ("content-type", "location")}
            return web.Response(status=up.status, body=payload, headers=keep)

    app = web.Application()
    app.router.add_get("/v2/events", events)
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, *listen).start()
    print(f"proxying {listen} -> {target} without events", flush=True)
    await asyncio.Event().wait()


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main() -> None:
    kind, listen, target = sys.argv[1:4]
    if kind == "tcp":
        asyncio.run(tcp_relay(_addr(listen), _addr(target)))
    else:
        asyncio.run(blackhole_events(_addr(listen), target))


if __name__ == "__main__":
    main()
