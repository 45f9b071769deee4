"""Consul simulator sessions and KV (reference/consul-sessions.md): a conformance table of exact
statuses and texts, then the semantics the registrar's leader lock relies on — acquire/release and
LockIndex, lock-delay, Behavior, TTL x 2 expiry (driven by the `/_sim/clock` control), check- and
node-bound invalidation (`/_sim/nodes/<node>/down`), blocking GETs, ACLs, the request log, and a
py-consul round trip of the lock recipe.

Own addresses (agents 127.0.0.24/25, ports 18560/18570, DNS 18660) so these tests never meet the
other consul_sim test modules' simulators.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import consul
import dns.message
import dns.query
import dns.rcode
import pytest
import requests
from consul_sim_fixtures import REPO, _wait_tcp

A, B = "127.0.0.24", "127.0.0.25"
PORT, ACL_PORT, DNS_PORT = 18560, 18570, 18660
ANON = "00000000-0000-0000-0000-000000000002"
RPC = "rpc error making call: "
LOCK_FLAGS = 3304740253564472344  # api/lock.go LockFlagValue


@dataclass
class Sim:
    proc: subprocess.Popen[bytes]
    port: int

    def url(self, host: str = A) -> str:
        return f"http://{host}:{self.port}"

    def call(self, method: str, path: str, body: Any = None, host: str = A, **kw: Any) -> requests.Response:
        data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        return requests.request(method, self.url(host) + path, data=data, timeout=30, **kw)

    def put(self, path: str, body: Any = None, host: str = A, **kw: Any) -> requests.Response:
        return self.call("PUT", path, body, host, **kw)

    def get(self, path: str, host: str = A, **kw: Any) -> requests.Response:
        return self.call("GET", path, None, host, **kw)

    def post(self, path: str) -> Any:
        r = requests.post(self.url() + path, timeout=5)
        r.raise_for_status()
        return r.json()

    def session(self, body: Any = None, host: str = A, **kw: Any) -> str:
        r = self.put("/v1/session/create", body if body is not None else {}, host, **kw)
        assert r.status_code == 200, r.text
        return str(r.json()["ID"])

    def entry(self, key: str) -> dict[str, Any] | None:
        r = self.get(f"/v1/kv/{key}")
        return r.json()[0] if r.status_code == 200 else None


@contextmanager
def run_sim(port: int, tmp: Path, *extra: str) -> Iterator[Sim]:
    """`python -m devcluster.consul_sim` with agents node-a on A and node-b on B; stopped by pid."""
    log_path = tmp / f"consul-sim-{port}.log"
    argv = [sys.executable, "-m", "devcluster.consul_sim", "--agent", f"{A}:{port}=node-a",
            "--agent", f"{B}:{port}=node-b", "--no-checks", *extra]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=REPO, start_new_session=True)
    try:
        _wait_tcp(A, port, proc)
        _wait_tcp(B, port, proc)
        yield Sim(proc, port)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    with run_sim(PORT, Path(tmp_path_factory.mktemp("kv")), "--registration-log",
                 "--dns", f"127.0.0.1:{DNS_PORT}") as s:
        yield s


@pytest.fixture(scope="module")
def acl_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    with run_sim(ACL_PORT, Path(tmp_path_factory.mktemp("kvacl")), "--acl-default-policy", "deny",
                 "--acl-token", "lock-secret=acc-lock:session:write:node-a,key:write:service/web/*",
                 "--acl-token", "ro-secret=acc-ro:key:read:service/*,session:read:node-b",
                 "--acl-token", "tree-secret=acc-tree:key:write:a/*,key:read:a/locked",
                 "--session-ttl-min", "1s") as s:
        yield s


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> None:
    for name in ("sim", "acl_sim"):
        if name in request.fixturenames:
            request.getfixturevalue(name).post("/_sim/reset")


def register_ttl_service(sim: Sim, status: str = "passing") -> None:
    body = {"Name": "web", "ID": "web-1", "Port": 80, "Check": {"TTL": "30s", "Status": status}}
    assert sim.put("/v1/agent/service/register", body).status_code == 200


# ---- conformance table -------------------------------------------------------------------------

DECODE = "Request decode failed: "
TOO_LARGE = ("Request body(524289 bytes) too large, max size: 524288 bytes. "
             "See https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size.")

# (method, path, body, status, exact text or (prefix,)); "{sid}" = a live session, "{crit}" = a
# critical check on node-a
CASES: list[tuple[str, str, Any, int, str | tuple[str]]] = [
    # session create: decode (agent, 400), then the servers' checks (500, hop prefix)
    ("PUT", "/v1/session/create", b"{", 400, DECODE + "unexpected EOF"),
    ("PUT", "/v1/session/create", b"[1]", 400, (DECODE + "json: cannot unmarshal array into Go value of type",)),
    ("PUT", "/v1/session/create", {"TTL": 10}, 400,
     (DECODE + "json: cannot unmarshal number into Go struct field ",)),
    ("PUT", "/v1/session/create", {"LockDelay": "15"}, 400, DECODE + 'time: missing unit in duration "15"'),
    ("PUT", "/v1/session/create", {"Node": ""}, 500, RPC + "Must provide Node"),
    ("PUT", "/v1/session/create", {"Behavior": "keep"}, 500, RPC + "Invalid Behavior setting 'keep'"),
    ("PUT", "/v1/session/create", {"TTL": "5s"}, 500,
     RPC + "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]"),
    ("PUT", "/v1/session/create", {"TTL": "9999ms"}, 500,
     RPC + "Invalid Session TTL '9999000000', must be between [10s=24h0m0s]"),
    ("PUT", "/v1/session/create", {"TTL": "24h0m1s"}, 500,
     RPC + "Invalid Session TTL '86401000000000', must be between [10s=24h0m0s]"),
    ("PUT", "/v1/session/create", {"TTL": "abc"}, 500,
     RPC + "Session TTL 'abc' invalid: time: invalid duration \"abc\""),
    ("PUT", "/v1/session/create", {"Node": "nope"}, 500, RPC + "apply failed: Missing node registration"),
    ("PUT", "/v1/session/create", {"Checks": ["nope"]}, 500, RPC + "apply failed: Missing check 'nope' registration"),
    ("PUT", "/v1/session/create", {"NodeChecks": ["{crit}"]}, 500,
     RPC + "apply failed: Check '{crit}' is in critical state"),
    ("POST", "/v1/session/create", None, 405, "method POST not allowed"),
    # destroy / renew / info / list / node
    ("PUT", "/v1/session/renew/", None, 400, "Missing session"),
    ("PUT", "/v1/session/renew/nope", None, 404, "Session id 'nope' not found"),
    ("PUT", "/v1/session/destroy/", None, 400, "Missing session"),
    ("PUT", "/v1/session/destroy/nope", None, 200, "true"),
    ("GET", "/v1/session/info/", None, 400, "Missing session"),
    ("GET", "/v1/session/info/nope", None, 200, "[]"),
    ("GET", "/v1/session/node/", None, 400, "Missing node name"),
    ("GET", "/v1/session/node/nope", None, 200, "[]"),
    ("GET", "/v1/session/list?stale&consistent", None, 400,
     "Cannot specify ?stale with ?consistent, conflicting semantics."),
    ("GET", "/v1/session/list?index=x", None, 400, "Invalid index"),
    ("GET", "/v1/session/info/{sid}?index=1&wait=abc", None, 400, "Invalid wait time"),
    ("GET", "/v1/session/create", None, 405, "method GET not allowed"),
    ("PUT", "/v1/session/create?dc=dc2", {}, 500, "cross datacenter lock must be created at server agent"),
    ("GET", "/v1/session/info/?index=x", None, 400, "Invalid index"),  # parse runs before the id check
    ("PUT", "/v1/session/renew/nope?wait=abc", None, 400, "Invalid wait time"),
    # KV
    ("GET", "/v1/kv/", None, 400, "Missing key name"),
    ("PUT", "/v1/kv/", b"x", 400, "Missing key name"),
    ("DELETE", "/v1/kv/", None, 400, "Missing key name"),
    ("GET", "/v1/kv/absent", None, 404, ""),
    ("GET", "/v1/kv/absent?keys", None, 404, ""),
    ("GET", "/v1/kv/absent?recurse", None, 404, ""),
    ("GET", "/v1/kv/?keys", None, 200, "[]"),
    ("PUT", "/v1/kv/k?acquire=", b"x", 500, RPC + "raft apply failed: missing session"),
    ("PUT", "/v1/kv/k?acquire=nope", b"x", 500, RPC + 'raft apply failed: invalid session "nope"'),
    ("PUT", "/v1/kv/k?release=", b"x", 500, RPC + "raft apply failed: missing session"),
    ("PUT", "/v1/kv/k?release=nope", b"x", 200, "false"),
    ("PUT", "/v1/kv/k?release={sid}", b"x", 200, "false"),  # not the holder (not even locked)
    ("PUT", "/v1/kv/k?cas=1&acquire={sid}", b"x", 400, "Conflicting flags: acquire={sid}&cas=1"),
    ("DELETE", "/v1/kv/k?recurse&cas=1", None, 400, "Conflicting flags: cas=1&recurse="),
    ("PUT", "/v1/kv/k?flags=x", b"x", 500, 'strconv.ParseUint: parsing "x": invalid syntax'),
    ("PUT", "/v1/kv/k?cas=-1", b"x", 500, 'strconv.ParseUint: parsing "-1": invalid syntax'),
    ("PUT", "/v1/kv/k?flags=18446744073709551616", b"x", 500,
     'strconv.ParseUint: parsing "18446744073709551616": value out of range'),
    ("DELETE", "/v1/kv/k?cas=", None, 500, 'strconv.ParseUint: parsing "": invalid syntax'),
    ("PUT", "/v1/kv/k", b"v" * 524289, 413, TOO_LARGE),
    ("PUT", "/v1/kv/k?cas=5", b"x", 200, "false"),  # cas on an absent key
    ("DELETE", "/v1/kv/k?cas=5", None, 200, "true"),  # delete-cas on an absent key is true
    ("GET", "/v1/kv/k?index=1&wait=1x", None, 400, "Invalid wait time"),
    ("PATCH", "/v1/kv/k", None, 405, "method PATCH not allowed"),
    ("GET", "/v1/kv/?wait=abc", None, 400, "Invalid wait time"),
    ("PUT", "/v1/kv/k?stale&consistent", b"x", 400, "Cannot specify ?stale with ?consistent, conflicting semantics."),
    ("GET", "/v1/kv/k?dc=dc2", None, 500, "No path to datacenter"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "text"), CASES,
                         ids=[f"{c[0]} {c[1]} {str(c[2])[:30]}" for c in CASES])
def test_conformance(sim: Sim, method: str, path: str, body: Any, status: int, text: str | tuple[str]) -> None:
    sid = sim.session({"Checks": []})
    assert sim.put("/v1/agent/check/register", {"Name": "crit", "TTL": "30s"}).status_code == 200  # critical
    sub = {"{sid}": sid, "{crit}": "crit"}
    for k, v in sub.items():
        path = path.replace(k, v)
        if isinstance(body, dict):
            body = json.loads(json.dumps(body).replace(k, v))
        text = tuple(t.replace(k, v) for t in text) if isinstance(text, tuple) else text.replace(k, v)
    before = sim.get("/v1/kv/?recurse").text
    r = sim.call(method, path, body)
    assert r.status_code == status, r.text
    if isinstance(text, tuple):
        assert r.text.startswith(text[0]), r.text
    else:
        assert r.text == text
    if status >= 400 and r.text:  # a KV 404 is an empty body without Content-Type (Go writes no body)
        assert r.headers["Content-Type"].startswith("text/plain")
    if status == 405:
        allow = "OPTIONS,GET,PUT,DELETE" if path.startswith("/v1/kv/") else "OPTIONS,PUT"
        assert r.headers["Allow"] == allow
    if method != "GET" and status != 200:
        assert sim.get("/v1/kv/?recurse").text == before  # a refused write wrote nothing
    if path.startswith("/v1/kv/") and method == "GET" and status in (200, 404):
        assert int(r.headers["X-Consul-Index"]) >= 1  # py-consul needs it, also on 404


# ---- sessions ----------------------------------------------------------------------------------

def info(sim: Sim, sid: str, host: str = A) -> dict[str, Any] | None:
    got = sim.get(f"/v1/session/info/{sid}", host).json()
    return got[0] if got else None


def test_create_defaults_and_check_fixups(sim: Sim) -> None:
    sid = sim.session()
    s = info(sim, sid)
    assert s == {"ID": sid, "Name": "", "Node": "node-a", "LockDelay": 15_000_000_000, "Behavior": "release",
                 "TTL": "", "NodeChecks": ["serfHealth"], "ServiceChecks": None,
                 "CreateIndex": s["CreateIndex"], "ModifyIndex": s["CreateIndex"]}
    # py-consul's lowercase keys; "0s" lock-delay; an ID in the body is replaced; unknown keys ignored
    sid = sim.session({"name": "n", "checks": [], "lockdelay": "0s", "behavior": "delete", "ttl": "10s",
                       "ID": "mine", "Whatever": 1})
    s = info(sim, sid)
    assert sid != "mine"
    assert (s["Name"], s["LockDelay"], s["Behavior"], s["TTL"], s["NodeChecks"]) == ("n", 0, "delete", "10s", [])
    assert "Checks" not in s
    # LockDelay numbers: < 1000 means seconds, else nanoseconds; "500ns" is 500 s
    for raw, ns in ((5, 5_000_000_000), (15_000_000_000, 15_000_000_000), ("500ns", 500_000_000_000),
                    ("15000ms", 15_000_000_000)):
        assert info(sim, sim.session({"LockDelay": raw}))["LockDelay"] == ns
    # Checks other than the default keep serfHealth in NodeChecks (TestSessionCreate)
    register_ttl_service(sim)
    s = info(sim, sim.session({"Checks": ["service:web-1"]}))
    assert (s["Checks"], s["NodeChecks"]) == (["service:web-1"], ["serfHealth"])
    s = info(sim, sim.session({"Checks": ["service:web-1"], "NodeChecks": []}))
    assert ("Checks" not in s, s["NodeChecks"]) == (True, [])  # NodeChecks [] drops Checks too
    # TTL bounds are inclusive; "0s" means no TTL
    for ttl in ("10s", "24h", "0s"):
        assert info(sim, sim.session({"TTL": ttl}))["TTL"] == ttl
    # an empty body (Content-Length 0) takes every default
    r = sim.put("/v1/session/create", b"")
    assert r.status_code == 200 and info(sim, r.json()["ID"])["NodeChecks"] == ["serfHealth"]


def test_sessions_are_shared_across_agents_and_renew_writes_nothing(sim: Sim) -> None:
    sb = sim.session({"Name": "on-b", "TTL": "10s"}, host=B)
    sa = sim.session({"Name": "on-a"})
    assert info(sim, sb, host=A)["Node"] == "node-b"
    listed = sim.get("/v1/session/list", B)
    assert {s["ID"] for s in listed.json()} == {sa, sb}
    assert [s["ID"] for s in sim.get("/v1/session/node/node-b").json()] == [sb]
    idx = listed.headers["X-Consul-Index"]
    r = sim.put(f"/v1/session/renew/{sb}")
    assert r.status_code == 200 and r.json() == [info(sim, sb)]
    assert "X-Consul-Index" not in r.headers  # setMeta is for reads only
    assert sim.get("/v1/session/list").headers["X-Consul-Index"] == idx
    assert sim.put(f"/v1/session/destroy/{sb}", host=A).text == "true"
    assert info(sim, sb) is None
    r = sim.put(f"/v1/session/renew/{sb}", host=B)
    assert (r.status_code, r.text) == (404, f"Session id '{sb}' not found")


def test_acquire_release_lockindex_and_flags(sim: Sim) -> None:
    s1, s2 = sim.session({"Checks": []}), sim.session({"Checks": []}, host=B)
    key = "service/web/leader"
    assert sim.put(f"/v1/kv/{key}?acquire={s1}&flags={LOCK_FLAGS}", b"me").text == "true"
    e = sim.entry(key)
    assert e == {"LockIndex": 1, "Key": key, "Flags": LOCK_FLAGS, "Value": base64.b64encode(b"me").decode(),
                 "Session": s1, "CreateIndex": e["CreateIndex"], "ModifyIndex": e["CreateIndex"]}
    # the holder re-acquires: true, LockIndex kept, Value/Flags replaced (no ?flags = 0)
    assert sim.put(f"/v1/kv/{key}?acquire={s1}", b"me2").text == "true"
    e = sim.entry(key)
    assert (e["LockIndex"], e["Flags"], base64.b64decode(e["Value"])) == (1, 0, b"me2")
    # an identical write is skipped: ModifyIndex stays
    assert sim.put(f"/v1/kv/{key}?acquire={s1}", b"me2").text == "true"
    assert sim.entry(key)["ModifyIndex"] == e["ModifyIndex"]
    # another session: false, nothing written; it cannot release either
    assert sim.put(f"/v1/kv/{key}?acquire={s2}", b"them", host=B).text == "false"
    assert sim.put(f"/v1/kv/{key}?release={s2}", b"them", host=B).text == "false"
    assert sim.entry(key) == e
    # release by the holder: Session gone, LockIndex kept, the release body replaces the value
    assert sim.put(f"/v1/kv/{key}?release={s1}").text == "true"
    e = sim.entry(key)
    assert ("Session" not in e, e["LockIndex"], e["Value"]) == (True, 1, None)
    # no lock-delay after a release: the other session gets it at once, LockIndex 2
    assert sim.put(f"/v1/kv/{key}?acquire={s2}", b"them", host=B).text == "true"
    assert sim.entry(key)["LockIndex"] == 2
    # locks are advisory: a plain PUT succeeds and keeps the holder (LockIndex is the request's 0)
    assert sim.put(f"/v1/kv/{key}?flags=9", b"plain").text == "true"
    e = sim.entry(key)
    assert (e["Session"], e["LockIndex"], e["Flags"]) == (s2, 0, 9)


def test_cas_and_delete_semantics(sim: Sim) -> None:
    assert sim.put("/v1/kv/c?cas=0", b"1").text == "true"
    assert sim.put("/v1/kv/c?cas=0", b"2").text == "false"  # cas=0: only if absent
    idx = sim.entry("c")["ModifyIndex"]
    assert sim.put(f"/v1/kv/c?cas={idx + 100}", b"2").text == "false"
    assert sim.put(f"/v1/kv/c?cas={idx}", b"2").text == "true"
    idx2 = sim.entry("c")["ModifyIndex"]
    assert idx2 > idx
    assert sim.call("DELETE", "/v1/kv/c?cas=0").text == "false"  # cas=0 never deletes an existing key
    assert sim.call("DELETE", f"/v1/kv/c?cas={idx}").text == "false"
    assert sim.call("DELETE", f"/v1/kv/c?cas={idx2}").text == "true"
    assert sim.entry("c") is None
    assert sim.call("DELETE", "/v1/kv/c").text == "true"  # absent: still true
    for k in ("t/a", "t/b/c", "u"):
        sim.put(f"/v1/kv/{k}", b"x")
    assert sim.call("DELETE", "/v1/kv/t/?recurse").text == "true"
    assert sim.get("/v1/kv/?keys").json() == ["u"]


def test_recurse_keys_raw_and_indexes(sim: Sim) -> None:
    for k in ("web/foo", "web/bar", "web/subdir/x", "web/subdir/y", "webx"):
        assert sim.put(f"/v1/kv/{k}", k.encode()).status_code == 200
    assert sim.get("/v1/kv/web/?keys").json() == ["web/bar", "web/foo", "web/subdir/x", "web/subdir/y"]
    assert sim.get("/v1/kv/web/?keys&separator=/").json() == ["web/bar", "web/foo", "web/subdir/"]
    assert sim.get("/v1/kv/web/?keys&seperator=/").json() == ["web/bar", "web/foo", "web/subdir/"]
    r = sim.get("/v1/kv/web?recurse")
    assert [e["Key"] for e in r.json()] == ["web/bar", "web/foo", "web/subdir/x", "web/subdir/y", "webx"]
    assert r.headers["X-Consul-Index"] == str(max(e["ModifyIndex"] for e in r.json()))
    r = sim.get("/v1/kv/web/foo?raw")
    assert (r.content, r.headers["Content-Type"], r.headers["X-Content-Type-Options"],
            r.headers["Content-Security-Policy"]) == (b"web/foo", "text/plain", "nosniff", "sandbox")
    r = sim.get("/v1/kv/web/foo")
    assert r.headers["X-Consul-Index"] == str(r.json()[0]["ModifyIndex"])
    assert sim.put("/v1/kv/empty", b"").status_code == 200
    assert sim.entry("empty")["Value"] is None  # an empty body stores a nil value
    sim.call("DELETE", "/v1/kv/web/foo")
    r = sim.get("/v1/kv/web/foo")
    assert r.status_code == 404 and int(r.headers["X-Consul-Index"]) > 1  # the tombstone's index


# ---- invalidation, lock-delay, TTL ---------------------------------------------------------------

def test_destroy_sets_lock_delay_release_does_not(sim: Sim) -> None:
    key = "service/web/leader"
    s1 = sim.session({"Checks": []})
    assert sim.put(f"/v1/kv/{key}?acquire={s1}", b"v").text == "true"
    sim.put(f"/v1/session/destroy/{s1}")
    e = sim.entry(key)
    assert "Session" not in e and e["LockIndex"] == 1 and base64.b64decode(e["Value"]) == b"v"  # release kept it
    s2 = sim.session({"Checks": []}, host=B)
    assert sim.put(f"/v1/kv/{key}?acquire={s2}", b"w", host=B).text == "false"  # 15 s lock-delay
    assert sim.put(f"/v1/kv/{key}?acquire=nope", b"w").text == "false"  # checked before the session
    assert sim.put(f"/v1/kv/{key}", b"plain").text == "true"  # plain writes are not delayed
    sim.post("/_sim/clock/advance?seconds=14")
    assert sim.put(f"/v1/kv/{key}?acquire={s2}", b"w", host=B).text == "false"
    sim.post("/_sim/clock/advance?seconds=1.1")
    assert sim.put(f"/v1/kv/{key}?acquire={s2}", b"w", host=B).text == "true"
    assert sim.entry(key)["LockIndex"] == 1  # the plain PUT above set LockIndex to its own 0 (kvsSetTxn)
    # release first, destroy second: the next leader waits for nothing
    assert sim.put(f"/v1/kv/{key}?release={s2}", b"w").text == "true"
    sim.put(f"/v1/session/destroy/{s2}")
    s3 = sim.session({"Checks": []})
    assert sim.put(f"/v1/kv/{key}?acquire={s3}").text == "true"
    # LockDelay 0 disables it; LockDelay above 60 s is capped at 60 s
    s4 = sim.session({"Checks": [], "LockDelay": "0s"})
    sim.put(f"/v1/kv/other?acquire={s4}")
    sim.put(f"/v1/session/destroy/{s4}")
    assert sim.put(f"/v1/kv/other?acquire={s3}").text == "true"
    s5 = sim.session({"Checks": [], "LockDelay": "120s"})
    sim.put(f"/v1/kv/capped?acquire={s5}")
    sim.put(f"/v1/session/destroy/{s5}")
    sim.post("/_sim/clock/advance?seconds=59")
    assert sim.put(f"/v1/kv/capped?acquire={s3}").text == "false"
    sim.post("/_sim/clock/advance?seconds=1.1")
    assert sim.put(f"/v1/kv/capped?acquire={s3}").text == "true"


def test_behavior_delete_deletes_held_keys(sim: Sim) -> None:
    s1 = sim.session({"Checks": [], "Behavior": "delete", "LockDelay": "1s"})
    sim.put(f"/v1/kv/held?acquire={s1}", b"v")
    sim.put("/v1/kv/free", b"v")
    sim.put(f"/v1/session/destroy/{s1}")
    assert sim.entry("held") is None and sim.entry("free") is not None
    s2 = sim.session({"Checks": []})
    assert sim.put(f"/v1/kv/held?acquire={s2}").text == "false"  # lock-delay outlives the key
    sim.post("/_sim/clock/advance?seconds=1.1")
    assert sim.put(f"/v1/kv/held?acquire={s2}").text == "true"
    assert sim.entry("held")["LockIndex"] == 1  # a new key


def test_ttl_expires_at_twice_ttl_after_last_renew(sim: Sim) -> None:
    sid = sim.session({"TTL": "10s", "Checks": []})
    sim.put(f"/v1/kv/lk?acquire={sid}", b"v")
    sim.post("/_sim/clock/advance?seconds=15")  # past TTL, before 2 x TTL
    assert sim.put(f"/v1/session/renew/{sid}").status_code == 200
    sim.post("/_sim/clock/advance?seconds=19.5")  # 19.5 s after the renew
    assert info(sim, sid) is not None
    sim.post("/_sim/clock/advance?seconds=0.6")
    assert info(sim, sid) is None
    r = sim.put(f"/v1/session/renew/{sid}")
    assert (r.status_code, r.text) == (404, f"Session id '{sid}' not found")
    assert "Session" not in sim.entry("lk")
    assert sim.put(f"/v1/kv/lk?acquire={sid}").text == "false"  # lock-delay first (kvsPreApply)
    sim.post("/_sim/clock/advance?seconds=15.1")
    r = sim.put(f"/v1/kv/lk?acquire={sid}")  # then the dead session is an error, not false
    assert (r.status_code, r.text) == (500, RPC + f'raft apply failed: invalid session "{sid}"')
    # a session without TTL never expires
    forever = sim.session({"Checks": []})
    sim.post("/_sim/clock/advance?seconds=100000")
    assert info(sim, forever) is not None


def test_ttl_runs_on_real_time_by_default(sim: Sim) -> None:
    """The timer task fires on its own: clock advanced to 0.5 s before 2 x TTL, then wait."""
    sid = sim.session({"TTL": "10s", "Checks": []})
    sim.post("/_sim/clock/advance?seconds=19.5")
    assert info(sim, sid) is not None
    deadline = time.monotonic() + 5
    while info(sim, sid) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert info(sim, sid) is None


def test_check_bound_sessions_die_with_their_check(sim: Sim) -> None:
    register_ttl_service(sim)
    bound = sim.session({"NodeChecks": [], "ServiceChecks": [{"ID": "service:web-1", "Namespace": ""}]})
    assert info(sim, bound)["ServiceChecks"] == [{"ID": "service:web-1", "Namespace": ""}]
    other = sim.session({"Checks": []})
    sim.put(f"/v1/kv/lk?acquire={bound}", b"v")
    assert sim.put("/v1/agent/check/warn/service:web-1").status_code == 200  # warning is fine
    assert info(sim, bound) is not None
    assert sim.put("/v1/agent/check/fail/service:web-1").status_code == 200
    assert info(sim, bound) is None and info(sim, other) is not None
    assert "Session" not in sim.entry("lk")
    r = sim.put("/v1/session/create", {"Checks": ["service:web-1"]})
    assert (r.status_code, r.text) == (500, RPC + "apply failed: Check 'service:web-1' is in critical state")
    sim.put("/v1/agent/check/pass/service:web-1")
    again = sim.session({"Checks": ["service:web-1"]})
    sim.put("/v1/agent/service/deregister/web-1")  # deregistering the check invalidates too
    assert info(sim, again) is None


def dns_a(name: str) -> tuple[int, list[str]]:
    resp = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=DNS_PORT, timeout=3)
    return resp.rcode(), [rr.address for rrset in resp.answer for rr in rrset]


def test_node_down_invalidates_serf_bound_sessions(sim: Sim) -> None:
    default_a = sim.session()
    ttl_only_a = sim.session({"Checks": []})
    default_b = sim.session(host=B)
    sim.put(f"/v1/kv/service/web/leader?acquire={default_a}", b"a")
    for host, ip in ((A, "10.0.0.1"), (B, "10.0.0.2")):
        assert sim.put("/v1/agent/service/register", {"Name": "web", "ID": "web-1", "Address": ip,
                                                     "Port": 80}, host).status_code == 200
    assert sorted(dns_a("web.service.consul")[1]) == ["10.0.0.1", "10.0.0.2"]
    idx = sim.get("/v1/health/service/web").headers["X-Consul-Index"]
    assert sim.post("/_sim/nodes/node-a/down") == {"node": "node-a", "serfHealth": "critical"}
    assert info(sim, default_a) is None
    assert info(sim, ttl_only_a) is not None and info(sim, default_b) is not None
    assert "Session" not in sim.entry("service/web/leader")
    serf = sim.get("/v1/health/node/node-a").json()[0]
    assert (serf["CheckID"], serf["Status"], serf["Output"]) == ("serfHealth", "critical",
                                                                 "Agent not live or unreachable")
    r = sim.get("/v1/health/service/web?passing")
    assert int(r.headers["X-Consul-Index"]) > int(idx)
    assert [e["Node"]["Node"] for e in r.json()] == ["node-b"]
    assert dns_a("web.service.consul")[1] == ["10.0.0.2"]
    r = sim.put("/v1/session/create", {"Node": "node-a"}, host=B)
    assert (r.status_code, r.text) == (500, RPC + "apply failed: Check 'serfHealth' is in critical state")
    assert sim.post("/_sim/nodes/node-a/up") == {"node": "node-a", "serfHealth": "passing"}
    assert sim.session({"Node": "node-a"}, host=B)
    assert len(sim.get("/v1/health/service/web?passing").json()) == 2
    assert requests.post(sim.url() + "/_sim/nodes/nope/down", timeout=5).status_code == 404


# ---- blocking queries --------------------------------------------------------------------------

def later(delay: float, fn: Any) -> threading.Thread:
    t = threading.Thread(target=lambda: (time.sleep(delay), fn()), daemon=True)
    t.start()
    return t


def test_blocking_kv_get_wakes_on_change_and_delete(sim: Sim) -> None:
    sim.put("/v1/kv/w", b"1")
    idx = int(sim.get("/v1/kv/w").headers["X-Consul-Index"])
    t0 = time.monotonic()
    later(0.3, lambda: sim.put("/v1/kv/other", b"x"))  # another key: no wake-up
    later(0.6, lambda: sim.put("/v1/kv/w", b"2"))
    r = sim.get(f"/v1/kv/w?index={idx}&wait=5s")
    assert 0.5 < time.monotonic() - t0 < 4.5  # woke before the 5 s wait ran out
    assert base64.b64decode(r.json()[0]["Value"]) == b"2"
    assert int(r.headers["X-Consul-Index"]) == r.json()[0]["ModifyIndex"] > idx
    idx = r.json()[0]["ModifyIndex"]
    later(0.3, lambda: sim.call("DELETE", "/v1/kv/w"))
    r = sim.get(f"/v1/kv/w?index={idx}&wait=5s")
    assert r.status_code == 404 and int(r.headers["X-Consul-Index"]) > idx
    # a missing key blocks through other keys' writes until it appears
    idx = int(r.headers["X-Consul-Index"])
    later(0.2, lambda: sim.put("/v1/kv/other", b"y"))
    later(0.5, lambda: sim.put("/v1/kv/w", b"3"))
    t0 = time.monotonic()
    r = sim.get(f"/v1/kv/w?index={idx}&wait=5s")
    assert r.status_code == 200 and 0.4 < time.monotonic() - t0 < 4.5  # woke before the 5 s wait ran out
    # ... or until ?wait runs out (404, index still there)
    t0 = time.monotonic()
    r = sim.get(f"/v1/kv/never?index={r.headers['X-Consul-Index']}&wait=500ms")
    assert r.status_code == 404 and 0.45 < time.monotonic() - t0 < 2 and "X-Consul-Index" in r.headers


def test_blocking_session_info_wakes_when_destroyed(sim: Sim) -> None:
    sid = sim.session({"Checks": []})
    idx = sim.get(f"/v1/session/info/{sid}").headers["X-Consul-Index"]
    later(0.3, lambda: sim.put(f"/v1/session/destroy/{sid}"))
    t0 = time.monotonic()
    r = sim.get(f"/v1/session/info/{sid}?index={idx}&wait=5s")
    assert r.json() == [] and 0.2 < time.monotonic() - t0 < 4.5  # woke before the 5 s wait ran out


# ---- ACLs --------------------------------------------------------------------------------------

def test_acl_session_and_key_rules(acl_sim: Sim) -> None:
    s = acl_sim
    r = s.put("/v1/session/create", {})
    assert (r.status_code, r.text) == (
        403, RPC + f"Permission denied: token with AccessorID '{ANON}' lacks permission 'session:write' on \"node-a\"")
    r = s.put("/v1/session/create", {}, headers={"X-Consul-Token": "bogus"})
    assert (r.status_code, r.text) == (403, RPC + "ACL not found")
    r = s.put("/v1/session/renew/nope", headers={"X-Consul-Token": "bogus"})  # token before lookup
    assert (r.status_code, r.text) == (403, RPC + "ACL not found")
    assert s.put("/v1/session/renew/nope").status_code == 404
    lock = {"X-Consul-Token": "lock-secret"}
    r = s.put("/v1/session/create", {}, host=B, headers=lock)  # Node defaults to node-b: denied
    assert r.status_code == 403 and "'session:write' on \"node-b\"" in r.text
    sid = s.session({}, headers=lock)
    r = s.put(f"/v1/kv/service/db/leader?acquire={sid}", headers=lock)
    assert (r.status_code, r.text) == (
        403, RPC + "Permission denied: token with AccessorID 'acc-lock' lacks permission 'key:write' "
                   "on \"service/db/leader\"")
    assert s.put(f"/v1/kv/service/web/leader?acquire={sid}", b"v", headers=lock).text == "true"
    r = s.get("/v1/kv/service/web/leader", headers=lock)  # write implies read
    assert r.status_code == 200
    r = s.get("/v1/kv/service/web/leader")
    assert (r.status_code, r.text) == (
        403, RPC + f"Permission denied: token with AccessorID '{ANON}' lacks permission 'key:read' "
                   "on \"service/web/leader\"")
    # renew/destroy need session:write on the session's node; reads filter instead of 403
    r = s.put(f"/v1/session/renew/{sid}", headers={"X-Consul-Token": "ro-secret"})
    assert r.status_code == 403 and "'session:write' on \"node-a\"" in r.text
    assert s.put(f"/v1/session/renew/{sid}", headers=lock).status_code == 200
    assert s.get("/v1/session/list", headers={"X-Consul-Token": "ro-secret"}).json() == []
    assert len(s.get(f"/v1/session/info/{sid}?token=lock-secret").json()) == 1  # write implies read
    assert s.get(f"/v1/session/info/{sid}?token=ro-secret").json() == []  # read only on node-b
    assert s.put("/v1/kv/a/open", b"x", headers={"X-Consul-Token": "tree-secret"}).text == "true"
    assert s.put("/v1/kv/service/x", b"x", headers={"X-Consul-Token": "tree-secret"}).status_code == 403
    r = s.get("/v1/kv/?recurse", headers={"X-Consul-Token": "ro-secret"})
    assert r.status_code == 200 and [e["Key"] for e in r.json()] == ["service/web/leader"]
    assert r.headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
    # DELETE ?recurse needs write on the prefix and on every rule under it (KeyWritePrefix)
    tree = {"X-Consul-Token": "tree-secret"}
    r = s.call("DELETE", "/v1/kv/a?recurse", headers=tree)
    assert (r.status_code, r.text) == (
        403, RPC + "Permission denied: token with AccessorID 'acc-tree' lacks permission 'key:write' on \"a\"")
    r = s.call("DELETE", "/v1/kv/a/?recurse", headers=tree)  # `key:read:a/locked` lies under a/
    assert (r.status_code, r.text) == (
        403, RPC + "Permission denied: token with AccessorID 'acc-tree' lacks permission 'key:write' on \"a/\"")
    assert s.call("DELETE", "/v1/kv/a/open", headers=tree).text == "true"
    assert s.call("DELETE", "/v1/kv/service/web/?recurse", headers=lock).text == "true"
    assert s.get("/v1/kv/service/web/leader", headers=lock).status_code == 404
    assert s.put(f"/v1/session/destroy/{sid}", headers={"X-Consul-Token": "ro-secret"}).status_code == 403
    assert s.put(f"/v1/session/destroy/{sid}", headers=lock).text == "true"


def test_session_ttl_min_option(acl_sim: Sim) -> None:
    """`--session-ttl-min 1s` (Consul's session_ttl_min) moves the lower bound and its message;
    a 1 s session then dies 2 s after its last renew on real time."""
    lock = {"X-Consul-Token": "lock-secret"}
    r = acl_sim.put("/v1/session/create", {"TTL": "500ms"}, headers=lock)
    assert (r.status_code, r.text) == (500, RPC + "Invalid Session TTL '500000000', must be between [1s=24h0m0s]")
    t0 = time.monotonic()
    sid = acl_sim.session({"TTL": "1s", "Checks": []}, headers=lock)
    alive = acl_sim.get(f"/v1/session/info/{sid}?token=lock-secret")
    assert len(alive.json()) == 1
    r = acl_sim.get(f"/v1/session/info/{sid}?token=lock-secret&index={alive.headers['X-Consul-Index']}&wait=5s")
    assert r.json() == [] and 1.9 < time.monotonic() - t0 < 4.5


# ---- request log -------------------------------------------------------------------------------

def test_session_and_kv_writes_are_in_the_request_log(sim: Sim) -> None:
    requests.post(sim.url() + "/_sim/registrations/reset", timeout=5).raise_for_status()
    before = time.monotonic()
    s1 = sim.session({"Name": "registrar-1", "TTL": "10s", "Checks": []})
    s2 = sim.session({"Name": "registrar 2", "Checks": []}, host=B)
    sim.put(f"/v1/kv/service/mcr/leader?acquire={s1}", b"1")
    sim.put(f"/v1/kv/service/mcr/leader?acquire={s2}", b"2", host=B)  # false: not logged
    sim.put(f"/v1/session/renew/{s1}")
    sim.put(f"/v1/kv/service/mcr/leader?release={s1}", b"1")
    sim.put(f"/v1/kv/service/mcr/leader?acquire={s2}", b"2", host=B)
    sim.post("/_sim/clock/advance?seconds=21")  # s1 expires
    sim.put(f"/v1/session/destroy/{s2}", host=B)
    sim.put("/v1/kv/plain", b"p")
    sim.call("DELETE", "/v1/kv/plain")
    body = sim.get("/_sim/registrations").json()
    a, b = f"{A}:{PORT}", f"{B}:{PORT}"
    assert [e[:3] for e in body["entries"]] == [
        ["session-create", f"{s1}?name=registrar-1", a],
        ["session-create", f"{s2}?name=registrar%202", b],
        ["kv-acquire", f"service/mcr/leader?session={s1}", a],
        ["session-renew", s1, a],
        ["kv-release", f"service/mcr/leader?session={s1}", a],
        ["kv-acquire", f"service/mcr/leader?session={s2}", b],
        ["session-invalidate-ttl", s1, ""],
        ["session-destroy", s2, b],
        ["kv-set", "plain", a],
        ["kv-delete", "plain", a],
    ]
    stamps = [e[3] for e in body["entries"]]
    assert stamps == sorted(stamps) and before <= stamps[0] <= time.monotonic()


# ---- py-consul: the lock recipe ----------------------------------------------------------------

def test_py_consul_lock_recipe(sim: Sim) -> None:
    c1 = consul.Consul(host=A, port=PORT)
    c2 = consul.Consul(host=B, port=PORT)
    key = "service/mcr/leader"
    sid1 = c1.session.create(name="r1", ttl=10, lock_delay=1)
    sid2 = c2.session.create(name="r2", ttl=10, checks=[])
    assert c1.kv.put(key, "r1", acquire=sid1, flags=LOCK_FLAGS) is True
    assert c2.kv.put(key, "r2", acquire=sid2, flags=LOCK_FLAGS) is False
    index, entry = c2.kv.get(key)
    assert entry["Session"] == sid1 and entry["Value"] == b"r1" and entry["Flags"] == LOCK_FLAGS
    # the follower blocks on the key; the leader's agent goes down, its session dies
    got: dict[str, Any] = {}
    t = threading.Thread(target=lambda: got.update(r=c2.kv.get(key, index=index, wait="5s")), daemon=True)
    t.start()
    time.sleep(0.3)
    sim.post("/_sim/nodes/node-a/down")
    t.join(5)
    assert "Session" not in got["r"][1]
    with pytest.raises(consul.NotFound, match=f"Session id '{sid1}' not found"):
        c1.session.renew(sid1)
    assert c2.kv.put(key, "r2", acquire=sid2, flags=LOCK_FLAGS) is False  # 1 s lock-delay
    sim.post("/_sim/clock/advance?seconds=1.1")
    assert c2.kv.put(key, "r2", acquire=sid2, flags=LOCK_FLAGS) is True
    assert c2.session.renew(sid2)["ID"] == sid2
    with pytest.raises(consul.ConsulException, match=f'invalid session "{sid1}"'):
        c1.kv.put("other", "x", acquire=sid1)
    assert c2.kv.put(key, "r2", release=sid2, flags=LOCK_FLAGS) is True
    assert c2.session.destroy(sid2) is True
    assert c2.kv.get(key)[1]["Value"] == b"r2"
