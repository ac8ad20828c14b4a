"""The annotator's DNS part: the pending-query table a DNS client must hold, rebuilt from the
packets (RFC 1035: an answer is matched by source, id and question), with retransmissions, relay
legs of a middlebox, and answers that find nothing pending.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import cache
from itertools import islice

from protolab.analysis.facts import MAX_PENDING, WINDOW, Action, Fact, Holder, Kind, Row, row_of
from protolab.wire.dns_wire import CLASS_IN, DNS_PORTS, question_class, read_simple
from protolab.wire.packets import Decoded

#: the members a query's and its answer's rows name, looked up once: naming a member
#: (`Action.ENDS`) goes through Python 3.11's EnumType.__getattr__ hook, about 0.15 us each
_CREATES, _ENDS, _QUERY, _MATCHED = Action.CREATES, Action.ENDS, Kind.DNS_QUERY, Kind.DNS_MATCHED
_CLIENT_APP = (Holder.CLIENT_APP,)
_CLIENT_APP_AND_KERNEL = (Holder.CLIENT_APP, Holder.CLIENT_KERNEL)


@dataclass(slots=True)
class _Query:
    number: int
    time: float
    question: str
    copies: int = 1  #: retransmissions seen (same source, destination, id and question)
    leg: bool = False  #: a resolver's own query upstream, for a client's question
    upstream: int = 0  #: a client's query: the resolver's upstream query for it (a miss)


class DnsAnnotator:
    """Rows for DNS over UDP: on `dns_ports`, or any payload that parses as one DNS question."""

    def __init__(self, dns_ports: Iterable[int] = DNS_PORTS,
                 window: deque[tuple[Row, Decoded]] | None = None) -> None:
        self.dns_ports = frozenset(dns_ports)
        self._window = window if window is not None else deque()
        self._resolvers: set[str] = set()  #: endpoints seen asking upstream for their clients
        self._leg_sockets: set[str] = set()  #: the resolvers' upstream-side sockets
        self._taken: dict[str, tuple[int, tuple[str, str]]] = {}  #: leg socket → last answer
        self._flood: Counter[tuple[str, tuple[str, str]]] = Counter()  #: dropped, by content
        self._pending: OrderedDict[tuple[str, str, int], _Query] = OrderedDict()
        self._answered: OrderedDict[tuple[str, str, int], int] = OrderedDict()
        self._recent: OrderedDict[bytes, dict[tuple[str, str], int]] = OrderedDict()
        self._relay_paths: OrderedDict[tuple[str, str], None] = OrderedDict()  # relay legs
        self._legs: OrderedDict[tuple[str, str, int], int] = OrderedDict()  # relayed queries

    def is_dns(self, d: Decoded) -> bool:
        if d.sport in self.dns_ports or d.dport in self.dns_ports:
            return True
        return _shape(d.payload) is not None

    def row(self, d: Decoded, base: dict) -> Row:
        base["proto"] = "DNS"
        payload = d.payload
        shape = _shape(payload)
        if shape is None:
            return row_of(base, Action.MISSING, (Holder.NOBODY,), Fact(Kind.DNS_MALFORMED),
                          f"DNS? {len(payload)} bytes, malformed")
        is_response, question, rcode, answers, qclass = shape
        qid = payload[0] << 8 | payload[1]
        hexid = f"{qid:#06x}"
        src, dst = base["src"], base["dst"]  # d's endpoints
        base["flow"] = f"dns {dst}↔{src}" if is_response else f"dns {src}↔{dst}"  # client first
        fields = base.setdefault("fields", {})  # (the values every row has, from the Annotator)
        fields["dns_id"], fields["dns_response"], fields["dns_question"] = \
            qid, is_response, question
        # (Fact's fields in order: kind, refs, key, moves, also, values)
        if not is_response:
            relay = self._relay(payload, (src, dst), base["number"])
            if relay is not None:
                self._legs[(src, dst, qid)] = base["number"]
                self._bound(self._legs)
                return row_of(base, Action.NONE, (Holder.PACKET,),
                              Fact(Kind.DNS_RELAYED, (relay,) if relay else (), hexid, (), (),
                                   {"source": src}), f"query {hexid} {question} (relayed)")
            return self._query(d, base, hexid, qid, question)
        base["summary"] = f"answer {hexid} {question} {rcode}" + (
            f" {answers}" if answers else "")
        leg = self._legs.pop((dst, src, qid), 0)
        if leg:
            return row_of(base, Action.NONE, (Holder.PACKET,),
                          Fact(Kind.DNS_RELAY_ANSWER, (leg,), hexid, (), (), {"target": dst}))
        return self._cached(d, self._answer(d, base, hexid, qid, question), (question, answers),
                            qclass)

    def _relay(self, payload: bytes, path: tuple[str, str], number: int) -> int | None:
        """None for a query the client sent itself; else the packet it relays (0: unseen). A
        path is a middlebox's leg once a query first appears on it after another path carried
        the same bytes; a client sending the same bytes again on its own path retransmits."""
        seen = self._recent.pop(payload, None)
        if seen is None:  # bytes not seen lately (nearly every query): no other path had them
            self._recent[payload] = {path: number}
            while len(self._recent) > WINDOW:
                self._recent.popitem(last=False)
            return None if path not in self._relay_paths else 0
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

    def _query(self, d: Decoded, base: dict, hexid: str, qid: int, question: str) -> Row:
        src, dst = base["src"], base["dst"]
        key = (src, dst, qid)
        first = self._pending.get(key)
        if first is not None and first.question == question:
            first.copies += 1
            return row_of(base, Action.USES, (Holder.CLIENT_APP,),
                          Fact(Kind.DNS_RETRANSMIT, (first.number,), hexid, (), (),
                               {"copies": first.copies}), f"query {hexid} {question} (again)")
        asked = self._asked_by_clients(src, dst, question) if self._pending else []
        self._pending[key] = _Query(base["number"], d.time, question, 1, bool(asked))
        self._bound(self._pending)
        if asked:
            resolver = asked[0][0]
            for _, q in asked:
                q.upstream = base["number"]
            self._resolvers.add(resolver)
            self._leg_sockets.add(src)
            return row_of(base, Action.CREATES, (Holder.SERVER_APP,),
                          Fact(Kind.DNS_UPSTREAM, (asked[0][1].number,), hexid, (), (),
                               {"resolver": resolver, "server": dst, "question": question}),
                          f"query {hexid} {question} (upstream)")
        return row_of(base, _CREATES, _CLIENT_APP_AND_KERNEL, Fact(_QUERY, (), hexid, (), (),
                           {"question": question, "server": dst, "client": src}),
                      f"query {hexid} {question}")

    def _answer(self, d: Decoded, common: dict, hexid: str, qid: int, question: str) -> Row:
        src, dst = common["src"], common["dst"]
        key = (dst, src, qid)
        q = self._pending.get(key)
        if q is not None and q.question == question:
            del self._pending[key]
            self._answered[key] = common["number"]
            self._bound(self._answered)
            copies = (f" after {q.copies} copies (which one was answered, no one can tell)"
                      if q.copies > 1 else "")
            return row_of(common, _ENDS, _CLIENT_APP,
                          Fact(_MATCHED, (q.number,), hexid, (), (),
                               {"server": src, "rtt_ms": (d.time - q.time) * 1000,
                                "copies": q.copies, "copies_note": copies,
                                "upstream": q.upstream}))
        if q is not None:
            return row_of(common, action=Action.MISSING, holders=(Holder.CLIENT_APP,),
                          fact=Fact(Kind.DNS_QUESTION_MISMATCH, (q.number,), hexid,
                                    values={"question": question, "asked": q.question}))
        if key in self._answered:
            return row_of(common, action=Action.MISSING, holders=(Holder.NOBODY,),
                          fact=Fact(Kind.DNS_ALREADY_ANSWERED, (self._answered[key],), hexid))
        same_id = [(k, v) for k, v in self._pending.items() if k[0] == dst and k[2] == qid]
        if same_id:
            (_, server, _), other = same_id[0]
            return row_of(common, action=Action.MISSING, holders=(Holder.CLIENT_APP,),
                          fact=Fact(Kind.DNS_WRONG_SOURCE, (other.number,), hexid,
                                    values={"server": server, "source": src}))
        waiting = [k[2] for k in self._pending if k[0] == dst and k[1] == src]
        if waiting:
            ids = ", ".join(f"{i:#06x}" for i in waiting[:4])
            return row_of(common, action=Action.MISSING, holders=(Holder.CLIENT_APP,),
                          fact=Fact(Kind.DNS_UNKNOWN_ID, (), hexid,
                                    values={"source": src, "pending": ids}))
        if dst in self._leg_sockets:  # a resolver's upstream socket, nothing pending on it
            return row_of(common, action=Action.MISSING, holders=(Holder.SERVER_APP,),
                          fact=Fact(Kind.DNS_UNKNOWN_ID, (), hexid,
                                    values={"source": src, "pending": "none"}))
        return row_of(common, action=Action.USES, holders=(Holder.CLIENT_APP,),
                      fact=Fact(Kind.DNS_QUERY_UNSEEN, (), hexid, values={"source": src}))

    def _asked_by_clients(self, src: str, dst: str, question: str) -> list[tuple[str, _Query]]:
        """Recent client queries, still unanswered, for `question` to a server on `src`'s host
        but another port, from another socket, while this query goes to yet another server:
        `src` is that server's own upstream socket — a resolver's miss."""
        host = src.rpartition(":")[0]
        found = []
        for (client, server, _), q in islice(reversed(self._pending.items()), 64):
            if q.question == question and not q.leg and not q.upstream and server != src \
                    and client != src and server != dst and server.rpartition(":")[0] == host:
                found.append((server, q))
        return found

    def _cached(self, d: Decoded, row: Row, content: tuple[str, str], qclass: int | None) -> Row:
        """An answer (of question class `qclass`), seen as a cache's: a resolver's answer to its
        client is a hit or a miss; an upstream answer it took is a forgery when a flood of the
        same answer went to that socket (before it, or after it while its row is in the
        window)."""
        src, dst, fact = row.src, row.dst, row.fact
        if qclass not in (CLASS_IN, None):
            return row  # a CHAOS question (version.bind): the server's own word, no cache's
        if fact.kind is Kind.DNS_MATCHED and src in self._resolvers:
            q_up = fact.values.get("upstream", 0)
            kind = Kind.DNS_CACHE_MISS if q_up else Kind.DNS_CACHE_HIT
            values = {**fact.values, "ttl": answer_ttl(d.payload),
                      "upstream_ref": f"#{q_up}" if q_up else ""}
            return replace(row, holders=(Holder.CLIENT_APP, Holder.SERVER_APP),
                           fact=replace(fact, also=(kind,), values=values))
        if dst not in self._leg_sockets:
            return row
        if fact.kind is Kind.DNS_MATCHED:
            self._taken[dst] = (row.number, content)
            if self._flood[(dst, content)]:
                return _forged(row, self._flood[(dst, content)])
            return row
        self._flood[(dst, content)] += 1
        taken = self._taken.get(dst)
        if taken is not None and taken[1] == content:
            for i, (old, od) in enumerate(self._window):
                if old.number == taken[0] and not old.shows(Kind.DNS_FORGED_ACCEPTED):
                    self._window[i] = (_forged(old, self._flood[(dst, content)]), od)
        return row

    @staticmethod
    def _bound(table: OrderedDict) -> None:
        while len(table) > MAX_PENDING:
            table.popitem(last=False)


def _forged(row: Row, count: int) -> Row:
    fact = row.fact
    return replace(row, holders=(Holder.SERVER_APP,), fact=replace(
        fact, also=(*fact.also, Kind.DNS_FORGED_ACCEPTED),
        values={**fact.values, "forged": count}))


def answer_ttl(payload: bytes) -> int | None:
    """The TTL of a DNS answer's first record (answer section, else authority: a negative
    answer's SOA), or None."""
    import dns.exception
    import dns.message

    try:
        msg = dns.message.from_wire(payload)
    except (dns.exception.DNSException, ValueError, UnicodeError, IndexError):
        return None
    rrsets = msg.answer or msg.authority
    return rrsets[0].ttl if rrsets else None


def parse_dns(payload: bytes) -> tuple[int, bool, str, str, str] | None:
    """(id, is_response, question, rcode, answers) or None when the payload is not DNS. The
    simple shape is read directly (`protolab.wire.dns_wire`), any other by dnspython."""
    shape = _shape(payload)
    if shape is None:
        return None
    is_response, question, rcode, answers, _ = shape
    return payload[0] << 8 | payload[1], is_response, question, rcode, answers


#: What `parse_dns` says of a message but its id, and its question's class (`question_class`):
#: (is_response, question, rcode, answers, question class)
Shape = tuple[bool, str, str, str, "int | None"]
#: the messages already read, by their bytes after the id (a client asks the same question
#: again with a new id, a server answers it the same way): each read once. Messages up to 512
#: bytes (RFC 1035 section 4.2.1: all a plain DNS over UDP carries), 4096 of them at most.
_SHAPES: dict[bytes, Shape | None] = {}
_SHAPES_KEPT = 4096
_SHAPE_BYTES = 512
_UNREAD = ()  #: (no message's shape: `_SHAPES.get`'s answer when the message is not in it)


def _shape(payload: bytes) -> Shape | None:
    """The `Shape` of the DNS message `payload`, None when it is not DNS (not one question)."""
    if len(payload) < 12 or payload[4:6] != b"\0\1":  # QDCOUNT (RFC 1035 section 4.1.1)
        return None
    if len(payload) > _SHAPE_BYTES:
        return _read_shape(payload)
    key = payload[2:]
    shape = _SHAPES.get(key, _UNREAD)
    if shape is _UNREAD:
        if len(_SHAPES) >= _SHAPES_KEPT:
            _SHAPES.clear()
        shape = _SHAPES[key] = _read_shape(payload)
    return shape


def _read_shape(payload: bytes) -> Shape | None:
    simple = read_simple(payload)
    if simple is None:
        message = parse_dns_message(payload)
        if message is None:
            return None
        _, is_response, question, rcode, answers = message
    else:
        _, is_response, name, qtype, rcode_number, answers = simple
        question, rcode = f"{name} {_type_text(qtype)}", _rcode_text(rcode_number)
    return is_response, question, rcode, answers, question_class(payload)


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
