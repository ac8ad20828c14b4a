"""`protolab udp-demo`: UDP keeps nothing, so a restarted server loses nothing.

Where state lives: the server's kernel holds one port binding and nothing per peer; the client
carries the workflow's state (sequence number, running total) in every datagram; the server's own
memory holds a count that a restart wipes. The litmus test restarts the server process between two
requests and checks that the workflow goes on.

Every finding this demo prints is an `Observation` built from what this run did and saw: the
entries of /proc/net/udp, the PIDs of the server processes (from the process handles and from the
`pid=` the processes put in their replies), the replies' `total=` and `seen=`, what each socket
call returned or raised, the fault proxy's decisions, and packet numbers in this run's capture.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
from protolab.net.fault_proxy import UdpFaultProxy
from protolab.net.processes import ServerProcess, restartable_port
from protolab.protocols.counter import CounterClient, Reply, parse_reply
from protolab.protocols.faults import (
    Decision,
    Direction,
    Fate,
    FaultPlan,
    fault_line,
)
from protolab.wire.capture import Capture, CaptureSummary
from protolab.wire.kernel_view import socket_table
from protolab.wire.packets import PROTO_ICMP, PROTO_UDP, Decoded
from protolab.wire.paths import default_capture_path

LAB = "udp-demo"
Out = Callable[[str], None]
ADDS = (5, 3, 4)
FAULT_DATAGRAMS = 20
REPLY_TIMEOUT = 2.0  #: a loopback reply takes well under 1 ms; 2 s means it is not coming
WHERE_TITLE = "Where state lives in UDP:"

#: ICMP destination unreachable, code 3 (port unreachable): RFC 792, RFC 1122 section 3.2.2.1.
ICMP_UNREACH, ICMP_PORT = 3, 3


@dataclass
class FaultRun:
    """Part 5: datagrams through the fault proxy, and who noticed what."""

    sent: int = 0
    send_errors: int = 0  #: sendto() calls that raised: UDP reports nothing, so 0
    sent_whole: int = 0  #: sendto() calls that returned the datagram's full size
    recv_errors: list[str] = field(default_factory=list)  #: errors recvfrom() raised
    server_counted: int = 0  #: how far the server's own count (seen=) went up, by the replies
    replies: list[int] = field(default_factory=list)  #: seq of each reply, in arrival order
    seen: list[int] = field(default_factory=list)  #: seen= of each reply, in arrival order
    base_seen: int | None = None  #: the server's count before this part (last reply of part 3)
    decisions: str = ""  #: the proxy's decisions, one line
    fates: list[Decision] = field(default_factory=list)  #: the proxy's decisions, as data
    plan: FaultPlan | None = None
    client_port: int = 0
    proxy_port: int = 0
    icmp: tuple[int, ...] = ()  #: ICMP errors captured during this part (packet numbers)
    datagrams_out: tuple[int, ...] = ()  #: client → proxy datagrams captured (packet numbers)
    seqs_out: list[int] = field(default_factory=list)  #: their seq=, in capture order


@dataclass
class UdpDemoResult:
    port: int = 0
    table_before: list[str] = field(default_factory=list)  #: /proc/net/udp rows for the port
    table_after: list[str] = field(default_factory=list)  #: ... after the clients' datagrams
    table_stopped: list[str] = field(default_factory=list)  #: ... after the server was killed
    clients: int = 0  #: client sockets of part 1 that got an answer
    client_packets: tuple[int, ...] = ()  #: their datagrams and answers in the capture
    replies: list[Reply] = field(default_factory=list)  #: the workflow's replies, in order
    reply_packets: tuple[int, ...] = ()  #: the workflow's replies in the capture, in order
    pids: list[int] = field(default_factory=list)  #: pid= of each workflow reply
    restart: tuple[int, int] = (0, 0)  #: server pid before → after the restart (process handles)
    old_status: int | None = None  #: the old server process's exit status (None: still alive)
    stopped_pid: int = 0  #: the server process part 4 killed
    stopped_status: int | None = None
    unconnected_saw: str = ""
    connected_saw: str = ""
    icmp_seen: int | None = None  #: ICMP port unreachable for the server port (None: no capture)
    icmp_for: dict[str, tuple[int, ...]] = field(default_factory=dict)  #: socket → ICMP packets
    faults: FaultRun | None = None  #: part 3, when faults were asked for
    capture: CaptureSummary | None = None
    capture_off: str = ""  #: why there is no capture ("" when there is one)
    rows: list[Row] = field(default_factory=list)
    findings: Findings = field(default_factory=Findings)

    def problem(self) -> str:
        """Why this run does not tell the demo's story, or "" when it does."""
        return self.findings.problem()


# -- the capture, as this run goes -----------------------------------------------------------------


def _captured(cap: Capture, since: int = 0) -> list[tuple[int, Decoded]]:
    """(packet number in the written pcap, frame) for each frame captured after packet `since`.
    The pcap is written from the same records in the same order, so the numbers are the file's."""
    if not cap.active:
        return []
    cap.drain(rounds=1)
    return list(enumerate(cap.decoded(), 1))[since:]


def _udp_between(frames: list[tuple[int, Decoded]], ports: set[int], port: int
                 ) -> tuple[int, ...]:
    """Packets of UDP datagrams between one of `ports` and `port`, either way."""
    return tuple(n for n, d in frames if d.proto == PROTO_UDP and (
        (d.sport in ports and d.dport == port) or (d.sport == port and d.dport in ports)))


def _port_unreachable(d: Decoded, dport: int) -> bool:
    return (d.proto == PROTO_ICMP and d.icmp_type == ICMP_UNREACH and d.icmp_code == ICMP_PORT
            and d.quoted is not None and d.quoted.dport == dport)


# -- the run ---------------------------------------------------------------------------------------


def _entries(port: int) -> list[str]:
    return [f"{e.local} ← {e.remote} ({e.state})" for e in socket_table("udp")
            if e.local.endswith(f":{port}")]


def _ask(sock: socket.socket, client: CounterClient, add: int, port: int,
         timeout: float = REPLY_TIMEOUT) -> Reply | None:
    """Send one request; the reply to it, or None when none came within `timeout`."""
    sock.sendto(client.request(add), ("127.0.0.1", port))
    sock.settimeout(timeout)
    while True:
        try:
            data, _ = sock.recvfrom(2048)
        except TimeoutError:
            return None
        reply = client.receive(data)
        if reply is not None:
            return reply


def _restart(server: ServerProcess) -> ServerProcess:
    """The litmus test's disruption: kill the server process, start a new one on its port."""
    server.kill()
    return ServerProcess("protolab.net.counter_server", server.port)


def run_udp_demo(capture: bool = True, pcap: str | Path | None = None, out: Out = print,
                 capture_off_reason: str = "--no-capture",
                 faults: FaultPlan | None = None) -> UdpDemoResult:
    path = Path(pcap) if pcap else default_capture_path(LAB, faults=faults is not None)
    result = UdpDemoResult()
    server = ServerProcess("protolab.net.counter_server", restartable_port(udp=True))
    result.port = port = server.port
    try:
        with Capture([port], path, enabled=capture, off_reason=capture_off_reason) as cap:
            if not cap.active:
                result.capture_off = cap.summary.off_reason or capture_off_reason
                out(capture_off_line(cap.summary, LAB, capture_off_reason))
            _part1(result, cap, out)
            server = _part2_3(result, server, cap, out)
            if faults is not None:
                _part5_faults(result, faults, cap, out)
            _part4(result, server, cap, out)
        result.capture = cap.summary
    finally:
        server.kill()
    if cap.active:
        result.rows = show_capture(cap.summary, out)
    result.findings.where = where_from_run(result, faults)
    print_state_table(WHERE_TITLE, result.findings.where, out)
    print_summary(LAB, result.findings, out)
    _closing(result, out)
    return result


def _closing(result: UdpDemoResult, out: Out) -> None:
    missing = result.findings.not_observed()
    if missing:
        out(f"\n{len(missing)} claim(s) NOT OBSERVED in this run: "
            f"{', '.join(o.key for o in missing)} (exit status 1)")


def _part1(result: UdpDemoResult, cap: Capture, out: Out) -> None:
    port = result.port
    result.table_before = _entries(port)
    out(f"1. Three client sockets, one server port. The server's kernel table for port {port} "
        f"(/proc/net/udp) before any datagram:")
    out("\n".join(f"     {e}" for e in result.table_before))
    socks, ports = [], set()
    try:
        for _ in range(3):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
            ports.add(s.getsockname()[1])
            if _ask(s, CounterClient(), 1, port) is not None:
                result.clients += 1
        result.table_after = _entries(port)
    finally:
        for s in socks:
            s.close()
    result.client_packets = _udp_between(_captured(cap), ports, port)
    out(f"   after {len(socks)} client sockets each sent a datagram ({result.clients} answered), "
        f"the same table:")
    out("\n".join(f"     {e}" for e in result.table_after))
    print_findings([result.findings.add(one_entry(result))], out)


def _part2_3(result: UdpDemoResult, server: ServerProcess, cap: Capture,
             out: Out) -> ServerProcess:
    port = result.port
    out("\n2. The litmus test: one client's workflow, each datagram holding seq and the running "
        "total; the server process is restarted between requests:")
    client = CounterClient()
    rows: list[tuple] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        for i, add in enumerate(ADDS):
            if i == 1:
                old = server
                server = _restart(old)
                result.restart = (old.pid, server.pid)
                result.old_status = old.proc.poll()
                rows.append(("-", f"server restart: pid {old.pid} (exit status "
                                  f"{result.old_status}) → pid {server.pid} on port {port}",
                             "", "", ""))
            total_sent = client.total
            reply = _ask(sock, client, add, port)
            if reply is None:
                rows.append((client.seq, f"seq={client.seq} total={total_sent} add={add}",
                             f"no reply in {REPLY_TIMEOUT:g} s", "", ""))
                break
            result.replies.append(reply)
            result.pids.append(reply.pid)
            rows.append((reply.seq, f"seq={reply.seq} total={total_sent} add={add}",
                         reply.total, reply.seen, reply.pid))
        me = sock.getsockname()[1]
        result.reply_packets = tuple(n for n, d in _captured(cap) if d.proto == PROTO_UDP
                                     and d.sport == port and d.dport == me)
    out(indent(table(rows, ("seq", "datagram (client-carried state)", "total (answer)",
                     "server's own count (app memory)", "server pid"))))
    print_findings([result.findings.add(o) for o in litmus(result)], out)
    return server


def _part5_faults(result: UdpDemoResult, plan: FaultPlan, cap: Capture, out: Out) -> None:
    """Datagrams 1..N through the fault proxy, each asking for +1: who notices the faults?"""
    run = result.faults = FaultRun(plan=plan)
    run.base_seen = result.replies[-1].seen if result.replies else None
    start = len(_captured(cap))
    with UdpFaultProxy(("127.0.0.1", result.port), plan) as proxy, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        run.client_port, run.proxy_port = sock.getsockname()[1], proxy.address[1]
        cap.add_port(proxy.address[1])
        out(f"\n3. Faults: {FAULT_DATAGRAMS} datagrams (seq=1..{FAULT_DATAGRAMS}, each add=1) "
            f"from 127.0.0.1:{run.client_port} through the fault proxy "
            f"{proxy.address[0]}:{proxy.address[1]} ({plan.describe()}), without waiting:")
        for seq in range(1, FAULT_DATAGRAMS + 1):
            data = f"seq={seq} total=0 add=1".encode()
            run.sent += 1
            try:
                if sock.sendto(data, proxy.address) == len(data):
                    run.sent_whole += 1
            except OSError:
                run.send_errors += 1
        _receive_all(sock, proxy, run, quiet=REPLY_TIMEOUT + 2 * plan.delay)
    run.decisions = fault_line(proxy.core)
    run.fates = list(proxy.core.decisions)
    if run.seen and run.base_seen is not None:
        run.server_counted = max(run.seen) - run.base_seen
    frames = _captured(cap, start)
    run.icmp = tuple(n for n, d in frames if d.proto == PROTO_ICMP)
    outgoing = [(n, d) for n, d in frames if d.proto == PROTO_UDP
                and d.sport == run.client_port and d.dport == run.proxy_port]
    run.datagrams_out = tuple(n for n, _ in outgoing)
    run.seqs_out = [_seq_of(d.payload) for _, d in outgoing]
    out(f"   the proxy (its app memory): {run.decisions}")
    out(f"   replies, in arrival order: {' '.join(map(str, run.replies)) or 'none'}")
    print_findings([result.findings.add(o) for o in fault_findings(run, result.capture_off)], out)


def _due(decisions: Sequence[Decision], sent: int) -> int | None:
    """How many replies the proxy's decisions so far will deliver; None while it has not yet
    decided the fate of every request and of every reply the server sent."""
    up = [d for d in decisions if d.direction is Direction.TO_SERVER]
    down = [d for d in decisions if d.direction is Direction.TO_CLIENT]
    if len(up) < sent or len(down) < sum(_copies(d.fate) for d in up):
        return None
    return sum(_copies(d.fate) for d in down)


def _receive_all(sock: socket.socket, proxy: UdpFaultProxy, run: FaultRun, quiet: float) -> None:
    """Receive replies until the proxy's decisions say no more will come (synchronisation only:
    the findings check the replies against the decisions), or nothing came for `quiet` s."""
    sock.settimeout(0.05)
    last = time.monotonic()
    while time.monotonic() - last < quiet:
        if _due(list(proxy.core.decisions), run.sent) == len(run.replies) + len(run.recv_errors):
            return
        try:
            data, _ = sock.recvfrom(2048)
        except TimeoutError:
            continue
        except OSError as exc:  # e.g. ConnectionRefusedError: UDP would report it here
            run.recv_errors.append(type(exc).__name__)
            continue
        last = time.monotonic()
        reply = parse_reply(data)
        if reply is not None:
            run.replies.append(reply.seq)
            run.seen.append(reply.seen)


def _seq_of(payload: bytes) -> int:
    head = payload.split(b" ", 1)[0]
    return int(head[4:]) if head.startswith(b"seq=") and head[4:].isdigit() else 0


def _part4(result: UdpDemoResult, server: ServerProcess, cap: Capture, out: Out) -> None:
    port = result.port
    start = len(_captured(cap))
    result.stopped_pid = server.pid
    result.stopped_status = server.kill()
    result.table_stopped = _entries(port)
    part = 4 if result.faults is not None else 3
    out(f"\n{part}. The server is down (pid {server.pid} killed, exit status "
        f"{result.stopped_status}; /proc/net/udp entries for port {port}: "
        f"{len(result.table_stopped)}). A datagram from an unconnected and from a connected "
        f"client socket:")
    unconnected = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    connected = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        unconnected.bind(("127.0.0.1", 0))
        connected.connect(("127.0.0.1", port))
        ports = {"unconnected": unconnected.getsockname()[1],
                 "connected": connected.getsockname()[1]}
        unconnected.sendto(b"seq=1 total=0 add=1", ("127.0.0.1", port))
        connected.send(b"seq=1 total=0 add=1")
        connected.settimeout(REPLY_TIMEOUT)
        try:
            connected.recv(2048)
            result.connected_saw = "an answer"
        except ConnectionRefusedError:
            result.connected_saw = "ConnectionRefusedError"
        except TimeoutError:
            result.connected_saw = "nothing (timeout)"
        # The ICMP error for the earlier datagram was handled before the connected one's:
        # whatever the unconnected socket will ever get is there now.
        unconnected.setblocking(False)
        try:
            unconnected.recv(2048)
            result.unconnected_saw = "something"
        except BlockingIOError:
            result.unconnected_saw = "nothing"
        except ConnectionRefusedError:
            result.unconnected_saw = "ConnectionRefusedError"
    finally:
        unconnected.close()
        connected.close()
    if cap.active:
        cap.drain(rounds=2)
        frames = _captured(cap, start)
        icmp = [(n, d) for n, d in frames if _port_unreachable(d, port)]
        result.icmp_seen = len(icmp)
        result.icmp_for = {who: tuple(n for n, d in icmp if d.quoted.sport == p)
                           for who, p in ports.items()}
    out(f"   unconnected socket's recv(): {result.unconnected_saw}; connected socket's next "
        f"recv(): {result.connected_saw}")
    print_findings([result.findings.add(o) for o in stopped_findings(result)], out)
    out("   explanation (not a finding): Linux reports an ICMP error to a UDP socket only when it "
        "is connected (or has IP_RECVERR set, ip(7)): connect() gave its kernel the one peer to "
        "attach the error to")


# -- the observations, each from this run's data ---------------------------------------------------


def _entries_evidence(result: UdpDemoResult, before: list[str], after: list[str]) -> Evidence:
    return Evidence(f"/proc/net/udp entries for port {result.port}", len(before), len(after))


def one_entry(result: UdpDemoResult) -> Observation:
    """Part 1: the server's kernel keeps one entry for its port, however many peers send."""
    before, after = result.table_before, result.table_after
    ok = len(before) == 1 and before == after and result.clients == 3
    return observe(
        "udp.one-entry", "the server's kernel keeps one entry for its port, whoever sends",
        ok, done=f"{result.clients} client sockets each sent a datagram and got an answer",
        seen=f"still one entry in /proc/net/udp for port {result.port}: no per-peer state",
        evidence=[_entries_evidence(result, before, after),
                  Evidence("client sockets answered", after=result.clients,
                           packets=result.client_packets)],
        why_not=f"/proc/net/udp entries for port {result.port}: {len(before)} before, "
                f"{len(after)} after; {result.clients} of 3 client sockets answered")


def _restarted(result: UdpDemoResult) -> str:
    """"" when this run restarted the server process (two PIDs, the old one dead, the replies
    before and after the restart from each); else what is missing."""
    old, new = result.restart
    if not old or old == new:
        return f"the server process was not restarted (pid {old} → {new})"
    if result.old_status is None:
        return f"the old server process (pid {old}) is still alive"
    if len(result.replies) < 2:
        return f"only {len(result.replies)} of {len(ADDS)} requests were answered"
    if result.pids[0] != old or result.pids[1] != new:
        return f"the replies' pid= ({result.pids[0]}, {result.pids[1]}) are not {old} and {new}"
    return ""


def _pid_evidence(result: UdpDemoResult) -> list[Evidence]:
    old, new = result.restart
    ev = [Evidence("server pid", old, new)]
    if len(result.pids) >= 2:
        ev.append(Evidence("pid= in the replies", result.pids[0], result.pids[1],
                           packets=result.reply_packets[:2]))
    return ev


def litmus(result: UdpDemoResult) -> list[Observation]:
    """Parts 2 and 3: the restart, the workflow going on, the server's own count starting over."""
    why_restart = _restarted(result)
    old, new = result.restart
    restart = observe(
        "udp.restart", "the server process is restarted between two requests", not why_restart,
        done="killed the server process and started a new one on the same port",
        seen="a new process answered on the same port",
        evidence=[*_pid_evidence(result), Evidence("old process exit status",
                                                   after=result.old_status)],
        why_not=why_restart)
    totals = [r.total for r in result.replies]
    expected = [sum(ADDS[:i + 1]) for i in range(len(ADDS))]
    carried = totals == expected
    why = why_restart or ("" if carried else f"total= in the replies {totals}, not {expected}")
    continued = observe(
        "udp.workflow-continued", "the workflow goes on across a server restart", not why,
        seen=f"server restarted between requests: workflow continued (pid {old} → {new}): "
             f"total= {' → '.join(map(str, totals))} = {' + '.join(map(str, ADDS))}, carried "
             f"by the client in each datagram",
        evidence=[Evidence("total= in the replies", after=", ".join(map(str, totals)),
                           packets=result.reply_packets), *_pid_evidence(result)],
        why_not=why)
    seen = [r.seen for r in result.replies]
    reset = len(seen) >= 2 and seen[1] == 1 and seen[0] >= seen[1]
    why = why_restart or ("" if reset else f"seen= in the replies {seen}: the second is not 1")
    count = observe(
        "udp.count-restarted", "the server's own count (app memory) starts again in the new "
        "process", not why, done="server restarted between requests",
        seen=f"the server's own count restarted: seen={seen[0] if seen else '?'} from pid {old}, "
             f"seen={seen[1] if len(seen) > 1 else '?'} from pid {new}: it lived in the old "
             f"process",
        evidence=[Evidence("seen= in the replies", seen[0] if seen else None,
                           seen[1] if len(seen) > 1 else None,
                           packets=result.reply_packets[:2]), *_pid_evidence(result)],
        why_not=why)
    return [restart, continued, count]


def _capture_off_why(capture_off: str) -> str:
    return f"capture is off ({capture_off}): no packet of this run was seen, so not tried here"


def _icmp_evidence(result: UdpDemoResult, who: str) -> list[Evidence]:
    packets = result.icmp_for.get(who, ())
    return [Evidence("ICMP for its datagram", packets=packets)] if packets else []


def stopped_findings(result: UdpDemoResult) -> list[Observation]:
    """Part 4: the port unbound, the ICMP errors, and which socket is told."""
    port = result.port
    unbound = observe(
        "udp.port-unbound", "killing the server process frees its port binding",
        result.stopped_status is not None and not result.table_stopped,
        done=f"killed the server process (pid {result.stopped_pid})",
        seen=f"no entry for port {port} in /proc/net/udp any more",
        evidence=[Evidence("exit status", after=result.stopped_status),
                  _entries_evidence(result, result.table_after, result.table_stopped)],
        why_not=f"/proc/net/udp still has {len(result.table_stopped)} entry(ies) for port {port}")
    both = tuple(n for p in result.icmp_for.values() for n in p)
    if result.icmp_seen is None:
        icmp = explain("udp.icmp", "the kernel answers both datagrams with ICMP port "
                       "unreachable", _capture_off_why(result.capture_off))
    else:
        icmp = observe(
            "udp.icmp", "the kernel answers both datagrams with ICMP port unreachable",
            all(result.icmp_for.get(w) for w in ("unconnected", "connected")),
            seen=f"the kernel answered each datagram with ICMP port unreachable "
                 f"({result.icmp_seen} captured)",
            evidence=[Evidence("ICMP port unreachable", after=result.icmp_seen,
                               packets=tuple(sorted(both)))],
            why_not=f"{result.icmp_seen} ICMP port unreachable captured for port {port}: "
                    f"unconnected {list(result.icmp_for.get('unconnected', ()))}, connected "
                    f"{list(result.icmp_for.get('connected', ()))}")
    connected = observe(
        "udp.connected-refused", "the connected socket is told of the error",
        result.connected_saw == "ConnectionRefusedError",
        done="sent from a connected socket, then recv()",
        seen="connected socket: ConnectionRefusedError on the next recv()",
        evidence=[Evidence("recv() on the connected socket", after=result.connected_saw),
                  *_icmp_evidence(result, "connected")],
        why_not=f"its recv() gave {result.connected_saw or 'nothing'}")
    unconnected = observe(
        "udp.unconnected-silent", "the unconnected socket is told nothing",
        result.unconnected_saw == "nothing",
        done="sent from an unconnected socket, then recv() without blocking",
        seen="unconnected socket: nothing to receive, no error",
        evidence=[Evidence("recv() on the unconnected socket",
                           after="BlockingIOError (nothing)" if result.unconnected_saw ==
                           "nothing" else result.unconnected_saw),
                  *_icmp_evidence(result, "unconnected")],
        why_not=f"its recv() gave {result.unconnected_saw}")
    return [unbound, icmp, connected, unconnected]


# -- part 3 (faults): what the application saw, against what the proxy decided ------------


def _copies(fate: Fate | None) -> int:
    """How many copies of a datagram the proxy sent on, by its decision."""
    return 0 if fate in (None, Fate.DROPPED) else 2 if fate is Fate.DUPLICATED else 1


@dataclass
class FaultAccount:
    """Part 5, from the client's seq numbers and the server's seen= numbers, each gap, double
    and late arrival matched to the proxy decision that made it."""

    lost: dict[int, str] = field(default_factory=dict)  #: seq never answered → the decision
    doubled: dict[int, str] = field(default_factory=dict)  #: seq answered twice → decision
    late: dict[int, str] = field(default_factory=dict)  #: seq arrived after a higher one
    unexplained: list[str] = field(default_factory=list)  #: what no decision accounts for


def account(sent: int, arrivals: Sequence[tuple[int, int]], base_seen: int,
            decisions: Sequence[Decision], plan: FaultPlan | None = None) -> FaultAccount:
    """`arrivals`: (seq, seen) of each reply in arrival order. The k-th datagram to the server
    is seq k (one client socket, sent in order); the j-th reply the server sent, its seen=
    base_seen + j, is the proxy's k-th datagram to the client (one server, replying in order).
    `plan` tells which duplicated datagrams were also delayed (its `delay`, within `count`)."""
    acc = FaultAccount()
    up = {d.index: d.fate for d in decisions if d.direction is Direction.TO_SERVER}
    down = {d.index: d.fate for d in decisions if d.direction is Direction.TO_CLIENT}
    dropped_down = _account_replies(acc, sent, arrivals, base_seen, up, down)
    by_seq: dict[int, set[int]] = {}
    for seq, seen in arrivals:
        by_seq.setdefault(seq, set()).add(seen - base_seen)
    _account_lost_and_doubled(acc, sent, arrivals, by_seq, up, down)
    _account_late(acc, arrivals, base_seen, up, down, plan)
    lost_replies = sum(_copies(up.get(k)) - len(by_seq.get(k, ())) for k in range(1, sent + 1))
    if lost_replies != len(dropped_down):
        acc.unexplained.append(f"{lost_replies} replies missing by seq=; the proxy dropped "
                               f"{len(dropped_down)} to-client")
    return acc


def _account_replies(acc: FaultAccount, sent: int, arrivals: Sequence[tuple[int, int]],
                     base_seen: int, up: dict[int, Fate], down: dict[int, Fate]) -> set[int]:
    """Each reply the server sent against the proxy's to-client decisions; the ones it dropped."""
    passed = sum(_copies(up.get(k)) for k in range(1, sent + 1))
    if len(down) != passed:
        acc.unexplained.append(f"the server sent {len(down)} replies; the proxy passed it "
                               f"{passed} datagrams")
    index = Counter(seen - base_seen for _, seen in arrivals)
    for j, n in sorted(index.items()):
        if n != _copies(down.get(j)):
            fate = down[j].value if j in down else "none"
            acc.unexplained.append(f"reply seen={base_seen + j} arrived {n}×; the proxy's "
                                   f"to-client datagram {j} was {fate}")
    never = set(range(1, len(down) + 1)) - set(index)
    dropped_down = {j for j, f in down.items() if f is Fate.DROPPED}
    if never != dropped_down:
        acc.unexplained.append(f"replies never arrived: seen= {sorted(never)}; the proxy "
                               f"dropped to-client {sorted(dropped_down)}")
    return dropped_down


def _account_lost_and_doubled(acc: FaultAccount, sent: int,
                              arrivals: Sequence[tuple[int, int]], by_seq: dict[int, set[int]],
                              up: dict[int, Fate], down: dict[int, Fate]) -> None:
    """Each seq never answered, and each answered twice, with the decision that caused it."""
    for k in range(1, sent + 1):
        if k not in by_seq:
            acc.lost[k] = (f"to-server datagram {k} dropped" if up.get(k) is Fate.DROPPED
                           else "its reply dropped")
    counts = Counter(seq for seq, _ in arrivals)
    for k in sorted(q for q, n in counts.items() if n > 1):
        js = sorted(by_seq[k])
        if len(js) > 1 and up.get(k) is Fate.DUPLICATED:
            acc.doubled[k] = f"to-server datagram {k} duplicated"
        elif any(down.get(j) is Fate.DUPLICATED for j in js):
            acc.doubled[k] = f"to-client datagram {js[0]} duplicated"
        else:
            acc.unexplained.append(f"seq {k} answered {counts[k]}× with no duplicating decision")


def _held(up: dict[int, Fate], down: dict[int, Fate], plan: FaultPlan | None,
          direction: Direction, k: int) -> str:
    """How the proxy held datagram k back, or "" when it sent it on at once."""
    fate = (up if direction is Direction.TO_SERVER else down).get(k)
    if fate in (Fate.REORDERED, Fate.DELAYED):
        return f"{direction.value} datagram {k} {fate.value}"
    delayed = plan is not None and plan.delay and plan.applies(direction) and (
        not plan.count or k <= plan.count)
    return f"{direction.value} datagram {k} duplicated and delayed" if delayed and \
        fate is Fate.DUPLICATED else ""


def _account_late(acc: FaultAccount, arrivals: Sequence[tuple[int, int]], base_seen: int,
                  up: dict[int, Fate], down: dict[int, Fate], plan: FaultPlan | None) -> None:
    """Each seq that arrived after a higher one, with the decision that held it back."""
    highest, checked = 0, set()
    for seq, seen in arrivals:
        if seq < highest and seq not in checked:
            checked.add(seq)
            why = _held(up, down, plan, Direction.TO_SERVER, seq) or \
                _held(up, down, plan, Direction.TO_CLIENT, seen - base_seen)
            if why:
                acc.late[seq] = why
            else:
                acc.unexplained.append(f"seq {seq} arrived after seq {highest}; neither it nor "
                                       f"its reply was held back")
        highest = max(highest, seq)


def _listed(items: dict[int, str]) -> str:
    return ", ".join(f"{k} ({why})" for k, why in items.items()) or "none"


def fault_findings(run: FaultRun, capture_off: str = "") -> list[Observation]:
    """Part 5's findings: the sender was told nothing, and what the application's numbering
    found, each gap matched to a proxy decision; no ICMP and no retransmission, by the capture."""
    sender = observe(
        "udp.faults.sender-unaware", "the sender's kernel reports every datagram as sent",
        run.send_errors == 0 and run.sent_whole == run.sent and not run.recv_errors,
        done=f"{run.sent} sendto() calls, then recvfrom() for the replies",
        seen=f"its kernel reported every one as sent: {run.sent_whole} of {run.sent} sendto() "
             f"returned the datagram's size, 0 errors; recvfrom() raised nothing",
        evidence=[Evidence("sendto() returned the full size", after=f"{run.sent_whole}/"
                           f"{run.sent}"), Evidence("sendto() errors", after=run.send_errors),
                  Evidence("recvfrom() errors", after=len(run.recv_errors))],
        why_not=f"{run.send_errors} sendto() errors, {run.sent - run.sent_whole - run.send_errors}"
                f" short sends, recvfrom() errors {run.recv_errors}")
    if run.base_seen is None:
        acc = FaultAccount(unexplained=["part 3 got no reply, so the server's count before this "
                                        "part (seen=) is unknown"])
    else:
        acc = account(run.sent, list(zip(run.replies, run.seen, strict=True)), run.base_seen,
                      run.fates, run.plan)
    why = "; ".join(acc.unexplained)
    decisions = Evidence("proxy decisions", after=run.decisions.split(" (")[0])
    found = observe(
        "udp.faults.numbered", "only the application's own numbering (seq=, seen=) finds what "
        "was lost, doubled or reordered, and each is one of the proxy's decisions", not why,
        done=f"{run.sent} datagrams through the fault proxy",
        seen=f"by seq=: never answered {_listed(acc.lost)}; answered twice "
             f"{_listed(acc.doubled)}; arrived late {_listed(acc.late)}; the server's own count "
             f"went up by {run.server_counted} (by seen=)",
        evidence=[Evidence("replies", after=len(run.replies)),
                  Evidence("datagrams the proxy passed to the server", after=sum(
                      _copies(d.fate) for d in run.fates if d.direction is Direction.TO_SERVER)),
                  Evidence("seq never answered", after=len(acc.lost)),
                  Evidence("seq answered twice", after=len(acc.doubled)),
                  Evidence("seq late", after=len(acc.late)), decisions],
        why_not=why)
    claim = "nothing in UDP noticed: no ICMP error, no retransmission"
    if capture_off:
        quiet = explain("udp.faults.no-icmp", claim, _capture_off_why(capture_off))
    else:
        resent = len(run.seqs_out) - len(set(run.seqs_out))
        quiet = observe(
            "udp.faults.no-icmp", claim, not run.icmp and not resent
            and sorted(run.seqs_out) == list(range(1, run.sent + 1)),
            seen=f"nothing in UDP noticed: no ICMP error captured, and each of the {run.sent} "
                 f"datagrams left the client once (no retransmission)",
            evidence=[Evidence("ICMP errors captured", after=len(run.icmp), packets=run.icmp),
                      Evidence("datagrams client → proxy", after=len(run.datagrams_out),
                               packets=(run.datagrams_out[0], run.datagrams_out[-1])
                               if run.datagrams_out else ())],
            why_not=f"{len(run.icmp)} ICMP errors captured {list(run.icmp)}; "
                    f"{len(run.seqs_out)} datagrams client → proxy captured, {resent} repeated")
    return [sender, found, quiet]


# -- where state lives, from this run ------------------------------------------------------------


def where_from_run(result: UdpDemoResult, faults: FaultPlan | None = None) -> list[StateRow]:
    """The "where state lives" rows: each names the disruption this run performed and what
    happened, with its evidence (or is an explanation, marked not tried here)."""
    by_key = {o.key: o for o in result.findings.observations}
    old, new = result.restart

    def outcome(key: str, seen: str, *also: str, extra: str = "",
                pick: tuple[str, ...] = ()) -> Observation:
        """The finding `key` as a row's outcome, observed only when it and every one of `also`
        was; the evidence is theirs (and `extra`'s, when observed), those labelled `pick...`."""
        parts = [by_key.get(k) or observe(k, k, False, why_not="this part did not run")
                 for k in (key, *also)]
        failed = [p for p in parts if not p.observed]
        more = by_key.get(extra)
        evidence = list(dict.fromkeys(
            e for p in [*parts, *([more] if more and more.observed else [])] for e in p.evidence
            if not pick or e.what.startswith(pick)))
        return observe(f"where.{key}", parts[0].claim, not failed, seen=seen, evidence=evidence,
                       why_not="; ".join(f"{p.key}: {p.why}" for p in failed))

    fault_state = "which datagrams were lost, doubled, reordered"
    fault_holder = "the fault proxy's app memory; the client only by numbering"
    rows = [
        StateRow("the server's port binding", "server kernel",
                 f"killed the server process (pid {result.stopped_pid}), then sent to its port",
                 outcome("udp.port-unbound", "binding gone; each datagram to the port got ICMP "
                         "port unreachable, which only the connected socket was told "
                         "(ConnectionRefusedError)", "udp.connected-refused",
                         extra="udp.icmp", pick=("/proc", "recv()", "ICMP port"))),
        StateRow("per-peer connection state", "nobody: UDP has none (RFC 768)",
                 "3 client sockets each sent the server a datagram",
                 outcome("udp.one-entry", "still one /proc/net/udp entry: nothing per peer")),
        StateRow("the workflow's state (seq, total)", "the client, carried in each datagram",
                 f"restarted the server process (pid {old} → {new})",
                 outcome("udp.workflow-continued", "kept: the total went on",
                         pick=("total=", "server pid"))),
        StateRow("the server's own count (seen=)", "server app memory",
                 f"restarted the server process (pid {old} → {new})",
                 outcome("udp.count-restarted", "lost: the new process counted from 1",
                         pick=("seen=", "server pid"))),
        StateRow("a connected socket's peer", "client kernel (connect())",
                 "stopped the server; a datagram from a connected and from an unconnected "
                 "socket", outcome("udp.connected-refused", "only the connected socket was "
                                   "told (ConnectionRefusedError)", "udp.unconnected-silent")),
    ]
    if faults is None:
        rows.append(StateRow(fault_state, fault_holder, "-", explain(
            "where.udp.faults.numbered", "a fault proxy drops, duplicates and reorders; only "
            "the client's numbering notices", "run with --drop/--duplicate/--reorder to try it")))
    else:
        rows.append(StateRow(fault_state, fault_holder,
                             f"{FAULT_DATAGRAMS} datagrams through the fault proxy "
                             f"({faults.describe()})",
                             outcome("udp.faults.numbered", "only the application's seq= "
                                     "and seen= showed each fault", pick=("seq ",))))
    return rows


# -- where state lives, from a capture (replay) -------------------------------------------------


def where_from_capture(rows: Sequence[Row]) -> list[StateRow]:
    """The same rows, filled from the packets where the capture shows them (replies' pid=,
    seen=, total=; ICMP errors); "live run only" where only a live run can show it."""
    from protolab.analysis.story_checks import check, counter_replies

    found = {f.step.key: f.packets for f in check(LAB, rows)}
    replies = counter_replies(rows)
    restarted = _restart_in_capture(replies)
    answered = {r.dst for r, _ in replies}
    src = {r.number: r.src for r in rows}
    clients = tuple(n for n in found.get("clients", ()) if src.get(n) in answered)
    icmp = found.get("icmp", ())
    live = Status.LIVE_ONLY
    binding = observe(
        "where.udp.port-unbound", "datagrams to a port nobody binds get ICMP port unreachable",
        bool(icmp), seen=f"{len(icmp)} ICMP port unreachable for the server's port",
        evidence=[Evidence("ICMP port unreachable", after=len(icmp), packets=icmp)],
        why_not="this capture shows no ICMP port unreachable for the server's port")
    peers = observe(
        "where.udp.one-entry", "datagrams from many client sockets reach one server port, each "
        "standing alone", len(clients) >= 3,
        seen=f"{len(clients)} client sockets sent to one server port and were answered",
        evidence=[Evidence("first datagram of each answered client socket",
                           after=len(clients), packets=clients)],
        why_not="this capture shows no three answered client sockets of one server port")
    return [
        StateRow("the server's port binding", "server kernel", "the server stopped (the "
                 "packets show datagrams to its port answered by ICMP)", binding),
        StateRow("per-peer connection state", "nobody: UDP has none (RFC 768)",
                 "several client sockets sent the server a datagram", peers),
        StateRow("the workflow's state (seq, total)", "the client, carried in each datagram",
                 "the server process restarted (pid= in the replies changed)",
                 _capture_total(restarted)),
        StateRow("the server's own count (seen=)", "server app memory",
                 "the server process restarted (pid= in the replies changed)",
                 _capture_count(restarted)),
        StateRow("a connected socket's peer", "client kernel (connect())", "-",
                 explain("where.udp.connected-refused", "which socket was told "
                         "ConnectionRefusedError (only the connected one)",
                         "a socket's errors are not in the packets", live)),
        StateRow("which datagrams were lost, doubled, reordered",
                 "the fault proxy's app memory; the client only by numbering", "-",
                 explain("where.udp.faults", "the fault proxy's decisions",
                         "the proxy's memory is not in the packets", live)),
    ]


@dataclass(frozen=True)
class _CapturedRestart:
    before: tuple[int, Reply] | None = None  #: (packet, reply) from the old process
    after: tuple[int, Reply] | None = None  #: ... the first from the new process, same client
    last: tuple[int, Reply] | None = None  #: ... the client's last reply


def _restart_in_capture(replies: Sequence[tuple[Row, Reply]]) -> _CapturedRestart:
    """Replies to one client whose pid= changes between two of them."""
    by_client: dict[str, list[tuple[int, Reply]]] = {}
    for r, reply in replies:
        by_client.setdefault(r.dst, []).append((r.number, reply))
    for seq in by_client.values():
        for a, b in zip(seq, seq[1:], strict=False):
            if a[1].pid != b[1].pid:
                return _CapturedRestart(a, b, seq[-1])
    return _CapturedRestart()


def _capture_total(c: _CapturedRestart) -> Observation:
    claim = "the workflow's total goes on across the server restart"
    if c.before is None:
        return observe("where.udp.workflow-continued", claim, False,
                       why_not="no client's replies in this capture change pid=")
    (na, a), (nb, b), (nl, last) = c.before, c.after, c.last
    return observe(
        "where.udp.workflow-continued", claim, b.total > a.total,
        seen=f"total= {a.total} → {b.total} → {last.total} across pid {a.pid} → {b.pid}",
        evidence=[Evidence("pid= in the replies", a.pid, b.pid, packets=(na, nb)),
                  Evidence("total= in the replies", a.total, last.total,
                           packets=tuple(sorted({na, nb, nl})))],
        why_not=f"total= {a.total} → {b.total}: it did not go on")


def _capture_count(c: _CapturedRestart) -> Observation:
    claim = "the server's own count starts again in the new process"
    if c.before is None:
        return observe("where.udp.count-restarted", claim, False,
                       why_not="no client's replies in this capture change pid=")
    (na, a), (nb, b) = c.before, c.after
    return observe(
        "where.udp.count-restarted", claim, b.seen < a.seen,
        seen=f"lost: seen={a.seen} from pid {a.pid}, seen={b.seen} from pid {b.pid}",
        evidence=[Evidence("seen= in the replies", a.seen, b.seen, packets=(na, nb)),
                  Evidence("pid= in the replies", a.pid, b.pid)],
        why_not=f"seen= {a.seen} → {b.seen}: the count did not start again")


run = run_udp_demo  #: the registry's entry point (protolab.labs.DEMOS)
