"""HTTP/1.1 messages in a capture, counted per TCP connection from its reassembled byte stream.

Where state lives: in each TCP connection's two byte streams, which the receiving TCP puts back
together (RFC 9293 section 3.10.7.4). A message is counted from the stream, not from the segments
that carried it: a retransmitted segment carries bytes already counted, and a head split over two
segments is one head. The rolling restart under load (`protolab.labs.rolling_restart`) checks its
capture against the users' own counts with this.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from protolab.wire.packets import Decoded


@dataclass
class StreamCount:
    """HTTP messages in a capture, read from each TCP connection's reassembled byte stream (as
    the receiving TCP sees them, RFC 9293 section 3.10.7.4), not from segments: a retransmitted
    segment carries bytes already counted, and a head split over two segments is one head."""

    requests: int = 0  #: request heads in the client → port streams
    responses: int = 0  #: response heads in the port → client streams
    connections: int = 0  #: TCP connections to the port (a 4-tuple and its initial sequence number)
    repeated: int = 0  #: segments whose bytes were already in the stream (retransmissions)
    gaps: int = 0  #: streams with bytes the capture does not hold


@dataclass
class _Half:
    """One direction of one TCP connection: its segments by offset from the first byte."""

    base: int | None = None  #: sequence number of the first data byte (ISN + 1), when the SYN
    segments: list[tuple[int, bytes]] = field(default_factory=list)


#: the request heads counted (those the lab app is sent)
METHODS = (b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ")


def http_streams(packets: Iterable[Decoded], port: int) -> StreamCount:
    """Count the HTTP requests to `port` and the responses from it, by TCP stream."""
    conns: list[tuple[_Half, _Half]] = []  #: (client → port, port → client), in order
    current: dict[tuple, tuple[_Half, _Half]] = {}  #: the client 4-tuple's connection now
    for d in packets:
        if d.tcp is None or port not in (d.sport, d.dport):
            continue
        to_port = d.dport == port
        four = (d.src, d.sport, d.dst, d.dport) if to_port else (d.dst, d.dport, d.src, d.sport)
        conn = current.get(four)
        syn, ack = d.tcp.flags & 0x02, d.tcp.flags & 0x10
        base = (d.tcp.seq + 1) & 0xFFFFFFFF  # the first data byte follows the SYN
        if syn and not ack and (conn is None or conn[0].base != base):
            conn = current[four] = (_Half(base), _Half())  # a new connection (ports get reused)
            conns.append(conn)
        if conn is None:  # the capture began after the SYN
            conn = current[four] = (_Half(), _Half())
            conns.append(conn)
        half = conn[0] if to_port else conn[1]
        if syn and ack:
            half.base = base
        if d.payload:
            if half.base is None:
                half.base = d.tcp.seq
            half.segments.append(((d.tcp.seq - half.base) & 0xFFFFFFFF, d.payload))
    count = StreamCount(connections=len(conns))
    for conn in conns:
        for half, starts in zip(conn, (METHODS, (b"HTTP/1.",)), strict=True):
            stream, repeated, gap = _reassemble(half.segments)
            count.repeated += repeated
            count.gaps += gap
            n = _messages(stream, starts, request=starts is METHODS)
            if starts is METHODS:
                count.requests += n
            else:
                count.responses += n
    return count


def _reassemble(segments: list[tuple[int, bytes]]) -> tuple[bytes, int, bool]:
    """(the contiguous stream from offset 0, segments already covered, a gap after it?)"""
    out, pos, repeated = bytearray(), 0, 0
    for offset, data in sorted(segments, key=lambda s: (s[0], -len(s[1]))):
        if offset + len(data) <= pos:
            repeated += 1
        elif offset > pos:
            return bytes(out), repeated, True
        else:
            out += data[pos - offset:]
            pos = offset + len(data)
    return bytes(out), repeated, False


def _messages(stream: bytes, starts: tuple[bytes, ...], request: bool) -> int:
    """HTTP/1.1 messages at the start of `stream`, one after another (RFC 9112 section 6: the
    body's length from Content-Length; a response without one runs to the end)."""
    n = pos = 0
    while stream.startswith(starts, pos):
        end = stream.find(b"\r\n\r\n", pos)
        if end < 0:
            break
        n += 1
        length = _content_length(stream[pos:end])
        pos = end + 4 + (length if length is not None else 0 if request else len(stream))
    return n


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value.strip())
    return None


# -- the messages themselves, for what they expose (`protolab.analysis.exposed`) -------------------


@dataclass(frozen=True)
class HttpMessage:
    """One HTTP/1.x message, read from its direction's reassembled byte stream."""

    number: int  #: the packet that carries its first byte
    src: str  #: "address:port" of the sender
    dst: str
    start: str  #: the request or status line
    headers: tuple[tuple[str, str], ...]  #: (name lower-cased, value), in order, repeats kept
    body: bytes = b""
    body_number: int = 0  #: the packet that carries the body's first byte (0: no body)

    @property
    def is_response(self) -> bool:
        return self.start.startswith("HTTP/")

    @property
    def status(self) -> int:
        """A response's status code (0 for a request)."""
        parts = self.start.split()
        return int(parts[1]) if self.is_response and len(parts) > 1 and parts[1].isdigit() \
            else 0

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]


@dataclass
class _Direction:
    """One direction of one TCP connection: (offset, packet number, bytes) of its segments."""

    src: str
    dst: str
    base: int | None = None
    segments: list[tuple[int, int, bytes]] = field(default_factory=list)


def http_messages(packets: Iterable[tuple[int, Decoded]]) -> list[HttpMessage]:
    """Every HTTP/1.x message in (packet number, decoded frame) pairs, each read from its
    direction's reassembled stream (RFC 9293 section 3.10.7.4: a retransmission counted once, a
    head split over segments read whole), in the order of their first packets."""
    live: dict[tuple, _Direction] = {}
    done: list[_Direction] = []
    for number, d in packets:
        if d.tcp is None:
            continue
        key = (d.src, d.sport, d.dst, d.dport)
        base = (d.tcp.seq + 1) & 0xFFFFFFFF
        half = live.get(key)
        if d.tcp.flags & 0x02 and (half is None or half.base != base):
            if half is not None:
                done.append(half)
            half = live[key] = _Direction(d.endpoint("src"), d.endpoint("dst"), base)
        if half is None:  # the capture began after the SYN
            half = live[key] = _Direction(d.endpoint("src"), d.endpoint("dst"))
        if d.payload:
            if half.base is None:
                half.base = d.tcp.seq
            half.segments.append(((d.tcp.seq - half.base) & 0xFFFFFFFF, number, d.payload))
    found = [m for half in (*done, *live.values()) for m in _read_messages(half)]
    return sorted(found, key=lambda m: m.number)


def _read_messages(half: _Direction) -> list[HttpMessage]:
    stream, _, _ = _reassemble([(o, data) for o, _, data in half.segments])
    owners = sorted((o, n) for o, n, _ in half.segments)
    out, pos = [], 0
    while stream.startswith((*METHODS, b"PATCH ", b"OPTIONS ", b"HTTP/1."), pos):
        end = stream.find(b"\r\n\r\n", pos)
        if end < 0:
            break
        lines = stream[pos:end].decode("latin-1").split("\r\n")
        headers = tuple((k.strip().lower(), v.strip())
                        for k, _, v in (ln.partition(":") for ln in lines[1:]))
        length = _content_length(stream[pos:end])
        stop = end + 4 + (length if length is not None else 0 if not lines[0].startswith(
            "HTTP/") else len(stream))
        number = next(n for o, n in reversed(owners) if o <= pos)
        body = stream[end + 4:stop]
        body_number = next(n for o, n in reversed(owners) if o <= end + 4) if body else 0
        out.append(HttpMessage(number, half.src, half.dst, lines[0], headers, body,
                               body_number))
        pos = stop
    return out
