"""The one back-off policy (service/backoff.py)."""

from __future__ import annotations

import pytest
from tenacity import AsyncRetrying, RetryError, stop_after_attempt

from service.backoff import Backoff


def top(_lo: float, hi: float) -> float:
    return hi


@pytest.mark.parametrize("attempt,ceiling", [(0, 0.5), (1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (10_000, 3.0)])
def test_ceiling_doubles_up_to_the_cap(attempt: int, ceiling: float) -> None:
    assert Backoff(initial=0.5, cap=3.0).ceiling(attempt) == ceiling


def test_delay_is_full_jitter_below_the_ceiling() -> None:
    draws: list[tuple[float, float]] = []
    b = Backoff(initial=1.0, cap=10.0, uniform=lambda lo, hi: draws.append((lo, hi)) or 0.25)
    assert b.delay(3) == 0.25 and draws == [(0.0, 4.0)]
    real = Backoff(initial=1.0, cap=10.0)
    assert all(0.0 <= real.delay(5) <= 10.0 for _ in range(200))


@pytest.mark.parametrize("max_attempts,failures,exhausted", [(None, 10**6, False), (3, 2, False), (3, 3, True)])
def test_exhausted(max_attempts: int | None, failures: int, exhausted: bool) -> None:
    assert Backoff(initial=1.0, cap=1.0, max_attempts=max_attempts).exhausted(failures) is exhausted


@pytest.mark.parametrize("kw", [{"initial": 0.0, "cap": 1.0}, {"initial": 2.0, "cap": 1.0},
                                {"initial": 1.0, "cap": 1.0, "max_attempts": 0}])
def test_nonsense_is_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("offset,waits", [(0, [0.1, 0.2, 0.4]), (1, [0.2, 0.4, 0.8])])
async def test_tenacity_wait_adapter(offset: int, waits: list[float]) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    b = Backoff(initial=0.1, cap=5.0, uniform=top)
    with pytest.raises(RetryError):
        async for attempt in AsyncRetrying(stop=stop_after_attempt(4), wait=b.tenacity_wait(offset=offset),
                                           sleep=sleep):
            with attempt:
                raise OSError("down")
    assert slept == pytest.approx(waits)
