"""Agent partitions on request: TASK_UNREACHABLE, UnreachableInactive, comeback, expunge.

Reference marathon-ucr-pods.md §3: when the master loses an agent, each of its tasks gets a
`status_update_event` `TASK_UNREACHABLE` and its instance an `instance_changed_event` `Unreachable`;
after `unreachableStrategy.inactiveAfterSeconds` another `TASK_UNREACHABLE` update and
`UnreachableInactive`; after `expungeAfterSeconds` the instance is expunged, announced **only** by
`instance_changed_event` `Killed` (no task update), and disappears from REST. An agent that comes
back first turns its tasks `TASK_RUNNING` again (normal events). The containers keep running while
partitioned (only the master lost the agent); an expunged one is killed, as Marathon kills a task it
no longer knows when the agent returns. `"disabled"` strategies keep the task unreachable until the
comeback. Simplifications: the expunge runs at `expungeAfterSeconds` itself (Marathon's expunge
actor runs every 30 s), and no replacement is launched meanwhile.

Control (outside `/v2`): `POST /_sim/agents/{host}/partition` and `POST /_sim/agents/{host}/reconnect`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from devcluster.marathon_sim import events as ev
from devcluster.marathon_sim.pods import PodInstance, Pods
from devcluster.marathon_sim.scheduler import Scheduler
from devcluster.marathon_sim.state import AppRecord, Task

log = logging.getLogger("marathon_sim.partition")


class Partitions:
    def __init__(self, scheduler: Scheduler, pods: Pods) -> None:
        self.sched = scheduler
        self.pods = pods
        self.partitioned: set[str] = set()
        self._timers: dict[str, list[asyncio.Task[None]]] = {}

    def _app_tasks(self, host: str) -> list[tuple[AppRecord, Task]]:
        return [(rec, t) for rec in self.sched.reg.apps.values() for t in rec.tasks.values()
                if t.host == host and t.active and not t.kill_requested]

    def _instances(self, host: str) -> list[PodInstance]:
        return [i for i in self.pods.instances() if i.host == host and not i.kill_requested]

    def partition(self, host: str) -> list[str]:
        """The master loses the agent: every running task on it becomes TASK_UNREACHABLE."""
        if host in self.partitioned:
            return []
        self.partitioned.add(host)
        self.pods.unplaceable.add(host)
        bus = self.sched.bus
        timers = self._timers.setdefault(host, [])
        changed = []
        for rec, task in self._app_tasks(host):
            if task.state != "TASK_RUNNING":
                continue
            self.sched._stop_health(task)
            task.state = "TASK_UNREACHABLE"
            bus.publish(ev.status_update(task))
            bus.publish(ev.instance_changed(task))
            changed.append(task.instance_id)
            strategy = rec.spec.unreachable_strategy
            if strategy is not None:
                timers.append(asyncio.create_task(self._app_timeline(rec, task, strategy)))
        for inst in self._instances(host):
            if {t.state for t in inst.tasks.values()} != {"TASK_RUNNING"}:
                continue
            self.pods.stop_health(inst)
            for task in inst.tasks.values():
                task.state = "TASK_UNREACHABLE"
            self.pods._publish_tasks(inst)
            changed.append(inst.instance_id)
            pod = self.pods.pods.get(inst.pod_id)
            if pod is not None and pod.spec.unreachable is not None:
                timers.append(asyncio.create_task(self._pod_timeline(inst, pod.spec.unreachable)))
        log.info("agent %s partitioned: %d instances unreachable", host, len(changed))
        return changed

    async def _app_timeline(self, rec: AppRecord, task: Task, strategy: dict[str, int]) -> None:
        await asyncio.sleep(strategy["inactiveAfterSeconds"])
        if task.state != "TASK_UNREACHABLE":
            return
        if strategy["inactiveAfterSeconds"] < strategy["expungeAfterSeconds"]:
            task.unreachable_inactive = True
            self.sched.bus.publish(ev.status_update(task))
            self.sched.bus.publish(ev.instance_changed(task))
        await asyncio.sleep(strategy["expungeAfterSeconds"] - strategy["inactiveAfterSeconds"])
        if task.state != "TASK_UNREACHABLE":
            return
        task.kill_requested = True  # its container's end is ours, not a failure
        self.sched._forget(rec, task)
        self.sched.bus.publish(ev.instance_changed(task, "Killed"))  # ForceExpunge: no task update
        if task.container_id:
            await asyncio.to_thread(self.sched.dockers[task.host].remove, task.container_id)
            self.sched.launched.pop(task.container_id, None)

    async def _pod_timeline(self, inst: PodInstance, strategy: dict[str, int]) -> None:
        await asyncio.sleep(strategy["inactiveAfterSeconds"])
        if inst.first().state != "TASK_UNREACHABLE":
            return
        if strategy["inactiveAfterSeconds"] < strategy["expungeAfterSeconds"]:
            for task in inst.tasks.values():
                task.unreachable_inactive = True
            self.pods._publish_tasks(inst)
        await asyncio.sleep(strategy["expungeAfterSeconds"] - strategy["inactiveAfterSeconds"])
        if inst.first().state != "TASK_UNREACHABLE":
            return
        inst.kill_requested = True
        pod = self.pods.pods.get(inst.pod_id)
        if pod is not None:
            self.pods.forget(pod, inst)
        self.sched.bus.publish(ev.instance_changed(inst.first(), "Killed"))
        await self.pods._remove_containers(inst)

    def reconnect(self, host: str) -> list[str]:
        """The agent re-registers: its still-known tasks report TASK_RUNNING again."""
        self.partitioned.discard(host)
        self.pods.unplaceable.discard(host)
        for timer in self._timers.pop(host, []):
            timer.cancel()
        bus = self.sched.bus
        changed = []
        for rec, task in self._app_tasks(host):
            if task.state != "TASK_UNREACHABLE":
                continue
            task.state, task.unreachable_inactive = "TASK_RUNNING", False
            bus.publish(ev.status_update(task))
            bus.publish(ev.instance_changed(task))
            self.sched._start_health(rec, task)
            changed.append(task.instance_id)
        for inst in self._instances(host):
            if inst.first().state != "TASK_UNREACHABLE":
                continue
            for task in inst.tasks.values():
                task.state, task.unreachable_inactive = "TASK_RUNNING", False
            self.pods._publish_tasks(inst)
            pod = self.pods.pods.get(inst.pod_id)
            if pod is not None:
                self.pods.start_health(pod, inst)
            changed.append(inst.instance_id)
        log.info("agent %s reconnected: %d instances running again", host, len(changed))
        return changed

    # ------------------------------------------------------------------ control API

    def add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_post("/_sim/agents/{host}/partition", self._partition)
        r.add_post("/_sim/agents/{host}/reconnect", self._reconnect)

    def _known(self, host: str) -> bool:
        return any(s.host == host for s in self.sched.cfg.slaves)

    async def _partition(self, request: web.Request) -> web.Response:
        return self._answer(request, self.partition)

    async def _reconnect(self, request: web.Request) -> web.Response:
        return self._answer(request, self.reconnect)

    def _answer(self, request: web.Request, action: Any) -> web.Response:
        host = request.match_info["host"]
        if not self._known(host):
            return web.json_response({"message": f"no agent {host}"}, status=404)
        return web.Response(text=json.dumps({"agent": host, "instances": action(host)}),
                            content_type="application/json")
