"""The relay's callback POSTs on a pool of kept-alive HTTP/1.1 connections, written and read by hand.

The relay is the bench's own load generator, on the same two cores as the system under test: with
aiohttp's client each POST cost the bench process ~0.18 ms of CPU (0.9 CPU-s per 5,000-event burst,
as much as the Consul simulator), CPU that the registrar or the floor could not have. Both talk
plain HTTP/1.1 through aiohttp's server, which answers every POST with a Content-Length (or closes
the connection), so this is all a delivery needs: one pre-rendered request, the status line, the
headers up to the blank line, and the body by its length. Anything else (a chunked answer, a cut
connection, a timeout) counts as a failed delivery and the connection is dropped.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections import deque
from collections.abc import Callable


class Poster:
    """POSTs to one URL, at most `limit` at a time, each on a connection of its own."""

    def __init__(self, url: str, *, limit: int, timeout: float = 30.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"the relay posts plain http:// only, not {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self._head = (f"POST {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\n"
                      f"Host: {parts.netloc}\r\nContent-Type: application/json\r\nContent-Length: ")
        self._timeout = timeout
        self._slots = asyncio.Semaphore(limit)
        self._idle: deque[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = deque()

    async def post(self, body: bytes, on_send: Callable[[], None] | None = None) -> int:
        """The answer's status; raises OSError/TimeoutError/ValueError when there is none.
        `on_send()` is called right before the request is written (the relay's send stamp)."""
        async with self._slots:
            conn = self._idle.popleft() if self._idle else None
            if conn is None or conn[1].is_closing():
                conn = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self._timeout)
            reader, writer = conn
            try:
                if on_send is not None:
                    on_send()
                writer.write(b"%s%d\r\n\r\n%s" % (self._head.encode(), len(body), body))
                status, keep = await asyncio.wait_for(self._answer(reader), self._timeout)
            except BaseException:
                writer.close()
                raise
            if keep:
                self._idle.append(conn)
            else:
                writer.close()
            return status

    @staticmethod
    async def _answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, keep = None, lines[0].startswith("HTTP/1.1")
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection":
                keep = value.strip().lower() != "close"
            elif name == "transfer-encoding":
                raise ValueError("chunked answer: not expected from an aiohttp server answering a POST")
        if length is None:
            raise ValueError("answer without Content-Length")
        await reader.readexactly(length)
        return status, keep

    async def close(self) -> None:
        while self._idle:
            _, writer = self._idle.popleft()
            writer.close()
