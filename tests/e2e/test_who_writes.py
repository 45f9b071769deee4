"""Who writes: never another Marathon cluster's registrations, and one writer among instances.

Real registrar processes against the test world (real Docker slaves, the Consul simulator with its
sessions and KV, Marathon simulators on 1.10 and 1.4). "Exactly one write" is checked with the
Consul simulator's own per-agent call counts (`/_sim/stats`), which count every caller; the
registrars' own counters say which instance made them.
"""

from __future__ import annotations

import contextlib
import re
import signal
import time
from collections.abc import Iterator

import pytest

from devcluster.topology import SLAVES
from tests.helpers import http, wait_for
from tests.registrar_fixtures import Marathon, Registrar, managed_instances, private_marathon, start_registrar

APP = "/web/customer1/site1"
# the deploy JSON's lock settings (lock-delay 3 s: a write lease of 2 s, renewed every 0.5 s; the
# liveness check every second, the default)
FAST_LOCK = ["--lock", "on", "--lock-ttl", "10", "--lock-delay", "3"]


def lock_args(agent: int = 0) -> list[str]:
    return [*FAST_LOCK, "--lock-agent", SLAVES[agent].consul_url]


def role(r: Registrar) -> str:
    with contextlib.suppress(Exception):
        return str(r.state()["leadership"]["role"])
    return "unreachable"


def consul_calls(pattern: str) -> int:
    """How many calls matching `pattern` ("PUT /v1/agent/service/register") all agents have had."""
    status, body, _ = http("GET", f"{SLAVES[0].consul_url}/_sim/stats")
    assert status == 200, (status, body)
    return sum(n for per_agent in body.values() for k, n in per_agent.items() if k.startswith(pattern))


def reset_stats() -> None:
    status, body, _ = http("POST", f"{SLAVES[0].consul_url}/_sim/stats/reset")
    assert status == 200, (status, body)


def metric(r: Registrar, name: str, labels: str = "") -> float:
    status, body, _ = http("GET", f"{r.url}/metrics")
    assert status == 200
    text = body if isinstance(body, str) else body.decode()  # type: ignore[union-attr]
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.split()[-1])
    return 0.0


def registered_tasks(app_id: str, cluster: str | None = None) -> set[str]:
    return {s["Meta"]["marathon-task-id"] for s in managed_instances()
            if s["Meta"].get("marathon-app-id") == app_id
            and (cluster is None or s["Meta"].get("marathon-cluster-id") == cluster)}


def running_ids(m: Marathon, app_id: str) -> set[str]:
    return {t["id"] for t in m.running(app_id)}


def orphan(service_id: str, cluster: str | None, agent: int = 0, app_id: str = APP) -> None:
    """A registration with our marker whose task no Marathon runs."""
    meta = {"managed-by": "marathon-consul-registrar", "marathon-app-id": app_id,
            "marathon-task-id": f"{service_id}.task", "marathon-host": SLAVES[agent].host, "port-index": "0",
            "address-source": "overlay"}
    if cluster is not None:
        meta["marathon-cluster-id"] = cluster
    body = {"ID": service_id, "Name": "web", "Address": "10.32.9.9", "Port": 80, "Meta": meta}
    status, text, _ = http("PUT", f"{SLAVES[agent].consul_url}/v1/agent/service/register", body)
    assert status == 200, (status, text)


def service_ids(agent: int = 0) -> set[str]:
    status, body, _ = http("GET", f"{SLAVES[agent].consul_url}/v1/agent/services")
    assert status == 200
    return set(body)


def framework_id(m: Marathon) -> str:
    status, body, _ = http("GET", f"{m.url}/v2/info")
    assert status == 200
    return str(body["frameworkId"])


@contextlib.contextmanager
def registrars(*specs: tuple[str, list[str]]) -> Iterator[list[Registrar]]:
    started: list[Registrar] = []
    try:
        for url, extra in specs:
            started.append(start_registrar(url, resync=3.0, extra=extra))
        yield started
    finally:
        for r in started:
            r.process.stop()


def test_two_clusters_keep_each_others_registrations(marathon: Marathon) -> None:
    with private_marathon(marathon.version) as other, registrars(
            (marathon.url, lock_args(0)), (other.url, lock_args(1))) as (ra, rb):
        ca, cb = framework_id(marathon), framework_id(other)
        assert ca != cb
        marathon.deploy(APP, 2)
        other.deploy("/web/customer2/site2", 2)
        wait_for(lambda: registered_tasks(APP, ca) == running_ids(marathon, APP) != set(), 30, what="A registered")
        wait_for(lambda: registered_tasks("/web/customer2/site2", cb) == running_ids(other, "/web/customer2/site2")
                 != set(), 30, what="B registered")
        orphan("mcr-foreign-cluster-orphan", "cluster-nobody-runs")
        orphan("mcr-legacy-orphan", None)  # written by an earlier version: no cluster id
        orphan("mcr-own-orphan-a", ca)
        ra.wait_resyncs(2)
        rb.wait_resyncs(2)
        ids = service_ids(0)
        assert "mcr-own-orphan-a" not in ids  # our own orphan goes
        assert {"mcr-foreign-cluster-orphan", "mcr-legacy-orphan"} <= ids  # never another's, never a legacy one
        assert registered_tasks("/web/customer2/site2", cb) == running_ids(other, "/web/customer2/site2")
        assert registered_tasks(APP, ca) == running_ids(marathon, APP)
        marathon.delete(APP)
        wait_for(lambda: not registered_tasks(APP, ca), 30, what="A's app deregistered")
        rb.wait_resyncs(1)
        assert registered_tasks("/web/customer2/site2", cb) == running_ids(other, "/web/customer2/site2")
        assert ra.state()["leadership"]["role"] == rb.state()["leadership"]["role"] == "writer"  # two keys


def test_legacy_registration_of_our_task_is_adopted(marathon: Marathon) -> None:
    with registrars((marathon.url, lock_args(0))) as (r,):
        marathon.deploy(APP, 1)
        wait_for(lambda: registered_tasks(APP) == running_ids(marathon, APP) != set(), 30, what="registered")
        [svc] = [s for s in managed_instances() if s["Meta"]["marathon-app-id"] == APP]
        legacy_meta = {k: v for k, v in svc["Meta"].items() if k != "marathon-cluster-id"}
        agent = next(s for s in SLAVES if s.host == svc["Agent"])
        body = {"ID": svc["ID"], "Name": svc["Service"], "Address": svc["Address"], "Port": svc["Port"],
                "Tags": svc["Tags"], "Meta": legacy_meta}
        assert http("PUT", f"{agent.consul_url}/v1/agent/service/register", body)[0] == 200
        r.wait_resyncs(2)
        [again] = [s for s in managed_instances() if s["Meta"]["marathon-app-id"] == APP]
        assert again["Meta"].get("marathon-cluster-id") == framework_id(marathon)  # adopted, rewritten as ours


@pytest.fixture
def pair(marathon: Marathon) -> Iterator[tuple[Marathon, Registrar, Registrar]]:
    with registrars((marathon.url, lock_args(0))) as (a,):
        wait_for(lambda: role(a) == "writer", 20, what="first instance writes")
        with registrars((marathon.url, lock_args(1))) as (b,):
            assert role(b) == "standby"
            yield marathon, a, b


def test_one_register_per_new_task_and_one_deregister_per_orphan(pair: tuple[Marathon, Registrar, Registrar]
                                                                 ) -> None:
    m, a, b = pair
    reset_stats()
    m.deploy(APP, 2)
    wait_for(lambda: registered_tasks(APP) == running_ids(m, APP) != set(), 30, what="registered")
    b.wait_resyncs(1) if role(b) == "writer" else a.wait_resyncs(2)
    assert consul_calls("PUT /v1/agent/service/register") == 2
    assert metric(b, "mcr_registrations_total", '{result="created"}') == 0
    orphan("mcr-orphan-of-ours", framework_id(m))
    reset_stats()
    a.wait_resyncs(2)
    assert "mcr-orphan-of-ours" not in service_ids(0)
    assert consul_calls("PUT /v1/agent/service/deregister") == 1
    assert metric(b, "mcr_deregistrations_total", '{result="ok"}') == 0


def test_sigterm_of_the_writer_hands_over_within_3s(pair: tuple[Marathon, Registrar, Registrar]) -> None:
    m, a, b = pair
    m.deploy(APP, 1)
    wait_for(lambda: registered_tasks(APP) == running_ids(m, APP) != set(), 30, what="registered")
    stopped = time.monotonic()
    a.process.stop(signal.SIGTERM)
    m.scale(APP, 2)
    wait_for(lambda: len(registered_tasks(APP)) == 2 and registered_tasks(APP) == running_ids(m, APP), 15,
             interval=0.05, what="the standby registers the new task")
    took = time.monotonic() - stopped
    assert role(b) == "writer"
    assert took < 3.0 + 2.0, f"writes resumed {took:.1f}s after SIGTERM"  # + the container's own start
    assert b.state()["leadership"]["since"]


# The lock's timing involves Consul and the registrar only, not Marathon's version (which only
# brings the events): on 1.10 alone, which saves CI ~45 s; the other lock tests run on both.
@pytest.mark.parametrize("marathon", ["1.10"], indirect=True)
def test_sigkill_of_the_writer_hands_over_within_two_ttls_and_the_delay(pair: tuple[Marathon, Registrar, Registrar]
                                                                        ) -> None:
    m, a, b = pair
    killed = time.monotonic()
    a.process.stop(signal.SIGKILL)
    wait_for(lambda: role(b) == "writer", 10 * 2 + 1 + 5, interval=0.1, what="the standby takes over")
    took = time.monotonic() - killed
    m.deploy(APP, 1)
    wait_for(lambda: registered_tasks(APP) == running_ids(m, APP) != set(), 30, what="the new writer registers")
    assert took <= 10 * 2 + 1 + 5


# The lock's timing involves Consul and the registrar only, not Marathon's version (which only
# brings the events): on 1.10 alone, which saves CI ~45 s; the other lock tests run on both.
@pytest.mark.parametrize("marathon", ["1.10"], indirect=True)
def test_a_writer_paused_past_its_ttl_writes_nothing_after_it_resumes(pair: tuple[Marathon, Registrar, Registrar]
                                                                      ) -> None:
    m, a, b = pair
    a.process.proc.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: role(b) == "writer", 10 * 2 + 1 + 5, interval=0.2, what="the standby takes over")
        m.deploy(APP, 2)
        wait_for(lambda: registered_tasks(APP) == running_ids(m, APP) and len(running_ids(m, APP)) == 2, 30,
                 what="the new writer registers both tasks")
    finally:
        a.process.proc.send_signal(signal.SIGCONT)
    before = (metric(a, "mcr_registrations_total", '{result="created"}'),
              metric(a, "mcr_deregistrations_total", '{result="ok"}'))
    b_before = metric(b, "mcr_deregistrations_total", '{result="ok"}')
    reset_stats()
    m.scale(APP, 1)
    wait_for(lambda: registered_tasks(APP) == running_ids(m, APP) and len(running_ids(m, APP)) == 1, 30,
             what="scale-down reaches Consul")
    a.wait_resyncs(1) if role(a) == "writer" else time.sleep(4)
    after = (metric(a, "mcr_registrations_total", '{result="created"}'),
             metric(a, "mcr_deregistrations_total", '{result="ok"}'))
    assert role(a) == "standby"
    assert after == before  # the resumed instance wrote nothing
    # every deregistration Consul saw since the resume was the new writer's
    assert consul_calls("PUT /v1/agent/service/deregister") == \
        metric(b, "mcr_deregistrations_total", '{result="ok"}') - b_before >= 1


def writes_by_pid(since: int) -> list[tuple[float, int, str]]:
    """Task (de)registrations in the world Consul's write log since `since`: (monotonic time, the
    writer's pid as its User-Agent names it, op)."""
    status, body, _ = http("GET", f"{SLAVES[0].consul_url}/_sim/registrations?client=1&since={since}")
    assert status == 200, (status, body)
    out = []
    for op, sid, _agent, mono, _wall, client in body["entries"]:
        if op in ("register", "deregister") and sid.startswith("mcr-"):
            pid = re.search(r"\(pid (\d+)", client)
            assert pid is not None, client
            out.append((mono, int(pid.group(1)), op))
    return out


def log_cursor() -> int:
    status, body, _ = http("GET", f"{SLAVES[0].consul_url}/_sim/registrations?since=999999999")
    assert status == 200, (status, body)
    return int(body["next"])


@pytest.mark.parametrize("marathon", ["1.10"], indirect=True)
def test_a_paused_writer_writes_nothing_after_the_new_writers_first_write(
        pair: tuple[Marathon, Registrar, Registrar]) -> None:
    """The overlap check of `python -m bench.failover`, from the Consul simulator's write log: the
    resumed instance has Marathon's events of its pause to work off, and writes none of them."""
    m, a, b = pair
    m.deploy(APP, 1)
    wait_for(lambda: registered_tasks(APP) == running_ids(m, APP) != set(), 30, what="registered")
    since = log_cursor()
    a.process.proc.send_signal(signal.SIGSTOP)
    try:
        m.scale(APP, 2)
        wait_for(lambda: role(b) == "writer", 30, interval=0.1, what="the standby takes over")
        wait_for(lambda: len(registered_tasks(APP)) == 2, 30, what="the new writer registers the new task")
    finally:
        a.process.proc.send_signal(signal.SIGCONT)
    m.scale(APP, 3)
    wait_for(lambda: len(registered_tasks(APP)) == 3 and registered_tasks(APP) == running_ids(m, APP), 30,
             what="the third task registered")
    wait_for(lambda: role(a) == "standby", 10, what="the resumed instance stands by")
    time.sleep(2)
    writes = writes_by_pid(since)
    first_new = min(t for t, pid, _ in writes if pid == b.process.proc.pid)
    assert [w for w in writes if w[1] == a.process.proc.pid and w[0] >= first_new] == []
    assert {pid for _, pid, _ in writes} == {b.process.proc.pid}


def test_the_agent_holding_the_session_going_down_brings_a_new_writer(pair: tuple[Marathon, Registrar, Registrar]
                                                                      ) -> None:
    _, a, b = pair
    status, body, _ = http("POST", f"{SLAVES[0].consul_url}/_sim/nodes/{SLAVES[0].name}/down")
    assert status == 200, (status, body)
    try:
        wait_for(lambda: role(b) == "writer", 10 * 2 + 1 + 5, interval=0.2, what="a writer through the other agent")
        assert role(a) == "standby"
    finally:
        http("POST", f"{SLAVES[0].consul_url}/_sim/nodes/{SLAVES[0].name}/up")
