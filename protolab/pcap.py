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
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAGIC_USEC = 0xA1B2C3D4
MAGIC_NSEC = 0xA1B23C4D
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
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


def read_pcap(path: str | os.PathLike[str]) -> Iterator[Record]:
    """Yield the records of a classic pcap file one at a time.

    Raises `PcapError` (after yielding every complete record before it) when the file is not a pcap
    file, or ends inside a record.
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed in the finally below, generator-safe
    except OSError as exc:
        raise PcapError(f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        yield from _read_stream(f, str(path))
    finally:
        f.close()


def _read_stream(f: BinaryIO, name: str) -> Iterator[Record]:
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
        raise PcapError(f"{name}: pcapng files are not supported yet; convert with "
                        f"`editcap -F pcap {name} out.pcap`")
    else:
        raise PcapError(f"{name}: not a pcap file (magic {head[:4].hex()})")
    _, _, _, _, _, _, linktype = struct.unpack(order + "IHHiIII", head)
    linktype &= 0xFFFF
    divisor = 1e9 if magic == MAGIC_NSEC else 1e6
    rec = struct.Struct(order + "IIII")
    offset = 24
    while True:
        rh = f.read(_RECORD_HEADER_LEN)
        if not rh:
            return
        if len(rh) < _RECORD_HEADER_LEN:
            raise PcapError(f"{name}: file ends inside a record header at byte {offset}")
        sec, frac, caplen, orig_len = rec.unpack(rh)
        if caplen > SNAPLEN * 4:
            raise PcapError(f"{name}: corrupt record at byte {offset} (length {caplen})")
        data = f.read(caplen)
        if len(data) < caplen:
            raise PcapError(f"{name}: file ends inside a record at byte {offset} "
                            f"({len(data)} of {caplen} bytes)")
        offset += _RECORD_HEADER_LEN + caplen
        yield Record(sec + frac / divisor, linktype, data, orig_len)


@contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temporary file beside `path`; on success it replaces `path`, on error it vanishes.

    Whatever was at `path` before stays intact until the new file is complete.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_file(path) as f:
        f.write(text.encode())


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
