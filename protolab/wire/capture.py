"""Capture a demo's packets on the loopback interface with scapy, each packet exactly once.

Where state lives: in the capture itself. The kernel copies every frame on `lo` into our packet
socket's receive buffer (kernel memory, bounded: frames that do not fit are dropped and counted by
the kernel, which we read back with PACKET_STATISTICS); a scapy sniffer thread moves them into this
process's memory; on exit they are written to a pcap file.

Three facts shape this module (measured, see DEVELOPERS.md):
- on loopback each frame passes the packet tap twice, once as PACKET_OUTGOING and once as
  PACKET_HOST; scapy's native listen socket keeps both, libpcap keeps the incoming one. We do what
  libpcap does, without needing libpcap, by dropping PACKET_OUTGOING in the socket — on loopback
  only: on a veth (`protolab.wire.multicapture`) a frame passes the tap once, outgoing on the
  sender's end and incoming on the peer's, and both are kept;
- `AsyncSniffer.start()` returns before its socket exists, so we wait on `started_callback`;
- there is no BPF filter without libpcap, so the port filter runs on the raw bytes in the socket,
  before scapy would dissect anything.

The end of the demo's traffic is found with a marker: a datagram sent to ourselves on a port of our
own. The kernel delivers loopback frames to the tap in order, so once the sniffer has seen the
marker it has seen everything sent before it. Two rounds cover packets that are sent *because of*
an earlier packet (an ICMP error caused by a late datagram).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from protolab.wire.packets import PROTO_ICMP, Decoded, decode
from protolab.wire.pcap import LINKTYPE_ETHERNET, Record, write_pcap

SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_OUTGOING = 4
SO_RCVBUFFORCE = 33
SO_ATTACH_FILTER = 26
#: The socket buffer: the kernel charges each queued loopback frame its full allocation, so a
#: burst under load (litmus --under-load) needs room while Python catches up.
BUFFER_BYTES = 256 * 1024 * 1024
MAX_FILTER_PORTS = 100  #: more ports than this: no kernel filter, Python filters alone
MARKER = b"protolab-capture-drain"
ARPHRD_LOOPBACK = 772
ARPHRD_ETHER = 1


def capture_denied_reason() -> str | None:
    """Why this process cannot open a packet socket, or None when it can."""
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    except PermissionError:
        return "needs root or CAP_NET_RAW"
    except (OSError, AttributeError) as exc:  # no AF_PACKET: not Linux
        return f"packet sockets are not available here ({exc})"
    s.close()
    return None


def fix_hint() -> str:
    """The one-line fix for missing capture rights."""
    import sys

    real = os.path.realpath(sys.executable)
    if real == os.path.abspath(sys.executable):  # its own copy (a venv made with --copies)
        return f"run as root, or grant this interpreter the capability once: " \
               f"sudo setcap cap_net_raw+ep {real}"
    # A link to a shared interpreter: setcap on it would give raw sockets to every program it
    # runs on this machine.
    return (f"run as root, or make a venv of its own and grant that the capability: python3 -m "
            f"venv --copies .venv-cap && .venv-cap/bin/pip install -e . && sudo setcap "
            f"cap_net_raw+ep .venv-cap/bin/python3 (not {real}: that would give raw sockets to "
            f"every program it runs)")


def bpf_program(ports: Iterable[int]) -> list[tuple[int, int, int, int]] | None:
    """A classic BPF program (code, jt, jf, k) for an Ethernet packet socket that passes IPv4
    TCP/UDP with a port in `ports`, every ICMP (Python checks what it quotes) and all IPv6, and
    drops the rest in the kernel — so the frames of other conversations never fill the socket
    buffer. None when there are too many ports for one program's 8-bit jumps."""
    ports = sorted(set(ports))
    if len(ports) > MAX_FILTER_PORTS:
        return None
    ld_h, ld_b, ldx_msh, ld_h_ind = 0x28, 0x30, 0xB1, 0x48
    jeq, ret = 0x15, 0x06
    n = len(ports)
    # Layout: 0 ldh[12]; 1 jeq IPv4; 2 jeq IPv6; 3 ldb[23]; 4 jeq ICMP; 5 jeq TCP; 6 jeq UDP;
    # 7 ldxb 4*([14]&0xf); 8 ldh [x+14]; 9.. n jeq; ldh [x+16]; n jeq; drop; accept.
    accept = 9 + n + 1 + n + 1
    drop = accept - 1
    prog = [
        (ld_h, 0, 0, 12),
        (jeq, 1, 0, 0x0800),  # IPv4 → 3, else → 2
        (jeq, accept - 3, drop - 3, 0x86DD),  # IPv6 → accept (Python decides)
        (ld_b, 0, 0, 23),
        (jeq, accept - 5, 0, 1),  # ICMP
        (jeq, 1, 0, 6),  # TCP → 7
        (jeq, 0, drop - 7, 17),  # UDP → 7, else drop
        (ldx_msh, 0, 0, 14),
        (ld_h_ind, 0, 0, 14),  # source port
    ]
    for i, port in enumerate(ports):
        here = 9 + i
        prog.append((jeq, accept - here - 1, 0, port))
    prog.append((ld_h_ind, 0, 0, 16))  # destination port
    for i, port in enumerate(ports):
        here = 9 + n + 1 + i
        prog.append((jeq, accept - here - 1, 0, port))
    prog.append((ret, 0, 0, 0))  # drop
    prog.append((ret, 0, 0, 0x40000))  # accept (snap length 256 KiB: whole frames)
    assert len(prog) == accept + 1
    return prog


def attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    """SO_ATTACH_FILTER: the kernel copies the program; it replaces any earlier one at once."""
    import ctypes

    code = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HL", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def wanted(frame: bytes, ports: set[int] | frozenset[int]) -> bool:
    """Does this Ethernet frame belong to the demo? (UDP/TCP with a port in `ports`, or an ICMP
    error quoting such a datagram.) Works on the raw bytes: no dissection on the hot path."""
    if len(frame) < 14 + 20:
        return False
    ethertype = frame[12] << 8 | frame[13]
    if ethertype == 0x0800:
        ihl = (frame[14] & 0x0F) * 4
        proto = frame[23]
        l4 = 14 + ihl
    elif ethertype == 0x86DD:
        proto = frame[20]
        l4 = 14 + 40
    else:
        return False
    if proto in (6, 17):
        if len(frame) < l4 + 4:
            return False
        sport, dport = struct.unpack_from("!HH", frame, l4)
        return sport in ports or dport in ports
    if proto in (PROTO_ICMP, 58):
        d = decode(frame, LINKTYPE_ETHERNET)
        q = d.quoted
        return q is not None and (q.sport in ports or q.dport in ports)
    return False


def make_socket_class() -> type:
    """Build the scapy listen socket class lazily: importing scapy costs time (see `--help`)."""
    import logging

    from scapy.arch.linux import L2ListenSocket
    from scapy.config import conf

    # scapy warns that it cannot guess a layer for the loopback device type; we do not want it to:
    # frames are kept raw and decoded by protolab.packets.
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)

    class LoopbackOnce(L2ListenSocket):
        """A scapy listen socket that keeps each frame once (on loopback: not its outgoing copy)
        and only the demo's frames. It lives in the network namespace of the thread that made
        it, and is bound to `iface` there."""

        def __init__(self, iface: str, accept: Callable[[bytes], bool]) -> None:
            super().__init__(iface=iface, promisc=False)
            self.accept = accept
            try:
                self.ins.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, BUFFER_BYTES)
            except PermissionError:
                self.ins.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER_BYTES)
            self.hatype = self.ins.getsockname()[3]

        def recv_raw(self, x: int = 65535):  # type: ignore[override]
            pkt, sa_ll, ts = self._recv_raw(self.ins, x)
            if (sa_ll[2] == PACKET_OUTGOING and self.hatype == ARPHRD_LOOPBACK) \
                    or not self.accept(pkt):
                return None, None, None
            return conf.raw_layer, pkt, ts or time.time()

        def kernel_stats(self) -> tuple[int, int]:
            """(frames the kernel handed the socket, frames it dropped) since the last call."""
            raw = self.ins.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            packets, drops = struct.unpack("II", raw)
            return packets, drops

    return LoopbackOnce


@dataclass
class CaptureSummary:
    """What a capture produced, for the demo to print."""

    path: Path | None
    packets: int = 0
    kernel_drops: int = 0
    kernel_packets: int = 0  #: frames the kernel's filter let into the socket (ours and others)
    off_reason: str | None = None
    records: list[Record] = field(default_factory=list)


class Capture:
    """Context manager: capture the frames of `ports` on `iface` while the block runs.

    `enabled=False` (or missing rights) turns capture off; the block still runs,
    `summary.off_reason` says why, and `wait_for` returns False at once.
    """

    def __init__(self, ports: Iterable[int], path: str | os.PathLike[str] | None,
                 iface: str = "lo", enabled: bool = True, off_reason: str = "--no-capture") -> None:
        self.ports: set[int] = set(ports)
        self.path = Path(path) if path is not None else None
        self.iface = iface
        self._records: list[Record] = []
        self._cond = threading.Condition()
        self._marker_port: int | None = None
        self._marker_seen = 0
        self._sniffer = None
        self._sock = None
        self.summary = CaptureSummary(path=self.path)
        if not enabled:
            self.summary.off_reason = off_reason
        else:
            denied = capture_denied_reason()
            if denied:
                self.summary.off_reason = denied

    @property
    def active(self) -> bool:
        return self.summary.off_reason is None

    def add_port(self, port: int) -> None:
        """Also keep frames to or from `port` (e.g. a client's ephemeral port, once bound)."""
        self.ports.add(port)
        self._refilter()

    def _refilter(self) -> None:
        """Give the kernel the current ports, so it drops other frames before queueing them."""
        if self._sock is None or self._marker_port is None:
            return
        program = bpf_program(self.ports | {self._marker_port})
        if program is not None:
            attach_filter(self._sock.ins, program)

    def __enter__(self) -> Capture:
        if not self.active:
            return self
        from scapy.sendrecv import AsyncSniffer

        marker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        marker.bind(("127.0.0.1", 0))
        self._marker = marker
        self._marker_port = marker.getsockname()[1]
        self._sock = make_socket_class()(self.iface, self._accept)
        self._refilter()
        # PACKET_STATISTICS resets when read: frames dropped before our filter existed (other
        # traffic on lo filling the default buffer in the first microseconds) are not ours.
        self._sock.kernel_stats()
        started = threading.Event()
        self._sniffer = AsyncSniffer(opened_socket=self._sock, prn=self._on_packet, store=False,
                                     started_callback=started.set)
        self._sniffer.start()
        if not started.wait(10):
            self._close_sockets()
            raise RuntimeError("the scapy sniffer did not start within 10 s")
        return self

    def _accept(self, frame: bytes) -> bool:
        if self._marker_port is not None and len(frame) >= 38 and frame[23] == 17:
            ihl = (frame[14] & 0x0F) * 4
            dport = struct.unpack_from("!H", frame, 14 + ihl + 2)[0]
            if dport == self._marker_port and frame.endswith(MARKER):
                with self._cond:
                    self._marker_seen += 1
                    self._cond.notify_all()
                return False
        return wanted(frame, self.ports)

    def _on_packet(self, pkt) -> None:  # scapy Raw packet with .time
        rec = Record(float(pkt.time), LINKTYPE_ETHERNET, bytes(pkt), len(pkt))
        with self._cond:
            self._records.append(rec)
            self._cond.notify_all()

    def decoded(self) -> list[Decoded]:
        """The frames captured so far, decoded."""
        with self._cond:
            records = list(self._records)
        return [decode(r.data, r.linktype, r.time) for r in records]

    def wait_for(self, predicate: Callable[[Decoded], bool], timeout: float = 2.0) -> bool:
        """Block until a captured frame satisfies `predicate` (True) or `timeout` passes (False)."""
        if not self.active:
            return False
        deadline = time.monotonic() + timeout
        checked = 0
        with self._cond:
            while True:
                while checked < len(self._records):
                    r = self._records[checked]
                    checked += 1
                    if predicate(decode(r.data, r.linktype, r.time)):
                        return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)

    def drain(self, rounds: int = 2, timeout: float = 2.0) -> bool:
        """Send markers and wait until the sniffer has seen them: everything before is captured."""
        if not self.active:
            return False
        for _ in range(rounds):
            with self._cond:
                target = self._marker_seen + 1
            self._marker.sendto(MARKER, ("127.0.0.1", self._marker_port))
            deadline = time.monotonic() + timeout
            with self._cond:
                while self._marker_seen < target:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(remaining)
        return True

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self.active:
            return
        try:
            drained = self.drain()
            self._sniffer.stop()
            handed, drops = self._sock.kernel_stats()
        finally:
            self._close_sockets()
        self.summary.kernel_drops = drops
        self.summary.kernel_packets = handed
        self.summary.records = list(self._records)
        self.summary.packets = len(self._records)
        if not drained:
            self.summary.kernel_drops = max(drops, 1)
        if exc_type is None and self.path is not None:
            write_pcap(self.path, self._records, LINKTYPE_ETHERNET)

    def _close_sockets(self) -> None:
        for s in (self._sock, getattr(self, "_marker", None)):
            if s is not None:
                s.close()
