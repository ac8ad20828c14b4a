"""`protolab <demo> --replay`: a demo's story and tables read back from a capture, nothing running.

Where state lives: in the capture file only. A replay starts no server, opens no socket and needs
no root: it annotates the committed reference capture (or any capture of that demo), finds each
step of the demo's story in the packets (`protolab.analysis.story_checks`), prints the demo's
tables that can be rebuilt from packets, and names the ones that only a live run can show (a
process's memory, a kernel's own record).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from protolab.analysis.annotate import Action, Kind, Row, annotate_file
from protolab.analysis.observe import StateRow
from protolab.analysis.story_checks import (
    Finding,
    check,
    counter_replies,
    dns_answers,
    dns_queries,
    packets_text,
    sightings,
)
from protolab.analysis.table import format_rows
from protolab.labs import DEMOS as REGISTRY
from protolab.labs.output import indent, print_state_table, print_tally, table
from protolab.protocols.tcp import RST
from protolab.wire.paths import reference_capture, reference_file

Out = Callable[[str], None]
DEMOS = tuple(REGISTRY)  #: the captured demos, from the one registry

#: What a capture cannot hold: the state only a live run can print.
LIVE_ONLY: dict[str, tuple[str, ...]] = {
    "dns-demo": (
        "the client's pending-query table as its memory holds it right after sending (the "
        "annotation rebuilds it from the queries)",
        "the reasons the client itself gave for dropping each forged answer",
    ),
    "tcp-demo": (
        "the kernel's own record of every transition (tracepoint sock:inet_sock_set_state, root)",
        "TCP_INFO and /proc/net/tcp after each step, TIME_WAIT in the client's table",
        "what the server application received (the forged bytes never reach it)",
    ),
    "udp-demo": (
        "the server's kernel table (/proc/net/udp): one entry, whoever sends",
        "which client socket was told ConnectionRefusedError (only the connected one)",
    ),
    "nat-demo": (
        "the router's conntrack entries, their timeouts counting down and their DESTROY events",
        "ss -tn in the client and the server: each kernel's own copy of the TCP connection",
        "what the router's table held after the flush (the connection picked up again)",
    ),
    "quic-demo": (
        "the server's full connection table (the spare CIDs it issued travel encrypted in "
        "NEW_CONNECTION_ID frames; decrypt with the key log to see them)",
        "the path validation result and the stream data as the applications received them",
        "the idle timeout that ends the client's connection to the restarted server",
    ),
    "tls-demo": (
        "the client's session_reused and its SSLSession (the ticket, its lifetime hint)",
        "which backend answered and its session cache (in the encrypted answers: decrypt with "
        "the key log, or the pcapng alone)",
        "the server restart's PIDs (a new process, a new ticket key)",
    ),
    "ws-demo": (
        "the clients' own counts: messages sent and received per client, the gap or its absence",
        "the backends' PIDs before and after each restart, and the reconnect times",
        "what the balancer and the Redis held (a tunnel's pair of sockets, the history)",
    ),
    "tcp-attack-demo": (
        "the server's SYN queue as `ss -n state syn-recv` lists it, for each tcp_syncookies "
        "setting",
        "the server namespace's counters (ListenDrops, TCPReqQFullDrop, SyncookiesSent/Recv/"
        "Failed, TCPChallengeACK) before → after",
        "what each socket said: the client's SYN_SENT, ECONNRESET after the exact RST, "
        "ETIMEDOUT when keepalive gives up; the options TCP_INFO shows negotiated",
    ),
    "hijack-demo": (
        "the deny-list's cost (measured straight to the backends, not captured)",
        "the HTTP inside TLS and the attacker's replay over TLS (decrypt with the key log: "
        "the pcapng alone, or PCAP.keys)",
        "which backend process held each session (the X-Backend-Pid headers are in the "
        "capture; its memory is not)",
    ),
    "cache-demo": (
        "each resolver's cache as it holds it (protolab's log, dnsmasq's SIGUSR1 dump)",
        "the restart's PIDs: a new process, an empty cache",
        "the ID and port the attacker learned from its own name server's record",
    ),
}


@dataclass
class ReplayResult:
    demo: str
    path: Path
    rows: list[Row]
    findings: list[Finding]
    where: list[StateRow]

    @property
    def complete(self) -> bool:
        return all(f.shown for f in self.findings) and not any(r.outcome.failed
                                                               for r in self.where)


def replay(demo: str, path: str | Path | None = None, out: Out = print,
           why: str = "") -> ReplayResult:
    """Print `demo`'s story, tables and annotation from `path` (default: the reference)."""
    path = Path(path) if path else reference_file(demo)
    shown = shown_capture(demo, path)
    rows = list(annotate_file(path))
    findings = check(demo, rows)
    reason = f" ({why})" if why else ""
    out(f"REPLAY{reason}: nothing runs — no server, no client, no capture. Everything below is "
        f"read from the packets of {shown}.")
    out(f"\nThe story of `protolab {demo}`, found in the packets:")
    out(indent(table([(f.step.text, packets_text(f.packets)) for f in findings],
                     ("step", "packets"))))
    missing = [f.step.key for f in findings if not f.shown]
    if missing:
        out(f"   NOT in this capture: {', '.join(missing)} — is it a capture of "
            f"`protolab {demo}`?")
    TABLES[demo](rows, out)
    out(f"\nThe capture, annotated from the packets alone ({len(rows)} packets → {shown}):")
    out(format_rows(rows))
    out("\nOnly a live run shows (run the demo itself, as root for the capture):")
    for item in LIVE_ONLY[demo]:
        out(f"   - {item}")
    title, where = where_from_capture(demo, rows)
    print_state_table(f"{title.rstrip(':')} — from the packets of this capture:", where, out,
                      did="done (in packets)")
    print_tally(where, out)
    return ReplayResult(demo, path, rows, findings, where)


def shown_capture(demo: str, path: Path) -> Path:
    """`path` as the user can type it: the reference relative to here, any other as given."""
    return reference_capture(demo) if path == reference_file(demo) else path


def where_from_capture(demo: str, rows: Sequence[Row]) -> tuple[str, list[StateRow]]:
    """The demo's "where state lives" rows filled from the packets (live-run-only rows marked)."""
    from protolab.labs import demo_module

    module = demo_module(demo)
    return module.WHERE_TITLE, module.where_from_capture(rows)


# -- the demo's own tables, rebuilt from packets -----------------------------------------------


def dns_tables(rows: Sequence[Row], out: Out) -> None:
    queries = dns_queries(rows)
    if not queries:
        return
    sock = queries[0].src
    batch = [r for r in queries if r.src == sock]
    answers = [r for r in dns_answers(rows) if r.dst == sock and r.action is Action.ENDS]
    order = {r.fields["dns_id"]: n for n, r in enumerate(answers, 1)}
    by_id = {r.fields["dns_id"]: r for r in answers}
    table_rows = []
    for n, q in enumerate(batch, 1):
        a = by_id.get(q.fields["dns_id"])
        question = q.fields.get("dns_question", "")
        table_rows.append((f"{q.fields['dns_id']:#06x}", question, n,
                           order.get(q.fields["dns_id"], "-"),
                           f"{(a.time - q.time) * 1000:.0f} ms" if a else "-",
                           f"#{a.number}" if a else "no answer"))
    out(f"\n1. Queries sent at once over one socket ({sock}), and the answers matched by ID:")
    out(indent(table(table_rows, ("qid", "question", "order sent", "order answered", "rtt",
                                  "answer"))))
    dropped = [r for r in dns_answers(rows) if r.action is Action.MISSING]
    if dropped:
        out("\n2./3. Answers nobody's state matched (the client drops them, or nobody is there):")
        for r in dropped:
            out(f"   #{r.number} id {r.fields['dns_id']:#06x} from {r.src}: {r.state}")


def tcp_tables(rows: Sequence[Row], out: Out) -> None:
    tcp = [r for r in rows if r.proto == "TCP"]
    if not tcp:
        return
    first = [r for r in tcp if r.flow == tcp[0].flow]
    client = first[0].src
    timeline = []
    for r in first:
        who = "client→server" if r.src == client else "server→client"
        moves = "; ".join(f"{t.role.value} {t.old.value}→{t.new.value}" for t in r.fact.moves)
        timeline.append((f"{r.time * 1000:.3f}", f"#{r.number} {who} {r.summary}", moves))
    out("\n2. Timeline of connection 1: each packet and the transitions protolab's model "
        "derives from it (the kernel's own column needs a live run):")
    out(indent(table(timeline, ("ms", "packet", "model (from the packet)"))))
    syns = [r for r in tcp if r.fields.get("tcp_flags", 0) & 0x12 == 0x02]  # SYN without ACK
    by_server: dict[str, list[Row]] = {}
    for r in syns:
        by_server.setdefault(r.dst, []).append(r)
    again = next((v for v in by_server.values() if len({r.src for r in v}) >= 2), None)
    if again:
        out("\n3(d). Connecting again: a new source port, a new 4-tuple, a new initial "
            "sequence number:")
        out(indent(table([(f"{r.src} → {r.dst}", r.fields.get("tcp_seq", "?")) for r in again],
                         ("4-tuple (the key of the state)", "client ISN"))))
    http = [r for r in rows if r.fields.get("http")]
    if http:
        out("\n4. HTTP on top of TCP: each request, its connection:")
        out(indent(table([(f"#{r.number}", r.fields["http"], r.src, r.flow) for r in http],
                         ("packet", "HTTP", "from", "TCP connection"))))


def udp_tables(rows: Sequence[Row], out: Out) -> None:
    lines = [(reply.seq, f"#{r.number} → {r.dst}", reply.total, reply.seen, reply.pid)
             for r, reply in counter_replies(rows)]
    if lines:
        out("\n2./3. Every answer: the client-carried total, and the server's own count and "
            "pid (a new pid is a restarted server):")
        out(indent(table(lines, ("seq", "answer", "total (client-carried)",
                                 "server's own count", "server pid"))))
    icmp = [r for r in rows if r.proto == "ICMP"]
    if icmp:
        out(f"\n4. The server is down: {len(icmp)} ICMP port unreachable "
            f"({', '.join(f'#{r.number}' for r in icmp)}); which socket hears of it is kernel "
            f"state, not in the packets")


def quic_tables(rows: Sequence[Row], out: Out) -> None:
    quic = [r for r in rows if r.fields.get("quic_dcid")]
    firsts = [r for r in quic if r.shows(Kind.QUIC_CLIENT_KEY)]
    servers = {r.fields["dport"] for r in firsts}
    keys: dict[tuple[str, str], list[int]] = {}
    for r in quic:
        if r in firsts:
            held = "nobody yet (the client's random first DCID)"
        elif r.shows(Kind.QUIC_TOKEN_ECHO):
            held = "nobody yet (the server kept nothing; the token carries it)"
        else:
            held = ("server" if r.fields.get("dport") in servers else "client") + " app memory"
        keys.setdefault((r.fields["quic_dcid"], held), []).append(r.number)
    if keys:
        out("\n1. Every DCID seen, and whose connection table it is the key of (the table of "
            "the side the packet goes to):")
        out(indent(table([(d, held, len(v), f"#{v[0]}") for (d, held), v in keys.items()],
                         ("DCID (the key)", "table", "packets", "first"))))
    moved = next((r for r in rows if r.shows(Kind.QUIC_MIGRATION)), None)
    rst = next((r for r in rows if r.proto == "TCP" and r.fields.get("tcp_flags", 0) & RST),
               None)
    if moved or rst:
        out("\n3. The same move for QUIC and for TCP:")
        out(indent(table([
            ("QUIC", "connection ID in every packet",
             f"continued (#{moved.number} from {moved.src})" if moved else "not shown"),
            ("TCP", "4-tuple", f"reset (#{rst.number})" if rst else "not shown"),
        ], ("protocol", "state keyed by", "after the move"))))


def tls_tables(rows: Sequence[Row], out: Out) -> None:
    from protolab.analysis.story_tls import handshakes

    lines = [(f"#{h.hello.number}", h.hello.src, f"{'relay → ' if h.relayed else ''}"
              f":{h.port}", f"{h.ticket[:8]}…" if h.ticket else "none",
              "-" if h.resumed is None else "resumed (ext 41)" if h.resumed else "full")
             for h in handshakes(rows)]
    if lines:
        out("\nEach TLS connection: the ticket its ClientHello presented (ext 41) and what the "
            "ServerHello answered:")
        out(indent(table(lines, ("ClientHello", "from", "to", "ticket", "handshake"))))


def nat_tables(rows: Sequence[Row], out: Out) -> None:
    """Each packet's sightings: where it was seen and with which source and destination."""
    lines = []
    for r, *copies in sightings(rows).values():
        if r.proto == "UDP" and "copy_of" not in r.fields:
            points = " → ".join(f"{x.fields.get('interface', '?')} #{x.number}"
                                for x in (r, *copies))
            lines.append((str(r.fields.get("udp_text", ""))[:28], points,
                          f"{copies[-1].src} → {copies[-1].dst}" if copies else "-"))
    if lines:
        out("\nEach datagram, the points it was seen at, and its addresses at the last point "
            "(a point missing: it went no further):")
        out(indent(table(lines, ("datagram", "seen at", "last seen as"))))


def attack_tables(rows: Sequence[Row], out: Out) -> None:
    """Per capture point and listener port: SYNs in, SYN-ACKs out (first and resent), RSTs."""
    counts: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        if r.proto != "TCP":
            continue
        flags = r.fields.get("tcp_flags", 0)
        server = r.dst if flags & 0x12 == 0x02 else r.src if flags & 0x12 == 0x12 else ""
        if not server:
            continue
        c = counts.setdefault((server, r.fields.get("interface", "")), [0, 0, 0, 0])
        c[0 if flags & 0x12 == 0x02 else 1] += 1
        c[2] += r.shows(Kind.TCP_SYN_QUEUED)
        c[3] += r.shows(Kind.TCP_SYN_COOKIE)
    if counts:
        out("\n1./2. Handshakes per listener, as the packets show them (resent SYN-ACKs: a "
            "half-open entry's timer; cookie SYN-ACKs: no entry):")
        out(indent(table([(k[0], k[1], *v) for k, v in counts.items()],
                         ("listener", "seen at", "SYNs", "SYN-ACKs", "resent", "cookies"))))


def hijack_tables(rows: Sequence[Row], out: Out) -> None:
    from protolab.analysis.facts import Kind
    from protolab.analysis.story_hijack import response_to, status, victim

    carried = {Kind.HTTP_SESSION_LOOKUP: "session cookie", Kind.HTTP_TOKEN: "bearer token"}
    who = victim(rows)
    lines = []
    for r in rows:
        line = r.fields.get("http", "")
        if line and not line.startswith("HTTP/"):
            resp = response_to(rows, r)
            lines.append((f"#{r.number}", "victim" if r.src.startswith(who + ":") else
                          "attacker", r.src, r.dst, line.rsplit(" ", 1)[0],
                          carried.get(r.fact.kind, "-"),
                          f"#{resp.number} {status(resp)}" if resp else "-"))
    if lines:
        out("\nEvery request in the clear: who sent it (the victim's address, or another), what "
            "it carried, and its answer:")
        out(indent(table(lines, ("packet", "who", "from", "to", "request", "carries",
                                 "answer"))))


def ws_tables(rows: Sequence[Row], out: Out) -> None:
    """Each upgrade request seen on the wire: first connection or resume point, and its welcome."""
    lines = []
    for r in rows:
        if r.fields.get("ws_upgrade") != "request":
            continue
        welcome = next((w for w in rows if w.number > r.number and w.flow == r.flow
                        and "ws_welcome" in w.fields), None)
        said = welcome.fields["ws_welcome"] if welcome else {}
        lines.append((f"#{r.number}", r.src, r.dst, r.fields.get("ws_since", "-"),
                      f"#{welcome.number} {said.get('backend')} pid {said.get('pid')}, place "
                      f"{'known' if said.get('known') else 'not known'}, {said.get('replay')} "
                      f"replayed" if welcome else "-"))
    if lines:
        out("\nEach WebSocket upgrade (both legs of the balancer): the resume point it carried "
            "and the welcome that answered:")
        out(indent(table(lines, ("upgrade", "from", "to", "since", "welcome"))))


def cache_tables(rows: Sequence[Row], out: Out) -> None:
    """Per resolver: its clients' answers as hits and misses, its upstream queries, forgeries."""
    counts: dict[str, list[int]] = {}
    for r in rows:
        if r.shows(Kind.DNS_UPSTREAM):
            counts.setdefault(r.fact.values.get("resolver", "?"), [0, 0, 0, 0])[2] += 1
        for i, kind in enumerate((Kind.DNS_CACHE_HIT, Kind.DNS_CACHE_MISS)):
            if r.shows(kind):
                counts.setdefault(r.src, [0, 0, 0, 0])[i] += 1
        if r.shows(Kind.DNS_FORGED_ACCEPTED):
            up = next((u for u in rows if u.shows(Kind.DNS_UPSTREAM) and u.src == r.dst), None)
            if up is not None:
                counts.setdefault(up.fact.values.get("resolver", "?"), [0, 0, 0, 0])[3] += 1
    if counts:
        out("\nEach resolver, as the packets show it: answers from its cache, answers after an "
            "upstream query, its upstream queries, forged answers it took:")
        out(indent(table([(k, *v) for k, v in counts.items()],
                         ("resolver", "hits", "misses", "upstream queries", "forged taken"))))


TABLES: dict[str, Callable[[Sequence[Row], Out], None]] = {
    "dns-demo": dns_tables, "tcp-demo": tcp_tables, "udp-demo": udp_tables,
    "quic-demo": quic_tables, "tls-demo": tls_tables, "nat-demo": nat_tables,
    "tcp-attack-demo": attack_tables, "hijack-demo": hijack_tables, "ws-demo": ws_tables,
    "cache-demo": cache_tables,
}
