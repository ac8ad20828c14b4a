"""The annotator's UDP and ICMP part: a datagram that is neither DNS nor QUIC stands alone (only
the receiver's port binding is needed), and an ICMP port unreachable (RFC 1122 section 3.2.2.1:
sent when no socket is bound) amends the row of the datagram it names, which usually arrived just
before it and is still in the annotator's window.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace

from protolab.analysis.facts import Action, Fact, Holder, Kind, Row, row_of
from protolab.wire.packets import PROTO_ICMP, PROTO_UDP, Decoded


def udp_row(d: Decoded, base: dict) -> Row:
    """A datagram that stands alone, with a preview of its payload if that is printable."""
    text = _printable(d.payload)
    if text:
        base.setdefault("fields", {})["udp_text"] = text  # (after the values every row has)
    return row_of(base, summary=f"UDP {len(d.payload)} bytes" + (f" {text!r}" if text else ""),
                  action=Action.NONE, holders=(Holder.PACKET,), fact=Fact(Kind.UDP_DATAGRAM))


_PRINTABLE = bytes(range(32, 127))  #: printable ASCII, space to tilde


def _printable(payload: bytes, limit: int = 40) -> str | None:
    """A short text preview of a payload that is printable ASCII, else None."""
    head = payload[:limit]
    if not head or head.translate(None, _PRINTABLE):  # (a byte left: not printable ASCII)
        return None
    return head.decode("ascii") + ("…" if len(payload) > limit else "")


class IcmpAnnotator:
    """Rows for ICMP and ICMPv6; a port unreachable rewrites its datagram's row in `window`."""

    def __init__(self, window: deque[tuple[Row, Decoded]]) -> None:
        self._window = window

    def row(self, d: Decoded, base: dict) -> Row:
        q = d.quoted
        v6 = d.proto != PROTO_ICMP
        unreachable = (d.icmp_type, d.icmp_code) == ((1, 4) if v6 else (3, 3))
        name = "ICMPv6" if v6 else "ICMP"
        if q is None or not unreachable:
            return row_of(base, summary=f"{name} type {d.icmp_type} code {d.icmp_code}",
                          action=Action.NONE, holders=(), fact=Fact(Kind.ICMP_OTHER))
        target = f"{q.dst}:{q.dport}"
        origin = f"{q.src}:{q.sport}"
        cause = self._amend_cause(origin, target, base["number"])
        return row_of(base, summary=f"{name} port unreachable for {origin} → {target}",
                      action=Action.MISSING, holders=(Holder.NOBODY,),
                      fact=Fact(Kind.ICMP_PORT_UNREACHABLE, (cause,) if cause else (), target,
                                values={"target": target,
                                        "about": f" (#{cause})" if cause else ""}))

    def _amend_cause(self, origin: str, target: str, icmp_number: int) -> int | None:
        """Find the datagram this ICMP error is about in the window and rewrite its row."""
        for i in range(len(self._window) - 1, -1, -1):
            row, d = self._window[i]
            if row.src == origin and row.dst == target and d.proto == PROTO_UDP:
                kind = Kind.DNS_TO_CLOSED_SOCKET if row.proto == "DNS" and \
                    row.action is Action.ENDS else Kind.UDP_TO_CLOSED_PORT
                fact = Fact(kind, (icmp_number, *row.fact.refs), row.fact.key,
                            values={**row.fact.values, "target": target})
                self._window[i] = (replace(row, action=Action.MISSING,
                                           holders=(Holder.NOBODY,), fact=fact), d)
                return row.number
        return None
