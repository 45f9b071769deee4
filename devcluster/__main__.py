"""`python -m devcluster up|down`: bring the whole test world up, or stop exactly what we started.

Slaves are real dockerd processes (devcluster/slaves-up.sh, verified in the reference); the two
simulators run as background processes whose pids go to RUN_DIR. `up` twice is harmless: a part
whose pid file names a live process is left alone.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from devcluster.topology import (
    ALL_SLAVES,
    APP_MARATHON_HOSTS,
    CNI_RANGE,
    CNI_SLAVE,
    CONSUL_DNS,
    CONSUL_HTTP_PORT,
    MARATHON_LISTEN,
    PROXY_SLAVE,
    RUN_DIR,
    SLAVES,
    STATE_DIR,
    TLS_MARATHON_CREDENTIALS,
    TLS_MARK,
    WEAVE_PROXY_DIR,
    WEAVE_PROXY_PORT,
    WEAVE_PROXY_RANGE,
    marathon_url,
    world_tls_dir,
)

HERE = Path(__file__).resolve().parent


def _alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def _wait_tcp(host: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"devcluster: nothing listening on {host}:{port} after {timeout:.0f} s")


def _start(name: str, argv: list[str], wait_for: tuple[str, int]) -> None:
    pid_file = RUN_DIR / f"{name}.pid"
    if _alive(pid_file):
        return
    log = open(RUN_DIR / f"{name}.log", "ab")  # handed to the child, closed by it
    proc = subprocess.Popen(
        [sys.executable, "-m", *argv], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, cwd=HERE.parent,
    )
    pid_file.write_text(str(proc.pid))
    try:
        _wait_tcp(*wait_for)
    except SystemExit:
        print((RUN_DIR / f"{name}.log").read_text()[-3000:], file=sys.stderr)
        raise


def _stop(name: str, timeout: float = 10.0) -> None:
    pid_file = RUN_DIR / f"{name}.pid"
    pid = _alive(pid_file)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


TLS_DIR = RUN_DIR / "tls"


def _any_part_alive() -> bool:
    """Whether a part of the world runs (its pid file names a live process): a simulator or a dockerd."""
    pid_files = [RUN_DIR / f"{name}.pid" for name in ("marathon-sim", "consul-sim", "weave-proxy")]
    pid_files += [STATE_DIR / f"s{i}" / "pid" for i in range(1, len(SLAVES) + 1)]
    pid_files.append(Path(CNI_SLAVE.docker_socket).parent / "pid")
    return any(_alive(p) for p in pid_files)


def consul_sim_argv(tls_dir: Path | None = None) -> list[str]:
    # the write log: who wrote what when (bench.failover's and tests/e2e's overlap check of two writers;
    # tests tell "kept" from "written again" by it)
    argv = ["devcluster.consul_sim", "--registration-log"]
    for s in ALL_SLAVES:
        argv += ["--agent", f"{s.host}:{CONSUL_HTTP_PORT}={s.name}"]
    if tls_dir is not None:  # HTTPS agents that require the registrar's client certificate
        argv += ["--tls-cert", str(tls_dir / "consul.pem"), "--tls-key", str(tls_dir / "consul.key"),
                 "--tls-client-ca", str(tls_dir / "ca.pem")]
    return [*argv, "--dns", f"{CONSUL_DNS[0]}:{CONSUL_DNS[1]}"]


def marathon_slave_args() -> list[str]:
    """The Marathon simulator's `--slave` options for the world's slaves (the proxy slave's `/w`; the
    CNI slave runs the Mesos containerizer's tasks through its private runtime)."""
    argv = []
    for s in ALL_SLAVES:
        extra = f"+weave-proxy={WEAVE_PROXY_DIR}" if s.layout == "proxy" else ""
        extra += "+mesos" if s.containerizer == "mesos" else ""
        argv += ["--slave", f"{s.host}=unix://{s.docker_socket}:{s.overlay_network}{extra}"]
    return argv


def marathon_sim_argv(version: str, listen: tuple[str, int] = MARATHON_LISTEN,
                      tls_dir: Path | None = None) -> list[str]:
    argv = ["devcluster.marathon_sim", "--listen", f"{listen[0]}:{listen[1]}", "--marathon-version", version,
            # deploy/marathon.json names Marathon as a node resolves it through Consul DNS in a cluster
            "--extra-host", f"marathon.service.consul:{listen[0]}"]
    argv += marathon_slave_args()
    if tls_dir is not None:  # HTTPS with basic auth
        argv += ["--tls-cert", str(tls_dir / "marathon.pem"), "--tls-key", str(tls_dir / "marathon.key"),
                 "--http-credentials", TLS_MARATHON_CREDENTIALS]
    return argv


def tls_registrar_options(tls_dir: Path, *, marathon: bool = True) -> list[str]:
    """The registrar's options for the TLS world (what `up --tls` prints); without `marathon`, all
    but the --marathon URL (for a caller that names its own Marathon, still one of this CA's)."""
    url = ["--marathon", marathon_url(tls=True)]
    return [*(url if marathon else []), "--marathon-cacert", str(tls_dir / "ca.pem"),
            "--docker", "tcp://{host}:2376", "--docker-tls", "verify",
            "--docker-cert-path", str(tls_dir / "docker/{host}"),
            "--consul-http-ssl", "true", "--consul-cacert", str(tls_dir / "ca.pem"),
            "--consul-client-cert", str(tls_dir / "client.pem"), "--consul-client-key", str(tls_dir / "client.key")]


def world_registrar_options() -> list[str]:
    """The registrar's options the running world needs besides --marathon: in the TLS world, the CA
    and client certificates for Docker, Consul and Marathon; none in the plain world."""
    tls_dir = world_tls_dir()
    return tls_registrar_options(tls_dir, marathon=False) if tls_dir else []


TLS_MOUNT = "/etc/marathon-consul-registrar/tls"  # where an app of the registrar finds the certificates


def as_tls_app(app: dict[str, Any], tls_dir: Path) -> dict[str, Any]:
    """deploy/marathon.json as an operator of the TLS world deploys it: the certificate directory
    mounted read-only (the registrar's keys are its image user's, devcluster/pki.py), Marathon over
    HTTPS with basic auth, and the TLS settings in env under Docker's and Consul's own names."""
    app = copy.deepcopy(app)
    app["container"]["volumes"] = [{"containerPath": TLS_MOUNT, "hostPath": str(tls_dir), "mode": "RO"}]
    app["env"].update({
        "MCR_MARATHON": app["env"]["MCR_MARATHON"].replace("http://", f"https://{TLS_MARATHON_CREDENTIALS}@"),
        "MCR_MARATHON_CACERT": f"{TLS_MOUNT}/ca.pem",
        "MCR_DOCKER": "tcp://{host}:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": f"{TLS_MOUNT}/docker/{{host}}",
        "CONSUL_HTTP_SSL": "true", "CONSUL_CACERT": f"{TLS_MOUNT}/ca.pem",
        "CONSUL_CLIENT_CERT": f"{TLS_MOUNT}/client.pem", "CONSUL_CLIENT_KEY": f"{TLS_MOUNT}/client.key",
    })
    return app


def weave_proxy_argv(tls_dir: Path | None = None) -> list[str]:
    argv = ["devcluster.weave_proxy_sim", "--docker", PROXY_SLAVE.docker_local_url,
            "--listen", f"{PROXY_SLAVE.host}:{WEAVE_PROXY_PORT}", "--range", WEAVE_PROXY_RANGE]
    if tls_dir is not None:  # as `weave launch-proxy --tlsverify ...` with the slave's dockerd certificate
        h = PROXY_SLAVE.host
        argv += ["--tlsverify", "--tlscacert", str(tls_dir / "ca.pem"),
                 "--tlscert", str(tls_dir / f"dockerd-{h}.pem"), "--tlskey", str(tls_dir / f"dockerd-{h}.key")]
    return argv


def up(marathon_version: str, tls: bool = False) -> None:
    """Start the world; with `tls`, every slave's dockerd speaks TLS only on its TCP port (2376,
    --tlsverify), the Consul agents HTTPS with client certificates required, Marathon HTTPS with
    basic auth, all with certificates from a CA made now (devcluster/pki.py). The slaves' unix
    sockets stay (the Marathon simulator and the tests use them, as a Mesos slave uses its local one)."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    running_tls = bool(world_tls_dir())
    if _alive(RUN_DIR / "marathon-sim.pid") and running_tls != tls:
        raise SystemExit(f"devcluster: the world is up {'with' if running_tls else 'without'} TLS; "
                         f"`python -m devcluster down` first, then `up{' --tls' if tls else ''}`")
    tls_dir = None
    env = dict(os.environ)
    if tls:
        from devcluster.pki import make_world_pki
        tls_dir = TLS_DIR
        if not _any_part_alive():  # a new CA for each world: nothing stale, and no certificate outlives 30 days
            shutil.rmtree(tls_dir, ignore_errors=True)
            make_world_pki(tls_dir, slaves=[s.host for s in SLAVES], agents=[s.host for s in ALL_SLAVES],
                           marathon_host=MARATHON_LISTEN[0], marathon_extra_hosts=APP_MARATHON_HOSTS.values())
        env["DEVCLUSTER_TLS_DIR"] = str(tls_dir)
        TLS_MARK.write_text(f"{tls_dir}\n")
    else:
        TLS_MARK.unlink(missing_ok=True)
    subprocess.run(["bash", str(HERE / "slaves-up.sh")], check=True, stdout=subprocess.DEVNULL, env=env)
    _start("weave-proxy", weave_proxy_argv(tls_dir), (PROXY_SLAVE.host, WEAVE_PROXY_PORT))
    _start("consul-sim", consul_sim_argv(tls_dir), (SLAVES[0].host, CONSUL_HTTP_PORT))
    _start("marathon-sim", marathon_sim_argv(marathon_version, tls_dir=tls_dir), MARATHON_LISTEN)
    print("test world is up" + (" with TLS" if tls_dir else ""))
    if tls_dir is not None:
        print(f"  certificates: {tls_dir}; the slaves' Docker APIs: tcp://<host>:2376 (TLS, client certificate)")
        print("  registrar: python -m service serve " + " ".join(tls_registrar_options(tls_dir)))
    for s in SLAVES:
        docker = s.docker_url + (" (TLS)" if tls_dir else "")
        print(f"  {s.name}: host {s.host}, Weave layout '{s.layout}', docker {docker}, consul agent {s.consul_url}"
              + (f", Weave proxy (--rewrite-inspect) {s.weave_proxy_url}" if s.weave_proxy_url else ""))
    c = CNI_SLAVE
    print(f"  {c.name}: host {c.host}, Weave layout 'cni' (Mesos containerizer: container.type MESOS apps and "
          f"pods, no Docker API), overlay range {CNI_RANGE}, consul agent {c.consul_url}")
    print(f"  marathon simulator {marathon_version}: {marathon_url()}")
    print(f"  consul DNS: dig @{CONSUL_DNS[0]} -p {CONSUL_DNS[1]} web.service.consul")
    print(f"  logs and pid files: {RUN_DIR}")


def down() -> None:
    _stop("registrar")  # the demo's, if it ran
    _stop("marathon-sim")
    _stop("consul-sim")
    _stop("weave-proxy")
    subprocess.run(["bash", str(HERE / "slaves-down.sh")], check=False, stdout=subprocess.DEVNULL)
    TLS_MARK.unlink(missing_ok=True)
    print("test world is down")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devcluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start slaves, Consul simulator and Marathon simulator")
    p_up.add_argument("--marathon-version", choices=["1.4", "1.10"], default="1.10")
    p_up.add_argument("--tls", action="store_true",
                      help="every slave's dockerd with --tlsverify on 2376, Consul agents over HTTPS with client "
                           "certificates, Marathon over HTTPS with basic auth (certificates from a throw-away CA)")
    sub.add_parser("down", help="stop everything `up` started and remove its containers")
    args = parser.parse_args()
    if args.command == "up":
        up(args.marathon_version, tls=args.tls)
    else:
        down()


if __name__ == "__main__":
    main()
