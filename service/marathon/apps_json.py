"""The resync's `GET /v2/apps?embed=apps.tasks` answer, decoded and parsed without holding the
event loop.

At 100,000 tasks the answer is ~60 MB: one `json.loads` of it, then parsing every app, held the
event loop for seconds (5.8 s measured at load 5.7). Everything else of the process waits
meanwhile, the lock's renewals and the `/health` its liveness check asks included, so a writer of a
large cluster lost its lock at every resync. Marathon answers `{"apps": [ ... ]}`, so the array is
decoded one app at a time (`JSONDecoder.raw_decode`, still C speed) and parsed as it comes, giving
the loop a turn every `slice_seconds`. An answer of any other form takes the plain path: one
`json.loads`, then `apps_from_json`, with the same errors.

Errors are those of the plain path: `NotJSON` where `json.loads` would fail (the answer is
garbage), `ValueError` where the parser would (an app of the wrong shape).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from service.marathon.parse import app_with_tasks_from_json, apps_from_json, obj_at
from service.model import App, Task

_HEAD = re.compile(r'\s*\{\s*"apps"\s*:\s*\[\s*')
_WS = re.compile(r"\s*")
_DECODER = json.JSONDecoder()


class NotJSON(Exception):
    """The answer is not JSON (or not UTF-8); not a ValueError, which is a parser's "wrong shape"."""


async def apps_from_bytes(raw: bytes, *, slice_seconds: float = 0.02) -> list[tuple[App, list[Task]]]:
    """Every app with its tasks, from the raw answer; yields to the loop every `slice_seconds`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NotJSON(str(e)) from e
    head = _HEAD.match(text)
    if head is None:
        return apps_from_json(_loads(text))
    apps: list[tuple[App, list[Task]]] = []
    pos = head.end()
    turn_ends = time.perf_counter() + slice_seconds
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            try:
                value, pos = _DECODER.raw_decode(text, pos)
            except json.JSONDecodeError as e:
                raise NotJSON(str(e)) from e
            apps.append(app_with_tasks_from_json(obj_at(value, f"apps[{len(apps)}]")))
            pos = _WS.match(text, pos).end()  # type: ignore[union-attr]  # \s* always matches
            sep = text[pos:pos + 1]
            pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
            if sep == "]":
                break
            if sep != ",":
                raise NotJSON(f"expected ',' or ']' after apps[{len(apps) - 1}] at char {pos}")
            if time.perf_counter() >= turn_ends:
                await asyncio.sleep(0)
                turn_ends = time.perf_counter() + slice_seconds
    rest = text[pos:].strip()
    if rest != "}":
        # other members after "apps" (Marathon sends none): the whole object must still be JSON
        _loads("{" + rest[1:] if rest.startswith(",") else rest)
    return apps


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise NotJSON(str(e)) from e
