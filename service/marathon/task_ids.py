"""Marathon task ids and instance ids -> app id, instance uuid, incarnation (docs/architecture.md §6.1).

Why parse at all: events from some versions carry no usable `appId` (and a resync key must be
derivable from the task id alone), and the reconciler needs the instance id to match
`instance_health_changed_event`s (which name instances, not tasks) to tasks.

The regexes are Marathon's own (`Task.Id`, master), tried in Marathon's order, so an id means
here exactly what it means to Marathon:

- `<safe>.instance-<uuid>._app.<n>`  1.8+ app task (format "instance", incarnation n)
- `<safe>.instance-<uuid>.<container>` pod task (format "instance", no incarnation)
- `<safe>.<uuid>.<n>`                resident task <= 1.7 (format "legacy", incarnation = attempt)
- `<safe>.<uuid>` / `<safe>_<uuid>`  task <= 1.7 (format "legacy")

The app id is always `"/" + safe.replace("_", "/")`: app ids cannot contain `_` (Marathon's app id rule), which is
what makes the safe path reversible.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

TaskIdFormat = Literal["legacy", "instance"]

# Marathon master, Task.scala, in the order Task.Id.parse tries them.
_TASK_ID_WITH_INCARNATION = re.compile(r"^(.+)\.(instance-|marathon-)([^_\.]+)[\._]([^\.]+)\.(\d+)$")
_TASK_ID_FOR_INSTANCE = re.compile(r"^(.+)\.(instance-|marathon-)([^_\.]+)[\._]([^\.]+)$")
_RESIDENT_TASK_ID = re.compile(r"^(.+)([\._])([^_\.]+)(\.)(\d+)$")
_LEGACY_TASK_ID = re.compile(r"^(.+)([\._])([^_\.]+)$")
_INSTANCE_ID = re.compile(r"^(.+)\.(instance-|marathon-)([^_\.]+)$")

# Characters Marathon can put into a safe path (app id segments are [a-z0-9.-], joined by `_`);
# checked so that garbage ("hello world.x") is rejected instead of becoming an app id.
_SAFE_PATH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True, slots=True)
class TaskId:
    """A parsed Marathon task id.

    `uuid` is the instance/task uuid (without the `instance-`/`marathon-` prefix); `container` is
    the pod container name (`_app` for 1.8+ app tasks, None for legacy ids); `incarnation` is the
    relaunch counter of 1.8+ ids (or the attempt of a legacy resident task), None otherwise.
    """

    task_id: str
    app_id: str
    uuid: str
    incarnation: int | None
    format: TaskIdFormat
    container: str | None = None
    safe_path: str = ""

    @property
    def instance_id(self) -> str:
        """The id of the instance this task belongs to, as Marathon names it in events.

        1.8+ and pods: `<safe>.instance-<uuid>`; legacy tasks (1.4-1.7): `<safe>.marathon-<uuid>`
        (Marathon derives that instance id from the legacy task id).
        """
        prefix = "instance-" if self.format == "instance" else "marathon-"
        return f"{self.safe_path}.{prefix}{self.uuid}"


def _app_id(safe: str, original: str) -> str:
    if not _SAFE_PATH.match(safe) or any(not seg for seg in safe.split("_")):
        raise ValueError(f"malformed Marathon task id {original!r}: app part {safe!r} is not a safe path")
    return "/" + safe.replace("_", "/")


def parse_task_id(task_id: str) -> TaskId:
    """Parse a task id of any Marathon version; `ValueError` if it matches none of the formats."""
    if not isinstance(task_id, str) or not task_id:
        raise ValueError(f"malformed Marathon task id {task_id!r}: expected a non-empty string")
    if m := _TASK_ID_WITH_INCARNATION.match(task_id):
        safe, _prefix, uuid, container, incarnation = m.groups()
        return TaskId(task_id, _app_id(safe, task_id), uuid, int(incarnation), "instance", container, safe)
    if m := _TASK_ID_FOR_INSTANCE.match(task_id):
        safe, _prefix, uuid, container = m.groups()
        return TaskId(task_id, _app_id(safe, task_id), uuid, None, "instance", container, safe)
    if m := _RESIDENT_TASK_ID.match(task_id):
        safe, _sep, uuid, _dot, attempt = m.groups()
        return TaskId(task_id, _app_id(safe, task_id), uuid, int(attempt), "legacy", None, safe)
    if m := _LEGACY_TASK_ID.match(task_id):
        safe, _sep, uuid = m.groups()
        return TaskId(task_id, _app_id(safe, task_id), uuid, None, "legacy", None, safe)
    raise ValueError(
        f"malformed Marathon task id {task_id!r}: expected <app>.<uuid> or <app>.instance-<uuid>._app.<n>"
    )


def app_id_from_instance_id(instance_id: str) -> str:
    """`site1_customer1_web.instance-<uuid>` (or `.marathon-<uuid>`) -> `/site1/customer1/web`.

    For health events that name an instance and carry no app id.
    """
    if not isinstance(instance_id, str) or not (m := _INSTANCE_ID.match(instance_id)):
        raise ValueError(
            f"malformed Marathon instance id {instance_id!r}: expected <app>.instance-<uuid> "
            "or <app>.marathon-<uuid>"
        )
    return _app_id(m.group(1), instance_id)
