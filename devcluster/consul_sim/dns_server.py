"""Consul's DNS interface (legacy "v1" server, reference §6), over UDP and TCP.

Name parsing follows `agent/dns.go dispatch` literally: lower-case the name, strip `consul.`,
find the right-most `service`/`node`/`addr` label; for services, every label before the name is
joined with dots into ONE tag (`site1.customer1.web.service.consul` = tag `site1.customer1`),
except the RFC 2782 form `_name._tag` (`_tcp` = no tag). Suffix: nothing, `<dc>` or `<dc>.dc`;
anything else, or another datacenter, is NXDOMAIN.

Answers: instances with any critical check are left out (warning ones kept); A = service address
if it is an IP, else the node address (a hostname service address gives a CNAME); SRV priority 1,
weight = Weights.Passing (Warning for warning instances), target `<hex-ip>.addr.<dc>.consul.` or
`<node>.node.<dc>.consul.`, with the A record in the additional section. No instance: NXDOMAIN
with the SOA; instances but no record of the asked type: NOERROR, no answer, SOA. Order is
shuffled; TTL 0; a UDP answer without EDNS (or with a payload <= 512) keeps at most 3 records.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import struct
import time

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from devcluster.consul_sim.state import Agent, ServiceState, State

log = logging.getLogger("consul_sim.dns")

DOMAIN = "consul."
UDP_ANSWER_LIMIT = 3
_TYPE_LABELS = ("service", "connect", "virtual", "ingress", "node", "query", "addr")


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class ConsulDNS:
    """Builds answers from the shared catalog state."""

    def __init__(self, state: State) -> None:
        self.state = state

    def soa(self) -> dns.rrset.RRset:
        serial = int(time.time()) & 0xFFFFFFFF
        return dns.rrset.from_text(DOMAIN, 0, "IN", "SOA",
                                   f"ns.{DOMAIN} hostmaster.{DOMAIN} {serial} 3600 600 86400 0")

    def handle(self, wire: bytes, *, udp: bool) -> bytes | None:
        try:
            q = dns.message.from_wire(wire)
        except Exception:  # malformed packets are dropped, like a real server
            log.debug("dropping malformed DNS packet")
            return None
        resp = dns.message.make_response(q)
        resp.flags |= dns.flags.AA
        resp.flags &= ~dns.flags.RA
        if not q.question:
            resp.set_rcode(dns.rcode.FORMERR)
            return resp.to_wire()
        question = q.question[0]
        qname = question.name.to_text().lower()
        self._answer(resp, qname, question.rdtype)
        limit = 512
        if q.edns >= 0:
            limit = max(512, q.payload)
        if udp and limit <= 512 and len(resp.answer) > UDP_ANSWER_LIMIT:
            resp.answer = resp.answer[:UDP_ANSWER_LIMIT]
            keep = {rr[0].target for rr in resp.answer if rr.rdtype == dns.rdatatype.SRV}
            resp.additional = [rr for rr in resp.additional if rr.name in keep]
        try:
            return resp.to_wire(max_size=limit if udp else 65535)
        except dns.exception.TooBig:
            resp.flags |= dns.flags.TC
            while resp.answer:
                resp.answer.pop()
                resp.additional = []
                try:
                    return resp.to_wire(max_size=limit)
                except dns.exception.TooBig:
                    continue
            return resp.to_wire()

    def _answer(self, resp: dns.message.Message, qname: str, qtype: int) -> None:
        if not qname.endswith(DOMAIN) or (qname != DOMAIN and not qname.endswith("." + DOMAIN)):
            resp.set_rcode(dns.rcode.REFUSED)
            return
        labels = [x for x in qname[: -len(DOMAIN)].split(".") if x]
        kind_at = next((i for i in range(len(labels) - 1, -1, -1) if labels[i] in _TYPE_LABELS), None)
        if kind_at is None and qtype == dns.rdatatype.SRV and len(labels) >= 2 \
                and labels[0].startswith("_") and labels[1].startswith("_"):
            parts, suffix, kind = labels[:2], labels[2:], "service"
        elif kind_at is None:
            return self._nxdomain(resp)
        else:
            parts, suffix, kind = labels[:kind_at], labels[kind_at + 1:], labels[kind_at]
        if not self._dc_ok(suffix) or not parts:
            return self._nxdomain(resp)
        name = dns.name.from_text(qname)
        if kind == "service":
            return self._service(resp, name, parts, qtype)
        if kind == "node" and len(parts) == 1:
            agent = self.state.nodes.get(parts[0]) or next(
                (a for a in self.state.nodes.values() if a.node.lower() == parts[0]), None)
            if agent is None:
                return self._nxdomain(resp)
            return self._address(resp, name, agent.host, qtype)
        if kind == "addr" and len(parts) == 1:
            try:
                raw = bytes.fromhex(parts[0])
            except ValueError:
                return self._nxdomain(resp)
            if len(raw) not in (4, 16):
                return self._nxdomain(resp)
            return self._address(resp, name, str(ipaddress.ip_address(raw)), qtype)
        return self._nxdomain(resp)

    def _dc_ok(self, suffix: list[str]) -> bool:
        if not suffix:
            return True
        if len(suffix) == 1 or (len(suffix) == 2 and suffix[1] == "dc"):
            return suffix[0] == self.state.datacenter.lower()
        return False

    def _nxdomain(self, resp: dns.message.Message) -> None:
        resp.set_rcode(dns.rcode.NXDOMAIN)
        resp.authority = [self.soa()]

    def _nodata(self, resp: dns.message.Message) -> None:
        resp.authority = [self.soa()]

    def _address(self, resp: dns.message.Message, name: dns.name.Name, ip: str, qtype: int) -> None:
        rr = self._addr_rr(name, ip, qtype)
        if rr is None:
            return self._nodata(resp)
        resp.answer.append(rr)

    @staticmethod
    def _addr_rr(name: dns.name.Name, ip: str, qtype: int) -> dns.rrset.RRset | None:
        addr = _ip(ip)
        if addr is None:
            return None
        rtype = "A" if addr.version == 4 else "AAAA"
        if qtype not in (dns.rdatatype.from_text(rtype), dns.rdatatype.ANY):
            return None
        return dns.rrset.from_text(name, 0, "IN", rtype, str(addr))

    def _instances(self, parts: list[str]) -> list[tuple[Agent, ServiceState, str]]:
        n = len(parts)
        if n == 2 and parts[0].startswith("_") and parts[1].startswith("_"):
            tag = parts[1][1:]
            tag = "" if tag == "tcp" else tag
            service = parts[0][1:]
        else:
            tag = ".".join(parts[: n - 1]) if n >= 2 else ""
            service = parts[n - 1]
        out = []
        for agent, svc in self.state.instances(service):
            if tag and tag not in (t.lower() for t in svc.spec.tags):
                continue
            statuses = [agent.serf_status, *(c.status for c in self.state.service_checks(agent, svc))]
            if "critical" in statuses:
                continue
            out.append((agent, svc, "warning" if "warning" in statuses else "passing"))
        random.shuffle(out)
        return out

    def _service(self, resp: dns.message.Message, name: dns.name.Name, parts: list[str], qtype: int) -> None:
        found = self._instances(parts)
        if not found:
            return self._nxdomain(resp)
        dc = self.state.datacenter.lower()
        if qtype == dns.rdatatype.SRV:
            seen: set[tuple[str, int]] = set()
            for agent, svc, health in found:
                s = svc.spec
                addr = _ip(s.address)
                if addr is not None:
                    target = f"{addr.packed.hex()}.addr.{dc}.{DOMAIN}"
                    ip = str(addr)
                elif s.address:
                    target, ip = s.address.rstrip(".") + ".", ""
                else:
                    target, ip = f"{agent.node.lower()}.node.{dc}.{DOMAIN}", agent.host
                port = s.port & 0xFFFF
                if (target, port) in seen:
                    continue
                seen.add((target, port))
                w = s.weights or {"Passing": 1, "Warning": 1}
                weight = w["Warning"] if health == "warning" else w["Passing"]
                resp.answer.append(dns.rrset.from_text(name, 0, "IN", "SRV", f"1 {weight} {port} {target}"))
                if ip:
                    extra = self._addr_rr(dns.name.from_text(target), ip, dns.rdatatype.ANY)
                    if extra is not None:
                        resp.additional.append(extra)
            return None
        ips: list[str] = []
        for agent, svc, _ in found:
            a = svc.spec.address
            if a and _ip(a) is None:
                if qtype in (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.ANY, dns.rdatatype.CNAME):
                    resp.answer.append(dns.rrset.from_text(name, 0, "IN", "CNAME", a.rstrip(".") + "."))
                continue
            ip = a or agent.host
            if ip not in ips:
                ips.append(ip)
        for ip in ips:
            rr = self._addr_rr(name, ip, qtype)
            if rr is not None:
                resp.answer.append(rr)
        if not resp.answer:
            self._nodata(resp)
        return None


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, dns_: ConsulDNS) -> None:
        self.dns = dns_
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        out = self.dns.handle(data, udp=True)
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)


async def serve_dns(state: State, host: str, port: int) -> list[object]:
    """Start UDP and TCP listeners; returns the objects to close on shutdown."""
    d = ConsulDNS(state)
    loop = asyncio.get_running_loop()
    udp, _ = await loop.create_datagram_endpoint(lambda: _UDP(d), local_addr=(host, port))

    async def on_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                out = d.handle(await reader.readexactly(size), udp=False)
                if out is None:
                    break
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    tcp = await asyncio.start_server(on_tcp, host, port)
    log.info("DNS listening on %s:%d (udp, tcp)", host, port)
    return [udp, tcp]
