"""What the retry helper costs on the success path (issue 18 item 2): paired, interleaved rounds.

    python -m bench.retry_cost [-n 20000] [--rounds 15]

Three ways to make one call that succeeds, timed per call in the same process, the rounds
interleaved (A B C, A B C, ...) so that load on the machine hits all three alike:
- `bare`: `await fn()`, the floor;
- `retry`: `service.retry.retry(fn, ...)`, which makes the first attempt itself and builds
  tenacity's state only after a failure;
- `tenacity`: an `AsyncRetrying` built and run for every call (what the Marathon client did);
- `consul-loop`: the Consul call wrapper's former plain loop (timing, then the call), and
  `consul-call`: `ConsulCall` as it is (timing, the agent's Cooldown check, `retry`).
Prints the median per-call cost of each in microseconds and each one's excess over `bare`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from service.backoff import Backoff
from service.consul.call import ConsulCall
from service.metrics import Metrics
from service.retry import Stop, retry

POLICY = Backoff(initial=0.1, cap=2.0, max_attempts=4)


async def fn() -> int:
    return 1


def retryable(exc: BaseException) -> bool:
    return isinstance(exc, OSError)


async def bare(stop: Stop) -> int:
    return await fn()


async def helper(stop: Stop) -> int:
    return await retry(fn, policy=POLICY, stop=stop, retry_on=retryable)


async def tenacity_each_call(stop: Stop) -> int:
    retrying = AsyncRetrying(stop=stop_after_attempt(4), wait=POLICY.tenacity_wait(),
                             retry=retry_if_exception_type(OSError), reraise=True)
    return await retrying(fn)


CONSUL = ConsulCall("http://127.0.0.1:8500", metrics=Metrics(), attempts=3)


async def consul_loop(stop: Stop) -> int:
    """The success path of ConsulCall's former hand-written loop."""
    attempt = 1
    while True:
        try:
            return await CONSUL._timed("register", fn)
        except Exception:
            if attempt >= 3:
                raise
        attempt += 1


async def consul_call(stop: Stop) -> int:
    return await CONSUL("register", fn)


async def per_call_us(way: Callable[[Stop], Awaitable[int]], n: int, stop: Stop) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await way(stop)
    return (time.perf_counter() - started) / n * 1e6


async def main(n: int, rounds: int) -> None:
    stop = Stop()
    ways = {"bare": bare, "retry": helper, "tenacity": tenacity_each_call, "consul-loop": consul_loop,
            "consul-call": consul_call}
    results: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(rounds):
        for name, way in ways.items():
            results[name].append(await per_call_us(way, n, stop))
    floor = statistics.median(results["bare"])
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}; {rounds} rounds x {n} calls")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:11s} median {median:7.2f} us/call  (+{median - floor:6.2f} us over bare)  "
              f"min {min(values):.2f} max {max(values):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.rounds))
