"""Classic pcap reading and atomic writing."""

from __future__ import annotations

import struct

import pytest

from protolab.wire.pcap import MAGIC_NSEC, PcapError, Record, read_pcap, write_pcap

RECORDS = [Record(1700000000.25, 1, b"\x00" * 14 + b"abc", 17),
           Record(1700000001.5, 1, b"\x11" * 20, 20)]


def test_round_trip(tmp_path) -> None:
    path = tmp_path / "a.pcap"
    assert write_pcap(path, RECORDS) == 2
    got = list(read_pcap(path))
    assert [(r.data, r.orig_len, r.linktype) for r in got] == \
        [(r.data, r.orig_len, r.linktype) for r in RECORDS]
    assert [round(r.time, 6) for r in got] == [r.time for r in RECORDS]


@pytest.mark.parametrize("order", ["<", ">"])
def test_nanosecond_and_both_byte_orders(tmp_path, order) -> None:
    head = struct.pack(order + "IHHiIII", MAGIC_NSEC, 2, 4, 0, 0, 65535, 101)
    rec = struct.pack(order + "IIII", 10, 500_000_000, 4, 4) + b"\x45\x00\x00\x04"
    path = tmp_path / "n.pcap"
    path.write_bytes(head + rec)
    [r] = list(read_pcap(path))
    assert (r.time, r.linktype, r.data) == (10.5, 101, b"\x45\x00\x00\x04")


def test_truncated_file_yields_what_it_can_then_one_error(tmp_path) -> None:
    path = tmp_path / "t.pcap"
    write_pcap(path, RECORDS)
    path.write_bytes(path.read_bytes()[:-5])
    got = []
    with pytest.raises(PcapError, match="ends inside a record"):
        for r in read_pcap(path):
            got.append(r)
    assert len(got) == 1


@pytest.mark.parametrize("content,message", [
    (b"", "not a pcap file"), (b"hello world, this is no pcap!", "not a pcap file"),
    (b"\x0a\x0d\x0d\x0a" + bytes(40), "corrupt section header")])
def test_not_a_pcap(tmp_path, content, message) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(content)
    with pytest.raises(PcapError, match=message):
        list(read_pcap(path))


def test_a_failed_write_keeps_the_old_file(tmp_path) -> None:
    path = tmp_path / "a.pcap"
    path.write_bytes(b"old")

    def broken():
        yield RECORDS[0]
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_pcap(path, broken())
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.pcap"]


def _shb(length: int, order: str = "<") -> bytes:
    """A section header block claiming `length` bytes, its fields as far as they fit."""
    body = struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1)
    return struct.pack(order + "II", 0x0A0D0D0A, length) + body + struct.pack(order + "I", length)


@pytest.mark.parametrize("length", [12, 16, 20, 24])
@pytest.mark.parametrize("order", ["<", ">"])
def test_a_section_header_shorter_than_its_fields_is_one_error(tmp_path, length, order) -> None:
    # the smallest section header is 28 bytes; the reader had already read 24 of a shorter one
    path = tmp_path / "short.pcapng"
    path.write_bytes(_shb(length, order) + bytes(4096))
    with pytest.raises(PcapError, match=f"corrupt section header at byte 0 .length {length}"):
        list(read_pcap(path))


def test_a_short_second_section_header_is_one_error_after_the_first_section(tmp_path) -> None:
    from protolab.wire.pcap import write_pcapng

    path = tmp_path / "two.pcapng"
    write_pcapng(path, [(r, "note") for r in RECORDS], "first section")
    first = path.read_bytes()
    path.write_bytes(first + _shb(20) + bytes(64))
    got = []
    with pytest.raises(PcapError, match=f"corrupt section header at byte {len(first)}"):
        for r in read_pcap(path):
            got.append(r)
    assert [r.data for r in got] == [r.data for r in RECORDS]


def test_records_across_the_readers_chunks_come_back_whole(tmp_path) -> None:
    """The reader takes the file a chunk (1 MiB) at a time: records that straddle a chunk's end,
    and one as long as a whole chunk, come back as written."""
    sizes = [(i * 7919) % 1500 for i in range(2000)] + [1 << 20] + [60] * 5
    records = [Record(1700000000.0 + i, 1, bytes([i % 256]) * size, size)
               for i, size in enumerate(sizes)]
    path = tmp_path / "big.pcap"
    write_pcap(path, records)
    got = list(read_pcap(path))
    assert [(r.data, r.orig_len) for r in got] == [(r.data, r.orig_len) for r in records]


def test_a_cut_after_the_first_chunk_names_the_records_byte_and_what_is_missing(tmp_path) -> None:
    sizes = [1000] * 1100  # 1.1 MB of records: the cut falls in the reader's second chunk
    path = tmp_path / "cut.pcap"
    write_pcap(path, [Record(1.0, 1, b"x" * size, size) for size in sizes])
    last = 24 + (16 + 1000) * 1099  # where the last record starts: global header, 1099 records
    path.write_bytes(path.read_bytes()[:last + 16 + 400])
    with pytest.raises(PcapError, match=rf"ends inside a record at byte {last} \(400 of 1000"):
        assert len(list(read_pcap(path))) == 1099


@pytest.mark.parametrize("cut", [1, 15])  # bytes of the last record header in the file
def test_a_file_cut_inside_a_record_header_names_its_byte(tmp_path, cut) -> None:
    path = tmp_path / "cut.pcap"
    write_pcap(path, [Record(1.0, 1, b"x" * 1000, 1000)] * 1100)  # past the first chunk
    last = 24 + (16 + 1000) * 1099
    path.write_bytes(path.read_bytes()[:last + cut])
    got = []
    with pytest.raises(PcapError, match=rf"ends inside a record header at byte {last}$"):
        for r in read_pcap(path):
            got.append(r)
    assert len(got) == 1099


def test_a_record_longer_than_any_capture_is_corrupt_after_the_records_before_it(tmp_path) -> None:
    """A record header whose length is past four times the snap length (a corrupt file) is one
    error naming its byte, after every record before it, wherever the reader's chunks end."""
    path = tmp_path / "corrupt.pcap"
    write_pcap(path, [Record(1.0, 1, b"x" * 1000, 1000)] * 1100)
    last = 24 + (16 + 1000) * 1099
    raw = bytearray(path.read_bytes())
    raw[last + 8:last + 12] = struct.pack("<I", 4 * 262144 + 1)  # the last record's caplen
    path.write_bytes(bytes(raw))
    got = []
    with pytest.raises(PcapError, match=rf"corrupt record at byte {last} \(length 1048577\)"):
        for r in read_pcap(path):
            got.append(r)
    assert len(got) == 1099
