"""The direct DNS reader (`protolab.wire.dns_wire`) against dnspython: on generated messages, valid
and damaged, `parse_dns` says exactly what dnspython alone says (the same facts, or the same "not
a DNS message"), whichever reader answered."""

from __future__ import annotations

import struct

import dns.message
import dns.rrset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protolab.analysis.annotate_dns import parse_dns, parse_dns_message
from protolab.wire.dns_wire import read_simple


def dnspython_says(payload: bytes) -> tuple | None:
    """What the table said before the direct reader: dnspython, after the same cheap check."""
    if len(payload) < 12 or int.from_bytes(payload[4:6], "big") != 1:
        return None
    return parse_dns_message(payload)


#: label bytes: letters of both cases, digits, the ones dnspython escapes, space, controls, high
_BYTES = st.sampled_from(b'aZz09-_*"().;\\@$ \x00\x07\x7f\x80\xff')
_LABEL = st.binary(min_size=1, max_size=8) | st.lists(_BYTES, min_size=1, max_size=8).map(bytes) \
    | st.integers(60, 66).map(lambda n: b"a" * n)


@st.composite
def names(draw: st.DrawFn) -> bytes:
    labels = draw(st.lists(_LABEL, max_size=5))
    if draw(st.integers(0, 9)) == 0:
        labels += [b"b" * 63] * 4  # longer than 255 bytes in all
    return b"".join(bytes([len(x)]) + x for x in labels) + b"\x00"


@st.composite
def records(draw: st.DrawFn) -> bytes:
    owner = draw(st.sampled_from([b"\xc0\x0c", b"\xc0\x0c", b"\xc0\x0d", b"\xc0\xff", b"\x80\x01"])
                 | names())
    rtype = draw(st.sampled_from([1, 1, 1, 28, 5, 16, 41]) | st.integers(0, 65535))
    rclass = draw(st.sampled_from([1, 1, 1, 3, 255]) | st.integers(0, 65535))
    ttl = draw(st.sampled_from([0, 60, 0x80000000]))
    rdata = draw(st.binary(min_size=4, max_size=4) | st.sampled_from([b"\x01\x02\x03\x04"])
                 | st.binary(max_size=18))
    return owner + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """A message built field by field (counts that may not match what follows), maybe damaged."""
    answers = draw(st.lists(records(), max_size=4))
    flags = draw(st.integers(0, 0xFFFF))
    if draw(st.booleans()):
        flags &= ~0x7800  # mostly a standard query
    counts = [1, len(answers), 0, 0]
    if draw(st.integers(0, 4)) == 0:
        counts = draw(st.lists(st.integers(0, 3), min_size=4, max_size=4))
    question = draw(names()) + struct.pack("!HH", draw(st.sampled_from([1, 28, 255, 65])
                                                       | st.integers(0, 65535)),
                                           draw(st.sampled_from([1, 3]) | st.integers(0, 65535)))
    wire = bytearray(struct.pack("!HH4H", draw(st.integers(0, 0xFFFF)), flags, *counts)
                     + question + b"".join(answers))
    for _ in range(draw(st.integers(0, 2))):
        if wire and draw(st.booleans()):
            wire[draw(st.integers(0, len(wire) - 1))] = draw(st.integers(0, 255))
        else:
            wire = wire[:draw(st.integers(0, len(wire)))]
    if draw(st.integers(0, 9)) == 0:
        wire += b"\x00"  # a trailing byte
    return bytes(wire)


@given(messages())
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_generated_messages_read_as_dnspython_reads_them(wire: bytes) -> None:
    assert parse_dns(wire) == dnspython_says(wire)


@st.composite
def real_answers(draw: st.DrawFn, owners: tuple[str, ...] = ()) -> bytes:
    """Answers dnspython itself writes: A records, the same address twice, owners the question's
    name in either case (and any of `owners`)."""
    name = draw(st.sampled_from(["www.example.com.", "A.b.", "x-y_z.example.", "."]))
    query = dns.message.make_query(name, draw(st.sampled_from(["A", "AAAA", "MX", "TYPE999"])))
    answer = dns.message.make_response(query)
    answer.set_rcode(draw(st.sampled_from([0, 2, 3, 5, 9, 11, 15])))
    for owner, address in draw(st.lists(st.tuples(st.sampled_from([name, name.upper(), *owners]),
                                                  st.sampled_from(["192.0.2.1", "10.0.0.255"])),
                                        max_size=4)):
        answer.answer.append(dns.rrset.from_text(owner, 300, "IN", "A", address))
    return (query if draw(st.booleans()) else answer).to_wire()


@given(real_answers())
@settings(max_examples=300, deadline=None)
def test_messages_dnspython_writes_are_read_directly_and_alike(wire: bytes) -> None:
    assert read_simple(wire) is not None  # the common shape never needs dnspython
    assert parse_dns(wire) == dnspython_says(wire)


@given(real_answers(owners=("o.ther.", "sub.www.example.com.")))
@settings(max_examples=200, deadline=None)
def test_other_owners_read_alike(wire: bytes) -> None:
    assert parse_dns(wire) == dnspython_says(wire)


def test_every_question_type_and_rcode_reads_alike() -> None:
    base = dns.message.make_query("www.example.com.", "A").to_wire()
    for rdtype in range(0, 65536, 7):
        wire = base[:-4] + struct.pack("!HH", rdtype, 1)
        assert parse_dns(wire) == dnspython_says(wire), rdtype
    for rcode in range(16):
        wire = base[:2] + struct.pack("!H", 0x8000 | rcode) + base[4:]
        assert parse_dns(wire) == dnspython_says(wire), rcode


def test_a_message_sent_again_with_another_id_reads_alike_with_its_own_id() -> None:
    """(Messages are remembered by their bytes after the id: the id is never remembered.)"""
    query = dns.message.make_query("www.example.com.", "A").to_wire()
    answer = dns.message.make_response(dns.message.from_wire(query)).to_wire()
    for wire in (query, answer, query[:-1]):
        for qid in (1, 0xBEEF, 1, 0):
            again = struct.pack("!H", qid) + wire[2:]
            assert parse_dns(again) == dnspython_says(again)
            assert parse_dns(again) is None or parse_dns(again)[0] == qid
