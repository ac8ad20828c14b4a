"""`protolab udp-demo`: UDP keeps nothing, so a restarted server loses nothing.

Where state lives: the server's kernel holds one port binding and nothing per peer; the client
carries the workflow's state (sequence number, running total) in every datagram; the server's own
memory holds a count that a restart wipes. The litmus test restarts the server process between two
requests and checks that the workflow goes on.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from protolab.annotate import Row
from protolab.capture import Capture, CaptureSummary
from protolab.faults import FaultPlan, UdpFaultProxy, fault_line
from protolab.kstate import socket_table
from protolab.paths import default_capture_path
from protolab.proc import ServerProcess
from protolab.report import capture_off_line, print_where, show_capture, table
from protolab.udp import CounterClient, Reply, parse_reply

LAB = "udp-demo"
Out = Callable[[str], None]
ADDS = (5, 3, 4)


@dataclass
class FaultRun:
    """Part 5: datagrams through the fault proxy, and who noticed what."""

    sent: int = 0
    send_errors: int = 0  #: sendto() calls that failed: UDP reports nothing, so 0
    server_counted: int = 0  #: datagrams the server's own count went up by
    replies: list[int] = field(default_factory=list)  #: seq of each reply, in arrival order
    decisions: str = ""


@dataclass
class UdpDemoResult:
    port: int = 0
    table_before: list[str] = field(default_factory=list)  #: /proc/net/udp rows for the port
    table_after: list[str] = field(default_factory=list)
    clients: int = 0
    replies: list[Reply] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)  #: server process per request
    verdict: str = ""
    unconnected_saw: str = ""
    connected_saw: str = ""
    icmp_seen: int | None = None
    faults: FaultRun | None = None  #: part 5, when faults were asked for
    capture: CaptureSummary | None = None
    rows: list[Row] = field(default_factory=list)

    def problem(self) -> str:
        """Why this run does not tell the demo's story, or "" when it does."""
        return "" if self.verdict.endswith("workflow continued") else self.verdict



def _entries(port: int) -> list[str]:
    return [f"{e.local} ← {e.remote} ({e.state})" for e in socket_table("udp")
            if e.local.endswith(f":{port}")]


def _ask(sock: socket.socket, client: CounterClient, add: int, port: int,
         timeout: float = 2.0) -> Reply:
    sock.sendto(client.request(add), ("127.0.0.1", port))
    sock.settimeout(timeout)
    while True:
        data, _ = sock.recvfrom(2048)
        reply = client.receive(data)
        if reply is not None:
            return reply


def run_udp_demo(capture: bool = True, pcap: str | Path | None = None, out: Out = print,
                 capture_off_reason: str = "--no-capture",
                 faults: FaultPlan | None = None) -> UdpDemoResult:
    path = Path(pcap) if pcap else default_capture_path(LAB)
    result = UdpDemoResult()
    server = ServerProcess("protolab.udp")
    result.port = port = server.port
    try:
        with Capture([port], path, enabled=capture, off_reason=capture_off_reason) as cap:
            if not cap.active:
                out(capture_off_line(cap.summary, LAB, capture_off_reason))
            server = _part1_2_3(result, server, out)
            if faults is not None:
                _part5_faults(result, server, faults, cap, out)
            _part4(result, server, cap, out)
        result.capture = cap.summary
    finally:
        server.kill()
    if cap.active:
        result.rows = show_capture(cap.summary, out)
    _summary(out)
    return result


def _part1_2_3(result: UdpDemoResult, server: ServerProcess, out: Out) -> ServerProcess:
    port = result.port
    result.table_before = _entries(port)
    out(f"1. No handshake, no teardown. The server's kernel table for port {port} "
        f"(/proc/net/udp) before any datagram:")
    out("\n".join(f"     {e}" for e in result.table_before))
    others = []
    for _ in range(3):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        _ask(s, CounterClient(), 1, port)
        others.append(s)
    result.clients = len(others)
    result.table_after = _entries(port)
    out(f"   after {len(others)} clients each sent a datagram (the first datagram carried data) "
        f"and got an answer:")
    out("\n".join(f"     {e}" for e in result.table_after))
    out("   still one entry: the kernel keeps no per-peer state for UDP")
    for s in others:
        s.close()

    out("\n2. The litmus test: restart the server process between requests.\n"
        "3. The client carries the state (seq, running total) in each datagram:")
    client = CounterClient()
    rows = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        for i, add in enumerate(ADDS):
            if i == 1:
                old = server.pid
                server.kill()
                server = ServerProcess("protolab.udp", port)
                rows.append(("-", f"server restarted: pid {old} killed, pid {server.pid} "
                                  f"started on the same port", "", "", ""))
            reply = _ask(sock, client, add, port)
            result.replies.append(reply)
            result.pids.append(reply.pid)
            rows.append((reply.seq, f"seq={reply.seq} total={reply.total - add} add={add}",
                         reply.total, reply.seen, reply.pid))
    out(table(rows, ("seq", "datagram (client-carried state)", "total (answer)",
                      "server's own count (app memory)", "server pid")))
    continued = len(set(result.pids)) > 1 and result.replies[-1].total == sum(ADDS)
    result.verdict = ("server restarted between requests: workflow continued" if continued
                      else "server restarted between requests: workflow BROKEN")
    out(result.verdict)
    out("   the total survived because the client carried it; the server's own count restarted "
        "at 1 — that state lived in the old process")
    return server


FAULT_DATAGRAMS = 20


def _part5_faults(result: UdpDemoResult, server: ServerProcess, plan: FaultPlan, cap: Capture,
                  out: Out) -> None:
    """Datagrams 1..N through the fault proxy, each asking for +1: who notices the faults?"""
    run = result.faults = FaultRun()
    with UdpFaultProxy(("127.0.0.1", result.port), plan) as proxy, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        cap.add_port(proxy.address[1])
        out(f"\n5. Faults: {FAULT_DATAGRAMS} datagrams (seq=1..{FAULT_DATAGRAMS}, each add=1) "
            f"from 127.0.0.1:{sock.getsockname()[1]} through the fault proxy "
            f"{proxy.address[0]}:{proxy.address[1]} ({plan.describe()}), without waiting:")
        for seq in range(1, FAULT_DATAGRAMS + 1):
            try:
                sock.sendto(f"seq={seq} total=0 add=1".encode(), proxy.address)
            except OSError:
                run.send_errors += 1
            run.sent += 1
        sock.settimeout(0.4 + 2 * plan.delay)  # quiet this long: every survivor is in
        seen = []
        while True:
            try:
                data, _ = sock.recvfrom(2048)
            except TimeoutError:
                break
            reply = parse_reply(data)
            if reply is not None:
                run.replies.append(reply.seq)
                seen.append(reply.seen)
    run.decisions = fault_line(proxy.core)
    # The server's own count (seen=) stood at the last reply of part 3 before this part.
    run.server_counted = max(seen) - result.replies[-1].seen if seen else 0
    missing = sorted(set(range(1, FAULT_DATAGRAMS + 1)) - set(run.replies))
    twice = sorted(q for q in set(run.replies) if run.replies.count(q) > 1)
    out(f"   the sender: {run.sent} sendto() calls, {run.send_errors} errors — its kernel "
        f"reported every one as sent")
    out(f"   the proxy (its app memory): {run.decisions}")
    out(f"   replies, in arrival order: {' '.join(map(str, run.replies)) or 'none'}")
    out(f"   never answered: {' '.join(map(str, missing)) or 'none'}; answered twice: "
        f"{' '.join(map(str, twice)) or 'none'}; the server's own count went up by "
        f"{run.server_counted} (at least: a lost reply hides the last)")
    out("   nothing in UDP noticed: no error, no ICMP, no retransmission — only an application "
        "that numbers its datagrams (like this one) can tell what was lost, doubled or "
        "reordered")


def _part4(result: UdpDemoResult, server: ServerProcess, cap: Capture, out: Out) -> None:
    port = result.port
    server.kill()
    out(f"\n4. The server is down (port {port} unbound). A datagram from an unconnected and from "
        f"a connected client socket:")
    unconnected = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    connected = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        unconnected.bind(("127.0.0.1", 0))
        connected.connect(("127.0.0.1", port))
        unconnected.sendto(b"seq=1 total=0 add=1", ("127.0.0.1", port))
        connected.send(b"seq=1 total=0 add=1")
        connected.settimeout(2.0)
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
        result.icmp_seen = sum(1 for d in cap.decoded() if d.icmp_type == 3 and d.icmp_code == 3
                               and d.quoted is not None and d.quoted.dport == port)
    icmp = (f"{result.icmp_seen} ICMP port unreachable captured" if result.icmp_seen is not None
            else "ICMP port unreachable each (capture to see them)")
    out(f"   the kernel answered both with {icmp}.\n"
        f"   unconnected socket: {result.unconnected_saw} — the kernel does not report ICMP "
        f"errors to unconnected UDP sockets (it cannot know which peer they are about)\n"
        f"   connected socket: {result.connected_saw} on the next recv — connect() gave the "
        f"kernel one peer to attach the error to (the only 'state' a UDP socket can have)")


#: The closing table: what state this protocol has, who holds it, what losing it does.
#: A replay of the reference capture prints it too.
WHERE_STATE_LIVES = ("Where state lives in UDP:", (
        ("the server's port binding", "server kernel", "datagrams get ICMP port unreachable "
         "until a new process binds the port; then all is well"),
        ("per-peer connection state", "nobody: UDP has none", "nothing to lose"),
        ("the workflow's state (seq, total)", "the client, carried in each datagram",
         "the client would have to start over"),
        ("the server's own count", "server app memory", "reset by a restart: the litmus test "
         "shows it"),
        ("a connected socket's peer", "client kernel (connect())",
         "only where ICMP errors are reported, and which source is accepted"),
))


def _summary(out: Callable[[str], None]) -> None:
    print_where(WHERE_STATE_LIVES, out)
