"""The Marathon simulator's support for what deploy/marathon.json uses: readiness checks, the kill
grace period, hostname:UNIQUE placement, HOST ports across slaves that share one network namespace."""

from __future__ import annotations

import json

import pytest

from devcluster.marathon_sim.app_json import ValidationError, parse_app, render_app
from devcluster.marathon_sim.bus import EventBus
from devcluster.marathon_sim.config import SimConfig, SlaveConfig
from devcluster.marathon_sim.scheduler import Scheduler
from devcluster.marathon_sim.state import AppRecord, Registry, Task
from tests.helpers import ROOT

SLAVES = (SlaveConfig("10.0.0.1", "unix:///a.sock", "bridge"), SlaveConfig("10.0.0.2", "unix:///b.sock", "weave"))
CFG = {v: SimConfig(version=v, slaves=SLAVES) for v in ((1, 4), (1, 10))}
DEPLOY = json.loads((ROOT / "deploy" / "marathon.json").read_text())


@pytest.mark.parametrize("version", [(1, 4), (1, 10)])
def test_the_deploy_json_round_trips(version: tuple[int, int]) -> None:
    spec = parse_app(DEPLOY)
    assert spec.network == "host" and [d.name for d in spec.port_definitions] == ["http"]
    out = render_app(spec, CFG[version])
    assert {k: out["readinessChecks"][0][k] for k in DEPLOY["readinessChecks"][0]} == DEPLOY["readinessChecks"][0]
    assert out["taskKillGracePeriodSeconds"] == DEPLOY["taskKillGracePeriodSeconds"]
    assert out["constraints"] == [["hostname", "UNIQUE"]]
    assert out["upgradeStrategy"] == DEPLOY["upgradeStrategy"]


@pytest.mark.parametrize("bad", [
    {"readinessChecks": [{"intervalSeconds": 5, "timeoutSeconds": 5}]},  # timeout must be < interval
    {"readinessChecks": [{"protocol": "TCP"}]},
    {"readinessChecks": {}},
    {"taskKillGracePeriodSeconds": 0},
    {"taskKillGracePeriodSeconds": "20"},
])
def test_invalid_readiness_and_grace_are_422(bad: dict) -> None:
    with pytest.raises(ValidationError):
        parse_app({**DEPLOY, **bad})


def _task(rec: AppRecord, slave: SlaveConfig, n: int) -> Task:
    task = Task(task_id=f"t{n}", instance_id=f"i{n}", app_id=rec.spec.id, slave=slave, slave_id="s", version="v")
    rec.tasks[task.task_id] = task
    return task


def test_hostname_unique_places_one_task_per_slave_and_waits_for_a_free_one() -> None:
    cfg = CFG[(1, 10)]
    sched = Scheduler(cfg, Registry(cfg), EventBus(), {})
    rec = AppRecord(spec=parse_app(DEPLOY))
    sched.reg.apps[rec.spec.id] = rec
    assert [s.host for s in sched._place(3, rec)] == ["10.0.0.1", "10.0.0.2"]  # the third waits
    _task(rec, SLAVES[0], 1)
    assert [s.host for s in sched._place(2, rec)] == ["10.0.0.2"]
    _task(rec, SLAVES[1], 2).state = "TASK_KILLING"  # still holds its slave until it is gone
    assert sched._place(1, rec) == []
    free = AppRecord(spec=parse_app({**DEPLOY, "id": "/free", "constraints": []}))
    assert len(sched._place(3, free)) == 3


def test_host_ports_are_unique_across_slaves_sharing_a_network_namespace() -> None:
    cfg = CFG[(1, 10)]
    sched = Scheduler(cfg, Registry(cfg), EventBus(), {})
    spec = parse_app(DEPLOY)
    sched.reg.used_host_ports["10.0.0.1"] = set(range(31000, 31999))  # all but 31999 and 32000
    assert sched._host_ports(spec, SLAVES[1], set())[0] in (31999, 32000)
