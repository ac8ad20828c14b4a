"""Annotate captured packets with where the state for each one lives.

Where state lives: this module is an observer on the wire, so it rebuilds, from the packets alone,
the state the endpoints must be holding (a DNS client's pending-query table, a kernel's port
binding) and says for each packet which state it creates, uses, or finds missing, and who holds it.
Nothing comes from a demo's own log: the same code annotates any capture of the same protocols.

The `Annotator` dispatches each packet to one part per protocol, each keeping its own tables:
`annotate_dns` (pending queries), `annotate_quic` (connection IDs), `annotate_tcp` (connections,
and HTTP on them), `annotate_udp` (lone datagrams, ICMP errors). What a row says is data
(`protolab.analysis.facts`: `Kind`, `Fact`, `Row`; the sentence is rendered from `TEMPLATES`);
those names are importable from here too.

Memory stays bounded: the observer keeps pending DNS queries (as a client would) and a short window
of recent rows, so that an ICMP error (RFC 1122 section 3.2.2.1: "port unreachable" when no socket
is bound) can amend the row of the datagram it refers to, which usually arrived just before it.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator

from protolab.analysis.annotate_dns import DNS_PORTS, DnsAnnotator, parse_dns
from protolab.analysis.annotate_points import PointCopies, copy_row
from protolab.analysis.annotate_quic import QuicAnnotator
from protolab.analysis.annotate_tcp import TcpAnnotator
from protolab.analysis.annotate_udp import IcmpAnnotator, udp_row
from protolab.analysis.facts import (
    MAX_PENDING,
    TEMPLATES,
    WINDOW,
    Action,
    Fact,
    Holder,
    Kind,
    Row,
    render,
    row_of,
)
from protolab.protocols.tcp import TcpObserver
from protolab.wire.packets import PROTO_UDP, TRANSPORTS, Decoded, decode
from protolab.wire.pcap import PcapError, Record, read_pcap

__all__ = ["DNS_PORTS", "MAX_PENDING", "TEMPLATES", "WINDOW", "Action", "Annotator", "Fact",
           "Holder", "Kind", "Row", "annotate", "annotate_file", "annotate_records",
           "parse_dns", "render"]


class Annotator:
    """Feed decoded packets in capture order; rows come out in the same order."""

    def __init__(self, dns_ports: Iterable[int] = DNS_PORTS, max_flows: int = 0) -> None:
        self._t0: float | None = None
        self._window: deque[tuple[Row, Decoded]] = deque()
        self._count = 0
        self._dns = DnsAnnotator(dns_ports, self._window)
        self._quic = QuicAnnotator(self._window)
        self._tcp = TcpAnnotator(self._window, max_flows)
        self._icmp = IcmpAnnotator(self._window)
        self._points = PointCopies()
        self.dns_ports = self._dns.dns_ports

    def feed(self, d: Decoded) -> list[Row]:
        """Annotate one packet; return the rows that have left the window (in order)."""
        return [row for row, _ in self.feed_pairs(d)]

    def feed_pairs(self, d: Decoded) -> list[tuple[Row, Decoded]]:
        """Like `feed`, with each row's decoded packet. The row is the protocol part's, with the
        decoded fields every row has and its flow; a packet already seen at another capture
        point is a copy's row (`annotate_points`). (In one method: it runs once per packet.)"""
        self._count += 1
        if self._t0 is None:
            self._t0 = d.time
        number, rel = self._count, d.time - self._t0
        # The decoded values every row has, first among its fields: the part adds its own to
        # this dict (handed to it as base["fields"]), or makes its own, merged after them.
        if (tcp := d.tcp) is not None:
            fields = {"length": d.length, "sport": d.sport, "dport": d.dport,
                      "tcp_seq": tcp.seq, "tcp_ack": tcp.ack, "tcp_flags": tcp.flags}
        else:
            fields = {"length": d.length, "sport": d.sport, "dport": d.dport}
        if d.icmp_type is not None:
            fields.update(icmp_type=d.icmp_type, icmp_code=d.icmp_code)
        if d.interface:  # a capture at several points: where this copy was seen
            fields["interface"] = d.interface
        first = self._points.first_of(d) if d.interface else None  # one capture point: no copy
        if first is not None:
            src, dst = d.endpoints()
            row = copy_row(d, {"number": number, "time": rel, "src": src, "dst": dst,
                               "proto": d.transport}, first)
        else:
            row = self._annotate_protocol(d, number, rel, fields)
        if row.fields is not fields:
            fields.update(row.fields)
        if d.orig_len > d.length:
            fields["truncated"] = True
            row.summary += f" [cut: {d.length} of {d.orig_len} bytes captured]"
        if not row.flow:
            named = self._points.canonical(d)  # across a NAT: the names inside
            row.flow = f"{row.proto.lower()} " + "↔".join(sorted(named.endpoints()))
        row.fields = fields  # the row is this packet's own: finished in place
        if first is None and d.interface:
            self._points.remember(d, row)
        window = self._window
        window.append((row, d))
        # One row in, so at most one out: the parts amend rows in the window, never add any.
        return [window.popleft()] if len(window) > WINDOW else []

    def finish(self) -> list[Row]:
        return [row for row, _ in self.finish_pairs()]

    def finish_pairs(self) -> list[tuple[Row, Decoded]]:
        out = list(self._window)
        self._window.clear()
        return out

    @property
    def tcp(self) -> TcpObserver:
        """The TCP connection state rebuilt so far (for --flows)."""
        return self._tcp.observer

    def _annotate_protocol(self, d: Decoded, number: int, rel: float, fields: dict) -> Row:
        """The row of the part for `d`'s protocol, handed the base dict (`fields`: the decoded
        values every row has, for the part to add its own to)."""
        src, dst = d.endpoints()
        proto = d.proto
        base = {"number": number, "time": rel, "src": src, "dst": dst,
                "proto": TRANSPORTS.get(proto) or d.transport,  # (the property, in one step)
                "fields": fields}
        if d.error and d.sport is None and d.icmp_type is None:
            return row_of(base, summary=d.error, action=Action.NONE, holders=(),
                          fact=Fact(Kind.NOT_DECODED, values={"error": d.error}))
        if proto == PROTO_UDP:
            if self._dns.is_dns(d):
                return self._dns.row(d, base)
            if (quic := self._quic.header(d, src, dst)) is not None:
                return self._quic.row(d, base, quic)
            return udp_row(d, base)
        if d.tcp is not None:  # one connection, whichever side of a NAT it was seen on
            named = self._points.canonical(d)
            return self._tcp.row(named, base, named is d)
        if d.icmp_type is not None:
            return self._icmp.row(d, base)
        return row_of(base, summary=d.error or "IP", action=Action.NONE, holders=(),
                      fact=Fact(Kind.NOT_ANNOTATED))


def annotate(packets: Iterable[Decoded], dns_ports: Iterable[int] = DNS_PORTS) -> Iterator[Row]:
    """Annotate decoded packets, streaming."""
    a = Annotator(dns_ports)
    error = None
    try:
        for d in packets:
            yield from a.feed(d)
    except PcapError as exc:  # a bad file: the rows read so far still come out, then the error
        error = exc
    yield from a.finish()
    if error is not None:
        raise error


def annotate_records(records: Iterable[Record],
                     dns_ports: Iterable[int] = DNS_PORTS) -> Iterator[Row]:
    return annotate((decode(r.data, r.linktype, r.time, r.orig_len, r.interface)
                     for r in records), dns_ports)


def annotate_file(path: str | os.PathLike[str],
                  dns_ports: Iterable[int] = DNS_PORTS) -> Iterator[Row]:
    """Annotate a capture file, streaming. Raises PcapError after the last readable packet."""
    return annotate_records(read_pcap(path), dns_ports)
