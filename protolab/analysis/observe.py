"""Observations as data: what a run did, what it saw, and the evidence — rendered, never asserted.

Where state lives: nowhere; this is the vocabulary every lab prints its findings in. A finding line
or a "where state lives" row exists only as an `Observation`: the action the run performed, what
it saw, and the evidence (packet numbers in this capture, PIDs before → after, a kernel counter,
the kernel's own record, a table's entries). A claim the run set out to show but did not see is an
observation too, with the status NOT OBSERVED and the reason; any such observation makes the lab
exit 1. A row the run does not try is an explanation, printed visibly as one ("not tried here"),
and a replay marks what only a live run can show ("live run only").

The English is rendered from these objects; nothing reads it back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum


class Status(Enum):
    OBSERVED = "observed"  #: this run did it and saw the outcome; the evidence is attached
    NOT_OBSERVED = "NOT OBSERVED"  #: the run tried and did not see it: the lab exits 1
    NOT_TRIED = "not tried here"  #: an explanation only: this run does not try it
    LIVE_ONLY = "live run only"  #: a replay cannot show it: the capture does not hold it


@dataclass(frozen=True)
class Evidence:
    """One thing looked at: a label and its value(s), with the packets that show it."""

    what: str  #: "server pid", "packets", "/proc/net/udp entries", "store keys"
    before: object = None  #: the value before the action, where there is one
    after: object = None  #: the value after it (or the only value)
    packets: tuple[int, ...] = ()  #: packet numbers in this capture

    def text(self) -> str:
        parts = []
        if self.before is not None:
            parts.append(f"{self.before} → {self.after}")
        elif self.after is not None:
            parts.append(str(self.after))
        if self.packets:
            parts.append(packet_list(self.packets))
        return f"{self.what} {' '.join(parts)}".strip()


@dataclass(frozen=True)
class Observation:
    """A finding: the claim, what was done, what was seen, its evidence and its status."""

    key: str  #: a stable name ("dns.matched-by-id"): tests and graders use it, not the text
    claim: str  #: what this run set out to show, in the lab's words
    status: Status
    done: str = ""  #: the action the run performed ("restarted the server process")
    seen: str = ""  #: what was seen, rendered by the lab from the evidence values
    evidence: tuple[Evidence, ...] = ()
    why: str = ""  #: NOT_OBSERVED: what was missing; NOT_TRIED/LIVE_ONLY: the explanation

    @property
    def observed(self) -> bool:
        return self.status is Status.OBSERVED

    @property
    def failed(self) -> bool:
        return self.status is Status.NOT_OBSERVED

    def evidence_text(self) -> str:
        return "; ".join(e.text() for e in self.evidence)

    def line(self) -> str:
        """One finding line: observed with evidence, or what was not observed and why."""
        if self.status is Status.OBSERVED:
            done = f"{self.done}: " if self.done else ""
            seen = self.seen or self.claim
            ev = self.evidence_text()
            return f"observed: {done}{seen}" + (f" [{ev}]" if ev else "")
        if self.status is Status.NOT_OBSERVED:
            return f"NOT OBSERVED: {self.claim} — {self.why}"
        return f"({self.status.value}) explanation: {self.claim}" + (
            f" — {self.why}" if self.why else "")


def observe(key: str, claim: str, ok: bool, *, seen: str = "", done: str = "",
            evidence: Iterable[Evidence] = (), why_not: str = "") -> Observation:
    """OBSERVED with its evidence when `ok`; otherwise NOT_OBSERVED, saying what was missing.
    `ok` must come from the run's own data; an observation without evidence is not `ok`."""
    ev = tuple(evidence)
    if ok and ev:
        return Observation(key, claim, Status.OBSERVED, done=done, seen=seen, evidence=ev)
    reason = why_not or ("no evidence was recorded" if ok else "the run did not show it")
    return Observation(key, claim, Status.NOT_OBSERVED, done=done, evidence=ev, why=reason)


def from_packets(key: str, claim: str, packets: Iterable[int], seen: str,
                 what: str = "packets") -> Observation:
    """A replay's observation: OBSERVED when the capture's rows showed `packets` (the numbers a
    story step found), else NOT_OBSERVED because this capture does not show it."""
    found = tuple(packets)
    return observe(key, claim, bool(found), seen=seen, evidence=[Evidence(what, packets=found)],
                   why_not="this capture does not show it")


def explain(key: str, claim: str, why: str = "",
            status: Status = Status.NOT_TRIED) -> Observation:
    """An explanation, marked as one: not tried in this run (or, in a replay, live run only)."""
    assert status in (Status.NOT_TRIED, Status.LIVE_ONLY)
    return Observation(key, claim, status, why=why)


@dataclass(frozen=True)
class StateRow:
    """A row of a "where state lives" table: the state, who holds it, and what this run did to
    it (the disruption) with what happened (an observation with its evidence)."""

    state: str  #: "pending-query table (id, question, server)"
    holder: str  #: who holds it: a `Holder` value or a short phrase
    disruption: str  #: what the run did to lose or move it ("closed the client socket")
    outcome: Observation


@dataclass
class Findings:
    """What a lab printed as findings and its "where state lives" rows, kept as data."""

    observations: list[Observation] = field(default_factory=list)
    where: list[StateRow] = field(default_factory=list)

    def add(self, obs: Observation) -> Observation:
        self.observations.append(obs)
        return obs

    def all(self) -> list[Observation]:
        return [*self.observations, *(r.outcome for r in self.where)]

    def find(self, key: str) -> Observation | None:
        """The finding or row outcome with `key`, None when the run made none."""
        return next((o for o in self.all() if o.key == key), None)

    def not_observed(self) -> list[Observation]:
        return [o for o in self.all() if o.failed]

    def problem(self) -> str:
        """"" when every claim the run set out to show was observed; else what was not."""
        missing = self.not_observed()
        if not missing:
            return ""
        return "not observed: " + "; ".join(o.key for o in missing)


def packet_list(numbers: Sequence[int]) -> str:
    return ", ".join(f"#{n}" for n in numbers)


def where_rows(rows: Sequence[StateRow]) -> list[tuple[str, str, str, str, str]]:
    """The cells of a "where state lives" table: state, held by, tried, what happened, evidence."""
    out = []
    for r in rows:
        o = r.outcome
        if o.status is Status.OBSERVED:
            happened, evidence = o.seen or o.claim, o.evidence_text()
        elif o.status is Status.NOT_OBSERVED:
            happened, evidence = f"NOT OBSERVED: {o.why}", o.evidence_text() or "-"
        else:
            happened = f"({o.status.value}) explanation: {o.claim}"
            evidence = o.why or "-"
        disruption = r.disruption if o.status in (Status.OBSERVED, Status.NOT_OBSERVED) \
            else f"({o.status.value})"
        out.append((r.state, r.holder, disruption, happened, evidence))
    return out
