"""The Weave IPs of containers started through Weave's Docker API proxy (issue 12; the facts are in
reference/weave.md), which Docker itself does not know: service.docker.lookup asks here for every
running proxied container it finds, so the lookup stays one listing per slave for the others.

Weave-proxied containers
    Weave's Docker API proxy wraps a container's entrypoint in `/w/w`, binds its volume at `/w` and
    puts the Weave IP on an interface `ethwe` that Docker never learns about: `NetworkSettings` keeps
    the docker0 address (§0, §2.2). Such a container is recognised from the listing we already have
    -- `Command` starting with `/w/w`, or a mount at `/w` (§1.4) -- so a non-proxied container costs
    nothing more. For a proxied one the Weave IP is read, in this order:
    1. inspect: the top-level `NetworkSettings.IPAddress`, if it is none of the `Networks` addresses
       (only the proxy's `--rewrite-inspect` makes them differ: it rewrites exactly that field, §3)
       and lies in `--overlay-cidr`. The inspect also confirms the markers (`Config.Entrypoint[0]`,
       the `/w` bind, `WEAVE_CIDR` -- `WEAVE_CIDR=none` means "left alone", §1.3) and `State.Running`;
    2. `GET /containers/{id}/archive?path=/etc/hosts`: the `# created by Weave - BEGIN` ... `END`
       block the proxy writes, its `# container hostname` lines (§2.3, §6.1). No process is started
       in the container, so it works for images without a shell. A `HEAD` first (~1.5 ms, the GET
       ~60 ms) skips the GET while the file is still Docker's own (not newer than `StartedAt`);
    3. with `weave_exec` (`--weave-exec-lookup`) only: `ip -4 -o addr show dev ethwe` through the exec
       API, the stream demultiplexed and the exit code read from `GET /exec/{id}/json` (§6.2). It
       needs an `ip` binary in the image (exit 126/127 otherwise: not tried again for that container).
    No block and no `ethwe` yet means "not attached yet" (the proxy attaches after Docker's `start`
    event, §7): the Container says `weave_pending`, the task is retried, never registered with its
    docker0 address. A found answer is cached per container id while the container runs (forgotten
    when a listing shows it stopped or gone); lookups run single-flight per container and at most
    INSPECT_CONCURRENCY at a time per engine. Containers whose addresses all lie outside
    `--overlay-cidr` are logged and counted once (`mcr_overlay_addresses_rejected_total`, by
    service.docker.lookup, which judges every container's address).
"""

from __future__ import annotations

import asyncio
import base64
import io
import ipaddress
import json
import logging
import re
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from service.docker.engine import DockerEngines, DockerLookupError, Engine, consume_exception
from service.metrics import Metrics
from service.model import WEAVE_LOOKUP_FAILED, WEAVE_NOT_ATTACHED, Cidr, in_overlay

log = logging.getLogger(__name__)

# Weave Docker API proxy markers and lookups (reference/weave.md §1.4, §2.3, §6)
WEAVE_ENTRYPOINT = "/w/w"
WEAVE_VOLUME = "/w"
WEAVE_CIDR_ENV = "WEAVE_CIDR="
HOSTS_BEGIN = "# created by Weave - BEGIN"
HOSTS_END = "# created by Weave - END"
HOSTS_SECTION = "# container hostname"
ETHWE_CMD = ["ip", "-4", "-o", "addr", "show", "dev", "ethwe"]
_EXEC_MISSING = (126, 127)  # "executable file not found": 126 on 20.10 (§6.2), 127 from a shell
_EXEC_EXIT_POLLS = 20  # GET /exec/{id}/json while it still says Running, 5 ms apart
_INET = re.compile(r"\binet\s+(\d+\.\d+\.\d+\.\d+)/\d+")


@dataclass(frozen=True, slots=True)
class WeaveAnswer:
    """What the Weave lookup found for one container (see the module docstring)."""

    proxied: bool = True
    ips: tuple[str, ...] = ()
    source: str = ""  # rewrite-inspect | etc-hosts | exec
    pending: str = ""  # WEAVE_NOT_ATTACHED | WEAVE_LOOKUP_FAILED when ips is empty
    stopped: bool = False  # the inspect says not running (or gone): the listing was stale


@dataclass(slots=True, eq=False)
class WeaveCache:
    """One engine's Weave answers, kept while their containers run: asking again would cost an
    inspect and an archive (or exec) per event of a proxied task."""

    answers: dict[str, WeaveAnswer] = field(default_factory=dict)  # container id -> final answer
    runs: dict[str, asyncio.Task[WeaveAnswer]] = field(default_factory=dict)  # lookups in flight
    no_exec: set[str] = field(default_factory=set)  # container ids whose image has no `ip` binary

    def forget(self, running: set[str]) -> None:
        """Drop what is known of containers not in `running` (ids): a restarted container gets
        Docker's hosts file back until the proxy re-attaches it (§6.1)."""
        for cid in [c for c in self.answers if c not in running]:
            del self.answers[cid]
        self.no_exec &= running


class WeaveProxy:
    """Weave lookups of proxied containers through `docker`'s engines; `overlay_cidrs` and
    `weave_exec` are the operator's `--overlay-cidr` and `--weave-exec-lookup`."""

    def __init__(self, docker: DockerEngines, *, metrics: Metrics, overlay_cidrs: tuple[Cidr, ...],
                 weave_exec: bool) -> None:
        self._docker = docker
        self._metrics = metrics
        self.overlay_cidrs = overlay_cidrs
        self.weave_exec = weave_exec

    async def answer(self, cache: WeaveCache, e: Engine, cid: str) -> WeaveAnswer:
        """The Weave lookup of container `cid`: single-flight, and kept in `cache` once it is final.
        (The caller reads `cache.answers` first: a cached answer costs no await.)"""
        task = cache.runs.get(cid)
        if task is None:
            task = cache.runs[cid] = asyncio.create_task(self._answer_now(cache, e, cid))
            task.add_done_callback(lambda _t: cache.runs.pop(cid, None))
            task.add_done_callback(consume_exception)
        return await asyncio.shield(task)

    async def _answer_now(self, cache: WeaveCache, e: Engine, cid: str) -> WeaveAnswer:
        async with e.inspect_limit:
            try:
                w = await self.lookup(cache, e, await self._docker.prefix(e), cid)
            except DockerLookupError as exc:
                log.warning("Weave IP lookup of container %s failed: %s", cid[:12], exc)
                w = WeaveAnswer(pending=WEAVE_LOOKUP_FAILED)
        result = w.source or ("not-proxied" if not w.proxied else "stopped" if w.stopped else w.pending)
        self._metrics.weave_lookups.labels(result).inc()
        if w.ips or not w.proxied:
            cache.answers[cid] = w
        return w

    async def lookup(self, cache: WeaveCache, e: Engine, prefix: str, cid: str) -> WeaveAnswer:
        """Inspect, then the rewritten inspect IP, the /etc/hosts block, and (optionally) exec."""
        info = await self._docker.get(e, "inspect", f"{prefix}/containers/{cid}/json", allow_404=True)
        if not isinstance(info, dict) or not (info.get("State") or {}).get("Running"):
            return WeaveAnswer(pending=WEAVE_NOT_ATTACHED, stopped=True)
        if not weave_proxied_inspect(info):
            return WeaveAnswer(proxied=False)
        rewritten = rewritten_ip(info)
        if rewritten and in_overlay(rewritten, self.overlay_cidrs):
            return WeaveAnswer(ips=(rewritten,), source="rewrite-inspect")
        ips = await self.hosts_block_ips(e, prefix, cid, (info.get("State") or {}).get("StartedAt"))
        if ips:
            return WeaveAnswer(ips=ips, source="etc-hosts")
        if self.weave_exec and cid not in cache.no_exec:
            ips = await self.exec_ethwe(cache, e, prefix, cid)
            if ips:
                return WeaveAnswer(ips=ips, source="exec")
        if rewritten:  # the proxy's answer, outside --overlay-cidr: judged (and rejected) as such
            return WeaveAnswer(ips=(rewritten,), source="rewrite-inspect")
        return WeaveAnswer(pending=WEAVE_NOT_ATTACHED)

    async def hosts_block_ips(self, e: Engine, prefix: str, cid: str, started_at: Any) -> tuple[str, ...]:
        """The Weave IPs of the container's /etc/hosts block, read with the archive endpoint (§6.1):
        a tar of one file, `hosts`. 404 (gone, or no such file) reads as "no block".

        `HEAD` first: it answers only the stat header, ~1.5 ms on the test world's engine, where the
        `GET` costs ~60 ms (20.10 tars in a re-executed, chrooted dockerd). Docker writes the file
        before the process starts and Weave rewrites it after Docker's `start` event (§1.6, §7), so a
        file not newer than `State.StartedAt` is Docker's own: "not attached yet", without the GET.
        The retries of a just-started proxied container then cost ~2 ms each, not ~60."""
        path = f"{prefix}/containers/{cid}/archive?path=/etc/hosts"
        stat_body, headers = await self._docker.request(e, "archive-stat", path, method="HEAD", allow_404=True,
                                                 json_body=False)
        if stat_body is None:
            return ()
        stat = path_stat(headers)
        if stat is not None and (stat.get("size") == 0 or not _newer(stat.get("mtime"), started_at)):
            return ()  # empty (created, never started), or Docker's own file of this start
        body, _ = await self._docker.request(e, "archive", path, allow_404=True, json_body=False,
                                      # the daemon gzips this answer when the client accepts it (§6.1)
                                      send_headers={"Accept-Encoding": "identity"})
        if body is None:
            return ()
        try:
            text = tar_single_file(body)
        except (tarfile.TarError, ValueError) as exc:
            raise DockerLookupError(f"docker on {e.host} ({e.base}): archive of /etc/hosts in {cid[:12]} is not "
                                    f"a one-file tar: {exc}") from exc
        return weave_hosts_ips(text)

    async def exec_ethwe(self, cache: WeaveCache, e: Engine, prefix: str, cid: str) -> tuple[str, ...]:
        """`ip -4 -o addr show dev ethwe` in the container (§6.2): create, start (the hijacked,
        multiplexed stream, read to EOF), then the exit code. 404/409 (gone, stopped, paused) and a
        non-zero exit ("can't find device 'ethwe'") read as "not attached". Sent to the proxy rather
        than dockerd, the exec is wrapped in `/w/w` and waits for `ethwe` (§1.7): before the attach it
        runs into the timeout, which is a `weave-lookup-failed` retry like any engine failure."""
        created, _ = await self._docker.request(
            e, "exec-create", f"{prefix}/containers/{cid}/exec", method="POST", expect=201, allow=(404, 409),
            payload={"Cmd": ETHWE_CMD, "AttachStdout": True, "AttachStderr": True, "Tty": False})
        exec_id = created.get("Id") if isinstance(created, dict) else None
        if not isinstance(exec_id, str) or not exec_id:
            return ()
        raw, _ = await self._docker.request(e, "exec-start", f"{prefix}/exec/{exec_id}/start", method="POST",
                                     payload={"Detach": False, "Tty": False}, json_body=False, allow=(404, 409))
        if raw is None:
            return ()
        try:
            stdout, stderr = demux_stream(raw)
        except ValueError as exc:
            raise DockerLookupError(f"docker on {e.host} ({e.base}): exec stream of {cid[:12]}: {exc}") from exc
        code = await self._exec_exit_code(e, prefix, exec_id)
        if code in _EXEC_MISSING:
            cache.no_exec.add(cid)
            log.warning("container %s has no `ip` binary (exit %s: %s): its Weave IP is read from /etc/hosts only",
                        cid[:12], code, (stdout + stderr).decode(errors="replace").strip()[:200])
            return ()
        if code != 0:
            return ()
        return tuple(_INET.findall(stdout.decode(errors="replace")))

    async def _exec_exit_code(self, e: Engine, prefix: str, exec_id: str) -> int | None:
        """`ExitCode` of a finished exec; the stream can end a moment before the daemon records the
        exit, so a `Running` answer is asked again (bounded). None if it never says."""
        for _ in range(_EXEC_EXIT_POLLS):
            info = await self._docker.get(e, "exec-inspect", f"{prefix}/exec/{exec_id}/json", allow_404=True)
            if not isinstance(info, dict):
                return None
            if not info.get("Running"):
                code = info.get("ExitCode")
                return code if isinstance(code, int) else None
            await asyncio.sleep(0.005)
        return None


def weave_proxied_inspect(info: Mapping[str, Any]) -> bool:
    """Was this container created through the Weave proxy, and not left alone by it? (§1.3, §1.4)

    Any of `Config.Entrypoint[0] == "/w/w"`, a bind or mount at `/w`, or a `WEAVE_CIDR` env entry;
    but the first `WEAVE_CIDR` being exactly `none` means the proxy left the container alone."""
    config = info.get("Config") or {}
    weave_cidr = next((x[len(WEAVE_CIDR_ENV):] for x in config.get("Env") or () if isinstance(x, str)
                       and x.startswith(WEAVE_CIDR_ENV)), None)
    if weave_cidr == "none":
        return False
    entrypoint = config.get("Entrypoint")
    if isinstance(entrypoint, list) and entrypoint and entrypoint[0] == WEAVE_ENTRYPOINT:
        return True
    binds = (info.get("HostConfig") or {}).get("Binds") or ()
    if any(isinstance(b, str) and b.split(":")[1:2] == [WEAVE_VOLUME] for b in binds):
        return True
    if any(isinstance(m, dict) and m.get("Destination") == WEAVE_VOLUME for m in info.get("Mounts") or ()):
        return True
    return weave_cidr is not None


def rewritten_ip(info: Mapping[str, Any]) -> str | None:
    """The top-level `NetworkSettings.IPAddress` when the Weave proxy's `--rewrite-inspect` set it.

    Docker (API >= 1.21) copies it from the default `bridge` endpoint, or leaves it empty; the proxy
    replaces exactly it (and `IPPrefixLen`, `MacAddress`) with the first Weave IP and leaves
    `Networks` alone (reference/weave.md §3). So a value that none of `Networks` has is the proxy's."""
    settings = info.get("NetworkSettings") or {}
    top = settings.get("IPAddress")
    networks = settings.get("Networks")
    if not isinstance(top, str) or not top or not isinstance(networks, dict):
        return None
    if any(isinstance(n, dict) and n.get("IPAddress") == top for n in networks.values()):
        return None
    return top


def weave_hosts_ips(text: str) -> tuple[str, ...]:
    """The IPs of the `# container hostname` lines inside a complete Weave block (§2.3): one line per
    Weave CIDR, in `WEAVE_CIDR` order, `<ip> <names>` with any whitespace (v1.2-v1.9 use 4 spaces,
    v2 pads to 15). Nothing unless both markers are there: no block is "not attached (yet)", and a
    block without its END is a write in progress."""
    lines = [line.strip() for line in text.splitlines()]
    try:
        begin = lines.index(HOSTS_BEGIN)
        end = lines.index(HOSTS_END, begin + 1)
    except ValueError:
        return ()
    ips: list[str] = []
    in_section = False
    for line in lines[begin + 1:end]:
        if line.startswith("#"):
            in_section = line == HOSTS_SECTION
        elif not line:
            in_section = False
        elif in_section:
            ip = line.split()[0]
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                continue
            ips.append(ip)
    return tuple(ips)


def tar_single_file(body: bytes, limit: int = 1 << 20) -> str:
    """The text of the one regular file in an archive-endpoint tar (§6.1)."""
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
        member = tar.next()
        if member is None or not member.isfile():
            raise ValueError("no regular file in it")
        if member.size > limit:
            raise ValueError(f"{member.name} is {member.size} bytes")
        f = tar.extractfile(member)
        if f is None:
            raise ValueError(f"{member.name} cannot be read")
        return f.read().decode(errors="replace")


def _newer(mtime: Any, started_at: Any) -> bool:
    """Is RFC 3339 `mtime` later than `started_at` (both UTC, as the engine writes them)? True when
    either cannot be read, so that an unknown answer costs the GET, never a missed block. Go trims
    trailing zeros of the fraction, so the fractions are padded before comparing."""
    def key(value: Any) -> tuple[str, str] | None:
        if not isinstance(value, str) or not value.endswith("Z") or len(value) < 20:
            return None
        whole, _, fraction = value[:-1].partition(".")
        return (whole, fraction.ljust(9, "0")) if len(whole) == 19 and (fraction.isdigit() or not fraction) else None

    m, s = key(mtime), key(started_at)
    return m is None or s is None or m > s


def path_stat(headers: Mapping[str, str]) -> dict[str, Any] | None:
    """`X-Docker-Container-Path-Stat`: base64 of `{name,size,mode,mtime,linkTarget}` (§6.1); None if
    absent or unreadable (it is only a shortcut)."""
    raw = headers.get("X-Docker-Container-Path-Stat")
    if not raw:
        return None
    try:
        stat = json.loads(base64.b64decode(raw))
    except ValueError:
        return None
    return stat if isinstance(stat, dict) else None


def demux_stream(raw: bytes) -> tuple[bytes, bytes]:
    """(stdout, stderr) of a non-TTY attach/exec stream: frames of an 8-byte header
    `[stream, 0, 0, 0, size (uint32 big-endian)]` and `size` bytes of payload (§6.2)."""
    out, err = bytearray(), bytearray()
    pos = 0
    while pos < len(raw):
        header = raw[pos:pos + 8]
        if len(header) < 8 or header[0] not in (0, 1, 2) or header[1:4] != b"\0\0\0":
            raise ValueError(f"bad frame header at byte {pos}: {header.hex()}")
        size = int.from_bytes(header[4:8], "big")
        payload = raw[pos + 8:pos + 8 + size]
        if len(payload) < size:
            raise ValueError(f"frame at byte {pos} announces {size} bytes, {len(payload)} follow")
        (err if header[0] == 2 else out).extend(payload)
        pos += 8 + size
    return bytes(out), bytes(err)



def weave_proxied_entry(entry: Mapping[str, Any]) -> bool:
    """Weave proxy markers visible in a list entry (reference/weave.md §1.4): `Command` is
    `Path + Args`, so it starts with `/w/w`; `Mounts` holds the `/w` bind. (`WEAVE_CIDR` is in the env,
    which only an inspect shows.)"""
    command = entry.get("Command")
    if isinstance(command, str) and (command == WEAVE_ENTRYPOINT or command.startswith(WEAVE_ENTRYPOINT + " ")):
        return True
    return any(isinstance(m, dict) and m.get("Destination") == WEAVE_VOLUME for m in entry.get("Mounts") or ())
