"""Reading and writing classic pcap files, streaming, with no scapy.

Where state lives: nowhere but in the file. A reader holds one record at a time, so memory stays
flat however large the capture is; a writer writes to a temporary name in the same directory and
renames it into place when done, so an interrupted run never leaves a half-written capture and never
damages the file that was there before.

Format: https://www.tcpdump.org/manpages/pcap-savefile.5.txt (the classic "libpcap" format).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

from protolab.wire.files import atomic_file

MAGIC_USEC = 0xA1B2C3D4
MAGIC_NSEC = 0xA1B23C4D
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
#: Other numbers for raw IP: 12 and 14 (BSDs), 228 (IPv4 only), 229 (IPv6 only).
RAW_IP_LINKTYPES = frozenset({LINKTYPE_RAW, 12, 14, 228, 229})
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
SNAPLEN = 262144

_GLOBAL_HEADER = struct.Struct("<IHHiIII")
_RECORD_HEADER_LEN = 16


class PcapError(Exception):
    """A capture file that cannot be read (or only partly): the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class Record:
    """One captured frame as stored in the file."""

    time: float  #: seconds since the epoch
    linktype: int
    data: bytes  #: the bytes that were captured (may be shorter than orig_len)
    orig_len: int  #: the frame's length on the wire
    #: where it was captured, as the pcapng interface's name (if_name: "client:eth0"); "" when
    #: the file does not say (classic pcap, an unnamed interface)
    interface: str = ""


def read_pcap(path: str | os.PathLike[str]) -> Iterator[Record]:
    """Yield the records of a classic pcap file one at a time.

    Raises `PcapError` (after yielding every complete record before it) when the file is not a pcap
    file, or ends inside a record.
    """
    for frame in read_frames(path):
        yield Record(*frame)


#: A record's fields as a plain tuple (time, linktype, data, orig_len, interface): what
#: `read_frames` yields, for a reader of millions of frames (a frozen Record costs ~2 µs to make).
Frame = tuple[float, int, bytes, int, str]

T = TypeVar("T")
#: What a reader makes of each record, called as make(buf, start, end, time, orig_len, linktype,
#: interface): the record's bytes are buf[start:end], not cut out, so a decoder can read the
#: headers in place (the frame's bytes copied out is a third of the cost of reading one).
Make = Callable[[bytes, int, int, float, int, int, str], T]


def read_frames(path: str | os.PathLike[str]) -> Iterator[Frame]:
    """`read_pcap`, each record as a `Frame` tuple."""
    return read_made(path, None)


def _frame(buf: bytes, start: int, end: int, time: float, orig_len: int, linktype: int,
           interface: str) -> Frame:
    """A record as a `Frame` (the `Make` of `read_frames`)."""
    return time, linktype, buf[start:end], orig_len, interface


def read_made(path: str | os.PathLike[str], make: Make[T] | None) -> Iterator[T]:
    """`read_pcap`, each record as `make` makes it (None: as a `Frame`). Raises `PcapError` as
    `read_pcap` does (the file is opened at the first step, as a generator's body runs then)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed in the finally below, generator-safe
    except OSError as exc:
        raise PcapError(f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        yield from _read_stream(f, str(path), make)
    finally:
        f.close()


def _read_stream(f: BinaryIO, name: str, make: Make[T] | None) -> Iterator[T]:
    """The records after the file's first bytes, which say its format (read now, not lazily:
    the caller is a generator already, and a generator less is a step less per frame)."""
    head = f.read(24)
    if len(head) < 24:
        raise PcapError(f"{name}: not a pcap file (only {len(head)} bytes)")
    magic_le = struct.unpack("<I", head[:4])[0]
    magic_be = struct.unpack(">I", head[:4])[0]
    if magic_le in (MAGIC_USEC, MAGIC_NSEC):
        order, magic = "<", magic_le
    elif magic_be in (MAGIC_USEC, MAGIC_NSEC):
        order, magic = ">", magic_be
    elif head[:4] == b"\x0a\x0d\x0d\x0a":
        made = make or _frame
        return (made(rec.data, 0, len(rec.data), rec.time, rec.orig_len, rec.linktype,
                     rec.interface) for rec in _read_pcapng(f, head, name))
    else:
        raise PcapError(f"{name}: not a pcap file (magic {head[:4].hex()})")
    _, _, _, _, _, _, linktype = struct.unpack(order + "IHHiIII", head)
    linktype &= 0xFFFF
    divisor = 1e9 if magic == MAGIC_NSEC else 1e6
    return _records(f, name, struct.Struct(order + "IIII"), linktype, divisor, make)


_CHUNK = 1 << 20  #: bytes read at once: one read per thousands of records, not two per record
_MAX_CAPLEN = SNAPLEN * 4  #: a record longer than this is taken for a corrupt one


def _records(f: BinaryIO, name: str, header: struct.Struct, linktype: int,
             divisor: float, make: Make[T] | None) -> Iterator[T]:
    """The records after a classic pcap file's global header, read a chunk at a time."""
    made = make or _frame
    unpack = header.unpack_from
    buf, pos, base = b"", 0, 24  # base: where in the file buf starts (for the errors' bytes)
    while True:
        # Every record whole in the chunk, with nothing checked but its length (nearly all).
        end = len(buf) - _RECORD_HEADER_LEN
        while pos <= end:
            sec, frac, caplen, orig_len = unpack(buf, pos)
            start = pos + _RECORD_HEADER_LEN
            if start + caplen > len(buf) or caplen > _MAX_CAPLEN:
                break
            pos = start + caplen
            yield made(buf, start, pos, sec + frac / divisor, orig_len, linktype, "")
        # The chunk ends inside this record, or the record is corrupt: the next chunk.
        buf, pos, base = buf[pos:] + f.read(_CHUNK), 0, base + pos
        if not buf:
            return
        if len(buf) < _RECORD_HEADER_LEN:
            raise PcapError(f"{name}: file ends inside a record header at byte {base}")
        caplen = unpack(buf, 0)[2]
        if caplen > _MAX_CAPLEN:
            raise PcapError(f"{name}: corrupt record at byte {base} (length {caplen})")
        if _RECORD_HEADER_LEN + caplen > len(buf):
            buf += f.read(caplen)  # a record longer than a chunk
            if _RECORD_HEADER_LEN + caplen > len(buf):
                raise PcapError(f"{name}: file ends inside a record at byte {base} "
                                f"({len(buf) - _RECORD_HEADER_LEN} of {caplen} bytes)")


# -- pcapng (https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-02.html) --------------------

_SHB, _IDB, _OPB, _SPB, _EPB = 0x0A0D0D0A, 1, 2, 3, 6
_IF_NAME = 2  #: the Interface Description Block's if_name option (section 4.2)
_MAX_BLOCK = 16 * 1024 * 1024
#: The smallest Section Header Block (draft-ietf-opsawg-pcapng section 4.1): type, length,
#: byte-order magic, major and minor version, section length, trailing length.
_MIN_SHB = 28


@dataclass
class _Interface:
    linktype: int
    snaplen: int
    units: float  #: timestamp units per second
    name: str = ""  #: if_name (option 2), "" when not given


def _read_pcapng(f: BinaryIO, first: bytes, name: str) -> Iterator[Record]:
    """Section by section, block by block; `first` holds the first 24 bytes already read."""
    buf = first
    offset = 0
    order = "<"
    interfaces: list[_Interface] = []
    while True:
        if len(buf) < 8:
            buf += f.read(8 - len(buf))
            if not buf:
                return
            if len(buf) < 8:
                raise PcapError(f"{name}: file ends inside a block header at byte {offset}")
        btype_raw = buf[:4]
        if btype_raw == b"\x0a\x0d\x0d\x0a":
            if len(buf) < 12:
                buf += f.read(12 - len(buf))
            bom = buf[8:12]
            if bom == b"\x4d\x3c\x2b\x1a":
                order = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                order = ">"
            else:
                raise PcapError(f"{name}: corrupt section header at byte {offset}")
            interfaces = []
        btype, blen = struct.unpack(order + "II", buf[:8])
        if blen < 12 or blen % 4 or blen > _MAX_BLOCK:
            raise PcapError(f"{name}: corrupt block at byte {offset} (length {blen})")
        if btype == _SHB and blen < _MIN_SHB:
            raise PcapError(f"{name}: corrupt section header at byte {offset} (length {blen}, "
                            f"at least {_MIN_SHB})")
        body = buf[8:] + f.read(blen - len(buf))
        if len(body) < blen - 8:
            raise PcapError(f"{name}: file ends inside a block at byte {offset}")
        body, trailer = body[:blen - 12], body[blen - 12:blen - 8]
        if struct.unpack(order + "I", trailer)[0] != blen:
            raise PcapError(f"{name}: corrupt block at byte {offset} (lengths differ)")
        record = _pcapng_block(btype, body, order, interfaces, name, offset)
        if record is not None:
            yield record
        offset += blen
        buf = b""


def _pcapng_block(btype: int, body: bytes, order: str, interfaces: list[_Interface],
                  name: str, offset: int) -> Record | None:
    if btype == _IDB:
        if len(body) < 8:
            raise PcapError(f"{name}: corrupt interface block at byte {offset}")
        linktype, _, snaplen = struct.unpack(order + "HHI", body[:8])
        units, if_name = 1e6, ""
        for code, value in _options(body[8:], order):
            if code == 9 and value:  # if_tsresol
                v = value[0]
                units = float(2 ** (v & 0x7F)) if v & 0x80 else float(10 ** v)
            elif code == _IF_NAME:
                if_name = value.rstrip(b"\0").decode("utf-8", "replace")
        interfaces.append(_Interface(linktype, snaplen, units, if_name))
        return None
    if btype in (_EPB, _OPB):
        fmt = order + ("IIIII" if btype == _EPB else "HHIIII")
        size = struct.calcsize(fmt)
        if len(body) < size:
            raise PcapError(f"{name}: corrupt packet block at byte {offset}")
        fields = struct.unpack(fmt, body[:size])
        iface_id, high, low, caplen, origlen = (fields if btype == _EPB
                                                else (fields[0], *fields[2:]))
        if iface_id >= len(interfaces):
            raise PcapError(f"{name}: packet at byte {offset} names interface {iface_id}, "
                            f"which was never described")
        iface = interfaces[iface_id]
        data = body[size:size + caplen]
        if len(data) < caplen:
            raise PcapError(f"{name}: corrupt packet block at byte {offset}")
        return Record(((high << 32) | low) / iface.units, iface.linktype, data, origlen,
                      iface.name)
    if btype == _SPB:
        if not interfaces or len(body) < 4:
            raise PcapError(f"{name}: corrupt simple packet block at byte {offset}")
        origlen = struct.unpack(order + "I", body[:4])[0]
        iface = interfaces[0]
        caplen = min(origlen, iface.snaplen or origlen, len(body) - 4)
        return Record(0.0, iface.linktype, body[4:4 + caplen], origlen, iface.name)
    return None  # name resolution, statistics, secrets, custom blocks: not needed here


def _options(raw: bytes, order: str) -> Iterator[tuple[int, bytes]]:
    i = 0
    while i + 4 <= len(raw):
        code, length = struct.unpack(order + "HH", raw[i:i + 4])
        if code == 0:
            return
        yield code, raw[i + 4:i + 4 + length]
        i += 4 + length + (-length % 4)


def _block(btype: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    length = len(body) + 12
    return struct.pack("<II", btype, length) + body + struct.pack("<I", length)


def _option(code: int, text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<HH", code, len(raw)) + raw + bytes(-len(raw) % 4)


def _comment(text: str) -> bytes:
    """opt_comment (code 1) and opt_endofopt; nothing for no text."""
    return _option(1, text) + bytes(4) if text else b""


def _interface_block(linktype: int, name: str) -> bytes:
    """An Interface Description Block, with its if_name when it has one (a capture point)."""
    options = _option(_IF_NAME, name) + bytes(4) if name else b""
    return _block(_IDB, struct.pack("<HHI", linktype, 0, SNAPLEN) + options)


SECRETS_TLS_KEYLOG = 0x544C534B  #: "TLSK": an SSLKEYLOGFILE, as editcap --inject-secrets writes
_DSB = 0x0000000A


def write_pcapng(path: str | os.PathLike[str], packets: Iterable[tuple[Record, str]],
                 section_comment: str, secrets: bytes | None = None) -> int:
    """Write (record, comment) pairs as pcapng, atomically: a section comment, one interface per
    capture point and link type met (named by the record's `interface`, so several capture points
    merged in time order keep where each packet was seen: Wireshark's frame.interface_name), a
    comment on every packet ("": none), and optionally TLS key-log secrets in a Decryption
    Secrets Block so the file alone decrypts in Wireshark."""
    count = 0
    with atomic_file(path) as f:
        f.write(_block(_SHB, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
                       + _comment(section_comment)))
        if secrets:
            f.write(_block(_DSB, struct.pack("<II", SECRETS_TLS_KEYLOG, len(secrets))
                           + secrets + bytes(-len(secrets) % 4)))
        interfaces: dict[tuple[int, str], int] = {}
        for rec, comment in packets:
            iface = interfaces.get((rec.linktype, rec.interface))
            if iface is None:
                iface = interfaces[rec.linktype, rec.interface] = len(interfaces)
                f.write(_interface_block(rec.linktype, rec.interface))
            ts = int(round(rec.time * 1e6))
            body = struct.pack("<IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(rec.data),
                               rec.orig_len) + rec.data + bytes(-len(rec.data) % 4)
            f.write(_block(_EPB, body + _comment(comment)))
            count += 1
    return count


def write_pcap(path: str | os.PathLike[str], records: Iterable[Record],
               linktype: int = LINKTYPE_ETHERNET) -> int:
    """Write records to `path` atomically (temporary name, then rename). Returns the count."""
    count = 0
    with atomic_file(path) as f:
        f.write(_GLOBAL_HEADER.pack(MAGIC_USEC, 2, 4, 0, 0, SNAPLEN, linktype))
        for r in records:
            sec = int(r.time)
            usec = int(round((r.time - sec) * 1e6))
            if usec >= 1_000_000:
                sec, usec = sec + 1, usec - 1_000_000
            f.write(struct.pack("<IIII", sec, usec, len(r.data), r.orig_len))
            f.write(r.data)
            count += 1
    return count
