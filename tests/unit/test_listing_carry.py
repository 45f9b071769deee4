"""A new container listing keeps the previous listing's objects for unchanged containers
(service/docker/lookup.py `_carry`): no second copy of 10,000 entries at a resync's peak (issue 20),
and never a stale entry or Container for a container that changed."""

from __future__ import annotations

from dataclasses import replace

from service.docker.listing import Entry
from service.docker.lookup import _carry, _Listing
from service.model import Container


def entry(n: int, state: str = "running", ip: str | None = None) -> Entry:
    return Entry(id=f"c{n:064d}", state=state, networks=(("weave", ip or f"10.32.0.{n}"),), weave=False)


def test_unchanged_containers_keep_the_previous_objects_and_changed_ones_are_read_anew() -> None:
    before = {f"t{n}": entry(n) for n in range(1, 6)}
    previous = _Listing(started=1.0, full=True, raw=dict(before))
    built = {t: Container(id=e.id, task_id=t, network_ips=dict(e.networks)) for t, e in before.items()}
    previous.built.update(built)
    fresh = {t: replace(e) for t, e in before.items()}  # equal copies, as a new listing decodes them
    fresh["t2"] = entry(2, state="exited")
    fresh["t3"] = entry(3, ip="10.32.0.99")
    fresh["t4"] = replace(entry(4), weave=True)
    del fresh["t5"]
    fresh["t6"] = entry(6)
    listing = _carry(previous, _Listing(started=2.0, full=True, raw=dict(fresh)))
    assert listing.started == 2.0 and set(listing.raw) == {"t1", "t2", "t3", "t4", "t6"}
    assert listing.raw["t1"] is before["t1"] and listing.built == {"t1": built["t1"]}
    for t in ("t2", "t3", "t4", "t6"):
        assert listing.raw[t] is fresh[t], t
    assert listing.raw == fresh


def test_a_first_listing_is_taken_as_it_is() -> None:
    raw = {"t1": entry(1)}
    listing = _carry(None, _Listing(started=1.0, full=False, raw=raw))
    assert listing.raw is raw and listing.built == {}
