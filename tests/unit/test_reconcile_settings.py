"""The reconciler's settings: the TTL floor has one source (desired.TTL_FLOOR_SECONDS)."""

from __future__ import annotations

from service.desired import TTL_FLOOR_SECONDS
from service.reconcile.settings import ReconcileSettings, ttl_floor_for


def test_the_ttl_floor_outlives_three_resync_intervals_and_never_goes_below_the_floor() -> None:
    assert ReconcileSettings().ttl_floor_seconds == TTL_FLOOR_SECONDS == ttl_floor_for(1.0)
    assert ttl_floor_for(60.0) == TTL_FLOOR_SECONDS
    assert ttl_floor_for(300.0) == 900
