"""DNS over UDP, sans-IO: a lab zone server and a client that matches answers to queries.

Where state lives: in the client. A DNS client keeps a pending-query table in its own memory (query
ID, question, the server it asked, when it asked); its kernel keeps one thing, the port binding of
its UDP socket, which is where answers must arrive. UDP itself keeps nothing (RFC 768). The server
keeps nothing between queries (RFC 1035 section 4.1.1: the ID is "copied [into] the corresponding
reply and can be used by the requester to match up replies to outstanding queries"); this lab server
holds an answer only while it delays it, so answers come back in a different order than asked.

Matching follows dnspython (`dns.query.udp` then `Message.is_response`): the source address and port
first, then the ID, then the question (RFC 5452 section 9.1 asks resolvers for the same checks).
Nothing here touches a socket or a clock: time comes in as `now`.

The lab server as its own process is `protolab.net.dns_server`.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from protolab.protocols.state import ProtocolError, advance

Address = tuple[str, int]


class Role(Enum):
    CLIENT = "client"  #: asks, and keeps the pending-query table
    SERVER = "server"  #: answers, and keeps nothing between queries


class QueryState(Enum):
    IDLE = "idle"  #: not sent yet
    PENDING = "pending"  #: client: waiting for an answer; server: holding a delayed answer
    ANSWERED = "answered"  #: done: the entry can be forgotten
    TIMED_OUT = "timed out"  #: client gave up waiting
    ABANDONED = "abandoned"  #: client closed its socket with the query still pending


class Move(Enum):
    SEND = "send"  #: client sends the query
    RECEIVE = "receive"  #: server receives a query
    ANSWER = "answer"  #: client: a matching answer arrived; server: the answer is sent
    TIMEOUT = "timeout"  #: client's timer for this query fired
    CLOSE = "close"  #: client closed its socket
    RETRANSMIT = "retransmit"  #: client's retry timer fired: the same query is sent again


#: The life of one query on each side. Printable: `protolab.state.table_rows(QUERY_TRANSITIONS)`.
QUERY_TRANSITIONS = {
    (Role.CLIENT, QueryState.IDLE): {Move.SEND: QueryState.PENDING},
    (Role.CLIENT, QueryState.PENDING): {
        Move.RETRANSMIT: QueryState.PENDING,
        Move.ANSWER: QueryState.ANSWERED,
        Move.TIMEOUT: QueryState.TIMED_OUT,
        Move.CLOSE: QueryState.ABANDONED,
    },
    (Role.SERVER, QueryState.IDLE): {Move.RECEIVE: QueryState.PENDING},
    (Role.SERVER, QueryState.PENDING): {Move.ANSWER: QueryState.ANSWERED},
}


class RejectReason(Enum):
    WRONG_SOURCE = "wrong source"  #: not from the address and port the query went to
    MALFORMED = "malformed"  #: not a DNS message
    NOT_A_RESPONSE = "not a response"  #: QR bit clear
    UNKNOWN_ID = "unknown id"  #: no pending query has this ID (forged, or late)
    WRONG_QUESTION = "wrong question"  #: ID matches, question does not


# -- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuerySent:
    qid: int
    name: str
    rdtype: str
    server: Address
    order: int


@dataclass(frozen=True)
class AnswerMatched:
    qid: int
    name: str
    rdtype: str
    rcode: str
    answers: tuple[str, ...]
    source: Address
    rtt: float
    order_sent: int
    order_answered: int
    attempts: int = 1  #: copies sent; the RTT cannot tell which one was answered (Karn)


@dataclass(frozen=True)
class AnswerRejected:
    reason: RejectReason
    qid: int | None
    source: Address
    detail: str


@dataclass(frozen=True)
class QueryRetransmitted:
    qid: int
    name: str
    attempt: int  #: 2 for the first retransmission
    after: float  #: seconds since the first copy was sent


@dataclass(frozen=True)
class QueryTimedOut:
    qid: int
    name: str


@dataclass(frozen=True)
class QueryAbandoned:
    qid: int
    name: str


Event = (QuerySent | AnswerMatched | AnswerRejected | QueryRetransmitted | QueryTimedOut
         | QueryAbandoned)


# -- the zone -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZoneEntry:
    name: str
    rdtype: str
    values: tuple[str, ...]
    delay: float  #: seconds the lab server waits before answering


#: Delays differ so that answers to queries sent together come back in another order.
LAB_ZONE: tuple[ZoneEntry, ...] = (
    ZoneEntry("alpha.lab.", "A", ("10.0.0.1",), 0.16),
    ZoneEntry("bravo.lab.", "A", ("10.0.0.2",), 0.02),
    ZoneEntry("charlie.lab.", "TXT", ('"state lives in the client"',), 0.12),
    ZoneEntry("delta.lab.", "A", ("10.0.0.4",), 0.0),
    ZoneEntry("echo.lab.", "A", ("10.0.0.5",), 0.08),
    ZoneEntry("foxtrot.lab.", "TXT", ('"the server keeps nothing"',), 0.05),
    ZoneEntry("bank.lab.", "A", ("10.0.0.10",), 0.15),
    ZoneEntry("late.lab.", "A", ("10.0.0.11",), 0.1),
)


# -- server ---------------------------------------------------------------------------------------


@dataclass
class ServerCounters:
    queries: int = 0  #: well-formed queries received
    answers: int = 0  #: answers sent (including FORMERR and NXDOMAIN)
    garbage: int = 0  #: datagrams that were not a DNS query


class DnsServer:
    """The lab zone's server. Keeps no state between queries; a delayed answer waits in `_due`."""

    def __init__(self, zone: tuple[ZoneEntry, ...] = LAB_ZONE, ttl: int = 60,
                 delays: bool = True, negative_ttl: int | None = None) -> None:
        self._zone = {(dns.name.from_text(e.name), dns.rdatatype.from_text(e.rdtype)): e
                      for e in zone}
        self._names = {dns.name.from_text(e.name) for e in zone}
        self._ttl = ttl
        self._delays = delays
        self._negative_ttl = negative_ttl  #: with it, NXDOMAIN carries the zone's SOA
        self._due: list[tuple[float, int, bytes, Address, QueryState]] = []
        self._seq = 0
        self.counters = ServerCounters()

    def receive(self, data: bytes, addr: Address, now: float) -> None:
        """Take one datagram. Never raises: garbage is counted and dropped (or gets FORMERR)."""
        try:
            query = dns.message.from_wire(data)
        except (dns.exception.DNSException, ValueError, UnicodeError, IndexError):
            self.counters.garbage += 1
            formerr = _formerr_for(data)
            if formerr is not None:
                self._schedule(now, formerr, addr)
            return
        if query.flags & dns.flags.QR or len(query.question) != 1:
            self.counters.garbage += 1
            return
        self.counters.queries += 1
        response = dns.message.make_response(query)
        q = query.question[0]
        entry = self._zone.get((q.name, q.rdtype))
        if entry is not None:
            response.answer.append(dns.rrset.from_text_list(
                q.name, self._ttl, dns.rdataclass.IN, q.rdtype, list(entry.values)))
        elif q.name not in self._names:
            response.set_rcode(dns.rcode.NXDOMAIN)
            if self._negative_ttl is not None:
                response.authority.append(_soa(q.name, self._negative_ttl))
        delay = entry.delay if (entry is not None and self._delays) else 0.0
        # The answer is held (PENDING) until it is due: the only state this server keeps.
        self._schedule(now + delay, response.to_wire(), addr,
                       advance(QUERY_TRANSITIONS, Role.SERVER, QueryState.IDLE, Move.RECEIVE))

    def _schedule(self, due: float, wire: bytes, addr: Address,
                  state: QueryState = QueryState.PENDING) -> None:
        self._seq += 1
        heapq.heappush(self._due, (due, self._seq, wire, addr, state))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out = []
        while self._due and self._due[0][0] <= now:
            _, _, wire, addr, state = heapq.heappop(self._due)
            advance(QUERY_TRANSITIONS, Role.SERVER, state, Move.ANSWER)  # held → ANSWERED, gone
            out.append((wire, addr))
            self.counters.answers += 1
        return out

    def next_timer(self) -> float | None:
        return self._due[0][0] if self._due else None

    def snapshot(self) -> dict[str, object]:
        return {"role": Role.SERVER.value, "held_answers": len(self._due),
                **vars(self.counters)}


def _soa(name: dns.name.Name, ttl: int) -> dns.rrset.RRset:
    """The lab zone's SOA for a negative answer: TTL and MINIMUM both `ttl`, so a resolver
    caches the NXDOMAIN for `ttl` seconds (RFC 2308 sections 3 and 5)."""
    zone = name.parent() if len(name) > 2 else name
    return dns.rrset.from_text(zone, ttl, "IN", "SOA",
                               f"ns.{zone} hostmaster.{zone} 1 60 30 600 {ttl}")


def _formerr_for(data: bytes) -> bytes | None:
    """A FORMERR reply for a datagram with a DNS header and QR clear (RFC 1035 4.1.1), else None."""
    if len(data) < 12 or data[2] & 0x80:
        return None
    flags = 0x8000 | (data[2] & 0x79) << 8 | dns.rcode.FORMERR
    return data[:2] + flags.to_bytes(2, "big") + bytes(8)


# -- client ---------------------------------------------------------------------------------------


@dataclass
class PendingQuery:
    qid: int
    name: str
    rdtype: str
    server: Address
    sent_at: float
    order: int
    message: dns.message.Message = field(repr=False)
    state: QueryState = QueryState.IDLE
    attempts: int = 1  #: copies sent so far: the retry count lives here, in client memory
    retry_at: float | None = None  #: when the retry timer fires next (None: no more retries)


class DnsClient:
    """A stub resolver's state: the pending-query table, matched like dnspython.

    `send_query` returns the wire bytes to send to `server`; `receive` takes any datagram that
    arrived on the client's socket and queues an event; `next_event` pops them. With
    `retries`, `handle_timer` re-sends a query still pending after `retry_after` seconds (the
    same message, ID included: an answer to either copy matches), up to `retries` times, and
    `datagrams_to_send` hands the copies out; after `timeout` the query is given up. The timer
    and the retry count are the client's state: no packet and no server knows them.
    """

    def __init__(self, server: Address, timeout: float = 2.0,
                 rng: random.Random | None = None, retries: int = 0,
                 retry_after: float = 0.5) -> None:
        self.server = server
        self.timeout = timeout
        self.retries = retries
        self.retry_after = retry_after
        self._outgoing: deque[bytes] = deque()
        self._rng = rng or random.SystemRandom()
        self._table: dict[int, PendingQuery] = {}
        self._events: deque[Event] = deque()
        self._sent = 0
        self._answered = 0

    def _move(self, q: PendingQuery, move: Move) -> None:
        q.state = advance(QUERY_TRANSITIONS, Role.CLIENT, q.state, move)

    def send_query(self, name: str, rdtype: str, now: float) -> bytes:
        """Create a pending entry with a fresh random ID (RFC 5452 section 9.2); return the wire."""
        pending = {q.qid for q in self._table.values() if q.state is QueryState.PENDING}
        if len(pending) >= 65536:
            raise ProtocolError("all 65536 query IDs are pending")
        qid = self._rng.randrange(65536)
        while qid in pending:
            qid = self._rng.randrange(65536)
        msg = dns.message.make_query(name, rdtype, id=qid, use_edns=False)
        self._sent += 1
        entry = PendingQuery(qid, str(msg.question[0].name), rdtype.upper(), self.server, now,
                             self._sent, msg,
                             retry_at=now + self.retry_after if self.retries else None)
        self._move(entry, Move.SEND)
        self._table[qid] = entry
        self._events.append(QuerySent(qid, entry.name, entry.rdtype, self.server, self._sent))
        return msg.to_wire()

    def receive(self, data: bytes, addr: Address, now: float) -> None:
        """Match one datagram against the pending table. Never raises on any bytes."""
        addr = (addr[0], addr[1])
        qid = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
        if addr != self.server:
            known = self._table.get(qid) if qid is not None else None
            detail = (f"id {qid:#06x} is pending, but the query went to {_fmt(self.server)}"
                      if known is not None and known.state is QueryState.PENDING
                      else f"the query went to {_fmt(self.server)}")
            self._reject(RejectReason.WRONG_SOURCE, qid, addr, detail)
            return
        try:
            msg = dns.message.from_wire(data)
        except (dns.exception.DNSException, ValueError, UnicodeError, IndexError) as exc:
            self._reject(RejectReason.MALFORMED, qid, addr, type(exc).__name__)
            return
        if not msg.flags & dns.flags.QR:
            self._reject(RejectReason.NOT_A_RESPONSE, msg.id, addr, "QR bit is clear")
            return
        entry = self._table.get(msg.id)
        if entry is None or entry.state is not QueryState.PENDING:
            detail = (f"id {msg.id:#06x} was already {entry.state.value}" if entry is not None
                      else f"no pending query has id {msg.id:#06x}")
            self._reject(RejectReason.UNKNOWN_ID, msg.id, addr, detail)
            return
        if not entry.message.is_response(msg):
            asked = entry.name
            got = str(msg.question[0].name) if msg.question else "(no question)"
            self._reject(RejectReason.WRONG_QUESTION, msg.id, addr,
                         f"asked {asked}, answer is for {got}")
            return
        self._move(entry, Move.ANSWER)
        self._answered += 1
        answers = tuple(rd.to_text() for rrset in msg.answer for rd in rrset)
        self._events.append(AnswerMatched(
            entry.qid, entry.name, entry.rdtype, dns.rcode.to_text(msg.rcode()), answers, addr,
            now - entry.sent_at, entry.order, self._answered, entry.attempts))

    def _reject(self, reason: RejectReason, qid: int | None, addr: Address, detail: str) -> None:
        self._events.append(AnswerRejected(reason, qid, addr, detail))

    def handle_timer(self, now: float) -> None:
        for q in self._table.values():
            if q.state is not QueryState.PENDING:
                continue
            if q.retry_at is not None and now >= q.retry_at and now - q.sent_at < self.timeout:
                # RFC 1035 section 4.2.1: a resolver retransmits after a timeout; the count and
                # the next deadline are this entry's, in client memory.
                self._move(q, Move.RETRANSMIT)
                q.attempts += 1
                q.retry_at = now + self.retry_after if q.attempts <= self.retries else None
                self._outgoing.append(q.message.to_wire())
                self._events.append(QueryRetransmitted(q.qid, q.name, q.attempts,
                                                       now - q.sent_at))
            if now - q.sent_at >= self.timeout:
                self._move(q, Move.TIMEOUT)
                self._events.append(QueryTimedOut(q.qid, q.name))

    def next_timer(self) -> float | None:
        times = [t for q in self._table.values() if q.state is QueryState.PENDING
                 for t in (q.sent_at + self.timeout, q.retry_at) if t is not None]
        return min(times) if times else None

    def datagrams_to_send(self) -> list[bytes]:
        """Retransmitted queries, to send to `server`."""
        out = list(self._outgoing)
        self._outgoing.clear()
        return out

    def close(self) -> None:
        """The socket is closed: every pending query is abandoned, its state gone with it."""
        for q in self._table.values():
            if q.state is QueryState.PENDING:
                self._move(q, Move.CLOSE)
                self._events.append(QueryAbandoned(q.qid, q.name))

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def entry(self, qid: int) -> PendingQuery | None:
        """The table entry for `qid` (answered, abandoned or still pending), if any."""
        return self._table.get(qid)

    def pending(self) -> list[PendingQuery]:
        return [q for q in self._table.values() if q.state is QueryState.PENDING]

    def snapshot(self) -> list[dict[str, object]]:
        """The pending-query table as the client holds it in memory."""
        return [{"id": f"{q.qid:#06x}", "question": f"{q.name} {q.rdtype}",
                 "server": _fmt(q.server), "state": q.state.value, "order sent": q.order,
                 "attempts": q.attempts,
                 "retry timer": (f"+{q.retry_at - q.sent_at:.2f} s" if q.retry_at is not None
                                 else "-")}
                for q in self._table.values()]


def _fmt(addr: Address) -> str:
    return f"{addr[0]}:{addr[1]}"
