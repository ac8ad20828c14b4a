"""`protolab tcp-demo`: TCP's state lives in two kernels, keyed by the 4-tuple.

Where state lives: each endpoint's kernel holds a connection entry (state, sequence numbers,
windows); the applications hold only their sockets. The demo shows the entries change state, next
to the packets that changed them, as protolab's model predicts from the packets and as the kernel
itself records; then takes the state away (kill the server, forge a segment, knock on a port with
no socket, reconnect) and shows HTTP's requests carrying their own state over TCP.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from protolab.annotate import Row
from protolab.capture import Capture, CaptureSummary, capture_denied_reason
from protolab.kstate import (
    KernelTransition,
    TcpStateTrace,
    monotonic_offset,
    socket_table,
    tcp_info_state,
)
from protolab.packets import Decoded
from protolab.paths import default_capture_path
from protolab.proc import ServerProcess
from protolab.report import capture_off_line, indent, print_where, show_capture, table
from protolab.tcp import RST, SYN, TcpObserver, Transition
from protolab.tcp import Flow as TcpFlow
from protolab.tcpnet import EchoServer, StatelessHttpServer, http_get

LAB = "tcp-demo"
Out = Callable[[str], None]


@dataclass
class TcpDemoResult:
    server: tuple[str, int] = ("", 0)
    client: tuple[str, int] = ("", 0)
    snapshots: list[tuple[str, str, str]] = field(default_factory=list)  #: step, client, server
    kernel: list[KernelTransition] = field(default_factory=list)
    model: list[Transition] = field(default_factory=list)
    agree: bool | None = None  #: None when the kernel's record was not available
    time_wait: bool = False
    kill_rst_seen: bool | None = None
    kill_client_error: str = ""
    forged_sent: bool = False
    forged_reply: str = ""  #: what the kernel answered the out-of-window segment with
    echo_received: bytes = b""  #: everything the echo server's application was given
    noport_rst_seen: bool | None = None
    reconnect: list[tuple[tuple[str, int], int | None]] = field(default_factory=list)
    http: list[tuple[str, str, tuple[str, int]]] = field(default_factory=list)
    http_verdict: str = ""
    capture: CaptureSummary | None = None
    rows: list[Row] = field(default_factory=list)

    def problem(self) -> str:
        """Why this run does not tell the demo's story, or "" when it does."""
        if not self.http_verdict.endswith("workflow continued"):
            return self.http_verdict or "the HTTP part did not run"
        return "protolab's model disagrees with the kernel" if self.agree is False else ""



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
        result.kernel = _assign_unbound(trace.transitions, result.client, result.server)
        cap.drain(rounds=1)
        _timeline(result, trace, cap, offset, out)
        _part3(result, cap, out)
        _part4(result, cap, out)
    result.capture = cap.summary
    if cap.active:
        result.rows = show_capture(cap.summary, out)
    elif trace.reason:
        out(f"\n(the kernel's transition record is off: {trace.reason})")
    _summary(out)
    return result


# -- 1 and 2: the state machine, live -------------------------------------------------------------


def _part1(listener: socket.socket, result: TcpDemoResult, out: Out) -> None:
    out(f"1. A connection's life, step by step; the kernel's own view (TCP_INFO, /proc/net/tcp) "
        f"after each step. Server {_ep(result.server)}.")
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
    snap("5 bytes each way", tcp_info_state(client), tcp_info_state(conn))
    client.shutdown(socket.SHUT_WR)
    eof = conn.recv(100)
    snap(f"client shutdown(SHUT_WR): FIN; server read {eof!r} (EOF)", tcp_info_state(client),
         tcp_info_state(conn))
    conn.close()
    _wait_readable(client)
    client.recv(100)
    tw = [e for e in socket_table("tcp")
          if e.local == _ep(result.client) and e.remote == _ep(result.server)]
    result.time_wait = any(e.state == "TIME_WAIT" for e in tw)
    snap("server close(): FIN; client ACKs", tcp_info_state(client) + (
        " (TIME_WAIT entry in /proc/net/tcp)" if result.time_wait else ""), "(socket closed)")
    client.close()
    out(indent(table(snaps, ("step", "client socket (kernel)", "server socket (kernel)"))))
    out("   The client closed first, so its kernel keeps the 4-tuple in TIME_WAIT (2*MSL) to "
        "absorb stray segments; the server's entry is gone.")


def _wait_readable(sock: socket.socket, timeout: float = 2.0) -> None:
    select.select([sock], [], [], timeout)


def _assign_unbound(kernel: list[KernelTransition], client: tuple[str, int],
                    server: tuple[str, int]) -> list[KernelTransition]:
    """connect() moves to SYN_SENT before the kernel picks the source port: name it."""
    fixed = []
    for k in kernel:
        if k.local.endswith(":0") and k.remote == _ep(server) and k.new == "SYN_SENT":
            k = KernelTransition(k.time, _ep(client), k.remote, k.old, k.new)
        fixed.append(k)
    return fixed


def compare(model: list[Transition], kernel: list[KernelTransition], client: str, server: str,
            time_wait: bool) -> tuple[bool, list[tuple[str, str, str]]]:
    """Model and kernel transitions per endpoint, side by side; True when they are the same."""
    rows = []
    same = True
    for role, local, remote in (("client", client, server), ("server", server, client)):
        mine = [f"{t.old.value}→{t.new.value}" for t in model if t.endpoint == local]
        theirs = []
        for k in kernel:
            if k.local == local and k.remote == remote:
                new = k.new
                if role == "client" and k.old == "FIN_WAIT_2" and new == "CLOSED" and time_wait:
                    new = "TIME_WAIT"  # the timewait socket takes over; see protolab.kstate
                theirs.append(f"{k.old}→{new}")
        same &= mine == theirs
        for i in range(max(len(mine), len(theirs))):
            a = mine[i] if i < len(mine) else "-"
            b = theirs[i] if i < len(theirs) else "-"
            rows.append((role, a, b, "yes" if a == b else "NO"))
    return same, rows


def _timeline(result: TcpDemoResult, trace: TcpStateTrace, cap: Capture, offset: float,
              out: Out) -> None:
    observer = TcpObserver()
    client, server = _ep(result.client), _ep(result.server)
    events: list[tuple[float, str, str, str]] = []
    for n, d in enumerate(cap.decoded(), 1):
        if {d.endpoint("src"), d.endpoint("dst")} != {client, server}:
            continue
        view = observer.feed(d, n)
        result.model.extend(view.transitions)
        who = "client→server" if d.endpoint("src") == client else "server→client"
        flags = "/".join(d.tcp.flag_names())
        moves = ", ".join(f"{t.role.value} {t.old.value}→{t.new.value}" for t in view.transitions)
        events.append((d.time, f"#{n} {who} [{flags}] seq={view.rel_seq} len={view.length}",
                       moves, ""))
    for k in result.kernel:
        who = "listener" if k.remote.startswith("0.0.0.0") else \
            "client" if k.local == client else "server" if k.local == server else k.local
        events.append((k.time + offset, "", "", f"{who} {k.old}→{k.new}"))
    if not events:
        out(f"\n2. (capture to see the timeline of packets and transitions; kernel record: "
            f"{'on' if trace.enabled else trace.reason})")
        return
    t0 = min(e[0] for e in events)
    events.sort(key=lambda e: e[0])
    out("\n2. Timeline of connection 1: each packet, the transitions protolab's model derives "
        "from it, and the transitions the kernel recorded (tracepoint sock:inet_sock_set_state)")
    out(indent(table([(f"{(t - t0) * 1000:.3f}", *rest) for t, *rest in events],
                       ("ms", "packet", "model (from the packet)", "kernel (its own record)"))))
    if not trace.enabled:
        out(f"   (kernel record unavailable: {trace.reason})")
        return
    if not result.model:
        out("   (protolab's model works from the packets: capture to compare it with the kernel)")
        return
    result.agree, rows = compare(result.model, result.kernel, client, server, result.time_wait)
    out(indent(table(rows, ("socket", "model", "kernel", "same"))))
    out("   protolab's model " + ("AGREES with the kernel on every transition" if result.agree
                                   else "DISAGREES with the kernel (see NO above)"))


# -- 3: lose the state, lose the connection --------------------------------------------------------


def _part3(result: TcpDemoResult, cap: Capture, out: Out) -> None:
    out("\n3. Lose the state, lose the connection")
    _kill_server(result, cap, out)
    with EchoServer() as echo:
        cap.add_port(echo.address[1])
        c = socket.create_connection(echo.address)
        peer = c.getsockname()
        c.sendall(b"hello")
        c.recv(100)
        echo.wait_received(peer, 5)
        _forge_out_of_window(result, cap, c, echo.address, out)
        c.sendall(b"after")
        c.recv(100)
        echo.wait_received(peer, 10)
        result.echo_received = echo.received.get(peer, b"")
        out(f"   the server application was given exactly {result.echo_received!r}"
            + (" — the forged bytes never reached it" if b"FORGED" not in result.echo_received
               else " — INCLUDING the forged bytes"))
        _ack_to_no_socket(result, cap, out)
        c2 = socket.create_connection(echo.address)
        _reconnect(result, cap, c, c2, echo.address, out)
        c.close()
        c2.close()


def _kill_server(result: TcpDemoResult, cap: Capture, out: Out) -> None:
    with ServerProcess("protolab.tcpnet") as server:
        port = server.port
        cap.add_port(port)
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(b"ping")
        c.recv(100)
        server.kill()
        _wait_readable(c)
        eof = c.recv(100)
        c.sendall(b"anyone there?")
        cport = c.getsockname()[1]
        if cap.active:
            result.kill_rst_seen = cap.wait_for(
                lambda d: d.tcp is not None and d.sport == port and d.dport == cport
                and bool(d.tcp.flags & RST))
        _wait_readable(c)
        try:
            c.sendall(b"hello?")
            c.recv(100)
            result.kill_client_error = "no error"
        except OSError as exc:
            result.kill_client_error = type(exc).__name__
        c.close()
    proc = server.proc
    rst = {True: "the server's kernel answered RST", False: "no RST was captured",
           None: "(capture to see the RST)"}[result.kill_rst_seen]
    out(f"   (a) killed the server process (pid {proc.pid}) mid-connection: its kernel closed the "
        f"socket (FIN, client read {eof!r});\n       the client's next send: {rst}; the "
        f"client's next call raised {result.kill_client_error}")


def _connection_state(cap: Capture, local: tuple[str, int],
                      server: tuple[str, int]) -> TcpFlow:
    """Both kernels' state for one live connection, rebuilt from everything captured so far
    (its sequence numbers are what a forged segment must use, or avoid)."""
    cap.drain(rounds=1)
    observer = TcpObserver()
    for n, d in enumerate(cap.decoded(), 1):
        observer.feed(d, n)
    return observer.flows[frozenset((_ep(local), _ep(server)))]


def _raw_send(packet: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        raw.sendto(packet, ("127.0.0.1", 0))


def _forge_out_of_window(result: TcpDemoResult, cap: Capture, c: socket.socket,
                         server: tuple[str, int], out: Out) -> None:
    if not cap.active or capture_denied_reason():
        out("   (b) forging a segment needs root (raw sockets): skipped")
        return
    from scapy.layers.inet import IP, TCP

    local = c.getsockname()
    flow = _connection_state(cap, local, server)
    seq = (flow.client.snd_nxt + (1 << 24)) & 0xFFFFFFFF
    forged = IP(src=local[0], dst=server[0]) / TCP(
        sport=local[1], dport=server[1], flags="PA", seq=seq, ack=flow.client.rcv_nxt,
        window=65535) / b"FORGED"
    sent_at = time.time()
    _raw_send(bytes(forged))
    result.forged_sent = True

    def answer(d: Decoded) -> bool:
        return d.tcp is not None and d.sport == server[1] and d.dport == local[1] \
            and d.time >= sent_at - 0.001
    got = cap.wait_for(answer, timeout=0.5)
    reply = [d for d in cap.decoded() if answer(d)]
    result.forged_reply = ("/".join(reply[0].tcp.flag_names()) if got and reply else "nothing")
    reply = ("an ACK of what it really expects" if result.forged_reply == "ACK"
             else result.forged_reply)
    out(f"   (b) a segment crafted with scapy on the live connection, seq 16 MiB beyond what "
        f"the server expects:\n       the server's kernel answered with {reply} "
        f"(RFC 9293 3.10.7.4) and dropped it")


def _ack_to_no_socket(result: TcpDemoResult, cap: Capture, out: Out) -> None:
    if not cap.active or capture_denied_reason():
        out("   (c) crafting a segment needs root (raw sockets): skipped")
        return
    from scapy.layers.inet import IP, TCP

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    cap.add_port(port)
    _raw_send(bytes(IP(src="127.0.0.1", dst="127.0.0.1") / TCP(
        sport=40404, dport=port, flags="A", seq=1000, ack=5000)))
    result.noport_rst_seen = cap.wait_for(
        lambda d: d.tcp is not None and d.sport == port and bool(d.tcp.flags & RST))
    out(f"   (c) an ACK crafted with scapy to port {port}, where no socket is: "
        + ("RST — no state, no connection" if result.noport_rst_seen else "no RST captured"))


def _reconnect(result: TcpDemoResult, cap: Capture, c1: socket.socket, c2: socket.socket,
               server: tuple[str, int], out: Out) -> None:
    isns: dict[int, int] = {}
    if cap.active:
        cap.drain(rounds=1)
        for d in cap.decoded():
            if d.tcp is not None and d.tcp.flags & SYN and not d.tcp.flags & 0x10 \
                    and d.dport == server[1]:
                isns[d.sport] = d.tcp.seq
    rows = []
    for s in (c1, c2):
        local = s.getsockname()
        isn = isns.get(local[1])
        result.reconnect.append((local, isn))
        rows.append((f"{_ep(local)} → {_ep(server)}", isn if isn is not None else "(capture)"))
    entries = [e for e in socket_table("tcp") if e.remote == _ep(server)]
    out("   (d) the same client connects again: a new source port, a new 4-tuple, a new initial "
        "sequence number — a new connection, with its own entry in each kernel:")
    out(indent(table(rows, ("4-tuple (the key of the state)", "client ISN")), 7))
    out(f"       client kernel's table now holds {len(entries)} entries towards "
        f"{_ep(server)} (/proc/net/tcp)")


@dataclass
class TcpMove:
    """What happened when a TCP connection's next segment came from another address."""

    attempted: bool  #: False without root (raw sockets) or capture
    rst_seen: bool = False  #: the server's kernel answered the moved segment with RST
    app_received: bytes = b""  #: what the server application got, all told
    new_source: str = ""


def move_tcp_connection(cap: Capture, new_host: str = "127.0.0.2") -> TcpMove:
    """Send a live connection's next segment, with the right sequence numbers, from `new_host`.

    The server's kernel looks the segment up by its 4-tuple, finds nothing, and answers RST: the
    state was keyed by the old address. (QUIC's migration, for comparison, is in the QUIC lab.)
    """
    if not cap.active or capture_denied_reason():
        return TcpMove(attempted=False)
    from scapy.layers.inet import IP, TCP

    with EchoServer() as echo:
        cap.add_port(echo.address[1])
        with socket.create_connection(echo.address) as c:
            local = c.getsockname()
            c.sendall(b"hello")
            c.recv(100)
            echo.wait_received(local, 5)
            flow = _connection_state(cap, local, echo.address)
            with socket.socket() as probe:  # a free port on the new address
                probe.bind((new_host, 0))
                moved_port = probe.getsockname()[1]
            _raw_send(bytes(IP(src=new_host, dst=echo.address[0]) / TCP(
                sport=moved_port, dport=echo.address[1], flags="PA",
                seq=flow.client.snd_nxt, ack=flow.client.rcv_nxt, window=65535) / b"moved"))
            rst = cap.wait_for(lambda d: d.tcp is not None and d.dst == new_host
                               and d.dport == moved_port and bool(d.tcp.flags & RST))
        return TcpMove(True, rst, b"".join(echo.received.values()), f"{new_host}:{moved_port}")


# -- 4: HTTP is stateless over stateful TCP --------------------------------------------------------


def _part4(result: TcpDemoResult, cap: Capture, out: Out) -> None:
    out("\n4. HTTP is stateless on top of stateful TCP: the server closes the connection after "
        "each response")
    with StatelessHttpServer() as http:
        cap.add_port(http.address[1])
        path = "/cart?add=apple"
        for add in ("pear", None):
            status, headers, body, local = http_get(http.address, path)
            result.http.append((path, body, local))
            out(f"   GET {path} from {_ep(local)} → {status}, Connection: "
                f"{headers.get('connection')}; {body.splitlines()[0]}")
            next_path = body.split("next: ", 1)[1].strip()
            path = f"{next_path}&add={add}" if add else next_path
    locals_ = {r[2] for r in result.http}
    continued = len(locals_) == len(result.http) and "apple, pear" in result.http[-1][1]
    result.http_verdict = ("connection closed by the server between requests: workflow "
                           "continued" if continued else "workflow broken")
    out(f"   {result.http_verdict} — a new TCP connection (new 4-tuple) each time; the cart "
        f"travelled in the request")


#: The closing table: what state this protocol has, who holds it, what losing it does.
#: A replay of the reference capture prints it too.
WHERE_STATE_LIVES = ("Where state lives in TCP:", (
        ("connection entry: state, SND.NXT, RCV.NXT, windows", "both kernels, keyed by 4-tuple",
         "the other side's next segment gets RST; the connection is over"),
        ("the socket (file descriptor)", "the application, pointing at its kernel's entry",
         "the kernel closes the connection (FIN, or RST if data was unread)"),
        ("TIME_WAIT entry", "the kernel of the side that closed first",
         "a delayed segment from the old connection could be taken for a new one"),
        ("the request's meaning (URL, cookies, body)", "the packet (HTTP message)",
         "nothing: a new connection carries the next request just as well"),
))


def _summary(out: Callable[[str], None]) -> None:
    print_where(WHERE_STATE_LIVES, out)
