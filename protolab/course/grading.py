"""The numbered lab worksheets, and grading a learner's answers against *their* capture.

Where state lives: in the learner's capture. Every graded fact is computed from the packets of the
capture being graded: their header fields (ports, flags, sequence numbers, query IDs, connection
IDs) and payloads (the PIDs and totals a server writes, HTTP headers), never from the annotator's
sentences and never from fixed values. Most questions ask for values that differ from run to run
(`Question.varies`: ports, ISNs, IDs, CIDs, PIDs, session IDs), so an answers file copied from
another run, or from the reference capture, does not get full marks.

Answers file (TOML), one key per question, in the form the output prints: `q1 = 17` or
`q1 = "#17"` for a packet number, `q2 = "0x6ff8"` (or `0x6ff8`, `"6ff8"`) for an ID, `q3 = false`
or `"no"` for yes/no. `protolab check NN --template` writes one that names each answer's form.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path

from protolab.analysis.annotate import Annotator, Kind, Row
from protolab.analysis.observe import Evidence, Observation, observe
from protolab.analysis.story_checks import point, sightings
from protolab.protocols.counter import parse_reply
from protolab.wire.packets import TCP_FLAG_NAMES, Decoded, decode
from protolab.wire.paths import SOURCE_ROOT, default_capture_path, reference_capture, reference_file
from protolab.wire.pcap import read_pcap

LABS_DIR = SOURCE_ROOT / "labs"


class CheckError(Exception):
    """A problem with the answers file or capture: one line for the user."""


class Form(Enum):
    """How an answer is written, and so how it is compared. The value is what the template and
    the worksheet say."""

    PACKET = 'a packet number, as printed: 17 or "#17"'  #: the `#` column of `inspect`
    NUMBER = "a whole number: 17"  #: a count, a port, a PID, a sequence number
    HEX = 'hex, as printed: "0x6ff8", "6ff8" or 0x6ff8'  #: a query ID, a connection ID
    YESNO = 'yes or no: true, false, "yes" or "no"'  #: a prediction checked against the run
    FLAGS = 'TCP flags, as the summary prints them: "ACK" or "[PSH/ACK]"'  #: a segment's flags
    ENDPOINT = 'address:port, as printed: "127.0.0.1:40404"'  #: one socket's address
    WORD = "one of the words the question names"  #: client or server
    TEXT = 'text, exactly as printed: "abc"'  #: an opaque value such as a cookie

    @property
    def label(self) -> str:
        """The short name the worksheets give after each question: "*Answer: a packet number*"."""
        return _LABELS[self]


_LABELS = {Form.PACKET: "a packet number", Form.NUMBER: "a whole number", Form.HEX: "hex",
           Form.YESNO: "yes or no", Form.FLAGS: "TCP flags", Form.ENDPOINT: "address:port",
           Form.WORD: "one word", Form.TEXT: "text, as printed"}


@dataclass(frozen=True)
class Question:
    key: str
    text: str
    fact: Callable[[Packets], object]  #: the right answer, computed from the capture's packets
    hint: str
    form: Form = Form.TEXT
    varies: bool = False  #: a fresh run gives another answer (a port, an ISN, an ID, a PID)


@dataclass(frozen=True)
class Lab:
    number: str
    slug: str
    title: str
    demo: str  #: the subcommand that makes its capture
    questions: tuple[Question, ...]

    @property
    def worksheet(self) -> Path:
        return LABS_DIR / f"{self.number}-{self.slug}.md"

    @property
    def capture(self) -> Path:
        return default_capture_path(self.demo)


# -- the capture as the grader reads it ------------------------------------------------------------


@dataclass(frozen=True)
class Packets:
    """A capture: the annotated rows and, for each, the decoded headers and payload."""

    rows: list[Row]
    decoded: dict[int, Decoded]  #: packet number → its decoded frame

    def payload(self, row: Row) -> bytes:
        return self.decoded[row.number].payload


def read(capture: Path) -> Packets:
    """Read and annotate `capture`. Raises PcapError (protolab.wire.pcap) for a file it cannot
    read."""
    annotator = Annotator()
    pairs: list[tuple[Row, Decoded]] = []
    for rec in read_pcap(capture):
        pairs += annotator.feed_pairs(decode(rec.data, rec.linktype, rec.time, rec.orig_len,
                                             rec.interface))
    pairs += annotator.finish_pairs()
    return Packets([row for row, _ in pairs], {row.number: d for row, d in pairs})


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


# -- TCP (lab 01): from the flags and sequence numbers, RFC 9293 ---------------------------------

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10


def _flags(row: Row) -> int:
    return row.fields.get("tcp_flags", 0) if row.proto == "TCP" else 0


def _flag_names(row: Row) -> str:
    return "/".join(name for name, bit in TCP_FLAG_NAMES if _flags(row) & bit)


def _first_connection(p: Packets) -> tuple[Row, list[Row]]:
    """The first SYN (without ACK) and every segment of its 4-tuple, in capture order."""
    syn = next(r for r in p.rows if _flags(r) & (SYN | ACK) == SYN)
    pair = {syn.src, syn.dst}
    return syn, [r for r in p.rows if r.proto == "TCP" and {r.src, r.dst} == pair]


def tcp_client_port(p: Packets) -> int:
    return _port(_first_connection(p)[0].src)


def tcp_client_isn(p: Packets) -> int:
    return _first_connection(p)[0].fields["tcp_seq"]


def _syn_ack(p: Packets) -> Row:
    syn, rows = _first_connection(p)
    return next(r for r in rows if _flags(r) & (SYN | ACK) == SYN | ACK and r.src == syn.dst
                and r.fields["tcp_ack"] == (syn.fields["tcp_seq"] + 1) % 2**32)


def tcp_server_isn(p: Packets) -> int:
    return _syn_ack(p).fields["tcp_seq"]


def tcp_handshake_packets(p: Packets) -> int:
    """SYN, SYN/ACK and the ACK that acknowledges the server's SYN (RFC 9293 section 3.5),
    counting any retransmitted SYN or SYN/ACK; stops at that ACK."""
    syn, rows = _first_connection(p)
    server_isn = tcp_server_isn(p)
    count = 0
    for r in rows:
        if _flags(r) & SYN:
            count += 1
        elif (r.src == syn.src and _flags(r) & ACK
              and r.fields["tcp_ack"] == (server_isn + 1) % 2**32):
            return count + 1
    raise LookupError("the handshake never completes")


def _first_fin(p: Packets) -> tuple[Row, Row]:
    syn, rows = _first_connection(p)
    return syn, next(r for r in rows if _flags(r) & FIN)


def tcp_close_wait_packet(p: Packets) -> int:
    """The client's FIN: receiving the first FIN takes the server ESTABLISHED→CLOSE_WAIT
    (RFC 9293 section 3.6). A server that closed first never enters CLOSE_WAIT."""
    syn, fin = _first_fin(p)
    if fin.src != syn.src:
        raise LookupError("the server closed first")
    return fin.number


def tcp_first_closer(p: Packets) -> str:
    syn, fin = _first_fin(p)
    return "client" if fin.src == syn.src else "server"


def tcp_forged_reply(p: Packets) -> str:
    """The flags of the receiver's answer to the segment far outside its window (RFC 9293
    section 3.10.7.4: an unacceptable segment is answered with an ACK, then dropped)."""
    forged = next(r for r in p.rows if r.shows(Kind.TCP_OUT_OF_WINDOW))
    reply = next(r for r in p.rows if r.number > forged.number and r.src == forged.dst
                 and r.dst == forged.src)
    return _flag_names(reply)


def tcp_rst_port(p: Packets) -> int:
    rst = next(r for r in p.rows if _flags(r) & RST and r.fields.get("dport") == 40404)
    return rst.fields["sport"]


# -- UDP (lab 02): the server's replies say seq, total, its own count and its PID ------------------


def _udp_replies(p: Packets) -> list[tuple[Row, object]]:
    server = next(r for r in p.rows if r.proto == "UDP").dst
    out = []
    for r in p.rows:
        reply = parse_reply(p.payload(r)) if r.proto == "UDP" and r.src == server else None
        if reply is not None:
            out.append((r, reply))
    return out


def _workflow(p: Packets) -> list[object]:
    """The replies to the client of the litmus workflow: the one that got the last reply."""
    replies = _udp_replies(p)
    client = replies[-1][0].dst
    return [reply for r, reply in replies if r.dst == client]


def udp_first_pid(p: Packets) -> int:
    return _workflow(p)[0].pid


def udp_last_pid(p: Packets) -> int:
    return _workflow(p)[-1].pid


def udp_last_total(p: Packets) -> int:
    return _workflow(p)[-1].total


def udp_workflow_port(p: Packets) -> int:
    return _port(_udp_replies(p)[-1][0].dst)


def udp_icmp_named_port(p: Packets) -> int:
    """The source port of the datagram the first ICMP port unreachable quotes (RFC 792)."""
    icmp = next(r for r in p.rows if r.fields.get("icmp_type") == 3
                and r.fields.get("icmp_code") == 3)
    quoted = p.decoded[icmp.number].quoted
    if quoted is None or quoted.sport is None:
        raise LookupError("the ICMP error quotes no UDP header")
    return quoted.sport


def udp_clients_answered(p: Packets) -> int:
    return len({r.dst for r, _ in _udp_replies(p)})


# -- DNS (lab 03): IDs, ports and order from the DNS headers -------------------------------------


def _dns(p: Packets) -> list[Row]:
    return [r for r in p.rows if "dns_id" in r.fields]


def _queries(p: Packets) -> list[Row]:
    return [r for r in _dns(p) if not r.fields["dns_response"]]


def _answers(p: Packets) -> list[Row]:
    return [r for r in _dns(p) if r.fields["dns_response"]]


def _asked(p: Packets) -> set[tuple[str, str, int]]:
    """(client, server, id) of every query in the capture."""
    return {(q.src, q.dst, q.fields["dns_id"]) for q in _queries(p)}


def _hex16(value: int) -> str:
    return f"{value:#06x}"


def dns_first_answer_id(p: Packets) -> str:
    """The first answer that matches a query: same id, from the server it was sent to."""
    asked = _asked(p)
    return _hex16(next(a.fields["dns_id"] for a in _answers(p)
                       if (a.dst, a.src, a.fields["dns_id"]) in asked))


def dns_first_socket_port(p: Packets) -> int:
    return _queries(p)[0].fields["sport"]


def dns_answers_in_order(p: Packets) -> str:
    first = _queries(p)[0]
    asked = [q.fields["dns_id"] for q in _queries(p) if q.src == first.src]
    answered = [a.fields["dns_id"] for a in _answers(p)
                if a.dst == first.src and a.src == first.dst]
    return "yes" if asked == answered else "no"


def dns_forged_id(p: Packets) -> str:
    """An answer from the server's own address and port with an id the client never asked."""
    asked = _asked(p)
    server = _queries(p)[0].dst
    return _hex16(next(a.fields["dns_id"] for a in _answers(p) if a.src == server
                       and (a.dst, a.src, a.fields["dns_id"]) not in asked))


def dns_wrong_source_port(p: Packets) -> int:
    """An answer with an id the client asked, from an address the query did not go to."""
    asked = _asked(p)
    pending = {(client, qid) for client, _, qid in asked}
    return next(a.fields["sport"] for a in _answers(p)
                if (a.dst, a.fields["dns_id"]) in pending
                and (a.dst, a.src, a.fields["dns_id"]) not in asked)


def dns_icmp_packet(p: Packets) -> int:
    return next(r.number for r in p.rows if r.fields.get("icmp_type") == 3)


# -- QUIC (lab 04): connection IDs from the headers (RFC 9000 section 5.1) -------------------------


def _first_initial(p: Packets) -> Row:
    return next(r for r in p.rows if r.fields.get("quic_type") == "Initial")


def quic_client_cid(p: Packets) -> str:
    return _first_initial(p).fields["quic_scid"]


def quic_server_cid(p: Packets) -> str:
    first = _first_initial(p)
    return next(r.fields["quic_scid"] for r in p.rows if r.src == first.dst
                and r.dst == first.src and r.fields.get("quic_type") == "Initial")


def _to_server(p: Packets) -> Iterator[tuple[Row, set[str], set[str], set[str]]]:
    """Each packet to the first connection's server, with the DCIDs and sources seen before it
    and every CID sent in the clear (long headers) so far."""
    server = _first_initial(p).dst
    dcids: set[str] = set()
    sources: set[str] = set()
    clear: set[str] = set()
    for r in p.rows:
        if "quic_type" not in r.fields:
            continue
        if r.dst == server:
            yield r, dcids, sources, clear
            dcids.add(r.fields["quic_dcid"])
            sources.add(r.src)
        if r.fields.get("quic_scid"):
            clear.add(r.fields["quic_scid"])


def quic_rotated_dcid(p: Packets) -> str:
    """The first short-header DCID from a known source that was never seen before, not even as
    a CID in a handshake packet: a CID issued in an encrypted NEW_CONNECTION_ID frame."""
    return next(r.fields["quic_dcid"] for r, dcids, sources, clear in _to_server(p)
                if r.fields["quic_type"] == "1-RTT" and r.src in sources
                and r.fields["quic_dcid"] not in dcids | clear)


def quic_migrated_endpoint(p: Packets) -> str:
    """The first packet with a known DCID from a source never seen before (RFC 9000 section 9)."""
    return next(r.src for r, dcids, sources, _ in _to_server(p)
                if r.fields["quic_type"] == "1-RTT" and r.src not in sources
                and r.fields["quic_dcid"] in dcids)


def quic_retry_packet(p: Packets) -> int:
    return next(r.number for r in p.rows if r.fields.get("quic_type") == "Retry")


# -- HTTP through the balancer (lab 05): reassembled messages and their headers --------------------


@dataclass(frozen=True)
class Message:
    number: int  #: the packet that carries its first byte
    src: str
    dst: str
    start: str  #: request or status line
    headers: dict[str, str]  #: names lower-cased

    @property
    def is_response(self) -> bool:
        return self.start.startswith("HTTP/")


def _streams(p: Packets) -> dict[tuple[str, str], list[tuple[int, bytes]]]:
    """Per direction: (packet number, payload) of each data segment in sequence order (modulo
    2**32 from the first one seen), a retransmission once."""
    out: dict[tuple[str, str], dict[int, tuple[int, bytes]]] = {}
    base: dict[tuple[str, str], int] = {}
    for r in p.rows:
        data = p.payload(r) if r.proto == "TCP" else b""
        if data:
            key = (r.src, r.dst)
            offset = (r.fields["tcp_seq"] - base.setdefault(key, r.fields["tcp_seq"])) % 2**32
            out.setdefault(key, {}).setdefault(offset, (r.number, data))
    return {k: [v[offset] for offset in sorted(v)] for k, v in out.items()}


def _messages(p: Packets) -> list[Message]:
    """HTTP/1.x message heads, each from its direction's bytes in sequence order."""
    found = []
    for (src, dst), segments in _streams(p).items():
        stream, owner = b"", []
        for number, data in segments:
            owner.append((len(stream), number))
            stream += data
        at = 0
        while (end := stream.find(b"\r\n\r\n", at)) >= 0:
            head = stream[at:end].decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (line.partition(":") for line in head[1:])}
            number = [n for start, n in owner if start <= at][-1]
            if head[0].startswith(("HTTP/", "GET ", "POST ", "PUT ", "DELETE ", "HEAD ")):
                found.append(Message(number, src, dst, head[0], headers))
            at = end + 4 + (_int(headers.get("content-length", "0")) or 0)
    return sorted(found, key=lambda m: m.number)


def _balancer(messages: list[Message]) -> str:
    """The balancer is where the first request went: the client speaks first."""
    return next(m.dst for m in messages if not m.is_response)


def _response_to(messages: list[Message], request: Message) -> Message:
    return next(m for m in messages if m.is_response and m.number > request.number
                and (m.src, m.dst) == (request.dst, request.src))


def _backend_request(messages: list[Message], method_path: str) -> Message:
    balancer = _balancer(messages)
    return next(m for m in messages if not m.is_response and m.dst != balancer
                and m.start.startswith(method_path + " "))


def lb_login_backend_port(p: Packets) -> int:
    return _port(_backend_request(_messages(p), "POST /login").dst)


def lb_session_id(p: Packets) -> str:
    for m in _messages(p):
        name, _, value = m.headers.get("set-cookie", "").partition("=")
        if name.strip() == "sessionId":
            return value.split(";", 1)[0].strip()
    raise LookupError("no response set the sessionId cookie")


def lb_cart_pid(p: Packets) -> int:
    messages = _messages(p)
    return int(_response_to(messages, _backend_request(messages, "GET /cart"))
               .headers["x-backend-pid"])


def lb_cart_status(p: Packets) -> int:
    messages = _messages(p)
    return int(_response_to(messages, _backend_request(messages, "GET /cart")).start.split()[1])


def lb_backends_that_served(p: Packets) -> int:
    """Distinct sources of responses that are not the balancer."""
    messages = _messages(p)
    balancer = _balancer(messages)
    return len({m.src for m in messages if m.is_response and m.src != balancer})


# -- TLS session tickets (lab 08): ClientHello and ServerHello bytes (RFC 8446 section 4.1.2) -----


@dataclass(frozen=True)
class _TlsConnection:
    hello: Row  #: the connection's first ClientHello
    ticket: str  #: the first pre_shared_key identity it presented (hex), "" for none
    relayed: bool  #: the same ClientHello (random) was seen before: a relay's copy
    resumed: bool | None  #: the ServerHello answered with pre_shared_key; None: no ServerHello


def _tls_connections(p: Packets) -> list[_TlsConnection]:
    from protolab.protocols.tls import parse_hello

    hellos: dict[frozenset, tuple[Row, object]] = {}
    servers: dict[frozenset, object] = {}
    randoms: set[bytes] = set()
    relayed: dict[frozenset, bool] = {}
    for r in p.rows:
        hello = parse_hello(p.payload(r)) if r.proto == "TCP" else None
        key = frozenset((r.src, r.dst))
        if hello is not None and hello.client and key not in hellos:
            hellos[key] = (r, hello)
            relayed[key] = hello.random in randoms
            randoms.add(hello.random)
        elif hello is not None and not hello.client and key in hellos:
            servers.setdefault(key, hello)
    return [_TlsConnection(r, h.identities[0].hex() if h.identities else "", relayed[k],
                           servers[k].resumed if k in servers else None)
            for k, (r, h) in hellos.items()]


def tls_first_resumed_server_hello(p: Packets) -> int:
    from protolab.protocols.tls import parse_hello

    return next(r.number for r in p.rows if r.proto == "TCP" and (h := parse_hello(
        p.payload(r))) is not None and h.resumed)


def tls_first_ticket(p: Packets) -> str:
    return next(c.ticket for c in _tls_connections(p) if c.ticket)[:8]


def tls_restarted_client_port(p: Packets) -> int:
    """The client's own connection whose ticket was refused first: the restarted server's."""
    return next(c.hello.fields["sport"] for c in _tls_connections(p)
                if c.ticket and not c.relayed and c.resumed is False)


def tls_refusing_backend_port(p: Packets) -> int:
    return next(c.hello.fields["dport"] for c in _tls_connections(p)
                if c.ticket and c.relayed and c.resumed is False)


def tls_tickets_presented(p: Packets) -> int:
    return sum(1 for c in _tls_connections(p) if c.ticket and not c.relayed)


# -- WebSocket (lab 10): the upgrade's HTTP head and the frames' bytes (RFC 6455 sections 4, 5.2) --


@dataclass(frozen=True)
class _WsUpgrade:
    row: Row  #: the upgrade request
    key: str  #: its Sec-WebSocket-Key
    since: int | None  #: the resume point in its target; None on a first connection
    welcome: dict  #: the first frame's JSON on that connection ({} when none)


def _ws_upgrades(p: Packets) -> list[_WsUpgrade]:
    """Each upgrade request in capture order, with the welcome that came back on its
    connection (the first text frame after the 101)."""
    from protolab.protocols.chat import decode, parse_target
    from protolab.protocols.websocket import parse_upgrade, split_frames

    found: dict[frozenset, tuple[Row, str, int | None]] = {}
    welcomes: dict[frozenset, dict] = {}
    for r in p.rows:
        if r.proto != "TCP" or not (payload := p.payload(r)):
            continue
        pair = frozenset((r.src, r.dst))
        up = parse_upgrade(payload)
        if up is not None and up.request:
            found[pair] = (r, up.key, parse_target(up.target)[1])
            welcomes.pop(pair, None)
        elif pair in found and pair not in welcomes and r.src != found[pair][0].src:
            rest = payload[up.length:] if up is not None else payload
            frames, _ = split_frames(rest)
            if frames:
                welcomes[pair] = decode(frames[0].text)
    return [_WsUpgrade(r, key, since, welcomes.get(pair, {}))
            for pair, (r, key, since) in sorted(found.items(), key=lambda i: i[1][0].number)]


def _ws_frames(p: Packets):
    """(row, frame) for every whole frame that starts a segment after an upgrade."""
    from protolab.protocols.websocket import parse_upgrade, split_frames

    opened: set[frozenset] = set()
    for r in p.rows:
        if r.proto != "TCP" or not (payload := p.payload(r)):
            continue
        pair = frozenset((r.src, r.dst))
        up = parse_upgrade(payload)
        if up is not None:
            if not up.request:
                opened.add(pair)
            continue
        if pair in opened:
            for frame in split_frames(payload)[0]:
                yield r, frame


def ws_first_101(p: Packets) -> int:
    from protolab.protocols.websocket import parse_upgrade

    return next(r.number for r in p.rows if r.proto == "TCP" and (u := parse_upgrade(
        p.payload(r))) is not None and u.status == 101)


def ws_first_key(p: Packets) -> str:
    return _ws_upgrades(p)[0].key


def ws_first_mask(p: Packets) -> str:
    return next(f.mask.hex() for _, f in _ws_frames(p) if f.masked)


def ws_going_away_code(p: Packets) -> int:
    """The code of the first close frame a server sent that was not a reply (not 1000)."""
    return next(f.close_code for _, f in _ws_frames(p)
                if not f.masked and f.close_code not in (None, 1000))


def ws_first_since(p: Packets) -> int:
    return next(u.since for u in _ws_upgrades(p) if u.since is not None)


def ws_resumed_client_port(p: Packets) -> int:
    """The client's port of the first reconnect whose welcome replayed messages."""
    return next(u.row.fields["sport"] for u in _ws_upgrades(p)
                if u.since is not None and u.welcome.get("replay"))


def ws_restarted_pid(p: Packets) -> int:
    """The PID that welcomed the first reconnect whose welcome did not know the place."""
    return next(int(u.welcome["pid"]) for u in _ws_upgrades(p)
                if u.since is not None and u.welcome and not u.welcome.get("known"))


# -- NAT (lab 06): one capture at four points; each row's point is its pcapng interface ----------


def _first_request_rows(p: Packets) -> list[Row]:
    """The workflow's first request (seq=1 total=0), every sighting of it."""
    return [r for r in p.rows if r.proto == "UDP" and p.payload(r).startswith(b"seq=1 total=0 ")]


def nat_outside_port(p: Packets) -> int:
    """The source port the router gave the first request on its outside (RFC 3022 NAPT)."""
    return next(r.fields["sport"] for r in _first_request_rows(p) if point(r) == "router:wan")


def nat_points_seen(p: Packets) -> int:
    return len({point(r) for r in _first_request_rows(p)})


def nat_last_pid(p: Packets) -> int:
    replies = [parse_reply(p.payload(r)) for r in p.rows if r.proto == "UDP"]
    return [x for x in replies if x is not None][-1].pid


def _dropped(p: Packets) -> Row:
    """A datagram that came in at router:wan, from the server's side, and was never seen at
    router:lan or client:eth0 (its sightings: the annotator's copies of one packet)."""
    at = ({point(r): r for r in seen} for seen in sightings(p.rows).values())
    return next(by["router:wan"] for by in at if "router:wan" in by
                and by["router:wan"].proto == "UDP"
                and by["router:wan"].dst.startswith("203.0.113.1:")
                and not {"router:lan", "client:eth0"} & by.keys())


def nat_dropped_packet(p: Packets) -> int:
    return _dropped(p).number


def nat_dropped_port(p: Packets) -> int:
    return _dropped(p).fields["dport"]


def nat_tcp_outside_port(p: Packets) -> int:
    """The source port of the first SYN as the server's own capture point saw it."""
    return next(r.fields["sport"] for r in p.rows if point(r) == "server:eth0"
                and _flags(r) & (SYN | ACK) == SYN)


# -- a stolen session (lab 09): the HTTP messages, reassembled, and who sent them -----------------


def _http(p: Packets) -> list:
    from protolab.analysis.http_streams import http_messages

    return http_messages(sorted(p.decoded.items()))


def _host(endpoint: str) -> str:
    return endpoint.rsplit(":", 1)[0]


def _attacker_requests(p: Packets) -> list:
    """Requests from another address than the victim's (the sender of the first request)."""
    messages = _http(p)
    victim = _host(next(m.src for m in messages if not m.is_response))
    return [m for m in messages if not m.is_response and _host(m.src) != victim]


def _answer(p: Packets, request) -> object:
    return next(m for m in _http(p) if m.is_response and m.number > request.number
                and (m.src, m.dst) == (request.dst, request.src))


def _cookie(value: str | None, name: str = "sessionId") -> str:
    for part in (value or "").split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v
    raise LookupError(f"no {name} cookie")


def _first_cookie_replay(p: Packets) -> object:
    return next(m for m in _attacker_requests(p) if m.header("cookie"))


def hijack_replayed_id(p: Packets) -> str:
    return _cookie(_first_cookie_replay(p).header("cookie"))[:8]


def hijack_attacker_port(p: Packets) -> int:
    return _port(_first_cookie_replay(p).src)


def hijack_password_packet(p: Packets) -> int:
    login = next(m for m in _http(p) if m.start.startswith("POST /login") and b"password"
                 in m.body)
    return login.body_number


def _after_logout(p: Packets) -> list:
    """The attacker's requests sent after a POST /logout to the same balancer."""
    logouts = {}
    for m in _http(p):
        if m.start.startswith("POST /logout"):
            logouts.setdefault(m.dst, m.number)
    return [m for m in _attacker_requests(p) if m.dst in logouts
            and m.number > logouts[m.dst] and m.start.startswith("GET ")]


def hijack_status_after_logout(p: Packets) -> int:
    return _answer(p, _after_logout(p)[0]).status


def hijack_accepted(p: Packets) -> int:
    return sum(1 for m in _attacker_requests(p) if _answer(p, m).status == 200)


def hijack_token_after_logout_port(p: Packets) -> int:
    return _port(next(m.src for m in _after_logout(p) if m.header("authorization")
                      and _answer(p, m).status == 200))


def hijack_fixed_id(p: Packets) -> str:
    login = next(m for m in _http(p) if m.start.startswith("POST /login")
                 and m.header("cookie"))
    return _cookie(_answer(p, login).header("set-cookie"))[:8]


# -- TCP under attack (lab 07): from flags, sequence numbers and options --------------------------


def _story(p: Packets, find: Callable[[list[Row]], list[int]]) -> list[Row]:
    numbers = find(p.rows)
    if not numbers:
        raise LookupError("not in this capture")
    by_number = {r.number: r for r in p.rows}
    return [by_number[n] for n in numbers]


def attack_first_resent_to(p: Packets) -> str:
    from protolab.analysis.story_checks import attack_syn_queue

    return _story(p, attack_syn_queue)[0].dst


def attack_legit_port(p: Packets) -> int:
    from protolab.analysis.story_checks import attack_legit_refused

    return _port(_story(p, attack_legit_refused)[0].src)


def attack_cookie_tsval(p: Packets) -> int:
    from protolab.analysis.story_checks import attack_cookie_handshake

    return p.decoded[_story(p, attack_cookie_handshake)[1].number].tcp.parsed_options().tsval


def attack_cookie_low_bits(p: Packets) -> str:
    return f"{attack_cookie_tsval(p) % 64:#04x}"


def attack_exact_rst_seq(p: Packets) -> int:
    from protolab.analysis.story_checks import attack_rst_exact

    return _story(p, attack_rst_exact)[0].fields["tcp_seq"]


def attack_challenge_ack_packet(p: Packets) -> int:
    from protolab.analysis.story_checks import attack_rst_challenge

    return _story(p, attack_rst_challenge)[1].number


def attack_keepalive_port(p: Packets) -> int:
    from protolab.analysis.story_checks import attack_keepalive

    return _port(_story(p, attack_keepalive)[0].dst)


def attack_keepalive_probes(p: Packets) -> int:
    from protolab.analysis.story_checks import attack_keepalive

    return len(_story(p, attack_keepalive)) - 1


# -- DNS cache (lab 11): from the questions, IDs, ports and answers in the DNS messages ------------


def _cache_dns(p: Packets, response: bool) -> list[Row]:
    return [r for r in p.rows if r.proto == "DNS" and r.fields.get("dns_response") is response]


def _host(endpoint: str) -> str:
    return endpoint.rsplit(":", 1)[0]


def _first_miss(p: Packets) -> tuple[Row, Row]:
    """The first client query, and the query its resolver sent upstream for it: the same
    question, from another port of the host the client asked, to another server."""
    q1 = _cache_dns(p, False)[0]
    up = next(r for r in _cache_dns(p, False) if r.number > q1.number
              and r.fields["dns_question"] == q1.fields["dns_question"] and r.src != q1.src
              and _host(r.src) == _host(q1.dst) and r.dst != q1.dst and r.src != q1.dst)
    return q1, up


def _content(p: Packets, row: Row) -> tuple[str, str]:
    from protolab.analysis.annotate import parse_dns

    parsed = parse_dns(p.payload(row))
    return (parsed[2], parsed[4]) if parsed else ("", "")


def _answer_ttl(p: Packets, row: Row) -> int:
    from protolab.analysis.annotate_dns import answer_ttl

    ttl = answer_ttl(p.payload(row))
    if ttl is None:
        raise ValueError("no TTL")
    return ttl


def cache_upstream_port(p: Packets) -> int:
    return _first_miss(p)[1].fields["sport"]


def cache_lower_ttl(p: Packets) -> int:
    """The first TTL the first resolver told a client for that question lower than its first."""
    q1, _ = _first_miss(p)
    ttls = [_answer_ttl(p, r) for r in _cache_dns(p, True) if r.src == q1.dst
            and r.fields["dns_question"] == q1.fields["dns_question"]]
    return next(t for t in ttls if t < ttls[0])


def cache_upstream_count(p: Packets) -> int:
    q1, up = _first_miss(p)
    return sum(1 for r in _cache_dns(p, False) if r.dst == up.dst
               and r.fields["dns_question"] == q1.fields["dns_question"])


def _forged_taken(p: Packets) -> Row:
    """The answer a resolver took whose content (ids aside) a flood of other answers to the
    same port repeated: the forged answer that guessed the pending query's ID and port."""
    asked = {(r.src, r.dst, r.fields["dns_id"]) for r in _cache_dns(p, False)}
    answers = _cache_dns(p, True)
    copies: dict[tuple[str, tuple[str, str]], int] = {}
    for a in answers:
        key = (a.dst, _content(p, a))
        copies[key] = copies.get(key, 0) + 1
    return next(a for a in answers if (a.dst, a.src, a.fields["dns_id"]) in asked
                and copies[(a.dst, _content(p, a))] >= 10)


def cache_poisoned_id(p: Packets) -> str:
    return _hex16(_forged_taken(p).fields["dns_id"])


def cache_weak_port(p: Packets) -> int:
    return _forged_taken(p).fields["dport"]


def cache_forged_count(p: Packets) -> int:
    taken = _forged_taken(p)
    content = _content(p, taken)
    return sum(1 for a in _cache_dns(p, True) if a.dst == taken.dst and a.src == taken.src
               and _content(p, a) == content)

# -- the catalogue --------------------------------------------------------------------------------

LABS: tuple[Lab, ...] = (
    Lab("01", "tcp-connection-state", "TCP connection state lives in two kernels", "tcp-demo", (
        Question("q1", "From which client port did the first connection come?", tcp_client_port,
                 "the source port of packet #1, or part 1's `connect() from`", Form.NUMBER,
                 varies=True),
        Question("q2", "How many packets did the first connection's handshake take?",
                 tcp_handshake_packets, "count SYN, SYN/ACK and the ACK that completes it",
                 Form.NUMBER),
        Question("q3", "Which initial sequence number did the client's kernel choose for the "
                       "first connection (the raw seq of its SYN)?", tcp_client_isn,
                 "inspect shows seq relative to it (seq=0); `inspect FILE --detail 1` shows the "
                 "raw seq", Form.NUMBER, varies=True),
        Question("q4", "Which initial sequence number did the server's kernel choose for it "
                       "(the raw seq of its SYN/ACK)?", tcp_server_isn,
                 "`inspect FILE --detail 2`", Form.NUMBER, varies=True),
        Question("q5", "Which packet made the server's socket enter CLOSE_WAIT?",
                 tcp_close_wait_packet, "the first FIN of connection 1: who received it?",
                 Form.PACKET),
        Question("q6", "What did the server's kernel send back to the forged out-of-window "
                       "segment (its TCP flags)?", tcp_forged_reply,
                 "find the segment whose seq is far outside the window; look at the next "
                 "packet back", Form.FLAGS),
        Question("q7", "From which port did the RST to port 40404 come?", tcp_rst_port,
                 "--filter 'port 40404'", Form.NUMBER, varies=True),
    )),
    Lab("02", "udp-litmus", "UDP keeps nothing: the litmus test", "udp-demo", (
        Question("q1", "Which server process (PID) answered the workflow's first request?",
                 udp_first_pid, "pid= in the reply to seq=1 total=0 add=5", Form.NUMBER,
                 varies=True),
        Question("q2", "Which server process (PID) answered after the restart?", udp_last_pid,
                 "pid= in the last reply", Form.NUMBER, varies=True),
        Question("q3", "What total did the server answer to the last request of the workflow?",
                 udp_last_total, "total= in the last reply", Form.NUMBER),
        Question("q4", "From which client port did the workflow's datagrams come?",
                 udp_workflow_port, "the source port of seq=1 total=0 add=5", Form.NUMBER,
                 varies=True),
        Question("q5", "Which client port does the first ICMP port unreachable name (the "
                       "sender of the datagram it answers)?", udp_icmp_named_port,
                 "--filter icmp: `ICMP port unreachable for ADDRESS:PORT → ...`", Form.NUMBER,
                 varies=True),
        Question("q6", "How many different client sockets (address:port) did the server "
                       "answer?", udp_clients_answered,
                 "count the distinct destinations of the server's replies", Form.NUMBER),
    )),
    Lab("03", "dns-query-ids", "DNS query IDs: the client holds the state", "dns-demo", (
        Question("q1", "What was the query ID of the answer that arrived first?",
                 dns_first_answer_id, "the first answer row that ends a pending query",
                 Form.HEX, varies=True),
        Question("q2", "From which client port did the first queries go out (the one socket "
                       "of part 1)?", dns_first_socket_port, "the source port of packet #1",
                 Form.NUMBER, varies=True),
        Question("q3", "Did the answers come back in the order the queries were sent?",
                 dns_answers_in_order, "compare the order of IDs in queries and in answers",
                 Form.YESNO),
        Question("q4", "What ID did the forged answer from the server's own port carry?",
                 dns_forged_id, "the answer from the server's port whose id no query had",
                 Form.HEX, varies=True),
        Question("q5", "From which port did the forged answer with the right ID but the wrong "
                       "source come?", dns_wrong_source_port,
                 "the answer whose id is pending but whose source is not the server",
                 Form.NUMBER, varies=True),
        Question("q6", "Which packet is the ICMP port unreachable?", dns_icmp_packet,
                 "--filter icmp", Form.PACKET),
    )),
    Lab("04", "quic-connection-ids", "QUIC connection IDs: state keyed by CID, not address",
        "quic-demo", (
            Question("q1", "Which connection ID did the client choose for itself in its first "
                           "Initial (its SCID)?", quic_client_cid,
                     "packet #1: SCID=...", Form.HEX, varies=True),
            Question("q2", "Which connection ID did the server choose for the first connection "
                           "(the SCID of its first Initial)?", quic_server_cid,
                     "the server's first Initial: SCID=...", Form.HEX, varies=True),
            Question("q3", "Which DCID did the client switch to when it rotated?",
                     quic_rotated_dcid, "the first client packet with a DCID new to the capture "
                     "on the same path", Form.HEX, varies=True),
            Question("q4", "From which address and port did the client send after it "
                           "migrated?", quic_migrated_endpoint,
                     "the first client packet from a new source with a known DCID",
                     Form.ENDPOINT, varies=True),
            Question("q5", "Which packet is the Retry?", quic_retry_packet,
                     "--filter quic, look for Retry in the summary", Form.PACKET),
        )),
    Lab("05", "backends-sessions-jwt-lb", "Stateful and stateless backends behind a balancer",
        "lb", (
            Question("q1", "Which backend (its port) answered POST /login and so created your "
                           "session?", lb_login_backend_port,
                     "the balancer's POST /login to a backend port, or the `lb` output's "
                     "`b1=127.0.0.1:PORT`", Form.NUMBER, varies=True),
            Question("q2", "What session ID did the login give the client (the value of its "
                           "sessionId cookie)?", lb_session_id,
                     "the Set-Cookie header of the login's response (`inspect FILE --detail N`, "
                     "or tshark -Y http.set_cookie)", Form.TEXT, varies=True),
            Question("q3", "Which backend process (PID) answered GET /cart?", lb_cart_pid,
                     "the X-Backend-Pid header, or the `lb` output's `GET /cart → bN (pid ...)`",
                     Form.NUMBER, varies=True),
            Question("q4", "Which HTTP status did GET /cart get?", lb_cart_status,
                     "the status line of the response to GET /cart", Form.NUMBER),
            Question("q5", "How many different backends answered your workflow's requests?",
                     lb_backends_that_served,
                     "count the distinct sources of HTTP responses that are not the balancer",
                     Form.NUMBER),
        )),
    Lab("06", "nat-conntrack", "A NAT keeps state: conntrack, timeouts, keepalives",
        "nat-demo", (
            Question("q1", "From which source port did the router send the workflow's first "
                           "request on its outside (at router:wan)?", nat_outside_port,
                     "--filter 'udp and host 203.0.113.1': the row @router:wan of "
                     "seq=1 total=0 add=5", Form.NUMBER, varies=True),
            Question("q2", "At how many capture points was that first request seen?",
                     nat_points_seen, "count the rows of seq=1 total=0 add=5 (each says @POINT)",
                     Form.NUMBER),
            Question("q3", "Which server process (PID) answered after the restart?",
                     nat_last_pid, "pid= in the last seq=... total=... reply", Form.NUMBER,
                     varies=True),
            Question("q4", "Which packet is the server's datagram the router dropped (seen at "
                           "router:wan, never at router:lan or client:eth0)?",
                     nat_dropped_packet, "the push to the lost flow: which points saw it?",
                     Form.PACKET),
            Question("q5", "To which outside port was that dropped datagram sent?",
                     nat_dropped_port, "its destination port @router:wan", Form.NUMBER,
                     varies=True),
            Question("q6", "From which source port did the TCP connection's SYN reach the "
                           "server (at server:eth0)?", nat_tcp_outside_port,
                     "--filter tcp: the SYN @server:eth0", Form.NUMBER, varies=True),
        )),
    Lab("07", "tcp-under-attack", "TCP's state under attack", "tcp-attack-demo", (
        Question("q1", "To which spoofed source (address:port) did the server resend a SYN-ACK "
                       "first?", attack_first_resent_to,
                 "the first row that says \"half-open entry in the server's SYN queue\" "
                 "(@server:sink); its destination", Form.ENDPOINT, varies=True),
        Question("q2", "From which client port did the legitimate client try to connect while "
                       "the queue was full?", attack_legit_port,
                 "the SYN from 192.0.2.2 that appears twice with no SYN-ACK", Form.NUMBER,
                 varies=True),
        Question("q3", "What TSval did the SYN cookie SYN-ACK to the legitimate client carry?",
                 attack_cookie_tsval, "`protolab inspect CAPTURE --detail N` on the row that "
                 "says \"no state kept: it is in the ISN\" to 192.0.2.2", Form.NUMBER,
                 varies=True),
        Question("q4", "What are that TSval's low 6 bits, in hex (window scale | SACK<<4 | "
                       "ECN<<5)?", attack_cookie_low_bits,
                 "TSval modulo 64, written as hex; compare with the SYN's options", Form.HEX),
        Question("q5", "Which packet is the server's challenge ACK?",
                 attack_challenge_ack_packet, "the row that says \"challenge ACK (RFC 5961\"",
                 Form.PACKET),
        Question("q6", "What sequence number (absolute) did the RST that reset the connection "
                       "carry?", attack_exact_rst_seq,
                 "`inspect --json` gives fields.tcp_seq; the RST at exactly RCV.NXT",
                 Form.NUMBER, varies=True),
        Question("q7", "To which client port did the server send its keepalive probes?",
                 attack_keepalive_port, "the rows that say \"keepalive probe\"", Form.NUMBER,
                 varies=True),
        Question("q8", "How many keepalive probes went unanswered before the server's RST?",
                 attack_keepalive_probes, "count the keepalive probe rows of that connection",
                 Form.NUMBER),
    )),
    Lab("08", "tls-session-tickets", "TLS 1.3 session tickets: the server's state, held by the "
        "client", "tls-demo", (
            Question("q1", "Which packet is the first ServerHello that resumed a session "
                           "(pre_shared_key in it)?", tls_first_resumed_server_hello,
                     "the first `TLS ServerHello pre_shared_key=0 (resumed)` row", Form.PACKET),
            Question("q2", "What are the first 8 hex digits of the first ticket the client "
                           "presented (its pre_shared_key identity)?", tls_first_ticket,
                     "the first `TLS ClientHello pre_shared_key ticket=...` row, or tshark's "
                     "tls.handshake.extensions.psk.identity.identity", Form.HEX, varies=True),
            Question("q3", "From which client port did the connection to the restarted server "
                           "come (the ticket it presented was refused)?",
                     tls_restarted_client_port, "part 3's line, or the first ClientHello with a "
                     "ticket whose ServerHello says full handshake", Form.NUMBER, varies=True),
            Question("q4", "To which backend port did the relay carry a ticket that was refused "
                           "there?", tls_refusing_backend_port,
                     "part 5: a relayed ClientHello (`same ClientHello as`) with a ticket, "
                     "answered by a full handshake", Form.NUMBER, varies=True),
            Question("q5", "How many of the client's own ClientHellos presented a ticket (not "
                           "counting the relay's copies)?", tls_tickets_presented,
                     "count `pre_shared_key ticket=` rows that are not relayed copies",
                     Form.NUMBER),
        )),
    Lab("09", "stolen-session", "A stolen session: replayed from the capture", "hijack-demo", (
        Question("q1", "What are the first 8 characters of the session ID the attacker replayed "
                       "first (its sessionId cookie)?", hijack_replayed_id,
                 "the first request from 127.0.0.2: its Cookie header (`inspect FILE --exposed`)",
                 Form.TEXT, varies=True),
        Question("q2", "From which port did the attacker send that first replay?",
                 hijack_attacker_port, "the source port of that request (127.0.0.2:PORT)",
                 Form.NUMBER, varies=True),
        Question("q3", "Which packet carried the victim's password in the clear (the body of "
                       "the first POST /login)?", hijack_password_packet,
                 "`inspect FILE --exposed`: the `password` line", Form.PACKET),
        Question("q4", "Which HTTP status did the attacker's first replay after the victim's "
                       "logout get?", hijack_status_after_logout,
                 "the answer to the first request from 127.0.0.2 after a POST /logout to the "
                 "same balancer port", Form.NUMBER),
        Question("q5", "How many of the attacker's requests were answered 200?",
                 hijack_accepted, "count the 200s answering requests from 127.0.0.2",
                 Form.NUMBER),
        Question("q6", "From which port did the attacker replay the JWT that still got 200 after "
                       "the victim's logout?", hijack_token_after_logout_port,
                 "a request from 127.0.0.2 with an Authorization header, after POST /logout, "
                 "answered 200", Form.NUMBER, varies=True),
        Question("q7", "What are the first 8 characters of the session ID set by the login that "
                       "carried the attacker's planted cookie?", hijack_fixed_id,
                 "the POST /login with a Cookie header: the Set-Cookie of its answer",
                 Form.TEXT, varies=True),
    )),
    Lab("10", "websocket-state", "A WebSocket chat: restart and resume behind the balancer",
        "ws-demo", (
            Question("q1", "Which packet is the first 101 Switching Protocols?", ws_first_101,
                     "the first `WS 101 accept ok` row", Form.PACKET),
            Question("q2", "What Sec-WebSocket-Key did the first upgrade request carry?",
                     ws_first_key, "the first `WS upgrade key=...` row", Form.TEXT,
                     varies=True),
            Question("q3", "What masking key did the first masked frame carry (hex)?",
                     ws_first_mask, "the first row with `mask=`", Form.HEX, varies=True),
            Question("q4", "What close code did the backend stopped gracefully send?",
                     ws_going_away_code, "a server's close frame that is not a reply",
                     Form.NUMBER),
            Question("q5", "Which process (PID) welcomed the first reconnect that did not know "
                           "the client's place?", ws_restarted_pid,
                     "the welcome after the first `since=` upgrade: `known: false`",
                     Form.NUMBER, varies=True),
            Question("q6", "From which client port did the reconnect that got a replay come?",
                     ws_resumed_client_port, "part 3's `Alice reconnects from :PORT`, or the "
                     "`since=` upgrade whose welcome says it replayed", Form.NUMBER,
                     varies=True),
            Question("q7", "What last-seen id (since=) did the first reconnect send?",
                     ws_first_since, "the first `WS upgrade ... since=N` row", Form.NUMBER),
        )),
    Lab("11", "dns-cache", "A resolver's cache: TTLs, restarts, negative answers, poisoning",
        "cache-demo", (
            Question("q1", "From which port did the first resolver send its upstream query for "
                           "the first client's question?", cache_upstream_port,
                     "the row after packet #1 that says \"cache miss at resolver\"",
                     Form.NUMBER, varies=True),
            Question("q2", "What TTL did that resolver tell a client on its first answer with a "
                           "lower TTL than its first one (part 2)?", cache_lower_ttl,
                     "the answers from that resolver for www.lab.: `inspect CAPTURE --detail N`"
                     " shows each TTL", Form.NUMBER),
            Question("q3", "How many queries for www.lab. did that resolver's upstream receive "
                           "in the whole run?", cache_upstream_count,
                     "--filter 'port N' with the upstream's port, and count the www.lab. queries",
                     Form.NUMBER),
            Question("q4", "What ID did the forged answer the weak resolver took carry?",
                     cache_poisoned_id, "the row that says \"a guessed id matched the pending "
                     "upstream query\"", Form.HEX, varies=True),
            Question("q5", "On which port did the weak resolver wait for its upstream answers "
                           "(its fixed source port)?", cache_weak_port,
                     "the destination port of that forged answer", Form.NUMBER, varies=True),
            Question("q6", "How many answers with that forged content went to that port?",
                     cache_forged_count, "count the flood: the folded line of the demo's "
                     "output, or --filter on the port", Form.NUMBER),
        )),
)


def find(number: str) -> Lab:
    for lab in LABS:
        if lab.number == number.zfill(2):
            return lab
    raise CheckError(f"no lab {number}: the labs are " + ", ".join(lab.number for lab in LABS))


# -- grading --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mark:
    question: Question
    given: str  #: the answer as the file gave it ("" for none)
    right: bool
    expected: str


def _int(text: str) -> int | None:
    text = text.strip().replace("_", "")
    try:
        return int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        return None


def readings(value: object, form: Form) -> set[object]:
    """What an answer can mean in `form`: empty when it cannot be one. A TOML integer in a hex
    question may have been written `0x6ff8` or `1234` meaning hex 1234: both readings count."""
    if isinstance(value, bool):
        return {"yes" if value else "no"} if form is Form.YESNO else set()
    if isinstance(value, float):
        value = int(value) if value.is_integer() else str(value)
    if isinstance(value, int):
        if form is Form.HEX:
            return {value, int(str(value), 16)} if value >= 0 else set()
        return {value} if form in (Form.NUMBER, Form.PACKET) else {str(value)}
    if not isinstance(value, str) or not value.strip():
        return set()
    text = value.strip()
    if form is Form.PACKET:
        number = _int(text.removeprefix("#"))
        return set() if number is None else {number}
    if form is Form.NUMBER:
        number = _int(text)
        return set() if number is None else {number}
    if form is Form.HEX:
        number = _int("0x" + text.lower().removeprefix("0x"))
        return set() if number is None else {number}
    if form is Form.YESNO:
        word = {"y": "yes", "true": "yes", "n": "no", "false": "no"}.get(text.lower(),
                                                                          text.lower())
        return {word} if word in ("yes", "no") else set()
    if form is Form.FLAGS:
        names = text.strip("[]").upper().replace(",", "/").replace("+", "/").replace("-", "/")
        return {frozenset(n.strip() for n in names.replace(" ", "/").split("/") if n.strip())}
    if form is Form.ENDPOINT:
        return {text.replace(" ", "").lower()}
    if form is Form.WORD:
        return {text.lower()}
    return {text.removeprefix("sessionId=")}


def _shown(value: object) -> str:
    return value if isinstance(value, str) else str(value).lower() if isinstance(value, bool) \
        else str(value)


def _given(value: object, form: Form) -> str:
    """The answer as the file gave it; a TOML integer in a hex question also in hex."""
    if value == "":
        return ""
    if form is Form.HEX and isinstance(value, int) and not isinstance(value, bool):
        return f"{value} ({value:#x})"
    return _shown(value)


def facts(lab: Lab, capture: Path) -> dict[str, str]:
    """The right answers for this capture, written as the output prints them."""
    from protolab.wire.pcap import PcapError

    try:
        packets = read(capture)
    except PcapError as exc:
        raise CheckError(str(exc)) from None
    out = {}
    for q in lab.questions:
        try:
            out[q.key] = _shown(q.fact(packets))
        except (StopIteration, LookupError, ValueError, IndexError, KeyError):
            raise CheckError(f"{capture} is not a capture of `protolab {lab.demo}` (question "
                             f"{q.key} cannot be answered from it)") from None
    return out


def grade(lab: Lab, answers_file: Path, capture: Path) -> list[Mark]:
    try:
        answers = tomllib.loads(answers_file.read_text())
    except OSError as exc:
        raise CheckError(f"cannot read {answers_file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CheckError(f"{answers_file} is not a text file") from None
    except tomllib.TOMLDecodeError as exc:
        raise CheckError(f"{answers_file} is not valid TOML: {exc}") from None
    right = facts(lab, capture)
    marks = []
    for q in lab.questions:
        given = answers.get(q.key, "")
        ok = bool(readings(given, q.form) & readings(right[q.key], q.form))
        marks.append(Mark(q, _given(given, q.form), ok, right[q.key]))
    return marks


def written(path: Path) -> str:
    """When a file was last written, in local time to the millisecond."""
    return datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def graded_line(lab: Lab, capture: Path) -> str:
    """The one line that says which capture is graded, and when it was written."""
    return (f"Lab {lab.number}: {lab.title} — graded against {capture} (written "
            f"{written(capture)})")


def newer_capture(answers_file: Path, capture: Path) -> Observation | None:
    """The rule: a capture written after the answers file was last written is a later run than
    the one the answers came from (or the answers were written before any run), and a re-run
    gives other ports, IDs and PIDs. None when the answers file is the newer one."""
    if capture.stat().st_mtime_ns <= answers_file.stat().st_mtime_ns:
        return None
    return observe(
        "check.capture-newer-than-answers", "the capture graded is the one the answers came from",
        True, seen="your capture is newer than your answers file: re-running the demo changes "
                   "the answers (its ports, IDs and PIDs); answer from this capture, or grade "
                   "the one you answered from with --pcap",
        evidence=[Evidence(f"{answers_file} written", after=written(answers_file)),
                  Evidence(f"{capture} written", after=written(capture))])


def template(lab: Lab) -> str:
    lines = [f"# Answers for lab {lab.number}: {lab.title}",
             f"# Fill in each value from your own run, then: protolab check {lab.number} "
             f"--answers THIS_FILE", ""]
    for q in lab.questions:
        lines += [f"# {q.key}: {q.text}", f'{q.key} = ""   # {q.form.value}', ""]
    return "\n".join(lines)


def status() -> list[tuple[str, str, str, str]]:
    """(number, title, worksheet, capture) with what exists here."""
    rows = []
    for lab in LABS:
        sheet = lab.worksheet.relative_to(SOURCE_ROOT) if lab.worksheet.exists() else "missing"
        live = lab.capture.exists()
        ref = reference_capture(lab.demo)
        capture = (f"{lab.capture} (your run)" if live else
                   f"no run yet; reference {ref}" if reference_file(lab.demo).exists()
                   else "no run yet")
        rows.append((lab.number, lab.title, str(sheet), capture))
    return rows
