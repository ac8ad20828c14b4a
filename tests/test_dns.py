"""The sans-IO DNS core: matching, the transition table, and untrusted bytes."""

from __future__ import annotations

import random

import dns.message
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protolab.labs.dns import forge_answer
from protolab.protocols.dns import (
    LAB_ZONE,
    QUERY_TRANSITIONS,
    AnswerMatched,
    AnswerRejected,
    DnsClient,
    DnsServer,
    Move,
    QueryAbandoned,
    QueryRetransmitted,
    QuerySent,
    QueryState,
    QueryTimedOut,
    RejectReason,
    Role,
)
from protolab.protocols.state import IllegalTransition, ProtocolError, advance

SERVER = ("127.0.0.1", 5353)
CLIENT = ("127.0.0.1", 40000)


def client_and_server(seed: int = 1) -> tuple[DnsClient, DnsServer]:
    """An in-memory pair (like aioquic's client_and_server): no sockets, no clock."""
    return DnsClient(SERVER, rng=random.Random(seed)), DnsServer(delays=False)


def events(client: DnsClient) -> list:
    out = []
    while (ev := client.next_event()) is not None:
        out.append(ev)
    return out


def exchange(client: DnsClient, server: DnsServer, names: list[tuple[str, str]],
             now: float = 0.0) -> list[bytes]:
    """Send each query to the server; return the server's answers (in sending order)."""
    answers = []
    for name, rdtype in names:
        server.receive(client.send_query(name, rdtype, now), CLIENT, now)
        answers.extend(wire for wire, addr in server.datagrams_to_send(now) if addr == CLIENT)
    return answers


ZONE_NAMES = [(e.name, e.rdtype) for e in LAB_ZONE]


@settings(max_examples=50, deadline=None)
@given(st.permutations(range(len(ZONE_NAMES))))
def test_answers_in_any_order_all_match(order: list[int]) -> None:
    client, server = client_and_server()
    answers = exchange(client, server, ZONE_NAMES)
    events(client)
    for i in order:
        client.receive(answers[i], SERVER, 1.0)
    got = events(client)
    assert all(isinstance(e, AnswerMatched) for e in got)
    assert [e.name for e in got] == [ZONE_NAMES[i][0] for i in order]
    assert [e.order_answered for e in got] == list(range(1, len(order) + 1))
    assert client.pending() == []


def test_answer_values_come_from_the_zone() -> None:
    client, server = client_and_server()
    [wire] = exchange(client, server, [("alpha.lab.", "A")])
    events(client)
    client.receive(wire, SERVER, 0.5)
    [ev] = events(client)
    assert ev.answers == ("10.0.0.1",) and ev.rcode == "NOERROR" and ev.rtt == 0.5


def test_wrong_id_is_rejected_and_the_query_stays_pending() -> None:
    client, _ = client_and_server()
    qid = int.from_bytes(client.send_query("bank.lab.", "A", 0.0)[:2], "big")
    events(client)
    client.receive(forge_answer((qid + 1) & 0xFFFF, "bank.lab.", "A", "6.6.6.6"), SERVER, 0.1)
    [ev] = events(client)
    assert isinstance(ev, AnswerRejected) and ev.reason is RejectReason.UNKNOWN_ID
    assert [q.qid for q in client.pending()] == [qid]


def test_wrong_question_is_rejected() -> None:
    client, _ = client_and_server()
    qid = int.from_bytes(client.send_query("bank.lab.", "A", 0.0)[:2], "big")
    events(client)
    client.receive(forge_answer(qid, "evil.lab.", "A", "6.6.6.6"), SERVER, 0.1)
    [ev] = events(client)
    assert ev.reason is RejectReason.WRONG_QUESTION and "evil.lab." in ev.detail
    assert client.pending()


@pytest.mark.parametrize("source", [("127.0.0.1", 5354), ("127.0.0.2", 5353)])
def test_wrong_source_is_rejected_even_with_right_id_and_question(source) -> None:
    client, _ = client_and_server()
    qid = int.from_bytes(client.send_query("bank.lab.", "A", 0.0)[:2], "big")
    events(client)
    client.receive(forge_answer(qid, "bank.lab.", "A", "6.6.6.6"), source, 0.1)
    [ev] = events(client)
    assert ev.reason is RejectReason.WRONG_SOURCE and f"{qid:#06x} is pending" in ev.detail
    assert client.pending()


def test_duplicate_answer_finds_the_entry_gone() -> None:
    client, server = client_and_server()
    [wire] = exchange(client, server, [("delta.lab.", "A")])
    client.receive(wire, SERVER, 0.1)
    client.receive(wire, SERVER, 0.2)
    got = events(client)
    assert isinstance(got[-1], AnswerRejected) and "already answered" in got[-1].detail


def test_timeout_and_close_move_the_table() -> None:
    client = DnsClient(SERVER, timeout=1.0, rng=random.Random(3))
    client.send_query("alpha.lab.", "A", 0.0)
    client.send_query("bravo.lab.", "A", 0.5)
    assert client.next_timer() == 1.0
    client.handle_timer(1.0)
    client.close()
    got = events(client)
    assert [type(e) for e in got] == [QuerySent, QuerySent, QueryTimedOut, QueryAbandoned]
    states = sorted(row["state"] for row in client.snapshot())
    assert states == ["abandoned", "timed out"]


def test_server_answers_nxdomain_and_keeps_nothing() -> None:
    client, server = client_and_server()
    [wire] = exchange(client, server, [("nowhere.lab.", "A")])
    assert dns.message.from_wire(wire).rcode() == dns.rcode.NXDOMAIN
    assert server.snapshot()["held_answers"] == 0


def test_server_delays_reorder_answers() -> None:
    server = DnsServer()
    client = DnsClient(SERVER, rng=random.Random(2))
    for name, rdtype in ZONE_NAMES[:3]:
        server.receive(client.send_query(name, rdtype, 0.0), CLIENT, 0.0)
    assert server.datagrams_to_send(0.0) == []
    assert server.snapshot()["held_answers"] == 3
    out = server.datagrams_to_send(1.0)
    names = [str(dns.message.from_wire(w).question[0].name) for w, _ in out]
    by_delay = [e.name for e in sorted(LAB_ZONE[:3], key=lambda e: e.delay)]
    assert names == by_delay != [n for n, _ in ZONE_NAMES[:3]]


def test_a_query_entry_lives_pending_then_answered_in_the_client() -> None:
    client, server = client_and_server()
    [wire] = exchange(client, server, [("echo.lab.", "A")])
    [sent] = events(client)
    assert client.entry(sent.qid).state is QueryState.PENDING
    assert [row["state"] for row in client.snapshot()] == ["pending"]
    client.receive(wire, SERVER, 0.2)
    assert client.entry(sent.qid).state is QueryState.ANSWERED and client.pending() == []
    client.receive(wire, SERVER, 0.3)  # the same answer again: no second move, no exception
    [matched, again] = events(client)
    assert isinstance(matched, AnswerMatched) and isinstance(again, AnswerRejected)
    assert client.entry(sent.qid).state is QueryState.ANSWERED


def _header(wire: bytes) -> tuple[int, int, int, int]:
    """(id, QR, opcode, QDCOUNT) straight from the 12-byte header (RFC 1035 section 4.1.1)."""
    return (int.from_bytes(wire[:2], "big"), wire[2] >> 7, (wire[2] >> 3) & 0xF,
            int.from_bytes(wire[4:6], "big"))


def _question(wire: bytes) -> bytes:
    """The question section's bytes (QNAME labels, QTYPE, QCLASS; no compression in a query)."""
    i = 12
    while wire[i]:
        i += 1 + wire[i]
    return wire[12:i + 5]


@pytest.mark.parametrize("name,rdtype", [*ZONE_NAMES, ("nowhere.lab.", "A")])
def test_the_server_copies_id_and_question_into_its_answer(name, rdtype) -> None:
    """RFC 1035 section 4.1.1: the ID "is copied [into] the corresponding reply", QR is 1 in a
    response, the opcode is copied; section 7.3: the question is the one asked."""
    client, server = client_and_server()
    query = client.send_query(name, rdtype, 0.0)
    server.receive(query, CLIENT, 0.0)
    [(answer, to)] = server.datagrams_to_send(0.0)
    assert to == CLIENT
    qid, qr, opcode, qdcount = _header(query)
    assert (qr, qdcount) == (0, 1)
    assert _header(answer) == (qid, 1, opcode, 1)
    assert _question(answer) == _question(query)
    assert server.snapshot()["held_answers"] == 0  # answered: the server holds nothing


def test_illegal_moves_name_role_state_and_event() -> None:
    with pytest.raises(IllegalTransition) as info:
        advance(QUERY_TRANSITIONS, Role.CLIENT, QueryState.ANSWERED, Move.ANSWER)
    assert str(info.value) == "CLIENT in state ANSWERED cannot take event ANSWER"


# -- untrusted bytes: h11's invariant ------------------------------------------------------------

def _mutations():
    client, server = client_and_server()
    [wire] = exchange(client, server, [("charlie.lab.", "TXT")])
    return st.one_of(
        st.binary(max_size=600),
        st.tuples(st.integers(0, len(wire) - 1), st.integers(0, 255)).map(
            lambda m: wire[:m[0]] + bytes([m[1]]) + wire[m[0] + 1:]),
        st.integers(0, len(wire)).map(lambda n: wire[:n]),
    )


@settings(max_examples=300, deadline=None)
@given(_mutations())
def test_client_turns_any_bytes_into_an_event(data: bytes) -> None:
    """Any datagram gives exactly one event, or protolab's own error with nothing changed; the
    table stays consistent with the event, and the real answer still finds its entry."""
    client, server = client_and_server()
    query = client.send_query("charlie.lab.", "TXT", 0.0)
    [sent] = events(client)
    before = client.snapshot()
    try:
        client.receive(data, SERVER, 0.1)
    except ProtocolError:
        assert events(client) == [] and client.snapshot() == before
    else:
        [ev] = events(client)
        entry = client.entry(sent.qid)
        if isinstance(ev, AnswerMatched):
            # only a response (QR set) carrying our ID may match (RFC 1035 section 4.1.1)
            assert _header(data)[:2] == (sent.qid, 1) and ev.qid == sent.qid
            assert entry.state is QueryState.ANSWERED and client.pending() == []
        else:
            assert isinstance(ev, AnswerRejected), ev
            assert ev.qid == (int.from_bytes(data[:2], "big") if len(data) >= 2 else None)
            assert client.snapshot() == before  # a rejected datagram moves nothing
    server.receive(query, CLIENT, 0.2)
    [(real, _)] = server.datagrams_to_send(0.2)
    was_answered = client.entry(sent.qid).state is QueryState.ANSWERED
    client.receive(real, SERVER, 0.3)
    [last] = events(client)
    assert isinstance(last, AnswerRejected if was_answered else AnswerMatched)
    assert client.entry(sent.qid).state is QueryState.ANSWERED


@settings(max_examples=300, deadline=None)
@given(_mutations())
def test_server_survives_any_bytes(data: bytes) -> None:
    server = DnsServer(delays=False)
    server.receive(data, CLIENT, 0.0)
    for wire, addr in server.datagrams_to_send(0.0):
        assert addr == CLIENT
        reply = dns.message.from_wire(wire, question_only=True)
        assert reply.flags & dns.flags.QR
    # and it still answers a real query afterwards
    client, _ = client_and_server()
    [wire] = exchange(client, server, [("alpha.lab.", "A")])
    client.receive(wire, SERVER, 0.0)
    assert isinstance(events(client)[-1], AnswerMatched)


# -- retransmission: the timer and the count live in the client -----------------------------------


def test_a_lost_answer_is_retried_with_the_same_message_and_then_matches() -> None:
    client = DnsClient(SERVER, timeout=2.0, rng=random.Random(5), retries=2, retry_after=0.5)
    server = DnsServer(delays=False)
    wire = client.send_query("alpha.lab.", "A", 0.0)
    assert client.next_timer() == 0.5
    server.receive(wire, CLIENT, 0.0)
    server.datagrams_to_send(0.0)  # the answer is lost on the way
    client.handle_timer(0.49)
    assert client.datagrams_to_send() == []
    client.handle_timer(0.5)
    [again] = client.datagrams_to_send()
    assert again == wire  # same ID, same question: an answer to either copy matches
    [row] = client.snapshot()
    assert (row["state"], row["attempts"], row["retry timer"]) == ("pending", 2, "+1.00 s")
    server.receive(again, CLIENT, 0.5)
    [(answer, _)] = server.datagrams_to_send(0.5)
    client.receive(answer, SERVER, 0.6)
    got = events(client)
    assert [type(e) for e in got] == [QuerySent, QueryRetransmitted, AnswerMatched]
    assert got[1].attempt == 2 and got[1].after == 0.5
    assert got[2].attempts == 2 and got[2].rtt == pytest.approx(0.6)
    assert client.next_timer() is None


def test_retries_run_out_then_the_query_times_out() -> None:
    client = DnsClient(SERVER, timeout=2.0, rng=random.Random(6), retries=2, retry_after=0.5)
    client.send_query("alpha.lab.", "A", 0.0)
    sent = 1
    now = 0.0
    while (timer := client.next_timer()) is not None:
        now = timer
        client.handle_timer(now)
        sent += len(client.datagrams_to_send())
    assert sent == 3 and now == 2.0
    kinds = [type(e) for e in events(client)]
    assert kinds == [QuerySent, QueryRetransmitted, QueryRetransmitted, QueryTimedOut]
    assert client.snapshot()[0]["attempts"] == 3


def test_without_retries_nothing_is_resent() -> None:
    client = DnsClient(SERVER, timeout=1.0, rng=random.Random(7))
    client.send_query("alpha.lab.", "A", 0.0)
    client.handle_timer(1.0)
    assert client.datagrams_to_send() == []
    assert [type(e) for e in events(client)] == [QuerySent, QueryTimedOut]
