"""The Weave proxy stand-in's pure parts: `WEAVE_CIDR` as the proxy reads it (reference weave.md §1.2),
which containers it attaches (§1.3), and `--rewrite-inspect`'s three keys (§3)."""

from __future__ import annotations

from typing import Any

import pytest

from devcluster.weave_proxy_sim import Allocator, Attached, WeaveProxy, proxied


@pytest.mark.parametrize(("weave_cidr", "expected"), [
    (None, [("10.32.3.1", 12)]),
    ("", [("10.32.3.1", 12)]),
    ("net:default", [("10.32.3.1", 12)]),
    ("net:10.40.0.0/24", [("10.40.0.1", 24)]),
    ("ip:10.32.9.9/12", [("10.32.9.9", 12)]),
    ("10.32.9.9/12 net:default", [("10.32.9.9", 12), ("10.32.3.1", 12)]),
    ("none", None),
])
def test_weave_cidr_is_read_as_the_proxy_reads_it(weave_cidr: str | None, expected: Any) -> None:
    assert Allocator("10.32.3.0/24").addresses("c1", weave_cidr) == expected


def test_addresses_are_unique_kept_over_a_restart_and_freed_on_destroy() -> None:
    alloc = Allocator("10.32.3.0/24")
    assert alloc.addresses("a", None) == [("10.32.3.1", 12)]
    assert alloc.addresses("b", None) == [("10.32.3.2", 12)]
    assert alloc.addresses("a", None) == [("10.32.3.1", 12)], "a restart keeps the address"
    alloc.free("a")
    assert alloc.addresses("c", None) == [("10.32.3.1", 12)]


def _info(entrypoint: list[str] | None, mode: str = "default", running: bool = True) -> dict[str, Any]:
    return {"Config": {"Entrypoint": entrypoint}, "HostConfig": {"NetworkMode": mode}, "State": {"Running": running}}


def test_only_running_containers_created_through_the_proxy_off_the_hosts_network_are_attached() -> None:
    assert proxied(_info(["/w/w", "/bin/sh"]))
    assert not proxied(_info(["/bin/sh"]))
    assert not proxied(_info(None))
    assert not proxied(_info(["/w/w"], running=False))
    assert not proxied(_info(["/w/w"], mode="host"))
    assert not proxied(_info(["/w/w"], mode="container:abc"))


def test_rewrite_inspect_sets_three_keys_and_leaves_networks_alone() -> None:
    proxy = WeaveProxy.__new__(WeaveProxy)
    proxy.attached = {"c1": Attached("10.32.3.7", 12, "aa:bb:cc:dd:ee:ff")}
    bridge = {"IPAddress": "172.17.0.2", "Gateway": "172.17.0.1"}
    info = {"Id": "c1", "NetworkSettings": {"IPAddress": "172.17.0.2", "IPPrefixLen": 16, "Gateway": "172.17.0.1",
                                            "Networks": {"bridge": dict(bridge)}}}
    proxy.rewrite(info)
    settings = info["NetworkSettings"]
    assert (settings["IPAddress"], settings["IPPrefixLen"], settings["MacAddress"]) == ("10.32.3.7", 12,
                                                                                        "aa:bb:cc:dd:ee:ff")
    assert settings["Gateway"] == "172.17.0.1" and settings["Networks"] == {"bridge": bridge}
    not_attached = {"Id": "c2", "NetworkSettings": {"IPAddress": "172.17.0.3"}}
    proxy.rewrite(not_attached)
    assert not_attached["NetworkSettings"] == {"IPAddress": "172.17.0.3"}
