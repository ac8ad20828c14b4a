"""What each demo's capture must show: its story as checks on the annotated rows.

Where state lives: in the capture. A demo's story ("answers are matched by ID, out of order; a
forged answer is dropped; an answer to a closed socket gets ICMP") is written here once, as steps
whose evidence is found in the annotated rows of a capture — never in a process's memory. The same
steps check a live run (tests), a replay of the committed reference capture (`--replay`), and a
freshly made reference capture before `protolab captures --refresh` accepts it. A step that finds
no evidence names itself; bytes, ports and IDs may change from run to run, the story may not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from protolab.analysis.annotate import Action, Kind, Row
from protolab.analysis.story_cache import (
    cache_expiry,
    cache_flood_dropped,
    cache_forged,
    cache_hit,
    cache_miss,
    cache_negative,
    cache_ttl_down,
)
from protolab.analysis.story_hijack import (
    hijack_cookie_replayed,
    hijack_cookie_revoked,
    hijack_exposed,
    hijack_fixation,
    hijack_tls_encrypted,
    hijack_token_denied,
    hijack_token_replayed,
    hijack_token_survives,
)
from protolab.analysis.story_tls import (
    tls_full,
    tls_refused,
    tls_resumed,
    tls_shared_key,
    tls_sticky,
)
from protolab.analysis.story_ws import (
    ws_dropped,
    ws_graceful,
    ws_masked,
    ws_ping,
    ws_place_gone,
    ws_resumed,
    ws_upgrade,
)
from protolab.protocols.counter import Reply, parse_reply
from protolab.protocols.tcp import ACK, FIN, RST, SYN, TcpState

Finder = Callable[[Sequence[Row]], list[int]]


@dataclass(frozen=True)
class Step:
    key: str
    text: str  #: what the capture shows, in the demo's words
    find: Finder  #: the packet numbers that show it; empty when the capture does not


@dataclass(frozen=True)
class Finding:
    step: Step
    packets: tuple[int, ...]

    @property
    def shown(self) -> bool:
        return bool(self.packets)


# -- DNS ------------------------------------------------------------------------------------------


def dns_queries(rows: Sequence[Row]) -> list[Row]:
    return [r for r in rows if "dns_id" in r.fields and not r.fields.get("dns_response")]


def dns_answers(rows: Sequence[Row]) -> list[Row]:
    return [r for r in rows if "dns_id" in r.fields and r.fields.get("dns_response")]


def _first_socket(rows: Sequence[Row]) -> str | None:
    qs = dns_queries(rows)
    return qs[0].src if qs else None


def dns_batch(rows: Sequence[Row]) -> list[int]:
    """Two or more queries from one socket before its first answer."""
    sock = _first_socket(rows)
    first_answer = next((r.number for r in dns_answers(rows) if r.dst == sock), None)
    batch = [r.number for r in dns_queries(rows) if r.src == sock
             and (first_answer is None or r.number < first_answer)]
    return batch if len(batch) >= 2 else []


def dns_out_of_order(rows: Sequence[Row]) -> list[int]:
    """Every query of the batch matched (action ENDS) by ID, in an order other than sent."""
    sock = _first_socket(rows)
    asked = [r.fields["dns_id"] for r in dns_queries(rows) if r.src == sock]
    matched = [r for r in dns_answers(rows) if r.dst == sock and r.action is Action.ENDS]
    ids = [r.fields["dns_id"] for r in matched]
    ok = len(asked) >= 2 and sorted(ids) == sorted(asked) and ids != asked
    return [r.number for r in matched] if ok else []


def dns_forged_id(rows: Sequence[Row]) -> list[int]:
    server = dns_queries(rows)[0].dst if dns_queries(rows) else None
    return [r.number for r in dns_answers(rows) if r.src == server
            and r.shows(Kind.DNS_UNKNOWN_ID)]


def dns_wrong_source(rows: Sequence[Row]) -> list[int]:
    return [r.number for r in dns_answers(rows)
            if r.shows(Kind.DNS_WRONG_SOURCE)]


def dns_real_answer_after_forgeries(rows: Sequence[Row]) -> list[int]:
    """The real answer to the forged-at query still matches, after both forgeries."""
    forged = dns_wrong_source(rows)
    if not forged:
        return []
    qid = next(r.fields["dns_id"] for r in rows if r.number == forged[0])
    return [r.number for r in dns_answers(rows) if r.number > forged[0]
            and r.fields["dns_id"] == qid and r.action is Action.ENDS][:1]


def dns_closed_socket(rows: Sequence[Row]) -> list[int]:
    late = next((r for r in dns_answers(rows) if r.shows(Kind.DNS_TO_CLOSED_SOCKET)), None)
    icmp = next((r for r in rows if late and r.shows(Kind.ICMP_PORT_UNREACHABLE)
                 and r.number > late.number and late.number in r.fact.refs), None)
    return [late.number, icmp.number] if late and icmp else []


# -- TCP ------------------------------------------------------------------------------------------


def _with(rows: Sequence[Row], kind: Kind) -> list[int]:
    return [r.number for r in rows if r.shows(kind)]


def _moved(rows: Sequence[Row], old: TcpState, new: TcpState) -> list[int]:
    """Packets whose model transitions include old → new (on either side)."""
    return [r.number for r in rows if any(t.old is old and t.new is new for t in r.fact.moves)]


def _flags(r: Row) -> int:
    return r.fields.get("tcp_flags", 0)


def tcp_handshake(rows: Sequence[Row]) -> list[int]:
    first = [r for r in rows if r.proto == "TCP"][:3]
    kinds = [_flags(r) & (SYN | ACK | FIN | RST) for r in first]
    same = len({r.flow for r in first}) == 1
    return [r.number for r in first] if same and kinds == [SYN, SYN | ACK, ACK] else []


def tcp_close(rows: Sequence[Row]) -> list[int]:
    """The first connection closes: the first FIN (its receiver goes to CLOSE_WAIT), the second
    FIN, and the last ACK, sent by the side that closed first. That side's TIME_WAIT is in no
    packet: the model infers it, only a live run shows the kernel's entry."""
    wait = _moved(rows, TcpState.ESTABLISHED, TcpState.CLOSE_WAIT)[:1]
    if not wait:
        return []
    first = next(r for r in rows if r.number == wait[0])
    flow = [r for r in rows if r.flow == first.flow and r.number > first.number]
    second = next((r for r in flow if r.src == first.dst and _flags(r) & FIN), None)
    last = next((r for r in flow if second and r.number > second.number
                 and r.src == first.src and _flags(r) & (SYN | ACK | FIN | RST) == ACK), None)
    return [first.number, second.number, last.number] if second and last else []


def tcp_killed_server(rows: Sequence[Row]) -> list[int]:
    """A server that closed (its process killed) answers the client's next data with RST."""
    for r in rows:
        if r.shows(Kind.TCP_RST):
            before = [p for p in rows if p.flow == r.flow and p.number < r.number]
            fin = [p.number for p in before if _flags(p) & FIN and p.src == r.src]
            data = [p.number for p in before if p.src == r.dst and p.fields.get("tcp_len")]
            if fin and data and data[-1] > fin[0]:
                return [fin[0], data[-1], r.number]
    return []


def tcp_forged_segment(rows: Sequence[Row]) -> list[int]:
    forged = next((r for r in rows if r.shows(Kind.TCP_OUT_OF_WINDOW)), None)
    reply = next((r for r in rows if forged and r.number > forged.number and r.src == forged.dst
                  and r.dst == forged.src), None)
    ok = forged is not None and reply is not None and \
        _flags(reply) & (SYN | ACK | FIN | RST) == ACK
    return [forged.number, reply.number] if ok else []


def tcp_no_socket_rst(rows: Sequence[Row]) -> list[int]:
    """A bare ACK to a port that never answered a SYN, and the RST that says no connection
    existed (RFC 9293 section 3.10.7.1)."""
    by_number = {r.number: r for r in rows}
    listening = {r.src for r in rows if _flags(r) & (SYN | ACK) == SYN | ACK}
    for rst in rows:
        seg = by_number.get(rst.fact.refs[0]) if rst.shows(Kind.TCP_RST_NO_CONNECTION) \
            and rst.fact.refs else None
        if seg is not None and _flags(seg) & (SYN | ACK | FIN | RST) == ACK \
                and not seg.fields.get("tcp_len") and seg.dst not in listening:
            return [seg.number, rst.number]
    return []


def tcp_new_four_tuple(rows: Sequence[Row]) -> list[int]:
    """A reconnect: two handshakes from different source ports to the same server port."""
    syns = [r for r in rows if _flags(r) & (SYN | ACK) == SYN]
    http_flows = {r.flow for r in rows if r.fields.get("http")}  # those are step "http"
    for a in syns:
        for b in syns:
            if b.number > a.number and a.dst == b.dst and a.src != b.src \
                    and b.flow not in http_flows:
                return [a.number, b.number]
    return []


def tcp_http_connections(rows: Sequence[Row]) -> list[int]:
    """Two HTTP requests, each on its own TCP connection."""
    reqs = [r for r in rows if r.fields.get("http", "").startswith(("GET ", "POST "))]
    return [r.number for r in reqs] if len(reqs) >= 2 and len({r.flow for r in reqs}) == len(
        reqs) else []


# -- UDP ------------------------------------------------------------------------------------------



def counter_replies(rows: Sequence[Row]) -> list[tuple[Row, Reply]]:
    """The UDP lab server's replies (`seq= total= seen= pid=`), read from each row's payload."""
    out = []
    for r in rows:
        text = r.fields.get("udp_text") if r.proto == "UDP" else None
        reply = parse_reply(text.encode()) if text else None
        if reply is not None:
            out.append((r, reply))
    return out


def _udp_server(rows: Sequence[Row]) -> str | None:
    udp = [r for r in rows if r.proto == "UDP"]
    return udp[0].dst if udp else None


def udp_many_clients(rows: Sequence[Row]) -> list[int]:
    server = _udp_server(rows)
    firsts: dict[str, int] = {}
    for r in rows:
        if r.proto == "UDP" and r.dst == server:
            firsts.setdefault(r.src, r.number)
    return sorted(firsts.values()) if len(firsts) >= 3 else []


def udp_total_survives_restart(rows: Sequence[Row]) -> list[int]:
    """Replies to one client whose totals go on while the server's own count (seen=) restarts."""
    by_client: dict[str, list[tuple[Row, Reply]]] = {}
    for r, reply in counter_replies(rows):
        by_client.setdefault(r.dst, []).append((r, reply))
    for seq in by_client.values():
        for (_, a), (_, b) in zip(seq, seq[1:], strict=False):
            if b.total > a.total and b.seen <= a.seen:
                return [r.number for r, _ in seq]
    return []


def udp_icmp(rows: Sequence[Row]) -> list[int]:
    server = _udp_server(rows)
    icmp = [r.number for r in rows if r.shows(Kind.ICMP_PORT_UNREACHABLE) and r.fact.key == server]
    return icmp if len(icmp) >= 2 else []


# -- QUIC -----------------------------------------------------------------------------------------


def quic_headers(rows: Sequence[Row]) -> list[int]:
    """Long headers (Initial, Handshake) and short 1-RTT headers: a DCID in each."""
    firsts: dict[str, int] = {}
    for r in rows:
        kind = r.fields.get("quic_type")
        if kind and r.fields.get("quic_dcid"):
            firsts.setdefault(kind, r.number)
    ok = {"Initial", "Handshake", "1-RTT"} <= firsts.keys()
    return sorted(firsts[k] for k in ("Initial", "Handshake", "1-RTT")) if ok else []


def quic_migration(rows: Sequence[Row]) -> list[int]:
    moved = next((r for r in rows if r.shows(Kind.QUIC_MIGRATION)), None)
    return [moved.number] if moved and moved.src.split(":")[0] != "127.0.0.1" else []


def quic_tcp_moved_gets_rst(rows: Sequence[Row]) -> list[int]:
    """A segment of an established connection sent from a new address, and the RST saying no
    connection exists for that 4-tuple: (the segment, the RST)."""
    by_number = {r.number: r for r in rows}
    accepted = {r.src for r in rows if _flags(r) & (SYN | ACK) == SYN | ACK}
    for rst in rows:
        seg = by_number.get(rst.fact.refs[0]) if rst.shows(Kind.TCP_RST_NO_CONNECTION) \
            and rst.fact.refs else None
        if seg is None or seg.dst not in accepted or not seg.fields.get("tcp_len"):
            continue
        host = seg.src.rsplit(":", 1)[0]
        if not any(r.proto == "TCP" and r.number < seg.number
                   and r.src.rsplit(":", 1)[0] == host for r in rows):
            return [seg.number, rst.number]
    return []


def quic_retry_token(rows: Sequence[Row]) -> list[int]:
    retry = next((r for r in rows if r.shows(Kind.QUIC_RETRY)), None)
    echo = next((r for r in rows if retry and r.number > retry.number
                 and r.shows(Kind.QUIC_TOKEN_ECHO)), None)
    return [retry.number, echo.number] if retry and echo else []


def quic_new_connection(rows: Sequence[Row]) -> list[int]:
    """After the restart a second connection starts: a new Initial from the client, new CIDs."""
    starts = [r.number for r in rows if r.shows(Kind.QUIC_CLIENT_KEY)]
    return starts[:2] if len(starts) >= 2 else []


# -- NAT (hosts with their own kernels; a capture at four points) --------------------------------


def point(r: Row) -> str:
    """Where a row's packet was seen (its pcapng interface, `router:wan`); "" when not named."""
    return str(r.fields.get("interface", ""))


def sightings(rows: Sequence[Row]) -> dict[int, list[Row]]:
    """Each packet's sightings along its way: its first row, then its copies at other points."""
    out: dict[int, list[Row]] = {}
    for r in rows:
        out.setdefault(r.fields.get("copy_of", r.number), []).append(r)
    return out


def nat_translated(rows: Sequence[Row]) -> list[int]:
    """A datagram seen before (router:lan) and after (router:wan) the router rewrote its
    source."""
    for seen in sightings(rows).values():
        by = {point(r): r for r in seen}
        lan, wan = by.get("router:lan"), by.get("router:wan")
        if seen[0].proto == "UDP" and lan and wan and lan.src != wan.src and \
                lan.number < wan.number:
            return [lan.number, wan.number]
    return []


def nat_kept(rows: Sequence[Row]) -> list[int]:
    """The server's datagram to the flow kept open by keepalives, delivered to the client."""
    for seen in sightings(rows).values():
        by = {point(r): r for r in seen}
        if str(seen[0].fields.get("udp_text", "")).startswith("push") and \
                {"router:wan", "client:eth0"} <= by.keys():
            return [by["router:wan"].number, by["client:eth0"].number]
    return []


def nat_dropped(rows: Sequence[Row]) -> list[int]:
    """A datagram from the outside seen at the router's outside and never inside: the router
    had no mapping for it (its conntrack entry had expired)."""
    for seen in sightings(rows).values():
        points = {point(r): r for r in seen}
        if seen[0].proto == "UDP" and seen[0].src.split(":")[0] != seen[0].dst.split(":")[0] \
                and "router:wan" in points and not {"router:lan", "client:eth0"} & \
                points.keys() and point(seen[0]) == "server:eth0":
            return [r.number for r in seen]
    return []


def nat_tcp(rows: Sequence[Row]) -> list[int]:
    """A TCP connection's SYN seen at the client and, translated, at the server."""
    for seen in sightings(rows).values():
        by = {point(r): r for r in seen}
        client, server = by.get("client:eth0"), by.get("server:eth0")
        if client and server and client.proto == "TCP" and _flags(client) & (SYN | ACK) == SYN \
                and client.src != server.src:
            return [client.number, server.number]
    return []


# -- TCP under attack (lab 07) -------------------------------------------------------------------


def _by_flow(rows: Sequence[Row]) -> dict[str, list[Row]]:
    flows: dict[str, list[Row]] = {}
    for r in rows:
        if r.proto == "TCP":
            flows.setdefault(r.flow, []).append(r)
    return flows


def attack_syn_queue(rows: Sequence[Row]) -> list[int]:
    """SYN-ACKs a server sent again on its own: half-open entries with a timer (the SYN queue)."""
    return [r.number for r in rows if r.shows(Kind.TCP_SYN_QUEUED)]


def attack_legit_refused(rows: Sequence[Row]) -> list[int]:
    """A SYN sent again (same 4-tuple and seq) that no SYN-ACK ever answered: its connection
    could not be made while the queue was full."""
    for flow in _by_flow(rows).values():
        syns = [r for r in flow if _flags(r) & (SYN | ACK) == SYN]
        answered = any(_flags(r) & (SYN | ACK) == SYN | ACK for r in flow)
        if len(syns) >= 2 and not answered and syns[0].fields.get("tcp_seq") == \
                syns[1].fields.get("tcp_seq"):
            return [r.number for r in syns]
    return []


def attack_cookie_handshake(rows: Sequence[Row]) -> list[int]:
    """SYN, a SYN-ACK whose TSval encodes the SYN (a SYN cookie), and the ACK that completes
    the handshake from the cookie alone."""
    for flow in _by_flow(rows).values():
        cookie = next((r for r in flow if r.shows(Kind.TCP_SYN_COOKIE)), None)
        if cookie is None:
            continue
        syn = next((r for r in flow if _flags(r) & (SYN | ACK) == SYN), None)
        ack = next((r for r in flow if r.src == cookie.dst and _flags(r) & (SYN | ACK) == ACK
                    and r.fields.get("tcp_ack") == (cookie.fields["tcp_seq"] + 1) % 2**32),
                   None)
        if syn and ack:
            return [syn.number, cookie.number, ack.number]
    return []


def attack_forged_ack(rows: Sequence[Row]) -> list[int]:
    """An ACK no handshake led to (a forged cookie), answered by RST from the listener."""
    by_number = {r.number: r for r in rows}
    for rst in rows:
        seg = by_number.get(rst.fact.refs[0]) if rst.shows(Kind.TCP_RST_NO_CONNECTION) \
            and rst.fact.refs else None
        if seg is not None and _flags(seg) & (SYN | ACK | FIN | RST) == ACK \
                and not seg.fields.get("tcp_len"):
            return [seg.number, rst.number]
    return []


def attack_no_timestamps(rows: Sequence[Row]) -> list[int]:
    """A SYN without timestamps that asked for window scaling, answered by a SYN-ACK without
    it: the state a cookie cannot carry is lost."""
    for flow in _by_flow(rows).values():
        syn = next((r for r in flow if _flags(r) & (SYN | ACK) == SYN), None)
        synack = next((r for r in flow if _flags(r) & (SYN | ACK) == SYN | ACK), None)
        if syn and synack and "tcp_tsval" not in syn.fields and "tcp_wscale" in syn.fields \
                and "tcp_wscale" not in synack.fields:
            return [syn.number, synack.number]
    return []


def attack_rst_challenge(rows: Sequence[Row]) -> list[int]:
    for ack in rows:
        if ack.shows(Kind.TCP_CHALLENGE_ACK):
            return [ack.fact.refs[0], ack.number]
    return []


def _rst_fit(rows: Sequence[Row], fit: str) -> list[int]:
    return [r.number for r in rows if r.fields.get("tcp_rst_fit") == fit][:1]


def attack_rst_exact(rows: Sequence[Row]) -> list[int]:
    """An RST at exactly RCV.NXT on a connection that was sent an in-window RST before."""
    challenged = {r.flow for r in rows if r.shows(Kind.TCP_RST_CHALLENGED)}
    return [r.number for r in rows if r.fields.get("tcp_rst_fit") == "exact"
            and r.flow in challenged][:1]


def attack_keepalive(rows: Sequence[Row]) -> list[int]:
    """Keepalive probes to a silent peer, then the RST the prober's kernel ends with."""
    for flow in _by_flow(rows).values():
        probes = [r for r in flow if r.shows(Kind.TCP_KEEPALIVE)]
        rst = next((r for r in flow if probes and r.number > probes[-1].number
                    and r.src == probes[0].src and _flags(r) & RST), None)
        if probes and rst:
            return [*(r.number for r in probes), rst.number]
    return []


# -- the catalogue --------------------------------------------------------------------------------

STORIES: dict[str, tuple[Step, ...]] = {
    "dns-demo": (
        Step("batch", "several queries leave one client socket before any answer", dns_batch),
        Step("matched", "every answer is matched to its query by ID, in another order than "
                        "asked", dns_out_of_order),
        Step("forged-id", "a forged answer from the server's own address, with an ID no query "
                          "has, is dropped", dns_forged_id),
        Step("wrong-source", "an answer with the right ID from another port is dropped",
             dns_wrong_source),
        Step("real-answer", "the real answer still matches after both forgeries",
             dns_real_answer_after_forgeries),
        Step("closed-socket", "an answer to a closed socket: nobody holds the query; the "
                              "client's kernel answers ICMP port unreachable", dns_closed_socket),
    ),
    "tcp-demo": (
        Step("handshake", "a connection starts with SYN, SYN/ACK, ACK", tcp_handshake),
        Step("close", "the first FIN puts the server's socket in CLOSE_WAIT; the side that closed "
                      "first sends the last ACK (its TIME_WAIT is in no packet: live run only)",
             tcp_close),
        Step("killed", "a killed server's kernel sends FIN, then RST to the client's next data",
             tcp_killed_server),
        Step("forged", "a segment far outside the window gets an ACK and is not delivered",
             tcp_forged_segment),
        Step("no-socket", "an ACK to a port with no socket gets RST", tcp_no_socket_rst),
        Step("reconnect", "a reconnect is a new 4-tuple with its own handshake",
             tcp_new_four_tuple),
        Step("http", "each HTTP request travels on its own TCP connection", tcp_http_connections),
    ),
    "udp-demo": (
        Step("clients", "datagrams from three or more client sockets reach one server port, no "
                        "handshake", udp_many_clients),
        Step("restart", "the client-carried total goes on across a server restart while the "
                        "server's own count starts again", udp_total_survives_restart),
        Step("icmp", "datagrams to the stopped server get ICMP port unreachable", udp_icmp),
    ),
    "quic-demo": (
        Step("headers", "Initial and Handshake long headers and 1-RTT short headers, each with "
                        "a DCID", quic_headers),
        Step("rotation", "the client switches to a new DCID (rotation) and the stream goes on",
             lambda rows: _with(rows, Kind.QUIC_ROTATION)[:1]),
        Step("migration", "the same connection continues from another address (migration), "
                          "found by its DCID", quic_migration),
        Step("tcp-moved", "a TCP segment moved the same way gets RST", quic_tcp_moved_gets_rst),
        Step("new-connection", "after the server restart, a new connection with new CIDs",
             quic_new_connection),
        Step("retry", "a Retry, and the Initial that echoes its token", quic_retry_token),
    ),
    "tls-demo": (
        Step("full", "a ClientHello with no ticket gets a full handshake", tls_full),
        Step("resumed", "a ClientHello presenting a ticket (ext 41) is answered with ext 41: "
                        "resumed", tls_resumed),
        Step("refused", "a ticket the server's key cannot open: ServerHello without ext 41, a "
                        "full handshake", tls_refused),
        Step("relayed", "a relay forwards the client's ClientHello to a backend (same random)",
             lambda rows: _with(rows, Kind.TLS_RELAYED)[:1]),
        Step("shared-key", "one ticket resumed at two backend ports (one ticket key)",
             tls_shared_key),
        Step("sticky", "one ticket refused at one backend port, resumed at another (own keys)",
             tls_sticky),
    ),
    "nat-demo": (
        Step("translated", "the same datagram before and after the router rewrote its source "
                           "(router:lan, router:wan)", nat_translated),
        Step("restart", "the client-carried total goes on across a server restart, through the "
                        "NAT", udp_total_survives_restart),
        Step("kept", "keepalives held the mapping: the server's datagram reached the client",
             nat_kept),
        Step("dropped", "after the timeout the server's datagram is seen at router:wan and never "
                        "inside: dropped at the router", nat_dropped),
        Step("tcp", "a TCP connection's SYN at the client and, translated, at the server",
             nat_tcp),
    ),
    "tcp-attack-demo": (
        Step("syn-queue", "the server resends SYN-ACKs to spoofed sources: half-open entries "
                          "in its SYN queue, each with a timer", attack_syn_queue),
        Step("refused", "a legitimate client's SYN, sent again, never answered while the queue "
                        "is full", attack_legit_refused),
        Step("cookie", "a SYN cookie (TSval encodes the SYN) and the ACK that completes the "
                       "handshake from it alone", attack_cookie_handshake),
        Step("forged-ack", "an ACK with a forged cookie is answered with RST",
             attack_forged_ack),
        Step("no-timestamps", "without timestamps, the cookie SYN-ACK drops window scaling",
             attack_no_timestamps),
        Step("challenge", "an RST in the window but not exact gets a challenge ACK (RFC 5961)",
             attack_rst_challenge),
        Step("outside", "an RST outside the window is ignored",
             lambda rows: _rst_fit(rows, "outside")),
        Step("exact", "an RST at exactly RCV.NXT resets the connection", attack_rst_exact),
        Step("keepalive", "keepalive probes to a vanished peer, then the server's RST",
             attack_keepalive),
    ),
    "hijack-demo": (
        Step("exposed", "a login in cleartext and the Set-Cookie that gives the victim its "
                        "session", hijack_exposed),
        Step("cookie-replayed", "the victim's cookie, sent from another address, is answered "
                                "200", hijack_cookie_replayed),
        Step("cookie-revoked", "after the victim's POST /logout the same cookie gets 401",
             hijack_cookie_revoked),
        Step("token-replayed", "the victim's bearer token, sent from another address, is "
                               "answered 200", hijack_token_replayed),
        Step("token-survives", "after the victim's POST /logout a JWT replayed still gets 200",
             hijack_token_survives),
        Step("token-denied", "with a deny-list, a JWT replayed after logout gets 401",
             hijack_token_denied),
        Step("fixation", "a login that arrives with a session cookie is answered with a "
                         "Set-Cookie of the server's own", hijack_fixation),
        Step("tls", "behind TLS: a ClientHello and encrypted records, no HTTP to read",
             hijack_tls_encrypted),
    ),
    "ws-demo": (
        Step("upgrade", "an upgrade request and the 101 whose Sec-WebSocket-Accept answers its "
                        "key", ws_upgrade),
        Step("masked", "a client frame, masked (the annotation unmasks it), and a server frame, "
                       "not masked", ws_masked),
        Step("ping", "a ping answered by a pong on the same connection", ws_ping),
        Step("dropped", "a WebSocket that ends with no close frame (a killed backend: the "
                        "client's 1006)", ws_dropped),
        Step("place-gone", "a reconnect with since=N whose welcome does not know the place "
                           "(memory design)", ws_place_gone),
        Step("going-away", "a close frame 1001 from a backend stopping gracefully, and the "
                           "client's reply", ws_graceful),
        Step("resumed", "a reconnect with since=N, a welcome with a replay, and the replayed "
                        "ids after N", ws_resumed),
    ),
    "cache-demo": (
        Step("miss", "a miss: the resolver asks upstream for a client's question, then answers",
             cache_miss),
        Step("hit", "hits: answers with no upstream query since the question", cache_hit),
        Step("ttl", "the same answer from the same resolver, its TTL lower on a later hit",
             cache_ttl_down),
        Step("negative", "NXDOMAIN answered from the cache (RFC 2308)", cache_negative),
        Step("expiry", "the resolver asks upstream again for the same question, a new ID",
             cache_expiry),
        Step("flood", "forged answers to a resolver's upstream socket dropped: no pending ID",
             cache_flood_dropped),
        Step("forged", "a forged answer taken into a cache, then clients told it from the cache",
             cache_forged),
    ),
}


def check(demo: str, rows: Sequence[Row]) -> list[Finding]:
    """Each step of `demo`'s story, with the packets that show it (none: not shown)."""
    findings = []
    for step in STORIES[demo]:
        try:
            packets = tuple(step.find(rows))
        except (KeyError, IndexError, ValueError, StopIteration):
            packets = ()
        findings.append(Finding(step, packets))
    return findings


def missing(demo: str, rows: Sequence[Row]) -> list[str]:
    """The steps the capture does not show, as `key: text`; empty when the story is whole."""
    return [f"{f.step.key}: {f.step.text}" for f in check(demo, rows) if not f.shown]


def packets_text(numbers: Sequence[int]) -> str:
    return ", ".join(f"#{n}" for n in numbers) if numbers else "NOT SHOWN"
