"""The resync's apps answer decoded one app at a time (service/marathon/apps_json.py): the same
apps and the same errors as one `json.loads` + `apps_from_json`, and the event loop keeps running
while a large cluster's answer is decoded (a blocked loop answers no `/health` and renews no lock)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from service.marathon.apps_json import NotJSON, apps_from_bytes
from service.marathon.parse import apps_from_json
from tests.unit.test_parse import APP_14, APP_110, TASK_REST_110


def _app(i: int, tasks: int = 10) -> dict:
    return {**APP_110, "id": f"/group{i % 7}/app{i}",
            "tasks": [{**TASK_REST_110, "appId": f"/group{i % 7}/app{i}", "id": f"group{i % 7}_app{i}.{n}"}
                      for n in range(tasks)]}


@pytest.mark.parametrize("body", [
    {"apps": []},
    {"apps": [{**APP_110, "tasks": [TASK_REST_110]}, APP_14]},
    {"apps": [_app(i) for i in range(50)]},
    {"apps": [APP_14], "other": {"x": [1, 2]}},  # members after "apps" (Marathon sends none)
    {"other": 1, "apps": [APP_14]},  # "apps" not first: the plain path
])
@pytest.mark.parametrize("indent", [None, 2])
async def test_the_same_apps_as_the_plain_path(body: dict, indent: int | None) -> None:
    raw = json.dumps(body, indent=indent).encode()
    assert await apps_from_bytes(raw) == apps_from_json(json.loads(raw))


@pytest.mark.parametrize("raw", [
    b'{"apps": [',
    b'{"apps": [}',
    b'{"apps": [{"id": "/a", "tasks": []} {"id": "/b"}]}',
    b'{"apps": [{"id": "/a", "tasks": []}]',
    b'{"apps": [{"id": "/a", "tasks": []}]} trailing',
    b'{"apps": [{"id": "/a", "tasks": []},]}',
    b'\xff\xfe{"apps": []}',
    b"<html>502 Bad Gateway</html>",
])
async def test_what_json_loads_refuses_is_not_json(raw: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(raw)
    with pytest.raises(NotJSON):
        await apps_from_bytes(raw)


@pytest.mark.parametrize(("body", "message"), [
    ({}, "apps response: apps: field missing"),
    ({"apps": {}}, "apps response: apps: expected a list"),
    ({"apps": [{"id": "/a", "tasks": [{"id": 1}]}]}, "task: id: expected a string"),
    ({"apps": [1]}, "apps[0]: expected an object"),
    ({"apps": [APP_14, 1]}, "apps[1]: expected an object"),
])
async def test_an_app_of_the_wrong_shape_is_named_as_the_plain_path_names_it(body: dict, message: str) -> None:
    with pytest.raises(ValueError, match=r".") as plain:
        apps_from_json(body)
    with pytest.raises(ValueError) as sliced:
        await apps_from_bytes(json.dumps(body).encode())
    assert message in str(plain.value)
    assert str(sliced.value) == str(plain.value)


async def test_the_loop_keeps_running_while_a_large_answer_is_decoded() -> None:
    raw = json.dumps({"apps": [_app(i) for i in range(3000)]}).encode()  # 30,000 tasks
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started = time.perf_counter()
    apps = await apps_from_bytes(raw, slice_seconds=0.01)
    took = time.perf_counter() - started
    done.set()
    await tick
    assert len(apps) == 3000 and sum(len(t) for _, t in apps) == 30_000
    # the ticker ran all along: many turns, none held for more than a fraction of the whole decode
    # (a single json.loads + parse gives it exactly one turn, after everything)
    assert len(gaps) >= 5
    assert max(gaps) < max(0.5 * took, 0.1)
