"""What `protolab nat-demo` observed: its findings and "where state lives" rows, each built from
the run's own data (the router's conntrack entries and DESTROY events, `ss` in each end host, the
replies) and the packets of its four-point capture; and the same rows from a capture alone
(`--replay`).

Where state lives: nowhere; this module only reads what `protolab.labs.nat` kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from protolab.analysis.annotate import Kind, Row
from protolab.analysis.observe import (
    Evidence,
    Observation,
    StateRow,
    Status,
    explain,
    from_packets,
    observe,
)

if TYPE_CHECKING:
    from protolab.labs.nat import NatDemoResult
    from protolab.net.conntrack import Entry

CLIENT, LAN, WAN, SERVER = "client:eth0", "router:lan", "router:wan", "server:eth0"
MAPPING = "the NAT mapping (inside address:port ↔ outside port)"
ROUTER = "router kernel (conntrack)"


def _packets(result: NatDemoResult, text: str, *at: str) -> tuple[int, ...]:
    from protolab.labs.nat import seen_at

    found = seen_at(result.rows, text)
    return tuple(sorted(n for point in (at or found) for n in found.get(point, ())))


def _no_capture(key: str, claim: str, result: NatDemoResult) -> Observation:
    return explain(key, claim, f"capture is off ({result.capture_off}): no packet of this run "
                               f"was seen, so not tried here")


def translated(result: NatDemoResult) -> Observation:
    """Part 1: the router's entry, and the same datagram before and after translation."""
    claim = "the router keeps a conntrack entry that maps the client's port to its own outside"
    entry = result.entries[0] if result.entries else None
    net = result.net
    ok = entry is not None and entry.translated and entry.reply.dst == net.outside.address
    ev = [Evidence("router's conntrack entry", after=entry.line() if entry else "none")]
    if ok and not result.capture_off:
        first = "seq=1 total=0 add=5"
        inside, outside = _packets(result, first, CLIENT, LAN), _packets(result, first, WAN,
                                                                        SERVER)
        src = {r.number: r.src for r in result.rows}
        want_out = f"{entry.reply.dst}:{entry.reply.dport}"
        ok = bool(inside and outside) and {src[n] for n in outside} == {want_out} and \
            {src[n] for n in inside} == {f"{net.client_if.address}:{result.client_port}"}
        ev += [Evidence(f"the request from {net.client_if.address}:{result.client_port}, at "
                        f"client:eth0 and router:lan", packets=inside),
               Evidence(f"the same request from {want_out}, at router:wan and server:eth0",
                        packets=outside)]
    return observe("nat.translated", claim, ok, done="one request and its reply through the NAT",
                   seen=f"one entry: {entry.original if entry else '?'}, replies to "
                        f"{entry.reply.dst}:{entry.reply.dport if entry else '?'}; the same "
                        f"datagram seen before and after translation", evidence=ev,
                   why_not="no translated entry in the router's table, or the capture does not "
                           "show the datagram on both sides with the entry's addresses")


def restart(result: NatDemoResult) -> Observation:
    """Part 2: the server process restarted; the workflow and the router's entry go on."""
    from protolab.labs.nat import ADDS

    old, new = result.restart
    totals = [r.total for r in result.replies]
    pids = [r.pid for r in result.replies]
    ids = [e.id for e in result.entries if e is not None]
    ok = totals == [sum(ADDS[:i + 1]) for i in range(len(ADDS))] and pids == [old, new] \
        and old != new and len(ids) == 2 and ids[0] == ids[1]
    return observe(
        "nat.restart", "a server restart loses nothing: the workflow and the router's entry "
        "go on", ok, done=f"restarted the server process (pid {old} → {new})",
        seen=f"total= {' → '.join(map(str, totals))}, carried by the client; the router's "
             f"entry is the same one (id {ids[0] if ids else '?'}): it does not know processes",
        evidence=[Evidence("pid= in the replies", *(pids + [None, None])[:2]),
                  Evidence("total= in the replies", after=", ".join(map(str, totals))),
                  Evidence("requests (carrying total=) and replies at client:eth0",
                           packets=_packets(result, "seq=", CLIENT)),
                  Evidence("router entry id", *(ids + [None, None])[:2])],
        why_not=f"totals {totals}, pids {pids} (restart {old} → {new}), entry ids {ids}")


def countdown(result: NatDemoResult) -> Observation:
    """Part 3: both flows' timeouts read twice: the silent one fell, the kept one (keepalives
    in between) did not fall as far."""
    lost, kept = result.lost, result.kept
    sent = (kept.keepalives_at_reads + [0, 0])[:2]
    ok = len(lost.timeouts) == 2 and lost.timeouts[1] < lost.timeouts[0] and \
        len(kept.timeouts) == 2 and kept.timeouts[1] > lost.timeouts[1] and sent[1] > sent[0]
    apart = result.read_at[-1] - result.read_at[0] if len(result.read_at) > 1 else 0.0
    return observe(
        "nat.countdown", "the entry's timeout counts down, and every packet restarts it", ok,
        done=f"read the router's table twice, {apart:.1f} s apart",
        seen=f"the silent flow's timeout {' → '.join(map(str, lost.timeouts))} s, the kept "
             f"flow's {' → '.join(map(str, kept.timeouts))} s ({sent[1] - sent[0]} keepalive(s) "
             f"in between)",
        evidence=[Evidence("silent flow's timeout", *(lost.timeouts + [None, None])[:2]),
                  Evidence("kept flow's timeout", *(kept.timeouts + [None, None])[:2]),
                  Evidence("kept flow's keepalives sent, at each read", *sent)],
        why_not=f"timeouts read: silent {lost.timeouts}, kept {kept.timeouts}; keepalives "
                f"sent at the reads {kept.keepalives_at_reads}")


def kept(result: NatDemoResult) -> Observation:
    from protolab.labs.nat import KEEPALIVE_EVERY, QUIET, UDP_TIMEOUT

    flow = result.kept
    same = len(set(flow.entry_ids)) == 1 and len(flow.entry_ids) == 2
    ok = flow.received == flow.pushed and flow.keepalives > 0 and same
    ev = [Evidence("keepalives sent", after=flow.keepalives),
          Evidence("entry id", *(flow.entry_ids + [None, None])[:2]),
          Evidence("the server's datagram received by the client", after=bool(flow.received))]
    if not result.capture_off:
        ev.append(Evidence("the server's datagram at server:eth0, router:wan, router:lan, "
                           "client:eth0", packets=_packets(result, "push to the kept")))
        ok = ok and bool(_packets(result, "push to the kept", CLIENT))
    return observe(
        "nat.keepalive-kept", f"keepalives more often than the timeout ({KEEPALIVE_EVERY} s < "
        f"{UDP_TIMEOUT} s) hold the mapping open", ok,
        done=f"a keepalive every {KEEPALIVE_EVERY} s for {QUIET:.1f} s",
        seen="same entry all along; the server's datagram crossed the router to the client",
        evidence=ev, why_not=f"received {flow.received!r}, entry ids {flow.entry_ids}")


def dropped(result: NatDemoResult) -> Observation:
    from protolab.labs.nat import QUIET, UDP_TIMEOUT

    flow, d = result.lost, result.destroyed
    claim = (f"after {UDP_TIMEOUT} s of silence the router destroys the entry and drops the "
             f"server's next datagram: UDP is stateless, the NAT is not")
    ok = d is not None and flow.received is None
    ev = [Evidence("DESTROY event", after=f"{d.entry.line()} id {d.entry.id}" if d else "none"),
          Evidence("the client socket received", after="nothing" if flow.received is None
                   else repr(flow.received))]
    if not result.capture_off:
        wan = _packets(result, "push to the lost", WAN)
        inside = _packets(result, "push to the lost", CLIENT, LAN)
        icmp = tuple(r.number for r in result.rows if r.shows(Kind.ICMP_PORT_UNREACHABLE)
                     and r.src.startswith(result.net.outside.address))
        ok = ok and bool(wan) and not inside
        ev += [Evidence("the server's datagram at router:wan", packets=wan),
               Evidence("at router:lan or client:eth0", after=len(inside)),
               Evidence("the router's ICMP port unreachable", packets=icmp[:2])]
        if d is not None and d.stamped and wan:
            at = _epoch(result) + next(r.time for r in result.rows if r.number == wan[0])
            ev.append(Evidence("s from the entry's expiry (the kernel's stamp) to the "
                               "datagram at router:wan", after=f"{at - d.time:.3f}"))
    return observe("nat.expired-dropped", claim, ok, done=f"left one flow silent {QUIET:.1f} s",
                   seen="the entry's timer ran out, the kernel destroyed it (DESTROY), and the "
                        "server's datagram went no further than the router",
                   evidence=ev, why_not="no DESTROY event for the silent flow, or its datagram "
                                        "reached the client (or is not at router:wan)")


def _epoch(result: NatDemoResult) -> float:
    records = result.capture.records if result.capture else []
    return records[0].time if records else 0.0


def tcp_copies(result: NatDemoResult) -> Observation:
    run = result.tcp
    e = run.entry
    ok = e is not None and e.state == "ESTABLISHED" and "ASSURED" in e.flags and \
        any(line.startswith("ESTAB") and run.client in line for line in run.ss_client) and \
        any(line.startswith("ESTAB") and run.seen_by_server in line for line in run.ss_server) \
        and run.seen_by_server == f"{e.reply.dst}:{e.reply.dport}"
    return observe(
        "nat.tcp-three-copies", "one TCP connection is held three times: by both end kernels "
        "and by the router's conntrack entry", ok, done="one connection, data both ways",
        seen=f"client kernel ESTAB {run.client}; router {e.state if e else '?'} "
             f"[{','.join(e.flags) if e else ''}]; server kernel ESTAB with peer "
             f"{run.seen_by_server} (the router's outside port)",
        evidence=[Evidence("ss -tn in client", after="; ".join(run.ss_client) or "none"),
                  Evidence("router conntrack", after=e.line() if e else "none"),
                  Evidence("ss -tn in server", after="; ".join(run.ss_server) or "none")],
        why_not="an end host's socket or the router's ESTABLISHED [ASSURED] entry is missing")


def tcp_flush(result: NatDemoResult) -> Observation:
    run = result.tcp
    e, old = run.picked_up, run.entry
    if run.echo:
        seen = (f"the router had no entry, but nf_conntrack_tcp_loose={run.loose} let it pick "
                f"the connection up from the next segment: {_picked_up(old, e)}, and the echo "
                f"came back")
    else:
        seen = f"the next segment met no entry: {run.error or 'no answer'}"
    ok = run.after_flush == 0 and (bool(run.echo) or bool(run.error))
    return observe(
        "nat.tcp-flush", "what the next segments meet after the router loses its table", ok,
        done="flushed the router's conntrack table mid-connection", seen=seen,
        evidence=[Evidence("TCP entries after the flush", after=run.after_flush),
                  Evidence("DESTROY events of the flush", after=len(run.flushed)),
                  Evidence("router entry id, outside port", before=_id_port(old),
                           after=_id_port(e)),
                  Evidence("router entry after the next segment",
                           after=f"{e.line()} id {e.id}" if e else "none"),
                  Evidence("echo", after=repr(run.echo))],
        why_not=f"{run.after_flush} TCP entries after the flush; echo {run.echo!r}, error "
                f"{run.error!r}")


def _id_port(e: Entry | None) -> str:
    return f"{e.id}, {e.reply.dport}" if e else "none"


def _picked_up(old: Entry | None, new: Entry | None) -> str:
    """The entry after the flush against the one before it, as the two reads show them."""
    if new is None or old is None:
        return f"entry before {_id_port(old)}, after {_id_port(new)}"
    which = "a new entry" if new.id != old.id else "the same entry"
    port = (f"the same outside port {new.reply.dport}" if new.reply.dport == old.reply.dport
            else f"another outside port ({old.reply.dport} → {new.reply.dport})")
    return f"{which} (id {old.id} → {new.id}, {new.state}), {port}"


def findings(result: NatDemoResult) -> list[Observation]:
    obs = [restart(result), countdown(result), kept(result), dropped(result),
           tcp_copies(result), tcp_flush(result)]
    if result.capture_off:
        return [_no_capture("nat.translated", "the same datagram before and after translation",
                            result), *obs]
    return [translated(result), *obs]


def where_from_run(result: NatDemoResult) -> list[StateRow]:
    from protolab.labs.nat import KEEPALIVE_EVERY, QUIET

    by = {o.key: o for o in result.findings.observations}
    old, new = result.restart
    return [
        StateRow("the workflow's state (seq, total)", "the client, in each datagram",
                 f"restarted the server process (pid {old} → {new})", by["nat.restart"]),
        StateRow(MAPPING, ROUTER, f"restarted the server process (pid {old} → {new})",
                 by["nat.restart"]),
        StateRow(MAPPING, ROUTER, f"a keepalive every {KEEPALIVE_EVERY} s", by[
            "nat.keepalive-kept"]),
        StateRow(MAPPING, ROUTER, f"left the flow silent {QUIET:.1f} s", by[
            "nat.expired-dropped"]),
        StateRow("a TCP connection", "both end kernels and the router's conntrack",
                 "one connection through the NAT", by["nat.tcp-three-copies"]),
        StateRow("the router's copy of a TCP connection", ROUTER,
                 "flushed the router's table mid-connection", by["nat.tcp-flush"]),
    ]


# -- the same rows from a capture alone (replay) -------------------------------------------------


def where_from_packets(rows: Sequence[Row]) -> list[StateRow]:
    from protolab.analysis.story_checks import check

    found = {f.step.key: f.packets for f in check("nat-demo", rows)}
    live = Status.LIVE_ONLY

    def step(key: str, claim: str, seen: str) -> Observation:
        return from_packets(f"where.nat.{key}", claim, found.get(key, ()), seen)

    return [
        StateRow(MAPPING, ROUTER, "a datagram crossed the router", step(
            "translated", "the router rewrites the source", "the same datagram with the "
            "inside and the outside source")),
        StateRow("the workflow's state (seq, total)", "the client, in each datagram",
                 "the server process restarted (pid= changed)", step(
                     "restart", "the total goes on across the restart", "kept")),
        StateRow(MAPPING, ROUTER, "keepalives", step(
            "kept", "the kept flow's mapping lets the server's datagram in", "delivered")),
        StateRow(MAPPING, ROUTER, "silence longer than the timeout", step(
            "dropped", "the expired flow's datagram stops at the router", "seen at router:wan, "
            "never inside")),
        StateRow("the router's conntrack entries, their timeouts and DESTROY events", ROUTER,
                 "-", explain("where.nat.entries", "the kernel's table and its events",
                              "a table is not in the packets", live)),
        StateRow("a TCP connection", "both end kernels and the router's conntrack", "-",
                 explain("where.nat.tcp", "ss -tn in each host and the router's entry",
                         "socket tables are not in the packets", live)),
    ]
