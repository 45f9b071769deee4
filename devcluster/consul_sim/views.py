"""The JSON shapes Consul answers with (reference §3), built from the simulator's state.

Kept apart from the HTTP routes so the shapes can be read in one place next to the reference:
`Tags`/`Meta`/`ServiceTags` are never null, `Port` is always present, durations print the Go way.
"""

from __future__ import annotations

from typing import Any

from devcluster.consul_sim.gojson import duration_string
from devcluster.consul_sim.state import Agent, CheckState, ServiceState

CONSUL_VERSION = "1.17.3"


def agent_service(svc: ServiceState, datacenter: str) -> dict[str, Any]:
    """`/v1/agent/services` entry (`buildAgentService`; omitempty fields left out when empty)."""
    s = svc.spec
    out: dict[str, Any] = {"ID": s.id, "Service": s.name, "Tags": list(s.tags), "Meta": dict(s.meta),
                           "Port": s.port, "Address": s.address}
    if s.kind:
        out["Kind"] = s.kind
    if s.socket_path:
        out["SocketPath"] = s.socket_path
    if s.tagged_addresses:
        out["TaggedAddresses"] = {k: dict(v) for k, v in s.tagged_addresses.items()}
    out["Weights"] = dict(s.weights or {"Passing": 1, "Warning": 1})
    out["EnableTagOverride"] = s.enable_tag_override
    if s.proxy:
        out["Proxy"] = s.proxy
    if s.connect:
        out["Connect"] = s.connect
    if s.locality:
        out["Locality"] = dict(s.locality)
    out["Datacenter"] = datacenter
    return out


def health_service(svc: ServiceState) -> dict[str, Any]:
    """The `Service` object inside `/v1/health/service` entries (ST `NodeService`)."""
    s = svc.spec
    return {
        "ID": s.id, "Service": s.name, "Tags": list(s.tags), "Address": s.address,
        "TaggedAddresses": {k: dict(v) for k, v in s.tagged_addresses.items()} or None,
        "Meta": dict(s.meta), "Port": s.port, "SocketPath": s.socket_path,
        "Weights": dict(s.weights or {"Passing": 1, "Warning": 1}),
        "EnableTagOverride": s.enable_tag_override, "Kind": s.kind,
        "Proxy": s.proxy or {"Mode": "", "MeshGateway": {}, "Expose": {}},
        "Connect": s.connect or {}, "PeerName": "", "Datacenter": "",
        "CreateIndex": svc.create_index, "ModifyIndex": svc.modify_index,
    }


def node_tagged(agent: Agent) -> dict[str, str]:
    return {"lan": agent.host, "lan_ipv4": agent.host, "wan": agent.host, "wan_ipv4": agent.host}


def node_meta() -> dict[str, str]:
    return {"consul-network-segment": "", "consul-version": CONSUL_VERSION}


def node(agent: Agent, datacenter: str) -> dict[str, Any]:
    return {
        "ID": agent.node_id, "Node": agent.node, "Address": agent.host, "Datacenter": datacenter,
        "TaggedAddresses": node_tagged(agent), "Meta": node_meta(),
        "CreateIndex": agent.create_index, "ModifyIndex": agent.create_index,
    }


def catalog_service_node(agent: Agent, svc: ServiceState, datacenter: str) -> dict[str, Any]:
    """`/v1/catalog/service/:name` entry (ST `ServiceNode`)."""
    s = svc.spec
    return {
        "ID": agent.node_id, "Node": agent.node, "Address": agent.host, "Datacenter": datacenter,
        "TaggedAddresses": node_tagged(agent), "NodeMeta": node_meta(), "ServiceKind": s.kind,
        "ServiceID": s.id, "ServiceName": s.name, "ServiceTags": list(s.tags),
        "ServiceAddress": s.address,
        "ServiceTaggedAddresses": {k: dict(v) for k, v in s.tagged_addresses.items()} or None,
        "ServiceWeights": dict(s.weights or {"Passing": 1, "Warning": 1}), "ServiceMeta": dict(s.meta),
        "ServicePort": s.port, "ServiceSocketPath": s.socket_path,
        "ServiceEnableTagOverride": s.enable_tag_override,
        "ServiceProxy": s.proxy or {"Mode": "", "MeshGateway": {}, "Expose": {}},
        "ServiceConnect": s.connect or {}, "ServiceLocality": s.locality,
        "CreateIndex": svc.create_index, "ModifyIndex": svc.modify_index,
    }


def check_definition(c: CheckState) -> dict[str, Any]:
    """`HealthCheckDefinition`, omitempty fields left out."""
    s = c.spec
    out: dict[str, Any] = {}
    for key, val in (("HTTP", s.http), ("TLSServerName", s.tls_server_name),
                     ("TLSSkipVerify", s.tls_skip_verify), ("Header", s.header), ("Method", s.method),
                     ("Body", s.body), ("DisableRedirects", s.disable_redirects), ("TCP", s.tcp),
                     ("UDP", s.udp), ("H2PING", s.h2ping), ("OSService", s.os_service),
                     ("GRPC", s.grpc), ("AliasNode", s.alias_node), ("AliasService", s.alias_service)):
        if val:
            out[key] = val
    for key, ns in (("Interval", s.interval), ("Timeout", s.timeout),
                    ("DeregisterCriticalServiceAfter", s.deregister_critical_service_after),
                    ("TTL", s.ttl)):
        if ns:
            out[key] = duration_string(ns)
    return out


def check(c: CheckState) -> dict[str, Any]:
    """`HealthCheck` as in `/v1/agent/checks` and `/v1/health/*`."""
    s = c.spec
    return {
        "Node": c.node, "CheckID": c.check_id, "Name": c.name, "Status": c.status, "Notes": s.notes,
        "Output": c.output, "ServiceID": c.service_id, "ServiceName": c.service_name,
        "ServiceTags": list(c.service_tags), "Type": s.kind,
        "Interval": duration_string(s.interval) if s.interval else "",
        "Timeout": duration_string(s.timeout) if s.timeout else "",
        "ExposedPort": 0, "Definition": check_definition(c),
        "CreateIndex": c.create_index, "ModifyIndex": c.modify_index,
    }


def serf_check(agent: Agent) -> dict[str, Any]:
    """The node-level check every agent has; critical while the node is down (`/_sim/nodes/`).
    Outputs are structs.SerfCheckAliveOutput / SerfCheckFailedOutput (agent/structs/structs.go)."""
    alive = agent.serf_status == "passing"
    return {
        "Node": agent.node, "CheckID": "serfHealth", "Name": "Serf Health Status", "Status": agent.serf_status,
        "Notes": "", "Output": "Agent alive and reachable" if alive else "Agent not live or unreachable",
        "ServiceID": "", "ServiceName": "",
        "ServiceTags": [], "Type": "", "Interval": "", "Timeout": "", "ExposedPort": 0,
        "Definition": {}, "CreateIndex": agent.create_index,
        "ModifyIndex": agent.serf_index or agent.create_index,
    }


def agent_self(agent: Agent, datacenter: str) -> dict[str, Any]:
    return {
        "Config": {"Datacenter": datacenter, "PrimaryDatacenter": datacenter, "NodeName": agent.node,
                   "NodeID": agent.node_id, "Revision": "consul-sim", "Server": False,
                   "Version": CONSUL_VERSION, "BuildDate": "2024-01-01T00:00:00Z"},
        "DebugConfig": {},
        "Coord": {"Vec": [0, 0, 0, 0, 0, 0, 0, 0], "Error": 1.5, "Adjustment": 0, "Height": 1e-05},
        "Member": {"Name": agent.node, "Addr": agent.host, "Port": 8301,
                   "Tags": {"dc": datacenter, "role": "node", "build": CONSUL_VERSION, "id": agent.node_id},
                   "Status": 1, "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
                   "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4},
        "Stats": {}, "Meta": node_meta(), "xDS": {},
    }
