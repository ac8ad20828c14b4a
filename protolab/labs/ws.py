"""`protolab ws-demo` (worksheet 10): a WebSocket chat's state lives in the backend process that
holds the connection; a restart takes it away, and only a shared history lets a client resume.

Where state lives: the WebSocket (handshake done, the subscription, the last message id sent) is in
the one backend process holding the socket (`protolab.net.ws_backend`). The same scenario runs
for three designs, each with two backend processes behind protolab's balancer (which tunnels the
upgrade): `memory` (ids, history and fan-out in each process), `pubsub` (ids and fan-out shared
through Redis; no history) and `resume` (pub/sub and the history in Redis; the client comes back
with its last-seen id). Alice and Bob connect (round-robin: two backends); Alice pings; Bob posts;
Alice's backend is restarted (a crash, SIGKILL, for memory and pubsub; a graceful SIGTERM with
close frames 1001 for resume) while she stays away; Bob posts again; Alice reconnects. Then a real
nginx proxies the upgrade to the resume backends.

Every finding is an observation of this run: what each client's wsproto said (welcomes, close
codes, pongs, the messages by the poster's seq), the backends' PIDs before and after, and this
run's capture (the upgrade, the masked frames, the drop, the resume point in the reconnect).
`--under-load` runs `protolab.labs.ws_load` instead: hundreds of clients, a rolling restart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from protolab.analysis.facts import Row
from protolab.analysis.observe import Findings
from protolab.labs.output import (
    capture_off_line,
    indent,
    print_findings,
    print_state_table,
    print_summary,
    show_capture,
    table,
)
from protolab.labs.ws_cluster import WsCluster, redis_for_run
from protolab.labs.ws_findings import build_findings, where_from_capture
from protolab.net.ws_client import ChatUser, Drop, Session
from protolab.protocols.chat import Design
from protolab.wire.capture import Capture, CaptureSummary
from protolab.wire.paths import default_capture_path

LAB = "ws-demo"
WHERE_TITLE = "Where a WebSocket chat's state lives:"
WAIT = 5.0  #: seconds any one step may take before the run says it did not happen
Out = Callable[[str], None]

__all__ = ["LAB", "WHERE_TITLE", "Scenario", "WsDemoResult", "run", "where_from_capture"]


@dataclass
class Scenario:
    """One design's run of the scenario, as the clients and the processes said."""

    design: Design
    graceful: bool  #: the restart was SIGTERM (close frames 1001), else SIGKILL
    alice: list[Session] = field(default_factory=list)  #: Alice's connections, in order
    bob: str = "?"  #: the backend Bob was on
    pongs: int = 0  #: pongs Alice got for her ping
    m1: bool = False  #: Alice got Bob's first message
    restart: tuple[str, int, int] = ("?", 0, 0)  #: (backend, old pid, new pid)
    drop: Drop | None = None  #: Alice's connection ending
    sent: list[str] = field(default_factory=list)  #: Bob's posts the server took (seqs)
    got: list[str] = field(default_factory=list)  #: which of them Alice got
    error: str = ""  #: why the scenario stopped short

    @property
    def missing(self) -> list[str]:
        return [s for s in self.sent if s not in self.got]


@dataclass
class RealBalancer:
    """A user through nginx (or HAProxy): did the upgrade pass?"""

    kind: str = "nginx"
    port: int = 0
    session: Session | None = None
    pongs: int = 0
    echoed: bool = False
    error: str = ""


@dataclass
class WsDemoResult:
    scenarios: dict[str, Scenario] = field(default_factory=dict)
    real: RealBalancer = field(default_factory=RealBalancer)
    redis: str = ""  #: the Redis the shared designs used
    capture: CaptureSummary | None = None
    capture_off: str = ""
    rows: list[Row] = field(default_factory=list)
    findings: Findings = field(default_factory=Findings)

    def problem(self) -> str:
        return self.findings.problem()


def run_ws_demo(capture: bool = True, pcap: str | Path | None = None, out: Out = print,
                capture_off_reason: str = "--no-capture", redis: str | None = None,
                under_load: bool = False, **load: object) -> object:
    """The three designs' scenario and the real balancer, captured; or `--under-load`."""
    if under_load:
        from protolab.labs.ws_load import run_under_load

        return run_under_load(redis=redis, out=out, **load)
    path = Path(pcap) if pcap else default_capture_path(LAB)
    result = WsDemoResult()
    with redis_for_run(redis) as url, Capture([], path, enabled=capture,
                                       off_reason=capture_off_reason) as cap:
        result.redis = url
        if not cap.active:
            result.capture_off = cap.summary.off_reason or capture_off_reason
            out(capture_off_line(cap.summary, LAB, capture_off_reason))
        for n, design in enumerate(Design, 1):
            result.scenarios[design.value] = _scenario(design, url, cap, n, out, result)
    result.capture = cap.summary
    _report(result, cap.active, out)
    return result


_HOW = {Design.MEMORY: "ids, history and fan-out in each backend process",
        Design.PUBSUB: "ids and fan-out shared through Redis pub/sub, no history",
        Design.RESUME: "Redis pub/sub and the history in Redis; clients resume from their id"}


def _scenario(design: Design, redis: str, cap: Capture, n: int, out: Out,
              result: WsDemoResult) -> Scenario:
    graceful = design is Design.RESUME
    sc = Scenario(design, graceful)
    with WsCluster(design, redis if design.shared else "", n=2) as c:
        for port in c.ports:
            cap.add_port(port)
        out(f"\n{n}. Design {design.value} ({_HOW[design]}): backends "
            + ", ".join(f"{b} :{p.port} pid {p.pid}" for b, p in c.procs.items())
            + f", behind protolab's balancer :{c.address[1]}")
        alice, bob = c.user("alice", 1), None
        try:
            bob = _steps(c, sc, alice, out)
            if design is Design.RESUME and not sc.error:
                result.real = _real_balancer(c, cap, out)
        finally:
            for u in (alice, bob):
                if u is not None:
                    u.close()
    return sc


def _steps(c: WsCluster, sc: Scenario, alice: ChatUser, out: Out) -> ChatUser | None:
    if not c.wait(lambda: alice.sessions, WAIT):
        sc.error = "Alice was not welcomed"
        return None
    bob = c.user("bob", 2)
    if not c.wait(lambda: bob.sessions, WAIT):
        sc.error = "Bob was not welcomed"
        return bob
    sc.alice, sc.bob = alice.sessions, bob.sessions[0].backend
    first = alice.sessions[0]
    alice.ping()
    c.wait(lambda: alice.pongs > 0, WAIT)
    sc.pongs = alice.pongs
    out(f"   Alice: upgraded from :{first.port}, welcomed by {first.backend} pid {first.pid}; "
        f"Bob by {sc.bob}. Alice pings: {sc.pongs} pong")
    _post(c, bob, sc, "bob-1", "hello from Bob")
    sc.m1 = _fence(c, alice, "alice-1") and "bob-1" in alice.inbox.seqs
    out(f"   Bob posts on {sc.bob}: Alice (on {first.backend}) got it: "
        f"{'yes' if sc.m1 else 'NO'}")
    alice.hold()
    sc.restart = (first.backend, *c.restart(first.backend, sc.graceful))
    if not c.wait(lambda: alice.drops, WAIT):
        sc.error = "Alice's connection did not drop"
        return bob
    sc.drop = alice.drops[-1]
    how = "SIGTERM" if sc.graceful else "SIGKILL"
    out(f"   {first.backend} restarted ({how}, pid {sc.restart[1]} → {sc.restart[2]}): Alice's "
        f"connection ended, close code {sc.drop.code}; she stays away while Bob posts again")
    _post(c, bob, sc, "bob-2", "while Alice was away")
    alice.release()
    if not c.wait(lambda: alice.drops[-1].back_at is not None, WAIT) \
            or not _fence(c, alice, "alice-2"):
        sc.error = "Alice did not reconnect"
        return bob
    sc.alice = list(alice.sessions)
    sc.got = [s for s in sc.sent if s in alice.inbox.seqs]
    again = alice.sessions[-1]
    out(f"   Alice reconnects from :{again.port} with since={again.since} after "
        f"{sc.drop.reconnect_s * 1000:.0f} ms ({sc.drop.attempts} attempt(s)): welcomed by "
        f"{again.backend} pid {again.pid}, her place {'known' if again.known else 'NOT known'}, "
        f"{again.replayed} replayed. Bob sent {len(sc.sent)}, Alice got {len(sc.got)}"
        + (f": missing {', '.join(sc.missing)}" if sc.missing else ": nothing lost"))
    return bob


def _post(c: WsCluster, user: ChatUser, sc: Scenario, seq: str, text: str) -> None:
    """Post and wait for the server's echo (it took the post); counted as sent only then."""
    if user.post(text, seq) and c.wait(lambda: seq in user.inbox.seqs, WAIT):
        sc.sent.append(seq)


def _fence(c: WsCluster, user: ChatUser, seq: str) -> bool:
    """The user posts `seq` and waits for its echo: every message the server sent this
    connection before it has arrived (one connection delivers in order)."""
    return user.post("(fence)", seq) and c.wait(lambda: seq in user.inbox.seqs, WAIT)


def _real_balancer(c: WsCluster, cap: Capture, out: Out) -> RealBalancer:
    """Carol through a real nginx in front of the same backends: upgrade, ping, post, close."""
    from protolab.net.lb import BalancerError, Policy, start_balancer
    from protolab.net.ws_client import ChatUser

    real = RealBalancer()
    try:
        nginx = start_balancer("nginx", c.upstreams, Policy.ROUND_ROBIN, websocket=True)
    except BalancerError as exc:
        real.error = str(exc)
        out(f"\n4. A real balancer: {exc}")
        return real
    try:
        real.port = nginx.address[1]
        cap.add_port(real.port)
        carol = ChatUser("carol", nginx.address, c.changed, seed=3).start()
        if c.wait(lambda: carol.sessions, WAIT):
            real.session = carol.sessions[0]
            carol.ping()
            c.wait(lambda: carol.pongs > 0, WAIT)
            real.pongs = carol.pongs
            real.echoed = _fence(c, carol, "carol-1")
        carol.close()
    finally:
        nginx.stop()
    s = real.session
    out(f"\n4. A real nginx (:{real.port}, proxy_set_header Upgrade/Connection) in front of the "
        f"resume backends: " + (f"Carol upgraded through it, welcomed by {s.backend} pid "
                                f"{s.pid}; {real.pongs} pong; her post came back: {real.echoed}"
                                if s else "Carol was not welcomed"))
    return real


def _report(result: WsDemoResult, captured: bool, out: Out) -> None:
    shown: list[str] = []
    if captured and result.capture is not None:
        result.rows = show_capture(result.capture, shown.append)
    result.findings = build_findings(result, captured)
    out("\nEach design, from the clients' own counts:")
    out(indent(table([_line(s) for s in result.scenarios.values()],
                     ("design", "Bob's 1st to Alice (other backend)", "restart", "Alice's close "
                      "code", "reconnect", "place", "sent", "got", "lost"))))
    print_findings(result.findings.observations, out)
    for line in shown:
        out(line)
    print_state_table(WHERE_TITLE, result.findings.where, out)
    print_summary(LAB, result.findings, out)


def _line(s: Scenario) -> tuple:
    again = s.alice[-1] if len(s.alice) > 1 else None
    return (s.design.value, "yes" if s.m1 else "no",
            f"{s.restart[0]} pid {s.restart[1]} → {s.restart[2]}",
            s.drop.code if s.drop else "-",
            f"{s.drop.reconnect_s * 1000:.0f} ms" if s.drop and s.drop.reconnect_s else "-",
            ("known" if again.known else "gone") + f", {again.replayed} replayed" if again
            else "-", len(s.sent), len(s.got), len(s.missing))


run = run_ws_demo  #: the registry's entry point (protolab.labs.DEMOS)
