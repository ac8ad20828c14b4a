"""Annotate captured packets with where the state for each one lives.

Where state lives: this module is an observer on the wire, so it rebuilds, from the packets alone,
the state the endpoints must be holding (a DNS client's pending-query table, a kernel's port
binding) and says for each packet which state it creates, uses, or finds missing, and who holds it.
Nothing comes from a demo's own log: the same code annotates any capture of the same protocols.

Memory stays bounded: the observer keeps pending DNS queries (as a client would) and a short window
of recent rows, so that an ICMP error (RFC 1122 section 3.2.2.1: "port unreachable" when no socket
is bound) can amend the row of the datagram it refers to, which usually arrived just before it.
"""

from __future__ import annotations

import os
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from enum import Enum

from protolab.protocols.quic import QuicHeader, decode_header
from protolab.protocols.tcp import TcpObserver, Transition
from protolab.wire.packets import PROTO_ICMP, PROTO_UDP, Decoded, decode
from protolab.wire.pcap import PcapError, Record, read_pcap

DNS_PORTS = frozenset({53, 5353})
WINDOW = 32
MAX_PENDING = 100_000


class Holder(Enum):
    CLIENT_APP = "client app memory"  #: a client process's own variables
    CLIENT_KERNEL = "client kernel"  #: the client host's socket table
    SERVER_APP = "server app memory"  #: a server process's own variables
    SERVER_KERNEL = "server kernel"  #: the server host's socket table
    SHARED_STORE = "shared store"  #: a database or cache outside the server process
    TOKEN = "token"  #: state the client carries, signed or opaque
    PACKET = "the packet"  #: state carried in this packet alone
    NOBODY = "nobody"  #: state that was needed and is gone


class Action(Enum):
    CREATES = "creates"  #: this packet makes someone hold new state
    USES = "uses"  #: this packet is handled with state someone already holds
    ENDS = "ends"  #: this packet completes and frees state
    MISSING = "finds missing"  #: this packet needs state that nobody holds
    NONE = "none"  #: no state is involved


class Kind(Enum):
    """What the annotator found a packet to do with state: the fact a row's sentence renders."""

    NOT_DECODED = "not decoded"  #: the headers could not be read
    NOT_ANNOTATED = "not annotated"  #: a protocol the annotator does not follow
    UDP_DATAGRAM = "udp datagram"  #: a datagram that stands alone
    UDP_TO_CLOSED_PORT = "udp to closed port"  #: the datagram an ICMP port unreachable names
    DNS_MALFORMED = "dns malformed"  #: on a DNS port but not a DNS message
    DNS_QUERY = "dns query"  #: a query: the client's pending entry is created
    DNS_RETRANSMIT = "dns retransmit"  #: the same query again (same source, id, question)
    DNS_MATCHED = "dns matched"  #: an answer matched to its pending query, which ends
    DNS_QUESTION_MISMATCH = "dns question mismatch"  #: right id, other question: dropped
    DNS_ALREADY_ANSWERED = "dns already answered"  #: id answered before: nothing pending
    DNS_WRONG_SOURCE = "dns wrong source"  #: pending id, but from another address or port
    DNS_UNKNOWN_ID = "dns unknown id"  #: no pending query has this id: forged, or late
    DNS_QUERY_UNSEEN = "dns query unseen"  #: an answer whose query is not in the capture
    DNS_TO_CLOSED_SOCKET = "dns to closed socket"  #: would match, but the socket is gone (ICMP)
    DNS_RELAYED = "dns relayed"  #: the same query again on another path: a middlebox's leg
    DNS_RELAY_ANSWER = "dns relay answer"  #: an answer to a relayed query, at the middlebox
    QUIC_VERSION_NEGOTIATION = "quic version negotiation"  #: the server lists its versions
    QUIC_RETRY = "quic retry"  #: the server keeps nothing; the token carries the state
    QUIC_TOKEN_ECHO = "quic token echo"  #: an Initial that brings the Retry token back
    QUIC_CLIENT_KEY = "quic client key"  #: a client's first Initial: its own key, random DCID
    QUIC_SERVER_KEY = "quic server key"  #: the server's first packet: its key (SCID)
    QUIC_LOOKUP = "quic lookup"  #: the DCID is the key of the receiver's connection table
    QUIC_ROTATION = "quic rotation"  #: (also) a new DCID on a known path
    QUIC_MIGRATION = "quic migration"  #: (also) a known DCID on a new path
    QUIC_RELAYED = "quic relayed"  #: (also) the same datagram again on another path: a relay
    QUIC_UNANSWERED = "quic unanswered"  #: no reply, then a new handshake: dropped, or ACK-only
    TCP_OPEN = "tcp open"  #: SYN or SYN/ACK: a connection entry keyed by the 4-tuple
    TCP_SEGMENT = "tcp segment"  #: data or ACK on a connection
    TCP_CLOSE = "tcp close"  #: FIN, or a segment that ends an entry
    TCP_OUT_OF_WINDOW = "tcp out of window"  #: far outside what the receiver expects
    TCP_RST = "tcp rst"  #: a reset of a connection
    TCP_RST_NO_CONNECTION = "tcp rst no connection"  #: RST answering a segment: no socket
    HTTP_TOKEN = "http token"  #: the state came with the request: a bearer token
    HTTP_SESSION_CREATED = "http session created"  #: Set-Cookie sessionId: a session is made
    HTTP_SESSION_LOOKUP = "http session lookup"  #: cookie sessionId: the state is looked up
    HTTP_SELF_CONTAINED = "http self-contained"  #: the message carries its own state
    ICMP_PORT_UNREACHABLE = "icmp port unreachable"  #: no socket bound at the target
    ICMP_OTHER = "icmp other"  #: another control message


@dataclass(frozen=True)
class Fact:
    """What a packet does to state, as data; `render` turns it into the row's sentence."""

    kind: Kind
    refs: tuple[int, ...] = ()  #: the packets it refers to (the query, the ICMP error)
    key: str = ""  #: the key of the state: a query id, a DCID, a 4-tuple
    moves: tuple[Transition, ...] = ()  #: TCP state transitions this packet causes (model)
    also: tuple[Kind, ...] = ()  #: further facts about the same packet (rotation, migration)
    values: dict = field(default_factory=dict, compare=False)  #: what the sentence names

    def shows(self, kind: Kind) -> bool:
        return self.kind is kind or kind in self.also


@dataclass(frozen=True)
class Row:
    number: int
    time: float  #: seconds since the first packet
    src: str
    dst: str
    proto: str
    summary: str
    action: Action
    holders: tuple[Holder, ...]
    fact: Fact  #: what this packet does to state; the sentence is rendered from it
    flow: str = ""  #: the conversation this packet belongs to ("tcp 3", "quic 1", "dns a↔b")
    fields: dict = field(default_factory=dict, compare=False)  #: decoded values, for --json

    @property
    def state(self) -> str:
        """The "where state lives" sentence, rendered from the fact."""
        return render(self.fact)

    def shows(self, kind: Kind) -> bool:
        return self.fact.shows(kind)

    def where(self) -> str:
        return f"{self.action.value}: {self.state}" if self.action is not Action.NONE \
            else self.state


#: One sentence per kind; `{...}` names a fact's values (and `refs`, `key`, `moves`, `ref`).
_CONNECTION = "the connection itself is the kernels': {flight}{expects}{moves}"

TEMPLATES: dict[Kind, str] = {
    Kind.NOT_DECODED: "not decoded: {error}",
    Kind.NOT_ANNOTATED: "not annotated",
    Kind.UDP_DATAGRAM: "no connection: this datagram stands alone; only the receiver's port "
                       "binding (its kernel) is needed",
    Kind.UDP_TO_CLOSED_PORT: "arrives at {target}, where no socket is bound any more: the kernel "
                             "answers with ICMP port unreachable ({ref})",
    Kind.DNS_MALFORMED: "not a DNS message: the receiver drops it, no state changes",
    Kind.DNS_QUERY: "pending query {key} ({question}), waiting for {server} → client app memory; "
                    "the answer can only land on {client}'s socket → client kernel",
    Kind.DNS_RETRANSMIT: "retransmission {copies} of query {ref}, same id: the client's retry "
                         "timer fired; its retry count and timer live in client app memory, no "
                         "packet carries them",
    Kind.DNS_MATCHED: "client app memory matches it to query {ref} (source {server}, id {key}, "
                      "question) and deletes the entry; RTT {rtt_ms:.0f} ms{copies_note}",
    Kind.DNS_QUESTION_MISMATCH: "id {key} matches query {ref} but the question ({question}) does "
                                "not ({asked}) → client drops it",
    Kind.DNS_ALREADY_ANSWERED: "id {key} was already answered by {ref}: the entry is gone → "
                               "client drops it",
    Kind.DNS_WRONG_SOURCE: "id {key} is pending (query {ref}) but for {server}, not {source} → "
                           "client drops it (spoofed source?)",
    Kind.DNS_UNKNOWN_ID: "no pending query has id {key} (pending for {source}: {pending}) → "
                         "client drops it (forged, or late)",
    Kind.DNS_QUERY_UNSEEN: "its query is not in this capture; the client matches it by source "
                           "{source}, id {key} and question in its own memory",
    Kind.DNS_TO_CLOSED_SOCKET: "would match a pending query, but the client closed its socket: "
                               "nobody holds the entry, and {target} is unbound; the kernel "
                               "answers with ICMP port unreachable ({ref})",
    Kind.DNS_RELAYED: "the same query as {ref}, sent again by a middlebox from its own socket "
                      "({source}): a relay leg, no new pending entry; the client's entry is the "
                      "one {ref} made",
    Kind.DNS_RELAY_ANSWER: "answers the relayed query {ref}: it reaches the middlebox at {target}, "
                           "not the client; the client's entry waits until the middlebox "
                           "forwards it",
    Kind.QUIC_VERSION_NEGOTIATION: "the server keeps nothing: it lists the versions it speaks",
    Kind.QUIC_RETRY: "the server keeps NOTHING for this client: the token holds its address and "
                     "original DCID, and comes back in the next Initial (like a JWT)",
    Kind.QUIC_TOKEN_ECHO: "the echoed token brings back the state the server did not keep; only "
                          "now does it create connection #{conn}",
    Kind.QUIC_CLIENT_KEY: "client's table gets key {key} (client app memory) for connection "
                          "#{conn}; the DCID is random: no server entry has it yet",
    Kind.QUIC_SERVER_KEY: "server's table gets key {key} (server app memory) for connection "
                          "#{conn}; DCID {dcid} is the client's key",
    Kind.QUIC_LOOKUP: "DCID {key} is the key of the {receiver}'s connection table ({receiver} "
                      "app memory) → connection #{conn}",
    Kind.QUIC_ROTATION: "a DCID new to this capture on a known path: the connection switched to "
                        "a CID issued in an encrypted NEW_CONNECTION_ID (rotation)",
    Kind.QUIC_MIGRATION: "a new path ({address}) with a known DCID: found by CID, not by 4-tuple "
                         "(migration)",
    Kind.QUIC_RELAYED: "the same datagram as {ref}, forwarded on another path: a relay in the "
                       "middle (two legs of one connection), not a migration",
    Kind.QUIC_UNANSWERED: "DCID {key} names connection #{conn}, not found in the server's table "
                          "here: no reply followed, and the client started a new handshake with "
                          "the same server ({ref}). Either the server no longer held the key and "
                          "dropped it, or the packet needed no reply (an ACK-only packet looks "
                          "the same, encrypted): the capture cannot tell which",
    Kind.TCP_OPEN: "{who} a connection entry keyed by the 4-tuple, with its initial sequence "
                   "number{moves}",
    Kind.TCP_SEGMENT: "{flight}{expects}{moves}",
    Kind.TCP_CLOSE: "{flight}{expects}{moves}",
    Kind.TCP_OUT_OF_WINDOW: "seq {seq} is far outside what the {receiver} kernel expects "
                            "({expects}): no connection state fits it, so it is not delivered "
                            "(the kernel may answer with an ACK)",
    Kind.TCP_RST: "RST: the {sender} kernel has no connection for this 4-tuple (or drops it "
                  "now){moves}",
    Kind.TCP_RST_NO_CONNECTION: "RST answering {ref}: no connection existed — no socket at "
                                "{sender} for this 4-tuple, so its kernel resets (RFC 9293 "
                                "section 3.10.7.1){moves}",
    Kind.HTTP_TOKEN: "state came WITH the request: a signed token (who you are, until when); no "
                     "lookup needed to know the user; " + _CONNECTION,
    Kind.HTTP_SESSION_CREATED: "a new session: the client gets only its key (cookie "
                               "sessionId); the session stays in the server's memory or a shared "
                               "store; " + _CONNECTION,
    Kind.HTTP_SESSION_LOOKUP: "state is LOOKED UP by the key it carries (cookie sessionId) in "
                              "whatever holds sessions: this backend's memory or a shared store; "
                              + _CONNECTION,
    Kind.HTTP_SELF_CONTAINED: "HTTP: the message carries its own state (URL, headers, body); "
                              + _CONNECTION,
    Kind.ICMP_PORT_UNREACHABLE: "no socket is bound to {target}: the kernel there answers the "
                                "datagram{about} with this error; nobody holds the state it was "
                                "for",
    Kind.ICMP_OTHER: "control message",
}


def render(fact: Fact) -> str:
    """The sentence for a fact, from `TEMPLATES` (and each `also` fact's sentence after it)."""
    values = {"key": fact.key, "refs": ", ".join(f"#{n}" for n in fact.refs),
              "ref": f"#{fact.refs[0]}" if fact.refs else "", "moves": _moves(fact),
              **fact.values}
    text = TEMPLATES[fact.kind].format(**values)
    for kind in fact.also:
        text += "; " + TEMPLATES[kind].format(**values)
    return text


def _moves(fact: Fact) -> str:
    if fact.values.get("states_known") is False:
        return (" [states unknown: the handshake is not in this capture; client and server are "
                "guessed from the ports]")
    moves = "; ".join(f"{t.role.value} {t.old.value}→{t.new.value}" for t in fact.moves)
    return f" [{moves}]" if moves else ""


@dataclass
class _Query:
    number: int
    time: float
    question: str
    copies: int = 1  #: retransmissions seen (same source, destination, id and question)


class Annotator:
    """Feed decoded packets in capture order; rows come out in the same order."""

    def __init__(self, dns_ports: Iterable[int] = DNS_PORTS, max_flows: int = 0) -> None:
        self.dns_ports = frozenset(dns_ports)
        self._t0: float | None = None
        self._pending: OrderedDict[tuple[str, str, int], _Query] = OrderedDict()
        self._answered: OrderedDict[tuple[str, str, int], int] = OrderedDict()
        self._window: deque[tuple[Row, Decoded]] = deque()
        self._tcp_observer = TcpObserver(max_flows)
        self._quic_cids: dict[bytes, int] = {}  # connection ID -> QUIC connection number
        self._quic_paths: dict[frozenset[str], int] = {}  # 4-tuple -> QUIC connection number
        self._quic_servers: set[str] = set()  # endpoints that received a client's Initial
        self._quic_count = 0
        self._quic_keyed: set[int] = set()  # QUIC connections the server has created
        self._quic_cid_len = 8  # aioquic's and most stacks' length; learned from long headers
        self._quic_recent: OrderedDict[bytes, tuple[frozenset[str], int]] = OrderedDict()
        self._dns_recent: OrderedDict[bytes, dict[tuple[str, str], int]] = OrderedDict()
        self._dns_relay_paths: OrderedDict[tuple[str, str], None] = OrderedDict()  # relay legs
        self._dns_legs: OrderedDict[tuple[str, str, int], int] = OrderedDict()  # relayed queries
        self._quic_unanswered: dict[int, list[int]] = {}  # conn -> to-server packets, no reply
        self._quic_ends: dict[int, tuple[str, str]] = {}  # conn -> (client host, server)
        self._tcp_last: OrderedDict[int, int] = OrderedDict()  # flow -> its last packet
        self._count = 0

    def feed(self, d: Decoded) -> list[Row]:
        """Annotate one packet; return the rows that have left the window (in order)."""
        return [row for row, _ in self.feed_pairs(d)]

    def feed_pairs(self, d: Decoded) -> list[tuple[Row, Decoded]]:
        """Like `feed`, with each row's decoded packet."""
        self._count += 1
        if self._t0 is None:
            self._t0 = d.time
        row = self._annotate(d, self._count, d.time - self._t0)
        self._window.append((row, d))
        out = []
        while len(self._window) > WINDOW:
            out.append(self._window.popleft())
        return out

    def finish(self) -> list[Row]:
        return [row for row, _ in self.finish_pairs()]

    def finish_pairs(self) -> list[tuple[Row, Decoded]]:
        out = list(self._window)
        self._window.clear()
        return out

    @property
    def tcp(self) -> TcpObserver:
        """The TCP connection state rebuilt so far (for --flows)."""
        return self._tcp_observer

    # -- dispatch ---------------------------------------------------------------------------

    def _annotate(self, d: Decoded, number: int, rel: float) -> Row:
        self._flow, self._extra = "", {}
        row = self._annotate_protocol(d, number, rel)
        fields: dict = {"length": d.length, "sport": d.sport, "dport": d.dport}
        if d.tcp is not None:
            fields.update(tcp_seq=d.tcp.seq, tcp_ack=d.tcp.ack, tcp_flags=d.tcp.flags)
        if d.icmp_type is not None:
            fields.update(icmp_type=d.icmp_type, icmp_code=d.icmp_code)
        fields.update(self._extra)
        summary = row.summary
        if d.orig_len > d.length:
            fields["truncated"] = True
            summary += f" [cut: {d.length} of {d.orig_len} bytes captured]"
        flow = self._flow or (f"{row.proto.lower()} " + "↔".join(sorted((row.src, row.dst))))
        return replace(row, summary=summary, flow=flow, fields=fields)

    def _annotate_protocol(self, d: Decoded, number: int, rel: float) -> Row:
        base = {"number": number, "time": rel, "src": d.endpoint("src"),
                "dst": d.endpoint("dst"), "proto": d.transport}
        if d.error and d.sport is None and d.icmp_type is None:
            return Row(**base, summary=d.error, action=Action.NONE, holders=(),
                       fact=Fact(Kind.NOT_DECODED, values={"error": d.error}))
        if d.proto == PROTO_UDP and self._is_dns(d):
            return self._dns(d, base)
        if d.proto == PROTO_UDP and (quic := self._quic_header(d)) is not None:
            return self._quic(d, base, quic)
        if d.proto == PROTO_UDP:
            text = _printable(d.payload)
            if text:
                self._extra["udp_text"] = text
            return Row(**base, summary=f"UDP {len(d.payload)} bytes" + (f" {text!r}" if text
                                                                         else ""),
                       action=Action.NONE, holders=(Holder.PACKET,),
                       fact=Fact(Kind.UDP_DATAGRAM))
        if d.tcp is not None:
            return self._tcp(d, base)
        if d.icmp_type is not None:
            return self._icmp(d, base)
        return Row(**base, summary=d.error or "IP", action=Action.NONE, holders=(),
                   fact=Fact(Kind.NOT_ANNOTATED))

    # -- DNS -------------------------------------------------------------------------------

    def _is_dns(self, d: Decoded) -> bool:
        if d.sport in self.dns_ports or d.dport in self.dns_ports:
            return True
        return _parse_dns(d.payload) is not None

    def _dns(self, d: Decoded, base: dict) -> Row:
        base = {**base, "proto": "DNS"}
        msg = _parse_dns(d.payload)
        if msg is None:
            return Row(**base, summary=f"DNS? {len(d.payload)} bytes, malformed",
                       action=Action.MISSING, holders=(Holder.NOBODY,),
                       fact=Fact(Kind.DNS_MALFORMED))
        qid, is_response, question, rcode, answers = msg
        src, dst = d.endpoint("src"), d.endpoint("dst")
        client, server = (dst, src) if is_response else (src, dst)
        self._flow = f"dns {client}↔{server}"
        self._extra = {"dns_id": qid, "dns_response": is_response, "dns_question": question}
        if not is_response:
            relay = self._dns_relay(d.payload, (src, dst), base["number"])
            if relay is not None:
                self._dns_legs[(src, dst, qid)] = base["number"]
                self._bound(self._dns_legs)
                return Row(**base, summary=f"query {qid:#06x} {question} (relayed)",
                           action=Action.NONE, holders=(Holder.PACKET,),
                           fact=Fact(Kind.DNS_RELAYED, (relay,) if relay else (), f"{qid:#06x}",
                                     values={"source": src}))
            return self._dns_query(d, base, qid, question)
        summary = f"answer {qid:#06x} {question} {rcode}" + (f" {answers}" if answers else "")
        leg = self._dns_legs.pop((dst, src, qid), 0)
        if leg:
            return Row(**base, summary=summary, action=Action.NONE, holders=(Holder.PACKET,),
                       fact=Fact(Kind.DNS_RELAY_ANSWER, (leg,), f"{qid:#06x}",
                                 values={"target": dst}))
        return self._dns_answer(d, {**base, "summary": summary}, qid, question)

    def _dns_relay(self, payload: bytes, path: tuple[str, str], number: int) -> int | None:
        """None for a query the client sent itself; else the packet it relays (0: unseen). A
        path is a middlebox's leg once a query first appears on it after another path carried
        the same bytes; a client sending the same bytes again on its own path retransmits."""
        seen = self._dns_recent.pop(payload, {})
        before_here = path in seen
        others = [n for p, n in seen.items() if p != path]
        seen[path] = number
        self._dns_recent[payload] = seen
        while len(self._dns_recent) > WINDOW:
            self._dns_recent.popitem(last=False)
        if path not in self._dns_relay_paths:
            if not others or before_here:
                return None  # the client's own query, or its retransmission
            self._dns_relay_paths[path] = None
            self._bound(self._dns_relay_paths)
        return max(others, default=0)

    def _dns_query(self, d: Decoded, base: dict, qid: int, question: str) -> Row:
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

    def _dns_answer(self, d: Decoded, common: dict, qid: int, question: str) -> Row:
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

    # -- QUIC ------------------------------------------------------------------------------

    def _quic_header(self, d: Decoded) -> QuicHeader | None:
        h = decode_header(d.payload, self._quic_cid_len)
        if h is None:
            return None
        if h.long:
            return h
        path = frozenset((d.endpoint("src"), d.endpoint("dst")))
        return h if (path in self._quic_paths or h.dcid in self._quic_cids) else None

    def _quic(self, d: Decoded, base: dict, h: QuicHeader) -> Row:
        src, dst = d.endpoint("src"), d.endpoint("dst")
        path = frozenset((src, dst))
        base = {**base, "proto": "QUIC"}
        scid = f" SCID={h.scid.hex()}" if h.scid else ""
        base["summary"] = f"{h.packet_type} DCID={h.dcid.hex()}{scid}" + (
            f" token={len(h.token)}B" if h.token else "")
        if h.packet_type == "Version Negotiation":
            return Row(**base, action=Action.NONE, holders=(Holder.PACKET,),
                       fact=Fact(Kind.QUIC_VERSION_NEGOTIATION))
        if h.scid:
            self._quic_cid_len = len(h.scid) or self._quic_cid_len
        self._extra = {"quic_type": h.packet_type, "quic_dcid": h.dcid.hex(),
                       "quic_scid": h.scid.hex() if h.scid is not None else None}
        if h.packet_type == "Initial" and dst not in self._quic_servers and \
                src not in self._quic_servers:
            self._quic_servers.add(dst)
        to_server = dst in self._quic_servers
        relay = self._relayed_copy(self._quic_recent, d.payload, path, base["number"])
        conn = self._quic_cids.get(h.dcid, self._quic_paths.get(path))
        also: list[Kind] = [Kind.QUIC_RELAYED] if relay else []
        if conn is None:
            self._quic_count += 1
            conn = self._quic_count
        elif h.dcid not in self._quic_cids and not h.long:
            also.append(Kind.QUIC_ROTATION)
        if path not in self._quic_paths and self._quic_paths and not h.long \
                and h.dcid in self._quic_cids and not relay:
            also.append(Kind.QUIC_MIGRATION)
        self._quic_paths[path] = conn
        self._quic_cids.setdefault(h.dcid, conn)
        self._flow = f"quic {conn}"
        values = {"conn": conn, "dcid": h.dcid.hex(), "address": src if to_server else dst,
                  "receiver": "server" if to_server else "client"}
        row = self._quic_row(base, h, conn, to_server, Fact(
            Kind.QUIC_LOOKUP, (relay,) if relay else (), h.dcid.hex(), also=tuple(also),
            values=values))
        self._track_replies(row, conn, to_server, src, dst)
        return row

    def _quic_row(self, base: dict, h: QuicHeader, conn: int, to_server: bool,
                  lookup: Fact) -> Row:
        values = lookup.values
        if h.packet_type == "Retry":
            if h.scid:
                self._quic_cids[h.scid] = conn
            return Row(**base, action=Action.NONE, holders=(Holder.TOKEN,),
                       fact=Fact(Kind.QUIC_RETRY, key=h.dcid.hex()))
        if h.packet_type == "Initial" and to_server and conn not in self._quic_keyed:
            known = h.scid in self._quic_cids
            if h.scid:
                self._quic_cids[h.scid] = conn
            if h.token:
                return Row(**base, action=Action.USES, holders=(Holder.TOKEN, Holder.SERVER_APP),
                           fact=Fact(Kind.QUIC_TOKEN_ECHO, key=h.dcid.hex(), values=values))
            if not known:
                return Row(**base, action=Action.CREATES, holders=(Holder.CLIENT_APP,),
                           fact=Fact(Kind.QUIC_CLIENT_KEY, key=h.scid.hex() if h.scid else "?",
                                     values=values))
        if h.long and h.scid and not to_server and h.scid not in self._quic_cids:
            self._quic_cids[h.scid] = conn
            self._quic_keyed.add(conn)
            return Row(**base, action=Action.CREATES, holders=(Holder.SERVER_APP,),
                       fact=Fact(Kind.QUIC_SERVER_KEY, key=h.scid.hex(), values=values))
        holder = Holder.SERVER_APP if to_server else Holder.CLIENT_APP
        return Row(**base, action=Action.USES, holders=(holder,),
                   fact=lookup)

    @staticmethod
    def _relayed_copy(recent: OrderedDict, payload: bytes, path: object, number: int) -> int:
        """The packet number of the same datagram seen just before on another path (a relay
        forwards the bytes unchanged), or 0."""
        seen = recent.pop(payload, None)
        recent[payload] = (path, number)
        while len(recent) > WINDOW:
            recent.popitem(last=False)
        return seen[1] if seen is not None and seen[0] != path else 0

    def _track_replies(self, row: Row, conn: int, to_server: bool, client: str,
                       server: str) -> None:
        """Remember a connection's packets to the server that no reply has followed; when the
        same client host starts a new connection to the same server, those were dropped by a
        server that forgot it."""
        if not to_server:
            self._quic_unanswered.pop(conn, None)
            return
        if row.fact.kind is Kind.QUIC_LOOKUP and not row.fact.shows(Kind.QUIC_RELAYED):
            self._quic_unanswered.setdefault(conn, []).append(row.number)
            return
        if row.fact.kind is Kind.QUIC_CLIENT_KEY:
            ends = (client.rsplit(":", 1)[0], server)
            for old, numbers in list(self._quic_unanswered.items()):
                if old != conn and self._quic_ends.get(old) == ends:
                    self._amend_unanswered(numbers, row.number)
                    del self._quic_unanswered[old]
            self._quic_ends[conn] = ends

    def _amend_unanswered(self, numbers: list[int], new_handshake: int) -> None:
        wanted = set(numbers)
        for i, (row, d) in enumerate(self._window):
            if row.number in wanted:
                fact = replace(row.fact, kind=Kind.QUIC_UNANSWERED, refs=(new_handshake,),
                               also=())
                self._window[i] = (replace(row, action=Action.NONE, holders=(), fact=fact), d)

    # -- TCP -------------------------------------------------------------------------------

    def _tcp(self, d: Decoded, base: dict) -> Row:
        tcp = d.tcp
        view = self._tcp_observer.feed(d, base["number"])
        self._flow = f"tcp {view.flow}"
        flags = "/".join(tcp.flag_names()) or "none"
        ack = f" ack={view.rel_ack}" if view.rel_ack is not None else ""
        base["summary"] = f"[{flags}] seq={view.rel_seq}{ack} len={view.length}"
        http = _http_line(d.payload)
        if http:
            base["summary"] += f" {http}"
            self._extra["http"] = http
        dns_tcp = _parse_dns(d.payload[2:]) if 53 in (d.sport, d.dport) and len(d.payload) > 14 \
            else None
        if dns_tcp is not None:  # RFC 1035 section 4.2.2: a two-byte length, then the message
            qid, is_response, question, rcode, _ = dns_tcp
            base["summary"] += f" DNS {'answer' if is_response else 'query'} {qid:#06x} {question}"
            self._extra = {"dns_id": qid, "dns_response": is_response, "dns_question": question}
        self._extra["tcp_len"] = view.length
        sender = view.sender_role.value
        receiver = "server" if sender == "client" else "client"
        values = {"sender": sender, "receiver": receiver,
                  "states_known": view.states_known, "seq": view.rel_seq,
                  "expects": view.expects}
        moves = view.transitions if view.states_known else ()
        if not view.in_window:
            return Row(**base, action=Action.MISSING, holders=(Holder.NOBODY,),
                       fact=Fact(Kind.TCP_OUT_OF_WINDOW, values=values))
        if tcp.flags & 0x04:
            if view.first_from_sender:  # RFC 9293 section 3.10.7.1: no socket, so RST
                answered = self._tcp_last.get(view.flow, 0)
                moves = tuple(t for t in moves if t.endpoint != base["src"])
                self._forget_moves_of(base["src"], answered)
                return Row(**base, action=Action.MISSING, holders=(Holder.NOBODY,),
                           fact=Fact(Kind.TCP_RST_NO_CONNECTION,
                                     (answered,) if answered else (), moves=moves, values={
                                         **values, "sender": base["src"]}))
            return Row(**base, action=Action.MISSING, holders=(Holder.NOBODY,),
                       fact=Fact(Kind.TCP_RST, moves=moves, values=values))
        self._tcp_last[view.flow] = base["number"]
        self._bound_tcp_last()
        holders = (Holder.CLIENT_KERNEL, Holder.SERVER_KERNEL)
        if tcp.flags & 0x02:
            who = "client kernel creates" if not tcp.flags & 0x10 else "server kernel holds"
            return Row(**base, action=Action.CREATES, holders=holders,
                       fact=Fact(Kind.TCP_OPEN, moves=moves, values={**values, "who": who}))
        values["flight"] = (f"{view.in_flight} B in flight {sender}→{receiver}; "
                            if view.in_flight else "")
        # Unknown states: no kernel is known to hold this connection, so nothing it "expects".
        values["expects"] = f"{receiver} kernel expects seq {view.expects} next" \
            if view.states_known else "no kernel state known for it"
        if http:
            kind, action, http_holders = _http_state(d.payload)
            return Row(**base, action=action, holders=(*http_holders, *holders),
                       fact=Fact(kind, moves=moves, values=values))
        ends = tcp.flags & 0x01 or any(t.new.value in ("CLOSED", "TIME_WAIT") for t in moves)
        return Row(**base, action=Action.ENDS if ends else Action.USES, holders=holders,
                   fact=Fact(Kind.TCP_CLOSE if ends else Kind.TCP_SEGMENT, moves=moves,
                             values=values))

    def _forget_moves_of(self, endpoint: str, number: int) -> None:
        """A port that answers with RST never had a connection: the moves the model gave it at
        packet `number` (e.g. LISTEN→SYN_RECV for a SYN to a port with no listener) are void."""
        for i, (row, d) in enumerate(self._window):
            if row.number == number and row.fact.moves:
                kept = tuple(t for t in row.fact.moves if t.endpoint != endpoint)
                self._window[i] = (replace(row, fact=replace(row.fact, moves=kept)), d)

    def _bound_tcp_last(self) -> None:
        while len(self._tcp_last) > MAX_PENDING:
            self._tcp_last.popitem(last=False)

    # -- ICMP ------------------------------------------------------------------------------

    def _icmp(self, d: Decoded, base: dict) -> Row:
        q = d.quoted
        v6 = d.proto != PROTO_ICMP
        unreachable = (d.icmp_type, d.icmp_code) == ((1, 4) if v6 else (3, 3))
        name = "ICMPv6" if v6 else "ICMP"
        if q is None or not unreachable:
            return Row(**base, summary=f"{name} type {d.icmp_type} code {d.icmp_code}",
                       action=Action.NONE, holders=(), fact=Fact(Kind.ICMP_OTHER))
        target = f"{q.dst}:{q.dport}"
        origin = f"{q.src}:{q.sport}"
        cause = self._amend_cause(origin, target, base["number"])
        return Row(**base, summary=f"{name} port unreachable for {origin} → {target}",
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


_HTTP_STARTS = (b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"PATCH ", b"OPTIONS ",
                b"HTTP/1.")


def _http_state(payload: bytes) -> tuple[Kind, Action, tuple[Holder, ...]]:
    """Where an HTTP message's application state is: in it, or looked up by a key it carries."""
    head = payload.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
    lines = head.split("\r\n")
    headers = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if headers.get("authorization", "").startswith("bearer "):
        return Kind.HTTP_TOKEN, Action.USES, (Holder.TOKEN,)
    if "set-cookie" in head and "sessionid=" in head:
        return Kind.HTTP_SESSION_CREATED, Action.CREATES, (Holder.SERVER_APP,
                                                           Holder.SHARED_STORE)
    if "sessionid=" in headers.get("cookie", ""):
        return Kind.HTTP_SESSION_LOOKUP, Action.USES, (Holder.SERVER_APP, Holder.SHARED_STORE)
    return Kind.HTTP_SELF_CONTAINED, Action.USES, (Holder.PACKET,)


def _printable(payload: bytes, limit: int = 40) -> str | None:
    """A short text preview of a payload that is printable ASCII, else None."""
    head = payload[:limit]
    if not head or not all(32 <= b < 127 for b in head):
        return None
    return head.decode("ascii") + ("…" if len(payload) > limit else "")


def _http_line(payload: bytes) -> str | None:
    """The request or status line of an HTTP/1.x message, if the payload starts one."""
    if not payload.startswith(_HTTP_STARTS):
        return None
    line = payload.split(b"\r\n", 1)[0][:120]
    return line.decode("latin-1")


def _parse_dns(payload: bytes) -> tuple[int, bool, str, str, str] | None:
    """(id, is_response, question, rcode, answers) or None when the payload is not DNS."""
    if len(payload) < 12 or int.from_bytes(payload[4:6], "big") != 1:
        return None
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
    import dns.rdatatype

    question = f"{q.name} {dns.rdatatype.to_text(q.rdtype)}"
    answers = " ".join(rd.to_text() for rrset in msg.answer for rd in rrset)
    return msg.id, bool(msg.flags & 0x8000), question, dns.rcode.to_text(msg.rcode()), answers


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
    return annotate((decode(r.data, r.linktype, r.time, r.orig_len) for r in records), dns_ports)


def annotate_file(path: str | os.PathLike[str],
                  dns_ports: Iterable[int] = DNS_PORTS) -> Iterator[Row]:
    """Annotate a capture file, streaming. Raises PcapError after the last readable packet."""
    return annotate_records(read_pcap(path), dns_ports)
