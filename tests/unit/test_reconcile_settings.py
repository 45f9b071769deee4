"""The reconciler's settings: the TTL floor has one source (desired.TTL_FLOOR_SECONDS)."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from service.desired import TTL_FLOOR_SECONDS, RegistrationPolicy
from service.model import AddressMode, HealthCheckMode, NameOverride, Naming
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
    assert RegistrationPolicy().name_override is DEFAULT_NAME_OVERRIDE  # desired_registrations' own
    assert Config.__dataclass_fields__["allow_name_override"].default is DEFAULT_NAME_OVERRIDE
    assert _defaults({})["allow-name-override"] == DEFAULT_NAME_OVERRIDE.value
    assert _parser().parse_args(["names", "/a/b"]).allow_name_override == DEFAULT_NAME_OVERRIDE.value


def test_the_registration_policy_is_built_once_from_the_settings_and_frozen() -> None:
    """The eight options that decide every registration reach `desired_registrations` as one
    frozen value made when the settings are, not one by one at every call."""
    cidrs = (ipaddress.ip_network("10.40.0.0/16"),)
    settings = ReconcileSettings(naming=Naming.FLAT, address_mode=AddressMode.HOST, networks=("w",),
                                 overlay_cidrs=cidrs, name_override=NameOverride.NONE,
                                 health_checks="both", ttl_floor_seconds=600, cluster_id="c1")  # type: ignore[arg-type]
    assert settings.policy == RegistrationPolicy(
        naming=Naming.FLAT, address_mode=AddressMode.HOST, networks=("w",), overlay_cidrs=cidrs,
        name_override=NameOverride.NONE, health_checks=HealthCheckMode.BOTH, ttl_floor_seconds=600, cluster_id="c1")
    assert settings.policy is settings.policy
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.policy.cluster_id = "c2"  # type: ignore[misc]
    with pytest.raises(ValueError, match="health_checks must be one of consul, marathon, both"):
        RegistrationPolicy(health_checks="nagios")  # type: ignore[arg-type]
