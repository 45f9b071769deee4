"""Error injection for the three simulators: one aiohttp middleware and its control endpoint.

Why: the registrar's contract (docs/architecture.md §8) is that every answer Consul, Docker and Marathon can
give is classified (retry with back-off, done, or report). Those answers only happen in a real
cluster under stress (a Consul election, a connection limit hit, a Marathon leader change), so the
simulators can be told to give them on purpose, and count how often they did, so that a test can
assert how many times a client retried.

Control API (on every listen address of a simulator process; one rule set per process, so in the
Consul simulator a rule posted to any agent can target any agent):

    POST   /_sim/faults         add a rule (JSON object below) -> 201 the rule as stored, with `id`
    GET    /_sim/faults         {"rules": [rule...], "injected": total answers injected}
    DELETE /_sim/faults         remove every rule -> {"cleared": n}
    DELETE /_sim/faults/{id}    remove one rule -> {"cleared": 1}, 404 if unknown

A rule:

    {"path": "^/v1/agent/service/register$",  # required: Python regex, re.search on the path (no query)
     "method": "PUT",                         # optional: any method if absent
     "listen": "127.0.0.2:8500",              # optional: the local address the request arrived on,
                                              #   "host:port" or just "host"; any if absent
     "mode": "status",                        # status (default) | reset | garbage | slow
     "status": 500,                           # mode status: required
     "body": "...",                           # optional: the simulator's default text for `status`
     "headers": {"Retry-After": "1"},         # optional, added to an injected answer
     "delay": 2.5,                            # mode slow: seconds to wait before answering normally
     "duration": 10,                          # optional: seconds from now the rule stays active
     "count": 3}                              # optional: answers it injects, then it is spent

Without `duration` and `count` a rule lasts until deleted. The first active rule (in the order
added) that matches a request decides; a request no rule matches is served normally. A rule that
expired or is spent stays listed (`"active": false`) with its `hits`, so a test can read how many
answers it injected after the fact. Modes: `status` answers `status` with `body` (default: the
simulator's own text, see the profiles below); `reset` aborts the TCP connection (RST, no answer
at all: the client sees "connection reset by peer"); `garbage` answers 200 with the simulator's
JSON content type and a body that is not JSON (`body` overrides it); `slow` waits `delay` seconds,
then serves the request normally (the wait counts as a hit). Paths under `/_sim/` (every
simulator's control endpoints, this one included) are never faulted.

Hook: `web.Application(middlewares=[faults.middleware, ...])` with `faults = Faults(CONSUL)` (or
`MARATHON`, `DOCKER`), one `Faults` shared by every app of the process.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

CONTROL_PATH = "/_sim/faults"
MODES = ("status", "reset", "garbage", "slow")
# Not JSON, but starts like a JSON document: the kind of body a truncated or corrupted answer has.
GARBAGE = b'{"garbage": <this is not JSON'

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Answer:
    """One canned error answer: its body, content type and extra headers."""

    body: str
    content_type: str  # the whole Content-Type header, as the real server writes it
    headers: Mapping[str, str] = field(default_factory=dict)
    close: bool = False  # close the connection after answering (Consul's 429 does)


@dataclass(frozen=True)
class Profile:
    """A simulator's way of failing: its default texts per status, and how it frames a `body`."""

    name: str
    defaults: Mapping[int, Callable[[str], Answer]]  # status -> (request path -> answer)
    frame: Callable[[int, str], Answer]  # a rule's own `body` (or no default) -> the answer
    json_type: str = "application/json"  # Content-Type of the simulator's JSON answers (for garbage)
    headers: Mapping[str, str] = field(default_factory=dict)  # added to every injected answer

    def answer(self, status: int, body: str | None, path: str) -> Answer:
        if body is None and status in self.defaults:
            return self.defaults[status](path)
        return self.frame(status, body if body is not None else f"injected fault: HTTP {status}")


# ---- Consul ------------------------------------------------------------------------------------
# A client agent forwards catalog/health reads to the servers; with no leader the server answers
# structs.ErrNoLeader "No cluster leader" (hashicorp/consul agent/structs/errors.go), which the
# agent's connection pool wraps as "rpc error making call: %w" (agent/pool/pool.go `RPC`), and the
# HTTP layer writes err.Error() as a text/plain 500 (agent/http.go). The 429 is the agent's
# per-client-IP connection limit (`limits.http_max_conns_per_client`, agent/agent.go
# `connLimiter`): a raw "HTTP/1.1 429 Too Many Requests" with Content-Type text/plain,
# "Connection: close" and this exact body, trailing newline included.
CONSUL_NO_LEADER = "rpc error making call: No cluster leader"
CONSUL_TOO_MANY_CONNS = "Your IP is issuing too many concurrent connections, please rate limit your calls\n"


# Go's http.ResponseWriter sniffs a text body as "text/plain; charset=utf-8"; the connection
# limiter writes its answer raw, with "Content-Type: text/plain".
_GO_TEXT = "text/plain; charset=utf-8"


def _consul_frame(status: int, body: str) -> Answer:
    # Consul writes every error as plain text (agent/http.go); see consul_sim/http_api.py `_text`.
    return Answer(body, _GO_TEXT)


CONSUL = Profile(
    name="consul",
    defaults={
        500: lambda _: Answer(CONSUL_NO_LEADER, _GO_TEXT),
        429: lambda _: Answer(CONSUL_TOO_MANY_CONNS, "text/plain", close=True),
    },
    frame=_consul_frame,
)

# ---- Marathon ----------------------------------------------------------------------------------
# A Marathon that cannot tell who leads refuses every proxied request with
# `response.sendError(503, "Could not determine the current leader")` in 1.4-1.6
# (mesosphere/marathon v1.4.13 and v1.5.0 `api/LeaderProxyFilter.scala`,
# ERROR_STATUS_NO_CURRENT_LEADER; from 1.7 the same text comes with 502). sendError means Jetty's
# default ErrorHandler page (Marathon installs none of its own), text/html: the page below follows
# Jetty 9.x `ErrorHandler.writeErrorPage` (head, "HTTP ERROR <code>", "Problem accessing <uri>.
# Reason:"); the reason text is exact, the HTML scaffolding is Jetty's shape without the optional
# "Powered by Jetty://" line (not compared byte for byte with 9.3.6). Its 404 for an unknown path
# is Jersey's NotFoundException through MarathonExceptionMapper: {"message":"HTTP 404 Not Found"}
# (the simulator's NOT_FOUND, reference/marathon.md).
MARATHON_NO_LEADER = "Could not determine the current leader"


def jetty_error_page(status: int, reason: str, uri: str) -> str:
    """Jetty's default error page for `sendError(status, reason)` on `uri`."""
    return ("<html>\n<head>\n<meta http-equiv=\"Content-Type\" content=\"text/html;charset=ISO-8859-1\"/>\n"
            f"<title>Error {status} {reason}</title>\n</head>\n<body><h2>HTTP ERROR {status}</h2>\n"
            f"<p>Problem accessing {uri}. Reason:\n<pre>    {reason}</pre></p>\n</body>\n</html>\n")


_JETTY_HTML = "text/html;charset=ISO-8859-1"
_JETTY_HEADERS = {"Cache-Control": "must-revalidate,no-cache,no-store"}


def _message_json(body: str, separators: tuple[str, str]) -> Answer:
    """`body` as the error JSON both Marathon and dockerd write, `{"message": body}`; a body that is
    already a JSON object is sent as it is (a test that wants `details` too)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        body = json.dumps({"message": body}, separators=separators)
    return Answer(body, "application/json")


def _marathon_frame(status: int, body: str) -> Answer:
    # Marathon's own errors (MarathonExceptionMapper, play-json: compact).
    return _message_json(body, (",", ":"))


MARATHON = Profile(
    name="marathon",
    defaults={
        503: lambda path: Answer(jetty_error_page(503, MARATHON_NO_LEADER, path), _JETTY_HTML, _JETTY_HEADERS),
        502: lambda path: Answer(jetty_error_page(502, MARATHON_NO_LEADER, path), _JETTY_HTML, _JETTY_HEADERS),
        404: lambda _: Answer('{"message":"HTTP 404 Not Found"}', "application/json"),
    },
    frame=_marathon_frame,
)

# ---- Docker ------------------------------------------------------------------------------------
# dockerd answers every error as JSON {"message": "..."} (moby api/server/httputils
# `MakeErrorHandler` -> types.ErrorResponse), with the Api-Version/Server headers its version
# middleware adds to every answer (docker_sim/templates.py HEADERS). Its router's 404 is
# "page not found" (moby api/server/server.go `pageNotFoundError`, as docker_sim answers).


def _docker_frame(status: int, body: str) -> Answer:
    return _message_json(body, (", ", ": "))


def docker_profile(headers: Mapping[str, str]) -> Profile:
    """The Docker engine's profile; `headers` = the engine's version headers (templates.HEADERS)."""
    return Profile(
        name="docker",
        defaults={404: lambda _: Answer(json.dumps({"message": "page not found"}), "application/json")},
        frame=_docker_frame,
        headers=dict(headers),
    )


# ---- rules -------------------------------------------------------------------------------------


class RuleError(ValueError):
    """A rule the control endpoint refuses (400)."""


@dataclass
class Rule:
    id: int
    path: re.Pattern[str]
    mode: str = "status"
    method: str | None = None
    listen: str | None = None
    status: int | None = None
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    duration: float | None = None
    count: int | None = None
    created: float = field(default_factory=time.monotonic)
    hits: int = 0

    def active(self, now: float) -> bool:
        if self.count is not None and self.hits >= self.count:
            return False
        return self.duration is None or now < self.created + self.duration

    def matches(self, request: web.Request, local: str) -> bool:
        if self.method is not None and request.method != self.method:
            return False
        if self.listen is not None and local != self.listen and local.rpartition(":")[0] != self.listen:
            return False
        return self.path.search(request.path) is not None

    def to_json(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "path": self.path.pattern, "mode": self.mode, "method": self.method,
                               "listen": self.listen, "hits": self.hits, "active": self.active(now)}
        if self.mode == "status":
            out["status"] = self.status
        if self.body is not None:
            out["body"] = self.body
        if self.headers:
            out["headers"] = self.headers
        if self.mode == "slow":
            out["delay"] = self.delay
        if self.duration is not None:
            out["duration"] = self.duration
            out["remaining"] = max(0.0, self.created + self.duration - now)
        if self.count is not None:
            out["count"] = self.count
        return out


def _number(raw: dict[str, Any], key: str, *, integer: bool = False) -> Any:
    v = raw.get(key)
    if v is None:
        return None
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok or v < 0:
        raise RuleError(f"{key} must be a non-negative {'integer' if integer else 'number'}, got {v!r}")
    return v


def parse_rule(raw: Any, rule_id: int) -> Rule:
    """A rule from its JSON form; RuleError says what is wrong with it."""
    if not isinstance(raw, dict):
        raise RuleError("a rule is a JSON object")
    unknown = set(raw) - {"path", "method", "listen", "mode", "status", "body", "headers", "delay", "duration",
                          "count"}
    if unknown:
        raise RuleError(f"unknown keys: {', '.join(sorted(unknown))}")
    if not isinstance(raw.get("path"), str):
        raise RuleError("path (a regular expression) is required")
    try:
        path = re.compile(raw["path"])
    except re.error as exc:
        raise RuleError(f"path is not a regular expression: {exc}") from None
    mode = raw.get("mode", "status")
    if mode not in MODES:
        raise RuleError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    method = raw.get("method")
    if method is not None and not isinstance(method, str):
        raise RuleError("method must be a string")
    listen = raw.get("listen")
    if listen is not None and not isinstance(listen, str):
        raise RuleError("listen must be a string (host or host:port)")
    status = raw.get("status")
    if mode == "status":
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise RuleError(f"mode status needs a status from 100 to 599, got {status!r}")
    elif status is not None:
        raise RuleError(f"status is only for mode status, not {mode}")
    body = raw.get("body")
    if body is not None and not isinstance(body, str):
        raise RuleError("body must be a string")
    headers = raw.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise RuleError("headers must be an object of strings")
    delay = _number(raw, "delay")
    if mode == "slow" and delay is None:
        raise RuleError("mode slow needs delay (seconds)")
    if mode != "slow" and delay is not None:
        raise RuleError("delay is only for mode slow")
    return Rule(id=rule_id, path=path, mode=mode, method=method.upper() if method else None, listen=listen,
                status=status, body=body, headers=dict(headers), delay=float(delay or 0.0),
                duration=_number(raw, "duration"), count=_number(raw, "count", integer=True))


# ---- the middleware ----------------------------------------------------------------------------


def _local(request: web.Request) -> str:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if not sockname:
        return ""
    return f"{sockname[0]}:{sockname[1]}"


def _reset(request: web.Request) -> None:
    """Abort the connection with an RST: SO_LINGER 0 makes close() drop it instead of a FIN."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


class Faults:
    """The rules of one simulator process and the middleware that applies them."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.rules: list[Rule] = []
        self.injected = 0
        self._ids = itertools.count(1)

    def add(self, raw: Any) -> Rule:
        rule = parse_rule(raw, next(self._ids))
        self.rules.append(rule)
        return rule

    def clear(self) -> int:
        n = len(self.rules)
        self.rules.clear()
        return n

    def pick(self, request: web.Request) -> Rule | None:
        """The first active rule matching the request, or None."""
        if not self.rules:
            return None
        now = time.monotonic()
        local = _local(request)
        for rule in self.rules:
            if rule.active(now) and rule.matches(request, local):
                return rule
        return None

    def render(self, rule: Rule, request: web.Request) -> web.Response:
        """The canned answer of a `status` or `garbage` rule."""
        if rule.mode == "garbage":
            body = rule.body if rule.body is not None else GARBAGE.decode()
            answer = Answer(body, self.profile.json_type)
            status = 200
        else:
            assert rule.status is not None
            status = rule.status
            answer = self.profile.answer(status, rule.body, request.path)
        charset = "iso-8859-1" if "ISO-8859-1" in answer.content_type else "utf-8"
        resp = web.Response(status=status, body=answer.body.encode(charset, "replace"),
                            headers={**self.profile.headers, **answer.headers, "Content-Type": answer.content_type,
                                     **rule.headers})
        if answer.close:
            resp.force_close()
        return resp

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sim/"):
            if request.path == CONTROL_PATH or request.path.startswith(CONTROL_PATH + "/"):
                return await self.control(request)
            return await handler(request)
        rule = self.pick(request)
        if rule is None:
            return await handler(request)
        rule.hits += 1
        self.injected += 1
        if rule.mode == "slow":
            await asyncio.sleep(rule.delay)
            return await handler(request)
        if rule.mode == "reset":
            _reset(request)
            # Nothing reaches the client: aiohttp finds the transport closed and writes nothing.
            return web.Response(status=499)
        return self.render(rule, request)

    async def control(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        tail = request.path[len(CONTROL_PATH):].strip("/")
        if request.method == "GET" and not tail:
            return _json({"rules": [r.to_json(now) for r in self.rules], "injected": self.injected})
        if request.method == "POST" and not tail:
            try:
                rule = self.add(await request.json())
            except (ValueError, RuleError) as exc:  # json.JSONDecodeError is a ValueError
                return _json({"message": f"bad fault rule: {exc}"}, 400)
            return _json(rule.to_json(now), 201)
        if request.method == "DELETE" and not tail:
            return _json({"cleared": self.clear()})
        if request.method == "DELETE" and tail.isdigit():
            before = len(self.rules)
            self.rules = [r for r in self.rules if r.id != int(tail)]
            if len(self.rules) == before:
                return _json({"message": f"no fault rule {tail}"}, 404)
            return _json({"cleared": 1})
        return _json({"message": f"{request.method} {request.path} is not a fault endpoint"}, 404)
