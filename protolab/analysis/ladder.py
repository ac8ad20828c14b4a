"""The capture as a ladder (sequence) diagram, as data: lifelines, arrows, notes, marks.

Where state lives: in the annotated rows (protolab.analysis.annotate); this module only places
them. Every arrow is one packet of the capture (its number is Wireshark's frame number), every
note is the row's own fact rendered (`Row.where()`), every lifeline is an endpoint the capture
saw: a socket (`host:port`, the default) or a host (`By.HOST`). The three renderings (terminal,
Mermaid, HTML) read this model and nothing else, so they draw the same diagram.

Marks are facts too, each found in the rows, never in a demo's memory: an answer that ends a
pending query out of the order the queries were sent, a packet a receiver drops because nobody
holds the state it needs, an ICMP error (drawn from the host that had no socket, back to the
sender of the datagram it quotes).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from protolab.analysis.facts import WINDOW, Action, Holder, Kind, Row
from protolab.analysis.inspect_options import By

#: How many recent rows' ends a Survey keeps to draw an ICMP error: the datagram it quotes left
#: the annotator's window at most WINDOW rows before it.
RECENT = 4 * WINDOW


class Mark(Enum):
    """What an arrow shows beyond its note, found in the rows."""

    OUT_OF_ORDER = "out of order"  #: answers a query before an earlier query's answer came
    DROPPED = "dropped"  #: the receiver drops it: no state it holds fits this packet
    ICMP_ERROR = "ICMP error"  #: the kernel's answer that no socket is bound at the target
    RETRANSMIT = "retransmit"  #: the same request again: a timer in the sender's app memory
    RST = "reset"  #: a TCP reset: the sender's kernel holds no connection for it


#: Kinds whose packet the receiver drops, because the state it needs is not held (or not its).
DROPPED_KINDS = frozenset({
    Kind.DNS_UNKNOWN_ID, Kind.DNS_WRONG_SOURCE, Kind.DNS_QUESTION_MISMATCH,
    Kind.DNS_ALREADY_ANSWERED, Kind.DNS_TO_CLOSED_SOCKET, Kind.UDP_TO_CLOSED_PORT,
    Kind.DNS_MALFORMED, Kind.TCP_OUT_OF_WINDOW,
})
#: Kinds that are marked by what they are.
KIND_MARKS: dict[Kind, Mark] = {
    Kind.ICMP_PORT_UNREACHABLE: Mark.ICMP_ERROR,
    Kind.DNS_RETRANSMIT: Mark.RETRANSMIT,
    Kind.TCP_RST: Mark.RST,
    Kind.TCP_RST_NO_CONNECTION: Mark.RST,
}


@dataclass(frozen=True)
class Lifeline:
    key: str  #: "127.0.0.1:5353" (By.SOCKET) or "127.0.0.1" (By.HOST)
    label: str  #: what the column is headed with
    first: int  #: the number of the first packet that names it


@dataclass(frozen=True)
class Arrow:
    number: int  #: the packet's number in the capture (Wireshark's frame number)
    time: float  #: seconds since the capture's first packet
    src: int  #: index into `Ladder.lifelines`
    dst: int  #: index into `Ladder.lifelines`
    proto: str
    summary: str
    note: str  #: the row's "where state lives" sentence, with its action
    action: Action
    holders: tuple[Holder, ...]
    kind: Kind
    flow: str
    flow_number: int | None = None
    refs: tuple[int, ...] = ()  #: packets the note names
    marks: tuple[Mark, ...] = ()
    fields: dict = field(default_factory=dict, compare=False)

    @property
    def holder(self) -> Holder:
        """The holder the arrow is coloured by: the first the row names (nobody if none)."""
        return self.holders[0] if self.holders else Holder.NOBODY

    @property
    def where(self) -> str:
        """The note as the pictures draw it: who holds the state, then the row's sentence."""
        held = ", ".join(h.value for h in self.holders)
        return f"[{held}] {self.note}" if held else self.note

    @property
    def label(self) -> str:
        """The summary with the arrow's marks: `query 0x1234 a.lab. A [out of order]`."""
        return " ".join([self.summary, *(f"[{m.value}]" for m in self.marks)])


@dataclass
class Ladder:
    by: By
    lifelines: list[Lifeline]
    arrows: list[Arrow]

    def as_dict(self) -> dict:
        """Plain data (JSON-ready) for the HTML page's script."""
        return {
            "by": self.by.value,
            "lifelines": [{"key": ln.key, "label": ln.label} for ln in self.lifelines],
            "holders": [h.value for h in Holder],
            "arrows": [_arrow_dict(a) for a in self.arrows],
        }


def _arrow_dict(a: Arrow) -> dict:
    return {"n": a.number, "t": round(a.time, 6), "src": a.src, "dst": a.dst, "proto": a.proto,
            "summary": a.summary, "note": a.note, "action": a.action.value,
            "holders": [h.value for h in a.holders], "kind": a.kind.value, "flow": a.flow,
            "flow_number": a.flow_number, "refs": list(a.refs),
            "marks": [m.value for m in a.marks],
            "fields": {k: _plain(v) for k, v in a.fields.items()}}


def _plain(value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def endpoint(address: str, by: By) -> str:
    """The lifeline key of `address` ("host:port", "[v6]:port" or a bare host)."""
    if by is By.HOST and address.rsplit(":", 1)[-1].isdigit() and _has_port(address):
        return address.rsplit(":", 1)[0].strip("[]")
    return address


def _has_port(address: str) -> bool:
    return address.count(":") == 1 or address.startswith("[")


def build(rows: Iterable[Row], by: By = By.SOCKET) -> Ladder:
    """The ladder of `rows`, in capture order: lifelines in order of first appearance."""
    rows = list(rows)
    survey = Survey(by)
    for r in rows:
        survey.see(r)
    return Ladder(by, survey.lifelines, [survey.arrow(r) for r in rows])


class Survey:
    """What a first pass over a capture's rows learns, so that a second pass can draw its
    arrows one at a time without keeping the rows (`build` does both passes over a list).

    `see` every row in capture order, `selected` or not: an answer's out-of-order mark depends
    on the answers after it, and an ICMP error's ends on the datagram it quotes, which a filter
    may have left out. Only the selected rows name lifelines. Then `arrow` each selected row.
    Memory: one entry per endpoint drawn, per DNS answer matched and per ICMP error.
    """

    def __init__(self, by: By = By.SOCKET) -> None:
        self.by = by
        self.lifelines: list[Lifeline] = []
        self.selected = 0  #: rows seen with `selected`
        self.last_number = 0  #: the largest packet number selected
        self.last_time = 0.0  #: the latest time selected
        self._keys: dict[str, int] = {}
        self._recent: OrderedDict[int, tuple[str, str]] = OrderedDict()
        self._icmp_ends: dict[int, tuple[str, str]] = {}
        self._answers: dict[str, list[tuple[int, int]]] = {}
        self._out_of_order: frozenset[int] | None = None

    def see(self, r: Row, selected: bool = True) -> None:
        self._recent[r.number] = (r.src, r.dst)
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)
        if r.fact.kind is Kind.ICMP_PORT_UNREACHABLE and r.fact.refs:
            quoted = self._recent.get(r.fact.refs[0])
            if quoted is not None:  # from the unbound socket back to the datagram's sender
                self._icmp_ends[r.number] = (quoted[1], quoted[0])
        if r.fact.kind is Kind.DNS_MATCHED and r.fact.refs:
            self._answers.setdefault(r.dst, []).append((r.number, r.fact.refs[0]))
        if selected:
            self.selected += 1
            self.last_number = max(self.last_number, r.number)
            self.last_time = max(self.last_time, r.time)
            for end in self.ends(r):
                self._index(endpoint(end, self.by), r.number)

    def ends(self, r: Row) -> tuple[str, str]:
        """An ICMP error quoting a datagram is drawn from that datagram's target socket back to
        its sender: the kernel answers for the port that had no socket (RFC 1122 section
        3.2.2.1)."""
        return self._icmp_ends.get(r.number, (r.src, r.dst))

    def arrow(self, r: Row) -> Arrow:
        """The arrow of a row that was `see`n selected."""
        if self._out_of_order is None:
            self._out_of_order = frozenset(_out_of_order(self._answers))
        src, dst = self.ends(r)
        return Arrow(
            number=r.number, time=r.time, src=self._keys[endpoint(src, self.by)],
            dst=self._keys[endpoint(dst, self.by)], proto=r.proto, summary=r.summary,
            note=r.where(), action=r.action, holders=r.holders, kind=r.fact.kind, flow=r.flow,
            flow_number=r.fields.get("flow_number"), refs=r.fact.refs,
            marks=_marks(r, r.number in self._out_of_order), fields=dict(r.fields))

    def _index(self, key: str, number: int) -> int:
        if key not in self._keys:
            self._keys[key] = len(self.lifelines)
            self.lifelines.append(Lifeline(key, key, number))
        return self._keys[key]


def _marks(r: Row, out_of_order: bool) -> tuple[Mark, ...]:
    marks = []
    if out_of_order:
        marks.append(Mark.OUT_OF_ORDER)
    if r.fact.kind in DROPPED_KINDS or any(k in DROPPED_KINDS for k in r.fact.also):
        marks.append(Mark.DROPPED)
    if r.fact.kind in KIND_MARKS:
        marks.append(KIND_MARKS[r.fact.kind])
    return tuple(marks)


def _out_of_order(answers: dict[str, list[tuple[int, int]]]) -> list[int]:
    """Answers that end a pending query (DNS_MATCHED) before an answer to a query sent earlier
    on the same socket: they overtook it. `answers`: per client socket, (answer, its query) in
    capture order. A query never answered in the capture is overtaken by nobody (the client may
    have given it up; the capture cannot say)."""
    found = []
    for matched in answers.values():
        earliest_later = None  # the earliest query answered after this answer
        for number, query in reversed(matched):
            if earliest_later is not None and earliest_later < query:
                found.append(number)
            earliest_later = query if earliest_later is None else min(earliest_later, query)
    return sorted(found)
