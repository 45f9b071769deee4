"""Never miss, never leak: the registrar converges to the truth whatever happens to events.

On both Marathon simulators (1.4 callbacks, 1.10 SSE), against the real Docker slaves and the
Consul simulator: events lost behind a partition, a registrar killed mid-deployment, registrations
edited behind its back, and random interleavings of duplicated, dropped and reordered events.
"""

from __future__ import annotations

import json
import random
import signal
import threading

import docker
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from devcluster.topology import SLAVES
from devcluster.world_http import open_url
from service.marathon.sse import SSEParser
from tests.helpers import Process, free_port, http, wait_for
from tests.registrar_fixtures import (
    Marathon,
    managed_instances,
    marathon_sim,
    overlay_ip,
    start_registrar,
)

APPS = ("/web/customer1/site1", "/web/customer2/site2", "/api/orders")
FOREIGN = {"ID": "legacy-db-1", "Name": "db", "Address": "10.32.9.9", "Port": 5432, "Tags": ["primary"],
           "Meta": {"owner": "dba-team"}}


def truth(m: Marathon) -> dict[str, tuple[str, str]]:
    """task id -> (host, overlay IP) for every running task, from Marathon and the Docker engines."""
    out = {}
    for app_id in m.apps():
        for t in m.running(app_id):
            out[t["id"]] = (t["host"], overlay_ip(t))
    return out


def consul_view() -> dict[str, tuple[str, str]]:
    """task id -> (agent host, address) for every registration carrying our ownership Meta."""
    return {s["Meta"]["marathon-task-id"]: (s["Agent"], s["Address"]) for s in managed_instances()}


def converged(m: Marathon) -> bool:
    want = truth(m)
    return consul_view() == want


def settled(m: Marathon) -> bool:
    status, body, _ = http("GET", f"{m.url}/v2/deployments")
    if status != 200 or body:
        return False
    status, body, _ = http("GET", f"{m.url}/v2/apps?embed=apps.tasks")
    return all(len([t for t in a.get("tasks", []) if t.get("state") == "TASK_RUNNING"]) == a["instances"]
               for a in body["apps"])


def register_foreign() -> None:
    status, body, _ = http("PUT", f"{SLAVES[0].consul_url}/v1/agent/service/register", FOREIGN)
    assert status == 200, (status, body)


def foreign_untouched() -> None:
    status, body, _ = http("GET", f"{SLAVES[0].consul_url}/v1/agent/service/{FOREIGN['ID']}")
    assert status == 200, (status, body)
    assert (body["Service"], body["Address"], body["Port"], body["Tags"], body["Meta"]) == (
        FOREIGN["Name"], FOREIGN["Address"], FOREIGN["Port"], FOREIGN["Tags"], FOREIGN["Meta"])


def kill_behind_marathons_back(task: dict) -> None:
    slave = next(s for s in SLAVES if s.host == task["host"])
    client = docker.DockerClient(base_url=slave.docker_local_url)
    try:
        for c in client.api.containers(filters={"label": f"MESOS_TASK_ID={task['id']}"}):
            client.api.kill(c["Id"])
    finally:
        client.close()


def test_lost_events_are_repaired_by_the_next_resync(marathon: Marathon) -> None:
    """A partition between Marathon and the registrar (callback endpoint unreachable, or the SSE
    stream and REST cut) during a deployment of 10 tasks and a scale-down: right within one resync
    after it heals."""
    register_foreign()
    relay_port, registrar_port = free_port(), free_port()
    if marathon.version == "1.4":
        # Marathon posts to the relay; the relay forwards to the registrar
        relay = Process(["tests.net_doubles", "tcp", f"127.0.0.1:{relay_port}", f"127.0.0.1:{registrar_port}"],
                        f"relay-{relay_port}")
        wait_for(lambda: "relaying" in relay.tail(), 10, what="relay up")
        registrar = start_registrar(marathon.url, port=registrar_port, resync=4,
                                    callback_url=f"http://127.0.0.1:{relay_port}/v1/events")
    else:
        target = "{}:{}".format(*marathon.address)  # TCP: in the TLS world, TLS goes through end to end
        relay = Process(["tests.net_doubles", "tcp", f"127.0.0.1:{relay_port}", target], f"relay-{relay_port}")
        wait_for(lambda: "relaying" in relay.tail(), 10, what="relay up")
        registrar = start_registrar(marathon.url_at("127.0.0.1", relay_port), port=registrar_port, resync=4)
    try:
        marathon.deploy(APPS[0], 2, health=False)
        wait_for(lambda: converged(marathon) and len(consul_view()) == 2, 30, what="2 registered before the cut")
        relay.stop()
        marathon.deploy(APPS[1], 10, health=False)
        marathon.scale(APPS[0], 1)
        wait_for(lambda: settled(marathon), 60, what="deployment of 10 and scale-down done")
        assert len(truth(marathon)) == 11
        if marathon.version == "1.4":
            # the registrar still reads Marathon's REST API (a periodic resync may already repair);
            # what the partition must have cost is events: Marathon failed to deliver and dropped them
            body = http("GET", f"{marathon.url}/_sim/subscribers")[1]
            [ours] = [s for s in body["subscribers"] if s["callbackUrl"] == f"http://127.0.0.1:{relay_port}/v1/events"]
            assert ours["failed"] + ours["dropped"] > 0, ours
        else:
            assert not converged(marathon), "cut off from Marathon the registrar cannot have seen the changes"
        relay = Process(["tests.net_doubles", "tcp", f"127.0.0.1:{relay_port}",
                         f"127.0.0.1:{registrar_port}" if marathon.version == "1.4"
                         else "{}:{}".format(*marathon.address)], f"relay-{relay_port}")
        wait_for(lambda: "relaying" in relay.tail(), 10, what="relay back")
        # one resync period (4 s) plus its run time; the 1.4 registrar gets no event replay at all
        wait_for(lambda: converged(marathon), 15, what="converged within one resync after healing")
        foreign_untouched()
    finally:
        relay.stop()
        registrar.process.stop()


def test_restart_after_sigkill_mid_deployment_converges(marathon: Marathon) -> None:
    register_foreign()
    port = free_port()
    registrar = start_registrar(marathon.url, port=port, resync=60)
    try:
        marathon.deploy(APPS[0], 4, health=False)
        wait_for(lambda: len(consul_view()) >= 1, 30, what="deployment under way in Consul")
        registrar.process.stop(signal.SIGKILL)
        # the cluster changes while the registrar is down
        marathon.deploy(APPS[1], 3, health=False)
        wait_for(lambda: settled(marathon), 60, what="deployments done")
        marathon.scale(APPS[0], 2)
        [victim, *_] = marathon.running(APPS[1])
        kill_behind_marathons_back(victim)
        wait_for(lambda: settled(marathon) and victim["id"] not in truth(marathon), 60, what="cluster settled")
        # restarted (same port, so a 1.4 Marathon's subscription is ours again): its start resync fixes all
        registrar = start_registrar(marathon.url, port=port, resync=60)
        assert registrar.state()["resyncs"] >= 1
        wait_for(lambda: converged(marathon), 15, what="converged after the first resync")
        foreign_untouched()
    finally:
        registrar.process.stop()


def test_drift_is_repaired_and_foreign_services_untouched(marathon: Marathon) -> None:
    registrar = start_registrar(marathon.url, resync=3)
    try:
        marathon.deploy(APPS[0], 3)
        wait_for(lambda: converged(marathon) and len(consul_view()) == 3, 30, what="3 registered")
        register_foreign()
        services = managed_instances()
        wrong_address, extra_tag, missing_check = services[:3]

        def reregister(svc: dict, **change: object) -> None:
            agent = next(s for s in SLAVES if s.host == svc["Agent"])
            body = {"ID": svc["ID"], "Name": svc["Service"], "Address": svc["Address"], "Port": svc["Port"],
                    "Tags": svc["Tags"], "Meta": svc["Meta"], **change}
            status, text, _ = http("PUT", f"{agent.consul_url}/v1/agent/service/register?replace-existing-checks",
                                   body)
            assert status == 200, (status, text)

        reregister(wrong_address, Address="10.32.99.99",
                   Checks=[{"CheckID": f"service:{wrong_address['ID']}:1", "Name": "x", "TTL": "1h"}])
        reregister(extra_tag, Tags=[*extra_tag["Tags"], "hijacked"])
        reregister(missing_check)  # same service, its check gone (replace-existing-checks)

        def repaired() -> bool:
            by_id = {s["ID"]: s for s in managed_instances()}
            checks = {}
            for slave in SLAVES:
                checks.update(http("GET", f"{slave.consul_url}/v1/agent/checks")[1])
            return (by_id[wrong_address["ID"]]["Address"] == wrong_address["Address"]
                    and "hijacked" not in by_id[extra_tag["ID"]]["Tags"]
                    and any(c["ServiceID"] == missing_check["ID"] and c["Type"] == "http" for c in checks.values())
                    and all(c["Type"] == "http" for c in checks.values() if c["ServiceID"] == wrong_address["ID"]))

        wait_for(repaired, 15, what="drift repaired by a resync")
        assert converged(marathon)
        foreign_untouched()
    finally:
        registrar.process.stop()


# ---------------------------------------------------------------- random event delivery
class EventRecorder:
    """Our own SSE client on the simulator: every event Marathon emitted, in order."""

    def __init__(self, url: str) -> None:
        self.resp = open_url("GET", f"{url}/v2/events", headers={"Accept": "text/event-stream"}, timeout=60)
        assert self.resp.status == 200
        self.events: list[bytes] = []
        self._stop = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        parser = SSEParser()
        while not self._stop:
            chunk = self.resp.read1(65536)
            if not chunk:
                return
            for _name, data in parser.feed(chunk):
                self.events.append(data.encode())

    def close(self) -> list[bytes]:
        self._stop = True
        self.resp.close()
        return list(self.events)


OPS = st.lists(st.tuples(st.sampled_from(["deploy", "scale", "kill", "delete"]), st.integers(0, 1),
                         st.integers(1, 3)), min_size=2, max_size=5)


def _apply(m: Marathon, op: str, app_id: str, n: int) -> None:
    exists = app_id in m.apps()
    if op == "deploy" and not exists:
        m.deploy(app_id, n, health=False)
    elif op == "scale" and exists:
        m.scale(app_id, n - 1)
    elif op == "kill" and exists and m.running(app_id):
        kill_behind_marathons_back(m.running(app_id)[0])
    elif op == "delete" and exists:
        m.delete(app_id)
    wait_for(lambda: settled(m), 60, what=f"{op} {app_id} settled")


@pytest.mark.parametrize("version", ["1.4", "1.10"])
def test_random_interleavings_with_duplicates_and_drops_converge(version: str, world: None) -> None:
    """Events recorded from a random sequence of deploy/scale/kill/delete, then delivered to the
    registrar's callback endpoint shuffled, duplicated and thinned out; after one resync Consul's
    managed set equals Marathon's running tasks exactly and the foreign service is untouched."""

    # no shrinking: each example is a real deployment; a failure reports its ops and seed as they are
    @settings(max_examples=3, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(ops=OPS, seed=st.integers(0, 2**32 - 1))
    def scenario(ops: list[tuple[str, int, int]], seed: int) -> None:
        with marathon_sim(version) as m:
            register_foreign()
            if version == "1.4":  # Marathon posts to a dead URL: the test is the only deliverer
                registrar = start_registrar(m.url, events="callback", resync=1,
                                            callback_url=f"http://127.0.0.1:{free_port()}/v1/events")
                proxy = None
            else:  # REST through a proxy whose event stream is silent: the test is the only deliverer
                proxy_port = free_port()
                proxy = Process(["tests.net_doubles", "blackhole-events", f"127.0.0.1:{proxy_port}", m.url],
                                f"blackhole-{proxy_port}")
                wait_for(lambda: "proxying" in proxy.tail(), 10, what="proxy up")
                registrar = start_registrar(f"http://127.0.0.1:{proxy_port}", events="sse", resync=1)
            recorder: EventRecorder | None = None
            try:
                recorder = EventRecorder(m.url)
                for op, app, n in ops:
                    _apply(m, op, APPS[app], n)
                events = recorder.close()
                rng = random.Random(seed)
                delivered = [e for e in events if rng.random() > 0.3]  # drops
                delivered += rng.sample(events, k=min(len(events), rng.randint(0, 10)))  # duplicates
                rng.shuffle(delivered)  # reordering
                for body in delivered:
                    status, answer = registrar.post_event(body)
                    assert status in (200, 202), (status, answer, body[:200])
                registrar.wait_resyncs(2)
                assert consul_view() == truth(m)
                foreign_untouched()
                assert registrar.process.alive()
            finally:
                if recorder is not None:
                    recorder.close()
                registrar.process.stop()
                if proxy is not None:
                    proxy.stop()

    scenario()


def test_sync_dry_run_reports_drift_per_agent_and_repairs_without(marathon14: Marathon) -> None:
    from devcluster.__main__ import world_registrar_options
    from tests.registrar_fixtures import CONSUL, run_cli

    marathon14.deploy(APPS[0], 2, health=False)
    wait_for(lambda: settled(marathon14), 30, what="deployed")
    # sync writes holding the cluster's lock, as serve does: through slave 1's agent (none on 127.0.0.1)
    args = ["--marathon", marathon14.url, *world_registrar_options(), "--lock-agent", CONSUL, "--log-level", "ERROR"]
    dry = run_cli("sync", "--dry-run", *args)
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["counts"] == {"missing": 2, "orphan": 0, "drifted": 0}
    agents = {s.host: s.consul_url for s in SLAVES}
    assert sorted(report["missing"]) == sorted({agents[t["host"]] for t in marathon14.running(APPS[0])})
    assert consul_view() == {}, "--dry-run writes nothing"
    fixed = run_cli("sync", *args)
    assert fixed.returncode == 0, fixed.stderr
    assert converged(marathon14) and len(consul_view()) == 2
    again = json.loads(run_cli("sync", "--dry-run", *args).stdout)
    assert again["counts"] == {"missing": 0, "orphan": 0, "drifted": 0}
