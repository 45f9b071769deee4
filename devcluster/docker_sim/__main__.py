"""`python -m devcluster.docker_sim --listen HOST:PORT [--listen ...]`: serve simulated engines until
SIGTERM/SIGINT (one simulated slave per address)."""

from __future__ import annotations

import argparse
import asyncio
import signal

from devcluster.docker_sim.server import start, stop


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


async def _serve(listens: list[tuple[str, int]], list_cost_us: float, result_cost_us: float,
                 rewrite_inspect: bool = False) -> None:
    running = await start(listens, list_cost_us=list_cost_us, result_cost_us=result_cost_us,
                          rewrite_inspect=rewrite_inspect)
    for r in running:
        print(f"docker_sim: slave engine on tcp://{r.host}:{r.port}", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    try:
        await done.wait()
    finally:
        await stop(running)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m devcluster.docker_sim", description=__doc__)
    ap.add_argument("--listen", type=_listen, action="append", required=True,
                    help="HOST:PORT of one simulated slave's engine (repeat for more slaves)")
    ap.add_argument("--list-cost-per-container-us", type=float, default=0.0, metavar="N",
                    help="delay each listing by N microseconds per container the engine holds "
                         "(models dockerd's scan; default 0; the test world's 20.10 engine: ~45)")
    ap.add_argument("--list-cost-per-result-us", type=float, default=0.0, metavar="N",
                    help="and by N microseconds per container it returns (rendering; default 0; "
                         "the test world's engine: ~150)")
    ap.add_argument("--rewrite-inspect", action="store_true",
                    help="answer inspects of attached Weave-proxied containers as Weave's proxy with "
                         "--rewrite-inspect does (top-level NetworkSettings.IPAddress = the Weave IP)")
    args = ap.parse_args(argv)
    asyncio.run(_serve(args.listen, args.list_cost_per_container_us, args.list_cost_per_result_us,
                       args.rewrite_inspect))


if __name__ == "__main__":
    main()
