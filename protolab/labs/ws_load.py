"""`protolab ws-demo --under-load`: hundreds of chat clients connected, a rolling restart of every
backend while one user posts, per design; measured, not captured.

Where state lives decides what the clients lose: each restart drops every WebSocket its backend
held (a close frame 1001: the restart is graceful) and the clients reconnect with backoff, to
another backend or the new process. With `memory` a message reaches only its own backend's users
and a restarted backend knows nobody's place; with `pubsub` every backend fans out, but what was
published while a client was away is gone; with `resume` the client sends its last-seen id and the
store replays: nothing lost. Every number comes from the clients' own records (`ChatUser`: its
welcomes, drops and the poster's seqs it got), the backends' PIDs and their resident memory as
the kernel reports it (VmRSS) before and with the clients connected. Bounded: at most
`MAX_CLIENTS` clients, and every wait has a deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from protolab.analysis.observe import Evidence, Findings, Observation, observe
from protolab.labs.output import indent, print_findings, print_summary, table
from protolab.labs.tradeoffs import rss
from protolab.labs.ws_cluster import WsCluster, redis_for_run
from protolab.net.ws_client import ChatUser
from protolab.protocols.chat import Design

LAB = "ws-demo --under-load"
MAX_CLIENTS = 2000  #: the CLI's bound on --clients
POST_EVERY = 0.01  #: seconds between the poster's messages (a pace, not a synchronisation)
QUIET = 0.5  #: after the last post: stop waiting once no client got anything for this long
Out = Callable[[str], None]


@dataclass
class LoadRun:
    """One design under load: the clients' own records, summed."""

    design: str
    clients: int
    backends: int
    restarts: list[tuple[str, int, int]] = field(default_factory=list)  #: (id, old, new pid)
    welcomed: int = 0  #: clients welcomed before the posting began
    drops: int = 0  #: connections that ended under the clients
    reconnected: int = 0  #: of those, welcomed again
    reconnect_ms: list[float] = field(default_factory=list)
    codes: dict[int, int] = field(default_factory=dict)  #: close code → drops
    sent: int = 0  #: the poster's messages the server took (echoed back to the poster)
    lost: int = 0  #: (client, message) pairs sent but never received
    clients_losing: int = 0  #: clients that missed at least one message
    duplicates: int = 0  #: messages a client got twice
    per_connection: dict[str, float] = field(default_factory=dict)  #: backend → bytes/conn
    conns: dict[str, int] = field(default_factory=dict)  #: backend → its clients when measured
    seconds: float = 0.0
    error: str = ""

    def pct(self, q: float) -> float | None:
        """The q-th percentile of reconnect times (nearest rank), ms."""
        if not self.reconnect_ms:
            return None
        ordered = sorted(self.reconnect_ms)
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


@dataclass
class LoadResult:
    runs: list[LoadRun] = field(default_factory=list)
    findings: Findings = field(default_factory=Findings)
    capture: object = None  #: not captured: hundreds of connections are measured instead
    rows: list = field(default_factory=list)

    def problem(self) -> str:
        return self.findings.problem()


def run_under_load(redis: str | None = None, out: Out = print, clients: int = 200,
                   backends: int = 3, lb: str = "protolab",
                   designs: Sequence[str] = ("memory", "pubsub", "resume")) -> LoadResult:
    result = LoadResult()
    out(f"{clients} chat clients per design, {backends} backends behind {lb}; a rolling "
        f"restart (SIGTERM, close frames 1001) of every backend while one user posts every "
        f"{POST_EVERY * 1000:.0f} ms. Measured from the clients' own records; not captured.")
    with redis_for_run(redis) as url:
        for name in designs:
            design = Design(name)
            with WsCluster(design, url if design.shared else "", n=backends, lb=lb) as c:
                result.runs.append(_one(c, clients, out))
    result.findings = _findings(result.runs)
    out("\nPer design:")
    out(indent(table([_line(r) for r in result.runs],
                     ("design", "clients", "restarts", "drops (codes)", "reconnect p50/p99",
                      "sent", "lost (clients)", "memory per connection"))))
    print_findings(result.findings.observations, out)
    print_summary(LAB, result.findings, out)
    return result


def _one(c: WsCluster, n: int, out: Out) -> LoadRun:
    run = LoadRun(c.design.value, n, len(c.procs))
    start = time.monotonic()
    idle = {b: rss(p.pid) for b, p in c.procs.items()}
    users = [c.user(f"u{i}", seed=i) for i in range(n)]
    poster = c.user("poster", seed=n + 1)
    try:
        every = [*users, poster]
        if not c.wait(lambda: all(u.sessions for u in every), 10 + n / 50):
            run.error = f"{sum(1 for u in every if u.sessions)} of {n + 1} welcomed"
            return run
        run.welcomed = n
        _memory(run, c, users, idle)
        stop = threading.Event()
        sender = threading.Thread(target=_post, args=(c, poster, stop), daemon=True)
        sender.start()
        for backend in list(c.procs):
            # a message taken since the last restart, so messages flow through every restart
            # (a busy machine could otherwise finish the rolling restart before the first post)
            taken = len(poster.inbox.seqs)
            c.wait(lambda n=taken: len(poster.inbox.seqs) > n, 10)
            old, new = c.restart(backend, graceful=True)
            run.restarts.append((backend, old, new))
            c.wait(lambda: all(u.connected for u in every), 10)
        stop.set()
        sender.join(10)
        _settle(c, users, poster)
        _count(run, users, poster)
    finally:
        for u in (*users, poster):
            u.close()
        run.seconds = time.monotonic() - start
    out(f"   {run.design}: {run.seconds:.1f} s")
    return run


def _memory(run: LoadRun, c: WsCluster, users: list[ChatUser], idle: dict[str, int]) -> None:
    """Each backend's resident memory with its clients, less before them, per client."""
    for b, p in c.procs.items():
        held = sum(1 for u in users if u.sessions[-1].backend == b)
        run.conns[b] = held
        if held:
            run.per_connection[b] = (rss(p.pid) - idle[b]) / held


def _post(c: WsCluster, poster: ChatUser, stop: threading.Event) -> None:
    """Post, wait for the echo (the server took it), again until stopped; a post with no echo
    is sent again, under the same seq, once the poster is connected again."""
    i = 0
    while not stop.is_set():
        i += 1
        seq = f"poster-{i}"
        while not stop.is_set() and seq not in poster.inbox.seqs:
            if not poster.post(f"message {i}", seq):
                c.wait(lambda: poster.connected or stop.is_set(), 1)
                continue
            c.wait(lambda s=seq: s in poster.inbox.seqs, 1)
        stop.wait(POST_EVERY)


def _settle(c: WsCluster, users: list[ChatUser], poster: ChatUser) -> None:
    """Wait until every client has every message the server took, or none got anything new for
    `QUIET` seconds (the rest is not coming), at most 10 s."""
    deadline = time.monotonic() + 10
    sent = {s for s in poster.inbox.seqs if s.startswith("poster-")}
    while time.monotonic() < deadline:
        before = sum(len(u.inbox.seqs) for u in users)
        if c.wait(lambda: all(sent <= u.inbox.seqs for u in users), QUIET):
            return
        if sum(len(u.inbox.seqs) for u in users) == before:
            return


def _count(run: LoadRun, users: list[ChatUser], poster: ChatUser) -> None:
    sent = {s for s in poster.inbox.seqs if s.startswith("poster-")}
    run.sent = len(sent)
    for u in users:
        missing = len(sent - u.inbox.seqs)
        run.lost += missing
        run.clients_losing += bool(missing)
        run.duplicates += u.inbox.duplicates
        for d in u.drops:
            run.drops += 1
            run.codes[d.code] = run.codes.get(d.code, 0) + 1
            if d.reconnect_s is not None:
                run.reconnected += 1
                run.reconnect_ms.append(d.reconnect_s * 1000)


def _line(r: LoadRun) -> tuple:
    p50, p99 = r.pct(50), r.pct(99)
    codes = ", ".join(f"{k}×{v}" for k, v in sorted(r.codes.items()))
    mem = ", ".join(f"{b} {v / 1024:.0f} KiB×{r.conns[b]}" for b, v in r.per_connection.items())
    return (r.design, r.welcomed, len(r.restarts), f"{r.drops} ({codes})",
            f"{p50:.0f}/{p99:.0f} ms" if p50 is not None else "-", r.sent,
            f"{r.lost} ({r.clients_losing})", mem or "-")


def _findings(runs: list[LoadRun]) -> Findings:
    f = Findings()
    for r in runs:
        f.add(_restarted(r))
        f.add(observe(f"ws.load.{r.design}.reconnected", "every dropped client reconnects",
                      r.drops > 0 and r.reconnected == r.drops,
                      seen=f"{r.reconnected}/{r.drops} reconnected; p50 {r.pct(50) or 0:.0f} ms, "
                           f"p99 {r.pct(99) or 0:.0f} ms",
                      evidence=[Evidence("drops", after=r.drops),
                                Evidence("reconnected", after=r.reconnected),
                                Evidence("close codes", after=r.codes)],
                      why_not=r.error or f"{r.reconnected} of {r.drops} drops reconnected"))
        f.add(_lost(r))
        f.add(observe(f"ws.load.{r.design}.memory", "memory per connection, per backend",
                      len(r.per_connection) == r.backends
                      and all(v > 0 for v in r.per_connection.values()),
                      seen=", ".join(f"{b}: {v / 1024:.1f} KiB per connection ({r.conns[b]})"
                                     for b, v in r.per_connection.items()),
                      evidence=[Evidence(f"{b} VmRSS growth / connections",
                                         after=f"{v:.0f} B × {r.conns[b]}")
                                for b, v in r.per_connection.items()],
                      why_not="a backend held no client, or its memory did not grow"))
    return f


def _restarted(r: LoadRun) -> Observation:
    same = [b for b, old, new in r.restarts if old == new]
    return observe(f"ws.load.{r.design}.restarts", "a rolling restart of every backend",
                   len(r.restarts) == r.backends and not same,
                   seen=", ".join(f"{b} pid {old} → {new}" for b, old, new in r.restarts),
                   evidence=[Evidence(f"{b} pid", old, new) for b, old, new in r.restarts],
                   why_not=r.error or "not every backend was restarted")


def _lost(r: LoadRun) -> Observation:
    resume = r.design == Design.RESUME.value
    claim = ("nothing is lost: each client resumes from its last-seen id" if resume
             else "messages are lost across the rolling restart")
    ok = r.sent > 0 and r.welcomed == r.clients and ((r.lost == 0) if resume else r.lost > 0)
    return observe(f"ws.load.{r.design}.lost", claim, ok,
                   seen=f"{r.sent} messages sent to {r.clients} clients: {r.lost} "
                        f"deliveries missing at {r.clients_losing} clients; "
                        f"{r.duplicates} duplicates",
                   evidence=[Evidence("sent (taken by the server)", after=r.sent),
                             Evidence("deliveries missing", after=r.lost),
                             Evidence("clients missing any", after=r.clients_losing)],
                   why_not=r.error or f"{r.lost} lost of {r.sent} sent")
