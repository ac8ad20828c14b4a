"""The common frame's one-step decode (IPv4, TCP or UDP) against the general path."""

from __future__ import annotations

import random

import pytest

from protolab.wire import packets
from protolab.wire.paths import reference_file
from protolab.wire.pcap import LINKTYPE_ETHERNET, read_pcap


def _general(data: bytes, time: float, orig_len: int, interface: str) -> packets.Decoded:
    """What the layer-by-layer path (`_ip`, `_l4`) makes of an Ethernet frame carrying IPv4."""
    base = {"time": time, "length": len(data), "orig_len": orig_len, "interface": interface}
    return packets._ip(data, 14, base)


def _variants(data: bytes, rnd: random.Random) -> list[bytes]:
    """The frame, cut at every length past the Ethernet header, padded (as a short frame is to
    Ethernet's 60 bytes: the IP total length says where the datagram ends), and with bytes
    changed."""
    out = [data[:n] for n in range(14, len(data) + 1)] + [data + bytes(6)]
    for _ in range(40):
        b = bytearray(data)
        for _ in range(rnd.randrange(1, 4)):
            b[rnd.randrange(14, min(len(b), 74))] = rnd.randrange(256)
        out.append(bytes(b))
    return out


@pytest.mark.parametrize("lab", ["tcp-demo", "dns-demo", "quic-demo", "udp-demo"])
def test_the_one_step_decode_is_the_general_one(lab) -> None:
    rnd = random.Random(lab)
    compared = 0
    for rec in list(read_pcap(reference_file(lab)))[:40]:
        if rec.linktype != LINKTYPE_ETHERNET or rec.data[12:14] != b"\x08\x00":
            continue
        for data in _variants(rec.data, rnd):
            fast = packets.decode(data, rec.linktype, rec.time, rec.orig_len, rec.interface)
            assert fast == _general(data, rec.time, rec.orig_len, rec.interface)
            assert type(fast.payload) is bytes
            compared += 1
    assert compared > 500


@pytest.mark.parametrize("lab", ["tcp-demo", "dns-demo", "quic-demo", "udp-demo"])
def test_a_frame_read_in_place_decodes_as_the_frame_alone(lab) -> None:
    """`decode_at` reads a frame inside a larger buffer (the reader's chunk): what comes before
    and after it in the buffer changes nothing."""
    rnd = random.Random(lab)
    compared = 0
    for rec in list(read_pcap(reference_file(lab)))[:40]:
        for data in _variants(rec.data, rnd):
            before, after = rnd.randbytes(rnd.randrange(0, 30)), rnd.randbytes(60)
            placed = packets.decode_at(before + data + after, len(before),
                                       len(before) + len(data), rec.time, rec.orig_len,
                                       rec.linktype, rec.interface)
            assert placed == packets.decode(data, rec.linktype, rec.time, rec.orig_len,
                                            rec.interface)
            assert type(placed.payload) is bytes
            compared += 1
    assert compared > 500


@pytest.mark.parametrize("name", sorted(p.name for p in reference_file("tcp-demo").parent.glob(
    "*.ref.pcap*")))
def test_reading_decoded_is_reading_then_decoding(name) -> None:
    path = reference_file("tcp-demo").parent / name
    expected = [packets.decode(r.data, r.linktype, r.time, r.orig_len, r.interface)
                for r in read_pcap(path)]
    assert list(packets.read_decoded(path)) == expected
    assert expected
