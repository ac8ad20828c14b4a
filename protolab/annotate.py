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

from protolab.packets import PROTO_ICMP, PROTO_UDP, Decoded, decode
from protolab.pcap import PcapError, Record, read_pcap
from protolab.quic import QuicHeader, decode_header
from protolab.tcp import TcpObserver

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
    state: str  #: the "where state lives" sentence
    flow: str = ""  #: the conversation this packet belongs to ("tcp 3", "quic 1", "dns a↔b")
    fields: dict = field(default_factory=dict, compare=False)  #: decoded values, for --json


    def where(self) -> str:
        return f"{self.action.value}: {self.state}" if self.action is not Action.NONE \
            else self.state


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
                       state="not decoded: " + d.error)
        if d.proto == PROTO_UDP and self._is_dns(d):
            return self._dns(d, base)
        if d.proto == PROTO_UDP and (quic := self._quic_header(d)) is not None:
            return self._quic(d, base, quic)
        if d.proto == PROTO_UDP:
            text = _printable(d.payload)
            return Row(**base, summary=f"UDP {len(d.payload)} bytes" + (f" {text!r}" if text
                                                                         else ""),
                       action=Action.NONE, holders=(Holder.PACKET,),
                       state="no connection: this datagram stands alone; only the receiver's "
                             "port binding (its kernel) is needed")
        if d.tcp is not None:
            return self._tcp(d, base)
        if d.icmp_type is not None:
            return self._icmp(d, base)
        return Row(**base, summary=d.error or "IP", action=Action.NONE, holders=(),
                   state="not annotated")

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
                       state="not a DNS message: the receiver drops it, no state changes")
        qid, is_response, question, rcode, answers = msg
        src, dst = d.endpoint("src"), d.endpoint("dst")
        client, server = (dst, src) if is_response else (src, dst)
        self._flow = f"dns {client}↔{server}"
        self._extra = {"dns_id": qid, "dns_response": is_response, "dns_question": question}
        if not is_response:
            key = (src, dst, qid)
            first = self._pending.get(key)
            if first is not None and first.question == question:
                first.copies += 1
                return Row(
                    **base, summary=f"query {qid:#06x} {question} (again)",
                    action=Action.USES, holders=(Holder.CLIENT_APP,),
                    state=(f"retransmission {first.copies} of query #{first.number}, same id: "
                           f"the client's retry timer fired; its retry count and timer live in "
                           f"client app memory, no packet carries them"))
            self._pending[key] = _Query(base["number"], d.time, question)
            self._bound(self._pending)
            return Row(
                **base, summary=f"query {qid:#06x} {question}",
                action=Action.CREATES, holders=(Holder.CLIENT_APP, Holder.CLIENT_KERNEL),
                state=(f"pending query {qid:#06x} ({question}), waiting for {dst} → client app "
                       f"memory; the answer can only land on {src}'s socket → client kernel; "
                       f"the server holds nothing"))
        summary = f"answer {qid:#06x} {question} {rcode}" + (f" {answers}" if answers else "")
        key = (dst, src, qid)
        common = {**base, "summary": summary}
        q = self._pending.get(key)
        if q is not None and q.question == question:
            del self._pending[key]
            self._answered[key] = base["number"]
            self._bound(self._answered)
            rtt = (d.time - q.time) * 1000
            copies = (f" after {q.copies} copies (which one was answered, no one can tell)"
                      if q.copies > 1 else "")
            return Row(**common, action=Action.ENDS, holders=(Holder.CLIENT_APP,),
                       state=(f"client app memory matches it to query #{q.number} (source "
                              f"{src}, id {qid:#06x}, question) and deletes the entry; RTT "
                              f"{rtt:.0f} ms{copies}; the server kept nothing"))
        if q is not None:
            return Row(**common, action=Action.MISSING, holders=(Holder.CLIENT_APP,),
                       state=(f"id {qid:#06x} matches query #{q.number} but the question "
                              f"({question}) does not ({q.question}) → client drops it"))
        if key in self._answered:
            return Row(**common, action=Action.MISSING, holders=(Holder.NOBODY,),
                       state=(f"id {qid:#06x} was already answered by #{self._answered[key]}: "
                              f"the entry is gone → client drops it"))
        same_id = [(k, v) for k, v in self._pending.items() if k[0] == dst and k[2] == qid]
        if same_id:
            (_, server, _), other = same_id[0]
            return Row(**common, action=Action.MISSING, holders=(Holder.CLIENT_APP,),
                       state=(f"id {qid:#06x} is pending (query #{other.number}) but for "
                              f"{server}, not {src} → client drops it (spoofed source?)"))
        waiting = [k[2] for k in self._pending if k[0] == dst and k[1] == src]
        if waiting:
            ids = ", ".join(f"{i:#06x}" for i in waiting[:4])
            return Row(**common, action=Action.MISSING, holders=(Holder.CLIENT_APP,),
                       state=(f"no pending query has id {qid:#06x} (pending for {src}: {ids}) "
                              f"→ client drops it (forged, or late)"))
        return Row(**common, action=Action.USES, holders=(Holder.CLIENT_APP,),
                   state=(f"its query is not in this capture; the client matches it by source "
                          f"{src}, id {qid:#06x} and question in its own memory"))

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
        summary = f"{h.packet_type} DCID={h.dcid.hex()}{scid}" + (
            f" token={len(h.token)}B" if h.token else "")
        if h.packet_type == "Version Negotiation":
            return Row(**base, summary=summary, action=Action.NONE, holders=(Holder.PACKET,),
                       state="the server keeps nothing: it lists the versions it speaks")
        if h.scid:
            self._quic_cid_len = len(h.scid) or self._quic_cid_len
        conn = self._quic_cids.get(h.dcid, self._quic_paths.get(path))
        self._extra = {"quic_type": h.packet_type, "quic_dcid": h.dcid.hex(),
                       "quic_scid": h.scid.hex() if h.scid is not None else None}
        if h.packet_type == "Initial" and dst not in self._quic_servers and \
                src not in self._quic_servers:
            self._quic_servers.add(dst)
        to_server = dst in self._quic_servers
        receiver, sender = ("server", "client") if to_server else ("client", "server")
        notes = []
        if conn is None:
            self._quic_count += 1
            conn = self._quic_count
        elif h.dcid not in self._quic_cids and not h.long:
            notes.append("a DCID new to this capture on a known path: the connection switched "
                         "to a CID issued in an encrypted NEW_CONNECTION_ID (rotation)")
        if path not in self._quic_paths and self._quic_paths and not h.long \
                and h.dcid in self._quic_cids:
            notes.append(f"a new path ({src if to_server else dst}) with a known DCID: found by "
                         f"CID, not by 4-tuple (migration)")
        self._quic_paths[path] = conn
        self._quic_cids.setdefault(h.dcid, conn)
        self._flow = f"quic {conn}"
        holders_rx = Holder.SERVER_APP if to_server else Holder.CLIENT_APP
        extra = ("; " + "; ".join(notes)) if notes else ""
        if h.packet_type == "Retry":
            if h.scid:
                self._quic_cids[h.scid] = conn
            return Row(**base, summary=summary, action=Action.NONE, holders=(Holder.TOKEN,),
                       state=("the server keeps NOTHING for this client: the token holds its "
                              "address and original DCID, and comes back in the next Initial "
                              "(like a JWT)"))
        if h.packet_type == "Initial" and to_server and conn not in self._quic_keyed:
            known = h.scid in self._quic_cids
            if h.scid:
                self._quic_cids[h.scid] = conn
            if h.token:
                return Row(**base, summary=summary, action=Action.USES,
                           holders=(Holder.TOKEN, Holder.SERVER_APP),
                           state=(f"the echoed token brings back the state the server did not "
                                  f"keep; only now does it create connection #{conn}"))
            if not known:
                return Row(
                    **base, summary=summary, action=Action.CREATES, holders=(Holder.CLIENT_APP,),
                    state=(f"client's table gets key {h.scid.hex() if h.scid else '?'} (client "
                           f"app memory) for connection #{conn}; the DCID is random: no server "
                           f"entry has it yet"))
        if h.long and h.scid and not to_server and h.scid not in self._quic_cids:
            self._quic_cids[h.scid] = conn
            self._quic_keyed.add(conn)
            return Row(**base, summary=summary, action=Action.CREATES,
                       holders=(Holder.SERVER_APP,),
                       state=(f"server's table gets key {h.scid.hex()} (server app memory) for "
                              f"connection #{conn}; DCID {h.dcid.hex()} is the client's key"))
        return Row(**base, summary=summary, action=Action.USES, holders=(holders_rx,),
                   state=(f"DCID {h.dcid.hex()} is the key of the {receiver}'s connection table "
                          f"({receiver} app memory) → connection #{conn}{extra}"))

    # -- TCP -------------------------------------------------------------------------------

    def _tcp(self, d: Decoded, base: dict) -> Row:
        tcp = d.tcp
        view = self._tcp_observer.feed(d, base["number"])
        self._flow = f"tcp {view.flow}"
        flags = "/".join(tcp.flag_names()) or "none"
        ack = f" ack={view.rel_ack}" if view.rel_ack is not None else ""
        summary = f"[{flags}] seq={view.rel_seq}{ack} len={view.length}"
        http = _http_line(d.payload)
        if http:
            summary += f" {http}"
            self._extra["http"] = http
        dns_tcp = _parse_dns(d.payload[2:]) if 53 in (d.sport, d.dport) and len(d.payload) > 14 \
            else None
        if dns_tcp is not None:  # RFC 1035 section 4.2.2: a two-byte length, then the message
            qid, is_response, question, rcode, _ = dns_tcp
            summary += f" DNS {'answer' if is_response else 'query'} {qid:#06x} {question}"
            self._extra = {"dns_id": qid, "dns_response": is_response, "dns_question": question}
        sender = view.sender_role.value
        receiver = "server" if sender == "client" else "client"
        moves = "; ".join(f"{t.role.value} {t.old.value}→{t.new.value}"
                          for t in view.transitions)
        moved = f" [{moves}]" if moves else ""
        if not view.in_window:
            return Row(**base, summary=summary, action=Action.MISSING,
                       holders=(Holder.NOBODY,),
                       state=(f"seq {view.rel_seq} is far outside what the {receiver} kernel "
                              f"expects ({view.expects}): no connection state fits it, so it is "
                              f"not delivered (the kernel may answer with an ACK)"))
        if tcp.flags & 0x04:
            return Row(**base, summary=summary, action=Action.MISSING,
                       holders=(Holder.NOBODY,),
                       state=(f"RST: the {sender} kernel has no connection for this 4-tuple "
                              f"(or drops it now){moved}"))
        holders = (Holder.CLIENT_KERNEL, Holder.SERVER_KERNEL)
        if tcp.flags & 0x02:
            who = "client kernel creates" if not tcp.flags & 0x10 else "server kernel holds"
            return Row(**base, summary=summary, action=Action.CREATES, holders=holders,
                       state=(f"{who} a connection entry keyed by the 4-tuple, with its initial "
                              f"sequence number{moved}"))
        flight = (f"{view.in_flight} B in flight {sender}→{receiver}; "
                  if view.in_flight else "")
        expects = f"{receiver} kernel expects seq {view.expects} next"
        if http:
            action, http_holders, where = _http_state(d.payload)
            return Row(**base, summary=summary, action=action,
                       holders=(*http_holders, *holders),
                       state=(f"{where}; the connection itself is the kernels': "
                              f"{flight}{expects}{moved}"))
        action = Action.ENDS if tcp.flags & 0x01 or any(
            t.new.value in ("CLOSED", "TIME_WAIT") for t in view.transitions) else Action.USES
        return Row(**base, summary=summary, action=action, holders=holders,
                   state=f"{flight}{expects}{moved}")

    # -- ICMP ------------------------------------------------------------------------------

    def _icmp(self, d: Decoded, base: dict) -> Row:
        q = d.quoted
        v6 = d.proto != PROTO_ICMP
        unreachable = (d.icmp_type, d.icmp_code) == ((1, 4) if v6 else (3, 3))
        name = "ICMPv6" if v6 else "ICMP"
        if q is None or not unreachable:
            return Row(**base, summary=f"{name} type {d.icmp_type} code {d.icmp_code}",
                       action=Action.NONE, holders=(), state="control message")
        dport = q.dport
        target = f"{q.dst}:{dport}"
        origin = f"{q.src}:{q.sport}"
        cause = self._amend_cause(origin, target, base["number"])
        about = f" (#{cause})" if cause else ""
        return Row(**base, summary=f"{name} port unreachable for {origin} → {target}",
                   action=Action.MISSING, holders=(Holder.NOBODY,),
                   state=(f"no socket is bound to {target}: the kernel there answers the datagram"
                          f"{about} with this error; nobody holds the state it was for"))

    def _amend_cause(self, origin: str, target: str, icmp_number: int) -> int | None:
        """Find the datagram this ICMP error is about in the window and rewrite its row."""
        for i in range(len(self._window) - 1, -1, -1):
            row, d = self._window[i]
            if row.src == origin and row.dst == target and d.proto == PROTO_UDP:
                state = (f"arrives at {target}, where no socket is bound any more: the kernel "
                         f"answers with ICMP port unreachable (#{icmp_number})")
                if row.proto == "DNS" and row.action is Action.ENDS:
                    state = (f"would match a pending query, but the client closed its socket: "
                             f"nobody holds the entry, and {target} is unbound; the kernel "
                             f"answers with ICMP port unreachable (#{icmp_number})")
                self._window[i] = (replace(row, action=Action.MISSING,
                                           holders=(Holder.NOBODY,), state=state), d)
                return row.number
        return None


_HTTP_STARTS = (b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"PATCH ", b"OPTIONS ",
                b"HTTP/1.")


def _http_state(payload: bytes) -> tuple[Action, tuple[Holder, ...], str]:
    """Where an HTTP message's application state is: in it, or looked up by a key it carries."""
    head = payload.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
    lines = head.split("\r\n")
    headers = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if headers.get("authorization", "").startswith("bearer "):
        return (Action.USES, (Holder.TOKEN,),
                "state came WITH the request: a signed token (who you are, until when); no "
                "lookup needed to know the user")
    if "set-cookie" in head and "sessionid=" in head:
        return (Action.CREATES, (Holder.SERVER_APP, Holder.SHARED_STORE),
                "creates a session: the client gets only its key (cookie sessionId); the "
                "session stays in the server's memory or a shared store")
    if "sessionid=" in headers.get("cookie", ""):
        return (Action.USES, (Holder.SERVER_APP, Holder.SHARED_STORE),
                "state is LOOKED UP by the key it carries (cookie sessionId) in whatever holds "
                "sessions: this backend's memory or a shared store")
    return (Action.USES, (Holder.PACKET,),
            "HTTP: the message carries its own state (URL, headers, body)")


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
