"""The reconciler's knobs, validated once when built (config hands them over from the options)."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.backoff import Backoff
from service.desired import TTL_FLOOR_SECONDS, RegistrationPolicy
from service.model import (
    DEFAULT_NAME_OVERRIDE,
    DEFAULT_OVERLAY_CIDRS,
    AddressMode,
    Cidr,
    HealthCheckMode,
    NameOverride,
    Naming,
)


def ttl_floor_for(resync_interval: float) -> int:
    """A TTL mirror (a COMMAND check) is refreshed by health events and every resync: its TTL must
    outlive three resync intervals, and never less than `desired.TTL_FLOOR_SECONDS`."""
    return max(TTL_FLOOR_SECONDS, int(3 * resync_interval))


@dataclass(frozen=True)
class ReconcileSettings:
    naming: Naming = Naming.DNS
    name_override: NameOverride = DEFAULT_NAME_OVERRIDE  # --allow-name-override (service.naming)
    address_mode: AddressMode = AddressMode.AUTO
    networks: tuple[str, ...] = ("weave", "bridge")
    overlay_cidrs: tuple[Cidr, ...] = DEFAULT_OVERLAY_CIDRS  # only addresses inside count as overlay IPs
    health_checks: HealthCheckMode = HealthCheckMode.CONSUL  # which checks Consul runs itself
    ttl_floor_seconds: int = TTL_FLOOR_SECONDS  # see ttl_floor_for
    workers: int = 16
    write_concurrency: int = 64
    max_attempts: int = 8  # failed runs of one app before it is left to the next resync
    backoff_initial: float = 0.2
    backoff_max: float = 15.0
    # event-triggered reads of apps the last resync did not list: distinct apps per interval (budget.py)
    unlisted_reads_limit: int = 1000
    unlisted_reads_interval: float = 10.0
    # this Marathon cluster's identity (Meta `marathon-cluster-id`); None: every marked entry is ours
    cluster_id: str | None = None
    # the eight of these that decide every registration, as one value (made once, below)
    policy: RegistrationPolicy = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # a plain string from a caller is checked here, once, not at every desired_registrations()
        object.__setattr__(self, "health_checks", HealthCheckMode(self.health_checks))
        if self.workers < 1 or self.write_concurrency < 1:
            raise ValueError("workers and write_concurrency must be at least 1")
        object.__setattr__(self, "policy", RegistrationPolicy(
            naming=self.naming, address_mode=self.address_mode, networks=self.networks,
            overlay_cidrs=self.overlay_cidrs, name_override=self.name_override, health_checks=self.health_checks,
            ttl_floor_seconds=self.ttl_floor_seconds, cluster_id=self.cluster_id))

    @property
    def retry_policy(self) -> Backoff:
        """How a failed app run is retried through the work queue."""
        return Backoff(initial=self.backoff_initial, cap=self.backoff_max, max_attempts=self.max_attempts)
