"""One listing of a slave's task containers, read from its engine: which containers are Mesos tasks
and the few fields of each a lookup needs (docs/architecture.md §6.2). When to list, and sharing
a listing between callers, is `lookup.py`'s job.

A task container carries the label `MESOS_TASK_ID` (Marathon 1.4+), so one filtered
`GET /containers/json` names every task container of a slave with its state and addresses, and a
filter on one label value asks for one task. Marathon < 1.4 sets no label, only `MESOS_TASK_ID`
in the container env, which the listing does not return: the full listing takes every `mesos-`
named container (the Mesos containerizer names every container so; the answer carries the labels
of the labelled ones) and inspects only containers never seen before, their answer kept for the
container's life (a container's env never changes), so an unlabelled container is inspected
once, not once per event.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from service.docker.engine import DockerEngines, Engine
from service.docker.weave_proxy import weave_proxied_entry

TASK_ID_KEY = "MESOS_TASK_ID"
NAME_PREFIX = "mesos-"

_LABEL_QUERY = "all=1&filters=" + quote(json.dumps({"label": [TASK_ID_KEY]}, separators=(",", ":")))
_NAME_QUERY = "all=1&filters=" + quote(json.dumps({"name": [NAME_PREFIX]}, separators=(",", ":")))


@dataclass(frozen=True, slots=True)
class Entry:
    """What a lookup needs of an engine's list entry, and nothing else: a listing stays cached per
    slave, and whole engine entries (mounts, ports, labels, ...) for 10,000 containers cost tens
    of MB of RSS; even the kept fields as nested dicts cost ~1 KB a container (issue 20)."""

    id: str
    state: str | None
    networks: tuple[tuple[str, str | None], ...]  # (network name, IPAddress) as listed
    weave: bool


def keep(raw: dict[str, Entry], entry: Mapping[str, Any] | Entry, task_id: str) -> None:
    """Record a list entry (as an `Entry`); of two containers claiming one task id, a running one wins."""
    if not isinstance(entry, Entry):
        networks = ((entry.get("NetworkSettings") or {}).get("Networks")) or {}
        state = entry.get("State")
        entry = Entry(id=entry["Id"], state=sys.intern(state) if isinstance(state, str) else state,
                      networks=tuple((sys.intern(name), n.get("IPAddress")) for name, n in networks.items() if n),
                      weave=weave_proxied_entry(entry))
    old = raw.get(task_id)
    if old is None or (entry.state == "running" and old.state != "running"):
        raw[task_id] = entry


async def labelled(docker: DockerEngines, engine: Engine, prefix: str) -> dict[str, Entry]:
    """Every labelled task container of the slave, by task id."""
    raw: dict[str, Entry] = {}
    for entry in await docker.listing(engine, "list", f"{prefix}/containers/json?{_LABEL_QUERY}"):
        task_id = (entry.get("Labels") or {}).get(TASK_ID_KEY)
        if task_id:
            keep(raw, entry, task_id)
    return raw


async def one_task(docker: DockerEngines, engine: Engine, prefix: str, task_id: str) -> Entry | None:
    """The list entry labelled with exactly `task_id`."""
    query = "all=1&filters=" + quote(json.dumps({"label": [f"{TASK_ID_KEY}={task_id}"]}, separators=(",", ":")))
    raw: dict[str, Entry] = {}
    for entry in await docker.listing(engine, "list-task", f"{prefix}/containers/json?{query}"):
        if (entry.get("Labels") or {}).get(TASK_ID_KEY) == task_id:
            keep(raw, entry, task_id)
    return raw.get(task_id)


async def every_task(docker: DockerEngines, engine: Engine, prefix: str,
                     env_cache: dict[str, str | None]) -> tuple[dict[str, Entry], bool]:
    """Every task container of the slave, labelled or not, by task id; and was any unlabelled?
    `env_cache` (container id -> task id or None) is the slave's, kept between listings."""
    entries = await docker.listing(engine, "list-named", f"{prefix}/containers/json?{_NAME_QUERY}")
    alive = {x["Id"] for x in entries}
    for cid in [c for c in env_cache if c not in alive]:  # forget removed containers
        del env_cache[cid]
    unseen = [x for x in entries if not (x.get("Labels") or {}).get(TASK_ID_KEY) and x["Id"] not in env_cache]
    if unseen:
        answers = await asyncio.gather(*(_inspect_task_id(docker, engine, prefix, x["Id"]) for x in unseen))
        for entry, (gone, task_id) in zip(unseen, answers, strict=True):
            if not gone:
                env_cache[entry["Id"]] = task_id
    raw: dict[str, Entry] = {}
    legacy = False
    for entry in entries:
        task_id = (entry.get("Labels") or {}).get(TASK_ID_KEY)
        if not task_id:
            task_id = env_cache.get(entry["Id"])
            legacy = legacy or bool(task_id)
        if task_id:
            keep(raw, entry, task_id)
    return raw, legacy


async def _inspect_task_id(docker: DockerEngines, engine: Engine, prefix: str, cid: str) -> tuple[bool, str | None]:
    """(gone, task id from Config.Env); gone = removed between listing and inspect."""
    async with engine.inspect_limit:
        info = await docker.get(engine, "inspect", f"{prefix}/containers/{cid}/json", allow_404=True)
    if info is None:
        return True, None
    env = ((info.get("Config") or {}).get("Env") or []) if isinstance(info, dict) else []
    return False, env_task_id(env)


def env_task_id(env: Iterable[str]) -> str | None:
    prefix = TASK_ID_KEY + "="
    for item in env:
        if isinstance(item, str) and item.startswith(prefix):
            return item[len(prefix):] or None
    return None
