"""Hostile callbacks (issue 9): 5,000 hypothesis-made requests against the real callback endpoint.

The harness (`bench/fuzz.py`, shared with `python -m bench fuzz`, which runs 100,000) drives the
aiohttp app over a localhost socket in front of the real reconciler with in-memory Marathon, Docker
and Consul, and checks after every request: no 5xx, no logged exception, a 4xx reason from the
bounded set, and Consul holding exactly what Marathon runs. It found, on the code before this test:
`[[[…]]]` → RecursionError → 500; a 4,301-digit integer → ValueError → 500; a gzip/deflate
Content-Encoding that does not inflate → 500.
"""

from __future__ import annotations

import gzip
import json

import pytest

from bench.fuzz import MAX_BYTES, forged_reads, fuzz_callbacks, harness
from service.marathon.events import MAX_JSON_DEPTH, MAX_JSON_VALUES
from service.web import MAX_EVENT_BYTES


def test_5000_hostile_callbacks_never_5xx_never_register_what_marathon_does_not_run() -> None:
    figures = fuzz_callbacks(5000, trace_from=3000)
    print("callback fuzz:", json.dumps(figures.as_dict()))
    assert figures.bodies >= 5000
    assert figures.checks == figures.bodies  # Consul compared with Marathon after every request
    # The fuzz reached every door: accepted and ignored events, and each rejection reason.
    for reason in ("accepted", "ignored", "not-json", "not-utf8", "too-deep", "bad-number", "not-an-object",
                   "no-event-type", "bad-field", "bad-app-id", "bad-encoding"):
        assert figures.reasons[reason] > 0, (reason, figures.reasons)
    # Bounded memory: what the last 2,000 requests left allocated (about 150 KiB measured, mostly
    # interpreter caches). Keeping even 1 KiB per request, far less than a body, would pass 2 MiB.
    assert figures.traced_from == 3000
    assert figures.traced_kb_retained < 2 * 1024, figures.top_retained


# Each class of hostile body the fuzz generates, pinned with the reason it must get.
DEPTH = MAX_JSON_DEPTH
CASES = [
    (b"[" * 5000 + b"]" * 5000, {}, 400, "too-deep"),
    (b'{"eventType":"status_update_event","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}", {}, 400, "too-deep"),
    (b"[" * (DEPTH + 1) + b"]" * (DEPTH + 1), {}, 400, "too-deep"),
    (b"[" * DEPTH + b"]" * DEPTH, {}, 400, "not-an-object"),  # at the limit: decoded, then not an event
    (b'{"eventType":"x","a":"' + b"[" * 10_000 + b'"}', {}, 200, None),  # brackets in strings do not nest
    # Long bracket strings take the shrinking path of json_depth_exceeds (exact within 8 levels).
    (b"[" * 300 + b"[]," * 40_000 + b"[]" + b"]" * 300, {}, 400, "too-deep"),
    (b"[" * 250 + b"[]," * 40_000 + b"[]" + b"]" * 250, {}, 400, "not-an-object"),
    (b'{"eventType":"x","n":' + b"9" * 4301 + b"}", {}, 400, "bad-number"),
    (b'{"eventType":"x","n":NaN}', {}, 400, "bad-number"),
    (b'{"eventType":"x","n":-Infinity}', {}, 400, "bad-number"),
    (b'{"eventType":"x","n":"\xff"}', {}, 400, "not-utf8"),
    (b'{"eventType":"x","n":"\xed\xa0\x80"}', {}, 400, "not-utf8"),  # an encoded surrogate
    (b"", {}, 400, "not-json"),
    (b"\xef\xbb\xbf{\"eventType\":\"x\"}", {}, 200, None),  # a BOM is tolerated (RFC 8259 §8.1)
    (b"garbage", {"Content-Encoding": "gzip"}, 400, "bad-encoding"),
    (b"garbage", {"Content-Encoding": "deflate"}, 400, "bad-encoding"),
    (b'{"eventType":"x"}', {"Content-Type": "application/json; charset=latin-1"}, 200, None),
    (b'{"eventType":"app_terminated_event","appId":"/../../v2/leader"}', {}, 400, "bad-app-id"),
    (b'{"eventType":"app_terminated_event","appId":"/Web/x_y"}', {}, 400, "bad-app-id"),
    (b'{"eventType":"status_update_event","taskId":"db_main.1b4c6a2e-5f3d-11eb-8a3e-0242ac110002",'
     b'"appId":"/web/customer1/site1","taskStatus":"TASK_RUNNING"}', {}, 400, "bad-field"),  # not its app's task
    (b'{"eventType":"status_update_event","taskId":"db_main.1b4c6a2e-5f3d-11eb-8a3e-0242ac110002",'
     b'"appId":"/db/main","taskStatus":"TASK_RUNNING","host":"127.0.0.1:9999/x#"}', {}, 400, "bad-field"),
    (b'{"eventType":"app_terminated_event","appId":"/a","appId":"/../x"}', {}, 400, "bad-app-id"),  # last wins
]


@pytest.mark.parametrize(("body", "headers", "status", "reason"), CASES,
                         ids=[f"{i}-{c[3]}" for i, c in enumerate(CASES)])
async def test_each_hostile_class_gets_its_answer(body: bytes, headers: dict[str, str], status: int,
                                                   reason: str | None) -> None:
    async with harness() as h:
        got, payload = await h.post(body, headers)
        assert got == status, payload[:300]
        answer = json.loads(payload)
        if reason:
            assert answer["error"] == reason and answer["message"], answer
        await h.settle()
        assert h.registrations() == h.expected


async def test_a_gzip_bomb_is_413_counted_after_inflating() -> None:
    async with harness() as h:
        status, payload = await h.post(gzip.compress(b" " * (MAX_BYTES + 1)), {"Content-Encoding": "gzip"})
        assert status == 413 and json.loads(payload)["error"] == "too-large"


async def test_forged_events_for_one_app_coalesce_into_few_marathon_reads() -> None:
    """1,000 forged status updates for one known app, 8 at a time, Marathon reads taking 20 ms:
    coalescing per app must keep reads far below one per event, and nothing is written to Consul."""
    figures = await forged_reads("same-app", n=1000, latency=0.02, concurrency=8)
    assert figures["statuses"] == {202: 1000}
    assert figures["consul_writes"] == 0 and figures["consul_matches_marathon"]
    assert figures["marathon_reads"] <= 250, figures



# The values cap (MAX_JSON_VALUES, counted before decoding), at the endpoint's real body limit: shallow
# brackets, one object's members, one value more than the cap; at the cap the body is decoded; `,:[`
# in strings do not count.
VALUE_CASES = [
    (b"[" + b"[]," * MAX_JSON_VALUES + b"[]]", 400, "too-many-values"),
    (b'{"eventType":"x",' + b",".join(b'"%d":0' % i for i in range(MAX_JSON_VALUES // 2)) + b"}", 400,
     "too-many-values"),
    (b"[" + b"0," * (MAX_JSON_VALUES - 1) + b"0]", 400, "too-many-values"),  # the array and MAX zeros
    (b"[" + b"0," * (MAX_JSON_VALUES - 2) + b"0]", 400, "not-an-object"),  # exactly MAX values: decoded
    (b'{"eventType":"x","a":"' + b",:[" * MAX_JSON_VALUES + b'"}', 200, None),
]


@pytest.mark.parametrize(("body", "status", "reason"), VALUE_CASES,
                         ids=[f"{i}-{c[2]}" for i, c in enumerate(VALUE_CASES)])
async def test_the_values_cap_answers_400_naming_it_and_changes_nothing(body: bytes, status: int,
                                                                       reason: str | None) -> None:
    async with harness(max_event_bytes=MAX_EVENT_BYTES) as h:
        got, payload = await h.post(body, {})
        assert got == status, payload[:300]
        answer = json.loads(payload)
        if reason:
            assert answer["error"] == reason, answer
        if reason == "too-many-values":
            assert f"more than {MAX_JSON_VALUES} JSON values" in answer["message"], answer
        await h.settle()
        assert h.registrations() == h.expected
