"""Payload shapes copied from the test world's real engine (Debian docker.io 20.10.24, API 1.41).

Captured with `curl --unix-socket /var/lib/devcluster/s2.sock` from a container made like Mesos
makes one (`mesos-<uuid4>`, env + label MESOS_TASK_ID, `--network weave`, port bound on the slave
IP); same keys, same nesting, same value types, same key order (Go's encoder emits struct order).
Only identifiers, addresses and paths are substituted. Anything a caller might parse is here; what
varies with time on a real engine (`Status` "Up 5 minutes", `State.Pid`) is frozen at creation.
"""

from __future__ import annotations

from typing import Any

ENGINE_VERSION = "20.10.24+dfsg1"
API_VERSION = "1.41"
MIN_API_VERSION = "1.12"
IMAGE = "local/busybox:1"
IMAGE_ID = "sha256:92cc249e73d1fd00e33e31da9a973415f20c7dad29fc6441f74a167e34cacdcf"
COMMAND = ["/bin/httpd", "-f", "-p", "80"]
DATA_ROOT = "/var/lib/docker-sim"
OVERLAY_GATEWAY = "10.32.0.1"
OVERLAY_PREFIX_LEN = 12

# Every answer of the engine carries these (Content-Type is set per answer).
HEADERS = {
    "Api-Version": API_VERSION,
    "Docker-Experimental": "false",
    "Ostype": "linux",
    "Server": f"Docker/{ENGINE_VERSION} (linux)",
}

VERSION: dict[str, Any] = {
    "Platform": {"Name": ""},
    "Components": [
        {"Name": "Engine", "Version": ENGINE_VERSION, "Details": {
            "ApiVersion": API_VERSION, "Arch": "amd64", "BuildTime": "2026-05-07T21:09:36.000000000+00:00",
            "Experimental": "false", "GitCommit": "5d6db84", "GoVersion": "go1.19.8",
            "KernelVersion": "6.1.0-sim", "MinAPIVersion": MIN_API_VERSION, "Os": "linux"}},
        {"Name": "containerd", "Version": "1.6.20~ds1", "Details": {"GitCommit": "1.6.20~ds1-1+deb12u3"}},
        {"Name": "runc", "Version": "1.1.5+ds1", "Details": {"GitCommit": "1.1.5+ds1-1+deb12u1"}},
        {"Name": "docker-init", "Version": "0.19.0", "Details": {"GitCommit": ""}},
    ],
    "Version": ENGINE_VERSION, "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
    "GitCommit": "5d6db84", "GoVersion": "go1.19.8", "Os": "linux", "Arch": "amd64",
    "KernelVersion": "6.1.0-sim", "BuildTime": "2026-05-07T21:09:36.000000000+00:00",
}


# The resource knobs of HostConfig, all at the defaults a `docker run` without limits gets.
_HOST_CONFIG_DEFAULTS: dict[str, Any] = {
    "ConsoleSize": [0, 0], "Isolation": "", "CpuShares": 0, "Memory": 0, "NanoCpus": 0, "CgroupParent": "",
    "BlkioWeight": 0, "BlkioWeightDevice": [], "BlkioDeviceReadBps": [], "BlkioDeviceWriteBps": [],
    "BlkioDeviceReadIOps": [], "BlkioDeviceWriteIOps": [], "CpuPeriod": 0, "CpuQuota": 0,
    "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0, "CpusetCpus": "", "CpusetMems": "", "Devices": [],
    "DeviceCgroupRules": None, "DeviceRequests": None, "KernelMemory": 0, "KernelMemoryTCP": 0,
    "MemoryReservation": 0, "MemorySwap": 0, "MemorySwappiness": None, "OomKillDisable": False,
    "PidsLimit": None, "Ulimits": [], "CpuCount": 0, "CpuPercent": 0, "IOMaximumIOps": 0,
    "IOMaximumBandwidth": 0,
    "MaskedPaths": ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
    "ReadonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
}


def endpoint(network_id: str, endpoint_id: str, ip: str, mac: str, aliases: list[str] | None) -> dict[str, Any]:
    """One `NetworkSettings.Networks.<name>` entry (list: Aliases null; inspect: [short id])."""
    return {
        "IPAMConfig": None, "Links": None, "Aliases": aliases, "NetworkID": network_id,
        "EndpointID": endpoint_id, "Gateway": OVERLAY_GATEWAY if ip else "", "IPAddress": ip,
        "IPPrefixLen": OVERLAY_PREFIX_LEN if ip else 0, "IPv6Gateway": "", "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0, "MacAddress": mac, "DriverOpts": None,
    }


def list_entry(
    *, cid: str, name: str, created: int, ports: list[dict[str, Any]], labels: dict[str, str], state: str,
    status: str, network_mode: str, networks: dict[str, dict[str, Any]], entrypoint: list[str] | None = None,
    mounts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One element of `GET /containers/json` (keys as the reference §2 lists them). `Command` is the
    process's `Path` and `Args` joined, so a Weave-proxied container's starts with `/w/w`."""
    return {
        "Id": cid, "Names": [f"/{name}"], "Image": IMAGE, "ImageID": IMAGE_ID,
        "Command": " ".join([*(entrypoint or []), *COMMAND]),
        "Created": created, "Ports": ports, "Labels": labels, "State": state, "Status": status,
        "HostConfig": {"NetworkMode": network_mode}, "NetworkSettings": {"Networks": networks},
        "Mounts": mounts or [],
    }


def inspect(
    *, cid: str, name: str, created_iso: str, running: bool, pid: int, started_iso: str, network_mode: str,
    port_bindings: dict[str, Any], ports: dict[str, Any], env: list[str], labels: dict[str, str],
    networks: dict[str, dict[str, Any]], entrypoint: list[str] | None = None, binds: list[str] | None = None,
    mounts: list[dict[str, Any]] | None = None, hostname: str | None = None, domainname: str = "",
    dns: list[str] | None = None, dns_search: list[str] | None = None,
) -> dict[str, Any]:
    """`GET /containers/{id}/json`, the 20.10 shape, key for key. The optional arguments are what
    the Weave proxy changes at create (reference/weave.md §1.4, §1.5): entrypoint, `/w` bind,
    hostname/domain, DNS."""
    cdir = f"{DATA_ROOT}/containers/{cid}"
    exposed: dict[str, dict[str, Any]] = {k: {} for k in port_bindings}
    process = [*(entrypoint or []), *COMMAND]
    return {
        "Id": cid, "Created": created_iso, "Path": process[0], "Args": process[1:],
        "State": {
            "Status": "running" if running else "exited", "Running": running, "Paused": False,
            "Restarting": False, "OOMKilled": False, "Dead": False, "Pid": pid if running else 0,
            "ExitCode": 0 if running else 137, "Error": "", "StartedAt": started_iso,
            "FinishedAt": "0001-01-01T00:00:00Z",
        },
        "Image": IMAGE_ID, "ResolvConfPath": f"{cdir}/resolv.conf", "HostnamePath": f"{cdir}/hostname",
        "HostsPath": f"{cdir}/hosts", "LogPath": f"{cdir}/{cid}-json.log", "Name": f"/{name}",
        "RestartCount": 0, "Driver": "overlay2", "Platform": "linux", "MountLabel": "", "ProcessLabel": "",
        "AppArmorProfile": "", "ExecIDs": None,
        "HostConfig": {
            "Binds": binds, "ContainerIDFile": "", "LogConfig": {"Type": "json-file", "Config": {}},
            "NetworkMode": network_mode, "PortBindings": port_bindings,
            "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}, "AutoRemove": False,
            "VolumeDriver": "", "VolumesFrom": None, "CapAdd": None, "CapDrop": None,
            "CgroupnsMode": "host", "Dns": dns or [], "DnsOptions": [], "DnsSearch": dns_search or [],
            "ExtraHosts": None,
            "GroupAdd": None, "IpcMode": "private", "Cgroup": "", "Links": None, "OomScoreAdj": 0,
            "PidMode": "", "Privileged": False, "PublishAllPorts": False, "ReadonlyRootfs": False,
            "SecurityOpt": None, "UTSMode": "", "UsernsMode": "", "ShmSize": 67108864, "Runtime": "runc",
            **_HOST_CONFIG_DEFAULTS,
        },
        "GraphDriver": {"Data": {"MergedDir": f"{DATA_ROOT}/overlay2/{cid}/merged"}, "Name": "overlay2"},
        "Mounts": mounts or [],
        "Config": {
            "Hostname": hostname or cid[:12], "Domainname": domainname, "User": "", "AttachStdin": False,
            "AttachStdout": False, "AttachStderr": False, "ExposedPorts": exposed or None, "Tty": False,
            "OpenStdin": False,
            "StdinOnce": False, "Env": env, "Cmd": COMMAND, "Image": IMAGE, "Volumes": None,
            "WorkingDir": "", "Entrypoint": entrypoint, "OnBuild": None, "Labels": labels,
        },
        "NetworkSettings": {
            "Bridge": "", "SandboxID": cid[::-1], "HairpinMode": False, "LinkLocalIPv6Address": "",
            "LinkLocalIPv6PrefixLen": 0, "Ports": ports, "SandboxKey": f"{DATA_ROOT}/exec/netns/{cid[:12]}",
            "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None, "EndpointID": "", "Gateway": "",
            "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "IPAddress": "", "IPPrefixLen": 0,
            "IPv6Gateway": "", "MacAddress": "", "Networks": networks,
        },
    }


# ---- Weave Docker API proxy (reference/weave.md) ---------------------------------------------------

WEAVE_ENTRYPOINT = ["/w/w"]
# v1.5+: the `/w` volume of the `weavevolumes-<version>` data container, bound read-only (§1.4)
WEAVE_VOLUME_SOURCE = f"{DATA_ROOT}/volumes/5c0d2fa1e3b7c9d8a6f4e2b1c3d5e7f9a1b3c5d7e9f1a3b5c7d9e1f3a5b7c9d1/_data"
WEAVE_BIND = f"{WEAVE_VOLUME_SOURCE}:/w:ro"
WEAVE_MOUNT = {"Type": "bind", "Source": WEAVE_VOLUME_SOURCE, "Destination": "/w", "Mode": "ro", "RW": False,
               "Propagation": "rprivate"}
WEAVE_DOMAIN = "weave.local"
DOCKER0_GATEWAY = "172.17.0.1"
DOCKER0_PREFIX_LEN = 16
WEAVE_PREFIX_LEN = 12


def docker_hosts(ip: str, hostname: str) -> str:
    """Docker's own /etc/hosts of a bridge container (what the archive shows before Weave's rewrite)."""
    return ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n"
            "ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
            f"{ip}\t{hostname}\n")


def weave_hosts(ips: list[str], fqdn: str) -> str:
    """The whole file `weave attach --rewrite-hosts` writes (v1.2-v1.9, §2.3): one `<ip>    <names>`
    line (4 spaces) per Weave CIDR, names `<fqdn> <name>` or just the name without a domain."""
    name = fqdn.split(".", 1)[0]
    names = f"{fqdn.rstrip('.')} {name}" if "." in fqdn else name
    return ("# created by Weave - BEGIN\n# container hostname\n"
            + "".join(f"{ip}    {names}\n" for ip in ips)
            + "\n# static names added with --add-host\n\n# default localhost entries\n"
            "127.0.0.1       localhost\n::1             ip6-localhost ip6-loopback\n"
            "fe00::0         ip6-localnet\nff00::0         ip6-mcastprefix\nff02::1         ip6-allnodes\n"
            "ff02::2         ip6-allrouters\n# created by Weave - END\n")


def ip_addr_line(index: int, dev: str, ip: str, prefix_len: int) -> str:
    """One line of busybox `ip -4 -o addr show dev <dev>` (§6.2)."""
    return (f"{index}: {dev}    inet {ip}/{prefix_len} scope global {dev}\\"
            "       valid_lft forever preferred_lft forever\n")


def exec_inspect(exec_id: str, cid: str, cmd: list[str], running: bool, exit_code: int | None,
                 pid: int) -> dict[str, Any]:
    """`GET /exec/{id}/json`, key for key as the 20.10 engine answered it."""
    return {"ID": exec_id, "Running": running, "ExitCode": exit_code,
            "ProcessConfig": {"tty": False, "entrypoint": cmd[0], "arguments": cmd[1:], "privileged": False},
            "OpenStdin": False, "OpenStderr": True, "OpenStdout": True, "CanRemove": False, "ContainerID": cid,
            "DetachKeys": "", "Pid": pid}


def exec_not_found(binary: str) -> str:
    """What runc writes to the exec's stdout when the binary is missing (exit 126, §6.2)."""
    return (f'OCI runtime exec failed: exec failed: unable to start container process: exec: "{binary}": '
            "executable file not found in $PATH: unknown\r\n")
