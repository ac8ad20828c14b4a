"""A caching DNS resolver (a forwarder, like dnsmasq), sans-IO: its cache and its pending table.

Where state lives: in the resolver's app memory, shared by every client. Two tables:
- the cache, keyed by (name, type, class), each entry with an absolute expiry (`now` at storing +
  the TTL): an answer is served from it, its TTL counted down, until it expires (RFC 1035 section
  3.2.1; RFC 2181 section 5.2: the TTL of an RRset is how long it may be cached). A negative answer
  (NXDOMAIN) is cached too, for the SOA's minimum (RFC 2308 section 5: min(SOA TTL, MINIMUM); an
  NXDOMAIN without an SOA is not cached);
- the pending-upstream table, keyed by (upstream address, the local port the query left from, ID),
  each entry with its question and the clients waiting for it. An answer is accepted only when its
  source, destination port, ID and question all match a pending entry (RFC 5452 section 9.1); the
  first one that matches ends the entry, and what it says goes into the cache for everyone.

That is why the ID and the source port must be unpredictable (RFC 5452 sections 9.2 and 10): an
off-path attacker who can predict both lands a forged answer in the cache. `WEAK` uses one fixed
source port and sequential IDs (resolvers before 2008); `STRONG` a random port and a random ID per
query. Randomness and time come in as arguments; the socket adapter is `protolab.net.dns_resolver`.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from protolab.protocols.dns import Address, RejectReason

Key = tuple[str, str, str]  #: (name, type, class) as text: "bank.lab.", "A", "IN"
PORT_RANGE = (1024, 65536)  #: RFC 6056 section 3.2: a random port may come from 1024-65535


@dataclass(frozen=True)
class Config:
    """How the resolver picks each upstream query's source port and ID."""

    random_ports: bool  #: a new random source port per query (else one fixed port)
    random_ids: bool  #: a random ID per query (else the last ID + 1)
    name: str = ""  #: "weak", "strong"

    def guess_bits(self, ports: int = PORT_RANGE[1] - PORT_RANGE[0]) -> float:
        """How many bits an off-path attacker must guess (ID, then port), when nothing leaks."""
        return (16.0 if self.random_ids else 0.0) + (math.log2(ports) if self.random_ports
                                                        else 0.0)


WEAK = Config(random_ports=False, random_ids=False, name="weak")  #: fixed port, sequential IDs
STRONG = Config(random_ports=True, random_ids=True, name="strong")  #: RFC 5452: both random


@dataclass
class CacheEntry:
    key: Key
    rcode: str  #: "NOERROR" or "NXDOMAIN"
    values: tuple[str, ...]  #: the answer's rdata as text (for NXDOMAIN: the SOA)
    ttl: int  #: the TTL it was stored with
    stored_at: float
    expires_at: float  #: absolute: stored_at + ttl
    source: Address  #: who sent the answer it came from
    qid: int  #: the ID of that answer
    wire: bytes = field(repr=False, default=b"")  #: the upstream answer, to answer clients from

    def ttl_left(self, now: float) -> int:
        """The TTL a client is told now: counted down, whole seconds (rounded up)."""
        return max(0, math.ceil(self.expires_at - now))

    def describe(self, now: float) -> dict[str, object]:
        return {"key": " ".join(self.key), "rcode": self.rcode, "values": list(self.values),
                "ttl": self.ttl, "ttl_left": self.ttl_left(now), "source": _fmt(self.source),
                "id": f"{self.qid:#06x}"}


class Cache:
    """Answers by (name, type, class) until their absolute expiry."""

    def __init__(self) -> None:
        self._entries: dict[Key, CacheEntry] = {}

    def get(self, key: Key, now: float) -> tuple[CacheEntry | None, CacheEntry | None]:
        """(the live entry or None, the entry that has just expired or None)."""
        entry = self._entries.get(key)
        if entry is None or now < entry.expires_at:
            return entry, None
        del self._entries[key]
        return None, entry

    def put(self, entry: CacheEntry) -> None:
        self._entries[entry.key] = entry

    def entries(self, now: float) -> list[CacheEntry]:
        return [e for e in self._entries.values() if now < e.expires_at]


@dataclass
class Pending:
    """One query the resolver has sent upstream and not yet had answered."""

    qid: int
    key: Key
    upstream: Address
    port: int  #: the resolver's local port it left from: the answer must arrive there
    sent_at: float
    message: dns.message.Message = field(repr=False)
    waiting: list[tuple[Address, dns.message.Message]] = field(default_factory=list, repr=False)


# -- events: what the resolver did, one line each in its log --------------------------------------


@dataclass(frozen=True)
class Event:
    kind: str  #: "hit", "miss", "upstream", "stored", "rejected", "expired", "timeout"
    key: str  #: "bank.lab. A IN"
    client: str = ""  #: "host:port" of the client it concerns
    qid: int | None = None
    port: int = 0  #: the resolver's local port (upstream side)
    upstream: str = ""  #: "host:port" of the upstream (or the answer's source)
    ttl: int | None = None  #: the TTL told (hit) or stored (stored)
    values: tuple[str, ...] = ()
    rcode: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Outgoing:
    wire: bytes
    dest: Address
    port: int | None  #: the local port to send from; None: the resolver's listening socket


class Resolver:
    """A forwarding, caching resolver: `receive_client` takes a client's query, `receive_upstream`
    an upstream's answer (with the local `port` it arrived on); `datagrams_to_send` hands out what
    to send; `next_event` the log. `routes` sends names under a suffix to another upstream (like
    dnsmasq's --server=/domain/address)."""

    def __init__(self, upstream: Address, config: Config, rng: random.Random,
                 fixed_port: int = 0, routes: dict[str, Address] | None = None,
                 timeout: float = 2.0) -> None:
        self.upstream, self.config, self.timeout = upstream, config, timeout
        self.fixed_port = fixed_port
        self.routes = {dns.name.from_text(k): v for k, v in (routes or {}).items()}
        self._rng = rng
        self._next_id = rng.randrange(65536)
        self.cache = Cache()
        self._pending: dict[tuple[Address, int, int], Pending] = {}
        self._out: deque[Outgoing] = deque()
        self._events: deque[Event] = deque()

    # -- clients ----------------------------------------------------------------------------------

    def receive_client(self, data: bytes, addr: Address, now: float) -> None:
        """A client's query: answered from the cache, joined to a pending query, or sent on."""
        try:
            query = dns.message.from_wire(data)
        except (dns.exception.DNSException, ValueError, UnicodeError, IndexError):
            return
        if query.flags & dns.flags.QR or len(query.question) != 1:
            return
        q = query.question[0]
        key = (q.name.to_text(), dns.rdatatype.to_text(q.rdtype), dns.rdataclass.to_text(q.rdclass))
        client = (addr[0], addr[1])
        entry, expired = self.cache.get(key, now)
        if expired is not None:
            self._log("expired", key, client, qid=expired.qid, ttl=expired.ttl,
                      values=expired.values, detail=f"{now - expired.expires_at:.2f} s ago")
        if entry is not None:
            self._log("hit", key, client, ttl=entry.ttl_left(now), values=entry.values,
                      rcode=entry.rcode)
            self._answer(client, query, entry, now)
            return
        joined = next((p for p in self._pending.values() if p.key == key), None)
        self._log("miss", key, client, detail="joined a pending query" if joined else "")
        if joined is not None:
            joined.waiting.append((client, query))
            return
        self._send_upstream(key, q.name, q.rdtype, client, query, now)

    def _send_upstream(self, key: Key, name: dns.name.Name, rdtype: int, client: Address,
                       query: dns.message.Message, now: float) -> None:
        upstream = self._route(name)
        port = self._pick_port()
        qid = self._pick_id(upstream, port)
        msg = dns.message.make_query(name, rdtype, id=qid, use_edns=False)
        pending = Pending(qid, key, upstream, port, now, msg, [(client, query)])
        self._pending[(upstream, port, qid)] = pending
        self._out.append(Outgoing(msg.to_wire(), upstream, port))
        self._log("upstream", key, client, qid=qid, port=port, upstream=_fmt(upstream))

    def _route(self, name: dns.name.Name) -> Address:
        for suffix, addr in self.routes.items():
            if name.is_subdomain(suffix):
                return addr
        return self.upstream

    def _pick_port(self) -> int:
        return self._rng.randrange(*PORT_RANGE) if self.config.random_ports else self.fixed_port

    def _pick_id(self, upstream: Address, port: int) -> int:
        for _ in range(65536):
            if self.config.random_ids:
                qid = self._rng.randrange(65536)
            else:
                qid, self._next_id = self._next_id, (self._next_id + 1) & 0xFFFF
            if (upstream, port, qid) not in self._pending:
                return qid
        raise RuntimeError("every query ID is pending on this port")

    def port_busy(self, port: int) -> None:
        """The adapter could not bind random `port` (its send was dropped): each query pending
        on it moves to another random port and is handed out again."""
        if not self.config.random_ports:
            return
        for k, p in list(self._pending.items()):
            if p.port == port:
                del self._pending[k]
                p.port = self._pick_port()
                self._pending[(p.upstream, p.port, p.qid)] = p
                self._out.append(Outgoing(p.message.to_wire(), p.upstream, p.port))

    # -- upstream ---------------------------------------------------------------------------------

    def receive_upstream(self, data: bytes, source: Address, port: int, now: float) -> None:
        """An answer on local `port`: accepted only if source, port, ID and question match."""
        source = (source[0], source[1])
        try:
            msg = dns.message.from_wire(data)
        except (dns.exception.DNSException, ValueError, UnicodeError, IndexError) as exc:
            self._reject(RejectReason.MALFORMED, None, source, port, type(exc).__name__)
            return
        pending = self._pending.get((source, port, msg.id))
        if pending is None:
            mine = any(p.port == port and p.qid == msg.id for p in self._pending.values())
            reason = RejectReason.WRONG_SOURCE if mine else RejectReason.UNKNOWN_ID
            self._reject(reason, msg.id, source, port, f"nothing pending for id {msg.id:#06x} "
                         f"from {_fmt(source)} on port {port}")
            return
        if not msg.flags & dns.flags.QR or not pending.message.is_response(msg):
            got = msg.question[0].name.to_text() if msg.question else "(no question)"
            self._reject(RejectReason.WRONG_QUESTION, msg.id, source, port,
                         f"asked {pending.key[0]}, answer is for {got}")
            return
        del self._pending[(source, port, msg.id)]
        entry = self._store(pending, msg, source, now)
        for client, query in pending.waiting:
            self._answer(client, query, entry, now, msg)

    def _store(self, pending: Pending, msg: dns.message.Message, source: Address,
               now: float) -> CacheEntry:
        rcode = dns.rcode.to_text(msg.rcode())
        values = tuple(rd.to_text() for rrset in msg.answer for rd in rrset)
        ttl = min((rrset.ttl for rrset in msg.answer), default=None)
        soa = [r for r in msg.authority if r.rdtype == dns.rdatatype.SOA]
        if ttl is None and soa:  # RFC 2308 section 5: negative TTL = min(SOA TTL, MINIMUM)
            ttl = min(soa[0].ttl, soa[0][0].minimum)
            values = tuple(rd.to_text() for rd in soa[0])
        entry = CacheEntry(pending.key, rcode, values, ttl or 0, now, now + (ttl or 0), source,
                           msg.id, msg.to_wire())
        if ttl and rcode in ("NOERROR", "NXDOMAIN"):
            self.cache.put(entry)
            self._log("stored", pending.key, qid=msg.id, port=pending.port,
                      upstream=_fmt(source), ttl=ttl, values=values, rcode=rcode)
        return entry

    def _reject(self, reason: RejectReason, qid: int | None, source: Address, port: int,
                detail: str) -> None:
        self._log("rejected", "", qid=qid, port=port, upstream=_fmt(source),
                  detail=f"{reason.value}: {detail}")

    # -- answers ----------------------------------------------------------------------------------

    def _answer(self, client: Address, query: dns.message.Message, entry: CacheEntry,
                now: float, fresh: dns.message.Message | None = None) -> None:
        """The client's answer: the cached sections, each TTL counted down to what is left."""
        src = fresh or dns.message.from_wire(entry.wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        response.set_rcode(dns.rcode.from_text(entry.rcode))
        left = entry.ttl_left(now)
        for section, theirs in ((response.answer, src.answer),
                                (response.authority, src.authority)):
            for rrset in theirs:
                copy = dns.rrset.RRset(rrset.name, rrset.rdclass, rrset.rdtype)
                copy.update(rrset)
                copy.ttl = min(rrset.ttl, left)
                section.append(copy)
        self._out.append(Outgoing(response.to_wire(), client, None))

    # -- timers, output, the log ------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        """Upstream queries unanswered for `timeout`: SERVFAIL to their clients, entry gone."""
        for k, p in list(self._pending.items()):
            if now - p.sent_at >= self.timeout:
                del self._pending[k]
                self._log("timeout", " ".join(p.key), qid=p.qid, port=p.port,
                          upstream=_fmt(p.upstream))
                for client, query in p.waiting:
                    response = dns.message.make_response(query)
                    response.set_rcode(dns.rcode.SERVFAIL)
                    self._out.append(Outgoing(response.to_wire(), client, None))

    def next_timer(self) -> float | None:
        return min((p.sent_at + self.timeout for p in self._pending.values()), default=None)

    def datagrams_to_send(self) -> list[Outgoing]:
        out = list(self._out)
        self._out.clear()
        return out

    def ports_in_use(self) -> set[int]:
        """Local ports some pending query waits on (the adapter closes the others)."""
        return {p.port for p in self._pending.values()}

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def snapshot(self, now: float) -> list[dict[str, object]]:
        """The cache as the resolver holds it in memory now."""
        return [e.describe(now) for e in self.cache.entries(now)]

    def _log(self, kind: str, key: Key | str, client: Address | None = None, **values: object
             ) -> None:
        text = " ".join(key) if isinstance(key, tuple) else key
        self._events.append(Event(kind, text, _fmt(client) if client else "", **values))


def _fmt(addr: Address) -> str:
    return f"{addr[0]}:{addr[1]}"
