"""The UDP counter core: client-carried state survives a server that forgets."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protolab.protocols.counter import CounterClient, CounterServer

PEER = ("127.0.0.1", 40000)


def ask(server: CounterServer, client: CounterClient, add: int):
    server.receive(client.request(add), PEER, 0.0)
    [(wire, addr)] = server.datagrams_to_send(0.0)
    assert addr == PEER
    return client.receive(wire)


def test_a_new_server_answers_as_the_old_one_would() -> None:
    client = CounterClient()
    first = ask(CounterServer(pid=1), client, 5)
    restarted = CounterServer(pid=2)  # a new process: empty memory
    second = ask(restarted, client, 3)
    assert (first.total, second.total) == (5, 8)
    assert (first.seen, second.seen) == (1, 1)  # the server's own memory did not survive
    assert second.pid == 2


def test_the_client_ignores_a_reply_to_another_request() -> None:
    client = CounterClient()
    client.request(1)
    assert client.receive(b"seq=7 total=99 seen=1 pid=1") is None
    assert client.total == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_the_server_survives_any_bytes(data: bytes) -> None:
    server = CounterServer(pid=1)
    server.receive(data, PEER, 0.0)
    for wire, _ in server.datagrams_to_send(0.0):
        assert wire.startswith(b"seq=")
    assert ask(server, CounterClient(), 2).total == 2


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_the_client_survives_any_bytes(data: bytes) -> None:
    client = CounterClient()
    client.request(1)
    reply = client.receive(data)
    assert reply is None or reply.seq == 1
