"""The findings of `protolab tcp-attack-demo` and its "where state lives" rows, built from what
its parts saw (`Sample`s: counters, `ss`, the sockets) and the packets of the written capture.

Where state lives: nowhere new; this renders the run's observations. A claim that needs the
capture and has none is "not tried here"; one the run tried and did not see is NOT OBSERVED.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from protolab.analysis import story_checks as story
from protolab.analysis.annotate import Row
from protolab.analysis.observe import (
    Evidence,
    Observation,
    StateRow,
    Status,
    explain,
    observe,
)
from protolab.labs.tcp_attack import BACKLOG, FLOOD, KEEPALIVE, AttackResult, Sample

Finder = Callable[[Sequence[Row]], list[int]]


def _counter_evidence(sample: Sample, *names: str) -> list[Evidence]:
    return [Evidence(f"server {n}", before=sample.counters[n][0], after=sample.counters[n][1])
            for n in names if n in sample.counters]


def _rose(sample: Sample | None, name: str) -> int:
    if sample is None or name not in sample.counters:
        return 0
    before, after = sample.counters[name]
    return after - before


def _packets(result: AttackResult, find: Finder) -> tuple[int, ...]:
    return tuple(find(result.rows)) if result.rows else ()


def _with_packets(key: str, claim: str, result: AttackResult, find: Finder, ok: bool,
                  seen: str, evidence: list[Evidence], why_not: str) -> Observation:
    """An observation whose packets come from the capture; without one it rests on the
    counters alone, and says the capture is off."""
    packets = _packets(result, find)
    off = result.capture is None or bool(result.capture.off_reason)
    if off and not evidence:  # only the packets could show it
        reason = result.capture.off_reason if result.capture else "no capture"
        return explain(key, claim, f"it needs the capture, which is off ({reason})")
    if not off:
        ok = ok and bool(packets)
        evidence = [*evidence, Evidence("packets", packets=packets)] if packets else evidence
        why_not = why_not if packets else f"{why_not}; the capture does not show it"
    return observe(key, claim, ok, seen=seen, evidence=evidence, why_not=why_not)


def syn_queue_findings(result: AttackResult) -> list[Observation]:
    q = result.samples.get("queue")
    if q is None:
        return []
    drops = _rose(q, "TCPReqQFullDrop")
    half = observe(
        "attack.synq.half-open", "the server's kernel keeps a half-open entry per SYN it "
        "answers, before it knows who sent it: SYN_RECV in the listener's SYN queue",
        0 < len(q.ss) <= BACKLOG + 1,
        done=f"{FLOOD} spoofed SYNs to a listener with backlog {BACKLOG}, tcp_syncookies=0",
        seen=f"{len(q.ss)} SYN-RECV entries for spoofed sources in the server's table",
        evidence=[Evidence("ss -n state syn-recv (server)", after=" | ".join(q.ss))],
        why_not=f"{len(q.ss)} SYN-RECV entries")
    full = observe(
        "attack.synq.full-drops", "once the queue is full, the kernel drops further SYNs",
        drops > 0 and _rose(q, "ListenDrops") >= drops,
        seen=f"{drops} SYNs dropped, queue full",
        evidence=_counter_evidence(q, "TCPReqQFullDrop", "ListenDrops"),
        why_not=f"TCPReqQFullDrop rose by {drops}")
    resent = _with_packets(
        "attack.synq.synack-retransmit", "each half-open entry has a timer that resends its "
        "SYN-ACK to a source that will never answer", result, story.attack_syn_queue,
        True, "SYN-ACKs resent to spoofed sources, captured at the server's sink", [],
        "no SYN-ACK was resent")
    legit_drops = q.counters.get("TCPReqQFullDrop after the client", (0, 0))
    refused = _with_packets(
        "attack.synq.legit-refused", "a legitimate client cannot connect while the queue is "
        "full: its SYN is dropped, and its kernel resends it", result, story.attack_legit_refused,
        "SYN_SENT" in q.note and legit_drops[1] > q.counters["TCPReqQFullDrop"][1],
        f"client port {q.ports[0] if q.ports else '?'}: {q.note}",
        [Evidence("client socket", after=q.note),
         Evidence("server TCPReqQFullDrop", before=q.counters["TCPReqQFullDrop"][1],
                  after=legit_drops[1])],
        f"the client: {q.note}; TCPReqQFullDrop {legit_drops}")
    return [half, full, resent, refused]


def cookie_findings(result: AttackResult) -> list[Observation]:
    one, two = result.samples.get("cookies1"), result.samples.get("cookies2")
    ack, forged, no_ts = (result.samples.get(k) for k in ("cookie-ack", "forged-ack",
                                                          "cookie-no-ts"))
    if None in (one, two, ack, forged, no_ts):
        return []
    mode1 = observe(
        "attack.cookies1.queue-then-cookies", "tcp_syncookies=1: the queue fills as before, "
        "then the kernel answers with cookies instead of dropping",
        0 < len(one.ss) <= BACKLOG + 1 and _rose(one, "SyncookiesSent") > 0,
        seen=f"{len(one.ss)} SYN-RECV entries, then {_rose(one, 'SyncookiesSent')} cookies",
        evidence=[Evidence("ss syn-recv entries (server)", after=len(one.ss)),
                  *_counter_evidence(one, "SyncookiesSent")],
        why_not=f"{len(one.ss)} entries, SyncookiesSent rose {_rose(one, 'SyncookiesSent')}")
    mode2 = observe(
        "attack.cookies2.no-entries", "tcp_syncookies=2: every SYN gets a cookie and the "
        "server keeps no entry at all", not two.ss and _rose(two, "SyncookiesSent") >= FLOOD,
        seen=f"0 SYN-RECV entries; {_rose(two, 'SyncookiesSent')} cookies sent",
        evidence=[Evidence("ss syn-recv entries (server)", after=len(two.ss)),
                  *_counter_evidence(two, "SyncookiesSent")],
        why_not=f"{len(two.ss)} entries, SyncookiesSent rose {_rose(two, 'SyncookiesSent')}")
    alone = _with_packets(
        "attack.cookies.ack-alone", "the handshake completes from the client's ACK alone: "
        "the kernel rebuilds the connection from the cookie it sent", result,
        story.attack_cookie_handshake,
        _rose(ack, "SyncookiesRecv") == 1 and not ack.ss and "negotiated" in ack.note,
        f"accepted with no SYN-RECV entry; {ack.note}",
        [*_counter_evidence(ack, "SyncookiesRecv"),
         Evidence("ss syn-recv entries (server)", after=len(ack.ss))],
        f"SyncookiesRecv rose {_rose(ack, 'SyncookiesRecv')}; {ack.note}")
    return [mode1, mode2, alone, *_cookie_contents(result, ack, forged, no_ts)]


def _cookie_contents(result: AttackResult, ack: Sample, forged: Sample,
                     no_ts: Sample) -> list[Observation]:
    isn = explain(
        "attack.cookies.isn-hash", "the cookie ISN is a keyed hash (SipHash) of the 4-tuple "
        "and the client's ISN, with a minute counter and the MSS index folded in: only the "
        "server's secret can check it, and protolab does not decode it",
        "the secret is in the server's kernel; the capture holds the hash only")
    bits = _with_packets(
        "attack.cookies.tsval-bits", "with timestamps, the SYN-ACK's TSval low 6 bits carry "
        "the SYN's window scale, SACK and ECN choices (the client echoes them in TSecr)",
        result, story.attack_cookie_handshake, True, _tsval_seen(result.rows), [],
        "no SYN-ACK's TSval encodes its SYN")
    failed = _with_packets(
        "attack.cookies.forged-fails", "an ACK whose acknowledgment number is no cookie of the "
        "server's fails the check and is answered with RST", result, story.attack_forged_ack,
        _rose(forged, "SyncookiesFailed") == 1, "the forged ACK failed the cookie check",
        _counter_evidence(forged, "SyncookiesFailed"),
        f"SyncookiesFailed rose {_rose(forged, 'SyncookiesFailed')}")
    lost = _with_packets(
        "attack.cookies.no-ts-loses", "without timestamps a cookie has no room for the "
        "options: the connection comes up without window scaling and SACK", result,
        story.attack_no_timestamps, "wscale" in ack.note and "wscale" not in no_ts.note
        and "sack" not in no_ts.note and _rose(no_ts, "SyncookiesRecv") == 1,
        f"with timestamps: {ack.note.split(': ', 1)[-1]}; without: "
        f"{no_ts.note.split(': ', 1)[-1]}",
        [Evidence("TCP_INFO with timestamps", after=ack.note),
         Evidence("TCP_INFO without", after=no_ts.note)],
        f"with timestamps {ack.note}; without {no_ts.note}")
    retry = explain(
        "attack.cookies.quic-retry", "the same idea in QUIC: a Retry token (lab 04) carries "
        "what the server did not keep, sealed with its key, and comes back with the client")
    return [isn, bits, failed, lost, retry]


def _tsval_seen(rows: Sequence[Row]) -> str:
    """The cookie SYN-ACK's TSval low 6 bits, read from the packet, split into what they say
    (the annotation marks a SYN-ACK a cookie only when they match its SYN's options)."""
    found = story.attack_cookie_handshake(rows) if rows else []
    if not found:
        return "no cookie SYN-ACK in the capture"
    synack = next(r for r in rows if r.number == found[1])
    low = synack.fact.values.get("low", 0)
    return (f"SYN-ACK #{synack.number}: TSval {synack.fields.get('tcp_tsval')}, low 6 bits "
            f"{low:#04x} = wscale {low & 0xF} | SACK {low >> 4 & 1}<<4 | ECN {low >> 5 & 1}<<5, "
            f"as its SYN #{found[0]} asked")


def rst_findings(result: AttackResult) -> list[Observation]:
    inw, out, exact = (result.samples.get(k) for k in ("rst-in", "rst-out", "rst-exact"))
    if None in (inw, out, exact):
        why = result.samples.get("rst", Sample()).note or "the connection was not made"
        return [explain("attack.rst", "RST injection: exact resets, in-window is challenged "
                        "(RFC 5961), outside is ignored", why)]
    challenged = _with_packets(
        "attack.rst.in-window-challenged", "an RST in the window but not exact does not "
        "reset: the server answers with a challenge ACK (RFC 5961 3.2)", result,
        story.attack_rst_challenge, _rose(inw, "TCPChallengeACK") >= 1 and bool(inw.after_ss),
        "the entry stays ESTABLISHED; a challenge ACK goes to the real client",
        [*_counter_evidence(inw, "TCPChallengeACK"),
         Evidence("ss (server)", after=" | ".join(inw.after_ss))],
        f"TCPChallengeACK rose {_rose(inw, 'TCPChallengeACK')}, entry {inw.after_ss}")
    ignored = _with_packets(
        "attack.rst.outside-ignored", "an RST outside the window is dropped without a word",
        result, lambda rows: story._rst_fit(rows, "outside"),
        _rose(out, "TCPChallengeACK") == 0 and bool(out.after_ss),
        "no challenge ACK, the entry stays ESTABLISHED",
        [*_counter_evidence(out, "TCPChallengeACK"),
         Evidence("ss (server)", after=" | ".join(out.after_ss))],
        f"TCPChallengeACK rose {_rose(out, 'TCPChallengeACK')}, entry {out.after_ss}")
    reset = _with_packets(
        "attack.rst.exact-resets", "an RST with exactly the next sequence number resets the "
        "server's connection", result, story.attack_rst_exact,
        bool(exact.ss) and not exact.after_ss and "ECONNRESET" in exact.note,
        f"the server's entry is gone; {exact.note}",
        [Evidence("ss ESTABLISHED entries (server)", before=len(exact.ss),
                  after=len(exact.after_ss)), Evidence("server socket", after=exact.note)],
        f"entries {len(exact.ss)} → {len(exact.after_ss)}; {exact.note}")
    return [challenged, ignored, reset, _blind(result)]


def _blind(result: AttackResult) -> Observation:
    w = result.window
    before = -(-(1 << 32) // w) if w else 0
    return observe(
        "attack.rst.blind-space", "a blind attacker must guess: before RFC 5961 one RST per "
        "window-sized slice of the 32-bit space; since, the exact number", w > 0,
        seen=f"window {w} B → {before:,} RSTs to cover the space before RFC 5961; 2^32 = "
             f"{1 << 32:,} candidates now, times {result.port_range:,} client ports if the "
             f"port is unknown",
        evidence=[Evidence("server receive window (from the capture)", after=f"{w} B"),
                  Evidence("client ip_local_port_range size", after=result.port_range)],
        why_not="the window was not read from the traffic")


def keepalive_findings(result: AttackResult) -> list[Observation]:
    k = result.samples.get("keepalive")
    if k is None:
        return []
    idle, interval, count = KEEPALIVE
    outlives = observe(
        "attack.halfopen.outlives-peer", "the server keeps ESTABLISHED after its peer went "
        "silent: nothing tells it", bool(k.ss) and "keepalive" in " ".join(k.ss),
        seen="ESTABLISHED with its keepalive timer running",
        evidence=[Evidence("ss -o (server), client silent", after=" | ".join(k.ss))],
        why_not=f"ss: {k.ss}")
    probes = _with_packets(
        "attack.halfopen.keepalive-fires", f"the server kernel's keepalive timer fires after "
        f"{idle} s, probes {count} times {interval} s apart, then gives up with RST", result,
        story.attack_keepalive, "ETIMEDOUT" in k.note and not k.after_ss,
        f"{k.note}; the entry is gone",
        [Evidence("server socket", after=k.note),
         Evidence("ss ESTABLISHED entries (server)", before=len(k.ss), after=len(k.after_ss))],
        f"{k.note}; entries after: {k.after_ss}")
    client = observe(
        "attack.halfopen.client-still-holds", "the silent client's own kernel still holds "
        "its entry: each side's state is its own", _rose(k, "client kernel entries") == 1,
        seen="the client's table still lists the connection ESTABLISHED",
        evidence=[Evidence("ss ESTABLISHED entries (client)",
                           after=k.counters.get("client kernel entries", (0, 0))[1])],
        why_not="the client's table has no entry")
    return [outlives, probes, client]


def findings_of_run(result: AttackResult) -> list[Observation]:
    return [*syn_queue_findings(result), *cookie_findings(result), *rst_findings(result),
            *keepalive_findings(result)]


def _compose(key: str, claim: str, parts: list[Observation], why: str) -> Observation:
    failed = [p for p in parts if p.failed]
    seen = [p for p in parts if p.observed]
    if failed:
        return observe(key, claim, False, why_not="; ".join(f"{p.key}: {p.why}" for p in failed))
    if not seen:
        return explain(key, claim, why)
    return observe(key, claim, True, seen="; ".join(p.seen for p in seen),
                   evidence=[e for p in seen for e in p.evidence])


def where_rows_of_run(result: AttackResult) -> list[StateRow]:
    get = result.finding
    why = result.capture.off_reason if result.capture and result.capture.off_reason else \
        "the run did not get this far"

    def parts(*keys: str) -> list[Observation]:
        return [o for o in (get(k) for k in keys) if o is not None]

    return [
        StateRow("half-open entry (SYN_RECV) in the SYN queue", "server kernel",
                 f"{FLOOD} spoofed SYNs, tcp_syncookies=0",
                 _compose("attack.where.syn-queue", "state kept before trust: the queue fills "
                          "and locks out real clients", parts(
                              "attack.synq.half-open", "attack.synq.full-drops",
                              "attack.synq.legit-refused"), why)),
        StateRow("the handshake, inside a SYN cookie (ISN, TSval bits)", "the packet",
                 "the same flood, tcp_syncookies=1 and 2",
                 _compose("attack.where.cookie", "no state kept: it is in the ISN; the ACK "
                          "brings it back", parts("attack.cookies2.no-entries",
                                                  "attack.cookies.ack-alone",
                                                  "attack.cookies.forged-fails"), why)),
        StateRow("window scale and SACK chosen in the SYN", "the packet (TSval), else lost",
                 "a client without timestamps",
                 _compose("attack.where.options", "without timestamps the cookie loses them",
                          parts("attack.cookies.no-ts-loses"), why)),
        StateRow("RCV.NXT and the receive window", "each kernel, per connection",
                 "forged RSTs: in window, outside, exact",
                 _compose("attack.where.rcv-nxt", "only the exact number resets", parts(
                     "attack.rst.in-window-challenged", "attack.rst.outside-ignored",
                     "attack.rst.exact-resets"), why)),
        StateRow("an ESTABLISHED entry whose peer is gone", "server kernel (its keepalive "
                 "timer); the client kernel's own entry", "the client host went silent",
                 _compose("attack.where.half-open", "state outlives its peer until a timer "
                          "notices", parts("attack.halfopen.outlives-peer",
                                           "attack.halfopen.keepalive-fires",
                                           "attack.halfopen.client-still-holds"), why)),
    ]


def where_from_capture(rows: Sequence[Row]) -> list[StateRow]:
    """The same rows from a capture: packets where they show it, the counters and `ss` are a
    live run's only."""
    found = {f.step.key: f.packets for f in story.check("tcp-attack-demo", rows)}

    def shown(key: str, steps: tuple[str, ...], claim: str) -> Observation:
        p = [n for s in steps for n in found.get(s, ())]
        missing = [s for s in steps if not found.get(s)]
        return observe(key, claim, not missing, seen=claim,
                       evidence=[Evidence("packets", packets=tuple(p))],
                       why_not=f"the capture does not show {', '.join(missing)}")

    live = explain("attack.where.counters", "the kernel's counters and ss listings",
                   "/proc/net/netstat and ss of the server's namespace: a capture does not "
                   "hold them", Status.LIVE_ONLY)
    return [
        StateRow("half-open entry (SYN_RECV) in the SYN queue", "server kernel",
                 "a flood of spoofed SYNs", shown("attack.where.syn-queue",
                                                  ("syn-queue", "refused"), "resent SYN-ACKs; "
                                                  "a real client's SYN unanswered")),
        StateRow("the handshake, inside a SYN cookie", "the packet", "syncookies on",
                 shown("attack.where.cookie", ("cookie", "forged-ack"), "a cookie handshake; "
                       "a forged ACK answered with RST")),
        StateRow("window scale and SACK chosen in the SYN", "the packet (TSval), else lost",
                 "a client without timestamps", shown("attack.where.options",
                                                      ("no-timestamps",), "no window scaling")),
        StateRow("RCV.NXT and the receive window", "each kernel", "forged RSTs",
                 shown("attack.where.rcv-nxt", ("challenge", "outside", "exact"),
                       "challenged, ignored, reset")),
        StateRow("an ESTABLISHED entry whose peer is gone", "server kernel (keepalive timer)",
                 "the client went silent", shown("attack.where.half-open", ("keepalive",),
                                                 "probes, then RST")),
        StateRow("SYN queue length, cookie counters, challenge ACKs", "server kernel",
                 "(live run only)", live),
    ]
