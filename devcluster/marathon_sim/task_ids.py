"""Marathon task and instance ids (reference §6.3) and Mesos task names (§6.2)."""

from __future__ import annotations

import uuid


def safe_path(app_id: str) -> str:
    """`/site1/customer1/web` -> `site1_customer1_web` (order kept, `/` -> `_`)."""
    return "_".join(s for s in app_id.split("/") if s)


def mesos_task_name(app_id: str) -> str:
    """`/site1/customer1/web` -> `web.customer1.site1` (PathId.toHostname)."""
    return ".".join(reversed([s for s in app_id.split("/") if s]))


def new_task_id(app_id: str, *, instance_style: bool) -> tuple[str, str]:
    """A fresh (task id, instance id) pair with a time-based v1 uuid, as Marathon generates them.

    Legacy (<= 1.7): task `<safe>.<uuid>`, instance `<safe>.marathon-<uuid>`.
    1.8+: task `<safe>.instance-<uuid>._app.1`, instance `<safe>.instance-<uuid>`.
    """
    u = str(uuid.uuid1())
    safe = safe_path(app_id)
    if instance_style:
        return f"{safe}.instance-{u}._app.1", f"{safe}.instance-{u}"
    return f"{safe}.{u}", f"{safe}.marathon-{u}"
