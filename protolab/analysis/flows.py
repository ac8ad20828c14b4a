"""Conversations in a capture: numbered in order of first packet (`--flow N`), and summarised
one row each (`--flows`) from the state the annotator rebuilt: TCP's handshake and who closed
first, DNS answers matched with latency, QUIC connections across paths.

Memory stays flat: `FlowNumbers` remembers at most MAX_TRACKED conversations at once, and
`FlowTable` keeps one summary per conversation, not the packets.
"""

from __future__ import annotations

import json
import statistics
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from protolab.analysis.annotate import Annotator
from protolab.analysis.facts import Action, Kind, Row
from protolab.analysis.table import GAP, MIN_WIDTH, table_width, wrap
from protolab.protocols.tcp import Flow as TcpFlow
from protolab.protocols.tcp import Role, Seg, TcpState

Out = Callable[[str], None]

@dataclass
class Flow:
    number: int
    key: str
    kind: str
    first: str  #: "src → dst" of its first packet
    packets: int = 0
    bytes_each_way: dict[str, int] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)  #: distinct 4-tuples (QUIC migration)
    cids: list[str] = field(default_factory=list)
    queries: dict[int, float] = field(default_factory=dict)  #: DNS id → time, unanswered
    latencies_ms: list[float] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  #: DNS answers that matched nothing
    late: list[str] = field(default_factory=list)  #: matched, but the client had gone
    tcp_number: int | None = None
    migrations: list[int] = field(default_factory=list)  #: QUIC: packets found by CID on a new path
    relayed: list[int] = field(default_factory=list)  #: the same datagrams on another path
    undecoded: int = 0  #: packets whose headers could not be read (e.g. cut by the snap length)
    undecoded_why: str = ""  #: why the first of them was not decoded


#: Conversations remembered at once in the packet views: memory stays flat however long the file.
MAX_TRACKED = 50_000


class FlowNumbers:
    """Numbers conversations in order of first packet, remembering at most `limit` of them (the
    least recently seen is forgotten; if it comes back it gets a new number)."""

    def __init__(self, limit: int = MAX_TRACKED) -> None:
        # least recently seen first (an OrderedDict: a plain dict's first key, after many
        # deletions at its front, is found by a scan over their dead slots)
        self._numbers: OrderedDict[str, int] = OrderedDict()
        self._next = 0
        self.limit = limit
        self._last: str | None = None  #: the last row's conversation (never forgotten: the
        self._last_number = 0  #: most recently seen is the last to go), and its number

    def number_of(self, row: Row) -> int:
        flow = row.flow
        if flow == self._last:  # (most rows: the same conversation as the row before)
            return self._last_number
        numbers = self._numbers
        number = numbers.get(flow)
        if number is not None:
            numbers.move_to_end(flow)  # the most recently seen last: evicted last
        else:
            self._next += 1
            number = numbers[flow] = self._next
            if len(numbers) > self.limit:
                numbers.popitem(last=False)
        self._last, self._last_number = flow, number
        return number

    @property
    def count(self) -> int:
        return self._next


#: the kinds `FlowTable.add` counts a row for (as its fact's kind, or one of its `also`)
_MARKING = frozenset({Kind.QUIC_MIGRATION, Kind.QUIC_RELAYED, Kind.DNS_RELAYED,
                      Kind.DNS_RELAY_ANSWER})


class FlowTable:
    """One summary per conversation, in order of first packet; numbers them for --flow N."""

    def __init__(self) -> None:
        self.flows: dict[str, Flow] = {}
        self._tcp_by_number: dict[int, TcpFlow] = {}

    @property
    def count(self) -> int:
        return len(self.flows)

    def number_of(self, row: Row) -> int:
        return (self.flows.get(row.flow) or self._new(row)).number

    def _new(self, row: Row) -> Flow:
        kind, _, rest = row.flow.partition(" ")
        flow = Flow(len(self.flows) + 1, row.flow, kind, f"{row.src} → {row.dst}")
        # "tcp 3" is connection 3; segments whose TCP header was cut by the capture's snap
        # length have no connection: their key is the addresses ("tcp a↔b").
        if kind == "tcp" and rest.isdigit():
            flow.tcp_number = int(rest)
        self.flows[row.flow] = flow
        return flow

    def add(self, row: Row) -> None:
        self._count(self.flows[row.flow], row)

    def take(self, row: Row) -> int:
        """`number_of` and `add` in one look-up (--flows takes every row so): its number."""
        flow = self.flows.get(row.flow) or self._new(row)
        self._count(flow, row)
        return flow.number

    def _count(self, flow: Flow, row: Row) -> None:
        flow.packets += 1
        fact, fields = row.fact, row.fields
        if fact.kind is Kind.NOT_DECODED:
            flow.undecoded += 1
            flow.undecoded_why = flow.undecoded_why or str(fact.values.get("error", ""))
        src, dst = row.src, row.dst
        direction = f"{src} → {dst}"
        sent = flow.bytes_each_way.get(direction)
        if sent is None:  # a new direction, maybe a new path (an old direction: an old path)
            sent = 0
            path = f"{src} ↔ {dst}" if src <= dst else f"{dst} ↔ {src}"  # the two, sorted
            if path not in flow.paths:
                flow.paths.append(path)
        flow.bytes_each_way[direction] = sent + (fields.get("length") or 0)
        dcid = fields.get("quic_dcid")
        if dcid and dcid not in flow.cids:
            flow.cids.append(dcid)
        relayed_dns = False
        if fact.also or fact.kind in _MARKING:  # no other fact shows any of these
            if row.shows(Kind.QUIC_MIGRATION):
                flow.migrations.append(row.number)
            if row.shows(Kind.QUIC_RELAYED):
                flow.relayed.append(row.number)
            relayed_dns = row.shows(Kind.DNS_RELAYED) or row.shows(Kind.DNS_RELAY_ANSWER)
        if relayed_dns:
            flow.relayed.append(row.number)
        elif "dns_id" in fields:
            qid = fields["dns_id"]
            if not fields.get("dns_response"):
                flow.queries[qid] = row.time
            elif qid in flow.queries and row.action is Action.ENDS:
                flow.latencies_ms.append((row.time - flow.queries.pop(qid)) * 1000)
            elif qid in flow.queries and row.shows(Kind.DNS_TO_CLOSED_SOCKET):
                del flow.queries[qid]
                flow.late.append(f"{qid:#06x}")
            elif row.action is Action.MISSING:
                flow.unmatched.append(f"{qid:#06x}")

    def describe(self, flow: Flow, annotator: Annotator) -> str:
        text = self._describe(flow, annotator)
        if flow.kind in ("tcp", "udp") and len(flow.paths) > 1:  # seen on both sides of a NAT
            return (f"one flow across a translation, {len(flow.paths)} tuples: "
                    + "; ".join(flow.paths) + (f"; {text}" if text else ""))
        return text

    def _describe(self, flow: Flow, annotator: Annotator) -> str:
        if flow.kind == "tcp" and flow.tcp_number is not None:
            if len(self._tcp_by_number) != len(annotator.tcp.flows):  # index once, not per flow
                self._tcp_by_number = {f.number: f for f in annotator.tcp.flows.values()}
            return _describe_tcp(self._tcp_by_number.get(flow.tcp_number))
        if flow.kind == "dns" and flow.relayed and not flow.queries and not flow.latencies_ms:
            return (f"a middlebox's leg: {len(flow.relayed)} relayed queries and answers "
                    f"(#{flow.relayed[0]}…); the clients' entries are in their own flows")
        if flow.kind == "dns":
            return _describe_dns(flow)
        if flow.kind == "quic":
            return _describe_quic(flow)
        sizes = ", ".join(f"{d}: {b} B" for d, b in flow.bytes_each_way.items())
        if flow.undecoded:
            return (f"{flow.undecoded} of {flow.packets} packets not decoded "
                    f"({flow.undecoded_why}): no state rebuilt from them; {sizes}")
        return sizes


def _describe_dns(flow: Flow) -> str:
    parts = [f"{len(flow.latencies_ms)} answered"]
    if flow.latencies_ms:
        parts[0] += f" (median {statistics.median(flow.latencies_ms):.0f} ms)"
    if flow.queries:
        parts.append(f"{len(flow.queries)} unanswered: "
                     + ", ".join(f"{q:#06x}" for q in list(flow.queries)[:5]))
    if flow.late:
        parts.append("answered after the client closed its socket: " + ", ".join(flow.late[:5]))
    if flow.unmatched:
        parts.append("answers matched to no query (forged?): " + ", ".join(flow.unmatched[:5]))
    return "; ".join(parts)


def _describe_quic(flow: Flow) -> str:
    notes = []
    if flow.migrations:
        notes.append(f"migrated: one connection found by CID on a new path (#{flow.migrations[0]})")
    if flow.relayed:
        notes.append(f"relayed: the same datagrams forwarded on a second path by a middlebox "
                     f"(#{flow.relayed[0]}), not a migration")
    extra = f" ({'; '.join(notes)})" if notes else ""
    return (f"{len(flow.paths)} path(s): " + "; ".join(flow.paths) + extra
            + f"; DCIDs seen: {len(flow.cids)}")


def _describe_tcp(tcp: TcpFlow | None) -> str:
    if tcp is None:
        return ""
    if not tcp.handshake_seen:
        return ("joined mid-stream (no handshake in this capture): states unknown, client and "
                "server guessed from the ports")
    moves = tcp.transitions  # (members compared by identity: Enum's .value is a Python call)
    handshake = any(t.new is TcpState.SYN_SENT for t in moves)
    first_fin = next((t for t in moves if t.event is Seg.SEND_FIN), None)
    rst = any(t.event in _RESETS for t in moves)
    parts = ["handshake seen" if handshake else "the SYN/ACK without its SYN"]
    if first_fin is not None:
        parts.append(f"{_TEXT[first_fin.role]} closed first")
    if rst:
        parts.append("reset")
    tw = [ep for ep in (tcp.client, tcp.server) if ep.state is TcpState.TIME_WAIT]
    if tw:
        parts.append(f"{_TEXT[tw[0].role]} ends in TIME_WAIT")
    parts.append(f"final: client {_TEXT[tcp.client.state]}, server {_TEXT[tcp.server.state]}")
    return "; ".join(parts)


_RESETS = frozenset({Seg.SEND_RST, Seg.RECV_RST})
#: each role's and state's text (Enum's .value is a Python call, 5 a connection)
_TEXT: dict[Enum, str] = {member: member.value for enum in (Role, TcpState) for member in enum}


def print_flows(table: FlowTable, annotator: Annotator, out: Out, *, as_json: bool = False,
                width: int | None = None, wide: bool = False) -> None:
    """`--flows`: one row per conversation (or one JSON object each), the state column wrapped
    to what is left of `width` (default: the terminal's, see `table_width`); `wide`: unwrapped."""
    flows = list(table.flows.values())
    if as_json:
        for f in flows:
            out(json.dumps({"flow": f.number, "kind": f.kind, "key": f.key,
                            "packets": f.packets, "paths": f.paths, "cids": f.cids,
                            "state": table.describe(f, annotator)}, ensure_ascii=False))
        return
    described = [(f.number, f.kind, f.first, f.packets, table.describe(f, annotator))
                 for f in flows]
    state_width = None if wide else _flows_state_width(described, width)
    out(flows_table([(str(number), kind, first, str(packets), wrap(state, state_width))
                     for number, kind, first, packets, state in described]))
    out(f"{len(flows)} conversations; `protolab inspect FILE --flow N` for one as a timeline")


FLOW_HEADERS = ("flow", "kind", "first packet", "packets",
                "state (reconstructed from the packets)")
#: numbers (the flow's, its packets') right, text left: what tabulate finds for these columns
FLOW_ALIGN = ("right", "left", "left", "right", "left")


def flows_table(rows: list[tuple[str, str, str, str, list[str]]]) -> str:
    """The table tabulate makes of `rows` (the state: its wrapped lines) with FLOW_HEADERS and
    FLOW_ALIGN, in its "simple" format, written out (fi_flows.c's table() mirrors this): each
    column as wide as its widest line, and its header and 2; numbers right, text left; two
    spaces between; each line right-stripped; a state's further lines on lines of their own.
    For cells it would measure, strip or split otherwise (a character not printable, a space
    at an end), or no rows, tabulate itself (the columns' types are known: it is told their
    alignment rather than made to guess each cell's type)."""
    if not rows or not all(map(_plain_cells, rows)):
        from tabulate import tabulate

        return tabulate([(*cells, "\n".join(state)) for *cells, state in rows],
                        headers=FLOW_HEADERS, disable_numparse=True, colalign=FLOW_ALIGN)
    widths = [max([len(FLOW_HEADERS[i]) + 2, *(len(row[i]) for row in rows)]) for i in range(4)]
    widths.append(max([len(FLOW_HEADERS[4]) + 2, *(len(ln) for row in rows for ln in row[4])]))
    line = "%{}s  %-{}s  %-{}s  %{}s  %s".format(*widths[:4])  # FLOW_ALIGN
    lines = [(line % FLOW_HEADERS).rstrip(), "  ".join("-" * w for w in widths)]
    for *cells, state in rows:
        lines.append((line % (*cells, state[0] if state else "")).rstrip())
        lines.extend((line % ("", "", "", "", more)).rstrip() for more in state[1:])
    return "\n".join(lines)


def _plain_cells(row: tuple[str, str, str, str, list[str]]) -> bool:
    """Cells tabulate takes as they are: printable (no line break, tab or escape code), no
    space at either end of a cell (of the state: of its lines joined)."""
    *cells, state = row
    text = "\n".join(state)  # (strings each printable: printable joined, and only then)
    return "".join([*cells, *state]).isprintable() and text == text.strip() \
        and all([c == c.strip() for c in cells])


def _flows_state_width(rows: list[tuple], width: int | None) -> int:
    """What is left of the table's width for the state column (at least 30)."""
    used = sum(max([len(h), *(len(str(r[i])) for r in rows)]) + GAP
               for i, h in enumerate(FLOW_HEADERS[:-1]))
    return max(30, max(MIN_WIDTH, width or table_width()) - used)
