"""`protolab cache-demo` (worksheet 11): a caching resolver's state — answers counting down their
TTLs, shared by every client, lost on restart, and the prize of cache poisoning.

Where state lives: in the resolver's app memory. Its cache (name, type, class → answer, absolute
expiry) serves every client; its pending-upstream table (upstream, source port, ID → question)
decides which answer gets in. Two resolvers answer the same questions side by side: protolab's own
(`protolab.protocols.dns_cache`, a process: `protolab.net.dns_resolver`) and dnsmasq (Debian
dnsmasq-base, its own config on a free loopback port). Each forwards to its own upstream, a lab
zone server in this process that records every query it gets (TTL 2 s; NXDOMAIN with the SOA,
minimum 2 s). Three clients ask; the upstream sees only the misses; the TTL counts down; after
expiry the next question goes upstream with a new ID; a restart (a new PID) empties the cache.

Then an off-path attacker on loopback, with a budget of forged answers, tries to write bank.lab
into each cache while its query is pending: it learns one query's ID and port from a name it
serves itself (attacker.lab, as in Kaminsky's attack), triggers the query, and floods. A resolver
with a fixed source port and sequential IDs is poisoned; random ones (protolab's strong config,
dnsmasq) are not within the same budget, and the lab computes the odds from the bits.

Every finding is an observation of this run (the clients' answers, the upstream's record, each
resolver's own log and cache dump, PIDs, packet numbers): `protolab.labs.dns_cache_findings`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.rcode

from protolab.analysis.facts import Action, Row
from protolab.analysis.observe import Findings
from protolab.analysis.table import format_rows
from protolab.labs.dns_cache_findings import build_findings, where_from_capture
from protolab.labs.output import (
    capture_off_line,
    indent,
    print_findings,
    print_state_table,
    print_summary,
    table,
)
from protolab.net.dns_resolver import ResolverProcess, ask
from protolab.net.dnsmasq import Dnsmasq, log_lines
from protolab.net.udpnet import UdpServerThread
from protolab.protocols.dns import DnsServer, ZoneEntry
from protolab.protocols.dns_cache import STRONG, WEAK, Config
from protolab.wire.capture import Capture, CaptureSummary
from protolab.wire.paths import default_capture_path
from protolab.wire.pcap import read_pcap

Out = Callable[[str], None]
Address = tuple[str, int]
LAB = "cache-demo"
WHERE_TITLE = "Where a resolver's state lives:"
TTL = 2  #: the zone's TTL and its SOA minimum (negative answers): short, so the run sees expiry
WWW, NOPE, BANK = "www.lab.", "nope.lab.", "bank.lab."
PROBE = "probe.attacker.lab."  #: the attacker's own name: its server sees the resolver's query
FORGED = "6.6.6.6"  #: what the attacker wants bank.lab to be
FORGED_TTL = 60
BUDGET = 300  #: forged answers per attack (three attacks: 900 datagrams)
BANK_DELAY = 0.2  #: the upstream holds bank.lab's answer this long: the attacker's window
CACHE_ZONE = (ZoneEntry(WWW, "A", ("10.0.0.20",), 0.0),
              ZoneEntry(BANK, "A", ("10.0.0.10",), BANK_DELAY))
ATTACKER_ZONE = (ZoneEntry(PROBE, "A", (FORGED,), 0.0),)
__all__ = ["LAB", "WHERE_TITLE", "CacheDemoResult", "run", "where_from_capture"]


@dataclass(frozen=True)
class Heard:
    """One query an upstream received: the resolver's side of the cache, as the upstream saw it."""

    at: float
    name: str
    qid: int
    port: int  #: the resolver's source port


class _Recorder:
    """A zone server's core, wrapped: the same server, plus its record of every query."""

    def __init__(self, core: DnsServer) -> None:
        self.core = core
        self.heard: list[Heard] = []

    def receive(self, data: bytes, addr: Address, now: float) -> None:
        try:
            msg = dns.message.from_wire(data)
            if msg.question and not msg.flags & 0x8000:
                self.heard.append(Heard(now, msg.question[0].name.to_text(), msg.id, addr[1]))
        except (dns.exception.DNSException, ValueError, UnicodeError, IndexError):
            pass
        self.core.receive(data, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return self.core.datagrams_to_send(now)

    def next_timer(self) -> float | None:
        return self.core.next_timer()


@dataclass(frozen=True)
class Ask:
    """One client's question to one resolver, and what came back."""

    side: str  #: "protolab", "dnsmasq", "protolab weak"
    part: str  #: "1", "2", "3", "4", "attack"
    client: str  #: "A", "B", "C", "attacker"
    port: int  #: the client's source port
    name: str
    rcode: str = ""
    ttl: int | None = None  #: the answer's TTL (NXDOMAIN: the SOA's)
    values: tuple[str, ...] = ()
    qid: int = 0
    error: str = ""


class Client:
    """A stub client on its own socket (dnspython matches the answer: source, ID, question)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def ask(self, side: str, part: str, where: Address, name: str) -> Ask:
        q = dns.message.make_query(name, "A", use_edns=False)
        try:
            r = ask(self.sock, q, where)
        except (dns.exception.DNSException, OSError) as exc:
            return Ask(side, part, self.label, self.port, name, qid=q.id,
                       error=type(exc).__name__)
        return answer_of(r, Ask(side, part, self.label, self.port, name, qid=q.id))

    def close(self) -> None:
        self.sock.close()


def answer_of(r: dns.message.Message, ask: Ask) -> Ask:
    rrsets = r.answer or r.authority
    ttl = rrsets[0].ttl if rrsets else None
    values = tuple(rd.to_text() for rrset in r.answer for rd in rrset)
    return Ask(ask.side, ask.part, ask.client, ask.port, ask.name,
               dns.rcode.to_text(r.rcode()), ttl, values, ask.qid)


@dataclass
class Side:
    """One resolver under test, its upstream and what both recorded."""

    name: str  #: "protolab", "dnsmasq"
    address: Address = ("127.0.0.1", 0)
    upstream: Address = ("127.0.0.1", 0)
    heard: list[Heard] = field(default_factory=list)  #: the upstream's record
    pids: tuple[int, int] = (0, 0)  #: before → after the restart
    events: list[dict] = field(default_factory=list)  #: protolab's own log (dicts)
    log: str = ""  #: dnsmasq's log (every process)
    dump: list = field(default_factory=list)  #: dnsmasq's cache dump before the restart
    dump_after: list = field(default_factory=list)  #: ... and right after it

    def upstream_queries(self, name: str) -> list[Heard]:
        return [h for h in self.heard if h.name == name]

    def misses(self, name: str) -> int:
        """The resolver's own count of queries it sent upstream for `name`."""
        if self.name == "dnsmasq":
            return sum(1 for ln in log_lines(self.log, name) if ln.startswith("forwarded "))
        return sum(1 for e in self.events if e["kind"] == "upstream"
                   and e["key"].split()[0] == name)


@dataclass
class Attack:
    """The poisoning attempt on one resolver."""

    target: str  #: "protolab weak", "protolab strong", "dnsmasq"
    config: Config
    seen_id: int = 0  #: the ID of the probe query, as the attacker's own server saw it
    seen_port: int = 0  #: its source port
    real: Heard | None = None  #: the bank.lab query the upstream got
    guesses: tuple[int, int] = (0, 0)  #: the first and last ID the attacker sent
    sent: int = 0  #: forged answers sent
    answers: list[Ask] = field(default_factory=list)  #: the attacker's, then clients A, B, C
    entry: str = ""  #: the cache entry for bank.lab, as the resolver itself reported it
    forger_port: int = 0  #: = the upstream's port: the forged answers' source

    @property
    def poisoned(self) -> bool:
        clients = [a for a in self.answers if a.client != "attacker"]
        return bool(clients) and all(FORGED in a.values for a in clients)

    @property
    def guessed_right(self) -> bool:
        if self.real is None:
            return False
        lo, hi = self.guesses
        ids = {(lo + i) & 0xFFFF for i in range(self.sent)}
        return self.real.qid in ids and self.real.port == self.seen_port


@dataclass
class CacheDemoResult:
    sides: list[Side] = field(default_factory=list)
    asks: list[Ask] = field(default_factory=list)
    attacks: list[Attack] = field(default_factory=list)
    capture: CaptureSummary | None = None
    capture_off: str = ""
    rows: list[Row] = field(default_factory=list)
    findings: Findings = field(default_factory=Findings)
    elapsed: float = 0.0
    weak_events: list[dict] = field(default_factory=list)  #: the weak resolver's own log
    marks: dict[str, tuple[float, float]] = field(default_factory=dict)  #: part → its times

    def problem(self) -> str:
        return self.findings.problem()

    def side(self, name: str) -> Side:
        return next(s for s in self.sides if s.name == name)

    def asked(self, side: str, part: str, name: str | None = None) -> list[Ask]:
        return [a for a in self.asks if a.side == side and a.part == part
                and (name is None or a.name == name)]


def run_cache_demo(capture: bool = True, pcap: str | Path | None = None, out: Out = print,
                   capture_off_reason: str = "--no-capture", faults: object = None
                   ) -> CacheDemoResult:
    """Parts 1-4 on both resolvers, the poisoning attempts in the TTL's wait; findings, table."""
    path = Path(pcap) if pcap else default_capture_path(LAB)
    result = CacheDemoResult()
    started = time.monotonic()
    servers = [UdpServerThread(_Recorder(DnsServer(z, ttl=TTL, negative_ttl=TTL)),
                               reuseport=True).start()
               for z in (CACHE_ZONE, CACHE_ZONE, CACHE_ZONE, ATTACKER_ZONE)]
    clients = [Client(c) for c in ("A", "B", "C", "attacker")]
    resolvers: list = []
    try:
        ns = servers[3].address
        routes = {"attacker.lab.": ns}
        ours = ResolverProcess(servers[0].address, routes, wait=False)  # both start at once
        resolvers.append(ours)
        weak = ResolverProcess(servers[2].address, routes, weak=True, wait=False)
        resolvers.append(weak)
        real = Dnsmasq(servers[1].address, routes)
        resolvers.append(real)
        ours.ready()
        weak.ready()
        result.sides = [Side("protolab", ours.address, servers[0].address),
                        Side("dnsmasq", real.address, servers[1].address)]
        ports = [s.address[1] for s in servers] + [ours.port, real.port, weak.port]
        with Capture(ports, path, enabled=capture, off_reason=capture_off_reason) as cap:
            if not cap.active:
                result.capture_off = cap.summary.off_reason or capture_off_reason
                out(capture_off_line(cap.summary, LAB, capture_off_reason))
            _parts(result, (ours, real, weak), servers, clients, out)
        result.capture = cap.summary
    finally:
        for r in resolvers:
            r.stop()
        for c in clients:
            c.close()
        for s in servers:
            s.stop()
    result.weak_events = list(weak.events)
    _collect(result, ours, real, servers)
    result.elapsed = time.monotonic() - started
    _report(result, cap.active, out)
    return result


def _parts(result: CacheDemoResult, procs: tuple[ResolverProcess, Dnsmasq, ResolverProcess],
           servers: list[UdpServerThread], clients: list[Client], out: Out) -> None:
    from protolab.labs.dns_cache_attack import attack_all, targets

    ours, real, weak = procs
    attacks = targets(weak, ours, real, servers)
    sides = [("protolab", ours.address), ("dnsmasq", real.address)]
    out(f"Two caching resolvers, each forwarding to its own lab zone server (TTL {TTL} s; "
        f"NXDOMAIN with the SOA, minimum {TTL} s):\n   protolab's own on {_fmt(ours.address)} "
        f"(pid {ours.pid}, random source port and ID per upstream query), upstream "
        f"{_fmt(servers[0].address)}\n   dnsmasq on {_fmt(real.address)} (pid {real.pid}), "
        f"upstream {_fmt(servers[1].address)}\n   and, for part 5 only, a weak protolab "
        f"resolver on {_fmt(weak.address)} (pid {weak.pid}, one fixed source port, sequential "
        f"IDs), upstream {_fmt(servers[2].address)}")
    _top_of_second()
    out(f"\n1. Clients A, B and C ask {WWW} one after another, then A and B ask {NOPE} "
        f"(a name that does not exist):")
    _ask_all(result, sides, "1", [(c, WWW) for c in clients[:3]] + [(c, NOPE)
                                                                     for c in clients[:2]], out)
    t0 = result.marks["1"][1]  # every answer of part 1 is in: each entry was stored before
    result.side("dnsmasq").dump = real.cache_dump()
    out(f"\n5. While those answers count down, the attacker tries to poison {BANK} at each "
        f"resolver ({BUDGET} forged answers each, from the upstream's own address), first the "
        f"weak one:")
    attack_all(result, attacks[:1], servers[3], clients, out)
    _wait_until(t0 + 1.02)
    out(f"\n2. {time.monotonic() - t0:.1f} s after part 1's last answer, B asks both names "
        f"again:")
    _ask_all(result, sides, "2", [(clients[1], WWW), (clients[1], NOPE)], out)
    out("\n5 (continued). The same attack on protolab's strong resolver and on dnsmasq:")
    attack_all(result, attacks[1:], servers[3], clients, out)
    _wait_until(t0 + TTL + 0.02)
    out(f"\n3. {time.monotonic() - t0:.1f} s after part 1's last answer (past the {TTL} s TTL), C "
        f"asks both "
        f"names again:")
    _ask_all(result, sides, "3", [(clients[2], WWW), (clients[2], NOPE)], out)
    old_ours, new_ours = ours.restart()
    old_real, new_real = real.restart()
    result.side("protolab").pids = (old_ours, new_ours)
    result.side("dnsmasq").pids = (old_real, new_real)
    result.side("dnsmasq").dump_after = real.cache_dump()
    out(f"\n4. Both resolvers restarted at once, their answers from part 3 still fresh "
        f"(protolab pid {old_ours} → {new_ours}, dnsmasq pid {old_real} → {new_real}); "
        f"A asks both names:")
    _ask_all(result, sides, "4", [(clients[0], WWW), (clients[0], NOPE)], out)


def _ask_all(result: CacheDemoResult, sides: list[tuple[str, Address]], part: str,
             questions: list[tuple[Client, str]], out: Out) -> None:
    start = time.monotonic()
    for client, name in questions:
        for side, where in sides:
            a = client.ask(side, part, where, name)
            result.asks.append(a)
            out(f"   {client.label} (:{client.port}) → {side}: {a.name} "
                + (f"no answer ({a.error})" if a.error else
                   f"{a.rcode} {' '.join(a.values)} TTL {a.ttl}"))
    result.marks[part] = (start, time.monotonic())


def _top_of_second(late: float = 0.6) -> None:
    """Part 1 within one wall-clock second: dnsmasq keeps time in whole seconds (time(2)), so a
    2 s TTL stored in second S is 1 in second S+1 and gone in S+2. With all of part 1's answers
    stored in S, asking 1.02 s after its last answer is in S+1 (fresh, counted down) and
    2.02 s after, in S+2 or later (expired); protolab's own clock agrees."""
    frac = time.time() % 1.0
    if frac > late:
        time.sleep(1.0 - frac)


def _wait_until(deadline: float) -> None:
    """Let time pass: the TTLs count down (this wait is the experiment, not synchronisation)."""
    time.sleep(max(0.0, deadline - time.monotonic()))


def _collect(result: CacheDemoResult, ours: ResolverProcess, real: Dnsmasq,
             servers: list[UdpServerThread]) -> None:
    mine, theirs = result.side("protolab"), result.side("dnsmasq")
    mine.heard, theirs.heard = list(servers[0].core.heard), list(servers[1].core.heard)
    mine.events = list(ours.events)
    theirs.log = "\n".join(real.logs)


def _report(result: CacheDemoResult, captured: bool, out: Out) -> None:
    if captured and result.capture is not None and result.capture.path:
        from protolab.analysis.annotate import annotate_records

        ports = {s.address[1] for s in result.sides} | {s.upstream[1] for s in result.sides}
        result.rows = list(annotate_records(read_pcap(result.capture.path), ports))
    result.findings = build_findings(result, captured)
    out("\nWhat each client was told, and what each upstream received:")
    out(indent(table(_summary_rows(result), ("part", "resolver", "client asks", "answer",
                                             "TTL", "upstream got"))))
    out("\nThe poisoning attempts (each: learn one query's ID and port from the attacker's own "
        f"name, trigger {BANK}, flood {BUDGET} forged answers while it is pending):")
    out(indent(table([_attack_row(a) for a in result.attacks],
                     ("resolver", "source port, IDs", "bits to guess", f"odds of {BUDGET}",
                      "cache entry for bank.lab", "clients told"), [16, 22, 8, 12, 34, 14])))
    print_findings(result.findings.observations, out)
    if captured and result.capture is not None:
        _print_capture(result, out)
    print_state_table(WHERE_TITLE, result.findings.where, out)
    print_summary(LAB, result.findings, out)


def _summary_rows(result: CacheDemoResult) -> list[tuple]:
    rows = []
    for side in result.sides:
        for part in ("1", "2", "3", "4"):
            for name in (WWW, NOPE):
                asks = result.asked(side.name, part, name)
                if not asks:
                    continue
                told = ", ".join(f"{a.client}: {a.rcode} {' '.join(a.values)}".strip()
                                 for a in asks)
                ttls = " ".join(str(a.ttl) for a in asks)
                heard = [h for h in side.upstream_queries(name) if _in_part(result, side, part, h)]
                ids = ", ".join(f"{h.qid:#06x}" for h in heard) or "nothing"
                rows.append((part, side.name, f"{name} ×{len(asks)}", told, ttls, ids))
    return rows


def _in_part(result: CacheDemoResult, side: Side, part: str, h: Heard) -> bool:
    """Was upstream query `h` made while `part`'s clients asked?"""
    lo, hi = result.marks.get(part, (0.0, -1.0))
    return lo <= h.at <= hi


def _attack_row(a: Attack) -> tuple:
    from protolab.labs.dns_cache_findings import odds

    how = (f"fixed port :{a.seen_port}, IDs +1 each" if not a.config.random_ports
           else "random port and ID")
    told = ", ".join(sorted({" ".join(x.values) for x in a.answers if x.client != "attacker"}))
    return (a.target, how, f"{a.config.guess_bits():.0f}", odds(a.config, BUDGET), a.entry,
            told or "-")


def _print_capture(result: CacheDemoResult, out: Out) -> None:
    """The annotated capture, each run of rejected forged answers shown as one line."""
    assert result.capture is not None
    out(f"\nThe capture, read back and annotated from the packets alone ({result.capture.packets}"
        f" packets → {result.capture.path}); runs of dropped forged answers are folded:")
    shown: list[Row] = []
    run: list[Row] = []

    def fold() -> None:
        if len(run) <= 3:
            shown.extend(run)
        else:
            out(format_rows([*shown, run[0]]))
            shown.clear()
            out(f"  ... #{run[1].number}-#{run[-1].number}: {len(run) - 1} more like #"
                f"{run[0].number}, each finding nothing "
                f"pending (dropped by the resolver, or by a kernel with ICMP)")
        run.clear()

    for row in result.rows:
        if row.action is Action.MISSING:
            run.append(row)
            continue
        fold()
        shown.append(row)
    fold()
    if shown:
        out(format_rows(shown))
    out(f"Open it in Wireshark, or: protolab inspect {result.capture.path}")


def _fmt(addr: Address) -> str:
    return f"{addr[0]}:{addr[1]}"


WEAK_CONFIG, STRONG_CONFIG = WEAK, STRONG
run = run_cache_demo  #: the registry's entry point (protolab.labs.DEMOS)
