"""`protolab dns-demo`: DNS matches answers to queries by ID, and the client holds that state.

Where state lives: the client's pending-query table (app memory) and its socket's port binding
(kernel); the server holds nothing between queries. The demo runs the lab server and a client over
one UDP socket, forges answers, answers a client that has gone, captures all of it and annotates the
capture. It returns a `DnsDemoResult` with every fact it printed, so tests check the same facts.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.rrset

from protolab.annotate import Row
from protolab.capture import Capture, CaptureSummary
from protolab.dns import (
    LAB_ZONE,
    AnswerMatched,
    AnswerRejected,
    DnsClient,
    DnsServer,
    Event,
    QueryAbandoned,
    QueryRetransmitted,
    QuerySent,
    ServerCounters,
)
from protolab.faults import FaultCore, FaultPlan, UdpFaultProxy, fault_line
from protolab.packets import Decoded
from protolab.paths import default_capture_path
from protolab.report import capture_off_line, indent, print_where, show_capture, table
from protolab.udpnet import UdpServerThread

LAB = "dns-demo"
ANSWER_WAIT = 2.0
RETRIES = 2  #: the client re-sends a pending query up to twice ...
RETRY_AFTER = 0.5  #: ... each after this many seconds without an answer (the slowest is 0.16)


@dataclass
class DnsDemoResult:
    server: tuple[str, int]
    client_port: int = 0
    sent: list[QuerySent] = field(default_factory=list)
    matched: list[AnswerMatched] = field(default_factory=list)
    rejected: list[AnswerRejected] = field(default_factory=list)
    abandoned: list[QueryAbandoned] = field(default_factory=list)
    retransmitted: list[QueryRetransmitted] = field(default_factory=list)
    faults: FaultCore | None = None  #: the fault proxy's decisions, when part 1 went through it
    forged_qid: int = 0
    bank_qid: int = 0
    late_qid: int = 0
    late_port: int = 0  #: the client port that was closed before its answer came
    icmp_seen: bool | None = None  #: None when capture was off
    capture: CaptureSummary | None = None
    rows: list[Row] = field(default_factory=list)
    server_counters: ServerCounters | None = None
    complete: bool | None = None  #: capture holds every datagram the server counted
    queries: int = 0  #: asked at once in part 1

    def problem(self) -> str:
        """Why this run does not tell the demo's story, or "" when it does."""
        if len(self.matched) != self.queries + 1:  # part 1's queries and the bank query
            return f"{len(self.matched)} of {self.queries + 1} queries answered"
        if self.complete is False:
            return "capture incomplete against the server's counters"
        return ""



class _ClientIO:
    """The client's socket, driving a `DnsClient` core (feed, then collect events)."""

    def __init__(self, core: DnsClient, result: DnsDemoResult) -> None:
        self.core = core
        self.result = result
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def query(self, name: str, rdtype: str) -> int:
        wire = self.core.send_query(name, rdtype, time.monotonic())
        self.sock.sendto(wire, self.core.server)
        return int.from_bytes(wire[:2], "big")

    def collect(self, until: Callable[[], bool], timeout: float = ANSWER_WAIT) -> list[Event]:
        """Receive and feed datagrams until `until()` holds or `timeout` passes; the core's
        timers fire on the way (retransmissions go out from here)."""
        events: list[Event] = []
        deadline = time.monotonic() + timeout
        while not until():
            now = time.monotonic()
            if now >= deadline:
                break
            timer = self.core.next_timer()
            wake = min(deadline, timer) if timer is not None else deadline
            self.sock.settimeout(max(0.0, wake - now))  # 0.0: a due timer, do not block
            try:
                data, addr = self.sock.recvfrom(65535)
            except (TimeoutError, BlockingIOError):
                self.core.handle_timer(time.monotonic())
                for wire in self.core.datagrams_to_send():
                    self.sock.sendto(wire, self.core.server)
            else:
                self.core.receive(data, addr, time.monotonic())
            events.extend(self._drain())
        return events

    def _drain(self) -> list[Event]:
        events = []
        while (ev := self.core.next_event()) is not None:
            events.append(ev)
            if isinstance(ev, QuerySent):
                self.result.sent.append(ev)
            elif isinstance(ev, AnswerMatched):
                self.result.matched.append(ev)
            elif isinstance(ev, AnswerRejected):
                self.result.rejected.append(ev)
            elif isinstance(ev, QueryAbandoned):
                self.result.abandoned.append(ev)
            elif isinstance(ev, QueryRetransmitted):
                self.result.retransmitted.append(ev)
        return events

    def close(self) -> None:
        self.sock.close()
        self.core.close()
        self._drain()


def forge_answer(qid: int, name: str, rdtype: str, value: str) -> bytes:
    """An answer an attacker would send: right question, the attacker's address."""
    query = dns.message.make_query(name, rdtype, id=qid, use_edns=False)
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text(name, 60, "IN", rdtype, value))
    return response.to_wire()


def run_dns_demo(queries: int = 5, port: int = 0, capture: bool = True,
                 pcap: str | Path | None = None, out: Callable[[str], None] = print,
                 capture_off_reason: str = "--no-capture",
                 faults: FaultPlan | None = None) -> DnsDemoResult:
    """Run the whole demo; print the story through `out`; return the facts. With `faults`,
    part 1 goes through the fault proxy and shows the client's retransmission state."""
    names = [e for e in LAB_ZONE if e.name not in ("bank.lab.", "late.lab.")]
    path = Path(pcap) if pcap else default_capture_path(LAB)
    server = UdpServerThread(DnsServer(), port=port, reuseport=True).start()
    result = DnsDemoResult(server=server.address, queries=queries)
    try:
        with Capture([server.address[1]], path, enabled=capture,
                     off_reason=capture_off_reason) as cap:
            if not cap.active:
                out(capture_off_line(cap.summary, LAB, capture_off_reason))
            _part1(server, result, cap, names, queries, out, faults)
            _part2(server, result, cap, out)
            _part3(server, result, cap, out)
        result.capture = cap.summary
        result.server_counters = server.core.counters
    finally:
        server.stop()
    if cap.active:
        _show_capture(result, cap.summary, server.address[1], out)
    _summary(out)
    return result


def _part1(server: UdpServerThread, result: DnsDemoResult, cap: Capture, names: list,
           queries: int, out: Callable[[str], None], faults: FaultPlan | None = None) -> None:
    proxy = UdpFaultProxy(server.address, faults).start() if faults else None
    try:
        _part1_queries(server, result, cap, names, queries, out, proxy)
    finally:
        if proxy is not None:
            proxy.stop()
    if proxy is not None:
        result.faults = proxy.core
        _show_faults(result, proxy, out)


def _part1_queries(server: UdpServerThread, result: DnsDemoResult, cap: Capture, names: list,
                   queries: int, out: Callable[[str], None],
                   proxy: UdpFaultProxy | None) -> None:
    target = proxy.address if proxy else server.address
    client = _ClientIO(DnsClient(target, retries=RETRIES, retry_after=RETRY_AFTER), result)
    cap.add_port(client.port)
    result.client_port = client.port
    via = (f" through the fault proxy {target[0]}:{target[1]} ({proxy.core.plan.describe()})"
           if proxy else "")
    out(f"\n1. {queries} queries at once over ONE UDP socket (127.0.0.1:{client.port}) "
        f"to the lab server {server.address[0]}:{server.address[1]}{via}")
    for i in range(queries):
        entry = names[i % len(names)]
        client.query(entry.name, entry.rdtype)
    client._drain()
    out("   The client's pending-query table, in its own memory, right after sending:")
    out(indent(table([list(r.values()) for r in client.core.snapshot()],
                       ("id", "question", "server", "state", "order sent", "attempts",
                        "retry timer"))))
    client.collect(lambda: not client.core.pending())
    by_qid = {m.qid: m for m in result.matched}
    rows = []
    for s in result.sent:
        m = by_qid.get(s.qid)
        rows.append((f"{s.qid:#06x}", f"{s.name} {s.rdtype}", s.order,
                     m.order_answered if m else "-", f"{m.rtt * 1000:.0f} ms" if m else "-",
                     m.attempts if m else client.core.entry(s.qid).attempts,
                     "yes: source, id, question" if m else "no answer: timed out"))
    out("   Answers came back in another order; each is matched by its ID:")
    out(indent(table(rows, ("qid", "question", "order sent", "order answered", "rtt",
                              "copies sent", "matched"))))
    client.close()


def _show_faults(result: DnsDemoResult, proxy: UdpFaultProxy,
                 out: Callable[[str], None]) -> None:
    out(f"   The fault proxy's decisions (its own app memory): {fault_line(proxy.core)}")
    for r in result.retransmitted:
        out(f"   client retry timer fired for {r.qid:#06x} ({r.name}) after "
            f"{r.after * 1000:.0f} ms: copy {r.attempt} sent — the count and the timer are "
            f"the client's state; the server answers each copy as a new query")
    if not result.retransmitted:
        out("   no retry was needed: every answer came before the client's retry timer")


def _part2(server: UdpServerThread, result: DnsDemoResult, cap: Capture,
           out: Callable[[str], None]) -> None:
    client = _ClientIO(DnsClient(server.address), result)
    cap.add_port(client.port)
    before = server.received
    qid = client.query("bank.lab.", "A")
    result.bank_qid = qid
    server.wait_until(lambda s: s.received > before)
    forged_qid = (qid + 0x1234) & 0xFFFF
    result.forged_qid = forged_qid
    out(f"\n2. Forged answers to query {qid:#06x} (bank.lab. A), sent before the real one:")
    # A forger on this host binds the server's own address and port (SO_REUSEPORT): on the wire
    # its datagram is indistinguishable from the server's. Only the ID can give it away.
    forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    forger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    forger.bind(server.address)
    forger.sendto(forge_answer(forged_qid, "bank.lab.", "A", "6.6.6.6"), ("127.0.0.1", client.port))
    forger.close()
    # The second forger guessed the ID (here: it was told), but sends from another port.
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    other.sendto(forge_answer(qid, "bank.lab.", "A", "6.6.6.6"), ("127.0.0.1", client.port))
    other.close()
    events = client.collect(lambda: not client.core.pending())
    for ev in events:
        if isinstance(ev, AnswerRejected):
            out(f"   dropped: answer id {ev.qid:#06x} from {ev.source[0]}:{ev.source[1]} — "
                f"{ev.reason.value}: {ev.detail}")
        elif isinstance(ev, AnswerMatched):
            out(f"   accepted: answer id {ev.qid:#06x} from {ev.source[0]}:{ev.source[1]} → "
                f"{', '.join(ev.answers)} (the real server, after {ev.rtt * 1000:.0f} ms)")
    client.close()


def _part3(server: UdpServerThread, result: DnsDemoResult, cap: Capture,
           out: Callable[[str], None]) -> None:
    client = _ClientIO(DnsClient(server.address), result)
    cap.add_port(client.port)
    received, sent = server.received, server.sent
    qid = client.query("late.lab.", "A")
    result.late_qid = qid
    server.wait_until(lambda s: s.received > received)
    port = result.late_port = client.port
    client.close()
    out(f"\n3. Query {qid:#06x} (late.lab. A) sent, then the client closed its socket "
        f"(port {port}) before the answer came:")
    out(f"   client app memory: query {qid:#06x} went PENDING → ABANDONED; the entry that could "
        f"have matched the answer is gone with the socket")
    server.wait_until(lambda s: s.sent > sent)
    if cap.active:
        result.icmp_seen = cap.wait_for(lambda d: _icmp_for_port(d, port))
        verdict = ("the client's kernel answered ICMP port unreachable: nobody holds that "
                   "query's state any more" if result.icmp_seen
                   else "no ICMP port unreachable was seen (rate-limited?)")
        out(f"   the answer arrived at port {port}: {verdict}")
    else:
        out(f"   the answer went to port {port}, where no socket is bound; the kernel answers "
            f"with ICMP port unreachable (capture to see it)")


def _icmp_for_port(d: Decoded, port: int) -> bool:
    return d.icmp_type == 3 and d.icmp_code == 3 and d.quoted is not None \
        and d.quoted.dport == port


def _show_capture(result: DnsDemoResult, summary: CaptureSummary, server_port: int,
                  out: Callable[[str], None]) -> None:
    result.rows = show_capture(summary, out, dns_ports={server_port})
    # Count from the rows just read back: each carries its ports and DNS id (ICMP rows have none).
    to_server = sum(1 for r in result.rows if r.fields.get("dport") == server_port)
    # The first forger sent from the server's own port; the server did not count that one.
    from_server = sum(1 for r in result.rows if r.fields.get("sport") == server_port
                      and r.fields.get("dns_id") != result.forged_qid)
    counters = result.server_counters
    result.complete = (summary.kernel_drops == 0 and to_server == counters.queries
                       + counters.garbage and from_server == counters.answers)
    if result.complete:
        out(f"capture complete: {to_server} queries and {from_server} answers, as the server "
            f"counted; the kernel dropped 0 frames")
    else:
        out(f"WARNING: capture incomplete: {to_server}/{counters.queries} queries, "
            f"{from_server}/{counters.answers} answers, {summary.kernel_drops} kernel drops "
            f"— the table above misses packets")


#: The closing table: what state this protocol has, who holds it, what losing it does.
#: A replay of the reference capture prints it too.
WHERE_STATE_LIVES = ("Where state lives in DNS over UDP:", (
        ("pending-query table (id, question, server, time sent)", "client app memory",
         "answers can no longer be matched: they are dropped, the lookup times out"),
        ("UDP port binding of the client socket", "client kernel",
         "answers hit a closed port: ICMP port unreachable, no app ever sees them"),
        ("query ID, question, addresses", "the packet",
         "nothing to lose: each datagram carries them"),
        ("anything between queries", "nobody (the server keeps nothing)",
         "a server restart loses nothing; the client just asks again"),
        ("a delayed answer (this lab only)", "server app memory, for its delay",
         "that one answer is lost; the client's timer notices"),
))


def _summary(out: Callable[[str], None]) -> None:
    print_where(WHERE_STATE_LIVES, out)
