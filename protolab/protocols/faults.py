"""Faults on demand: a userspace UDP proxy that drops, delays, duplicates and reorders datagrams.

Where state lives: in the proxy's app memory — its rules, its per-direction random streams, the
datagrams it holds back, and the map from each client address to its own upstream socket (as a
NAT keeps). The client and the server keep nothing about the proxy: each believes it talks to the
other. Which of them *notices* a fault is the lesson: DNS and QUIC clients keep timers and retry
counts in their own memory (RFC 1035 section 4.2.1, RFC 9002 section 6); UDP itself (RFC 768)
notices nothing.

`FaultCore` is sans-IO: `receive(data, direction, now)`, `datagrams_to_send(now)`, `next_timer()`,
`snapshot()`; every decision is drawn from a random stream per direction seeded from `seed`, so the
k-th datagram towards the server meets the same fate in every run. `UdpFaultProxy`
(`protolab.net.fault_proxy`) is the thread that owns the sockets.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from enum import Enum

Address = tuple[str, int]


#: How much longer a reordered datagram is held: the ones sent just after it overtake it; if none
#: comes, it still goes out (a reorder never becomes a loss).
REORDER_HOLD = 0.05


class Direction(Enum):
    TO_SERVER = "to-server"  #: client → proxy → server
    TO_CLIENT = "to-client"  #: server → proxy → client


class Fate(Enum):
    FORWARDED = "forwarded"  #: sent on at once
    DROPPED = "dropped"  #: never sent on: only a timer in an endpoint can notice
    DELAYED = "delayed"  #: sent on after `delay`
    DUPLICATED = "duplicated"  #: sent on twice
    REORDERED = "reordered"  #: held back `REORDER_HOLD` longer, so the datagrams after it pass


@dataclass(frozen=True)
class FaultPlan:
    """The rules. Probabilities are 0..1; `delay` is seconds; `count` limits faults to the first
    `count` datagrams of the chosen direction(s) (0: no limit)."""

    drop: float = 0.0
    delay: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    direction: str = "both"  #: both, to-server or to-client
    count: int = 0
    seed: int = 1

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"--{name} must be a probability 0..1, not {value}")
        if not 0.0 <= self.delay <= 10.0:
            raise ValueError(f"--delay must be 0..10 s, not {self.delay}")
        if self.direction not in ("both", "to-server", "to-client"):
            raise ValueError(f"--direction must be both, to-server or to-client, not "
                             f"{self.direction!r}")
        if self.count < 0:
            raise ValueError(f"--fault-count must be 0 or more, not {self.count}")

    @property
    def active(self) -> bool:
        return bool(self.drop or self.delay or self.duplicate or self.reorder)

    def applies(self, direction: Direction) -> bool:
        return self.direction in ("both", direction.value)

    def describe(self) -> str:
        parts = [f"drop {self.drop:g}" if self.drop else "",
                 f"delay {self.delay * 1000:g} ms" if self.delay else "",
                 f"duplicate {self.duplicate:g}" if self.duplicate else "",
                 f"reorder {self.reorder:g}" if self.reorder else ""]
        where = "both directions" if self.direction == "both" else self.direction
        first = f", first {self.count} datagram(s) only" if self.count else ""
        return f"{', '.join(p for p in parts if p) or 'no faults'} ({where}{first}; seed " \
               f"{self.seed})"


@dataclass(frozen=True)
class Decision:
    """What the proxy did with one datagram: the k-th in its direction."""

    index: int
    direction: Direction
    fate: Fate
    size: int


@dataclass
class FaultCounters:
    forwarded: int = 0
    dropped: int = 0
    delayed: int = 0
    duplicated: int = 0
    reordered: int = 0


@dataclass
class _Stream:
    rng: random.Random
    seen: int = 0


class FaultCore:
    """The proxy's decisions, sans-IO. Feed datagrams with their direction; collect what to send
    (data, direction) when it is due."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        # One random stream per direction: the fate of the k-th datagram each way does not
        # depend on how the two directions interleave in time.
        self._streams = {d: _Stream(random.Random(f"{plan.seed}:{d.value}")) for d in Direction}
        self._due: list[tuple[float, int, bytes, Direction, object]] = []
        self._seq = 0
        self.decisions: list[Decision] = []

    def _schedule(self, when: float, data: bytes, direction: Direction, tag: object) -> None:
        self._seq += 1
        heapq.heappush(self._due, (when, self._seq, data, direction, tag))

    def receive(self, data: bytes, direction: Direction, now: float,
                tag: object = None) -> Fate:
        """Decide one datagram's fate. `tag` comes back with it (the adapter's routing)."""
        stream = self._streams[direction]
        stream.seen += 1
        plan = self.plan
        # Draw all three numbers every time, so one rule's outcome never shifts another's draws.
        r_drop, r_dup, r_reorder = stream.rng.random(), stream.rng.random(), stream.rng.random()
        faulty = plan.applies(direction) and (not plan.count or stream.seen <= plan.count)
        if faulty and r_drop < plan.drop:
            fate = Fate.DROPPED
        elif faulty and r_reorder < plan.reorder:
            fate = Fate.REORDERED
            self._schedule(now + plan.delay + REORDER_HOLD, data, direction, tag)
        else:
            delay = plan.delay if faulty else 0.0
            copies = 2 if faulty and r_dup < plan.duplicate else 1
            fate = Fate.DUPLICATED if copies == 2 else Fate.DELAYED if delay else Fate.FORWARDED
            for _ in range(copies):
                self._schedule(now + delay, data, direction, tag)
        self.decisions.append(Decision(stream.seen, direction, fate, len(data)))
        return fate

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Direction, object]]:
        """(data, direction, tag) for every datagram due by `now`, in order."""
        out = []
        while self._due and self._due[0][0] <= now:
            _, _, data, direction, tag = heapq.heappop(self._due)
            out.append((data, direction, tag))
        return out

    @property
    def counters(self) -> FaultCounters:
        """How many datagrams met each fate, counted from the decisions."""
        counts = FaultCounters()
        for d in self.decisions:
            setattr(counts, d.fate.value, getattr(counts, d.fate.value) + 1)
        return counts

    def next_timer(self) -> float | None:
        return self._due[0][0] if self._due else None

    def snapshot(self) -> dict[str, object]:
        return {"plan": self.plan.describe(), **vars(self.counters),
                "waiting": len(self._due)}


def fault_line(core: FaultCore) -> str:
    """One line: what the proxy did, and to which datagrams (k-th in its direction)."""
    hit = [f"{d.direction.value} datagram {d.index} {d.fate.value}"
           for d in sorted(core.decisions, key=lambda d: (d.direction.value, d.index))
           if d.fate is not Fate.FORWARDED]
    c = core.counters
    total = len(core.decisions)
    return (f"{total} datagrams: {c.forwarded} forwarded, {c.dropped} dropped, {c.delayed} "
            f"delayed, {c.duplicated} duplicated, {c.reordered} reordered"
            + (f" ({', '.join(hit[:12])}{', ...' if len(hit) > 12 else ''})" if hit else ""))
