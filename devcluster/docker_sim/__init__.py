"""Docker Engine API simulator: many simulated slaves' engines in one process, for benchmarks at scale.

Real engines cannot hold 10,000 containers on 2 cores; the registrar only *reads* an engine, through
`/version`, `/_ping`, `/v1.41/containers/json` with the `label` and `name` filters,
`/containers/{id}/json`, and for Weave-proxied containers `/containers/{id}/archive?path=/etc/hosts`
and the exec API (`POST /containers/{id}/exec`, `POST /exec/{id}/start` with Docker's multiplexed
raw stream, `GET /exec/{id}/json`), so those are simulated, in the real 20.10 engine's shapes
(`templates.py`), one engine per `--listen` address. Containers are created through a control API
outside Docker's paths:

    POST   /_sim/containers        JSON list of {task_id, ip?, network?, host_port?, container_port?,
                                   label?, running?, name?, weave_proxy?, weave_ips?, weave_cidr?,
                                   weave_attached?, ip_binary?, weave_rewrite_hosts?}
                                   -> [{id, name, task_id}]
    DELETE /_sim/containers/{ref}  by container id (or unique prefix), name or task id
    POST   /_sim/containers/{ref}/weave-attach   what `weave attach` does to a proxied container
                                   (created with weave_proxy and weave_attached=false)
    POST   /_sim/reset             no containers, zeroed stats
    GET    /_sim/stats             {"requests": {endpoint: count}, "containers": n}
    /_sim/faults                   error injection, one rule set for every engine (devcluster/faults.py)

`python -m devcluster.docker_sim --listen 127.0.0.X:2375 [--listen ...] [--list-cost-per-container-us N]
[--list-cost-per-result-us N] [--rewrite-inspect]` (the cost model: the 20.10 engine here spent ~45 us
per container held and ~150 us per container returned; 100 containers: 20 ms listed, 5 ms for one by
label=value). `--rewrite-inspect` answers inspects as Weave's proxy with that flag does.
Not faithful (on purpose): no create/start/events API, no real processes or networks, `Status` and
`State.Pid` frozen at creation, only the filters above (plus `id`, `status`); the archive knows only
/etc/hosts and exec only busybox `ip ... dev <dev>`; the archive and exec cost nothing (the real engine:
tens of ms, docs/weave.md).
"""

from devcluster.docker_sim.engine import SimContainer, SimEngine
from devcluster.docker_sim.server import Running, make_app, start, stop

__all__ = ["Running", "SimContainer", "SimEngine", "make_app", "start", "stop"]
