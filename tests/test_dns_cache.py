"""protolab's caching resolver core (sans-IO), fed real DNS messages made by dnspython and the
lab zone server's real answers: the cache by name/type/class with absolute expiry, the TTL counted
down, negative caching for the SOA minimum (RFC 2308), and the pending-upstream table's matching
rule (upstream, port, ID, question: RFC 5452 section 9.1)."""

from __future__ import annotations

import random

import dns.message
import dns.rcode
import dns.rrset

from protolab.protocols.dns import DnsServer, ZoneEntry
from protolab.protocols.dns_cache import STRONG, WEAK, Config, Resolver

UP = ("127.0.0.1", 5300)
CLIENT = ("127.0.0.1", 40000)
ZONE = (ZoneEntry("www.lab.", "A", ("10.0.0.20",), 0.0),)


def _events(r: Resolver) -> list:
    out = []
    while (e := r.next_event()) is not None:
        out.append(e)
    return out


def _roundtrip(r: Resolver, zone: DnsServer, name: str, now: float,
               client=CLIENT) -> dns.message.Message:
    """A client's query through the resolver; any upstream query answered by the real zone."""
    r.receive_client(dns.message.make_query(name, "A").to_wire(), client, now)
    for out in r.datagrams_to_send():
        if out.port is None:
            return dns.message.from_wire(out.wire)
        zone.receive(out.wire, ("127.0.0.1", out.port), now)
        for wire, _ in zone.datagrams_to_send(now):
            r.receive_upstream(wire, UP, out.port, now)
    return dns.message.from_wire(r.datagrams_to_send()[0].wire)


def test_misses_go_upstream_hits_count_the_ttl_down_and_expiry_asks_again() -> None:
    r = Resolver(UP, STRONG, random.Random(1))
    zone = DnsServer(ZONE, ttl=5, delays=False)
    first = _roundtrip(r, zone, "www.lab.", 100.0)
    assert first.answer[0].ttl == 5 and zone.counters.queries == 1
    later = _roundtrip(r, zone, "www.lab.", 102.2, client=("127.0.0.1", 40001))
    assert later.answer[0].ttl == 3 and zone.counters.queries == 1  # a hit: 5 - 2.2, rounded up
    kinds = [e.kind for e in _events(r)]
    assert kinds == ["miss", "upstream", "stored", "hit"]
    _roundtrip(r, zone, "www.lab.", 105.0)
    assert zone.counters.queries == 2
    assert [e.kind for e in _events(r)][:2] == ["expired", "miss"]


def test_nxdomain_is_cached_for_the_soa_minimum_and_without_soa_not_at_all() -> None:
    r = Resolver(UP, STRONG, random.Random(2))
    zone = DnsServer(ZONE, ttl=60, delays=False, negative_ttl=7)
    a = _roundtrip(r, zone, "nope.lab.", 0.0)
    assert a.rcode() == dns.rcode.NXDOMAIN and a.authority[0].ttl == 7
    b = _roundtrip(r, zone, "nope.lab.", 3.0)
    assert b.rcode() == dns.rcode.NXDOMAIN and b.authority[0].ttl == 4
    assert zone.counters.queries == 1
    bare = Resolver(UP, STRONG, random.Random(3))
    no_soa = DnsServer(ZONE, ttl=60, delays=False)
    _roundtrip(bare, no_soa, "nope.lab.", 0.0)
    _roundtrip(bare, no_soa, "nope.lab.", 0.1)
    assert no_soa.counters.queries == 2


def test_weak_ids_are_sequential_on_one_port_strong_ones_random_on_random_ports() -> None:
    def upstream_queries(config: Config) -> list[tuple[int, int]]:
        r = Resolver(UP, config, random.Random(4), fixed_port=33333)
        for i in range(4):
            r.receive_client(dns.message.make_query(f"n{i}.lab.", "A").to_wire(), CLIENT, 0.0)
        return [(int.from_bytes(o.wire[:2], "big"), o.port) for o in r.datagrams_to_send()]

    weak = upstream_queries(WEAK)
    assert {p for _, p in weak} == {33333}
    assert [(q - weak[0][0]) & 0xFFFF for q, _ in weak] == [0, 1, 2, 3]
    strong = upstream_queries(STRONG)
    assert len({p for _, p in strong}) == 4 and len({q for q, _ in strong}) == 4
    assert WEAK.guess_bits() == 0 and STRONG.guess_bits() > 31


def _forged(qid: int, name: str = "bank.lab.") -> bytes:
    q = dns.message.make_query(name, "A", id=qid)
    m = dns.message.make_response(q)
    m.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "6.6.6.6"))
    return m.to_wire()


def test_an_answer_is_taken_only_from_the_upstream_on_the_port_with_the_id_and_question() -> None:
    r = Resolver(UP, WEAK, random.Random(5), fixed_port=33333)
    r.receive_client(dns.message.make_query("bank.lab.", "A").to_wire(), CLIENT, 0.0)
    sent = r.datagrams_to_send()[0]
    qid = int.from_bytes(sent.wire[:2], "big")
    r.receive_upstream(_forged(qid), ("127.0.0.1", 9999), 33333, 0.01)  # another source
    r.receive_upstream(_forged(qid), UP, 33334, 0.01)  # another port
    r.receive_upstream(_forged(qid ^ 1), UP, 33333, 0.01)  # another ID
    r.receive_upstream(_forged(qid, "www.lab."), UP, 33333, 0.01)  # another question
    assert r.datagrams_to_send() == [] and r.cache.entries(0.02) == []
    r.receive_upstream(_forged(qid), UP, 33333, 0.02)  # all four right: taken, for everyone
    assert dns.message.from_wire(r.datagrams_to_send()[0].wire).answer[0][0].address == "6.6.6.6"
    assert [e.values for e in r.cache.entries(0.03)] == [("6.6.6.6",)]
    rejected = [e.detail.split(":")[0] for e in _events(r) if e.kind == "rejected"]
    assert rejected == ["wrong source", "unknown id", "unknown id", "wrong question"]


def test_clients_asking_while_a_query_is_pending_join_it() -> None:
    r = Resolver(UP, STRONG, random.Random(6))
    for port in (40000, 40001, 40002):
        r.receive_client(dns.message.make_query("www.lab.", "A").to_wire(),
                         ("127.0.0.1", port), 0.0)
    assert len([o for o in r.datagrams_to_send() if o.port is not None]) == 1
    r.handle_timer(5.0)  # never answered: SERVFAIL to all three
    fails = r.datagrams_to_send()
    assert len(fails) == 3
    assert {dns.message.from_wire(o.wire).rcode() for o in fails} == {dns.rcode.SERVFAIL}
