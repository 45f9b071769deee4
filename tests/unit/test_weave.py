"""Weave-proxied containers and --overlay-cidr, without I/O: the parsers of what the Engine API answers
(reference/weave.md §2.3, §3, §6), the overlay-address rule (docs/architecture.md §6.2) and where desired.py puts
the task (issue 12)."""

from __future__ import annotations

import base64
import io
import ipaddress
import tarfile

import pytest

from devcluster.docker_sim import templates as t
from service.config import ConfigError
from service.desired import RegistrationPolicy, desired_registrations
from service.docker.weave_proxy import (
    _newer,
    demux_stream,
    path_stat,
    rewritten_ip,
    tar_single_file,
    weave_hosts_ips,
    weave_proxied_entry,
    weave_proxied_inspect,
)
from service.model import (
    DEFAULT_OVERLAY_CIDRS,
    AddressMode,
    App,
    Container,
    Naming,
    PortMapping,
    Registration,
    Skip,
    Task,
)
from tests.registrar_fixtures import run_cli
from tests.unit.test_config import parse

CIDRS = DEFAULT_OVERLAY_CIDRS
NETWORKS = ("weave", "bridge")
TID = "web.1b4c6a2e-5f3d-11eb-8a3e-0242ac110002"
HOST = "127.0.0.2"
CID = "0123456789abcdef" * 4

# The exact v1.9.8 block of reference/weave.md §2.3 (361 bytes)
BLOCK_198 = t.weave_hosts(["10.32.0.1"], "c1.weave.local")


# ---- /etc/hosts ---------------------------------------------------------------------------------


def test_block_is_the_reference_bytes() -> None:
    assert len(BLOCK_198.encode()) == 361
    assert BLOCK_198.splitlines()[:3] == ["# created by Weave - BEGIN", "# container hostname",
                                          "10.32.0.1    c1.weave.local c1"]


@pytest.mark.parametrize(("text", "ips"), [
    pytest.param(BLOCK_198, ("10.32.0.1",), id="v1.9.8"),
    pytest.param(t.weave_hosts(["10.2.7.1", "10.2.8.1", "10.3.9.1"], "c1.weave.local"),
                 ("10.2.7.1", "10.2.8.1", "10.3.9.1"), id="several-cidrs-in-WEAVE_CIDR-order"),
    pytest.param(t.weave_hosts(["10.32.0.1"], "4f3c2a1b9e8d"), ("10.32.0.1",), id="no-domain"),
    pytest.param(BLOCK_198.replace("10.32.0.1    ", "10.32.0.1       "), ("10.32.0.1",), id="v2-padded-to-15"),
    pytest.param(BLOCK_198.replace("# static names added with --add-host\n",
                                   "# static names added with --add-host\n10.32.0.7     other\n"),
                 ("10.32.0.1",), id="add-host-lines-are-not-the-container"),
    pytest.param(t.docker_hosts("172.17.0.2", "4f3c2a1b9e8d"), (), id="docker-own-file-not-attached"),
    pytest.param(BLOCK_198.replace("# created by Weave - END\n", ""), (), id="no-END-write-in-progress"),
    pytest.param("", (), id="empty-never-started"),
    pytest.param("# modified by weave\n10.32.0.1\tc1\n", (), id="v1.1-format-not-read"),
])
def test_weave_hosts_ips(text: str, ips: tuple[str, ...]) -> None:
    assert weave_hosts_ips(text) == ips


def _go_tar(name: str, data: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info.tobuf(format=tarfile.USTAR_FORMAT) + data + b"\0" * (-len(data) % 512) + b"\0" * 1024


def test_tar_single_file_reads_the_one_entry() -> None:
    body = _go_tar("hosts", BLOCK_198.encode())
    assert len(body) == 2048  # as the 20.10 engine answers a 361-byte file (reference §6.1)
    assert tar_single_file(body) == BLOCK_198


@pytest.mark.parametrize("body", [b"", b"not a tar at all" * 64, io.BytesIO().getvalue() + b"\0" * 1024])
def test_tar_single_file_rejects_what_is_not_one_file(body: bytes) -> None:
    with pytest.raises((tarfile.TarError, ValueError)):
        tar_single_file(body)


def test_path_stat_header() -> None:
    raw = "eyJuYW1lIjoiaG9zdHMiLCJzaXplIjozOTcsIm1vZGUiOjQyMCwibXRpbWUiOiIyMDI2LTEyLTA0VDE2OjA2OjA1LjEwMzMwMjI2NloiLCJsaW5rVGFyZ2V0IjoiIn0="  # noqa: E501  measured on slave 1
    assert path_stat({"X-Docker-Container-Path-Stat": raw}) == {
        "name": "hosts", "size": 397, "mode": 420, "mtime": "2026-12-04T16:06:05.103302266Z", "linkTarget": ""}
    assert path_stat({}) is None
    assert path_stat({"X-Docker-Container-Path-Stat": base64.b64encode(b"[1]").decode()}) is None
    assert path_stat({"X-Docker-Container-Path-Stat": "%%%"}) is None


@pytest.mark.parametrize(("mtime", "started", "newer"), [
    ("2026-12-04T16:06:05.103302266Z", "2026-12-04T16:06:05.108530409Z", False),  # Docker's file (measured)
    ("2026-12-04T16:06:05.9Z", "2026-12-04T16:06:05.108530409Z", True),  # Go trims the fraction's zeros
    ("2026-12-04T16:06:05.1Z", "2026-12-04T16:06:05.108530409Z", False),
    ("2026-12-04T16:06:06Z", "2026-12-04T16:06:05.999999999Z", True),
    ("2026-12-04T16:06:05.5Z", "2026-12-04T16:06:05.5Z", False),
    ("2026-12-04T16:06:05.5+01:00", "2026-12-04T16:06:05.1Z", True),  # unreadable: GET it
    (None, "2026-12-04T16:06:05.1Z", True),
    ("2026-12-04T16:06:05.1Z", "0001-01-01T00:00:00Z", True),
])
def test_hosts_newer_than_start(mtime: object, started: object, newer: bool) -> None:
    assert _newer(mtime, started) is newer


# ---- exec stream ------------------------------------------------------------------------------


def test_demux_measured_frames() -> None:
    # both measured on slave 1 (20.10.24): ethwe attached, and not yet
    ok = bytes.fromhex("0100000000000060") + (b"3: ethwe    inet 10.32.9.9/12 scope global ethwe\\       "
                                              b"valid_lft forever preferred_lft forever\n")
    assert demux_stream(ok) == (ok[8:], b"")
    missing = bytes.fromhex("020000000000001e") + b"ip: can't find device 'ethwe'\n"
    assert demux_stream(missing) == (b"", b"ip: can't find device 'ethwe'\n")
    assert demux_stream(ok + missing + ok) == (ok[8:] * 2, missing[8:])
    assert demux_stream(b"") == (b"", b"")


@pytest.mark.parametrize("raw", [b"\x01\x00\x00", bytes.fromhex("0100000000000010") + b"short",
                                 b"3: ethwe    inet 10.32.9.9/12 (a TTY stream has no frames)"])
def test_demux_rejects_broken_streams(raw: bytes) -> None:
    with pytest.raises(ValueError):
        demux_stream(raw)


# ---- markers and --rewrite-inspect ----------------------------------------------------------------


@pytest.mark.parametrize(("entry", "proxied"), [
    ({"Command": "/w/w /bin/httpd -f -p 80", "Mounts": []}, True),
    ({"Command": "/w/w", "Mounts": None}, True),
    ({"Command": "/bin/httpd -f -p 80", "Mounts": [{"Destination": "/w", "Type": "bind"}]}, True),
    ({"Command": "/bin/httpd -f -p 80", "Mounts": [{"Destination": "/data"}]}, False),
    ({"Command": "/w/wait-for-it /bin/sh"}, False),
    ({}, False),
])
def test_proxied_from_the_list_entry(entry: dict, proxied: bool) -> None:
    assert weave_proxied_entry(entry) is proxied


def _inspect(*, entrypoint=None, binds=None, mounts=None, env=()) -> dict:
    return {"Config": {"Entrypoint": entrypoint, "Env": list(env)}, "HostConfig": {"Binds": binds},
            "Mounts": mounts or []}


@pytest.mark.parametrize(("info", "proxied"), [
    pytest.param(_inspect(entrypoint=["/w/w"]), True, id="entrypoint"),
    pytest.param(_inspect(binds=["/var/lib/docker/volumes/x/_data:/w:ro"]), True, id="bind"),
    pytest.param(_inspect(mounts=[{"Destination": "/w"}]), True, id="mount"),
    pytest.param(_inspect(env=["WEAVE_CIDR=net:10.2.7.0/24"]), True, id="weave-cidr-env"),
    pytest.param(_inspect(env=["WEAVE_CIDR="]), True, id="blank-weave-cidr-is-default-allocation"),
    pytest.param(_inspect(entrypoint=["/w/w"], env=["WEAVE_CIDR=none"]), False, id="none-is-left-alone"),
    pytest.param(_inspect(env=["WEAVE_CIDR= none"]), True, id="only-exactly-none"),
    pytest.param(_inspect(env=["WEAVE_CIDR=net:default", "WEAVE_CIDR=none"]), True, id="first-entry-counts"),
    pytest.param(_inspect(entrypoint=["/docker-entrypoint.sh"], binds=["/srv/w:/www"]), False, id="plain"),
])
def test_proxied_from_the_inspect(info: dict, proxied: bool) -> None:
    assert weave_proxied_inspect(info) is proxied


def _settings(top: str, networks: dict | None) -> dict:
    return {"NetworkSettings": {"IPAddress": top, "Networks": networks}}


@pytest.mark.parametrize(("info", "ip"), [
    pytest.param(_settings("10.32.0.1", {"bridge": {"IPAddress": "172.17.0.2"}}), "10.32.0.1", id="rewritten"),
    pytest.param(_settings("172.17.0.2", {"bridge": {"IPAddress": "172.17.0.2"}}), None, id="docker-own"),
    pytest.param(_settings("", {"weave": {"IPAddress": "10.32.2.1"}}), None, id="user-network-empty-top"),
    pytest.param(_settings("10.32.0.1", {"none": {"IPAddress": ""}}), "10.32.0.1", id="net-none-rewritten"),
    pytest.param(_settings("172.17.0.2", None), None, id="no-networks-map-cannot-tell"),
])
def test_rewritten_ip(info: dict, ip: str | None) -> None:
    assert rewritten_ip(info) == ip


# ---- the overlay address ---------------------------------------------------------------------------


def container(**kw) -> Container:
    return Container(id=CID, task_id=TID, **kw)


@pytest.mark.parametrize(("c", "networks", "expected"), [
    pytest.param(container(network_ips={"weave": "10.32.2.1"}), NETWORKS, ("10.32.2.1", ""), id="plugin-layout"),
    pytest.param(container(network_ips={"bridge": "10.32.1.7"}), NETWORKS, ("10.32.1.7", ""), id="bridge-is-weave"),
    pytest.param(container(network_ips={"bridge": "172.17.0.2"}), NETWORKS, (None, "address-outside-overlay"),
                 id="docker0-is-not-overlay"),
    pytest.param(container(network_ips={"weave": "10.32.2.1", "bridge": "172.31.0.2"}), ("bridge", "weave"),
                 ("10.32.2.1", ""), id="outside-one-skipped-for-the-next-network"),
    pytest.param(container(network_ips={"other": "10.32.0.9"}), NETWORKS, (None, "no-overlay-ip"),
                 id="only-networks-count"),
    pytest.param(container(network_ips={"bridge": "172.17.0.2"}, weave_proxied=True), NETWORKS,
                 (None, "weave-ip-not-attached"), id="proxied-not-attached-ignores-docker0"),
    pytest.param(container(network_ips={"bridge": "10.32.1.7"}, weave_proxied=True), NETWORKS,
                 (None, "weave-ip-not-attached"), id="proxied-never-uses-networks"),
    pytest.param(container(weave_proxied=True, weave_pending="weave-lookup-failed"), NETWORKS,
                 (None, "weave-lookup-failed"), id="proxied-lookup-failed"),
    pytest.param(container(weave_proxied=True, weave_ips=("10.2.7.1", "10.40.0.3")), NETWORKS,
                 ("10.40.0.3", ""), id="first-weave-ip-inside"),
    pytest.param(container(weave_proxied=True, weave_ips=("10.2.7.1",)), NETWORKS,
                 (None, "address-outside-overlay"), id="weave-ip-outside"),
])
def test_overlay_address(c: Container, networks: tuple[str, ...], expected: tuple[str | None, str]) -> None:
    assert c.overlay_address(networks, CIDRS) == expected


def test_several_overlay_cidrs() -> None:
    cidrs = (ipaddress.ip_network("10.32.0.0/12"), ipaddress.ip_network("10.2.7.0/24"))
    c = container(weave_proxied=True, weave_ips=("10.2.7.1",))
    assert c.overlay_address(NETWORKS, cidrs) == ("10.2.7.1", "")


# ---- desired.py --------------------------------------------------------------------------------------

APP = App(id="/web", port_mappings=(PortMapping(80, 0),))
TASK = Task(id=TID, app_id="/web", host=HOST, ports=(31000,))


def run(c: Container, mode: AddressMode) -> list[Registration] | Skip:
    return desired_registrations(APP, TASK, c, RegistrationPolicy(naming=Naming.DNS, address_mode=mode,
                                                                  networks=NETWORKS))


def address(result: list[Registration] | Skip) -> tuple[str, int, str]:
    assert isinstance(result, list), result
    [reg] = result
    return reg.address, reg.port, reg.meta_get("address-source")


def test_proxied_container_registers_its_weave_ip_not_docker0() -> None:
    c = container(network_ips={"bridge": "172.17.0.2"}, weave_proxied=True, weave_ips=("10.32.0.1",),
                  weave_source="etc-hosts")
    for mode in (AddressMode.AUTO, AddressMode.OVERLAY):
        assert address(run(c, mode)) == ("10.32.0.1", 80, "overlay")


@pytest.mark.parametrize("mode", [AddressMode.AUTO, AddressMode.OVERLAY])
def test_not_attached_waits_in_every_mode(mode: AddressMode) -> None:
    c = container(network_ips={"bridge": "172.17.0.2"}, weave_proxied=True)
    assert run(c, mode) == Skip(TID, "weave-ip-not-attached",
                                "container 0123456789ab is Weave-proxied and its Weave IP is not attached yet", True)


def test_lookup_failure_waits() -> None:
    c = container(weave_proxied=True, weave_pending="weave-lookup-failed")
    assert run(c, AddressMode.AUTO) == Skip(
        TID, "weave-lookup-failed", "container 0123456789ab is Weave-proxied and its Weave IP is not readable now",
        True)


def test_outside_overlay_falls_back_to_host_in_auto() -> None:
    assert address(run(container(network_ips={"bridge": "172.17.0.2"}), AddressMode.AUTO)) == (HOST, 31000, "host")


@pytest.mark.parametrize(("c", "detail"), [
    (container(network_ips={"bridge": "172.17.0.2"}),
     "container 0123456789ab has no IP on networks weave,bridge inside --overlay-cidr 10.32.0.0/12"),
    (container(weave_proxied=True, weave_ips=("10.2.7.1",)),
     "container 0123456789ab has no Weave IP inside --overlay-cidr 10.32.0.0/12"),
])
def test_outside_overlay_waits_in_overlay_mode(c: Container, detail: str) -> None:
    assert run(c, AddressMode.OVERLAY) == Skip(TID, "address-outside-overlay", detail, True)


def test_outside_overlay_without_host_port_is_a_retry_with_that_reason() -> None:
    app = App(id="/web", port_mappings=(PortMapping(80, None),))
    result = desired_registrations(app, Task(id=TID, app_id="/web", host=HOST), container(
        network_ips={"bridge": "172.17.0.2"}), RegistrationPolicy(naming=Naming.DNS, address_mode=AddressMode.AUTO,
                                                                  networks=NETWORKS))
    assert isinstance(result, Skip) and result.reason == "address-outside-overlay" and result.retry


# ---- options ------------------------------------------------------------------------------------------


def test_overlay_cidr_and_exec_lookup_options() -> None:
    c = parse([])
    assert c.overlay_cidrs == (ipaddress.ip_network("10.32.0.0/12"),) and c.weave_exec_lookup is False
    c = parse([], {"MCR_OVERLAY_CIDR": "10.32.0.0/12, 10.2.7.0/24", "MCR_WEAVE_EXEC_LOOKUP": "true"})
    assert c.overlay_cidrs == (ipaddress.ip_network("10.32.0.0/12"), ipaddress.ip_network("10.2.7.0/24"))
    assert c.weave_exec_lookup is True
    assert parse(["--weave-exec-lookup"]).weave_exec_lookup is True
    assert parse(["--weave-exec-lookup", "off"], {"MCR_WEAVE_EXEC_LOOKUP": "1"}).weave_exec_lookup is False


@pytest.mark.parametrize(("argv", "message"), [
    (["--overlay-cidr", "10.32.0.1/12"],
     "--overlay-cidr: '10.32.0.1/12' is not a CIDR (10.32.0.1/12 has host bits set)"),
    (["--overlay-cidr", "10.32.0.0/12,weave"], "--overlay-cidr: 'weave' is not a CIDR"),
    (["--overlay-cidr", " , "], "--overlay-cidr: no CIDR given"),
    (["--weave-exec-lookup", "maybe"], "--weave-exec-lookup: 'maybe' is not one of true, false"),
])
def test_bad_values_name_the_option(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(argv)
    assert str(err.value).startswith(message)


def test_cli_bad_overlay_cidr_from_env_exits_2_with_one_line() -> None:
    result = run_cli("serve", env={"MCR_OVERLAY_CIDR": "10.32.0.0/33"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "marathon-consul-registrar: configuration error: --overlay-cidr: '10.32.0.0/33' is not a CIDR "
        "('10.32.0.0/33' does not appear to be an IPv4 or IPv6 network)"]
