"""QUIC, sans-IO: the server's table keyed by connection ID, in memory; and a real peer."""

from __future__ import annotations

import asyncio
import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protolab.net.udpnet import UdpServerThread
from protolab.protocols.quic import (
    ALPN,
    QuicClientCore,
    QuicHeader,
    QuicServerCore,
    client_configuration,
    decode_header,
    make_credentials,
)
from protolab.protocols.quic import _varint as varint

SERVER = ("10.0.0.1", 4433)
CLIENT = ("10.0.0.2", 50000)
MOVED = ("10.0.0.3", 50001)


@pytest.fixture(scope="module")
def creds():
    return make_credentials(datetime.datetime.now(datetime.UTC))


class Pair:
    """A client and a server core wired in memory (like aioquic's tests' client_and_server)."""

    def __init__(self, creds, retry: bool = False) -> None:
        self.now = 0.0
        self.server = QuicServerCore(creds, retry=retry)
        self.client = QuicClientCore(creds, SERVER, self.now)
        self.client_addr = CLIENT
        self.to_server: list[bytes] = []  # every datagram the server got, in order

    def exchange(self, rounds: int = 20) -> None:
        for _ in range(rounds):
            self.now += 0.001
            moved = False
            for data, addr in self.client.datagrams_to_send(self.now):
                assert addr == SERVER
                self.to_server.append(data)
                self.server.receive(data, self.client_addr, self.now)
                moved = True
            for data, addr in self.server.datagrams_to_send(self.now):
                if addr == self.client_addr:
                    self.client.receive(data, SERVER, self.now)
                    moved = True
            if not moved:
                return


def test_handshake_and_echo_in_memory(creds) -> None:
    pair = Pair(creds)
    pair.exchange()
    assert pair.client.log.handshake_done
    pair.client.send(b"hello")
    pair.exchange()
    assert pair.client.log.received == b"HELLO"
    [entry] = pair.server.connections()
    assert entry.received == b"hello"
    # every key in the table is one of this connection's IDs, and the client's DCID is one
    assert set(pair.server.table) == entry.cids and pair.client.dcid in entry.cids


def test_rotation_keeps_the_connection(creds) -> None:
    pair = Pair(creds)
    pair.exchange()
    assert pair.client.spare_cids > 0
    old, new = pair.client.rotate()
    assert old != new and new in pair.server.table
    pair.client.send(b"x")
    pair.exchange()
    assert pair.client.log.received == b"X"
    assert decode_header(pair.to_server[-1]).dcid in (new,)  # the latest packets use the new key
    assert old not in pair.server.table  # retired (RETIRE_CONNECTION_ID)


def test_migration_is_validated_and_the_stream_goes_on(creds) -> None:
    pair = Pair(creds)
    pair.exchange()
    pair.client_addr = MOVED
    pair.client.send(b"moved")
    pair.exchange()
    [entry] = pair.server.connections()
    assert pair.server.paths(entry)[0] == (MOVED, True)
    assert entry.received == b"moved" and pair.client.log.received == b"MOVED"


def test_a_restarted_server_finds_no_entry(creds) -> None:
    pair = Pair(creds)
    pair.exchange()
    pair.server = QuicServerCore(creds)  # the process's memory is gone
    pair.client.send(b"anyone?")
    pair.exchange()
    assert pair.server.table == {} and pair.server.counters.unknown_cid >= 1
    assert pair.client.log.received == b""


def test_retry_keeps_no_state_until_the_token_returns(creds) -> None:
    pair = Pair(creds, retry=True)
    pair.now += 0.001
    for data, _ in pair.client.datagrams_to_send(pair.now):
        pair.server.receive(data, CLIENT, pair.now)
    assert pair.server.counters.retries_sent == 1
    assert pair.server.table == {} and pair.server.connections() == []
    retry = pair.server.datagrams_to_send(pair.now)
    assert decode_header(retry[0][0]).packet_type == "Retry"
    pair.client.receive(retry[0][0], SERVER, pair.now)
    pair.exchange()
    assert pair.client.log.handshake_done and len(pair.server.connections()) == 1
    assert decode_header(pair.to_server[-1]) is not None


def test_header_decoding_of_each_kind(creds) -> None:
    pair = Pair(creds, retry=True)
    pair.exchange()
    kinds = {decode_header(d).packet_type for d in pair.to_server}
    # (the client's Handshake packets are coalesced behind an Initial here: first packet only)
    assert {"Initial", "1-RTT"} <= kinds
    initial = decode_header(pair.to_server[0])
    assert initial.long and initial.version == 1 and len(initial.dcid) == 8
    assert initial.scid == pair.client.host_cid


def test_short_headers_each_say_their_own_dcid() -> None:
    """(A short header read before is remembered by its DCID: another DCID, or another guess of
    its length, is another header.)"""
    first, second = b"\x41" + b"A" * 8 + b"payload, payload", b"\x5f" + b"B" * 8 + b"payload"
    for _ in range(2):
        assert decode_header(first) == QuicHeader(False, "1-RTT", None, b"A" * 8, None)
        assert decode_header(second).dcid == b"B" * 8
        assert decode_header(first, 4).dcid == b"AAAA"
        assert decode_header(first, 16).dcid == b"A" * 8 + b"payload,"


def test_varints_of_each_length() -> None:
    """RFC 9000 appendix A.1's examples, at the start of the bytes and further on."""
    for hex_text, value in (("c2197c5eff14e88c", 151288809941952652), ("9d7f3e7d", 494878333),
                            ("7bbd", 15293), ("25", 37), ("4025", 37)):
        wire = bytes.fromhex(hex_text)
        assert varint(wire) == (value, len(wire))
        assert varint(b"\xff\xff" + wire + b"\x00", 2) == (value, len(wire))
        assert varint(wire[:-1]) == (None, 0)
    assert varint(b"\x25", 1) == (None, 0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_decode_or_not_never_raise(data: bytes) -> None:
    h = decode_header(data)
    assert h is None or isinstance(h.dcid, bytes)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=1300))
def test_server_survives_any_datagram(data: bytes) -> None:
    server = QuicServerCore(_CREDS)
    server.receive(data, CLIENT, 0.0)
    server.datagrams_to_send(0.0)


_CREDS = make_credentials(datetime.datetime.now(datetime.UTC))


def test_aioquics_own_asyncio_client_talks_to_our_server(creds) -> None:
    """A peer protolab did not write: aioquic.asyncio.connect against QuicServerCore."""
    from aioquic.asyncio import connect

    async def exchange(port: int) -> bytes:
        config = client_configuration(creds)
        async with connect("127.0.0.1", port, configuration=config) as client:
            reader, writer = await client.create_stream()
            writer.write(b"from aioquic")
            writer.write_eof()
            return await asyncio.wait_for(reader.read(), 5)

    idle = 2.0
    with UdpServerThread(QuicServerCore(creds, idle_timeout=idle)) as server:
        reply = asyncio.run(exchange(server.address[1]))
        assert reply == b"FROM AIOQUIC"  # the server's app got b"from aioquic" and echoed it
        # After the client's CONNECTION_CLOSE the server's close timer (3 PTO, at the latest its
        # idle timeout) ends the connection, and the entry leaves its memory.
        assert server.wait_until(lambda s: s.core.counters.pruned == 1, timeout=idle * 2)
        assert server.core.all_connections() == [] and server.core.table == {}
    assert client_configuration(creds).alpn_protocols == [ALPN]


# -- garbage and floods: state for unvalidated peers is bounded, closed state is gone ----------


def _live_quic_connections() -> int:
    """aioquic QuicConnection objects alive in this process: where a server's state sits."""
    import gc

    from aioquic.quic.connection import QuicConnection

    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, QuicConnection))


def test_a_flood_of_fake_initials_keeps_at_most_the_cap_and_leaves_nothing_after(creds) -> None:
    """2,000 datagrams: 1,900 Initials that never decrypt and 100 real ClientHellos of clients
    that never answer (spoofed sources). The half-open table stays at the cap, the rest get a
    Retry and cost no state; once their idle timeout passes, nothing is left; a real client
    still connects (through the Retry)."""
    from protolab.protocols.quic import fake_initials, garbage_initial

    cap, idle = 16, 1.0
    now = 0.0
    valid = fake_initials(creds, 100, now)
    flood = [garbage_initial() for _ in range(1900)] + valid
    baseline = _live_quic_connections()
    server = QuicServerCore(creds, idle_timeout=idle, half_open_cap=cap)
    for i, data in enumerate(flood):
        server.receive(data, ("10.9.0.1", 1024 + i), now)
    server.datagrams_to_send(now)
    c = server.counters
    assert c.datagrams == len(flood)
    assert server.half_open() == cap == c.half_open_peak and len(server.all_connections()) == cap
    assert c.undecryptable == 1900 and c.retries_at_cap == len(valid) - cap
    assert _live_quic_connections() - baseline <= cap  # memory: the cap, not the flood
    # a real client, now: the server is at its cap, so it validates the address with a Retry
    pair = Pair(creds)
    pair.server, pair.now = server, now
    pair.exchange()
    assert pair.client.log.handshake_done and c.tokens_accepted == 1
    # the idle timeout (RFC 9000 section 10.1) ends every fake one; terminated entries leave
    # memory (the real client keeps its connection alive by talking)
    steps = 0
    while server.half_open() and steps < 100:
        pair.now += idle / 10
        pair.client.send(b".")
        pair.exchange()
        steps += 1
    assert server.half_open() == 0 and c.pruned == cap
    assert [e.validated for e in server.all_connections()] == [True]
    assert set(server.table) == server.all_connections()[0].cids
    pair.client.close()
    pair.exchange()
    server.datagrams_to_send(pair.now + idle * 2)
    assert server.all_connections() == [] and server.table == {} and c.pruned == cap + 1
    del pair
    assert _live_quic_connections() - baseline <= 0
