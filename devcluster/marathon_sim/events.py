"""Event constructors, one per event type, with the exact field sets and order of reference §1-§3.

Field order matters to consumers that compare raw JSON, and Python dicts keep insertion order, so
each constructor builds its dict in the order the Scala writer emits. Version differences
(`failed_health_check_event`'s key) come from `SimConfig`. Deployment events carry a light plan and,
for clients that get heavy plans (1.4, 1.5-1.6 without `plan-format=light`), a heavy variant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from devcluster.marathon_sim.app_json import HealthCheck
from devcluster.marathon_sim.clock import timestamp
from devcluster.marathon_sim.config import SimConfig
from devcluster.marathon_sim.state import Deployment, Task, condition_of


@dataclass(frozen=True)
class Event:
    event_type: str
    data: dict[str, Any]
    heavy: dict[str, Any] | None = None  # deployment events: plan with original/target

    def payload(self, light: bool) -> dict[str, Any]:
        return self.data if light or self.heavy is None else self.heavy


def status_update(task: Task) -> Event:
    data = {"slaveId": task.slave_id, "taskId": task.task_id, "taskStatus": task.state,
            "message": task.message, "appId": task.app_id, "host": task.host,
            "ipAddresses": list(task.ip_addresses), "ports": list(task.ports), "version": task.version,
            "eventType": "status_update_event", "timestamp": timestamp()}
    return Event("status_update_event", data)


def instance_changed(task: Task, condition: str | None = None) -> Event:
    """`condition` defaults to the task's; the expunge announces `Killed` with no task update."""
    data = {"instanceId": task.instance_id, "condition": condition or condition_of(task),
            "runSpecId": task.app_id, "agentId": task.slave_id, "host": task.host,
            "runSpecVersion": task.version, "timestamp": timestamp(), "eventType": "instance_changed_event"}
    return Event("instance_changed_event", data)


def instance_health_changed(task: Task, healthy: bool | None) -> Event:
    data = {"instanceId": task.instance_id, "runSpecId": task.app_id, "healthy": healthy,
            "runSpecVersion": task.version, "timestamp": timestamp(), "eventType": "instance_health_changed_event"}
    return Event("instance_health_changed_event", data)


def health_status_changed(task: Task, alive: bool) -> Event:
    data = {"appId": task.app_id, "instanceId": task.instance_id, "version": task.version, "alive": alive,
            "eventType": "health_status_changed_event", "timestamp": timestamp()}
    return Event("health_status_changed_event", data)


def failed_health_check(cfg: SimConfig, task: Task, check: HealthCheck) -> Event:
    if cfg.failed_health_check_key == "instanceId":  # 1.4: Json.writes in case-class order (inferred)
        data: dict[str, Any] = {"appId": task.app_id, "instanceId": task.instance_id,
                                "healthCheck": check.to_json(), "eventType": "failed_health_check_event",
                                "timestamp": timestamp()}
    else:
        data = {"appId": task.app_id, "eventType": "failed_health_check_event", "healthCheck": check.to_json(),
                "taskId": task.instance_id, "timestamp": timestamp()}
    return Event("failed_health_check_event", data)


def unhealthy_instance_kill(task: Task, reason: str, at: str) -> Event:
    data = {"appId": task.app_id, "taskId": task.task_id, "instanceId": task.instance_id,
            "version": task.version, "reason": reason, "host": task.host, "slaveId": task.slave_id,
            "eventType": "unhealthy_instance_kill_event", "timestamp": at}
    return Event("unhealthy_instance_kill_event", data)


def app_terminated(app_id: str) -> Event:
    return Event("app_terminated_event",
                 {"appId": app_id, "eventType": "app_terminated_event", "timestamp": timestamp()})


def pod_event(event_type: str, client_ip: str, uri: str) -> Event:
    """`pod_created_event` / `pod_updated_event` / `pod_deleted_event`: only `clientIp, uri, eventType,
    timestamp` (marathon-ucr-pods.md §2.4): the pod id is in `uri`."""
    return Event(event_type, {"clientIp": client_ip, "uri": uri, "eventType": event_type, "timestamp": timestamp()})


def api_post(client_ip: str, uri: str, app_definition: dict[str, Any]) -> Event:
    data = {"clientIp": client_ip, "uri": uri, "appDefinition": app_definition, "eventType": "api_post_event",
            "timestamp": timestamp()}
    return Event("api_post_event", data)


def group_change_success(group_id: str, version: str) -> Event:
    return Event("group_change_success", {"groupId": group_id, "version": version,
                                          "eventType": "group_change_success", "timestamp": timestamp()})


def _heavy_plan(dep: Deployment, original: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    return {"id": dep.id, "original": original, "target": target,
            "steps": [{"actions": a} for a in dep.steps], "version": dep.version}


def deployment_step(event_type: str, dep: Deployment, step_index: int,
                    groups: tuple[dict[str, Any], dict[str, Any]]) -> Event:
    """`deployment_info` / `deployment_step_success` / `deployment_step_failure`:
    `plan, currentStep, eventType, timestamp`."""
    ts = timestamp()
    step = {"actions": dep.steps[step_index]}
    data = {"plan": dep.plan_light(), "currentStep": step, "eventType": event_type, "timestamp": ts}
    heavy = {"plan": _heavy_plan(dep, *groups), "currentStep": step, "eventType": event_type, "timestamp": ts}
    return Event(event_type, data, heavy)


def deployment_done(event_type: str, dep: Deployment, groups: tuple[dict[str, Any], dict[str, Any]],
                    reason: str | None = None) -> Event:
    """`deployment_success` / `deployment_failed`: `id, plan, eventType, timestamp[, reason]`."""
    ts = timestamp()
    data: dict[str, Any] = {"id": dep.id, "plan": dep.plan_light(), "eventType": event_type, "timestamp": ts}
    heavy: dict[str, Any] = {"id": dep.id, "plan": _heavy_plan(dep, *groups), "eventType": event_type,
                             "timestamp": ts}
    if reason is not None:
        data["reason"] = heavy["reason"] = reason
    return Event(event_type, data, heavy)


def subscription(event_type: str, client_ip: str, callback_url: str) -> Event:
    """`subscribe_event` / `unsubscribe_event`: `clientIp, callbackUrl, eventType, timestamp`."""
    return Event(event_type, {"clientIp": client_ip, "callbackUrl": callback_url, "eventType": event_type,
                              "timestamp": timestamp()})


def event_stream(event_type: str, remote_address: str) -> Event:
    """`event_stream_attached` / `event_stream_detached`: `remoteAddress, eventType, timestamp`."""
    return Event(event_type, {"remoteAddress": remote_address, "eventType": event_type, "timestamp": timestamp()})
