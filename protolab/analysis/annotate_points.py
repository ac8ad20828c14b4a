"""The annotator's part for captures made at several points at once (`protolab.wire.multicapture`):
the same packet seen again at another point, and a NAT's translation between the points.

Where state lives: a packet that crosses a router is captured once per point it passes (the
client's eth0, the router's lan and wan, the server's eth0). Only its first sighting is handed to
the protocol parts, so a copy is never taken for a retransmission; every later one is a row of its
own, "the same packet as #N, seen again at router:wan", which says what the router rewrote. A
copy is recognised by what a NAT leaves alone — IPv4's identification field, the transport
protocol, TCP's sequence and acknowledgment numbers and flags, the payload — seen at another
point within `SAME_WITHIN` seconds. What the router rewrote (an address and port: the mapping its
conntrack table holds, RFC 3022 section 2.1) is learned from the copies: each outside endpoint is
an alias of the inside one, so the packets of one flow carry one flow name on both sides, and TCP's
connection state is rebuilt from one copy of each segment, under the inside names.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace

from protolab.analysis.facts import MAX_PENDING, Action, Fact, Holder, Kind, Row
from protolab.wire.packets import Decoded

SAME_WITHIN = 0.5  #: seconds: a packet crosses a few veth links in well under this
#: fields of a row that belong to the copy itself, not to the packet it copies
OWN_FIELDS = frozenset({"length", "sport", "dport", "interface", "tcp_seq", "tcp_ack",
                        "tcp_flags", "icmp_type", "icmp_code", "truncated"})
Endpoint = tuple[str, "int | None"]


@dataclass(frozen=True)
class _Sighting:
    row: Row  #: the row of the packet's first sighting
    src: Endpoint
    dst: Endpoint


def _key(d: Decoded) -> tuple | None:
    """What a NAT leaves alone in a packet; None when the packet cannot be recognised again."""
    if not d.interface or d.ip_id is None or d.src is None:
        return None
    tcp = (d.tcp.seq, d.tcp.ack, d.tcp.flags) if d.tcp is not None else None
    return d.ip_id, d.proto, tcp, d.icmp_type, d.payload


class PointCopies:
    """First sightings (bounded: the last MAX_PENDING) and the endpoint aliases learned from
    their copies."""

    def __init__(self) -> None:
        self._first: OrderedDict[tuple, _Sighting] = OrderedDict()
        self._alias: OrderedDict[Endpoint, Endpoint] = OrderedDict()  #: outside → inside
        self._names: set[Endpoint] = set()  #: the endpoints aliases point to

    def first_of(self, d: Decoded) -> Row | None:
        """The row of this packet's first sighting, when `d` is a copy of it at another point."""
        key = _key(d)
        seen = self._first.get(key) if key is not None else None
        if seen is None or seen.row.fields.get("interface") == d.interface:
            return None
        if d.time - seen.row.fields.get("_time", d.time) > SAME_WITHIN:
            return None
        self._learn((d.src, d.sport), seen.src)
        self._learn((d.dst, d.dport), seen.dst)
        return seen.row

    def remember(self, d: Decoded, row: Row) -> None:
        """`row` is the first sighting of `d` (not a copy)."""
        key = _key(d)
        if key is None:
            return
        row = replace(row, fields={**row.fields, "_time": d.time})
        self._first[key] = _Sighting(row, (d.src, d.sport), (d.dst, d.dport))
        self._first.move_to_end(key)
        while len(self._first) > MAX_PENDING:
            self._first.popitem(last=False)

    def _learn(self, seen_as: Endpoint, first: Endpoint) -> None:
        name = self._alias.get(first, first)
        if seen_as != name and seen_as not in self._alias and seen_as not in self._names:
            self._alias[seen_as] = name
            self._names.add(name)
            while len(self._alias) > MAX_PENDING:
                self._alias.popitem(last=False)

    def canonical(self, d: Decoded) -> Decoded:
        """`d` under the names its endpoints had where its flow was first seen (inside a NAT)."""
        if not self._alias:
            return d
        src = self._alias.get((d.src, d.sport))
        dst = self._alias.get((d.dst, d.dport))
        if src is None and dst is None:
            return d
        (s, sp), (t, tp) = src or (d.src, d.sport), dst or (d.dst, d.dport)
        return replace(d, src=s, sport=sp, dst=t, dport=tp)


def copy_row(d: Decoded, base: dict, first: Row) -> Row:
    """The row of a packet seen again: what it copies, where, and what the router rewrote."""
    changed = [f"{what} {old} → {new}" for what, old, new in (
        ("source", first.src, base["src"]), ("destination", first.dst, base["dst"]))
        if old != new]
    rewritten = (f": {' and '.join(changed)} rewritten by a router on the way (the mapping "
                 f"is its conntrack entry)" if changed else ": not rewritten")
    values = {"point": d.interface, "first_point": first.fields.get("interface", "?"),
              "rewritten": rewritten, "translated": bool(changed)}
    fields = {k: v for k, v in first.fields.items() if k not in OWN_FIELDS and k != "_time"}
    fields["copy_of"] = first.number
    return Row(**{**base, "proto": first.proto}, summary=f"{first.summary} (= #{first.number})",
               action=Action.USES if changed else Action.NONE,
               holders=(Holder.ROUTER_KERNEL,) if changed else (),
               fact=Fact(Kind.SAME_PACKET, (first.number,), values=values), flow=first.flow,
               fields=fields)
