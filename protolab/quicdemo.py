"""`protolab quic-demo`: stateful connections on stateless UDP, keyed by connection ID.

Where state lives: each endpoint's connection table, in its own app memory (QUIC runs in user
space), keyed by connection IDs the endpoint chose itself; every packet carries the receiver's key
as its DCID. The demo rotates the key, moves the client to another address (the connection survives,
a TCP connection moved the same way does not), restarts the server (the table is gone, so is the
connection), and shows a Retry whose token carries the state the server refused to keep.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from protolab.annotate import Row
from protolab.capture import Capture, CaptureSummary
from protolab.faults import FaultPlan, UdpFaultProxy, fault_line
from protolab.paths import default_capture_path
from protolab.pcap import write_text_atomic
from protolab.quic import (
    LossReport,
    QuicClientCore,
    QuicServerCore,
    loss_report,
    make_credentials,
    new_qlog,
    qlog_json,
)
from protolab.report import capture_off_line, indent, print_where, show_capture, table
from protolab.tcpdemo import TcpMove, move_tcp_connection
from protolab.udpnet import UdpServerThread

LAB = "quic-demo"
Out = Callable[[str], None]
RESTART_IDLE_TIMEOUT = 0.8  #: the client's idle timeout, short so the restart step ends quickly


@dataclass
class QuicDemoResult:
    server: tuple[str, int] = ("", 0)
    client_cid: bytes = b""
    server_cids: list[bytes] = field(default_factory=list)  #: keys of the server's table
    rotated: tuple[bytes, bytes] = (b"", b"")  #: client's DCID before and after rotation
    migrated_to: tuple[str, int] = ("", 0)
    server_paths: list[tuple[tuple[str, int], bool]] = field(default_factory=list)
    server_received: bytes = b""
    tcp_move: TcpMove | None = None
    restart_outcome: str = ""
    restart_unknown_cid: int = 0
    reconnected: bool = False
    retry_sent: int = 0
    retry_table_before_token: int = -1  #: entries in the Retry server's table before the token
    retry_connected: bool = False
    keylog: Path | None = None
    qlog: Path | None = None
    tshark_command: str = ""
    loss: LossReport | None = None  #: part 7, with faults
    loss_complete: bool = False
    capture: CaptureSummary | None = None
    rows: list[Row] = field(default_factory=list)

    def problem(self) -> str:
        """Why this run does not tell the demo's story, or "" when it does."""
        if not (self.reconnected and self.retry_connected):
            return "a handshake failed"
        if self.server_paths[:1] != [(self.migrated_to, True)]:
            return "the migrated path was not validated"
        if self.loss is not None and not self.loss_complete:
            return "the stream did not complete through the fault proxy"
        return ""


def pump(core, sock: socket.socket, until: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Drive a sans-IO QUIC endpoint on a socket: transmit, wait for a datagram or the timer,
    feed it in, until `until()` holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        for data, addr in core.datagrams_to_send(now):
            sock.sendto(data, addr)
        if until() or now >= deadline:
            return until()
        timer = core.next_timer()
        wake = min(deadline, timer) if timer is not None else deadline
        readable, _, _ = select.select([sock], [], [], max(0.0, wake - now))
        if readable:
            data, addr = sock.recvfrom(65535)
            core.receive(data, addr, time.monotonic())


def _udp(host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    return s


def _hex(cid: bytes) -> str:
    return cid.hex()


def run_quic_demo(capture: bool = True, pcap: str | Path | None = None, out: Out = print,
                  capture_off_reason: str = "--no-capture",
                  faults: FaultPlan | None = None) -> QuicDemoResult:
    path = Path(pcap) if pcap else default_capture_path(LAB)
    result = QuicDemoResult(keylog=path.with_suffix(".keys"), qlog=path.with_suffix(".qlog"))
    creds = make_credentials()
    qlog = new_qlog()
    server = UdpServerThread(QuicServerCore(creds)).start()
    retry_server = UdpServerThread(QuicServerCore(creds, retry=True)).start()
    result.server = server.address
    keylog_lines: list[str] = []
    keylog = _LineSink(keylog_lines)
    try:
        with Capture([server.address[1], retry_server.address[1]], path, enabled=capture,
                     off_reason=capture_off_reason) as cap:
            if not cap.active:
                out(capture_off_line(cap.summary, LAB, capture_off_reason))
            server = _parts_1_to_4(result, server, creds, keylog, qlog, cap, out)
            _part5(result, retry_server, creds, keylog, out)
            if faults is not None:
                _part_loss(result, creds, keylog, faults, cap, out)
        result.capture = cap.summary
    finally:
        server.stop()
        retry_server.stop()
    write_text_atomic(result.keylog, "".join(keylog_lines))
    write_text_atomic(result.qlog, qlog_json(qlog))
    _part6(result, path, cap.active, out)
    if cap.active:
        result.rows = show_capture(cap.summary, out)
    _summary(out)
    return result


class _LineSink:
    """A text 'file' for aioquic's secrets_log_file that collects lines in memory, so the key log
    is written atomically next to the capture at the end."""

    def __init__(self, lines: list[str]) -> None:
        self._lines = lines

    def write(self, text: str) -> int:
        self._lines.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def _parts_1_to_4(result: QuicDemoResult, server: UdpServerThread, creds, keylog, qlog,
                  cap: Capture, out: Out) -> UdpServerThread:
    sock = _udp()
    client = QuicClientCore(creds, server.address, time.monotonic(), keylog=keylog, qlog=qlog,
                            idle_timeout=RESTART_IDLE_TIMEOUT)
    ok = pump(client, sock, lambda: client.log.handshake_done)
    client.send(b"hello")
    pump(client, sock, lambda: b"HELLO" in client.log.received)
    result.client_cid = client.host_cid
    entry = server.core.connections()[0]
    result.server_cids = sorted(entry.cids)
    out(f"1. Handshake {'done' if ok else 'FAILED'}; 'hello' echoed on stream {client.stream}. "
        f"Every packet carries the receiver's key (DCID).")
    out(f"   client's table (client app memory): key {_hex(client.host_cid)} — servers send "
        f"to this DCID")
    out(f"   server's table (server app memory): {len(entry.cids)} keys for this one connection "
        f"(it issued spares in NEW_CONNECTION_ID frames):")
    out(indent(table([(_hex(c), entry.number) for c in result.server_cids],
                     ("connection ID (key)", "connection")), 5))

    pump(client, sock, lambda: client.spare_cids > 0, timeout=1.0)
    result.rotated = client.rotate()
    client.send(b" rotated")
    pump(client, sock, lambda: b"ROTATED" in client.log.received)
    out(f"\n2. The client calls change_connection_id(): DCID {_hex(result.rotated[0])} → "
        f"{_hex(result.rotated[1])} (retiring the old one); the stream goes on: "
        f"{client.log.received!r}")

    new_sock = _udp("127.0.0.2")
    result.migrated_to = new_sock.getsockname()
    client.send(b" moved")
    core = server.core

    def validated() -> bool:
        paths = core.paths(entry)
        return bool(paths) and paths[0] == (result.migrated_to, True) \
            and b"MOVED" in client.log.received
    pump(client, new_sock, validated)
    sock.close()
    result.server_paths = core.paths(entry)
    result.server_received = entry.received
    out(f"\n3. Migration: the client now sends from a new socket, {result.migrated_to[0]}:"
        f"{result.migrated_to[1]}, with the same DCID. The server finds the connection by its "
        f"CID, checks the new path (PATH_CHALLENGE/PATH_RESPONSE, RFC 9000 section 8.2) and "
        f"goes on:")
    out(f"   server's paths for connection {entry.number}: "
        + ", ".join(f"{a[0]}:{a[1]} ({'validated' if v else 'not validated'})"
                    for a, v in result.server_paths))
    out(f"   server application received {result.server_received!r} on one stream")
    result.tcp_move = move_tcp_connection(cap)
    rows = [("QUIC", "connection ID in every packet",
             "continued" if validated() else "broken", "the server found it by CID")]
    if result.tcp_move.attempted:
        rows.append(("TCP (from the TCP lab)", "4-tuple",
                     "reset" if result.tcp_move.rst_seen else "?",
                     f"segment from {result.tcp_move.new_source}: server kernel answered RST; "
                     f"app got {result.tcp_move.app_received!r} only"))
    else:
        rows.append(("TCP (from the TCP lab)", "4-tuple", "(needs root to forge)",
                     "a TCP socket cannot change address: a new one is a new connection"))
    out(indent(table(rows, ("protocol", "state keyed by", "after the move", "why"))))

    port = server.address[1]
    server.stop()
    server = UdpServerThread(QuicServerCore(creds), port=port).start()
    client.send(b" anyone there?")
    pump(client, new_sock, lambda: client.log.terminated is not None,
         timeout=RESTART_IDLE_TIMEOUT + 1.5)
    result.restart_outcome = client.log.terminated or "still waiting"
    result.restart_unknown_cid = server.core.counters.unknown_cid
    out(f"\n4. The server restarts: its socket and its QUIC state are thrown away and a new "
        f"server binds port {port} with an empty connection table. The client's next packets "
        f"carry DCID {_hex(client.dcid)}: no entry has that key.")
    out(f"   server dropped {result.restart_unknown_cid} datagrams for unknown connection IDs "
        f"(this server sends no stateless reset, RFC 9000 section 10.3)")
    out(f"   client saw no answer; its loss timers retried, then: {result.restart_outcome} "
        f"(idle timeout {RESTART_IDLE_TIMEOUT} s here)")
    new_sock.close()
    again = _udp()
    fresh = QuicClientCore(creds, server.address, time.monotonic(), keylog=keylog, qlog=qlog)
    result.reconnected = pump(fresh, again, lambda: fresh.log.handshake_done)
    fresh.close()
    pump(fresh, again, lambda: True)
    again.close()
    out(f"   a new connection (new handshake, new CIDs): "
        f"{'established' if result.reconnected else 'FAILED'} — QUIC is stateful")
    return server


def _part5(result: QuicDemoResult, server: UdpServerThread, creds, keylog, out: Out) -> None:
    sock = _udp()
    client = QuicClientCore(creds, server.address, time.monotonic(), keylog=keylog)
    for data, addr in client.datagrams_to_send(time.monotonic()):
        sock.sendto(data, addr)
    server.wait_until(lambda s: s.core.counters.retries_sent >= 1)
    result.retry_sent = server.core.counters.retries_sent
    result.retry_table_before_token = len(server.core.table)
    result.retry_connected = pump(client, sock, lambda: client.log.handshake_done)
    after = len(server.core.table)
    client.close()
    pump(client, sock, lambda: True)
    sock.close()
    out(f"\n5. Retry (address validation on, port {server.address[1]}): the first Initial got a "
        f"Retry; the server's table then held {result.retry_table_before_token} entries — it "
        f"kept nothing and put the client's address and original DCID in the token.")
    out(f"   the client's second Initial echoed the token; the server checked it and only then "
        f"created the connection ({after} table keys): "
        f"{'established' if result.retry_connected else 'FAILED'}. The token carried the "
        f"state — the same idea as a JWT.")


LOSS_CHUNKS, LOSS_CHUNK = 40, 1000


def _part_loss(result: QuicDemoResult, creds, keylog, plan: FaultPlan, cap: Capture,
               out: Out) -> None:
    """A connection through the fault proxy: loss recovery and ACK ranges, in the client."""
    server = UdpServerThread(QuicServerCore(creds)).start()
    cap.add_port(server.address[1])
    qlog = new_qlog()
    try:
        with UdpFaultProxy(server.address, plan) as proxy:
            cap.add_port(proxy.address[1])
            sock = _udp()
            client = QuicClientCore(creds, proxy.address, time.monotonic(), keylog=keylog,
                                    qlog=qlog)
            total = LOSS_CHUNKS * LOSS_CHUNK
            connected = pump(client, sock, lambda: client.log.handshake_done, timeout=10.0)
            for _ in range(LOSS_CHUNKS):
                client.send(b"x" * LOSS_CHUNK)
            done = connected and pump(client, sock, lambda: len(client.log.received) >= total,
                                      timeout=15.0)
            client.close()
            pump(client, sock, lambda: True)
            sock.close()
            decisions = fault_line(proxy.core)
    finally:
        server.stop()
    report = result.loss = loss_report(qlog)
    result.loss_complete = done
    out(f"\n7. Loss recovery: a new connection through the fault proxy ({plan.describe()}); "
        f"{total} bytes sent on one stream and echoed back:")
    out(f"   the proxy (its app memory): {decisions}")
    out(f"   the client's loss recovery (its app memory, RFC 9002 section 6) declared "
        f"{len(report.lost)} of its packets lost"
        + (f" (numbers {', '.join(map(str, report.lost[:10]))}"
           f"{', ...' if len(report.lost) > 10 else ''}) and sent their frames again in new "
           f"packets" if report.lost else ""))
    if report.gapped_acks:
        out(f"   {len(report.gapped_acks)} of the {report.acks} ACK frames the server sent had "
            f"gaps — ACK ranges, e.g. {_ranges(report.gapped_acks[0])}: the numbers between two "
            f"ranges never arrived (RFC 9000 section 19.3)")
    else:
        out(f"   none of the {report.acks} ACK frames the client received had a gap")
    out(f"   all {total} bytes came back in order: {'yes' if done else 'NO'} — the stream's "
        f"offsets and the retransmission queue live in both endpoints; the network kept nothing")


def _ranges(ranges: tuple[tuple[int, int], ...]) -> str:
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges)


def _part6(result: QuicDemoResult, path: Path, captured: bool, out: Out) -> None:
    result.tshark_command = (f"tshark -r {path} -d udp.port=={result.server[1]},quic "
                             f"-o tls.keylog_file:{result.keylog} -Y quic.stream_data")
    out(f"\n6. TLS secrets (SSLKEYLOGFILE format) → {result.keylog}; qlog → {result.qlog}")
    out("   decrypt the capture with:" if captured else "   with a capture, decrypt it with:")
    out(f"   {result.tshark_command}")


#: The closing table: what state this protocol has, who holds it, what losing it does.
#: A replay of the reference capture prints it too.
WHERE_STATE_LIVES = ("Where state lives in QUIC:", (
        ("connection table (keys: the CIDs this side issued)", "each side's app memory",
         "the peer's packets match no entry: dropped; the connection is over"),
        ("the DCID", "every packet", "nothing: it is the lookup key, carried each time"),
        ("the 4-tuple", "only the current path",
         "nothing: the connection moves; the new path is validated"),
        ("TLS keys, stream offsets, loss recovery", "each side's app memory (user space)",
         "the connection cannot go on: a new handshake is needed"),
        ("Retry token", "the client, until it echoes it", "the server needs a new Retry"),
))


def _summary(out: Callable[[str], None]) -> None:
    print_where(WHERE_STATE_LIVES, out)
