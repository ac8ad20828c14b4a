"""Capture at several points at once — each host's interface, both sides of a router — merged in
time order into one pcapng that says where each packet was seen.

Where state lives: in the captures themselves. Each capture point is a packet socket bound to one
interface in its host's network namespace (made by a thread inside the host, `within`: a socket
belongs to the namespace of the thread that made it); the kernel copies every frame of that
interface into the socket's buffer, timestamped; one scapy sniffer thread reads all the sockets
and keeps each frame with its point's name. On exit they are merged in time order and written as
pcapng with one Interface Description Block per point, named like `client:eth0` (if_name), and
each packet's block pointing at its interface: Wireshark's `frame.interface_name`.

Facts that shape this module (checked by tests/test_multicapture.py):
- on a veth each frame passes the tap once per end: outgoing on the sender's end, incoming on the
  peer's; both are kept (only loopback shows a frame twice, `protolab.wire.capture`);
- `AsyncSniffer.start()` returns before it reads: we wait on `started_callback`;
- the end of the traffic is found with a marker per point: an Ethernet frame of the local
  experimental ethertype (IEEE 802, 0x88B5) sent out of the point's interface by a socket of our
  own. An outgoing frame reaches the point's socket while it is sent, after every frame queued
  before it, so once the sniffer has read the marker it has read them all. The peer drops the
  marker (no protocol takes that ethertype) and no capture keeps one.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

from protolab.wire.capture import capture_denied_reason, make_socket_class, wanted
from protolab.wire.packets import Decoded, decode
from protolab.wire.pcap import LINKTYPE_ETHERNET, Record, write_pcapng

MARKER_ETHERTYPE = 0x88B5  #: IEEE Std 802 local experimental ethertype 1
MARKER = b"protolab-capture-point"
_IP_ETHERTYPES = (b"\x08\x00", b"\x86\xdd")
#: runs a function where an interface is (a thread inside its host's namespace) and returns
#: its result
Within = Callable[[Callable[[], Any]], Any]


@dataclass(frozen=True)
class CapturePoint:
    label: str  #: the point's name, and its pcapng interface's: "client:eth0", "router:wan"
    iface: str  #: the interface's name in its host: "eth0"
    within: Within | None = None  #: where the interface is; None: this namespace


@dataclass
class PointSummary:
    label: str
    packets: int = 0  #: frames kept at this point
    kernel_drops: int = 0  #: frames the kernel could not queue to the point's socket


@dataclass
class MultiSummary:
    path: Path | None
    points: list[PointSummary] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)  #: all points, in time order
    off_reason: str | None = None

    @property
    def kernel_drops(self) -> int:
        return sum(p.kernel_drops for p in self.points)

    @property
    def packets(self) -> int:
        """Frames written, all points together (as `CaptureSummary.packets`)."""
        return len(self.records)


def _here(work: Callable[[], Any]) -> Any:
    return work()


def marker_frame(mac: bytes, index: int, round_: int) -> bytes:
    """A broadcast frame of the marker ethertype naming point `index` and drain round."""
    payload = MARKER + struct.pack("!HI", index, round_)
    frame = b"\xff" * 6 + mac + struct.pack("!H", MARKER_ETHERTYPE) + payload
    return frame + bytes(max(0, 60 - len(frame)))


def marker_of(frame: bytes) -> tuple[int, int] | None:
    """(point index, round) when `frame` is a marker, else None."""
    if frame[12:14] != struct.pack("!H", MARKER_ETHERTYPE) or frame[14:14 + len(MARKER)] != MARKER:
        return None
    if len(frame) < 14 + len(MARKER) + 6:
        return None
    index, round_ = struct.unpack_from("!HI", frame, 14 + len(MARKER))
    return index, round_


class MultiCapture:
    """Context manager: capture at every point while the block runs; on a normal exit write the
    merged pcapng to `path` (None: keep the records only). `ports`: keep only IP frames to or
    from these ports (and ICMP errors about them); None: every IPv4 and IPv6 frame."""

    def __init__(self, points: Iterable[CapturePoint], path: str | Path | None,
                 ports: Iterable[int] | None = None, enabled: bool = True,
                 off_reason: str = "--no-capture") -> None:
        self.points = list(points)
        self.ports = None if ports is None else frozenset(ports)
        self.summary = MultiSummary(Path(path) if path is not None else None,
                                    [PointSummary(p.label) for p in self.points])
        self._records: list[Record] = []
        self._cond = threading.Condition()
        self._seen = [0] * len(self.points)  #: the last marker round each point has read
        self._round = 0
        self._socks: list[Any] = []
        self._senders: list[socket.socket] = []
        self._sniffer = None
        if not enabled:
            self.summary.off_reason = off_reason
        elif (denied := capture_denied_reason()) is not None:
            self.summary.off_reason = denied

    @property
    def active(self) -> bool:
        return self.summary.off_reason is None

    def __enter__(self) -> MultiCapture:
        if not self.active:
            return self
        from scapy.sendrecv import AsyncSniffer

        try:
            self._open()
            started = threading.Event()
            self._sniffer = AsyncSniffer(
                opened_socket={s: p.label for s, p in zip(self._socks, self.points, strict=True)},
                prn=self._on_packet, store=False, started_callback=started.set)
            self._sniffer.start()
            if not started.wait(10):
                raise RuntimeError("the scapy sniffer did not start within 10 s")
        except BaseException:
            self._close()
            raise
        return self

    def _open(self) -> None:
        """A listen socket and a marker socket per point, made inside the point's host."""
        cls = make_socket_class()
        for i, point in enumerate(self.points):
            within = point.within or _here

            def make(point: CapturePoint = point, i: int = i) -> tuple[Any, socket.socket]:
                listen = cls(point.iface, partial(self._accept, i))
                sender = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
                sender.bind((point.iface, 0))
                return listen, sender

            listen, sender = within(make)
            self._socks.append(listen)
            self._senders.append(sender)
            listen.kernel_stats()  # PACKET_STATISTICS resets when read: count from now

    def _accept(self, index: int, frame: bytes) -> bool:
        mark = marker_of(frame)
        if mark is not None:
            if mark[0] == index:
                with self._cond:
                    self._seen[index] = max(self._seen[index], mark[1])
                    self._cond.notify_all()
            return False
        if frame[12:14] not in _IP_ETHERTYPES:
            return False
        return self.ports is None or wanted(frame, self.ports)

    def _on_packet(self, pkt) -> None:  # scapy Raw packet with .time and .sniffed_on
        rec = Record(float(pkt.time), LINKTYPE_ETHERNET, bytes(pkt), len(pkt),
                     str(pkt.sniffed_on))
        with self._cond:
            self._records.append(rec)
            self._cond.notify_all()

    def decoded(self) -> list[Decoded]:
        """The frames captured so far, decoded, each with its point (`Decoded.interface`)."""
        with self._cond:
            records = list(self._records)
        return [decode(r.data, r.linktype, r.time, r.orig_len, r.interface) for r in records]

    def wait_for(self, predicate: Callable[[Decoded], bool], timeout: float = 2.0) -> bool:
        """Block until a captured frame satisfies `predicate` (True; `Decoded.interface` names
        its point) or `timeout` passes (False)."""
        if not self.active:
            return False
        checked = 0

        def found() -> bool:
            nonlocal checked
            for r in self._records[checked:]:
                checked += 1
                if predicate(decode(r.data, r.linktype, r.time, r.orig_len, r.interface)):
                    return True
            return False

        with self._cond:
            return self._cond.wait_for(found, timeout)

    def drain(self, rounds: int = 2, timeout: float = 2.0) -> bool:
        """Send a marker out of every point and wait until the sniffer has read each one: every
        frame queued before is captured."""
        if not self.active:
            return False
        for _ in range(rounds):
            self._round += 1
            for i, sender in enumerate(self._senders):
                mac = self._socks[i].ins.getsockname()[4]
                sender.send(marker_frame(mac, i, self._round))
            with self._cond:
                if not self._cond.wait_for(lambda: min(self._seen) >= self._round, timeout):
                    return False
        return True

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self.active:
            return
        try:
            drained = self.drain()
            self._sniffer.stop()
            drops = [s.kernel_stats()[1] for s in self._socks]
        finally:
            self._close()
        merged = sorted(self._records, key=lambda r: r.time)  # stable: ties keep read order
        self.summary.records = merged
        for point, dropped in zip(self.summary.points, drops, strict=True):
            point.packets = sum(1 for r in merged if r.interface == point.label)
            point.kernel_drops = dropped if drained else max(dropped, 1)
        if exc_type is None and self.summary.path is not None:
            labels = ", ".join(p.label for p in self.points)
            write_pcapng(self.summary.path, ((r, "") for r in merged),
                         f"protolab: one capture at {len(self.points)} points ({labels}), "
                         f"merged in time order; each packet's interface is where it was seen")

    def _close(self) -> None:
        for s in [*self._socks, *self._senders]:
            s.close()
        self._socks, self._senders = [], []
