"""`protolab tcp-demo`: TCP's state lives in two kernels, keyed by the 4-tuple.

Where state lives: each endpoint's kernel holds a connection entry (state, sequence numbers,
windows); the applications hold only their sockets. The demo shows the entries change state, next
to the packets that changed them, as protolab's model predicts from the packets and as the kernel
itself records; then takes the state away (kill the server, forge a segment, knock on a port with
no socket, reconnect) and shows HTTP's requests carrying their own state over TCP.

Every finding line and every "where state lives" row is an `Observation` in `result.findings`,
made from what this run did and saw (PIDs, packet numbers, the kernel's tables and its tracepoint
record), and rendered from it. What the run could not try (no root, capture off) is printed as an
explanation, "not tried here"; what it tried and did not see is NOT OBSERVED, and the CLI exits 1.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from protolab.analysis.annotate import Row
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
from protolab.labs.output import (
    capture_off_line,
    indent,
    print_findings,
    print_state_table,
    print_summary,
    show_capture,
    table,
)
from protolab.labs.tcpmove import connection_state, raw_send
from protolab.net.echo_server import EchoServer
from protolab.net.processes import ServerProcess
from protolab.net.stateless_http import StatelessHttpServer, http_get
from protolab.protocols.tcp import ACK, FIN, RST, SYN, TcpObserver, Transition
from protolab.wire.capture import Capture, CaptureSummary, capture_denied_reason
from protolab.wire.kernel_view import (
    KernelTransition,
    SocketEntry,
    TcpStateTrace,
    entries,
    monotonic_offset,
    socket_table,
    tcp_info_state,
)
from protolab.wire.packets import Decoded
from protolab.wire.paths import default_capture_path

LAB = "tcp-demo"
Out = Callable[[str], None]
WHERE_TITLE = "Where state lives in TCP:"
FORGE_OFFSET = 1 << 24  #: the forged segment's distance beyond RCV.NXT: 16 MiB, far out of window


class Match(Enum):
    SAME = "same"  #: the model and the kernel's record give the same transition
    EXPLAINED = "differs: explained"  #: they differ, and this run observed why (see `why`)
    DIFFERS = "DIFFERS"  #: they differ and nothing this run saw explains it


@dataclass(frozen=True)
class Compared:
    """One row of the model-vs-kernel table: a transition as each records it."""

    socket: str  #: "client" or "server"
    model: str  #: "OLD→NEW" from protolab's model of the packets, or "-"
    kernel: str  #: "OLD→NEW" as the tracepoint recorded it, unedited, or "-"
    match: Match
    why: str = ""  #: for EXPLAINED: the explanation and the observations behind it


@dataclass(frozen=True)
class TimelineEvent:
    """A packet (with the model's transitions) or one line of the kernel's own record."""

    time: float  #: epoch seconds
    packet: str = ""
    model: str = ""
    who: str = ""  #: whose socket the kernel's record is about
    kernel: KernelTransition | None = None  #: the tracepoint's record, exactly as parsed

    def kernel_text(self) -> str:
        return f"{self.who} {self.kernel.old}→{self.kernel.new}" if self.kernel else ""


@dataclass
class TcpDemoResult:
    server: tuple[str, int] = ("", 0)
    client: tuple[str, int] = ("", 0)
    snapshots: list[tuple[str, str, str]] = field(default_factory=list)  #: step, client, server
    kernel: list[KernelTransition] = field(default_factory=list)  #: the tracepoint, as recorded
    trace_reason: str = ""  #: why the kernel's record is off, or ""
    model: list[Transition] = field(default_factory=list)
    timeline: list[TimelineEvent] = field(default_factory=list)
    comparison: list[Compared] = field(default_factory=list)
    agree: bool | None = None  #: None when the model or the kernel's record was not available
    client_info_closed: str = ""  #: TCP_INFO of the client's socket after the close
    time_wait: SocketEntry | None = None  #: the client's 4-tuple in /proc/net/tcp, TIME_WAIT
    killed_pid: int = 0
    kill_client_error: str = ""
    forged_sent: bool = False  #: the forged segment was seen on the wire
    forged_reply: str = ""  #: the flags the kernel answered the out-of-window segment with
    echo_received: bytes = b""  #: everything the echo server's application was given
    noport: int = 0  #: the port with no socket that the crafted ACK went to
    reconnect: list[tuple[tuple[str, int], int | None]] = field(default_factory=list)
    http: list[tuple[str, str, tuple[str, int]]] = field(default_factory=list)
    capture: CaptureSummary | None = None
    rows: list[Row] = field(default_factory=list)
    findings: Findings = field(default_factory=Findings)

    def finding(self, key: str) -> Observation | None:
        return self.findings.find(key)

    def problem(self) -> str:
        """Why this run does not tell the demo's story, or "" when it does."""
        return self.findings.problem()


def _ep(addr: tuple[str, int]) -> str:
    return f"{addr[0]}:{addr[1]}"


def run_tcp_demo(capture: bool = True, pcap: str | Path | None = None, out: Out = print,
                 capture_off_reason: str = "--no-capture") -> TcpDemoResult:
    path = Path(pcap) if pcap else default_capture_path(LAB)
    result = TcpDemoResult()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    result.server = listener.getsockname()
    offset = monotonic_offset()
    with Capture([result.server[1]], path, enabled=capture,
                 off_reason=capture_off_reason) as cap:
        if not cap.active:
            out(capture_off_line(cap.summary, LAB, capture_off_reason))
        with TcpStateTrace(result.server[1]) as trace:
            _part1(listener, result, out)
        listener.close()
        result.kernel = list(trace.transitions)
        result.trace_reason = trace.reason or ""
        cap.drain(rounds=1)
        _part2(result, cap, offset, out)
        _part3(result, cap, out)
        _part4(result, cap, out)
    result.capture = cap.summary
    if cap.active:
        result.rows = show_capture(cap.summary, out)
    result.findings.where = where_rows_of_run(result)
    print_state_table(WHERE_TITLE, result.findings.where, out)
    print_summary(LAB, result.findings, out)
    return result


def _add(result: TcpDemoResult, out: Out, *observations: Observation) -> None:
    for o in observations:
        result.findings.add(o)
    print_findings(observations, out)


def _capture_off(cap: Capture) -> str:
    return "" if cap.active else f"it needs the capture, which is off ({cap.summary.off_reason})"


def _wait_packet(cap: Capture, pred: Callable[[Decoded], bool], after: int = 0,
                 timeout: float = 2.0) -> int | None:
    """The number (as in the pcap) of the first captured packet after #`after` that `pred`
    accepts, waiting for it up to `timeout`; None when none came."""
    count = 0
    found: int | None = None

    def check(d: Decoded) -> bool:
        nonlocal count, found
        count += 1
        if count > after and pred(d):
            found = count
            return True
        return False

    return found if cap.wait_for(check, timeout) else None


def _packet(cap: Capture, number: int) -> Decoded:
    return cap.decoded()[number - 1]


def _tcp_from(sport: int, dport: int, flags: int = 0) -> Callable[[Decoded], bool]:
    """A segment from port `sport` to `dport` with all of `flags` set."""
    return lambda d: (d.tcp is not None and d.sport == sport and d.dport == dport
                      and d.tcp.flags & flags == flags)


# -- 1 and 2: the state machine, live -------------------------------------------------------------


def _part1(listener: socket.socket, result: TcpDemoResult, out: Out) -> None:
    out(f"1. A connection's life, step by step; the kernel's own view (TCP_INFO) after each "
        f"step. Server {_ep(result.server)}.")
    snaps = result.snapshots

    def snap(step: str, client: str, server: str) -> None:
        snaps.append((step, client, server))

    listener.listen(8)
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    snap("listen(); client socket created", tcp_info_state(client), tcp_info_state(listener))
    client.connect(result.server)
    conn, _ = listener.accept()
    result.client = client.getsockname()
    snap(f"connect() from {_ep(result.client)}; accept()", tcp_info_state(client),
         tcp_info_state(conn))
    client.sendall(b"hello")
    conn.recv(100)
    conn.sendall(b"HELLO")
    client.recv(100)
    snap("send 5 bytes each way", tcp_info_state(client), tcp_info_state(conn))
    client.shutdown(socket.SHUT_WR)
    eof = conn.recv(100)
    snap(f"client shutdown(SHUT_WR); server recv() → {eof!r}", tcp_info_state(client),
         tcp_info_state(conn))
    conn.close()
    _wait_readable(client)
    client_eof = client.recv(100)
    result.client_info_closed = tcp_info_state(client)
    snap(f"server close(); client recv() → {client_eof!r}", result.client_info_closed,
         "(closed by the application: no socket to ask)")
    client_ep, server_ep = _ep(result.client), _ep(result.server)
    tw = [e for e in entries(client_ep, server_ep) if e.state == "TIME_WAIT"]
    result.time_wait = tw[0] if tw else None
    server_left = _entries_until(server_ep, client_ep, lambda found: not found)
    client.close()
    out(indent(table(snaps, ("step", "client socket (TCP_INFO)", "server socket (TCP_INFO)"))))
    _add(result, out, *_close_findings(result, server_left))


def _entries_until(local: str, remote: str, done: Callable[[list[SocketEntry]], bool],
                   timeout: float = 1.0) -> list[SocketEntry]:
    """Re-read the kernel's table until `done(entries)` or `timeout`; the last reading."""
    deadline = time.monotonic() + timeout
    while True:
        found = entries(local, remote)
        if done(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.002)


def _close_findings(result: TcpDemoResult, server_left: list[SocketEntry]) -> list[Observation]:
    """TIME_WAIT from its own evidence: the client's 4-tuple in /proc/net/tcp (RFC 9293 3.6)."""
    tw = result.time_wait
    client_ep, server_ep = _ep(result.client), _ep(result.server)
    time_wait = observe(
        "tcp.time-wait", "the client closed first, so its kernel keeps the 4-tuple in TIME_WAIT "
        "(2*MSL, RFC 9293 3.6) to absorb stray segments", tw is not None and tw.st == 6,
        done="closed connection 1, the client first",
        seen=f"the client kernel's table holds {client_ep} → {server_ep} in TIME_WAIT, "
             f"{tw.timer_left:.0f} s to go" if tw else "",
        evidence=[Evidence("/proc/net/tcp", after=tw.describe())] if tw else [],
        why_not=f"/proc/net/tcp has no TIME_WAIT entry for {client_ep} → {server_ep}")
    handover = observe(
        "tcp.time-wait-no-socket", "the TIME_WAIT entry is not the client's socket: the socket "
        "itself reads CLOSED and the entry has no file", tw is not None and tw.inode == 0
        and result.client_info_closed == "CLOSED",
        seen="the client's socket reads CLOSED while an entry with no socket (inode 0) keeps "
             "its 4-tuple",
        evidence=[Evidence("client socket TCP_INFO", after=result.client_info_closed),
                  Evidence("TIME_WAIT entry inode", after=tw.inode if tw else None)],
        why_not=f"client socket TCP_INFO {result.client_info_closed}, TIME_WAIT entry "
                f"{tw.describe() if tw else 'none'}")
    gone = observe(
        "tcp.server-entry-gone", "the server's connection entry is gone once its FIN is "
        "acknowledged", not server_left,
        seen=f"no entry for {server_ep} → {client_ep} in the kernel's table",
        evidence=[Evidence(f"/proc/net/tcp entries {server_ep} → {client_ep}",
                           after=len(server_left))],
        why_not="still there: " + "; ".join(e.describe() for e in server_left))
    return [time_wait, handover, gone]


def _wait_readable(sock: socket.socket, timeout: float = 2.0) -> None:
    select.select([sock], [], [], timeout)


def _who(k: KernelTransition, client: str, server: str) -> str:
    """Whose socket a tracepoint line is about, from its addresses as recorded."""
    if k.remote.startswith("0.0.0.0"):
        return "listener"
    if k.local == client:
        return "client"
    if k.local.endswith(":0") and k.remote == server:
        return "client (sport=0)"  # connect() changes state before the kernel picks the port
    return "server" if k.local == server else k.local


def _kernel_of(kernel: Sequence[KernelTransition], role: str, client: str,
               server: str) -> list[KernelTransition]:
    """One endpoint's recorded transitions on connection 1 (not the listener's)."""
    if role == "client":
        return [k for k in kernel if _who(k, client, server).startswith("client")]
    return [k for k in kernel if k.local == server and k.remote == client]


#: Verified on Linux 6.18 (the tracepoint line and /proc/net/tcp read in the same run): entering
#: TIME_WAIT, tcp_time_wait() hands the 4-tuple to a separate timewait socket and tcp_done() sets
#: the full socket to TCP_CLOSE. The tracepoint fires for the full socket only.
TIME_WAIT_EXPLANATION = (
    "explanation: Linux hands the 4-tuple to a separate timewait socket and closes the full "
    "socket; the tracepoint records the full socket (FIN_WAIT_2→CLOSED) and has no event for the "
    "timewait socket. Observed here: the client's socket reads CLOSED (TCP_INFO) and "
    "/proc/net/tcp holds {entry}")


def compare(model: Sequence[Transition], kernel: Sequence[KernelTransition], client: str,
            server: str, time_wait: SocketEntry | None,
            client_info: str = "CLOSED") -> list[Compared]:
    """Model and kernel transitions per endpoint, side by side, the kernel's as recorded.

    The model's FIN_WAIT_2→TIME_WAIT and the record's FIN_WAIT_2→CLOSED differ; the row says so,
    and is EXPLAINED only when this run saw the TIME_WAIT entry in the kernel's table and the
    socket itself CLOSED."""
    rows = []
    for role, local in (("client", client), ("server", server)):
        mine = [f"{t.old.value}→{t.new.value}" for t in model if t.endpoint == local]
        theirs = [f"{k.old}→{k.new}" for k in _kernel_of(kernel, role, client, server)]
        for i in range(max(len(mine), len(theirs))):
            a = mine[i] if i < len(mine) else "-"
            b = theirs[i] if i < len(theirs) else "-"
            rows.append(_compared(role, a, b, time_wait, client_info))
    return rows


def _compared(role: str, model: str, kernel: str, time_wait: SocketEntry | None,
              client_info: str) -> Compared:
    if model == kernel:
        return Compared(role, model, kernel, Match.SAME)
    timewait_seen = time_wait is not None and time_wait.st == 6 and time_wait.inode == 0 \
        and client_info == "CLOSED"
    if role == "client" and model == "FIN_WAIT_2→TIME_WAIT" and kernel == "FIN_WAIT_2→CLOSED" \
            and timewait_seen:
        return Compared(role, model, kernel, Match.EXPLAINED,
                        TIME_WAIT_EXPLANATION.format(entry=time_wait.describe()))
    return Compared(role, model, kernel, Match.DIFFERS)


def _part2(result: TcpDemoResult, cap: Capture, offset: float, out: Out) -> None:
    client, server = _ep(result.client), _ep(result.server)
    observer = TcpObserver()
    events = []
    for n, d in enumerate(cap.decoded(), 1):
        if {d.endpoint("src"), d.endpoint("dst")} != {client, server}:
            continue
        view = observer.feed(d, n)
        result.model.extend(view.transitions)
        who = "client→server" if d.endpoint("src") == client else "server→client"
        flags = "/".join(d.tcp.flag_names())
        moves = ", ".join(f"{t.role.value} {t.old.value}→{t.new.value}" for t in view.transitions)
        events.append(TimelineEvent(d.time, f"#{n} {who} [{flags}] seq={view.rel_seq} "
                                             f"len={view.length}", moves))
    for k in result.kernel:
        events.append(TimelineEvent(k.time + offset, who=_who(k, client, server), kernel=k))
    events.sort(key=lambda e: e.time)
    result.timeline = events
    out("\n2. Timeline of connection 1: each packet, the transitions protolab's model derives "
        "from it, and the transitions the kernel recorded (tracepoint sock:inet_sock_set_state), "
        "as recorded")
    if events:
        t0 = events[0].time
        out(indent(table([(f"{(e.time - t0) * 1000:.3f}", e.packet, e.model, e.kernel_text())
                          for e in events],
                         ("ms", "packet", "model (from the packet)", "kernel (its own record)"),
                     widths=[None, 38, 32, 32])))
    _add(result, out, _kernel_record_finding(result))
    if result.kernel and result.model:
        result.comparison = compare(result.model, result.kernel, client, server,
                                    result.time_wait, result.client_info_closed)
        result.agree = all(c.match is not Match.DIFFERS for c in result.comparison)
        out(indent(table([(c.socket, c.model, c.kernel, c.match.value)
                          for c in result.comparison],
                         ("socket", "model (from packets)", "kernel (tracepoint, as recorded)",
                          "same?"))))
        for c in result.comparison:
            if c.why:
                out(f"   {c.socket} {c.model} vs {c.kernel}: {c.why}")
    _add(result, out, _comparison_finding(result, cap))


def _kernel_record_finding(result: TcpDemoResult) -> Observation:
    claim = "the kernel records each state change of connection 1 (sock:inet_sock_set_state)"
    if result.trace_reason:
        return explain("tcp.kernel-record", claim, f"the kernel's record is off: "
                       f"{result.trace_reason}")
    client, server = _ep(result.client), _ep(result.server)
    mine = {role: _kernel_of(result.kernel, role, client, server) for role in ("client", "server")}
    return observe(
        "tcp.kernel-record", claim, all(mine.values()),
        seen=f"{len(mine['client'])} client and {len(mine['server'])} server transitions, shown "
             f"as recorded",
        evidence=[Evidence("tracepoint lines", after=len(result.kernel))],
        why_not="the tracepoint recorded no transition for "
                + " and ".join(r for r, v in mine.items() if not v))


def _comparison_finding(result: TcpDemoResult, cap: Capture) -> Observation:
    claim = ("protolab's model, from the packets alone, gives the transitions the kernel "
             "recorded, or differs only where this run saw why")
    if result.trace_reason or not cap.active:
        why = f"the kernel's record is off: {result.trace_reason}" if result.trace_reason \
            else f"the model works from packets: {_capture_off(cap)}"
        return explain("tcp.model-vs-kernel", claim, why)
    counts = {m: sum(c.match is m for c in result.comparison) for m in Match}
    packets = tuple(sorted({t.packet for t in result.model}))
    return observe(
        "tcp.model-vs-kernel", claim, bool(result.comparison) and counts[Match.DIFFERS] == 0,
        seen=f"{counts[Match.SAME]} transitions the same; differing, each explained: "
             f"{counts[Match.EXPLAINED]}",
        evidence=[Evidence("model transitions", after=len(result.model), packets=packets),
                  Evidence("kernel transitions", after=len(result.kernel))],
        why_not=f"{counts[Match.DIFFERS]} transitions differ unexplained (DIFFERS above)"
        if result.comparison else "no transitions to compare")


# -- 3: lose the state, lose the connection --------------------------------------------------------


def _part3(result: TcpDemoResult, cap: Capture, out: Out) -> None:
    out("\n3. Lose the state, lose the connection")
    out("   (a) kill the server process mid-connection:")
    _add(result, out, *_kill_server(result, cap))
    with EchoServer() as echo:
        cap.add_port(echo.address[1])
        c = socket.create_connection(echo.address)
        peer = c.getsockname()
        c.sendall(b"hello")
        c.recv(100)
        echo.wait_received(peer, 5)
        out("   (b) forge a segment on the live connection, 16 MiB beyond what the server "
            "expects:")
        forged = _forge_out_of_window(result, cap, c, echo.address)
        c.sendall(b"after")
        c.recv(100)
        echo.wait_received(peer, 10)
        result.echo_received = echo.received.get(peer, b"")
        _add(result, out, *forged, _not_delivered(result, cap, forged[0], b"helloafter"))
        out("   (c) send an ACK to a port where no socket is:")
        _add(result, out, _ack_to_no_socket(result, cap))
        out("   (d) connect again from the same client:")
        c2 = socket.create_connection(echo.address)
        _add(result, out, *_reconnect(result, cap, c, c2, echo.address, out))
        c.close()
        c2.close()


@dataclass
class _Kill:
    """What killing the server mid-connection showed: exit status, reads, table entries, packets."""

    status: int | None = None
    eof: bytes = b""
    before: list = field(default_factory=list)  #: the server's entry before the kill
    orphan: list = field(default_factory=list)  #: ... after it (held by no process)
    gone: list = field(default_factory=list)  #: ... after the RST
    data: int | None = None  #: the client's next data segment
    rst: int | None = None  #: the RST answering it
    fin: int | None = None  #: the FIN the killed server's kernel sent


def _kill_server(result: TcpDemoResult, cap: Capture) -> list[Observation]:
    k = _Kill()
    with ServerProcess("protolab.net.echo_server") as server:
        port = server.port
        cap.add_port(port)
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(b"ping")
        c.recv(100)
        cport = c.getsockname()[1]
        sep, cep = f"127.0.0.1:{port}", _ep(c.getsockname())
        k.before = entries(sep, cep)
        result.killed_pid = server.pid
        k.status = server.kill()
        _wait_readable(c)
        k.eof = c.recv(100)
        k.orphan = entries(sep, cep)
        _after_the_kill(result, cap, c, port, cport, k)
        k.gone = entries(sep, cep)
        c.close()
    k.fin = _wait_packet(cap, _tcp_from(port, cport, FIN), timeout=0.2) if cap.active else None
    return _kill_findings(result, cap, k)


def _after_the_kill(result: TcpDemoResult, cap: Capture, c: socket.socket, port: int,
                    cport: int, k: _Kill) -> None:
    """The client sends on: its data, the RST it gets, and the error its next call raises."""
    after_fin = len(cap.decoded()) if cap.active else 0
    c.sendall(b"anyone there?")
    k.data = _wait_packet(cap, lambda d: _tcp_from(cport, port)(d) and bool(d.payload),
                          after=after_fin) if cap.active else None
    k.rst = _wait_packet(cap, _tcp_from(port, cport, RST), after=k.data or 0) if k.data \
        else None
    _wait_readable(c)
    try:
        c.sendall(b"hello?")
        c.recv(100)
        result.kill_client_error = "no error"
    except OSError as exc:
        result.kill_client_error = type(exc).__name__


def _kill_findings(result: TcpDemoResult, cap: Capture, k: _Kill) -> list[Observation]:
    status, eof, before, orphan, gone = k.status, k.eof, k.before, k.orphan, k.gone
    data, rst, fin = k.data, k.rst, k.fin
    pid = Evidence("server pid", before=result.killed_pid, after=f"exited {status}")
    done = f"killed the server process (pid {result.killed_pid}, SIGKILL)"
    fin_obs = observe(
        "tcp.killed.fin", "killing the server process makes its kernel close the connection: "
        "the client reads end of file", status is not None and eof == b""
        and (fin is not None or not cap.active), done=done,
        seen="the server's kernel closed the connection (FIN); the client read b''",
        evidence=[pid, Evidence("client recv()", after=repr(eof)),
                  *([Evidence("FIN", packets=(fin,))] if fin else [])],
        why_not=f"exit status {status}, client read {eof!r}, FIN packet "
                f"{'#' + str(fin) if fin else 'not captured'}")
    orphan_obs = observe(
        "tcp.killed.entry-outlives-process", "the connection entry is the kernel's: it outlives "
        "the process, held by no file (inode 0)", bool(before) and bool(orphan)
        and all(e.inode == 0 for e in orphan),
        seen=f"the server's entry after the kill: {orphan[0].state}, inode 0" if orphan else "",
        evidence=[Evidence("/proc/net/tcp", before=before[0].describe() if before else "none",
                           after=orphan[0].describe() if orphan else "none")],
        why_not=f"/proc/net/tcp before the kill: {len(before)} entries, after: "
                + ("; ".join(e.describe() for e in orphan) or "none"))
    if cap.active:
        rst_obs = observe(
            "tcp.killed.rst", "the client's next data is answered with RST: the entry is gone "
            "with the RST (RFC 9293 3.10.7.4)", data is not None and rst is not None and not gone,
            seen=f"data #{data} answered by RST #{rst} from the server's port; no entry left",
            evidence=[Evidence("packets", packets=tuple(p for p in (data, rst) if p)),
                      Evidence("/proc/net/tcp entries after", after=len(gone))],
            why_not=f"data {'#' + str(data) if data else 'not captured'}, RST "
                    f"{'#' + str(rst) if rst else 'not captured'}, {len(gone)} entries left")
    else:
        rst_obs = explain("tcp.killed.rst", "the client's next data is answered with RST",
                          _capture_off(cap))
    error = observe(
        "tcp.killed.error", "the client learns of it at its next call: an error, not data",
        result.kill_client_error in ("BrokenPipeError", "ConnectionResetError"),
        seen=f"the client's next call raised {result.kill_client_error}",
        evidence=[Evidence("client's next send()/recv()", after=result.kill_client_error)],
        why_not=f"the client's next call: {result.kill_client_error}")
    return [fin_obs, orphan_obs, rst_obs, error]


def _send_forged(packet: bytes) -> None:
    """Put the forged segment on the wire (tests replace this to take the observation away)."""
    raw_send(packet)


def _raw_denied(cap: Capture) -> str:
    """Why this run cannot craft segments, or ""."""
    denied = capture_denied_reason()
    if denied:
        return f"crafting a segment needs raw sockets: {denied}"
    return _capture_off(cap)


def _forge_out_of_window(result: TcpDemoResult, cap: Capture, c: socket.socket,
                         server: tuple[str, int]) -> list[Observation]:
    claim = ("a segment far outside the receive window is answered with an ACK of what the "
             "server's kernel really expects (RFC 9293 3.10.7.4)")
    if _raw_denied(cap):
        return [explain("tcp.forged.ack", claim, _raw_denied(cap))]
    from scapy.layers.inet import IP, TCP

    local = c.getsockname()
    flow = connection_state(cap, local, server)
    expected = flow.client.snd_nxt  # the server's RCV.NXT
    seq = (expected + FORGE_OFFSET) & 0xFFFFFFFF
    forged = IP(src=local[0], dst=server[0]) / TCP(
        sport=local[1], dport=server[1], flags="PA", seq=seq, ack=flow.client.rcv_nxt,
        window=65535) / b"FORGED"
    before = len(cap.decoded())
    _send_forged(bytes(forged))
    sent = _wait_packet(cap, lambda d: _tcp_from(local[1], server[1])(d) and d.tcp.seq == seq,
                        after=before)
    result.forged_sent = sent is not None  # seen on the wire, not merely handed to the kernel
    reply = _wait_packet(cap, _tcp_from(server[1], local[1]), after=sent, timeout=0.5) \
        if sent else None
    answer = _packet(cap, reply).tcp if reply else None
    result.forged_reply = "/".join(answer.flag_names()) if answer else "nothing"
    isn = flow.client.isn or 0
    rel = (seq - isn) & 0xFFFFFFFF
    ok = answer is not None and answer.flags & (SYN | FIN | RST | ACK) == ACK \
        and answer.ack == expected
    return [observe(
        "tcp.forged.ack", claim, ok, done=f"sent seq {rel} (relative; the server expects "
                                          f"{(expected - isn) & 0xFFFFFFFF})",
        seen=f"the server's kernel answered [{result.forged_reply}] ack="
             f"{((answer.ack if answer else 0) - isn) & 0xFFFFFFFF}: what it really expects",
        evidence=[Evidence("packets", packets=tuple(p for p in (sent, reply) if p))],
        why_not=f"forged segment {'#' + str(sent) if sent else 'not seen on the wire'}; "
                f"answer: {result.forged_reply}")]


def _not_delivered(result: TcpDemoResult, cap: Capture, forged: Observation,
                   sent: bytes) -> Observation:
    claim = "the forged bytes never reach the server application"
    if forged.status is Status.NOT_TRIED:
        return explain("tcp.forged.not-delivered", claim, forged.why)
    on_wire = next((e.packets[0] for e in forged.evidence if e.packets), None)
    got = result.echo_received
    return observe(
        "tcp.forged.not-delivered", claim, on_wire is not None and got == sent,
        seen=f"the application was given exactly {got!r}: what the client's application sent",
        evidence=[Evidence("forged segment", packets=(on_wire,) if on_wire else ()),
                  Evidence("bytes the client application sent", after=repr(sent)),
                  Evidence("bytes the server application received", after=repr(got))],
        why_not="the forged segment was not seen on the wire, so nothing was tested"
        if on_wire is None else f"the application received {got!r}")


def _ack_to_no_socket(result: TcpDemoResult, cap: Capture) -> Observation:
    claim = "a segment to a port with no socket is answered with RST: no entry, no connection " \
            "(RFC 9293 3.10.7.1)"
    if _raw_denied(cap):
        return explain("tcp.no-socket.rst", claim, _raw_denied(cap))
    from scapy.layers.inet import IP, TCP

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    result.noport = port
    cap.add_port(port)
    there = [e for e in socket_table("tcp") if e.local.endswith(f":{port}")]
    before = len(cap.decoded())
    raw_send(bytes(IP(src="127.0.0.1", dst="127.0.0.1") / TCP(
        sport=40404, dport=port, flags="A", seq=1000, ack=5000)))
    ack = _wait_packet(cap, _tcp_from(40404, port, ACK), after=before)
    rst = _wait_packet(cap, _tcp_from(port, 40404, RST), after=ack) if ack else None
    return observe(
        "tcp.no-socket.rst", claim, not there and ack is not None and rst is not None,
        done=f"sent an ACK to port {port}",
        seen=f"RST from port {port}",
        evidence=[Evidence(f"/proc/net/tcp entries on port {port}", after=len(there)),
                  Evidence("packets", packets=tuple(p for p in (ack, rst) if p))],
        why_not=f"{len(there)} entries on the port; ACK "
                f"{'#' + str(ack) if ack else 'not seen'}, RST {'#' + str(rst) if rst else 'none'}")


def _reconnect(result: TcpDemoResult, cap: Capture, c1: socket.socket, c2: socket.socket,
               server: tuple[str, int], out: Out) -> list[Observation]:
    syns: dict[int, tuple[int, int]] = {}  # client port -> (packet, ISN)
    if cap.active:
        cap.drain(rounds=1)
        for n, d in enumerate(cap.decoded(), 1):
            if d.tcp is not None and d.tcp.flags & (SYN | ACK) == SYN and d.dport == server[1]:
                syns[d.sport] = (n, d.tcp.seq)
    rows = []
    for s in (c1, c2):
        local = s.getsockname()
        isn = syns.get(local[1], (0, None))[1]
        result.reconnect.append((local, isn))
        rows.append((f"{_ep(local)} → {_ep(server)}", isn if isn is not None else "(capture off)"))
    out(indent(table(rows, ("4-tuple (the key of the state)", "client ISN")), 7))
    (a, isn_a), (b, isn_b) = result.reconnect
    table_now = [e for e in socket_table("tcp") if e.remote == _ep(server)]
    held = {e.local for e in table_now}
    tuples = observe(
        "tcp.reconnect.four-tuple", "connecting again makes a new connection: a new 4-tuple, "
        "with its own entry in the client's kernel", a != b and {_ep(a), _ep(b)} <= held,
        seen=f"source port {a[1]} then {b[1]}; both entries in the client kernel's table",
        evidence=[Evidence(f"/proc/net/tcp entries towards {_ep(server)}",
                           after=", ".join(f"{e.local} {e.state}" for e in table_now))],
        why_not=f"4-tuples {_ep(a)}, {_ep(b)}; entries held: {sorted(held)}")
    claim = "the new connection starts from a new initial sequence number (RFC 9293 3.4.1)"
    if not cap.active:
        return [tuples, explain("tcp.reconnect.isn", claim, _capture_off(cap))]
    packets = tuple(syns[p][0] for p in (a[1], b[1]) if p in syns)
    isn = observe(
        "tcp.reconnect.isn", claim, None not in (isn_a, isn_b) and isn_a != isn_b,
        seen=f"ISN {isn_a}, then {isn_b}",
        evidence=[Evidence("SYN", packets=packets)],
        why_not=f"ISNs {isn_a}, {isn_b}")
    return [tuples, isn]


# -- 4: HTTP is stateless over stateful TCP --------------------------------------------------------


def _part4(result: TcpDemoResult, cap: Capture, out: Out) -> None:
    out("\n4. HTTP on top of TCP: two requests, the second to the link the first answer gave")
    headers_seen = []
    with StatelessHttpServer() as http:
        cap.add_port(http.address[1])
        path = "/cart?add=apple"
        for add in ("pear", None):
            status, headers, body, local = http_get(http.address, path)
            result.http.append((path, body, local))
            headers_seen.append(headers.get("connection", "(none)"))
            out(f"   GET {path} from {_ep(local)} → {status}, Connection: "
                f"{headers.get('connection')}; {body.splitlines()[0]}")
            next_path = body.split("next: ", 1)[1].strip()
            path = f"{next_path}&add={add}" if add else next_path
        port = http.address[1]
    _add(result, out, *_http_findings(result, cap, port, headers_seen))


def _http_findings(result: TcpDemoResult, cap: Capture, port: int,
                   headers: list[str]) -> list[Observation]:
    ports = [local[1] for _, _, local in result.http]
    fins = [_wait_packet(cap, _tcp_from(port, p, FIN), timeout=0.5) for p in ports] \
        if cap.active else []
    closes = observe(
        "tcp.http.server-closes", "the server closes the TCP connection after each response "
        "(Connection: close; RFC 9112 9.6)",
        all(h == "close" for h in headers) and (not cap.active or None not in fins),
        seen="each response said Connection: close and the client read to end of file",
        evidence=[Evidence("Connection headers", after=", ".join(headers)),
                  *([Evidence("server FIN", packets=tuple(fins))] if cap.active else [])],
        why_not=f"Connection headers {headers}; server FINs "
                f"{[('#' + str(f)) if f else 'not captured' for f in fins]}")
    new = observe(
        "tcp.http.new-connection", "each request travels on its own TCP connection",
        len(ports) == 2 and len(set(ports)) == len(ports),
        seen=f"client ports {', '.join(map(str, ports))}: a new 4-tuple each time",
        evidence=[Evidence("client ports", after=", ".join(map(str, ports)))],
        why_not=f"client ports {ports}")
    last_path, last_body, _ = result.http[-1] if result.http else ("", "", None)
    cart = last_body.splitlines()[0] if last_body else ""
    carried = observe(
        "tcp.http.state-in-request", "the cart travelled in the request: a new connection "
        "carried it to a server that keeps nothing", cart == "cart: apple, pear",
        seen=f"workflow continued: GET {last_path} on a new connection was answered {cart!r}",
        evidence=[Evidence("request", after=last_path), Evidence("answer", after=cart)],
        why_not=f"the second answer was {cart!r}")
    return [closes, new, carried]


# -- the closing table, built from this run -------------------------------------------------------


def _compose(key: str, claim: str, parts: Iterable[Observation]) -> Observation:
    """One where-row outcome from the run's findings: NOT OBSERVED when any part was not; the
    observed parts' evidence otherwise; an explanation when no part could be tried."""
    parts = list(parts)
    failed = [p for p in parts if p.failed]
    seen = [p for p in parts if p.observed]
    if failed:
        return observe(key, claim, False, why_not="; ".join(f"{p.key}: {p.why}" for p in failed))
    if not seen:
        return explain(key, claim, "; ".join(p.why for p in parts))
    untried = [p for p in parts if p.status is Status.NOT_TRIED]
    note = f" (not tried here: {'; '.join(p.claim for p in untried)})" if untried else ""
    return observe(key, claim, True, seen="; ".join(p.seen for p in seen) + note,
                   evidence=[e for p in seen for e in p.evidence])


def where_rows_of_run(result: TcpDemoResult) -> list[StateRow]:
    """The "where state lives" rows: each state this run disrupted, and what happened."""
    get = result.finding

    def parts(*keys: str) -> list[Observation]:
        return [o for o in (get(k) for k in keys) if o is not None]

    forged = get("tcp.forged.ack")
    forged_at = packet_list(forged.evidence[0].packets[:1]) if forged and forged.observed else ""
    ports = ", ".join(str(local[1]) for local, _ in result.reconnect)
    return [
        StateRow("the socket (file descriptor)", "the server process",
                 f"killed the server process (pid {result.killed_pid}) mid-connection",
                 _compose("tcp.where.socket", "losing the socket closes the connection; the "
                          "client's next data gets RST",
                          parts("tcp.killed.fin", "tcp.killed.rst", "tcp.killed.error"))),
        StateRow("connection entry: state, sequence numbers (RCV.NXT), window",
                 "each kernel, keyed by the 4-tuple; not the process",
                 "killed the server process" + (f"; sent a segment 16 MiB out of window "
                                                 f"{forged_at}" if result.forged_sent else ""),
                 _compose("tcp.where.entry", "the kernel holds the entry and checks every "
                          "segment against it",
                          parts("tcp.killed.entry-outlives-process", "tcp.forged.ack",
                                "tcp.forged.not-delivered"))),
        StateRow("no entry at all", "nobody: no socket on that port",
                 f"sent an ACK to port {result.noport or '(a free port)'}",
                 _compose("tcp.where.no-socket", "no entry, no connection: RST",
                          parts("tcp.no-socket.rst"))),
        StateRow("the 4-tuple and ISN: the key of each entry", "both kernels",
                 f"connected again (client ports {ports})",
                 _compose("tcp.where.four-tuple", "a reconnect is a new connection",
                          parts("tcp.reconnect.four-tuple", "tcp.reconnect.isn"))),
        StateRow("TIME_WAIT entry (the 4-tuple, 2*MSL)",
                 "the kernel of the side that closed first; no socket",
                 "closed connection 1, the client first",
                 _compose("tcp.where.time-wait", "the 4-tuple stays in the kernel's table",
                          parts("tcp.time-wait", "tcp.time-wait-no-socket"))),
        StateRow("the request's meaning (URL: the cart)", "the HTTP message, in the packets",
                 "the server closed the TCP connection after each response",
                 _compose("tcp.where.request", "the next request carries the state itself",
                          parts("tcp.http.server-closes", "tcp.http.new-connection",
                                "tcp.http.state-in-request"))),
    ]


def where_from_capture(rows: Sequence[Row]) -> list[StateRow]:
    """The same rows, filled from a capture: packet numbers where the packets show it (via
    `protolab.analysis.story_checks`), "live run only" where only the kernel or the processes can
    show it."""
    from protolab.analysis.story_checks import check

    found = {f.step.key: f.packets for f in check(LAB, rows)}

    def shown(key: str, step: str, claim: str, seen: Callable[[tuple[int, ...]], str]) -> \
            Observation:
        p = tuple(found.get(step, ()))
        return observe(key, claim, bool(p), seen=seen(p) if p else "",
                       evidence=[Evidence("packets", packets=p)] if p else [],
                       why_not=f"the capture does not show it (story step {step!r})")

    def live(key: str, claim: str, where: str) -> Observation:
        return explain(key, claim, f"{where}: a capture does not hold it", Status.LIVE_ONLY)

    return [
        StateRow("the socket (file descriptor)", "the server process",
                 "the server process was killed mid-connection (its PID: live run only)",
                 shown("tcp.where.socket", "killed", "losing the socket closes the connection; "
                       "the client's next data gets RST",
                       lambda p: f"FIN {packet_list(p[:1])}; data {packet_list(p[1:2])} "
                                 f"answered by RST {packet_list(p[2:3])}")),
        StateRow("connection entry: state, sequence numbers (RCV.NXT), window",
                 "each kernel, keyed by the 4-tuple", "a segment far out of window was sent",
                 shown("tcp.where.entry", "forged", "a segment outside the window is answered "
                       "with an ACK of what the kernel expects",
                       lambda p: f"{packet_list(p[:1])} answered by ACK {packet_list(p[1:2])}")),
        StateRow("what the server application received", "the server process",
                 "a segment far out of window was sent",
                 live("tcp.where.app-received", "the forged bytes never reach the application",
                      "the application's own buffer")),
        StateRow("no entry at all", "nobody: no socket on that port",
                 "an ACK was sent to a port with no socket",
                 shown("tcp.where.no-socket", "no-socket", "answered with RST",
                       lambda p: f"ACK {packet_list(p[:1])} answered by RST "
                                 f"{packet_list(p[1:2])}")),
        StateRow("the 4-tuple and ISN: the key of each entry", "both kernels",
                 "the client connected again",
                 shown("tcp.where.four-tuple", "reconnect", "a reconnect is a new connection",
                       lambda p: f"a new handshake from a new source port: SYN "
                                 f"{packet_list(p)}")),
        StateRow("TIME_WAIT entry (the 4-tuple, 2*MSL)", "the kernel that closed first",
                 "connection 1 was closed, the client first",
                 live("tcp.where.time-wait", "the 4-tuple stays in the client kernel's table",
                      "the kernel's table (/proc/net/tcp)")),
        StateRow("each transition as the kernel records it", "both kernels",
                 "connection 1 opened and closed",
                 live("tcp.where.kernel-record", "the kernel's own record of every transition",
                      "the tracepoint sock:inet_sock_set_state and TCP_INFO (root)")),
        StateRow("the request's meaning (URL: the cart)", "the HTTP message, in the packets",
                 "the server closed the TCP connection after each response",
                 shown("tcp.where.request", "http", "each request on its own connection "
                       "carries the state itself",
                       lambda p: f"requests {packet_list(p)}, each on its own connection")),
    ]


run = run_tcp_demo  #: the registry's entry point (protolab.labs.DEMOS)
