"""What `tcp-demo --hosts` observed: the timeline of connection 1 and every finding, built after
the capture is written (packet numbers are the pcapng's), from each host's table readings, the
tracepoint's record and the packets at client:eth0 and server:eth0."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from protolab.analysis.observe import (
    Evidence,
    Observation,
    StateRow,
    explain,
    observe,
    packet_list,
)
from protolab.labs import tcp
from protolab.labs.output import indent, print_findings, table
from protolab.labs.tcp_hosts import STEPS, TABLES, HostsResult, Reading
from protolab.protocols.tcp import RST, TcpObserver
from protolab.wire.kernel_view import monotonic_offset
from protolab.wire.packets import Decoded, decode

Out = Callable[[str], None]
CLIENT_POINT, SERVER_POINT = "client:eth0", "server:eth0"
LOOPBACK_RUN = ("not run across hosts: this run covers parts 1, 3a and 3c of the lab; "
                "`protolab tcp-demo` (loopback) shows it")


@dataclass(frozen=True)
class Event:
    """One line of the timeline: a packet at a point, a tracepoint line or a table reading."""

    time: float  #: epoch seconds
    where: str  #: the capture point, "tracepoint", or "table: STEP"
    what: str = ""  #: the packet and the model's transitions from it
    client: str = ""  #: the client host's kernel: its record or its table
    server: str = ""  #: the server host's kernel


def packets(result: HostsResult) -> list[Decoded]:
    """The written capture, decoded, in file order (packet number = index + 1)."""
    summary = result.capture
    if summary is None or summary.off_reason:
        return []
    return [decode(r.data, r.linktype, r.time, r.orig_len, r.interface)
            for r in summary.records]


def numbers(decoded: list[Decoded], point: str, pred: Callable[[Decoded], bool]) -> list[int]:
    return [n for n, d in enumerate(decoded, 1)
            if d.interface == point and d.tcp is not None and pred(d)]


def _seg(src: str, dst: str, flags: int = 0, data: bool = False) -> Callable[[Decoded], bool]:
    return lambda d: (d.endpoint("src") == src and d.endpoint("dst") == dst
                      and d.tcp.flags & flags == flags and (bool(d.payload) or not data))


def timeline(result: HostsResult, decoded: list[Decoded]) -> list[Event]:
    client, server = tcp._ep(result.client), tcp._ep(result.server)
    observer = TcpObserver()
    events = []
    for n, d in enumerate(decoded, 1):
        if d.tcp is None or {d.endpoint("src"), d.endpoint("dst")} != {client, server}:
            continue
        moves = ""
        if d.interface == CLIENT_POINT:  # each packet passes here once: the model's input
            view = observer.feed(d, n)
            result.model.extend(view.transitions)
            moves = "; model: " + ", ".join(f"{t.role.value} {t.old.value}→{t.new.value}"
                                            for t in view.transitions) if view.transitions else ""
        who = "client→server" if d.endpoint("src") == client else "server→client"
        events.append(Event(d.time, d.interface,
                            f"#{n} {who} [{'/'.join(d.tcp.flag_names())}]{moves}"))
    offset = monotonic_offset()
    for k in result.kernel:
        who = tcp._who(k, client, server)
        text = f"tracepoint {k.old}→{k.new}"
        events.append(Event(k.time + offset, "tracepoint (machine-wide)",
                            client=text if who.startswith("client") else "",
                            server=text if not who.startswith("client") else ""))
    for step in STEPS:
        c, s = result.read(step, "client"), result.read(step, "server")
        if c and s:
            events.append(Event(c.time, f"tables after: {step}", client=c.text(),
                                server=s.text()))
    return sorted(events, key=lambda e: e.time)


def report(result: HostsResult, captured: bool, out: Out) -> None:
    decoded = packets(result)
    events = result.timeline = timeline(result, decoded)
    out("\n2. Timeline of connection 1: each packet at each end (client:eth0, server:eth0), the "
        "model's transitions from it, the kernel's record, and each host's table as read inside "
        "it")
    if events:
        t0 = events[0].time
        out(indent(table([(f"{(e.time - t0) * 1000:.3f}", e.where, e.what, e.client, e.server)
                          for e in events],
                         ("ms", "seen at", "packet", "client host's kernel",
                          "server host's kernel"), [None, 16, 40, 30, 30])))
    client, server = tcp._ep(result.client), tcp._ep(result.server)
    if result.kernel and result.model:
        result.comparison = tcp.compare(result.model, result.kernel, client, server,
                                        result.time_wait, result.client_info_closed)
    out("\nWhat this run observed, host by host:")
    found = [*_life_findings(result), tcp._kernel_record_finding(result),
             *_kill_findings(result, decoded, captured),
             _no_socket_finding(result, decoded, captured), *_not_across()]
    found.insert(4, _comparison(result, captured))
    for o in found:
        result.findings.add(o)
    print_findings(found, out)


def _rows(reading: Reading | None) -> str:
    return reading.text() if reading else "(not read)"


def _entry(result: HostsResult, step: str, host: str, local: str, state: str) -> Observation:
    """Host `host`'s own table holds `local`'s entry in `state`; the other tables do not."""
    mine = result.read(step, host)
    others = [r for r in (result.read(step, h) for h in TABLES if h != host) if r]
    held = [e for e in (mine.rows if mine else ()) if e.local == local and e.state == state]
    elsewhere = [e for r in others for e in r.rows if e.local == local]
    return observe(
        f"tcp.hosts.{host}-{state.lower().replace('_', '-')}",
        f"the {host}'s end of the connection is an entry in the {host} host's own table "
        f"({state}); no other kernel holds it", bool(held) and not elsewhere and len(others) == 2,
        done=step, seen=f"{held[0].describe()} in the {host} host's table only" if held else "",
        evidence=[Evidence(f"{r.host} table ({'this machine' if r.host == 'root' else r.host})",
                           after=r.text()) for r in (mine, *others) if r],
        why_not=f"{host} table: {_rows(mine)}; "
                + "; ".join(f"{r.host} table: {r.text()}" for r in others))


def _life_findings(result: HostsResult) -> list[Observation]:
    client, server = tcp._ep(result.client), tcp._ep(result.server)
    tw = result.time_wait
    time_wait = _entry(result, STEPS[4], "client", client, "TIME_WAIT")
    handover = observe(
        "tcp.time-wait-no-socket", "the TIME_WAIT entry is not the client's socket: the socket "
        "reads CLOSED and the entry has no file (inode 0)",
        tw is not None and tw.inode == 0 and result.client_info_closed == "CLOSED",
        seen="the client's socket reads CLOSED while an entry with no socket keeps its 4-tuple",
        evidence=[Evidence("client socket TCP_INFO", after=result.client_info_closed),
                  Evidence("TIME_WAIT entry inode", after=tw.inode if tw else None)],
        why_not=f"TCP_INFO {result.client_info_closed}, entry {tw.describe() if tw else 'none'}")
    gone = result.read(STEPS[3], "server")
    server_gone = observe(
        "tcp.server-entry-gone", "the server's entry is gone from the server host's table once "
        "its FIN is acknowledged", gone is not None and not gone.rows,
        seen="no entry in the server host's table", evidence=[
            Evidence("server table", after=_rows(gone))], why_not=f"server table: {_rows(gone)}")
    return [_entry(result, STEPS[1], "client", client, "ESTABLISHED"),
            _entry(result, STEPS[1], "server", server, "ESTABLISHED"),
            time_wait, handover, server_gone]


def _comparison(result: HostsResult, captured: bool) -> Observation:
    claim = ("protolab's model, from the packets at client:eth0, gives the transitions the "
             "kernel recorded, or differs only where this run saw why")
    if result.trace_reason or not captured:
        return explain("tcp.model-vs-kernel", claim, result.trace_reason or "the capture is off")
    differ = [c for c in result.comparison if c.match is tcp.Match.DIFFERS]
    return observe(
        "tcp.model-vs-kernel", claim, bool(result.comparison) and not differ,
        seen=f"{len(result.comparison) - len(differ)} transitions compared, none differing "
             f"unexplained", evidence=[Evidence("model transitions", after=len(result.model)),
                                       Evidence("kernel transitions", after=len(result.kernel))],
        why_not="; ".join(f"{c.socket} {c.model} vs {c.kernel}" for c in differ)
        or "no transitions to compare")


def _kill_findings(result: HostsResult, decoded: list[Decoded],
                   captured: bool) -> list[Observation]:
    k = result.killed
    after = result.read("after the kill", "server")
    orphan = [e for e in (after.rows if after else ()) if e.local == k.server]
    held = observe(
        "tcp.hosts.killed.entry", "the killed process's connection entry stays in the server "
        "host's kernel, held by no file (inode 0)", bool(orphan) and orphan[0].inode == 0,
        done=f"killed the server process (pid {k.pid}) in the server host",
        seen=f"server host's table: {orphan[0].describe()}" if orphan else "",
        evidence=[Evidence("server table", before=_rows(result.read("before the kill",
                                                                     "server")),
                           after=_rows(after))], why_not=f"server table: {_rows(after)}")
    peer = _entry(result, "after the kill", "client", k.client, "CLOSE_WAIT")
    claim = "the client's next data is answered with RST by the server's kernel, and the " \
            "server's entry is gone (RFC 9293 3.10.7.4)"
    if not captured:
        return [held, peer, explain("tcp.hosts.killed.rst", claim, "the capture is off")]
    data = numbers(decoded, SERVER_POINT, _seg(k.client, k.server, data=True))
    rst = numbers(decoded, SERVER_POINT, _seg(k.server, k.client, RST))
    rst_in = numbers(decoded, CLIENT_POINT, _seg(k.server, k.client, RST))
    gone = result.read("after the next data", "server")
    rst_obs = observe(
        "tcp.hosts.killed.rst", claim, bool(data and rst and rst_in) and gone is not None
        and not gone.rows and k.error in ("BrokenPipeError", "ConnectionResetError"),
        seen=f"data {packet_list(data[-1:])} at server:eth0, RST sent there "
             f"{packet_list(rst[:1])} and received at client:eth0 "
             f"{packet_list(rst_in[:1])}; the client's next call raised {k.error}",
        evidence=[Evidence("packets", packets=(*data[-1:], *rst[:1], *rst_in[:1])),
                  Evidence("server table", after=_rows(gone))],
        why_not=f"data {data}, RST {rst}/{rst_in}, server table {_rows(gone)}, client {k.error}")
    return [held, peer, rst_obs]


def _no_socket_finding(result: HostsResult, decoded: list[Decoded],
                       captured: bool) -> Observation:
    claim = "a segment to a port with no socket is answered with RST by the server host's " \
            "kernel: no entry, no connection (RFC 9293 3.10.7.1)"
    if not captured:
        return explain("tcp.no-socket.rst", claim, "it is seen in the capture, which is off")
    port, src = result.noport, f"{result.client[0]}:40404"
    dst = f"{result.server[0]}:{port}"
    table_then = result.read("the ACK to no socket", "server")
    ack = numbers(decoded, SERVER_POINT, _seg(src, dst))
    rst = numbers(decoded, CLIENT_POINT, _seg(dst, src, RST))
    return observe(
        "tcp.no-socket.rst", claim, bool(ack and rst) and table_then is not None
        and not table_then.rows, done=f"sent an ACK to port {port} from the client host",
        seen=f"ACK {packet_list(ack[:1])} at server:eth0, RST {packet_list(rst[:1])} "
             f"back at client:eth0",
        evidence=[Evidence(f"server table, port {port}", after=_rows(table_then)),
                  Evidence("packets", packets=(*ack[:1], *rst[:1]))],
        why_not=f"ACK {ack}, RST {rst}, server table {_rows(table_then)}")


def _not_across() -> list[Observation]:
    return [explain("tcp.forged.ack", "a segment far outside the window is answered with an "
                    "ACK of what the kernel expects", LOOPBACK_RUN),
            explain("tcp.reconnect.four-tuple", "a reconnect is a new 4-tuple with a new ISN",
                    LOOPBACK_RUN),
            explain("tcp.http.state-in-request", "HTTP requests carry their own state over new "
                    "connections", LOOPBACK_RUN)]


def where_rows(result: HostsResult) -> list[StateRow]:
    get = result.finding

    def parts(*keys: str) -> list[Observation]:
        return [o for o in (get(k) for k in keys) if o is not None]

    return [
        StateRow("connection entry: state, sequence numbers", "each host's kernel, in its own "
                 "table (namespace)", "opened connection 1 between the hosts; killed the server "
                 "process", tcp._compose("tcp.where.entry", "each kernel holds its own end; "
                                         "the entry outlives the process",
                                         parts("tcp.hosts.client-established",
                                               "tcp.hosts.server-established",
                                               "tcp.hosts.killed.entry",
                                               "tcp.hosts.client-close-wait"))),
        StateRow("the socket (file descriptor)", "the server process", "killed it "
                 f"(pid {result.killed.pid})", tcp._compose(
                     "tcp.where.socket", "losing the socket closes the connection; the next "
                     "data gets RST", parts("tcp.hosts.killed.rst"))),
        StateRow("TIME_WAIT entry (the 4-tuple, 2*MSL)", "the client host's kernel only; no "
                 "socket", "closed connection 1, the client first", tcp._compose(
                     "tcp.where.time-wait", "the 4-tuple stays in the client host's table",
                     parts("tcp.hosts.client-time-wait", "tcp.time-wait-no-socket"))),
        StateRow("no entry at all", "nobody: no socket on that port", "sent an ACK to port "
                 f"{result.noport or '(a free port)'}", tcp._compose(
                     "tcp.where.no-socket", "no entry, no connection: RST",
                     parts("tcp.no-socket.rst"))),
        StateRow("each transition as the kernel records it", "each host's kernel; one "
                 "machine-wide tracepoint", "connection 1 opened and closed", tcp._compose(
                     "tcp.where.kernel-record", "the model and the kernel's record agree",
                     parts("tcp.kernel-record", "tcp.model-vs-kernel"))),
        StateRow("window, ISN, the request's meaning", "see `protolab tcp-demo`",
                 "(not run across hosts)", explain("tcp.where.loopback-only", "shown by the "
                                                   "loopback run", LOOPBACK_RUN)),
    ]

