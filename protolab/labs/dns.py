"""`protolab dns-demo`: DNS matches answers to queries by ID, and the client holds that state.

Where state lives: the client's pending-query table (app memory) and its socket's port binding
(kernel); the server holds nothing between queries. The demo runs the lab server and a client over
one UDP socket, forges answers, answers a client that has gone, restarts the server process between
two queries, captures all of it and annotates the capture.

Every finding it prints is an `Observation` built from this run's own record (the client's events,
the server's PIDs and counters, the kernel's /proc/net/udp, packet numbers in the capture) and kept
in `DnsDemoResult.findings`, with the "where state lives" rows: a claim the run did not see is
printed NOT OBSERVED and the CLI exits 1. `where_from_capture` fills the same rows from a capture.
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.rrset

from protolab.analysis.annotate import Action, Row
from protolab.analysis.observe import (
    Evidence,
    Findings,
    Observation,
    StateRow,
    Status,
    explain,
    observe,
    packet_list,
)
from protolab.analysis.story_checks import check
from protolab.labs.output import (
    capture_off_line,
    indent,
    print_findings,
    print_state_table,
    print_summary,
    show_capture,
    table,
)
from protolab.net.fault_proxy import UdpFaultProxy
from protolab.net.processes import ServerProcess
from protolab.net.udpnet import UdpServerThread
from protolab.protocols.dns import (
    LAB_ZONE,
    AnswerMatched,
    AnswerRejected,
    DnsClient,
    DnsServer,
    Event,
    QueryAbandoned,
    QueryRetransmitted,
    QuerySent,
    QueryState,
    QueryTimedOut,
    RejectReason,
    ServerCounters,
)
from protolab.protocols.faults import FaultCore, FaultPlan, fault_line
from protolab.wire.capture import Capture, CaptureSummary
from protolab.wire.kernel_view import socket_table
from protolab.wire.packets import Decoded, decode
from protolab.wire.paths import default_capture_path

Out = Callable[[str], None]
Address = tuple[str, int]
OnPart = Callable[[int, Address], None]  #: called once part N's server is up (a test seam)
LAB = "dns-demo"
ANSWER_WAIT = 2.0
RETRIES = 2  #: the client re-sends a pending query up to twice ...
RETRY_AFTER = 0.5  #: ... each after this many seconds without an answer (the slowest is 0.16)
FIRST = ("delta.lab.", "A")  #: part 4's first query: answered at once by the first process
HELD = ("alpha.lab.", "A")  #: delayed 0.16 s: the first process holds its answer when killed
GIVE_UP = 0.3  #: part 4's client gives a query up after this long (no retries)
WHERE_TITLE = "Where state lives in DNS over UDP:"
OTHERS_LISTED = 10  #: packets and sources of other traffic listed by number; the rest counted


class _PeerRecord:
    """The lab server's core, wrapped: the same server, plus its own record of how many datagrams
    each address sent it and how many it sent each address. The demo counts its own exchanges
    from this record, whatever else reaches the port meanwhile."""

    def __init__(self, core: DnsServer) -> None:
        self.core = core
        self.heard: Counter[str] = Counter()  #: "host:port" → datagrams received from it
        self.answered: Counter[str] = Counter()  #: "host:port" → datagrams sent to it

    @property
    def counters(self) -> ServerCounters:
        return self.core.counters

    def receive(self, data: bytes, addr: Address, now: float) -> None:
        self.heard[_endpoint(addr)] += 1
        self.core.receive(data, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out = self.core.datagrams_to_send(now)
        for _, addr in out:
            self.answered[_endpoint(addr)] += 1
        return out

    def next_timer(self) -> float | None:
        return self.core.next_timer()


def _endpoint(addr: Address) -> str:
    return f"{addr[0]}:{addr[1]}"


@dataclass(frozen=True)
class OwnCount:
    """This run's own datagrams on one leg: as its own record counted them, as captured."""

    leg: str  #: "to the server from this run's sockets (parts 1-3)"
    counted: int  #: by the server's per-address record, or part 4's client's own record
    captured: int

    @property
    def ok(self) -> bool:
        return self.counted == self.captured


@dataclass(frozen=True)
class OtherTraffic:
    """Datagrams on the server port whose other end is no socket this run opened."""

    sources: dict[str, int] = field(default_factory=dict)  #: "host:port" → datagrams to server
    to_server: tuple[int, ...] = ()  #: their packet numbers (empty when capture was off)
    answers: tuple[int, ...] = ()  #: packets from the server port back to them
    heard: int = 0  #: what the lab server's own record counted from them (parts 1-3)


@dataclass
class ClientLog:
    """What client sockets' cores reported, by kind: parts 1-3's clients share one
    (`DnsDemoResult.log`), part 4's client keeps its own (`RestartRun.log`)."""

    sent: list[QuerySent] = field(default_factory=list)
    matched: list[AnswerMatched] = field(default_factory=list)
    rejected: list[AnswerRejected] = field(default_factory=list)
    abandoned: list[QueryAbandoned] = field(default_factory=list)
    retransmitted: list[QueryRetransmitted] = field(default_factory=list)
    timed_out: list[QueryTimedOut] = field(default_factory=list)

    def add(self, ev: Event) -> None:
        """Keep `ev` with the others of its kind."""
        kinds: dict[type, list] = {
            QuerySent: self.sent, AnswerMatched: self.matched, AnswerRejected: self.rejected,
            QueryAbandoned: self.abandoned, QueryRetransmitted: self.retransmitted,
            QueryTimedOut: self.timed_out}
        kept = kinds.get(type(ev))
        if kept is not None:
            kept.append(ev)


@dataclass
class RestartRun:
    """Part 4: the lab server as a process. A query it answers; a query whose answer it holds
    when it is killed; a new process on the same port; the same question asked again."""

    client_port: int = 0
    pids: list[int] = field(default_factory=list)  #: each server process, in start order
    old_exit: int | None = None  #: the first process's exit status once killed and reaped
    qids: list[int] = field(default_factory=list)  #: first, held, asked again: in order
    held_said: str = ""  #: what the first process printed about the held answer
    pending_at_kill: bool | None = None  #: the held query still pending right after the kill
    log: ClientLog = field(default_factory=ClientLog)
    error: str = ""  #: why the restart could not be done, or ""

    def answered(self, qid: int) -> AnswerMatched | None:
        return next((m for m in self.log.matched if m.qid == qid), None)


@dataclass
class DnsDemoResult:
    server: tuple[str, int]
    client_port: int = 0
    log: ClientLog = field(default_factory=ClientLog)  #: parts 1-3's clients' events, by kind
    faults: FaultCore | None = None  #: the fault proxy's decisions, when part 1 went through it
    forged_qid: int = 0
    bank_qid: int = 0
    bank_port: int = 0  #: part 2's client port
    bank_events: list[Event] = field(default_factory=list)  #: part 2's client events, in order
    late_qid: int = 0
    late_port: int = 0  #: the client port that was closed before its answer came
    late_udp_entries: tuple[int, int] | None = None  #: /proc/net/udp entries: open → closed
    late_sent: tuple[int, int] = (0, 0)  #: server answers sent: when the socket closed → later
    proxy_legs: tuple[int, ...] = ()  #: the fault proxy's upstream ports (part 1 with faults)
    heard: dict[str, int] = field(default_factory=dict)  #: server's record: datagrams from each
    answered: dict[str, int] = field(default_factory=dict)  #: ... and to each "host:port"
    own: list[OwnCount] = field(default_factory=list)  #: this run's datagrams, counted/captured
    others: OtherTraffic = field(default_factory=OtherTraffic)
    icmp_seen: bool | None = None  #: None when capture was off
    capture: CaptureSummary | None = None
    rows: list[Row] = field(default_factory=list)
    server_counters: ServerCounters | None = None
    complete: bool | None = None  #: capture holds every datagram the server counted
    queries: int = 0  #: asked at once in part 1
    restart: RestartRun | None = None  #: part 4
    findings: Findings = field(default_factory=Findings)

    def problem(self) -> str:
        """Why this run does not tell the demo's story, or "" when it does."""
        if not self.findings.all():
            return "no findings were built"
        return self.findings.problem()

    def own_endpoints(self, part4: bool = True) -> set[str]:
        """The sockets this run opened that talk to the server: its clients (part 1's through
        the fault proxy's upstream sockets when faults are on) and, with `part4`, part 4's."""
        ports = {*self.proxy_legs, self.bank_port, self.late_port}
        if not self.proxy_legs:
            ports.add(self.client_port)
        if part4 and self.restart is not None:
            ports.add(self.restart.client_port)
        return {f"127.0.0.1:{p}" for p in ports if p}


class _ClientIO:
    """The client's socket, driving a `DnsClient` core (feed, then collect events)."""

    def __init__(self, core: DnsClient, log: ClientLog) -> None:
        self.core = core
        self.log = log
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
            self.log.add(ev)
        return events

    def poll(self) -> list[Event]:
        """Feed whatever already sits in the socket's receive buffer, without waiting."""
        self.sock.settimeout(0.0)
        while True:
            try:
                data, addr = self.sock.recvfrom(65535)
            except (BlockingIOError, TimeoutError):
                break
            self.core.receive(data, addr, time.monotonic())
        return self._drain()

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
                 pcap: str | Path | None = None, out: Out = print,
                 capture_off_reason: str = "--no-capture",
                 faults: FaultPlan | None = None, on_part: OnPart | None = None) -> DnsDemoResult:
    """Run the whole demo; print the story through `out`; return the facts and the findings.
    With `faults`, part 1 goes through the fault proxy and shows the client's retransmission
    state. `on_part(n, server address)` runs once part n's server is up, before its queries."""
    names = [e for e in LAB_ZONE if e.name not in ("bank.lab.", "late.lab.")]
    path = Path(pcap) if pcap else default_capture_path(LAB, faults=faults is not None)
    record = _PeerRecord(DnsServer())
    server = UdpServerThread(record, port=port, reuseport=True).start()
    result = DnsDemoResult(server=server.address, queries=queries)
    hook = on_part or (lambda n, address: None)
    try:
        with Capture([server.address[1]], path, enabled=capture,
                     off_reason=capture_off_reason) as cap:
            if not cap.active:
                out(capture_off_line(cap.summary, LAB, capture_off_reason))
            hook(1, server.address)
            _part1(server, result, cap, names, queries, out, faults)
            hook(2, server.address)
            _part2(server, result, cap, out)
            hook(3, server.address)
            _part3(server, result, cap, out)
            server.stop()  # part 4 serves the same port from a process it can restart
            result.server_counters = record.counters
            result.heard, result.answered = dict(record.heard), dict(record.answered)
            _part4(result, cap, out, hook)
        result.capture = cap.summary
    finally:
        server.stop()
    if cap.active:
        _show_capture(result, cap.summary, server.address[1], out)
    result.others = other_traffic(result, result.rows, server.address[1])
    result.findings = build_findings(result)
    out("\nWhat this run observed (each line from its own record; #n: a packet of the capture):")
    print_findings(result.findings.observations, out)
    print_state_table(WHERE_TITLE, result.findings.where, out)
    print_summary(LAB, result.findings, out)
    return result


def _part1(server: UdpServerThread, result: DnsDemoResult, cap: Capture, names: list,
           queries: int, out: Out, faults: FaultPlan | None = None) -> None:
    proxy = UdpFaultProxy(server.address, faults).start() if faults else None
    try:
        _part1_queries(server, result, cap, names, queries, out, proxy)
    finally:
        if proxy is not None:
            result.proxy_legs = proxy.upstream_ports
            proxy.stop()
    if proxy is not None:
        result.faults = proxy.core
        out(f"   The fault proxy's decisions (its own app memory): {fault_line(proxy.core)}")


def _part1_queries(server: UdpServerThread, result: DnsDemoResult, cap: Capture, names: list,
                   queries: int, out: Out, proxy: UdpFaultProxy | None) -> None:
    target = proxy.address if proxy else server.address
    client = _ClientIO(DnsClient(target, retries=RETRIES, retry_after=RETRY_AFTER), result.log)
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
    by_qid = {m.qid: m for m in result.log.matched}
    rows = []
    for s in result.log.sent:
        m = by_qid.get(s.qid)
        entry = client.core.entry(s.qid)
        rows.append((f"{s.qid:#06x}", f"{s.name} {s.rdtype}", s.order,
                     m.order_answered if m else "-", f"{m.rtt * 1000:.0f} ms" if m else "-",
                     m.attempts if m else entry.attempts,
                     "yes: source, id, question" if m else f"no: {entry.state.value}"))
    out("   Each query, as the client's table recorded its answer:")
    out(indent(table(rows, ("qid", "question", "order sent", "order answered", "rtt",
                            "copies sent", "matched"))))
    client.close()


def _heard(server: UdpServerThread, port: int) -> int:
    """Datagrams the server's own record has from 127.0.0.1:`port` (other senders ignored)."""
    return server.core.heard[f"127.0.0.1:{port}"]


def _answered(server: UdpServerThread, port: int) -> int:
    """Datagrams the server's own record has sent to 127.0.0.1:`port`."""
    return server.core.answered[f"127.0.0.1:{port}"]


def _part2(server: UdpServerThread, result: DnsDemoResult, cap: Capture, out: Out) -> None:
    client = _ClientIO(DnsClient(server.address), result.log)
    cap.add_port(client.port)
    result.bank_port = client.port
    qid = client.query("bank.lab.", "A")
    result.bank_qid = qid
    had = server.wait_until(lambda s: _heard(s, client.port) > 0)
    forged_qid = (qid + 0x1234) & 0xFFFF
    result.forged_qid = forged_qid
    when = "once the server had the query" if had else "(the server had not counted the query)"
    out(f"\n2. Two forged answers to query {qid:#06x} (bank.lab. A) sent to 127.0.0.1:"
        f"{client.port} {when}: id {forged_qid:#06x} from the server's own address, then id "
        f"{qid:#06x} from another port")
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
    result.bank_events = client.collect(lambda: not client.core.pending())
    out("   The client's own record of each answer that reached its socket, in order:")
    out(indent(table([_event_row(ev) for ev in result.bank_events
                      if isinstance(ev, AnswerMatched | AnswerRejected)],
                     ("answer id", "from", "client did", "why"))))
    client.close()


def _event_row(ev: AnswerMatched | AnswerRejected) -> tuple[str, str, str, str]:
    source = f"{ev.source[0]}:{ev.source[1]}"
    if isinstance(ev, AnswerRejected):
        qid = f"{ev.qid:#06x}" if ev.qid is not None else "-"
        return (qid, source, "dropped", f"{ev.reason.value}: {ev.detail}")
    return (f"{ev.qid:#06x}", source, "matched",
            f"{', '.join(ev.answers)} after {ev.rtt * 1000:.0f} ms")


def _udp_bindings(port: int) -> int:
    """Entries for 127.0.0.1:`port` in the kernel's UDP socket table (/proc/net/udp)."""
    return sum(1 for e in socket_table("udp") if e.local == f"127.0.0.1:{port}")


def _part3(server: UdpServerThread, result: DnsDemoResult, cap: Capture, out: Out) -> None:
    client = _ClientIO(DnsClient(server.address), result.log)
    cap.add_port(client.port)
    qid = client.query("late.lab.", "A")
    result.late_qid = qid
    port = result.late_port = client.port
    had = server.wait_until(lambda s: _heard(s, port) > 0)
    bound = _udp_bindings(port)
    client.close()
    result.late_udp_entries = (bound, _udp_bindings(port))
    at_close = _answered(server, port)
    server.wait_until(lambda s: _answered(s, port) > 0)
    result.late_sent = (at_close, _answered(server, port))
    entry = client.core.entry(qid)
    when = "once the server had it" if had else "(the server had not counted it)"
    out(f"\n3. Query {qid:#06x} (late.lab. A) sent; {when}, the client closed its socket "
        f"(port {port})")
    out(f"   client table entry {qid:#06x}: {entry.state.value}; /proc/net/udp entries for "
        f"port {port}: {bound} → {result.late_udp_entries[1]}; server answers sent for it: "
        f"{result.late_sent[0]} when the socket closed → {result.late_sent[1]} after")
    if cap.active:
        result.icmp_seen = cap.wait_for(lambda d: _icmp_for_port(d, port))


def _icmp_for_port(d: Decoded, port: int) -> bool:
    return d.icmp_type == 3 and d.icmp_code == 3 and d.quoted is not None \
        and d.quoted.dport == port


def _part4(result: DnsDemoResult, cap: Capture, out: Out, hook: OnPart) -> None:
    """The lab server as its own process on the same port: it answers a query; it is killed
    while it holds the answer to a second one; a new process takes the port; the client, its
    own timer having given the second query up, asks the same question again."""
    run = result.restart = RestartRun()
    client = _ClientIO(DnsClient(result.server, timeout=GIVE_UP), run.log)
    cap.add_port(client.port)
    run.client_port = client.port
    procs: list[ServerProcess] = []
    try:
        procs.append(ServerProcess("protolab.net.dns_server", result.server[1]))
        run.pids.append(procs[0].pid)
        hook(4, result.server)
        run.qids.append(client.query(*FIRST))
        client.collect(lambda: not client.core.pending())
        held = client.query(*HELD)
        run.qids.append(held)
        run.held_said = _said(procs[0], held)
        run.old_exit = procs[0].kill()  # SIGKILL, reaped: the process and its memory are gone
        client.poll()  # an answer sent before the kill would be in the socket's buffer now
        run.pending_at_kill = client.core.entry(held).state is QueryState.PENDING
        procs.append(ServerProcess("protolab.net.dns_server", result.server[1]))
        run.pids.append(procs[1].pid)
        client.collect(lambda: not client.core.pending())  # the client's own timer gives up
        run.qids.append(client.query(*HELD))
        client.collect(lambda: not client.core.pending())
    except (RuntimeError, OSError) as exc:
        run.error = f"the server process could not be (re)started: {exc}"
    finally:
        for proc in procs:
            proc.kill()
        # The processes are gone: nothing more can reach the client. An answer that came after
        # the client gave its query up (a server slower than GIVE_UP, as on a loaded machine)
        # waits unread in the socket; read it into the client's record before the close
        # discards it, or the capture would hold an answer the record never counted.
        client.poll()
        client.close()
    _show_part4(result, run, out)


def _said(proc: ServerProcess, qid: int, timeout: float = ANSWER_WAIT) -> str:
    """What the server process printed about holding `qid` ("holding 0x1234"); if it never
    did within `timeout`, what it printed instead ("" for nothing). It also reports answers
    it holds for anyone else sending to its port, so the lines are read until the one for
    `qid`. Read from the pipe itself: the process printed nothing after `ready PORT` (which
    ServerProcess read) before this run's first query, so no line waits in Python's buffer."""
    want = f"holding {qid:#06x}"
    fd = proc.proc.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while want not in (lines := data.decode(errors="replace").splitlines()):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 4096) if ready else b""
        if not chunk:
            return ", ".join(line.strip() for line in lines)
        data += chunk
    return want


def _show_part4(result: DnsDemoResult, run: RestartRun, out: Out) -> None:
    out(f"\n4. The lab server as its own process on {result.server[0]}:{result.server[1]}, "
        f"killed while it held an answer and started again; one client socket "
        f"(127.0.0.1:{run.client_port}), giving a query up after {GIVE_UP} s:")
    rows = []
    timed_out = {t.qid for t in run.log.timed_out}
    for n, (qid, s) in enumerate(zip(run.qids, run.log.sent, strict=False)):
        m = run.answered(qid)
        pid = run.pids[min(n // 2, len(run.pids) - 1)]  # queries 1, 2 → first; 3 → second
        rows.append((f"{qid:#06x}", f"{s.name} {s.rdtype}", pid,
                     f"{', '.join(m.answers)} ({m.rcode}), matched" if m
                     else "timed out (the client's own timer)" if qid in timed_out
                     else "no answer"))
    out(indent(table(rows, ("qid", "question", "server pid when sent",
                            "answer, as the client recorded"))))
    if run.old_exit is not None:
        held = f"{run.qids[1]:#06x}"
        state = "still pending" if run.pending_at_kill else "not pending"
        out(f"   pid {run.pids[0]} said {run.held_said or 'nothing'!r} about {held}; it was "
            f"killed and reaped (exit status {run.old_exit}); the client's entry {held} right "
            f"after: {state}")
    if run.error:
        out(f"   {run.error}")


def _show_capture(result: DnsDemoResult, summary: CaptureSummary, server_port: int,
                  out: Out) -> None:
    result.rows = show_capture(summary, out, dns_ports={server_port})
    result.own = own_counts(result, result.rows, server_port)
    # This run's own exchanges, leg by leg: a kernel drop that hit one of them shows as a leg
    # short; one that hit other traffic on the port does not make this run's story incomplete.
    result.complete = all(c.ok for c in result.own)


def own_counts(result: DnsDemoResult, rows: Sequence[Row], server_port: int) -> list[OwnCount]:
    """This run's own datagrams on the server port, counted and captured: parts 1-3 against the
    server's per-address record of this run's sockets, part 4 against its client's own record.
    Counted from the rows read back: each carries its endpoints (ICMP rows have no ports)."""
    server = f"127.0.0.1:{server_port}"
    own = result.own_endpoints(part4=False)
    restart = result.restart or RestartRun()
    p4 = f"127.0.0.1:{restart.client_port}"
    # The first forger sent from the server's own address and port; the server did not send it.
    forged = {"dns_id": result.forged_qid, "dport": result.bank_port}
    to_server = sum(1 for r in rows if r.dst == server and r.src in own)
    from_server = sum(1 for r in rows if r.src == server and r.dst in own
                      and not all(r.fields.get(k) == v for k, v in forged.items()))
    log = restart.log
    return [
        OwnCount("to the server from this run's sockets (parts 1-3; the server's own record)",
                 sum(result.heard.get(e, 0) for e in own), to_server),
        OwnCount("from the server to them (its own record)",
                 sum(result.answered.get(e, 0) for e in own), from_server),
        OwnCount("part 4's client → server (the client's record)", len(log.sent),
                 sum(1 for r in rows if r.src == p4 and r.dst == server)),
        OwnCount("server → part 4's client (the client's record)",
                 len(log.matched) + len(log.rejected),
                 sum(1 for r in rows if r.dst == p4 and r.src == server)),
    ]


def other_traffic(result: DnsDemoResult, rows: Sequence[Row], server_port: int) -> OtherTraffic:
    """Datagrams to and from the server port whose other end is no socket this run opened:
    from the capture when there is one, and from the lab server's own record (parts 1-3)."""
    server = f"127.0.0.1:{server_port}"
    own = result.own_endpoints()
    to_server = [r for r in rows if r.dst == server and r.src not in own]
    answers = tuple(r.number for r in rows if r.src == server and r.dst not in own)
    sources: Counter[str] = Counter(r.src for r in to_server)
    if not rows:
        sources = Counter({e: n for e, n in result.heard.items() if e not in own})
    heard = sum(n for e, n in result.heard.items() if e not in own)
    return OtherTraffic(dict(sources), tuple(r.number for r in to_server), answers, heard)


# -- findings: built from the run's own record, after the capture is read back ----------------


@dataclass(frozen=True)
class _Packets:
    """Packet numbers of this run's capture, found by the IDs and ports the run used (all
    empty when capture was off)."""

    part1: tuple[int, ...] = ()  #: part 1's matched answers, in arrival order
    copies: dict[int, tuple[int, ...]] = field(default_factory=dict)  #: qid → its queries
    forged: tuple[int, ...] = ()
    wrong_source: tuple[int, ...] = ()
    real: tuple[int, ...] = ()
    late: tuple[int, ...] = ()  #: the answer to the closed socket
    icmp: tuple[int, ...] = ()  #: ICMP port unreachable quoting the closed port
    restart: tuple[int, ...] = ()  #: part 4's answers, in order
    held: tuple[int, ...] = ()  #: part 4's query whose answer the killed process held
    held_answer: tuple[int, ...] = ()  #: an answer to that query (none, if it was lost)


def _numbers(rows: Sequence[Row], action: Action | None = None, **want: object) -> tuple[int, ...]:
    return tuple(r.number for r in rows if all(r.fields.get(k) == v for k, v in want.items())
                 and (action is None or r.action is action))


def _live_packets(result: DnsDemoResult) -> _Packets:
    rows = result.rows
    if not rows:
        return _Packets()
    server = result.server[1]
    bank = {"dns_response": True, "dport": result.bank_port}
    records = result.capture.records if result.capture else []
    icmp = tuple(n for n, rec in enumerate(records, 1)
                 if _icmp_for_port(decode(rec.data, rec.linktype, rec.time), result.late_port))
    restart = result.restart or RestartRun()
    held = restart.qids[1] if len(restart.qids) > 1 else None
    return _Packets(
        part1=_numbers(rows, Action.ENDS, dns_response=True, dport=result.client_port),
        copies={r.qid: _numbers(rows, dns_response=False, dns_id=r.qid,
                                sport=result.client_port) for r in result.log.retransmitted},
        forged=_numbers(rows, dns_id=result.forged_qid, **bank),
        wrong_source=tuple(n for n in _numbers(rows, dns_id=result.bank_qid, **bank)
                           if n not in _numbers(rows, sport=server)),
        real=_numbers(rows, Action.ENDS, dns_id=result.bank_qid, sport=server, **bank),
        late=_numbers(rows, dns_response=True, dns_id=result.late_qid, dport=result.late_port),
        icmp=icmp,
        restart=tuple(n for q in restart.qids for n in _numbers(
            rows, Action.ENDS, dns_response=True, dns_id=q, dport=restart.client_port)),
        held=_numbers(rows, dns_response=False, dns_id=held, sport=restart.client_port),
        held_answer=_numbers(rows, dns_response=True, dns_id=held, dport=restart.client_port))


def build_findings(result: DnsDemoResult) -> Findings:
    """Every finding line and "where state lives" row of this run, from its own record."""
    p = _live_packets(result)
    captured = bool(result.rows)
    findings = Findings()
    findings.add(_matched(result, p))
    if result.faults is not None:
        findings.add(_retries(result, p))
    forged = _rejection(result, RejectReason.UNKNOWN_ID, result.forged_qid)
    spoofed = _rejection(result, RejectReason.WRONG_SOURCE, result.bank_qid)
    findings.add(_dropped("dns.forged-id-dropped", "a forged answer from the server's own "
                          "address, with an ID no query has, is dropped", forged, p.forged))
    findings.add(_dropped("dns.wrong-source-dropped", "an answer with the right ID from another "
                          "port is dropped", spoofed, p.wrong_source))
    findings.add(_real_answer(result, p))
    findings.add(_abandoned(result))
    findings.add(_icmp(result, p) if captured else explain(
        "dns.icmp", "an answer to a port with no socket gets ICMP port unreachable from that "
        "host's kernel (RFC 1122 section 4.1.3.1)",
        f"capture was off ({_off_reason(result)}): no packet of this run shows it"))
    if captured:
        findings.add(_complete(result))
    if result.others.sources:
        findings.add(_others(result))
    findings.where = [_row_pending(result, p), _row_binding(result, p),
                      _row_query_id(result, forged, p), _row_source(result, spoofed, p),
                      _row_restart(result, p), _row_delayed(result, p)]
    return findings


def _off_reason(result: DnsDemoResult) -> str:
    return (result.capture.off_reason if result.capture else None) or "not captured"


def _hex(qids: Sequence[int]) -> str:
    return ", ".join(f"{q:#06x}" for q in qids)


def _matched(result: DnsDemoResult, p: _Packets) -> Observation:
    key = "dns.matched-out-of-order"
    claim = "each answer is matched to its query by ID, in whatever order the answers come"
    part1 = result.log.sent[:result.queries]
    if len(part1) < 2:
        return explain(key, claim, "one query cannot be answered out of order "
                                   "(--queries 1)")
    ids = {s.qid for s in part1}
    matched = sorted((m for m in result.log.matched if m.qid in ids),
                     key=lambda m: m.order_answered)
    order = [m.order_sent for m in matched]
    order_text = ", ".join(map(str, order)) or "none"
    if len(matched) < len(part1):
        why = (f"{len(matched)} of {len(part1)} answers came back and matched: there is no "
               f"order of answers to compare with the order sent")
    else:
        why = (f"the answers came back in the order sent ({order_text}): this run did not "
               f"show matching by ID rather than by order")
    return observe(
        key, claim, len(matched) == len(part1) and order != sorted(order),
        seen=f"Answers came back in another order than sent ({order_text}); all "
             f"{len(matched)} matched their queries by source, ID and question",
        evidence=[Evidence("answers matched", after=f"{len(matched)} of {len(part1)}"),
                  Evidence("order sent, as answered", after=order_text, packets=p.part1)],
        why_not=why)


def _retries(result: DnsDemoResult, p: _Packets) -> Observation:
    part1 = {s.qid for s in result.log.sent[:result.queries]}
    if not result.log.retransmitted:
        first = [m for m in result.log.matched if m.qid in part1 and m.attempts == 1]
        return observe(
            "dns.no-retry", "no retry was needed: every answer came before the client's retry "
            "timer", len(first) == len(part1) > 0,
            seen=f"{len(first)} of {len(part1)} answers matched their first copy; the retry "
                 f"timer never fired",
            evidence=[Evidence("answers matched on the first copy",
                               after=f"{len(first)} of {len(part1)}")],
            why_not=f"only {len(first)} of {len(part1)} answers came, and no retry was sent")
    ev = [Evidence(f"retry of {r.qid:#06x} ({r.name})",
                   after=f"copy {r.attempt} at +{r.after * 1000:.0f} ms",
                   packets=p.copies.get(r.qid, ())) for r in result.log.retransmitted]
    return observe(
        "dns.retries", "the client's retry timer re-sends a query whose answer has not come; "
        "the count and the timer are the client's state", True,
        seen=f"client retry timer fired {len(ev)} time(s), for "
             f"{_hex(sorted({r.qid for r in result.log.retransmitted}))}", evidence=ev)


def _rejection(result: DnsDemoResult, reason: RejectReason, qid: int) -> AnswerRejected | None:
    return next((r for r in result.log.rejected if r.reason is reason and r.qid == qid), None)


def _dropped(key: str, claim: str, rejected: AnswerRejected | None,
             packets: tuple[int, ...]) -> Observation:
    if rejected is None:
        return observe(key, claim, False, why_not="the client recorded no such drop")
    source = f"{rejected.source[0]}:{rejected.source[1]}"
    return observe(
        key, claim, True,
        seen=f"the client dropped answer id {rejected.qid:#06x} from {source}: "
             f"{rejected.reason.value} ({rejected.detail})",
        evidence=[Evidence("client dropped", after=f"id {rejected.qid:#06x}: "
                                                   f"{rejected.reason.value}", packets=packets)])


def _real_answer(result: DnsDemoResult, p: _Packets) -> Observation:
    kinds = [("matched" if isinstance(ev, AnswerMatched) else "dropped")
             for ev in result.bank_events if isinstance(ev, AnswerMatched | AnswerRejected)]
    real = next((ev for ev in result.bank_events if isinstance(ev, AnswerMatched)
                 and ev.qid == result.bank_qid and ev.source == result.server), None)
    ok = real is not None and kinds[:3] == ["dropped", "dropped", "matched"]
    return observe(
        "dns.real-answer-matched", "the real answer still matches after both forgeries", ok,
        seen=(f"the real answer {result.bank_qid:#06x} from the server matched after both "
              f"drops → {', '.join(real.answers)}") if real else "",
        evidence=[Evidence("client record, in order", after=", ".join(kinds) or "nothing",
                           packets=p.real)],
        why_not=f"the client's record of answers to {result.bank_qid:#06x} was: "
                f"{', '.join(kinds) or 'nothing'}")


def _abandoned(result: DnsDemoResult) -> Observation:
    gone = next((a for a in result.log.abandoned if a.qid == result.late_qid), None)
    return observe(
        "dns.abandoned", "closing the socket ends a pending query in client app memory: "
        "PENDING → ABANDONED", gone is not None,
        seen=f"query {result.late_qid:#06x} went PENDING → ABANDONED when its socket closed",
        evidence=[Evidence("client event QueryAbandoned",
                           after=f"{gone.qid:#06x} ({gone.name})")] if gone else [],
        why_not=f"the client recorded no abandoned entry for {result.late_qid:#06x}")


def _icmp(result: DnsDemoResult, p: _Packets) -> Observation:
    return observe(
        "dns.icmp", "an answer to a port with no socket gets ICMP port unreachable from the "
        "client's kernel", bool(p.late and p.icmp),
        seen=f"the answer to closed port {result.late_port} got ICMP port unreachable",
        evidence=[Evidence("answer, ICMP", packets=p.late[:1] + p.icmp[:1])],
        why_not=f"no ICMP port unreachable quoting port {result.late_port} after the answer "
                f"{packet_list(p.late) or '(not captured)'} is in the capture (the kernel "
                f"rate-limits ICMP)")


def _complete(result: DnsDemoResult) -> Observation:
    summary = result.capture
    short = [c for c in result.own if not c.ok]
    counted = sum(c.counted for c in result.own)
    return observe(
        "dns.capture-complete", "the capture holds every datagram this run's own sockets and the "
        "server exchanged, as their own records counted them", bool(result.complete),
        seen=f"capture complete: {summary.packets} packets; the {counted} datagrams of this "
             f"run's own exchanges that the server and part 4's client counted are all in it",
        evidence=[*(Evidence(c.leg, after=f"{c.counted} counted, {c.captured} captured")
                    for c in result.own),
                  Evidence("kernel drops", after=summary.kernel_drops)],
        why_not="the capture misses packets of this run's own exchanges ("
                + ("; ".join(f"{c.leg}: {c.counted} counted, {c.captured} captured"
                             for c in short) or "none short")
                + f"; {summary.kernel_drops} kernel drops): the table above is incomplete")


def _others(result: DnsDemoResult) -> Observation:
    """What else reached the server port: an observation, never a failure of the run."""
    o = result.others
    total = sum(o.sources.values())
    listed = sorted(o.sources.items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{e} ({n})" for e, n in listed[:OTHERS_LISTED])
    more = f" and {len(listed) - OTHERS_LISTED} more sources" if len(listed) > OTHERS_LISTED \
        else ""
    captured = bool(result.rows)
    answered = f"; {len(o.answers)} datagrams went back to them from the server port" \
        if captured else " (capture off: the lab server's own record, parts 1-3)"
    first = o.to_server[:OTHERS_LISTED]
    evidence = [Evidence("the lab server's own record, parts 1-3: datagrams from other "
                         "sockets", after=o.heard)]
    if captured:
        evidence.insert(0, Evidence(
            "captured datagrams to the server port from other sockets",
            after=f"{len(o.to_server)}" + (f" (the first {len(first)} listed)"
                                           if len(o.to_server) > len(first) else ""),
            packets=first))
    return observe(
        "dns.other-traffic", "datagrams from sockets this run did not open reached the server "
        "port; the completeness count leaves them out", total > 0,
        seen=f"{total} other datagrams reached the server port from {shown}{more}{answered}",
        evidence=evidence, why_not="no other datagram was seen")


# -- the "where state lives" rows ------------------------------------------------------------

PENDING_TABLE = ("pending-query table (id, question, server, time sent)", "client app memory")
PORT_BINDING = ("UDP port binding of the client socket", "client kernel")
QUERY_ID = ("query ID and question", "the packet (checked against the client's table)")
SOURCE = ("source address and port of an answer", "the packet (checked against the client's "
                                                  "table)")
BETWEEN = ("anything between queries", "nobody (the server keeps nothing)")
DELAYED = ("a delayed answer (this lab's server only)", "server app memory, for its delay")


def _row_pending(result: DnsDemoResult, p: _Packets) -> StateRow:
    qid, port = result.late_qid, result.late_port
    gone = any(a.qid == qid for a in result.log.abandoned)
    at_close, later = result.late_sent
    ok = gone and at_close == 0 and later >= 1
    why = ("the client recorded no abandoned entry" if not gone
           else "the server had already answered when the socket closed" if at_close
           else "the server never sent the answer")
    return StateRow(*PENDING_TABLE, f"closed the client socket (port {port}) with query "
                                    f"{qid:#06x} pending", observe(
        "dns.where.pending-table", "the entry goes with the socket: the answer that comes "
        "later can match nothing", ok,
        seen=f"entry {qid:#06x} went PENDING → ABANDONED; the server's answer came after the "
             f"close, and nothing matched it",
        evidence=[Evidence(f"client event for {qid:#06x}",
                           after="QueryAbandoned (PENDING → ABANDONED)" if gone else "none"),
                  Evidence("server answers sent, at the close and later", before=at_close,
                           after=later, packets=p.late + p.icmp)],
        why_not=why))


def _row_binding(result: DnsDemoResult, p: _Packets) -> StateRow:
    port = result.late_port
    before, after = result.late_udp_entries or (None, None)
    captured = bool(result.rows)
    ok = (before, after) == (1, 0) and (not captured or bool(p.icmp))
    icmp = "; the answer sent to it got ICMP port unreachable" if captured else ""
    why = (f"/proc/net/udp entries for port {port}: {before} → {after}" if (before, after)
           != (1, 0) else "no ICMP port unreachable for the port is in the capture")
    return StateRow(*PORT_BINDING, f"closed the client socket (port {port})", observe(
        "dns.where.port-binding", "closing the socket removes the port binding from the kernel's "
        "table", ok, seen=f"the kernel's UDP table lost 127.0.0.1:{port}{icmp}",
        evidence=[Evidence(f"/proc/net/udp entries for :{port}", before=before, after=after,
                           packets=p.late[:1] + p.icmp[:1])],
        why_not=why))


def _row_query_id(result: DnsDemoResult, forged: AnswerRejected | None,
                  p: _Packets) -> StateRow:
    real = any(m.qid == result.bank_qid for m in result.log.matched)
    return StateRow(*QUERY_ID, f"sent an answer with a wrong ID ({result.forged_qid:#06x}) from "
                               f"the server's own address", observe(
        "dns.where.query-id", "an answer's ID must match a pending query, whatever its source",
        forged is not None and real,
        seen="the client dropped it (no pending query has that ID); the real answer still "
             "matched",
        evidence=[Evidence("client dropped id", after=f"{result.forged_qid:#06x}",
                           packets=p.forged),
                  Evidence("real answer matched", after=f"{result.bank_qid:#06x}",
                           packets=p.real)] if forged and real else [],
        why_not="the client's record does not show the drop and the later match"))


def _row_source(result: DnsDemoResult, spoofed: AnswerRejected | None,
                p: _Packets) -> StateRow:
    real = any(m.qid == result.bank_qid for m in result.log.matched)
    port = spoofed.source[1] if spoofed else "?"
    return StateRow(*SOURCE, f"sent the right ID ({result.bank_qid:#06x}) from another port "
                             f"({port})", observe(
        "dns.where.source", "an answer must come from the address and port the query went to",
        spoofed is not None and real,
        seen="the client dropped it (wrong source); the real answer still matched",
        evidence=[Evidence("client dropped id", after=f"{result.bank_qid:#06x} from :{port}",
                           packets=p.wrong_source),
                  Evidence("real answer matched", after=f"{result.bank_qid:#06x}",
                           packets=p.real)] if spoofed and real else [],
        why_not="the client's record does not show the drop and the later match"))


def _row_restart(result: DnsDemoResult, p: _Packets) -> StateRow:
    run = result.restart or RestartRun(error="part 4 did not run")
    before = run.qids[0] if run.qids else None
    after = run.qids[2] if len(run.qids) > 2 else None
    answered = [q for q in (before, after) if q is not None and run.answered(q)]
    ok = (len(run.pids) == 2 and run.pids[0] != run.pids[1] and run.old_exit is not None
          and len(answered) == 2)
    why = run.error or (f"server pids {run.pids}, old exit status {run.old_exit}; answered "
                        f"{_hex(answered) or 'none'} of {_hex(run.qids) or 'none'}")
    seen = (f"pid {run.pids[0]} answered {before:#06x}; it was killed (exit {run.old_exit}); "
            f"pid {run.pids[1]} on the same port answered {after:#06x}, the question asked "
            f"again, matched by the same client") if ok else ""
    return StateRow(*BETWEEN, "restarted the server process between two queries from one "
                              "client socket", observe(
        "dns.where.between-queries", "a server restart loses nothing: the client asks again "
        "and is answered", ok, seen=seen,
        evidence=[Evidence("server pid", before=run.pids[0], after=run.pids[-1]),
                  Evidence("answers matched", after=_hex(answered), packets=p.restart)]
        if run.pids else [],
        why_not=why))


def _row_delayed(result: DnsDemoResult, p: _Packets) -> StateRow:
    run = result.restart or RestartRun(error="part 4 did not run")
    claim = ("killing the server while it delays an answer loses that one answer; the "
             "client's timer notices")
    if len(run.qids) < 2 or run.old_exit is None:
        return StateRow(*DELAYED, "-", observe(
            "dns.where.delayed-answer", claim, False,
            why_not=run.error or "the server process was not killed while it held an answer"))
    held, pid = run.qids[1], run.pids[0]
    timed_out = any(t.qid == held for t in run.log.timed_out)
    said = run.held_said == f"holding {held:#06x}"
    lost = run.answered(held) is None and not p.held_answer
    ok = said and bool(run.pending_at_kill) and timed_out and lost
    why = ("the process did not say it held the answer" if not said
           else "an answer came: it was not lost" if not lost or not run.pending_at_kill
           else "the client's timer did not give the query up")
    return StateRow(*DELAYED, f"killed the server process (pid {pid}) while it held the "
                              f"answer to {held:#06x}", observe(
        "dns.where.delayed-answer", claim, ok,
        seen=f"the answer never came; the client's own timer gave {held:#06x} up after "
             f"{GIVE_UP} s",
        evidence=[Evidence(f"pid {pid} said", after=run.held_said or "nothing"),
                  Evidence(f"client entry {held:#06x}, at the kill and later",
                           before="pending" if run.pending_at_kill else "not pending",
                           after="timed out" if timed_out else "not timed out",
                           packets=p.held)],
        why_not=why))


# -- replay: the same rows from a capture ---------------------------------------------------


def _answered_queries(rows: Sequence[Row]) -> tuple[list[Row], dict[int, Row]]:
    """New queries (not retransmissions) in capture order, and each one's matched answer."""
    queries = [r for r in rows if "dns_id" in r.fields and not r.fields.get("dns_response")
               and r.action is Action.CREATES]
    ends = [r for r in rows if r.fields.get("dns_response") and r.action is Action.ENDS]
    answers = {}
    for q in queries:
        a = next((e for e in ends if e.dst == q.src and e.src == q.dst and e.number > q.number
                  and e.fields["dns_id"] == q.fields["dns_id"]), None)
        if a is not None:
            answers[q.number] = a
    return queries, answers


def asked_again(rows: Sequence[Row]) -> tuple[int, ...]:
    """What part 4 leaves in a capture: a query answered, then (after a query nobody answered)
    the same socket asking the same server again, answered: (query, answer, query, answer)
    packet numbers, or (). Anchored on the unanswered query, so part 1's batch, whose answers
    may come while it is still sending, is not taken for it."""
    lost = never_answered_then_asked_again(rows)
    if not lost:
        return ()
    queries, answers = _answered_queries(rows)
    unanswered = next(q for q in queries if q.number == lost[0])
    before = [q for q in queries if q.number < unanswered.number and q.number in answers
              and (q.src, q.dst) == (unanswered.src, unanswered.dst)]
    if not before:
        return ()
    a = before[-1]
    return (a.number, answers[a.number].number, lost[1], lost[2])


def never_answered_then_asked_again(rows: Sequence[Row]) -> tuple[int, ...]:
    """A query no datagram answered, then the same question from the same socket, answered:
    (query, query again, answer), or ()."""
    queries, answers = _answered_queries(rows)
    replied = {(r.dst, r.fields["dns_id"]) for r in rows if r.fields.get("dns_response")}
    for a in queries:
        if (a.src, a.fields["dns_id"]) in replied:
            continue
        b = next((q for q in queries if q.number > a.number and q.number in answers
                  and (q.src, q.dst) == (a.src, a.dst)
                  and q.fields.get("dns_question") == a.fields.get("dns_question")), None)
        if b is not None:
            return (a.number, b.number, answers[b.number].number)
    return ()


def where_from_capture(rows: Sequence[Row]) -> list[StateRow]:
    """The "where state lives" rows filled from a capture's packets; what only a live run can
    show (a process's PIDs, the client's memory) is marked live run only."""
    found = {f.step.key: f.packets for f in check(LAB, rows)}
    closed, forged = found.get("closed-socket", ()), found.get("forged-id", ())
    spoofed, real = found.get("wrong-source", ()), found.get("real-answer", ())
    late, icmp = (closed[0], closed[-1]) if closed else (None, None)
    missing = "this capture has no {} (is it a capture of `protolab dns-demo`?)"
    return [
        StateRow(*PENDING_TABLE, "the client closed its socket with a query pending", observe(
            "dns.where.pending-table", "the entry goes with the socket: the answer that comes "
            "later can match nothing", bool(closed),
            seen="the answer found no pending entry and no socket: the kernel answered ICMP "
                 "port unreachable (the entry's PENDING → ABANDONED is in client memory: live "
                 "run only)",
            evidence=[Evidence("answer, ICMP", packets=closed)],
            why_not=missing.format("answer to a closed socket"))),
        StateRow(*PORT_BINDING, "the client closed its socket", observe(
            "dns.where.port-binding", "closing the socket removes the port binding", bool(closed),
            seen=f"answer #{late} reached a port with no binding: ICMP port unreachable #{icmp}",
            evidence=[Evidence("answer, ICMP", packets=closed)],
            why_not=missing.format("ICMP port unreachable for an answer"))),
        StateRow(*QUERY_ID, "a forged answer with an ID no query has, from the server's own "
                            "address", observe(
            "dns.where.query-id", "an answer's ID must match a pending query, whatever its "
            "source", bool(forged and real),
            seen="it matched nothing; the real answer still matched the pending query",
            evidence=[Evidence("forged", packets=forged), Evidence("real", packets=real)],
            why_not=missing.format("forged answer followed by the real one"))),
        StateRow(*SOURCE, "an answer with the right ID from another port", observe(
            "dns.where.source", "an answer must come from the address and port the query went "
            "to", bool(spoofed and real),
            seen="it matched nothing; the real answer still matched the pending query",
            evidence=[Evidence("wrong source", packets=spoofed), Evidence("real", packets=real)],
            why_not=missing.format("answer from a wrong source followed by the real one"))),
        StateRow(*BETWEEN, "the server process restarted between two queries",
                 _restart_from_packets(rows)),
        StateRow(*DELAYED, "the server process killed while it held an answer",
                 _held_from_packets(rows)),
    ]


def _restart_from_packets(rows: Sequence[Row]) -> Observation:
    again = asked_again(rows)
    claim = "a server restart loses nothing: the next query is answered"
    if not again:
        return explain("dns.where.between-queries", claim,
                       "a restart's PIDs are not in packets, and this capture "
                       "has no client asking the server again after an answer",
                       status=Status.LIVE_ONLY)
    q1, a1, q2, a2 = again
    return explain("dns.where.between-queries", claim,
                   f"the packets show one client socket asking again (#{q2}) "
                   f"after its answer #{a1} and answered #{a2} from the same server port; that "
                   f"a new server process (another PID) answered is not in packets",
                   status=Status.LIVE_ONLY)


def _held_from_packets(rows: Sequence[Row]) -> Observation:
    found = never_answered_then_asked_again(rows)
    claim = ("killing the server while it delays an answer loses that one answer; the "
             "client's timer notices")
    if not found:
        return explain("dns.where.delayed-answer", claim,
                       "what a server process held when it was killed is in no packet, and "
                       "this capture has no query left unanswered and then asked again",
                       status=Status.LIVE_ONLY)
    lost, again, answer = found
    return explain("dns.where.delayed-answer", claim,
                   f"the packets show query #{lost} never answered and the same question asked "
                   f"again (#{again}), answered #{answer}; that the server process held the "
                   f"lost answer when it was killed is not in packets", status=Status.LIVE_ONLY)


run = run_dns_demo  #: the registry's entry point (protolab.labs.DEMOS)
