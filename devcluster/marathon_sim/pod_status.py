"""`PodStatus` JSON (`/v2/pods/{id}::status`, `/v2/pods/::status`) as Marathon renders it.

Reference: marathon-pods-api.md §1.6 and marathon-ucr-pods.md §2.2 (PodStatusConversion,
AppInfoBaseData.podStatus): instance status from the tasks' conditions, `networks` named as Mesos
reports them, endpoints with `allocatedHostPort` only where a host port exists, `healthy` only on
the health-checked endpoint, resources = the containers' plus the executor's.
"""

from __future__ import annotations

from typing import Any

from devcluster.marathon_sim.clock import timestamp
from devcluster.marathon_sim.config import SimConfig
from devcluster.marathon_sim.pod_json import EXECUTOR_RESOURCES, render_pod
from devcluster.marathon_sim.pods import PodInstance, PodRecord, Pods

ACTIVE = {"TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_UNREACHABLE"}


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() else v


def instance_status(inst: PodInstance) -> tuple[str, str | None]:
    """(status, message): PENDING/STAGING/STABLE/DEGRADED/TERMINAL (podInstanceState)."""
    states = {t.state for t in inst.tasks.values()}
    if "TASK_UNREACHABLE" in states:
        return "DEGRADED", "pod instance has become unreachable"
    if states & {"TASK_STAGING", "TASK_STARTING"}:
        return "STAGING", None
    if states == {"TASK_RUNNING"}:
        if Pods.instance_healthy(inst) is False:
            return "DEGRADED", "at least one container is not healthy"
        return "STABLE", None
    return "TERMINAL", None


def _container(rec: PodRecord, inst: PodInstance, name: str, cfg: SimConfig) -> dict[str, Any]:
    spec = next(c for c in rec.spec.containers if c.name == name)
    task = inst.tasks[name]
    now = timestamp()
    out: dict[str, Any] = {"name": name, "status": task.state, "statusSince": task.started_at or task.staged_at}
    healthy = inst.healthy.get(name)
    if task.state not in {"TASK_STAGING", "TASK_STARTING"} and healthy is not None:
        out["conditions"] = [{"name": "healthy", "value": str(healthy).lower(), "reason": "health-reported-by-mesos",
                              "lastChanged": out["statusSince"], "lastUpdated": now}]
    else:
        out["conditions"] = []
    if task.container_id is not None or task.state != "TASK_STAGING":
        out["containerId"] = task.task_id
    if task.state in ACTIVE:
        checked = (spec.health_check or {}).get("http") or (spec.health_check or {}).get("tcp") or {}
        endpoints = []
        for e in spec.endpoints:
            ep: dict[str, Any] = {"name": e.name}
            if e.name in inst.host_ports:
                ep["allocatedHostPort"] = inst.host_ports[e.name]
            if checked.get("endpoint") == e.name and healthy is not None:
                ep["healthy"] = healthy
            endpoints.append(ep)
        out["endpoints"] = endpoints
    else:
        out["endpoints"] = []
    out["resources"] = {k: _num(v) for k, v in spec.resources.items()}
    out["lastUpdated"] = now
    out["lastChanged"] = out["statusSince"]
    return out


def render_instance(rec: PodRecord, inst: PodInstance, cfg: SimConfig) -> dict[str, Any]:
    status, message = instance_status(inst)
    now = timestamp()
    resources = {k: float(EXECUTOR_RESOURCES.get(k, 0)) for k in ("cpus", "mem", "disk", "gpus")}
    for c in rec.spec.containers:
        for k in resources:
            resources[k] += float(c.resources.get(k, 0))
    addresses = sorted({a["ipAddress"] for t in inst.tasks.values() for a in t.ip_addresses})
    networks = [] if rec.spec.host_networking or not addresses else [
        {"name": n["name"], "addresses": addresses} for n in rec.spec.networks[:1]]
    out: dict[str, Any] = {"id": inst.instance_id, "status": status, "statusSince": inst.status_since}
    if message:
        out["message"] = message
    out.update({"conditions": [], "agentHostname": inst.host, "agentId": inst.slave_id,
                "resources": {k: _num(round(v, 6)) for k, v in resources.items()}, "networks": networks,
                "containers": [_container(rec, inst, c.name, cfg) for c in rec.spec.containers],
                "specReference": f"/v2/pods{rec.spec.id}::versions/{inst.version}",
                "localVolumes": [], "lastUpdated": now, "lastChanged": inst.status_since})
    if cfg.role_field:
        out["role"] = "*"
    return out


def render_status(rec: PodRecord, cfg: SimConfig) -> dict[str, Any]:
    """The pod's status: STABLE once enough instances are, TERMINAL while it is being deleted."""
    instances = [render_instance(rec, i, cfg) for i in rec.instances.values()]
    stable = sum(1 for i in instances if i["status"] == "STABLE")
    status = "TERMINAL" if rec.deleting else ("STABLE" if stable >= rec.spec.instances else "DEGRADED")
    since = max((i["statusSince"] for i in instances), default=timestamp())
    now = timestamp()
    return {"id": rec.spec.id, "spec": render_pod(rec.spec, cfg), "status": status, "statusSince": since,
            "instances": instances, "terminationHistory": [], "lastUpdated": now, "lastChanged": since}
