"""A DNS message's header, question and plain answers, read straight from the bytes.

Where state lives: in the packet. The annotated table needs five things of a DNS message (its id,
query or response, the question, the rcode, the answers' addresses); dnspython builds a whole
message object for them, which costs ~60 µs a packet. `read_simple` reads them directly (RFC 1035
section 4.1) for the shape nearly every message has: a standard query (opcode 0), one question
whose name is written out in labels, nothing in the authority and additional sections, and
answers of type A in class IN whose owner is written out or points at the question (`0xc00c`).
For any other shape, and for anything it would have to judge as damaged, it answers None and the
caller asks dnspython, so what a message is said to be never depends on which reader read it
(tests/test_dns_wire.py holds both to the same answers).
"""

from __future__ import annotations

import struct

#: the UDP ports read as DNS whatever their payload looks like (53: DNS, 5353: multicast DNS);
#: `inspect --dns-port` adds more
DNS_PORTS = frozenset({53, 5353})
_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
TYPE_A = 1
CLASS_IN = 1
_OPCODE = 0x7800  #: the header's opcode bits (RFC 1035 section 4.1.1); 0 is a standard query
_QUESTION_POINTER = b"\xc0\x0c"  #: a compression pointer to offset 12, the question's name
#: dnspython writes these bytes of a label as they are; all others are escaped (dns.name)
_PLAIN = bytes(c for c in range(0x21, 0x7F) if c not in b'"().;\\@$')
_NAMES_KEPT = 4096  #: the names' texts remembered (a capture asks the same few names again)
_names: dict[bytes, str] = {}

#: (id, is a response, the question's name as text, its type number, rcode, the answers as text)
Simple = tuple[int, bool, str, int, int, str]


def read_simple(payload: bytes) -> Simple | None:
    """The message's facts when it has the simple shape (see the module's text), else None."""
    if len(payload) < 12:
        return None
    qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(payload)
    if qdcount != 1 or nscount or arcount or flags & _OPCODE:
        return None
    end = _name_end(payload, 12)
    if end < 0 or end + 4 > len(payload):
        return None
    qname = payload[12:end]
    qtype = payload[end] << 8 | payload[end + 1]
    off = end + 4
    answers = ""
    if ancount:
        found = _answers(payload, off, ancount, qname)
        if found is None:
            return None
        answers, off = found
    if off != len(payload):  # trailing bytes: dnspython's call
        return None
    return qid, bool(flags & 0x8000), name_text(qname), qtype, flags & 0x0F, answers


def question_class(payload: bytes) -> int | None:
    """The class of a message's first question (1 IN, 3 CH...), or None: no question, a name
    that is not written out in labels, or cut short."""
    if len(payload) < 12 or payload[4:6] == b"\0\0":
        return None
    end = _name_end(payload, 12)
    if end < 0 or end + 4 > len(payload):
        return None
    return payload[end + 2] << 8 | payload[end + 3]


#: names (their bytes up to the zero byte that ends them) already walked label by label
_WALKED: set[bytes] = set()


def _name_end(data: bytes, off: int) -> int:
    """Where a name written out in labels ends (after its zero byte), or -1: cut short, a
    compression pointer or another label type, longer than 255 bytes."""
    zero = data.find(b"\0", off)
    if zero >= 0 and data[off:zero + 1] in _WALKED:  # the same bytes walk the same way
        return zero + 1
    end = _walk_labels(data, off)
    if end == zero + 1 > 0:
        if len(_WALKED) >= _NAMES_KEPT:
            _WALKED.clear()
        _WALKED.add(data[off:end])
    return end


def _walk_labels(data: bytes, off: int) -> int:
    start, size = off, len(data)
    while off < size:
        n = data[off]
        if n == 0:
            return off + 1 if off + 1 - start <= 255 else -1
        if n > 63:
            return -1
        off += n + 1
    return -1


def _answers(data: bytes, off: int, count: int, qname: bytes) -> tuple[str, int] | None:
    """The answers' addresses as dnspython lists them (one RRset per owner name, in order of
    first appearance, duplicates once), and where they end; None for anything but A in IN."""
    sets: dict[bytes, list[bytes]] = {}
    for _ in range(count):
        if data[off:off + 2] == _QUESTION_POINTER:
            owner, off = qname, off + 2
        else:
            end = _name_end(data, off)
            if end < 0:
                return None
            owner, off = data[off:end], end
        if off + 10 > len(data):
            return None
        rtype, rclass, _, rdlen = _RR.unpack_from(data, off)
        off += 10
        if rtype != TYPE_A or rclass != CLASS_IN or rdlen != 4 or off + 4 > len(data):
            return None
        rdata = data[off:off + 4]
        off += 4
        rrset = sets.setdefault(owner.lower(), [])  # names compare without case (RFC 4343)
        if rdata not in rrset:
            rrset.append(rdata)
    return " ".join(f"{a}.{b}.{c}.{d}" for rrset in sets.values()
                    for a, b, c, d in rrset), off


def name_text(wire: bytes) -> str:
    """A name written out in labels as dnspython prints it: absolute, "." for the root, special
    and non-printable bytes escaped (`\\.`, `\\032`)."""
    text = _names.get(wire)
    if text is None:
        labels, off = [], 0
        while wire[off]:
            labels.append(_label_text(wire[off + 1:off + 1 + wire[off]]))
            off += wire[off] + 1
        text = ".".join(labels) + "." if labels else "."
        if len(_names) >= _NAMES_KEPT:
            _names.clear()
        _names[wire] = text
    return text


def _label_text(label: bytes) -> str:
    if not label.translate(None, _PLAIN):
        return label.decode("ascii")
    return "".join(chr(c) if c in _PLAIN else "\\" + chr(c) if 0x20 < c < 0x7F else f"\\{c:03d}"
                   for c in label)
