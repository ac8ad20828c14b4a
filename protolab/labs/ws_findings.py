"""What `protolab ws-demo` found, as observations: from the clients' own wsproto (welcomes, close
codes, pongs, the messages by the poster's seq), the backends' PIDs and this run's capture; and
its "where state lives" table, from a run or from packets.

Where state lives: nowhere new; this module only judges the run's data (`protolab.labs.ws`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from protolab.analysis.facts import Row
from protolab.analysis.observe import (
    Evidence,
    Findings,
    StateRow,
    Status,
    explain,
    from_packets,
    observe,
)
from protolab.analysis.story_ws import (
    ws_dropped,
    ws_graceful,
    ws_masked,
    ws_ping,
    ws_place_gone,
    ws_resumed,
    ws_upgrade,
)

if TYPE_CHECKING:
    from protolab.labs.ws import Scenario, WsDemoResult

MEMORY_PER_CONNECTION = ("memory per connection: `--under-load` measures each backend's resident "
                         "memory with its clients connected")


def _packets(rows: Sequence[Row], captured: bool, find, what: str) -> tuple[bool, list[Evidence]]:
    """The capture's part of a claim: the packets `find` returns (none: the claim fails)."""
    if not captured:
        return True, []
    found = find(rows)
    return bool(found), [Evidence(what, packets=tuple(found))]


def _scenario_ok(s: Scenario | None) -> bool:
    return s is not None and not s.error and len(s.alice) > 1 and s.drop is not None


def build_findings(result: WsDemoResult, captured: bool) -> Findings:
    f = Findings()
    rows = result.rows
    sc = result.scenarios
    memory, pubsub, resume = sc.get("memory"), sc.get("pubsub"), sc.get("resume")
    first = next((s for s in sc.values() if s.alice), None)
    wire, ev = _packets(rows, captured, ws_upgrade, "upgrade request, 101")
    f.add(observe("ws.upgrade", "an HTTP upgrade turns the connection into a WebSocket",
                  first is not None and wire, seen="101 Switching Protocols, its "
                  "Sec-WebSocket-Accept computed from the request's key; the welcome followed",
                  evidence=[Evidence("Alice's first welcome", after=_who(first))] + ev,
                  why_not="no welcome, or no 101 answering its key in the capture"))
    wire, ev = _packets(rows, captured, ws_masked, "client frame (masked), server frame")
    f.add(observe("ws.masked", "client frames are masked, server frames are not", wire,
                  seen="the client's frames carry a 4-byte key (unmasked in the annotation), "
                  "the server's none (RFC 6455 section 5.3)", evidence=ev,
                  why_not="this capture does not show both"))
    pongs = first.pongs if first else 0
    wire, ev = _packets(rows, captured, ws_ping, "ping, pong")
    f.add(observe("ws.ping", "a ping is answered with a pong", pongs > 0 and wire,
                  seen="the server's wsproto answered Alice's ping",
                  evidence=[Evidence("pongs Alice got", after=pongs)] + ev))
    _fan_out(f, memory, resume)
    _restarts(f, memory, pubsub, resume, rows, captured)
    _real(f, result)
    return _with_where(f, result)


def _who(s: Scenario | None) -> str:
    if s is None or not s.alice:
        return "none"
    a = s.alice[0]
    return f"{a.backend} pid {a.pid} from :{a.port}"


def _fan_out(f: Findings, memory: Scenario | None, resume: Scenario | None) -> None:
    def other(s: Scenario | None) -> bool:
        return s is not None and bool(s.alice) and s.alice[0].backend != s.bob

    f.add(observe("ws.memory-no-fan-out", "without shared state, a message reaches only its "
                  "own backend's users", other(memory) and not memory.m1 and "bob-1" in
                  memory.sent, seen=f"Bob's message on {memory.bob if memory else '?'} never "
                  f"reached Alice on {_who(memory)}",
                  evidence=[Evidence("Alice got Bob's first", after=memory.m1 if memory else None)],
                  why_not="Alice and Bob were not on two backends, or Alice got it"))
    f.add(observe("ws.shared-fan-out", "through Redis pub/sub a message reaches every "
                  "backend's users", other(resume) and resume.m1,
                  seen=f"Bob's message on {resume.bob if resume else '?'} reached Alice on "
                  f"{_who(resume)}",
                  evidence=[Evidence("Alice got Bob's first", after=resume.m1 if resume else None)],
                  why_not="Alice and Bob were not on two backends, or Alice did not get it"))


def _restart_evidence(s: Scenario) -> list[Evidence]:
    b, old, new = s.restart
    again = s.alice[-1] if len(s.alice) > 1 else None
    return [Evidence(f"{b} pid", old, new),
            Evidence("Alice's close code", after=s.drop.code if s.drop else None),
            Evidence("resume point sent (since)", after=again.since if again else None),
            Evidence("welcome: place", after=("known" if again.known else "not known")
                     if again else None),
            Evidence("Bob's posts taken / got by Alice", len(s.sent), len(s.got))]


def _restarts(f: Findings, memory: Scenario | None, pubsub: Scenario | None,
              resume: Scenario | None, rows: Sequence[Row], captured: bool) -> None:
    killed = memory if _scenario_ok(memory) else None
    wire, ev = _packets(rows, captured, ws_dropped, "FIN/RST with no close frame")
    f.add(observe("ws.crash-1006", "a killed backend drops its WebSockets with no close frame "
                  "(the client's code 1006)", killed is not None and killed.drop.code == 1006
                  and killed.restart[1] != killed.restart[2] and wire,
                  seen="the kernel ended the connection (FIN); wsproto reported 1006",
                  evidence=(_restart_evidence(killed) if killed else []) + ev))
    graceful = resume if _scenario_ok(resume) else None
    wire, ev = _packets(rows, captured, ws_graceful, "close 1001, the client's reply")
    f.add(observe("ws.graceful-1001", "a backend stopped gracefully says going away (1001) "
                  "first", graceful is not None and graceful.drop.code == 1001 and wire,
                  seen="a close frame 1001 from the server before its FIN",
                  evidence=(_restart_evidence(graceful) if graceful else []) + ev))
    wire, ev = _packets(rows, captured, ws_place_gone, "resume request, welcome")
    gone = memory if _scenario_ok(memory) else None
    f.add(observe("ws.memory-place-gone", "memory design: after the restart the client's place "
                  "and the history are gone", gone is not None and not gone.alice[-1].known
                  and bool(gone.missing) and wire,
                  seen=f"the new welcome did not know since={gone.alice[-1].since if gone else '?'}"
                       f"; lost: {', '.join(gone.missing) if gone else '?'}",
                  evidence=(_restart_evidence(gone) if gone else []) + ev))
    ps = pubsub if _scenario_ok(pubsub) else None
    f.add(observe("ws.pubsub-gap", "pub/sub alone: what was published while the client was "
                  "away is lost", ps is not None and "bob-2" in ps.missing and ps.m1,
                  seen="the shared channel kept nothing for a client that was not connected",
                  evidence=_restart_evidence(ps) if ps else []))
    wire, ev = _packets(rows, captured, ws_resumed, "resume request, welcome, replayed id")
    ok = _scenario_ok(resume)
    f.add(observe("ws.resume-no-gap", "resume design: the client sends its last-seen id and the "
                  "server replays from the store: nothing lost", ok and not resume.missing
                  and resume.alice[-1].known and resume.alice[-1].replayed > 0 and wire,
                  seen="the welcome knew her place and replayed what she missed",
                  evidence=(_restart_evidence(resume) if ok else []) + ev))


def _real(f: Findings, result: WsDemoResult) -> None:
    real = result.real
    s = real.session
    seen = f"101 through nginx :{real.port}; welcomed by {s.backend} pid {s.pid}" if s else ""
    packets: tuple[int, ...] = ()
    if result.rows and real.port:
        packets = tuple(r.number for r in result.rows if r.fields.get("ws_upgrade") == "101"
                        and r.src.endswith(f":{real.port}"))[:1]
    f.add(observe("ws.real-balancer", "a real balancer (nginx) proxies the upgrade",
                  s is not None and real.pongs > 0 and real.echoed
                  and (bool(packets) or not result.rows), seen=seen,
                  evidence=[Evidence("Carol's welcome", after=seen or "none"),
                            Evidence("pongs, post echoed", after=f"{real.pongs}, {real.echoed}"),
                            Evidence("101 from nginx", packets=packets)],
                  why_not=real.error or "Carol was not welcomed through nginx, or no 101 from "
                                        "its port in the capture"))


def _with_where(f: Findings, result: WsDemoResult) -> Findings:
    by = {o.key: o for o in f.observations}
    f.where = [
        StateRow("the WebSocket (open, closing) and its socket", "server app memory and "
                 "kernel of the one backend holding it", "killed that backend",
                 by["ws.crash-1006"]),
        StateRow("the subscription, the last id sent", "server app memory (per connection)",
                 "stopped that backend gracefully", by["ws.graceful-1001"]),
        StateRow("ids and history (memory design)", "each backend's memory",
                 "restarted the backend, reconnected with since=N", by["ws.memory-place-gone"]),
        StateRow("fan-out to other backends' users", "shared store (Redis pub/sub)",
                 "posted on one backend, read on another", by["ws.shared-fan-out"]),
        StateRow("a message while a client is away", "nobody (pub/sub keeps nothing)",
                 "restarted, posted during the gap", by["ws.pubsub-gap"]),
        StateRow("the history to resume from", "shared store (a Redis sorted set by id)",
                 "restarted, reconnected with since=N", by["ws.resume-no-gap"]),
        StateRow("the client's place (last-seen id)", "client app memory; the upgrade target "
                 "carries it", "reconnected", by["ws.resume-no-gap"]),
        StateRow("the tunnel at a real balancer", "the balancer: a pair of sockets",
                 "upgraded through nginx", by["ws.real-balancer"]),
        StateRow("memory per connection", "each backend process", "-",
                 explain("ws.memory-per-connection", MEMORY_PER_CONNECTION)),
    ]
    return f


# -- from a capture (replay) ----------------------------------------------------------------------


def where_from_capture(rows: Sequence[Row]) -> list[StateRow]:
    """The same table from the packets."""
    live = Status.LIVE_ONLY
    return [
        StateRow("the WebSocket and its socket", "the backend holding it", "a connection "
                 "ended with no close frame",
                 from_packets("where.ws.dropped", "a WebSocket dropped (1006)",
                              ws_dropped(rows), "FIN, no close")),
        StateRow("the subscription, the last id sent", "server app memory", "a server said "
                 "going away",
                 from_packets("where.ws.graceful", "close 1001", ws_graceful(rows),
                              "close frame 1001")),
        StateRow("ids and history (memory design)", "each backend's memory", "a resume point "
                 "the new server did not know",
                 from_packets("where.ws.place-gone", "place not known", ws_place_gone(rows),
                              "welcome: not known")),
        StateRow("the history to resume from", "shared store", "a resume point and the "
                 "replay",
                 from_packets("where.ws.resumed", "replayed after since=N", ws_resumed(rows),
                              "welcome with a replay, then the ids")),
        StateRow("who got which message", "each client's memory", "-",
                 explain("where.ws.counts", "the clients' counts of sent and received",
                         "the frames show what each connection carried; the per-client totals "
                         "are the clients' own count", live)),
    ]
