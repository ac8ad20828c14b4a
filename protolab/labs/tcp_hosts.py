"""`protolab tcp-demo --hosts`: the TCP lab between two hosts, each with a kernel of its own.

Where state lives: on loopback "the client's kernel" and "the server's kernel" are one table. Here
the client and the server are two network namespaces (`protolab.net.topology`) joined by a veth
link, so each connection entry is in its own host's table, read inside that host
(/proc/thread-self/net/tcp from a thread in its namespace, `kernel_view.socket_table(within=)`),
next to the packets captured at both ends (client:eth0, server:eth0, one pcapng).

What runs across the hosts: part 1 (one connection's life: TCP_INFO and each host's table after
each step), part 3a (the server process killed: its entry stays in the server's kernel, the
client's kernel holds CLOSE_WAIT, the next data meets RST) and part 3c (an ACK to a port with no
socket). The kernel's transition record (tracepoint sock:inet_sock_set_state) is one record for
the whole machine: tracefs is not per namespace, so its lines are attributed to a host by their
addresses. Not run across hosts, printed as "not tried here" with the reason: the forged segment
(3b), the reconnect (3d) and HTTP (4); the loopback run shows them.
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from protolab.analysis.annotate import Row
from protolab.analysis.observe import Findings, Observation
from protolab.labs import tcp
from protolab.labs.output import (
    indent,
    print_state_table,
    print_summary,
    show_capture,
    table,
)
from protolab.net.topology import Host, Interface, Topology
from protolab.protocols.tcp import RST, Transition
from protolab.wire.kernel_view import (
    KernelTransition,
    SocketEntry,
    TcpStateTrace,
    socket_table,
    tcp_info_state,
)
from protolab.wire.multicapture import CapturePoint, MultiCapture, MultiSummary
from protolab.wire.paths import hosts_capture_path

LAB = "tcp-demo"
Out = Callable[[str], None]
WHERE_TITLE = "Where state lives in TCP, between two hosts:"
#: RFC 2544 benchmarking prefix (198.18.0.0/15): no other lab's hosts use these addresses, so the
#: machine-wide tracepoint's lines are told apart by them
CLIENT_CIDR, SERVER_CIDR = "198.18.1.1/24", "198.18.1.2/24"
NEEDS_ROOT = ("tcp-demo --hosts: needs root (network namespaces, veth links and capture are the "
              "kernel's): run `sudo protolab tcp-demo --hosts`, or `protolab tcp-demo` for the "
              "loopback lab")
TABLES = ("client", "server", "root")  #: whose table each step reads; root: the machine's own


@dataclass(frozen=True)
class TwoHosts:
    """client — server over one veth link."""

    client: Host
    server: Host
    client_if: Interface  #: client:eth0
    server_if: Interface  #: server:eth0


@dataclass(frozen=True)
class Reading:
    """One host's TCP table read at one step: the rows of the connection asked about."""

    time: float  #: epoch seconds, when read
    step: str
    host: str  #: "client", "server", or "root" (the machine's own namespace)
    rows: tuple[SocketEntry, ...]

    def text(self) -> str:
        return "; ".join(f"{e.local} → {e.remote} {e.state}" + ("" if e.inode else ", inode 0")
                         for e in self.rows) or "(no entry)"


@dataclass
class Killed:
    """Part 3a: the server process killed mid-connection."""

    pid: int = 0
    status: int | None = None
    client: str = ""  #: the client's endpoint
    server: str = ""  #: the killed server's endpoint
    eof: bytes | None = None  #: what the client read after the kill
    error: str = ""  #: what the client's call after the RST raised


@dataclass
class HostsResult:
    namespaces: tuple[str, ...] = ()
    server: tuple[str, int] = ("", 0)
    client: tuple[str, int] = ("", 0)
    snapshots: list[tuple[str, str, str]] = field(default_factory=list)  #: TCP_INFO per step
    readings: list[Reading] = field(default_factory=list)
    kernel: list[KernelTransition] = field(default_factory=list)
    trace_reason: str = ""
    model: list[Transition] = field(default_factory=list)
    comparison: list[tcp.Compared] = field(default_factory=list)
    timeline: list = field(default_factory=list)  #: `tcp_hosts_findings.Event`s, in time order
    client_info_closed: str = ""
    time_wait: SocketEntry | None = None  #: the client's TIME_WAIT entry, in its own table
    killed: Killed = field(default_factory=Killed)
    noport: int = 0
    capture: MultiSummary | None = None
    rows: list[Row] = field(default_factory=list)
    findings: Findings = field(default_factory=Findings)

    def finding(self, key: str) -> Observation | None:
        return self.findings.find(key)

    def problem(self) -> str:
        return self.findings.problem()

    def read(self, step: str, host: str) -> Reading | None:
        return next((r for r in self.readings if r.step == step and r.host == host), None)


def denied_reason() -> str | None:
    return None if os.geteuid() == 0 else NEEDS_ROOT


def two_hosts(topo: Topology) -> TwoHosts:
    client, server = topo.host("client"), topo.host("server")
    client_if, server_if = topo.link(client, "eth0", CLIENT_CIDR, server, "eth0", SERVER_CIDR)
    return TwoHosts(client, server, client_if, server_if)


def _ep(addr: tuple[str, int]) -> str:
    return f"{addr[0]}:{addr[1]}"


def run_tcp_hosts_demo(capture: bool = True, pcap: str | Path | None = None, out: Out = print,
                       capture_off_reason: str = "--no-capture") -> HostsResult:
    from protolab.labs import tcp_hosts_findings as found

    result = HostsResult()
    if (denied := denied_reason()) is not None:
        raise PermissionError(denied)
    path = Path(pcap) if pcap else hosts_capture_path(LAB)
    with Topology() as topo:
        net = two_hosts(topo)
        result.namespaces = (net.client.netns, net.server.netns)
        points = [CapturePoint(i.point, i.name, i.host.within)
                  for i in (net.client_if, net.server_if)]
        with MultiCapture(points, path, enabled=capture, off_reason=capture_off_reason) as cap:
            if not cap.active:
                out(f"capture off: {cap.summary.off_reason}; the demo runs anyway")
            _life(result, net, out)
            _kill(result, topo, net, cap, out)
            _no_socket(result, net, cap, out)
        result.capture = cap.summary
    if cap.active:
        result.rows = show_capture(cap.summary, out)
    found.report(result, cap.active, out)
    result.findings.where = found.where_rows(result)
    print_state_table(WHERE_TITLE, result.findings.where, out)
    print_summary(f"{LAB} --hosts", result.findings, out)
    return result


def _read(result: HostsResult, net: TwoHosts, step: str, a: str, b: str) -> None:
    """Each host's table (and the machine's own) read now: its rows of connection a ↔ b."""
    within = {"client": net.client.within, "server": net.server.within, "root": None}
    for host in TABLES:
        rows = tuple(e for e in socket_table("tcp", within[host], a.split(":")[0])
                     if {e.local, e.remote} == {a, b})
        result.readings.append(Reading(time.time(), step, host, rows))


def _until_gone(host: Host, local: str, remote: str, timeout: float = 1.0) -> None:
    """Re-read `host`'s table until it has no entry local → remote (or `timeout`)."""
    deadline = time.monotonic() + timeout
    while any(e.remote == remote for e in socket_table("tcp", host.within, local.split(":")[0])
              if e.local == local):
        if time.monotonic() > deadline:
            return
        time.sleep(0.002)


def _wait_readable(sock: socket.socket, timeout: float = 2.0) -> None:
    select.select([sock], [], [], timeout)


# -- part 1: one connection's life, each host's table after each step ----------------------------


STEPS = ("connect(); accept()", "send 5 bytes each way", "client shutdown(SHUT_WR)",
         "server close(); client reads EOF", "client close()")


def _life(result: HostsResult, net: TwoHosts, out: Out) -> None:
    listener = net.server.socket(kind=socket.SOCK_STREAM)
    listener.bind((net.server_if.address, 0))
    listener.listen(8)
    result.server = listener.getsockname()
    out(f"1. A connection's life between two hosts: client {net.client_if.address} "
        f"({net.client.netns}) — veth — server {_ep(result.server)} ({net.server.netns}). "
        f"After each step, each socket's TCP_INFO and each host's own table:")
    with TcpStateTrace(result.server[1]) as trace:
        _steps(result, net, listener)
    listener.close()
    result.kernel = [k for k in trace.transitions
                     if {k.local.split(":")[0], k.remote.split(":")[0]} & {
                         net.client_if.address, net.server_if.address}]
    result.trace_reason = trace.reason or ""
    out(indent(table(result.snapshots, ("step", "client socket (TCP_INFO)",
                                         "server socket (TCP_INFO)"))))
    rows = [(r.step, *(result.read(r.step, h).text() for h in TABLES))
            for r in result.readings if r.host == "client"]
    out(indent(table(rows, ("step", "client host's table", "server host's table",
                            "this machine's own table"), [22, 34, 34, 14])))


def _steps(result: HostsResult, net: TwoHosts, listener: socket.socket) -> None:
    snap = result.snapshots.append
    client = net.client.socket(kind=socket.SOCK_STREAM)
    client.settimeout(2)
    client.connect(result.server)
    conn, _ = listener.accept()
    conn.settimeout(2)
    result.client = client.getsockname()
    a, b = _ep(result.client), _ep(result.server)
    steps = iter(STEPS)

    def step(server_state: str, client_state: str = "") -> None:
        name = next(steps)
        snap((name, client_state or tcp_info_state(client), server_state))
        _read(result, net, name, a, b)

    step(tcp_info_state(conn))
    client.sendall(b"hello")
    conn.recv(100)
    conn.sendall(b"HELLO")
    client.recv(100)
    step(tcp_info_state(conn))
    client.shutdown(socket.SHUT_WR)
    conn.recv(100)
    step(tcp_info_state(conn))
    conn.close()
    _wait_readable(client)
    client.recv(100)
    result.client_info_closed = tcp_info_state(client)
    _until_gone(net.server, b, a)
    step("(closed by the application)")
    client.close()
    step("(closed by the application)", "(closed by the application)")
    tw = [e for e in result.read(STEPS[4], "client").rows if e.st == 6]
    result.time_wait = tw[0] if tw else None


# -- part 3a and 3c: the state taken away, across hosts -------------------------------------------


def _kill(result: HostsResult, topo: Topology, net: TwoHosts, cap: MultiCapture,
          out: Out) -> None:
    out("\n3a. The server process (in the server host) killed mid-connection; each host's "
        "table before, after the kill and after the client's next data:")
    k = result.killed
    proc = topo.spawn(net.server, "protolab.net.echo_server", ["0", net.server_if.address])
    k.pid = proc.pid
    c = net.client.socket(kind=socket.SOCK_STREAM)
    try:
        c.settimeout(2)
        c.connect((net.server_if.address, proc.port))
        c.sendall(b"ping")
        c.recv(100)
        k.client, k.server = _ep(c.getsockname()), f"{net.server_if.address}:{proc.port}"
        _read(result, net, "before the kill", k.client, k.server)
        k.status = proc.kill()
        _wait_readable(c)
        k.eof = c.recv(100)
        _read(result, net, "after the kill", k.client, k.server)
        c.sendall(b"anyone there?")
        port = c.getsockname()[1]
        cap.wait_for(lambda d: d.tcp is not None and d.dport == port and d.tcp.flags & RST
                     and d.interface == net.client_if.point)  # the answer reached the client
        k.error = _next_call(c)
        _read(result, net, "after the next data", k.client, k.server)
    finally:
        c.close()
    rows = [(step, *(result.read(step, h).text() for h in ("client", "server")))
            for step in ("before the kill", "after the kill", "after the next data")]
    out(indent(table(rows, ("step", "client host's table", "server host's table"))))
    out(f"   killed pid {k.pid} (exit {k.status}); the client read {k.eof!r}, then its next "
        f"call raised {k.error}")


def _next_call(c: socket.socket) -> str:
    """What the client's next send and receive meet: the error's name, or "no error"."""
    try:
        c.sendall(b"hello?")
        c.recv(100)
    except OSError as exc:
        return type(exc).__name__
    return "no error"


def _no_socket(result: HostsResult, net: TwoHosts, cap: MultiCapture, out: Out) -> None:
    out("\n3c. An ACK from the client host to a port of the server host where no socket is:")
    if not cap.active:
        out(f"   (not tried here: it is seen in the capture, which is off: "
            f"{cap.summary.off_reason})")
        return
    from scapy.layers.inet import IP, TCP

    probe = net.server.socket(kind=socket.SOCK_STREAM)
    probe.bind((net.server_if.address, 0))
    result.noport = probe.getsockname()[1]
    probe.close()
    server = f"{net.server_if.address}:{result.noport}"
    _read(result, net, "the ACK to no socket", f"{net.client_if.address}:40404", server)
    packet = bytes(IP(src=net.client_if.address, dst=net.server_if.address) / TCP(
        sport=40404, dport=result.noport, flags="A", seq=1000, ack=5000))
    net.client.within(lambda: _raw_send(packet, net.server_if.address))
    got = cap.wait_for(lambda d: d.tcp is not None and d.sport == result.noport
                       and d.dport == 40404 and d.interface == net.client_if.point)
    out(f"   sent from port 40404 to port {result.noport}: "
        f"{'an answer came back' if got else 'no answer came back'} (packets below)")


def _raw_send(packet: bytes, dst: str) -> None:
    """Send a whole IP packet from a raw socket of the calling thread's host, routed to `dst`."""
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        raw.sendto(packet, (dst, 0))


run = run_tcp_hosts_demo
