"""The reconciler's settings: the TTL floor has one source (desired.TTL_FLOOR_SECONDS)."""

from __future__ import annotations

from service.desired import TTL_FLOOR_SECONDS
from service.reconcile.settings import ReconcileSettings, ttl_floor_for


def test_the_ttl_floor_outlives_three_resync_intervals_and_never_goes_below_the_floor() -> None:
    assert ReconcileSettings().ttl_floor_seconds == TTL_FLOOR_SECONDS == ttl_floor_for(1.0)
    assert ttl_floor_for(60.0) == TTL_FLOOR_SECONDS
    assert ttl_floor_for(300.0) == 900


def test_the_name_guard_has_one_operator_default() -> None:
    """`serve` (config), `names` (cli) and the reconciler's settings default to the same guard."""
    from service.cli import _parser
    from service.config import Config, _defaults
    from service.model import DEFAULT_NAME_OVERRIDE

    assert ReconcileSettings().name_override is DEFAULT_NAME_OVERRIDE
    assert Config.__dataclass_fields__["allow_name_override"].default is DEFAULT_NAME_OVERRIDE
    assert _defaults({})["allow-name-override"] == DEFAULT_NAME_OVERRIDE.value
    assert _parser().parse_args(["names", "/a/b"]).allow_name_override == DEFAULT_NAME_OVERRIDE.value
