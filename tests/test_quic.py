"""QUIC, sans-IO: the server's table keyed by connection ID, in memory; and a real peer."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protolab.quic import (
    ALPN,
    QuicClientCore,
    QuicServerCore,
    client_configuration,
    decode_header,
    make_credentials,
)
from protolab.udpnet import UdpServerThread

SERVER = ("10.0.0.1", 4433)
CLIENT = ("10.0.0.2", 50000)
MOVED = ("10.0.0.3", 50001)


@pytest.fixture(scope="module")
def creds():
    return make_credentials()


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


_CREDS = make_credentials()


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

    with UdpServerThread(QuicServerCore(creds)) as server:
        reply = asyncio.run(exchange(server.address[1]))
        assert reply == b"FROM AIOQUIC"
        # The server's own close timer may already have emptied its table entry (3 PTO after
        # the client's CONNECTION_CLOSE): what it was given stays on the entry.
        [entry] = server.core.all_connections()
        assert entry.received == b"from aioquic"
    assert client_configuration(creds).alpn_protocols == [ALPN]
