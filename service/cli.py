"""`marathon-consul-registrar` (also `python -m service`): serve, names, sync.

A configuration error exits with status 2 and one line naming the option, before anything starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence

from service import redact
from service.config import ConfigError, add_serve_options, config_from_args, secret_values
from service.model import DEFAULT_NAME_OVERRIDE, App, NameOverride, Naming
from service.naming import dns_names, service_identity
from service.option_checks import choice

DESCRIPTION = """\
Registers each Marathon task's Weave overlay IP and container port in the Consul agent on the
task's host, named after the Marathon app id (/web/customer1/site1 -> service "web" with tags
"customer1" and "site1.customer1", so site1.customer1.web.service.consul resolves), with health
checks on the task's mapped host ports."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marathon-consul-registrar", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the registrar (Marathon events -> Docker -> Consul)",
                           description="Run the registrar. Every option also reads MCR_<OPTION> from the env.")
    add_serve_options(serve)
    names = sub.add_parser("names", help="print the Consul name, tags and DNS names an app gets",
                           description="Print the Consul service name, tags and DNS names of a Marathon app id.")
    names.add_argument("app_id", metavar="APP_ID", help="Marathon app id, e.g. /web/customer1/site1")
    # the defaults are serve's, read from the same MCR_* env: run where the registrar runs, `names`
    # prints what it registers (checked in _names: argparse does not check a default's choice)
    names.add_argument("--naming", choices=[m.value for m in Naming], default=os.environ.get("MCR_NAMING", "dns"))
    names.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="an app label")
    names.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="an app env entry")
    names.add_argument("--datacenter", default="dc1")
    names.add_argument("--allow-name-override", choices=[m.value for m in NameOverride],
                       default=os.environ.get("MCR_ALLOW_NAME_OVERRIDE", DEFAULT_NAME_OVERRIDE.value),
                       help="as serve's option: which consul.name / SERVICE_NAME overrides are honoured")
    sync = sub.add_parser("sync", help="one resync: print the drift (--dry-run) or repair it, then exit",
                          description="Compare Marathon with Consul once. With --dry-run print the drift "
                                      "(missing / orphan / drifted, per agent); without, take the cluster's "
                                      "lock as serve does and repair it.")
    add_serve_options(sync)
    sync.add_argument("--dry-run", action="store_true", help="only print what a resync would repair")
    return parser


def _pairs(option: str, items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--{option}: {item!r} is not KEY=VALUE")
        out[key] = value
    return out


def _names(args: argparse.Namespace) -> int:
    app_id = "/" + args.app_id.strip("/")
    if not app_id.strip("/ "):  # Marathon has no such app; "app" (the fallback name) would mislead
        raise ConfigError(f"APP_ID: {args.app_id!r} is not a Marathon app id (e.g. /web/customer1/site1)")
    app = App(id=app_id, labels=_pairs("label", args.label), env=_pairs("env", args.env))
    naming = Naming(choice("naming", args.naming, tuple(m.value for m in Naming)))
    override = NameOverride(choice("allow-name-override", args.allow_name_override,
                                   tuple(m.value for m in NameOverride)))
    identity = service_identity(app, 0, naming, override)
    if identity is None:
        print(f"{app_id}: not registered (opted out by label or env)")
        return 0
    for message in (*identity.refused, *identity.rewrites):
        print(f"note: {message}", file=sys.stderr)
    print(f"name: {identity.name}")
    print(f"tags: {', '.join(identity.tags) if identity.tags else '(none)'}")
    print("dns names:")
    for name in dns_names(identity, datacenter=args.datacenter):
        print(f"  {name}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "names":
            return _names(args)
        config = config_from_args(args)
    except ConfigError as exc:  # may quote a bad --marathon URL, password and all: redacted by shape
        print(f"marathon-consul-registrar: configuration error: {redact.redact(str(exc))}", file=sys.stderr)
        return 2
    redact.register(secret_values(config))
    redact.install(config.log_level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if args.command == "serve":
        from service.heap import tune_collector
        from service.runtime import serve

        tune_collector()
        asyncio.run(serve(config))
        return 0
    from service.errors import CallError
    from service.runtime import LockUnavailable, SyncStopped, sync_once

    try:
        drift = asyncio.run(sync_once(config, dry_run=args.dry_run))
    # Marathon refused or could not answer (e.g. no frameworkId), or the lock is another's: one line, no traceback
    except (CallError, LockUnavailable) as exc:
        print(f"marathon-consul-registrar: sync: {redact.redact(str(exc))}", file=sys.stderr)
        return 1
    except SyncStopped as exc:  # it cleaned up on its way out; the status a SIGTERM'd process has
        print(f"marathon-consul-registrar: sync: {exc}", file=sys.stderr)
        return 128 + signal.SIGTERM
    print(redact.redact(json.dumps(drift.as_dict(), indent=2, sort_keys=True)))
    return 1 if drift.unreachable else 0


if __name__ == "__main__":
    sys.exit(main())
