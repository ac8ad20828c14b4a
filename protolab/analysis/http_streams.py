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
