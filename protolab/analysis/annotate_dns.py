"""The annotator's DNS part: the pending-query table a DNS client must hold, rebuilt from the
packets (RFC 1035: an answer is matched by source, id and question), with retransmissions, relay
legs of a middlebox, and answers that find nothing pending.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from protolab.analysis.facts import MAX_PENDING, WINDOW, Action, Fact, Holder, Kind, Row
from protolab.wire.dns_wire import read_simple
from protolab.wire.packets import Decoded

DNS_PORTS = frozenset({53, 5353})


@dataclass
class _Query:
    number: int
    time: float
    question: str
    copies: int = 1  #: retransmissions seen (same source, destination, id and question)


class DnsAnnotator:
    """Rows for DNS over UDP: on `dns_ports`, or any payload that parses as one DNS question."""

    def __init__(self, dns_ports: Iterable[int] = DNS_PORTS) -> None:
        self.dns_ports = frozenset(dns_ports)
        self._pending: OrderedDict[tuple[str, str, int], _Query] = OrderedDict()
        self._answered: OrderedDict[tuple[str, str, int], int] = OrderedDict()
        self._recent: OrderedDict[bytes, dict[tuple[str, str], int]] = OrderedDict()
        self._relay_paths: OrderedDict[tuple[str, str], None] = OrderedDict()  # relay legs
        self._legs: OrderedDict[tuple[str, str, int], int] = OrderedDict()  # relayed queries

    def is_dns(self, d: Decoded) -> bool:
        if d.sport in self.dns_ports or d.dport in self.dns_ports:
            return True
        return parse_dns(d.payload) is not None

    def row(self, d: Decoded, base: dict) -> Row:
        base = {**base, "proto": "DNS"}
        msg = parse_dns(d.payload)
        if msg is None:
            return Row(**base, summary=f"DNS? {len(d.payload)} bytes, malformed",
                       action=Action.MISSING, holders=(Holder.NOBODY,),
                       fact=Fact(Kind.DNS_MALFORMED))
        qid, is_response, question, rcode, answers = msg
        src, dst = d.endpoint("src"), d.endpoint("dst")
        client, server = (dst, src) if is_response else (src, dst)
        base["flow"] = f"dns {client}↔{server}"
        base["fields"] = {"dns_id": qid, "dns_response": is_response, "dns_question": question}
        if not is_response:
            relay = self._relay(d.payload, (src, dst), base["number"])
            if relay is not None:
                self._legs[(src, dst, qid)] = base["number"]
                self._bound(self._legs)
                return Row(**base, summary=f"query {qid:#06x} {question} (relayed)",
                           action=Action.NONE, holders=(Holder.PACKET,),
                           fact=Fact(Kind.DNS_RELAYED, (relay,) if relay else (), f"{qid:#06x}",
                                     values={"source": src}))
            return self._query(d, base, qid, question)
        summary = f"answer {qid:#06x} {question} {rcode}" + (f" {answers}" if answers else "")
        leg = self._legs.pop((dst, src, qid), 0)
        if leg:
            return Row(**base, summary=summary, action=Action.NONE, holders=(Holder.PACKET,),
                       fact=Fact(Kind.DNS_RELAY_ANSWER, (leg,), f"{qid:#06x}",
                                 values={"target": dst}))
        return self._answer(d, {**base, "summary": summary}, qid, question)

    def _relay(self, payload: bytes, path: tuple[str, str], number: int) -> int | None:
        """None for a query the client sent itself; else the packet it relays (0: unseen). A
        path is a middlebox's leg once a query first appears on it after another path carried
        the same bytes; a client sending the same bytes again on its own path retransmits."""
        seen = self._recent.pop(payload, {})
        before_here = path in seen
        others = [n for p, n in seen.items() if p != path]
        seen[path] = number
        self._recent[payload] = seen
        while len(self._recent) > WINDOW:
            self._recent.popitem(last=False)
        if path not in self._relay_paths:
            if not others or before_here:
                return None  # the client's own query, or its retransmission
            self._relay_paths[path] = None
            self._bound(self._relay_paths)
        return max(others, default=0)

    def _query(self, d: Decoded, base: dict, qid: int, question: str) -> Row:
        src, dst = base["src"], base["dst"]
        key = (src, dst, qid)
        first = self._pending.get(key)
        if first is not None and first.question == question:
            first.copies += 1
            return Row(**base, summary=f"query {qid:#06x} {question} (again)",
                       action=Action.USES, holders=(Holder.CLIENT_APP,),
                       fact=Fact(Kind.DNS_RETRANSMIT, (first.number,), f"{qid:#06x}",
                                 values={"copies": first.copies}))
        self._pending[key] = _Query(base["number"], d.time, question)
        self._bound(self._pending)
        return Row(**base, summary=f"query {qid:#06x} {question}", action=Action.CREATES,
                   holders=(Holder.CLIENT_APP, Holder.CLIENT_KERNEL),
                   fact=Fact(Kind.DNS_QUERY, (), f"{qid:#06x}",
                             values={"question": question, "server": dst, "client": src}))

    def _answer(self, d: Decoded, common: dict, qid: int, question: str) -> Row:
        src, dst = common["src"], common["dst"]
        key, hexid = (dst, src, qid), f"{qid:#06x}"
        q = self._pending.get(key)
        if q is not None and q.question == question:
            del self._pending[key]
            self._answered[key] = common["number"]
            self._bound(self._answered)
            copies = (f" after {q.copies} copies (which one was answered, no one can tell)"
                      if q.copies > 1 else "")
            return Row(**common, action=Action.ENDS, holders=(Holder.CLIENT_APP,),
                       fact=Fact(Kind.DNS_MATCHED, (q.number,), hexid,
                                 values={"server": src, "rtt_ms": (d.time - q.time) * 1000,
                                         "copies": q.copies, "copies_note": copies}))
        if q is not None:
            return Row(**common, action=Action.MISSING, holders=(Holder.CLIENT_APP,),
                       fact=Fact(Kind.DNS_QUESTION_MISMATCH, (q.number,), hexid,
                                 values={"question": question, "asked": q.question}))
        if key in self._answered:
            return Row(**common, action=Action.MISSING, holders=(Holder.NOBODY,),
                       fact=Fact(Kind.DNS_ALREADY_ANSWERED, (self._answered[key],), hexid))
        same_id = [(k, v) for k, v in self._pending.items() if k[0] == dst and k[2] == qid]
        if same_id:
            (_, server, _), other = same_id[0]
            return Row(**common, action=Action.MISSING, holders=(Holder.CLIENT_APP,),
                       fact=Fact(Kind.DNS_WRONG_SOURCE, (other.number,), hexid,
                                 values={"server": server, "source": src}))
        waiting = [k[2] for k in self._pending if k[0] == dst and k[1] == src]
        if waiting:
            ids = ", ".join(f"{i:#06x}" for i in waiting[:4])
            return Row(**common, action=Action.MISSING, holders=(Holder.CLIENT_APP,),
                       fact=Fact(Kind.DNS_UNKNOWN_ID, (), hexid,
                                 values={"source": src, "pending": ids}))
        return Row(**common, action=Action.USES, holders=(Holder.CLIENT_APP,),
                   fact=Fact(Kind.DNS_QUERY_UNSEEN, (), hexid, values={"source": src}))

    @staticmethod
    def _bound(table: OrderedDict) -> None:
        while len(table) > MAX_PENDING:
            table.popitem(last=False)


def parse_dns(payload: bytes) -> tuple[int, bool, str, str, str] | None:
    """(id, is_response, question, rcode, answers) or None when the payload is not DNS. The
    simple shape is read directly (`protolab.wire.dns_wire`), any other by dnspython."""
    if len(payload) < 12 or int.from_bytes(payload[4:6], "big") != 1:
        return None
    simple = read_simple(payload)
    if simple is None:
        return parse_dns_message(payload)
    qid, is_response, name, qtype, rcode, answers = simple
    return qid, is_response, f"{name} {_type_text(qtype)}", _rcode_text(rcode), answers


def parse_dns_message(payload: bytes) -> tuple[int, bool, str, str, str] | None:
    """`parse_dns` by dnspython alone, for any message."""
    import dns.exception
    import dns.message
    import dns.rcode

    try:
        msg = dns.message.from_wire(payload)
    except (dns.exception.DNSException, ValueError, UnicodeError, IndexError):
        return None
    if len(msg.question) != 1:
        return None
    q = msg.question[0]
    question = f"{q.name} {_type_text(q.rdtype)}"
    answers = " ".join(rd.to_text() for rrset in msg.answer for rd in rrset)
    return msg.id, bool(msg.flags & 0x8000), question, dns.rcode.to_text(msg.rcode()), answers


@cache
def _type_text(rdtype: int) -> str:
    import dns.rdatatype

    return dns.rdatatype.to_text(rdtype)


@cache
def _rcode_text(rcode: int) -> str:
    import dns.rcode

    return dns.rcode.to_text(rcode)
