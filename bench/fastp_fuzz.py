"""Generated DNS messages (compressed names, TXT, SOA, damaged bytes) through fast_dns.c: a
message it reads must read as dnspython reads it (the row's summary from annotate_dns.parse_dns),
one it calls malformed must be one parse_dns rejects; declining is always allowed. OPT records
(EDNS) in the additional section too.

    python bench/fastp_fuzz.py [EXAMPLES]
"""

from __future__ import annotations

import ctypes
import struct
import sys
from pathlib import Path

import dns.rdata
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fastp_check  # noqa: E402

from protolab.analysis.annotate_dns import parse_dns  # noqa: E402

LIB = fastp_check.build()
# As in a fresh `protolab inspect`, whose captures the compiled path accepts hold no A or AAAA of
# class ANY: dnspython's readers of A and AAAA in IN are loaded before any such record can leave
# a generic reader behind (see fast_dns.c, ip_generic).
dns.rdata.get_rdata_class(1, 1)
dns.rdata.get_rdata_class(1, 28)
BUF = ctypes.create_string_buffer(1 << 16)
PORTS = (ctypes.c_int * 1)(53)
SEEN = {"read": 0, "malformed": 0, "declined": 0}

_LABEL = st.sampled_from([b"a", b"lab", b"LAB", b"x y", b'"q"', b"\xff", b"b" * 63])


@st.composite
def names(draw: st.DrawFn, offsets: list[int]) -> bytes:
    labels = b"".join(bytes([len(x)]) + x for x in draw(st.lists(_LABEL, max_size=4)))
    end = draw(st.sampled_from([b"\x00", b"\x00", b"ptr"]))
    if end == b"ptr":
        target = draw(st.sampled_from([*offsets, 12, 13, 17, 200, 0x3FFF]))
        end = struct.pack("!H", 0xC000 | target)
    return labels + end


@st.composite
def records(draw: st.DrawFn, offsets: list[int], authority: bool) -> bytes:
    owner = draw(names(offsets))
    kinds = [6, 6, 6, 2] if authority else [1, 1, 16, 16, 16, 28, 28, 5, 5, 5]
    rtype = draw(st.sampled_from(kinds))
    rclass = draw(st.sampled_from([1, 1, 1, 1, 3, 255]))
    ttl = draw(st.sampled_from([0, 60, 5, 0x80000000]))
    if rtype == 16:
        rdata = b"".join(bytes([len(s)]) + s for s in draw(st.lists(
            st.binary(max_size=6) | st.sampled_from([b'"\\', b"ok"]), max_size=3)))
    elif rtype == 6:
        rdata = draw(names(offsets)) + draw(names(offsets)) + bytes(draw(st.sampled_from([20, 20,
                                                                                      19, 21])))
    elif rtype == 5:
        rdata = draw(names(offsets))
    elif rtype == 28:
        groups = st.sampled_from([0, 0, 0, 1, 0xFFFF, 0xABC]) | st.integers(0, 0xFFFF)
        rdata = struct.pack("!8H", *draw(st.lists(groups, min_size=8, max_size=8))) \
            if draw(st.integers(0, 5)) else draw(st.binary(max_size=18))
    else:
        rdata = draw(st.binary(min_size=4, max_size=4) | st.binary(max_size=6))
    return owner + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


@st.composite
def opts(draw: st.DrawFn) -> bytes:
    """An OPT record (EDNS), maybe with a COOKIE, PADDING or another option, maybe not the
    root's, maybe with extended rcode bits."""
    options = b"".join(struct.pack("!HH", code, len(data)) + data for code, data in draw(
        st.lists(st.tuples(st.sampled_from([10, 10, 12, 8, 3, 15, 65001]),
                           st.sampled_from([b"c" * 8, b"c" * 16, b"c" * 12, b"", b"x" * 41])),
                 max_size=2)))
    name = draw(st.sampled_from([b"\x00", b"\x00", b"\xc0\x0c", b"\x01a\x00"]))
    ttl = draw(st.sampled_from([0, 0x8000, 0x01000000]))
    return name + struct.pack("!HHIH", 41, draw(st.sampled_from([1232, 4096, 512])), ttl,
                              len(options)) + options


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    q = draw(names([]))
    q = q if q.endswith(b"\x00") else b"\x03lab\x00"  # the question's name is written out
    wire = bytearray(struct.pack("!HHHHHH", draw(st.integers(0, 0xFFFF)),
                                 0x8180 | draw(st.integers(0, 5)), 1, 0, 0, 0) + q
                     + struct.pack("!HH", draw(st.sampled_from([1, 16, 28, 255])),
                                   draw(st.sampled_from([1, 3]))))
    offsets = [12 + i for i in range(len(q))]
    an = draw(st.lists(records(offsets, False), max_size=3))
    ns = draw(st.lists(records(offsets, True), max_size=2))
    ar = draw(st.lists(opts(), max_size=2))
    wire += b"".join(an) + b"".join(ns) + b"".join(ar)
    struct.pack_into("!HHH", wire, 6, len(an), len(ns), len(ar))
    if draw(st.integers(0, 5)) == 0:
        wire[draw(st.integers(0, len(wire) - 1))] = draw(st.integers(0, 255))
    if draw(st.integers(0, 9)) == 0:
        wire = wire[:draw(st.integers(12, len(wire)))]
    if draw(st.integers(0, 9)) == 0:  # counts of a random datagram's bytes
        struct.pack_into("!HHH", wire, 6, *draw(st.lists(st.integers(0, 0xFFFF), min_size=3,
                                                          max_size=3)))
    return bytes(wire)


def c_summary(wire: bytes) -> str | None:
    LIB.drv_start(PORTS, 1)
    rc = LIB.drv_feed(1, 1, 1.0, 0.0, 53, 4000, b"10.0.0.1:53", b"10.0.0.2:4000", wire,
                      len(wire), BUF, len(BUF))
    if rc < 0:
        return None
    LIB.drv_finish(BUF, len(BUF))
    return fastp_check.c_rows(BUF.value.decode())[0][2]


@given(messages())
def check(wire: bytes) -> None:
    got = c_summary(wire)
    if got is None:
        SEEN["declined"] += 1
        return
    want = parse_dns(wire)
    if got.startswith("DNS? "):
        SEEN["malformed"] += 1
        assert want is None, (wire, got, want)
        return
    SEEN["read"] += 1
    SEEN["read, compressed"] = SEEN.get("read, compressed", 0) + (b"\xc0" in wire[12:])
    SEEN["read, with OPT"] = SEEN.get("read, with OPT", 0) + (wire[10:12] != b"\0\0")
    SEEN["read, AAAA"] = SEEN.get("read, AAAA", 0) + (":" in got)
    SEEN["read, CNAME"] = SEEN.get("read, CNAME", 0) + (b"\x00\x05\x00\x01" in wire[12:])
    rich = '"' in got or "NOERROR" not in got
    SEEN["read, TXT or SOA"] = SEEN.get("read, TXT or SOA", 0) + rich
    assert want is not None, (wire, got)
    qid, response, question, rcode, answers = want
    expected = f"answer {qid:#06x} {question} {rcode}" + (f" {answers}" if answers else "") \
        if response else f"query {qid:#06x} {question}"
    assert got == expected, (wire, got, want)


_GROUP = st.sampled_from([0, 0, 0, 1, 0xFFFF, 0x10, 0xABC]) | st.integers(0, 0xFFFF)


@given(st.lists(st.lists(_GROUP, min_size=8, max_size=8).map(lambda g: struct.pack("!8H", *g))
                | st.binary(min_size=4, max_size=4).map(lambda v4: bytes(10) + b"\xff\xff" + v4)
                | st.binary(min_size=4, max_size=4).map(lambda v4: bytes(12) + v4),
                min_size=1, max_size=3))
def check_aaaa(addresses: list[bytes]) -> None:
    """AAAA answers: every address written as dnspython writes it."""
    wire = struct.pack("!HHHHHH", 5, 0x8180, 1, len(addresses), 0, 0) + b"\x03lab\x00" \
        + struct.pack("!HH", 28, 1) + b"".join(b"\xc0\x0c" + struct.pack("!HHIH", 28, 1, 60, 16)
                                               + a for a in addresses)
    qid, _, question, rcode, answers = parse_dns(wire)
    assert c_summary(wire) == f"answer {qid:#06x} {question} {rcode} {answers}"


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck))(check)()
    print(f"{n} messages: {SEEN}")
    settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck))(check_aaaa)()
    print(f"{n} AAAA answers: as dnspython writes them")


if __name__ == "__main__":
    main()
