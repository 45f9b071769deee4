"""`python -m devcluster.consul_sim`: one process, one HTTP agent per `--agent`, one DNS server.

    python -m devcluster.consul_sim --agent 127.0.0.2:8500=slave1 --agent 127.0.0.3:8500=slave2 \
        --dns 127.0.0.1:8600 [--datacenter dc1] [--no-checks] [--registration-log] \
        [--acl-default-policy allow|deny] [--acl-token SECRET=ACCESSOR:RULES ...]

Each `--agent HOST:PORT=NODENAME` is a Consul client agent whose node is NODENAME with node
Address HOST; all agents feed one catalog. ACLs are off unless `--acl-default-policy` is given
(token rules syntax: see `devcluster.consul_sim.acl`). `--no-checks` stores checks but never runs
them (benchmarks); `--registration-log` timestamps every register/deregister for
`GET /_sim/registrations` (benchmarks). `--check-reap-interval` / `--check-deregister-min` exist for tests only and
default to Consul's 30 s / 1 min. Logs go to stderr; SIGTERM/SIGINT exit cleanly.

Sessions and KV (`/v1/session/*`, `/v1/kv/*`) are shared by all agents like the catalog; tests
drive them with `POST /_sim/nodes/<node>/down|up` (serfHealth critical/passing) and
`POST /_sim/clock/advance?seconds=N` (session TTLs and lock-delays; real time by default). See
`devcluster.consul_sim.kv_api`. `--session-ttl-min` is Consul's own `session_ttl_min` option.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import sys

from aiohttp import web

from devcluster.consul_sim.acl import AclStore, parse_token_arg
from devcluster.consul_sim.checks import CheckRunner
from devcluster.consul_sim.dns_server import serve_dns
from devcluster.consul_sim.gojson import GoJSONError, parse_duration
from devcluster.consul_sim.http_api import Sim, make_app
from devcluster.consul_sim.state import State

log = logging.getLogger("consul_sim")


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"want HOST:PORT, got {text!r}")
    return host, int(port)


def _duration(text: str) -> int:
    """A Go duration (`10s`, `1.5s`) in nanoseconds, for `--session-ttl-min`."""
    try:
        ns = parse_duration(text)
    except GoJSONError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if ns <= 0:
        raise argparse.ArgumentTypeError(f"want a positive duration, got {text!r}")
    return ns


def _agent(text: str) -> tuple[str, int, str]:
    addr, sep, node = text.partition("=")
    if not sep or not node:
        raise argparse.ArgumentTypeError(f"want HOST:PORT=NODENAME, got {text!r}")
    host, port = _hostport(addr)
    return host, port, node


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m devcluster.consul_sim", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agent", action="append", type=_agent, required=True, metavar="HOST:PORT=NODENAME")
    p.add_argument("--dns", type=_hostport, metavar="HOST:PORT")
    p.add_argument("--datacenter", default="dc1")
    p.add_argument("--no-checks", action="store_true", help="store checks but never run them")
    p.add_argument("--registration-log", action="store_true",
                   help="record every register/deregister and session/KV write with its time for "
                        "GET /_sim/registrations")
    p.add_argument("--acl-default-policy", choices=["allow", "deny"])
    p.add_argument("--acl-token", action="append", default=[], type=parse_token_arg,
                   metavar="SECRET=ACCESSOR:RULES")
    p.add_argument("--check-reap-interval", type=float, default=30.0, help=argparse.SUPPRESS)
    p.add_argument("--check-deregister-min", type=float, default=60.0, help=argparse.SUPPRESS)
    p.add_argument("--session-ttl-min", type=_duration, default=10 * 10**9, metavar="DURATION",
                   help="Consul's session_ttl_min (default 10s): the shortest session TTL accepted")
    p.add_argument("--tls-cert", help="agents serve HTTPS with this certificate (with --tls-key)")
    p.add_argument("--tls-key")
    p.add_argument("--tls-client-ca", metavar="CA_FILE",
                   help="require client certificates signed by this CA (Consul's verify_incoming)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key) or (args.tls_client_ca and not args.tls_cert):
        p.error("--tls-cert and --tls-key go together; --tls-client-ca needs them")
    return args


def _tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The agents' server context: HTTPS, and client certificates required when asked (on request,
    as Consul's verify_incoming, so one world can test both a plain-TLS and an mTLS agent)."""
    if not args.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.tls_cert, args.tls_key)
    if args.tls_client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(args.tls_client_ca)
    return ctx


async def run(args: argparse.Namespace) -> None:
    state = State(args.datacenter, args.agent)
    sim = Sim(state, AclStore(args.acl_default_policy, args.acl_token))
    if args.registration_log:
        sim.registration_log = []
    sim.kv.ttl_min_ns = args.session_ttl_min
    runner: CheckRunner | None = None
    if not args.no_checks:
        runner = CheckRunner(state, reap_interval=args.check_reap_interval,
                             deregister_min=args.check_deregister_min)
        await runner.start()
        sim.ttl_reset = runner.ttl_reset
    runners: list[web.AppRunner] = []
    tls = _tls(args)
    for agent in state.agents.values():
        r = web.AppRunner(make_app(sim, agent), access_log=None, shutdown_timeout=0.5)
        await r.setup()
        await web.TCPSite(r, agent.host, agent.port, reuse_address=True, ssl_context=tls).start()
        runners.append(r)
        log.info("agent %s (node %s) listening on %s://%s%s", agent.node, agent.node, "https" if tls else "http",
                 agent.addr, " (client certificates required)" if args.tls_client_ca else "")
    closers: list[object] = []
    if args.dns:
        closers = await serve_dns(state, *args.dns)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("consul simulator ready (datacenter %s, checks %s, acl %s)", args.datacenter,
             "off" if args.no_checks else "on", args.acl_default_policy or "disabled")
    await stop.wait()
    log.info("shutting down")
    for c in closers:
        c.close()  # type: ignore[attr-defined]
    for r in runners:
        await r.cleanup()
    if runner is not None:
        await runner.close()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
