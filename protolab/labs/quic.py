"""`protolab quic-demo`: stateful connections on stateless UDP, keyed by connection ID.

Where state lives: each endpoint's connection table, in its own app memory (QUIC runs in user
space), keyed by connection IDs the endpoint chose itself; every packet carries the receiver's key
as its DCID. The demo rotates the key, moves the client to another address (the connection survives,
a TCP connection moved the same way does not), restarts the server (the table is gone, so is the
connection), and shows a Retry whose token carries the state the server refused to keep.

Every finding it prints is an `Observation` built from this run's data — the server core's table
keys before and after, the CIDs in use, aioquic's events and path flags, the packets of the
capture — and rendered from it; what is only explained is printed as an explanation.
"""

from __future__ import annotations

import datetime
import os
import select
import shlex
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
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
    print_state_table,
    print_summary,
    show_capture,
    table,
)
from protolab.labs.tcpmove import TcpMove, move_tcp_connection
from protolab.net.fault_proxy import UdpFaultProxy
from protolab.net.udpnet import UdpServerThread
from protolab.protocols.faults import FaultCounters, FaultPlan, fault_line
from protolab.protocols.quic import (
    LossReport,
    QuicClientCore,
    QuicHeader,
    QuicServerCore,
    loss_report,
    make_credentials,
    new_qlog,
    qlog_json,
)
from protolab.protocols.tcp import RST
from protolab.wire.capture import Capture, CaptureSummary
from protolab.wire.files import write_text_atomic
from protolab.wire.paths import default_capture_path

LAB = "quic-demo"
WHERE_TITLE = "Where state lives in QUIC:"
Out = Callable[[str], None]
Address = tuple[str, int]
RESTART_IDLE_TIMEOUT = 0.8  #: the client's idle timeout, short so the restart step ends quickly
MIGRATE_TO = "127.0.0.2"  #: the client's new address in part 3


@dataclass
class Restart:
    """The server restart as this run performed it. It is in-process: the server thread stops
    (its socket closes) and a new server core binds the same port, in the same process — so the
    evidence is the core object and its table before → after, not a PID."""

    port: int = 0
    pid: int = 0  #: this process: the same before and after
    core_before: int = 0  #: id() of the server core before the restart
    core_after: int = 0  #: id() of the server core serving the port afterwards
    keys_before: tuple[bytes, ...] = ()  #: the old core's table keys when it stopped
    keys_after: tuple[bytes, ...] = ()  #: the serving core's keys when the client gave up
    dcid: bytes = b""  #: the DCID the client kept sending after the restart
    dropped: int = 0  #: datagrams the serving core dropped: their DCID is in no table entry
    asked: bytes = b""  #: the stream data the client sent after the restart
    answered: bytes = b""  #: the stream data that came back after the restart
    terminated: str | None = None  #: aioquic's ConnectionTerminated reason, if it came
    waited: float = 0.0  #: seconds from the restart to the end of the wait
    fresh_addr: Address = ("", 0)  #: the new connection's client socket
    fresh_cid: bytes = b""  #: the new connection's client CID
    fresh_keys: tuple[bytes, ...] = ()  #: the serving core's keys after the new handshake
    reconnected: bool = False


@dataclass
class RetryRun:
    """Part 5: a server with address validation on (RFC 9000 section 8.1.2)."""

    server: Address = ("", 0)
    client: Address = ("", 0)
    sent: int = 0  #: Retry packets the server sent
    keys_at_retry: int = -1  #: its table's keys right after the Retry
    accepted: int = 0  #: tokens it validated
    keys_after: int = 0  #: its table's keys after the handshake
    connected: bool = False


@dataclass
class FloodRun:
    """Part 5, under load: a burst of fake Initials at a server that keeps state for at most
    `cap` peers it has not validated (RFC 9000 section 8.1). Not captured: the server's memory
    (its counters and its connections) is the evidence."""

    server: Address = ("", 0)
    cap: int = 0
    valid: int = 0  #: real ClientHellos sent, of clients that never answer
    garbage: int = 0  #: Initials whose protected part is random: they never decrypt
    received: int = 0  #: of them, datagrams the server took in
    half_open_before: int = -1
    half_open_after: int = -1  #: after the burst
    peak: int = 0  #: the most half-open connections it held at once
    in_memory: int = 0  #: connections in its memory after the burst
    retries_at_cap: int = 0  #: Initials answered with a Retry because of the cap
    undecryptable: int = 0  #: Initials dropped without state: nothing decrypted
    pruned: int = 0  #: connections the server had removed from memory by the burst's end
    connected: bool = False  #: a real client's handshake, after the burst
    tokens_accepted: int = 0  #: the real client's echoed token, validated


@dataclass
class LossRun:
    """Part 7: a connection through the fault proxy, with the client's qlog."""

    plan: FaultPlan
    proxy_port: int = 0  #: the captured leg: the client ↔ this port of the proxy
    total: int = 0  #: bytes sent on one stream
    received: int = 0  #: bytes echoed back
    decisions: str = ""  #: the proxy's decisions, one line
    counters: FaultCounters = field(default_factory=FaultCounters)


@dataclass
class QuicDemoResult:
    server: Address = ("", 0)
    client_addr: Address = ("", 0)
    handshake: bool = False
    stream: int = 0
    echo: bytes = b""  #: what came back for 'hello'
    client_cid: bytes = b""
    client_keys: frozenset[bytes] = frozenset()  #: every key the client's table held
    server_cids: list[bytes] = field(default_factory=list)  #: keys of the server's table
    connection: int = 0  #: the server's number for the connection
    spare_cids: int = 0  #: unused CIDs the server issued the client (NEW_CONNECTION_ID)
    server_keys_seen: frozenset[bytes] = frozenset()  #: every key the server's table held
    rotated: tuple[bytes, bytes] = (b"", b"")  #: client's DCID before and after rotation
    keys_around_rotation: tuple[tuple[bytes, ...], tuple[bytes, ...]] = ((), ())
    after_rotation: bytes = b""  #: the client's stream data after the rotation
    migrated_to: Address = ("", 0)
    paths_before: list[tuple[Address, bool]] = field(default_factory=list)
    server_paths: list[tuple[Address, bool]] = field(default_factory=list)
    same_connection: bool = False  #: the server's entry after the move is the one before
    server_received: bytes = b""
    client_received: bytes = b""
    tcp_move: TcpMove | None = None
    restart: Restart = field(default_factory=Restart)
    retry: RetryRun = field(default_factory=RetryRun)
    flood: FloodRun = field(default_factory=FloodRun)
    keylog: Path | None = None
    qlog: Path | None = None
    tshark_command: str = ""
    tshark_loss_command: str = ""  #: part 7: its ACK frames with ranges, decrypted
    loss: LossReport | None = None  #: part 7, with faults
    loss_run: LossRun | None = None
    capture: CaptureSummary | None = None
    rows: list[Row] = field(default_factory=list)
    findings: Findings = field(default_factory=Findings)

    @property
    def loss_complete(self) -> bool:
        run = self.loss_run
        return run is not None and run.total > 0 and run.received >= run.total

    def problem(self) -> str:
        """Why this run does not tell the demo's story, or "" when it does."""
        return self.findings.problem()


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


def _ep(addr: Address) -> str:
    return f"{addr[0]}:{addr[1]}"


def _keys(core: QuicServerCore) -> tuple[bytes, ...]:
    """The server table's keys, read from the demo's thread while the server's thread runs."""
    for _ in range(20):
        try:
            return tuple(sorted(core.table))
        except RuntimeError:  # the server thread changed the table during the copy: again
            continue
    return tuple(sorted(core.table))


def run_quic_demo(capture: bool = True, pcap: str | Path | None = None, out: Out = print,
                  capture_off_reason: str = "--no-capture",
                  faults: FaultPlan | None = None) -> QuicDemoResult:
    path = Path(pcap) if pcap else default_capture_path(LAB)
    result = QuicDemoResult(keylog=path.with_suffix(".keys"), qlog=path.with_suffix(".qlog"))
    creds = make_credentials(datetime.datetime.now(datetime.UTC))
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
            server = _parts_1_to_4(result, server, creds, keylog, qlog, cap)
            _part5(result, retry_server, creds, keylog)
            _flood(result, creds, keylog)
            if faults is not None:
                _part_loss(result, creds, keylog, faults, cap)
        result.capture = cap.summary
    finally:
        server.stop()
        retry_server.stop()
    write_text_atomic(result.keylog, "".join(keylog_lines))
    write_text_atomic(result.qlog, qlog_json(qlog))
    result.tshark_command = tshark_command(path, result.keylog, result.server[1])
    if result.loss_run is not None and (leg := result.loss_run.proxy_port):
        result.tshark_loss_command = tshark_command(
            path, result.keylog, leg, f"udp.port=={leg} && {ACK_RANGES_FILTER}")
    shown: list[str] = []
    headers: dict[int, QuicHeader] = {}
    if cap.active:
        result.rows = show_capture(cap.summary, shown.append)
        headers = _capture_headers(cap.summary.path)
    evidence = _CaptureEvidence(result.rows, headers, cap.active, cap.summary.off_reason)
    result.findings = build_findings(result, evidence)
    _print(result, path, cap.active, out)
    for line in shown:
        out(line)
    print_state_table(WHERE_TITLE, result.findings.where, out)
    print_summary(LAB, result.findings, out)
    return result


#: tshark 4's display filter for ACK frames with gaps (RFC 9000 section 19.3: ACK Range Count)
ACK_RANGES_FILTER = "quic.ack.ack_range_count > 0"


def tshark_command(path: Path, keylog: Path | None, port: int,
                   display: str = "quic.stream_data") -> str:
    """The tshark command that decrypts the capture with the key log; `port` is decoded as QUIC."""
    return (f"tshark -r {path} -d udp.port=={port},quic -o tls.keylog_file:{keylog} "
            f"-Y {shlex.quote(display)}")


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


# -- the run: it only records; the findings are built from the records afterwards ---------------


def _parts_1_to_4(result: QuicDemoResult, server: UdpServerThread, creds, keylog, qlog,
                  cap: Capture) -> UdpServerThread:
    sock = _udp()
    result.client_addr = sock.getsockname()
    client = QuicClientCore(creds, server.address, time.monotonic(), keylog=keylog, qlog=qlog,
                            idle_timeout=RESTART_IDLE_TIMEOUT)
    result.handshake = pump(client, sock, lambda: client.log.handshake_done)
    result.stream = client.stream
    client.send(b"hello")
    pump(client, sock, lambda: b"HELLO" in client.log.received)
    pump(client, sock, lambda: client.spare_cids > 0, timeout=1.0)
    result.echo = client.log.received
    result.client_cid = client.host_cid
    result.client_keys = client.host_cids
    result.spare_cids = client.spare_cids
    connections = server.core.connections()
    if not (result.handshake and connections):
        sock.close()
        return server
    entry = connections[0]
    result.connection = entry.number
    result.server_cids = sorted(entry.cids)
    before = _keys(server.core)
    result.rotated = client.rotate()
    client.send(b" rotated")
    pump(client, sock, lambda: b"ROTATED" in client.log.received)
    after = _keys(server.core)
    result.keys_around_rotation = (before, after)
    result.after_rotation = client.log.received
    result.client_keys |= client.host_cids
    result.paths_before = server.core.paths(entry)

    path_sock = _migrate(client, sock, server.core, entry)
    if path_sock is not sock:
        sock.close()
    result.migrated_to = path_sock.getsockname()
    result.server_paths = server.core.paths(entry)
    result.same_connection = any(e is entry for e in server.core.connections())
    result.server_received = entry.received
    result.client_received = client.log.received
    result.client_keys |= client.host_cids
    result.server_keys_seen = frozenset(before + after + _keys(server.core))
    result.tcp_move = move_tcp_connection(cap)
    server = _restart_part(result, server, creds, client, path_sock, keylog, qlog)
    return server


def _migrate(client: QuicClientCore, sock: socket.socket, core: QuicServerCore,
             entry) -> socket.socket:
    """Part 3: the client sends its next data from a new socket on MIGRATE_TO, same DCID; wait
    until the server has validated the new path and the data came back. Returns the socket the
    client now uses."""
    new_sock = _udp(MIGRATE_TO)
    moved_to = new_sock.getsockname()
    client.send(b" moved")

    def validated() -> bool:
        paths = core.paths(entry)
        return bool(paths) and paths[0] == (moved_to, True) and b"MOVED" in client.log.received
    pump(client, new_sock, validated)
    return new_sock


def restart_server(server: UdpServerThread, creds) -> UdpServerThread:
    """The restart: stop the server (its socket and its core go) and serve the same port with a
    new, empty core — in this same process."""
    port = server.address[1]
    server.stop()
    return UdpServerThread(QuicServerCore(creds), port=port).start()


def _restart_part(result: QuicDemoResult, server: UdpServerThread, creds,
                  client: QuicClientCore, sock: socket.socket, keylog, qlog) -> UdpServerThread:
    rs = result.restart
    rs.port, rs.pid = server.address[1], os.getpid()
    rs.core_before, rs.keys_before = id(server.core), _keys(server.core)
    start = time.monotonic()
    server = restart_server(server, creds)
    rs.core_after = id(server.core)
    heard = len(client.log.received)
    rs.asked, rs.dcid = b" anyone there?", client.dcid
    client.send(rs.asked)
    pump(client, sock, lambda: client.log.terminated is not None,
         timeout=RESTART_IDLE_TIMEOUT + 1.5)
    rs.waited = time.monotonic() - start
    rs.terminated = client.log.terminated
    rs.answered = client.log.received[heard:]
    rs.keys_after = _keys(server.core)
    rs.dropped = server.core.counters.unknown_cid
    sock.close()
    again = _udp()
    rs.fresh_addr = again.getsockname()
    fresh = QuicClientCore(creds, server.address, time.monotonic(), keylog=keylog, qlog=qlog)
    rs.reconnected = pump(fresh, again, lambda: fresh.log.handshake_done)
    rs.fresh_cid = fresh.host_cid
    rs.fresh_keys = _keys(server.core)
    fresh.close()
    pump(fresh, again, lambda: True)
    again.close()
    return server


def _part5(result: QuicDemoResult, server: UdpServerThread, creds, keylog) -> None:
    run = result.retry
    sock = _udp()
    run.server, run.client = server.address, sock.getsockname()
    client = QuicClientCore(creds, server.address, time.monotonic(), keylog=keylog)
    for data, addr in client.datagrams_to_send(time.monotonic()):
        sock.sendto(data, addr)
    server.wait_until(lambda s: s.core.counters.retries_sent >= 1)
    run.sent = server.core.counters.retries_sent
    run.keys_at_retry = len(_keys(server.core))
    run.connected = pump(client, sock, lambda: client.log.handshake_done)
    run.accepted = server.core.counters.tokens_accepted
    run.keys_after = len(_keys(server.core))
    client.close()
    pump(client, sock, lambda: True)
    sock.close()


FLOOD_CAP, FLOOD_VALID, FLOOD_GARBAGE = 8, 24, 100
FLOOD_WINDOW = 16  #: datagrams in flight to the server at most: the burst never overflows its
#: socket buffer, so every datagram is counted


def _flood(result: QuicDemoResult, creds, keylog) -> None:
    """A bounded burst of fake Initials from one socket that never answers, then a real client."""
    from protolab.protocols.quic import fake_initials, garbage_initial

    run = result.flood
    run.cap, run.valid, run.garbage = FLOOD_CAP, FLOOD_VALID, FLOOD_GARBAGE
    fakes = [garbage_initial() for _ in range(FLOOD_GARBAGE)]
    fakes += fake_initials(creds, FLOOD_VALID, time.monotonic())
    with UdpServerThread(QuicServerCore(creds, half_open_cap=FLOOD_CAP)) as server:
        run.server, core = server.address, server.core
        run.half_open_before = core.half_open()
        flooder = _udp()
        for n, data in enumerate(fakes, 1):
            flooder.sendto(data, server.address)
            if n % FLOOD_WINDOW == 0 or n == len(fakes):
                server.wait_until(lambda s, n=n: s.core.counters.datagrams >= n)
        flooder.close()
        c = core.counters
        run.received, run.peak = c.datagrams, c.half_open_peak
        run.half_open_after, run.in_memory = core.half_open(), len(core.all_connections())
        run.retries_at_cap, run.undecryptable = c.retries_at_cap, c.undecryptable
        run.pruned = c.pruned  # a half-open entry that timed out during the burst frees a slot
        sock = _udp()
        client = QuicClientCore(creds, server.address, time.monotonic(), keylog=keylog)
        run.connected = pump(client, sock, lambda: client.log.handshake_done)
        run.tokens_accepted = c.tokens_accepted
        client.close()
        pump(client, sock, lambda: True)
        sock.close()


LOSS_CHUNKS, LOSS_CHUNK = 40, 1000


def _part_loss(result: QuicDemoResult, creds, keylog, plan: FaultPlan, cap: Capture) -> None:
    """A connection through the fault proxy: loss recovery and ACK ranges, in the client."""
    server = UdpServerThread(QuicServerCore(creds)).start()
    qlog = new_qlog()
    run = result.loss_run = LossRun(plan, total=LOSS_CHUNKS * LOSS_CHUNK)
    try:
        with UdpFaultProxy(server.address, plan) as proxy:
            # Only the client ↔ proxy leg is captured: a relay puts each datagram on the wire
            # twice, and tshark's QUIC dissector, seeing one connection on two paths, stops
            # decrypting it. This leg is the client's view, as its qlog records it.
            cap.add_port(proxy.address[1])
            run.proxy_port = proxy.address[1]
            sock = _udp()
            client = QuicClientCore(creds, proxy.address, time.monotonic(), keylog=keylog,
                                    qlog=qlog)
            connected = pump(client, sock, lambda: client.log.handshake_done, timeout=10.0)
            for _ in range(LOSS_CHUNKS):
                client.send(b"x" * LOSS_CHUNK)
            if connected:
                pump(client, sock, lambda: len(client.log.received) >= run.total, timeout=15.0)
            run.received = len(client.log.received)
            client.close()
            pump(client, sock, lambda: True)
            sock.close()
            run.decisions, run.counters = fault_line(proxy.core), proxy.core.counters
    finally:
        server.stop()
    result.loss = loss_report(qlog)


# -- the capture as evidence --------------------------------------------------------------------


def _capture_headers(path: Path | None) -> dict[int, QuicHeader]:
    """Each QUIC packet's header by packet number, decoded from the written capture (the Retry
    token and its echo are compared byte for byte)."""
    from protolab.protocols.quic import decode_header
    from protolab.wire.packets import decode
    from protolab.wire.pcap import read_pcap

    out: dict[int, QuicHeader] = {}
    if path is None:
        return out
    for n, rec in enumerate(read_pcap(path), 1):
        d = decode(rec.data, rec.linktype)
        h = decode_header(d.payload) if d.proto == 17 else None
        if h is not None:
            out[n] = h
    return out


@dataclass
class _CaptureEvidence:
    """This run's capture, as packets to cite; `on` is False when there is no capture."""

    rows: Sequence[Row]
    headers: dict[int, QuicHeader]
    on: bool
    off_reason: str

    def quic(self, src: str | None = None, dst: str | None = None, kind: str | None = None,
             dcid: bytes | None = None) -> list[Row]:
        return [r for r in self.rows if r.fields.get("quic_type")
                and (src is None or r.src == src) and (dst is None or r.dst == dst)
                and (kind is None or r.fields["quic_type"] == kind)
                and (dcid is None or r.fields.get("quic_dcid") == dcid.hex())]

    def first(self, **match) -> list[int]:
        rows = self.quic(**match)
        return [rows[0].number] if rows else []

    def shows(self, packets: Sequence[int]) -> bool:
        """Without a capture, packets are not asked for; with one, they must be there."""
        return not self.on or bool(packets)

    def packets(self, packets: Sequence[int], what: str = "packets") -> list[Evidence]:
        return [Evidence(what, packets=tuple(packets))] if packets else []

    def missing(self, what: str) -> str:
        return f"the capture shows no {what}"


def _explain(claim: str) -> str:
    """An explanation line: not a finding of this run."""
    return f"   explanation: {claim}"


# -- the findings, from the records -------------------------------------------------------------


def build_findings(r: QuicDemoResult, cap: _CaptureEvidence) -> Findings:
    """Every finding of this run as an Observation, and the where-state-lives rows."""
    f = Findings()
    for obs in (_handshake(r, cap), _client_key(r, cap), _server_table(r, cap),
                _dcid_is_key(r, cap), _rotation(r, cap), _migration(r, cap),
                _tcp_moved(r, cap), _restart_table(r), _restart_dropped(r, cap),
                _restart_ended(r), _new_handshake(r, cap), _retry_no_state(r, cap),
                _retry_token(r, cap), _half_open(r), _flood_client(r), *_loss(r)):
        f.add(obs)
    f.where = _where_rows(r, {o.key: o for o in f.observations})
    return f


def _handshake(r: QuicDemoResult, cap: _CaptureEvidence) -> Observation:
    client, server = _ep(r.client_addr), _ep(r.server)
    packets = (cap.first(src=client, dst=server, kind="Initial")
               + cap.first(src=server, dst=client, kind="Initial")
               + cap.first(src=server, dst=client, kind="1-RTT"))
    ok = r.handshake and b"HELLO" in r.echo and cap.shows(packets[2:])
    return observe(
        "quic.handshake", "the handshake completes and stream data is echoed", ok,
        seen=f"handshake done; 'hello' sent on stream {r.stream}, {r.echo!r} came back",
        evidence=[Evidence("client handshake completed", after=r.handshake),
                  Evidence("stream data back", after=r.echo),
                  *cap.packets(packets)],
        why_not="no handshake" if not r.handshake else f"the echo was {r.echo!r}"
        if b"HELLO" not in r.echo else cap.missing("Initial and 1-RTT packets"))


def _client_key(r: QuicDemoResult, cap: _CaptureEvidence) -> Observation:
    to_client = cap.quic(src=_ep(r.server), dst=_ep(r.client_addr), dcid=r.client_cid)
    seen = f"client's table (client app memory): key {_hex(r.client_cid)}"
    if cap.on:
        seen += f"; the server's packets carry it as their DCID ({len(to_client)} packets)"
    return observe(
        "quic.client-key", "the client's table is keyed by a CID it chose itself",
        bool(r.client_cid) and cap.shows(to_client), seen=seen,
        evidence=[Evidence("client CID", after=_hex(r.client_cid)),
                  *cap.packets([x.number for x in to_client[:3]], "first packets to it")],
        why_not=cap.missing(f"server packet with DCID {_hex(r.client_cid)}"))


def _server_table(r: QuicDemoResult, cap: _CaptureEvidence) -> Observation:
    n = len(r.server_cids)
    keys = {k.hex() for k in r.server_cids}
    used: dict[str, int] = {}
    for x in cap.quic(src=_ep(r.client_addr), dst=_ep(r.server)):
        if x.fields["quic_dcid"] in keys:
            used.setdefault(x.fields["quic_dcid"], x.number)
    return observe(
        "quic.server-table", "the server's table holds several keys for this one connection",
        n >= 2 and cap.shows(list(used.values())),
        seen=f"server's table (server app memory): {n} keys, all → connection #{r.connection}; "
             f"the client holds {r.spare_cids} spare CIDs the server issued it",
        evidence=[Evidence("server table keys for the connection", after=n),
                  Evidence("client's unused server CIDs", after=r.spare_cids),
                  *cap.packets(sorted(used.values()), f"{len(used)} keys used as DCID")],
        why_not=f"the server's table had {n} keys for the connection" if n < 2 else
        cap.missing("client packet with one of these keys as DCID"))


def _dcid_is_key(r: QuicDemoResult, cap: _CaptureEvidence) -> Observation:
    claim = "every packet's DCID is a key of the receiver's own table"
    if not cap.on:
        return explain("quic.dcid-is-key", claim, f"capture off: {cap.off_reason}")
    server = _ep(r.server)
    clients = {_ep(r.client_addr), _ep(r.migrated_to)}
    cut = min(_dropped_rows(r, cap) or [10**9])
    c2s = [x for x in cap.quic(dst=server) if x.src in clients and x.number < cut]
    s2c = [x for x in cap.quic(src=server) if x.dst in clients and x.number < cut]
    skeys = {k.hex() for k in r.server_keys_seen}
    ckeys = {k.hex() for k in r.client_keys}
    bad = [x.number for x in c2s if x.fields["quic_dcid"] not in skeys] + \
          [x.number for x in s2c if x.fields["quic_dcid"] not in ckeys]
    return observe(
        "quic.dcid-is-key", claim, bool(c2s and s2c) and not bad,
        seen=f"the DCID of each of {len(c2s)} client→server packets was a key of the server's "
             f"table, of each of {len(s2c)} server→client packets a key of the client's",
        evidence=[Evidence("client→server packets", after=len(c2s), packets=(c2s[0].number,)
                           if c2s else ()),
                  Evidence("server→client packets", after=len(s2c), packets=(s2c[0].number,)
                           if s2c else ())],
        why_not=f"{packet_list(bad)} carry a DCID neither table held" if bad
        else cap.missing("packets of the first connection"))


def _rotation(r: QuicDemoResult, cap: _CaptureEvidence) -> Observation:
    old, new = r.rotated
    before, after = r.keys_around_rotation
    to_server = cap.quic(src=_ep(r.client_addr), dst=_ep(r.server))
    olds = [x.number for x in to_server if x.fields["quic_dcid"] == old.hex()]
    news = [x.number for x in to_server if x.fields["quic_dcid"] == new.hex()]
    packets = [olds[-1], news[0]] if olds and news and news[0] > olds[-1] else []
    retired = old in before and old not in after
    ok = bool(old) and old != new and new in before and retired \
        and b"ROTATED" in r.after_rotation and cap.shows(packets)
    why = ("the client's DCID did not change" if not old or old == new else
           f"the server's table still has {_hex(old)}" if not retired else
           f"the stream after the rotation was {r.after_rotation!r}"
           if b"ROTATED" not in r.after_rotation else cap.missing("switch of DCID"))
    return observe(
        "quic.rotation", "the client switches to a new DCID and the stream goes on", ok,
        done="the client called change_connection_id()",
        seen=f"DCID {_hex(old)} → {_hex(new)}; the server's table retired key {_hex(old)}; "
             f"the stream goes on: {r.after_rotation!r}",
        evidence=[Evidence("client DCID", _hex(old), _hex(new)),
                  Evidence(f"server table has {_hex(old)}", "yes", "no" if retired else "yes"),
                  *cap.packets(packets, "last old, first new")],
        why_not=why)


def _paths(paths: list[tuple[Address, bool]]) -> str:
    return ", ".join(f"{_ep(a)} ({'validated' if v else 'not validated'})" for a, v in paths)


def _migration(r: QuicDemoResult, cap: _CaptureEvidence) -> Observation:
    moved = r.migrated_to != r.client_addr
    validated = r.server_paths[:1] == [(r.migrated_to, True)]
    new, server = _ep(r.migrated_to), _ep(r.server)
    packets = cap.first(src=new, dst=server) + cap.first(src=server, dst=new) if moved else []
    ok = moved and validated and r.same_connection and b"MOVED" in r.client_received \
        and cap.shows(packets[1:])
    why = (f"the client's address did not change ({_ep(r.client_addr)})" if not moved else
           f"the server's paths: {_paths(r.server_paths)}" if not validated else
           "the server's connection entry is gone" if not r.same_connection else
           f"the stream after the move was {r.client_received!r}"
           if b"MOVED" not in r.client_received else cap.missing(f"packets to and from {new}"))
    return observe(
        "quic.migration", "the connection continues from another address, found by its CID, "
        "on a validated path", ok,
        done=f"the client sent from a new socket, {new}, with the same DCID",
        seen=f"the server's connection #{r.connection} has the new path, validated (path "
             f"validation, RFC 9000 section 8.2); server app received {r.server_received!r}",
        evidence=[Evidence("client address", _ep(r.client_addr), new),
                  Evidence(f"server's paths for connection {r.connection}", _paths(r.paths_before),
                           _paths(r.server_paths)),
                  *cap.packets(packets, "first from / to the new path")],
        why_not=why)


def _tcp_moved(r: QuicDemoResult, cap: _CaptureEvidence) -> Observation:
    claim = "a TCP connection moved the same way does not survive: its kernel answers RST"
    move = r.tcp_move
    if move is None or not move.attempted:
        why = f"capture off ({cap.off_reason})" if not cap.on else "no raw socket"
        return explain("quic.tcp-moved", claim, f"{why}: forging a TCP segment from another "
                       f"address needs root (a raw socket) and the capture")
    tcp = [x for x in cap.rows if x.proto == "TCP"]
    seg = [x.number for x in tcp if x.src == move.new_source][:1]
    rst = [x.number for x in tcp if x.dst == move.new_source
           and x.fields.get("tcp_flags", 0) & RST][:1]
    return observe(
        "quic.tcp-moved", claim, move.rst_seen and bool(seg and rst),
        done=f"one segment of a live TCP connection sent from {move.new_source}",
        seen=f"the server's kernel answered RST; the app got {move.app_received!r} only",
        evidence=[Evidence("server app received", after=repr(move.app_received)),
                  *cap.packets(seg + rst, "segment, RST")],
        why_not=cap.missing(f"RST to {move.new_source}"))


def _restart_table(r: QuicDemoResult) -> Observation:
    rs = r.restart
    new_core = rs.core_after != rs.core_before
    ok = new_core and rs.dcid in rs.keys_before and not rs.keys_after
    return observe(
        "quic.restart-table", "a restarted server has an empty connection table", ok,
        done=f"stopped the server and bound a new server core on port {rs.port} in this same "
             f"process (pid {rs.pid}: an in-process restart, no new PID)",
        seen=f"server table keys {len(rs.keys_before)} → {len(rs.keys_after)}; the client's "
             f"DCID {_hex(rs.dcid)} was a key before, none after",
        evidence=[Evidence("server core object", hex(rs.core_before), hex(rs.core_after)),
                  Evidence("server table keys", len(rs.keys_before), len(rs.keys_after))],
        why_not="the same server core serves the port: no restart was performed"
        if not new_core else f"the table held {len(rs.keys_after)} keys after the restart")


def _dropped_rows(r: QuicDemoResult, cap: _CaptureEvidence) -> list[int]:
    """The client's last `dropped` packets to the server port: the ones the new core dropped."""
    rs = r.restart
    if not rs.dropped:
        return []
    sent = [x.number for x in cap.quic(src=_ep(r.migrated_to), dst=_ep(r.server))]
    return sent[-rs.dropped:] if len(sent) >= rs.dropped else []


def _restart_dropped(r: QuicDemoResult, cap: _CaptureEvidence) -> Observation:
    rs = r.restart
    dropped = _dropped_rows(r, cap)
    replies = [x.number for x in cap.quic(src=_ep(r.server), dst=_ep(r.migrated_to))
               if dropped and x.number > dropped[0]]
    ok = rs.dropped >= 1 and cap.shows(dropped) and not replies
    return observe(
        "quic.restart-dropped", "the new server drops the client's packets: no key matches",
        ok, seen=f"the new server dropped {rs.dropped} datagrams for an unknown DCID"
                 + (" and answered none" if cap.on else ""),
        evidence=[Evidence("server's unknown-CID counter", after=rs.dropped),
                  *cap.packets(dropped, "dropped"),
                  *([Evidence("replies to them", after=len(replies))] if cap.on else [])],
        why_not=f"the server answered: {packet_list(replies)}" if replies else
        "the server dropped nothing" if not rs.dropped else
        cap.missing(f"{rs.dropped} packets from {_ep(r.migrated_to)}"))


def _restart_ended(r: QuicDemoResult) -> Observation:
    rs = r.restart
    ok = rs.terminated is not None and not rs.answered
    return observe(
        "quic.restart-ended", "the client's connection ends without an answer", ok,
        seen=f"nothing came back for {rs.asked!r}; after {rs.waited:.2f} s aioquic ended the "
             f"connection: {rs.terminated}",
        evidence=[Evidence("stream data back after the restart", after=repr(rs.answered)),
                  Evidence("client event ConnectionTerminated", after=rs.terminated)],
        why_not=f"the server answered {rs.answered!r}" if rs.answered else
        f"the connection did not end within {rs.waited:.1f} s")


def _new_handshake(r: QuicDemoResult, cap: _CaptureEvidence) -> Observation:
    rs = r.restart
    fresh, server = _ep(rs.fresh_addr), _ep(r.server)
    packets = cap.first(src=fresh, dst=server, kind="Initial") + \
        cap.first(src=server, dst=fresh, kind="Initial")
    new_keys = bool(rs.fresh_keys) and not set(rs.fresh_keys) & set(rs.keys_before)
    ok = rs.reconnected and new_keys and rs.fresh_cid != r.client_cid and cap.shows(packets[1:])
    return observe(
        "quic.new-handshake", "going on needs a new connection: a new handshake, new CIDs", ok,
        done=f"a new client from {fresh}",
        seen=f"handshake done; the server's table keys {len(rs.keys_after)} → "
             f"{len(rs.fresh_keys)}, none of them an old key",
        evidence=[Evidence("server table keys", len(rs.keys_after), len(rs.fresh_keys)),
                  Evidence("client CID", _hex(r.client_cid), _hex(rs.fresh_cid)),
                  *cap.packets(packets, "new Initials")],
        why_not="the new handshake failed" if not rs.reconnected else
        "the server's table has old keys" if not new_keys else
        cap.missing(f"Initial from {fresh}"))


def _retry_packets(r: QuicDemoResult, cap: _CaptureEvidence) -> tuple[list[int], int]:
    """(Retry, the Initial echoing its token) packet numbers, and the token's length."""
    server, client = _ep(r.retry.server), _ep(r.retry.client)
    retry = cap.quic(src=server, dst=client, kind="Retry")[:1]
    if not retry:
        return [], 0
    token = cap.headers.get(retry[0].number, QuicHeader(True, "", None, b"", None)).token
    echo = [x.number for x in cap.quic(src=client, dst=server, kind="Initial")
            if x.number > retry[0].number and token
            and cap.headers.get(x.number) and cap.headers[x.number].token == token][:1]
    return ([retry[0].number, *echo] if echo else []), len(token)


def _retry_no_state(r: QuicDemoResult, cap: _CaptureEvidence) -> Observation:
    run = r.retry
    server, client = _ep(run.server), _ep(run.client)
    packets = cap.first(src=client, dst=server, kind="Initial") + \
        cap.first(src=server, dst=client, kind="Retry")
    ok = run.sent == 1 and run.keys_at_retry == 0 and cap.shows(packets[1:])
    return observe(
        "quic.retry-no-state", "a Retry is sent and the server keeps nothing for the client", ok,
        done=f"a client's first Initial to a server with address validation on (port "
             f"{run.server[1]})",
        seen=f"it got a Retry; the server's table then held {run.keys_at_retry} keys",
        evidence=[Evidence("Retry packets sent", after=run.sent),
                  Evidence("server table keys at the Retry", after=run.keys_at_retry),
                  *cap.packets(packets, "Initial, Retry")],
        why_not=f"Retry packets sent: {run.sent}" if run.sent != 1 else
        f"the table held {run.keys_at_retry} keys" if run.keys_at_retry != 0 else
        cap.missing("Retry"))


def _retry_token(r: QuicDemoResult, cap: _CaptureEvidence) -> Observation:
    run = r.retry
    packets, length = _retry_packets(r, cap)
    ok = run.accepted >= 1 and run.keys_after > 0 and run.connected and cap.shows(packets)
    echoed = f"the next Initial carried the Retry's {length} B token back byte for byte; " \
        if packets else "the client's next Initial carried the token; "
    return observe(
        "quic.retry-token", "the client echoes the token; only then does the server create "
        "the connection", ok,
        seen=echoed + f"the server validated it and created the connection (table keys 0 → "
                      f"{run.keys_after}); handshake done",
        evidence=[Evidence("tokens validated", after=run.accepted),
                  Evidence("server table keys", 0, run.keys_after),
                  *cap.packets(packets, "Retry, echo")],
        why_not="the server validated no token" if not run.accepted else
        "the handshake failed" if not run.connected else
        cap.missing("Initial echoing the Retry's token"))


def _half_open(r: QuicDemoResult) -> Observation:
    f = r.flood
    sent = f.valid + f.garbage
    # every real ClientHello either got an entry (still held, or pruned since) or a Retry
    admitted = f.half_open_after + f.pruned
    ok = f.received == sent and f.half_open_before == 0 and 0 < f.peak <= f.cap \
        and f.half_open_after <= f.cap and f.retries_at_cap >= 1 \
        and f.retries_at_cap + admitted == f.valid and f.undecryptable == f.garbage
    return observe(
        "quic.half-open-cap", "a burst of fake Initials leaves at most the cap of half-open "
        "connections in the server's memory; past it, each gets a Retry and no state", ok,
        done=f"{sent} fake Initials from one socket that never answers, to a server with a cap "
             f"of {f.cap} (port {f.server[1]}, not captured): {f.valid} real ClientHellos, "
             f"{f.garbage} that never decrypt",
        seen=f"half-open connections in its memory {f.half_open_before} → {f.half_open_after} "
             f"(at most {f.peak}); {f.retries_at_cap} got a Retry instead; the {f.undecryptable} "
             f"that did not decrypt left nothing",
        evidence=[Evidence("half-open connections (server memory)", f.half_open_before,
                           f.half_open_after),
                  Evidence("cap", after=f.cap),
                  Evidence("Retry packets at the cap", after=f.retries_at_cap),
                  Evidence("entries made (held now + pruned)", after=admitted),
                  Evidence("Initials that never decrypted", after=f.undecryptable),
                  Evidence("datagrams the server took in", after=f"{f.received} of {sent}")],
        why_not=f"the server took in {f.received} of {sent} datagrams" if f.received != sent
        else f"half-open connections {f.half_open_before} → {f.half_open_after} (peak "
             f"{f.peak}, cap {f.cap}); Retries {f.retries_at_cap}; entries made {admitted} of "
             f"{f.valid}; undecryptable {f.undecryptable}")


def _flood_client(r: QuicDemoResult) -> Observation:
    f = r.flood
    return observe(
        "quic.flood-real-client", "a real client still connects: the server validates its "
        "address with a Retry first", f.connected and f.tokens_accepted >= 1,
        done="then a real client",
        seen=f"handshake done; its Initial echoed a Retry token (tokens validated: "
             f"{f.tokens_accepted})",
        evidence=[Evidence("client handshake completed", after=f.connected),
                  Evidence("tokens validated", after=f.tokens_accepted)],
        why_not="the real client's handshake failed" if not f.connected
        else "the server validated no token: it was not at its cap")


def _loss(r: QuicDemoResult) -> list[Observation]:
    run, report = r.loss_run, r.loss
    if run is None or report is None:
        return []
    c = run.counters
    shown = ", ".join(map(str, report.lost[:10])) + (", ..." if len(report.lost) > 10 else "")
    ranges = _ranges(report.gapped_acks[0]) if report.gapped_acks else ""
    return [
        observe("quic.loss-proxy", "the fault proxy applied the plan", bool(run.decisions),
                done=f"a new connection through the fault proxy ({run.plan.describe()})",
                seen=f"the proxy (its app memory): {run.decisions}",
                evidence=[Evidence("datagrams dropped / delayed / duplicated / reordered",
                                   after=f"{c.dropped} / {c.delayed} / {c.duplicated} / "
                                         f"{c.reordered}")],
                why_not="no datagram reached the proxy"),
        observe("quic.loss-declared", "the client's loss recovery declares lost packets", True,
                seen=f"the client's loss recovery (its app memory) declared {len(report.lost)} "
                     f"of its packets lost" + (f" (QUIC packet numbers {shown})"
                                               if report.lost else ""),
                evidence=[Evidence("recovery:packet_lost events (client qlog)",
                                   after=len(report.lost))]),
        observe("quic.ack-ranges", "ACK frames show which packet numbers arrived", True,
                seen=f"{len(report.gapped_acks)} of the {report.acks} ACK frames the client "
                     f"received had gaps" + (f", e.g. ranges {ranges}: the numbers between two "
                                             f"ranges never arrived" if ranges else ""),
                evidence=[Evidence("ACK frames with 2+ ranges (client qlog)",
                                   after=f"{len(report.gapped_acks)} of {report.acks}")]),
        observe("quic.loss-complete", "all bytes come back in order through the faults",
                r.loss_complete, seen=f"all {run.total} bytes came back in order: yes",
                evidence=[Evidence("bytes echoed", after=f"{run.received} of {run.total}")],
                why_not=f"{run.received} of {run.total} bytes came back within 15 s"),
    ]


def _ranges(ranges: tuple[tuple[int, int], ...]) -> str:
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges)


# -- where state lives: rows from this run ------------------------------------------------------

TABLE = ("server's connection table (keys: the CIDs of each connection)",
         "server app memory (QuicServerCore.table)")
DCID = ("the DCID: the receiver's key", "every packet")
PATH = ("the 4-tuple (the path)", "only the current path: the server's path list")
TCP_ENTRY = ("TCP connection entry (for comparison)", "both kernels, keyed by the 4-tuple")
TLS = ("TLS keys, stream offsets", "each endpoint's app memory (user space)")
LOSS = ("loss recovery: packets in flight, ACK ranges", "each endpoint's app memory")
TOKEN = ("Retry token (the client's address, the original DCID)",
         "the client, until it echoes it")
HALF_OPEN = ("half-open connections (handshake not complete, peer not validated yet)",
             "server app memory, at most a cap; past it the Retry token (the client)")
RESTART = "server restart: a new server core on the same port, same process"
ROTATE = "CID rotation (change_connection_id)"
MIGRATE = f"the client moved to {MIGRATE_TO}"
MOVE_TCP = f"one segment sent from {MIGRATE_TO}"
RETRY = "a Retry instead of a connection"
FLOOD = "a burst of fake Initials from a source that never answers"
FAULTS = "a fault proxy between client and server"
NO_FAULTS = ("run with faults (e.g. --drop 0.1) to lose packets: the client's qlog then shows "
             "what its loss recovery did")


def _row(key: str, seen: str, *obs: Observation) -> Observation:
    """A where-row outcome from the findings behind it: observed only when all of them are,
    with their evidence; `seen` says it in the row's words."""
    failed = [o for o in obs if o.status is not Status.OBSERVED]
    if failed:
        return replace(failed[0], key=key)
    return replace(obs[0], key=key, done="", seen=seen,
                   evidence=tuple(e for o in obs for e in o.evidence))


def _where_rows(r: QuicDemoResult, o: dict[str, Observation]) -> list[StateRow]:
    rs = r.restart
    if "quic.loss-complete" in o:
        lost = r.loss.lost if r.loss else ()
        loss = StateRow(*LOSS, FAULTS, _row(
            "where.loss", f"the client declared {len(lost)} packets lost; all "
            f"{r.loss_run.total} bytes still came back in order", o["quic.loss-declared"],
            o["quic.ack-ranges"], o["quic.loss-complete"]))
    else:
        loss = StateRow(*LOSS, "-", explain("where.loss", "lost packets are found by ACK ranges "
                                            "and re-sent from the endpoint's memory", NO_FAULTS))
    tcp = o["quic.tcp-moved"]
    return [
        StateRow(*TABLE, RESTART, _row(
            "where.table", f"the table's keys {len(rs.keys_before)} → {len(rs.keys_after)}: the "
            f"client's next {rs.dropped} packets matched none and were dropped, unanswered",
            o["quic.restart-table"], o["quic.restart-dropped"])),
        StateRow(*DCID, ROTATE, _row(
            "where.dcid", f"DCID {_hex(r.rotated[0])} → {_hex(r.rotated[1])}; the old key left "
            f"the server's table; the stream went on", o["quic.rotation"])),
        StateRow(*PATH, MIGRATE, _row(
            "where.path", f"the server found connection #{r.connection} by its CID and validated "
            f"the new path; the stream went on", o["quic.migration"])),
        StateRow(*TCP_ENTRY, MOVE_TCP if tcp.status is not Status.NOT_TRIED else "-",
                 replace(tcp, key="where.tcp")),
        StateRow(*TLS, RESTART, _row(
            "where.tls", f"{rs.asked!r} got no answer; aioquic ended the connection "
            f"({rs.terminated}); going on took a new handshake, new CIDs",
            o["quic.restart-ended"], o["quic.new-handshake"])),
        loss,
        StateRow(*TOKEN, RETRY, _row(
            "where.token", f"the server's table held {r.retry.keys_at_retry} keys at the Retry; "
            f"the echoed token brought the state back (keys 0 → {r.retry.keys_after})",
            o["quic.retry-no-state"], o["quic.retry-token"])),
        StateRow(*HALF_OPEN, FLOOD, _row(
            "where.half-open", f"{r.flood.valid + r.flood.garbage} fake Initials left at most "
            f"{r.flood.peak} half-open connections (cap {r.flood.cap}); the rest got a Retry or "
            f"left nothing; a real client still connected", o["quic.half-open-cap"],
            o["quic.flood-real-client"])),
    ]


def where_from_capture(rows: Sequence[Row]) -> list[StateRow]:
    """The same rows, from a capture's packets (a replay): what only a live run shows, marked."""
    from protolab.analysis.story_checks import check

    found = {f.step.key: f.packets for f in check(LAB, rows)}

    def shown(key: str, claim: str, step: str, seen: str, what: str = "packets") -> Observation:
        packets = found.get(step, ())
        return observe(key, claim, bool(packets), seen=seen,
                       evidence=[Evidence(what, packets=packets)] if packets else [],
                       why_not=f"the capture does not show it (story step {step!r})")

    live = Status.LIVE_ONLY
    return [
        StateRow(*TABLE, RESTART, shown(
            "where.table", "after the restart the client needs a new connection",
            "new-connection", "a new Initial from the client, new CIDs (the table's keys "
            "before → after: live run only)", "first Initial, new Initial")),
        StateRow(*DCID, ROTATE, shown(
            "where.dcid", "the client switches to a new DCID", "rotation",
            "a new DCID on the same path, the connection goes on")),
        StateRow(*PATH, MIGRATE, shown(
            "where.path", "the connection continues from another address", "migration",
            "a known DCID from a new address (path validation: live run only)")),
        StateRow(*TCP_ENTRY, MOVE_TCP, shown(
            "where.tcp", "a TCP segment moved the same way gets RST", "tcp-moved",
            "the server's kernel answered RST")),
        StateRow(*TLS, RESTART, explain(
            "where.tls", "the connection could not go on after the restart", "the client's "
            "events and the server's memory are not in the capture", status=live)),
        StateRow(*LOSS, FAULTS, explain(
            "where.loss", "lost packets are found by ACK ranges and re-sent", "the client's "
            "qlog of a live run with faults shows it", status=live)),
        StateRow(*TOKEN, RETRY, shown(
            "where.token", "a Retry, and the Initial that echoes its token", "retry",
            "a Retry, then an Initial carrying its token (the server's empty table: live run "
            "only)")),
        StateRow(*HALF_OPEN, FLOOD, explain(
            "where.half-open", "the server keeps at most a cap of half-open connections",
            "the burst is not captured: the server's memory shows it", status=live)),
    ]


# -- printing: everything below renders the findings --------------------------------------------


def _print(r: QuicDemoResult, path: Path, captured: bool, out: Out) -> None:
    o = {x.key: x for x in r.findings.observations}

    def say(*keys: str) -> None:
        for k in keys:
            out("   " + o[k].line())

    out("1. Handshake, and each side's connection table")
    say("quic.handshake", "quic.client-key", "quic.server-table")
    if r.server_cids:
        out(indent(table([(_hex(c), r.connection) for c in r.server_cids],
                         ("connection ID (key)", "connection")), 5))
    out(_explain("the server issues spare CIDs in NEW_CONNECTION_ID frames; each one is a key "
                 "of its table (RFC 9000 section 5.1)"))
    say("quic.dcid-is-key")
    out("\n2. CID rotation")
    say("quic.rotation")
    out("\n3. Migration to another address")
    say("quic.migration", "quic.tcp-moved")
    out(_explain("QUIC finds the connection by the CID in the packet; TCP by the 4-tuple, so a "
                 "segment from a new address matches no connection"))
    out("\n4. The server restarts")
    say("quic.restart-table", "quic.restart-dropped", "quic.restart-ended")
    out(_explain(f"this server sends no stateless reset (RFC 9000 section 10.3 would allow one): "
                 f"the client's loss timers re-send until its idle timeout "
                 f"({RESTART_IDLE_TIMEOUT} s here) ends the connection"))
    say("quic.new-handshake")
    out(_explain("QUIC is stateful, as TCP is: it moved the key from the 4-tuple to the CID, "
                 "and a lost table is a lost connection"))
    out("\n5. Retry: address validation without state")
    say("quic.retry-no-state", "quic.retry-token")
    out(_explain("the token carries what the server did not keep (the client's address and "
                 "original DCID, RFC 9000 section 8.1.2) — the same idea as a JWT"))
    say("quic.half-open-cap", "quic.flood-real-client")
    out(_explain("a server keeps state for a peer before it knows the address is real; a cap on "
                 "those half-open connections, with a Retry past it, bounds what a spoofed flood "
                 "costs (RFC 9000 section 8.1), and a closed connection leaves memory (RFC 9000 "
                 "section 10)"))
    out(f"\n6. TLS secrets (SSLKEYLOGFILE format) → {r.keylog}; qlog → {r.qlog}")
    out("   decrypt the capture with:" if captured else "   with a capture, decrypt it with:")
    out(f"   {r.tshark_command}")
    if r.loss_run is not None:
        out(f"\n7. Loss recovery: {r.loss_run.total} bytes on one stream through the fault "
            f"proxy, echoed back")
        say("quic.loss-proxy", "quic.loss-declared", "quic.ack-ranges", "quic.loss-complete")
        if r.tshark_loss_command:
            out(f"   decrypt its ACK frames with ranges (the capture holds the client ↔ proxy leg, "
                f"port {r.loss_run.proxy_port}, only) with:")
            out(f"   {r.tshark_loss_command}")
        out(_explain("lost frames are sent again in new packets with new numbers (RFC 9002 "
                     "section 6; RFC 9000 section 19.3 for ACK ranges): the stream offsets and "
                     "the retransmission queue live in both endpoints, the network keeps "
                     "nothing"))


run = run_quic_demo  #: the registry's entry point (protolab.labs.DEMOS)
