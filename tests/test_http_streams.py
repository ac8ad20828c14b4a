"""Counting HTTP in a capture by TCP stream (issue 13 item 13): each message once, from the
reassembled bytes, whatever the segments did."""

from __future__ import annotations

from protolab.analysis.http_streams import http_streams


def _frames(segments) -> list:
    """Real frames (scapy-built bytes, decoded by protolab's decoder) for (src port, dst port,
    flags, seq, payload) on 127.0.0.1."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    from protolab.wire.packets import decode
    from protolab.wire.pcap import LINKTYPE_ETHERNET

    out = []
    for i, (sport, dport, flags, seq, payload) in enumerate(segments):
        frame = Ether() / IP(src="127.0.0.1", dst="127.0.0.1") / TCP(
            sport=sport, dport=dport, flags=flags, seq=seq) / payload
        out.append(decode(bytes(frame), LINKTYPE_ETHERNET, float(i)))
    return out


LB, CLIENT = 8080, 40000
POST = b'POST /cart/items HTTP/1.1\r\nHost: lb\r\nContent-Length: 2\r\n\r\n{}'
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"


def _connection(isn: int, request_parts: list[bytes], retransmit: bool = False) -> list:
    segs = [(CLIENT, LB, "S", isn, b""), (LB, CLIENT, "SA", 7000, b"")]
    seq = isn + 1
    for part in request_parts:
        segs.append((CLIENT, LB, "PA", seq, part))
        seq += len(part)
    if retransmit:  # the same bytes again: the receiver's ACK was late (or the first was lost)
        segs.append((CLIENT, LB, "PA", isn + 1, request_parts[0]))
    segs.append((LB, CLIENT, "PA", 7001, OK))
    return segs


def test_a_retransmitted_request_is_counted_once() -> None:
    frames = _frames(_connection(100, [POST], retransmit=True))
    got = http_streams(frames, LB)
    assert (got.requests, got.responses, got.connections, got.repeated) == (1, 1, 1, 1)
    assert got.gaps == 0


def test_a_head_split_over_segments_and_a_reused_port_are_counted_by_stream() -> None:
    frames = _frames(_connection(100, [POST[:2], POST[2:]])  # "PO" + "ST /cart..."
                     + _connection(90_000, [POST]))  # the same 4-tuple again: a new ISN
    got = http_streams(frames, LB)
    assert (got.requests, got.responses, got.connections, got.repeated) == (2, 2, 2, 0)


def test_bytes_missing_from_the_capture_are_a_gap_not_a_request() -> None:
    segs = _connection(100, [POST[:10], POST[10:]])
    del segs[2]  # the first part of the head never reached the capture
    got = http_streams(_frames(segs), LB)
    assert (got.requests, got.gaps) == (0, 1)
