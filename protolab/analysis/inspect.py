"""`protolab inspect`: annotate any capture, streaming, with flows and state timelines.

Where state lives: in the annotator (protolab.analysis.annotate), which rebuilds from the packets
what each endpoint must be holding; this module only selects, aggregates and prints. Memory stays
flat: rows are printed as they leave the annotator's small window, and `--flows` keeps one summary
per conversation, not the packets.

Filter expressions: `tcp`, `udp`, `dns`, `quic`, `icmp`, `http`, `host ADDR`, `port N`, `flow N`,
combined with `and`, `or`, `not` and parentheses, e.g. `dns and not port 53`.

The table fits the terminal: from BESIDE_FROM (160) columns the note is a last column beside the
row, below that it goes on lines of its own under the row; not on a terminal the width is always
PIPED_WIDTH (120); `--wide` prints one line per packet, nothing wrapped.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from protolab import __version__
from protolab.analysis.annotate import DNS_PORTS, Action, Annotator, Kind, Row
from protolab.protocols.tcp import Flow as TcpFlow
from protolab.wire.packets import decode
from protolab.wire.pcap import PcapError, read_pcap

Out = Callable[[str], None]


class FilterError(ValueError):
    """A filter expression that does not parse: the message is one line for the user."""


class FileError(ValueError):
    """A file named on the command line (not the capture) that cannot be read or written."""


# -- filters --------------------------------------------------------------------------------------

Pred = Callable[[Row], bool]
PROTOCOLS = {"tcp", "udp", "dns", "quic", "icmp", "http"}
#: Parentheses nest at most this deep; deeper is refused in one line (not a RecursionError).
MAX_NESTING = 64


def compile_filter(expr: str) -> Pred:
    """Compile a filter expression to a predicate on rows. Chains of `and`/`or` become one flat
    test and runs of `not` cancel in pairs, so neither a long expression nor 2,000 `not`s can
    recurse; only parentheses nest, at most MAX_NESTING deep."""
    tokens = expr.replace("(", " ( ").replace(")", " ) ").split()
    if not tokens:
        raise FilterError("empty filter")
    pos = 0
    depth = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise FilterError(f"filter ends too soon: {shorten(expr)!r}")
        pos += 1
        return tokens[pos - 1]

    def or_expr() -> Pred:
        preds = [and_expr()]
        while peek() == "or":
            take()
            preds.append(and_expr())
        return _any(preds)

    def and_expr() -> Pred:
        preds = [not_expr()]
        while peek() == "and":
            take()
            preds.append(not_expr())
        return _all(preds)

    def not_expr() -> Pred:
        negate = False
        while peek() == "not":
            take()
            negate = not negate
        inner = atom()
        return (lambda r: not inner(r)) if negate else inner

    def atom() -> Pred:
        nonlocal depth
        tok = take().lower()
        if tok == "(":
            depth += 1
            if depth > MAX_NESTING:
                raise FilterError(f"filter nests parentheses deeper than {MAX_NESTING}")
            inner = or_expr()
            if take() != ")":
                raise FilterError(f"missing ')' in {shorten(expr)!r}")
            depth -= 1
            return inner
        return _word(tok, take)

    pred = or_expr()
    if pos != len(tokens):
        raise FilterError(f"unexpected {tokens[pos]!r} in filter {shorten(expr)!r}")
    return pred


def _word(tok: str, take: Callable[[], str]) -> Pred:
    """One test: a protocol, or `host`/`port`/`flow` and the value `take()` gives."""
    if tok in PROTOCOLS:
        return _proto_pred(tok)
    if tok == "host":
        host = take()
        return lambda r: _host(r.src) == host or _host(r.dst) == host
    if tok in ("port", "flow"):
        value = take()
        if not value.isdigit():
            raise FilterError(f"'{tok}' needs a number, not {shorten(value)!r}")
        n = int(value)
        if tok == "port":
            return lambda r: n in (r.fields.get("sport"), r.fields.get("dport"))
        return lambda r: r.fields.get("flow_number") == n
    raise FilterError(f"unknown filter word {shorten(tok)!r} (use tcp, udp, dns, quic, icmp, "
                      f"http, host ADDR, port N, flow N, and, or, not)")


def _any(preds: list[Pred]) -> Pred:
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda r: a(r) or b(r)
    return lambda r: any(p(r) for p in preds)


def _all(preds: list[Pred]) -> Pred:
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda r: a(r) and b(r)
    return lambda r: all(p(r) for p in preds)


def shorten(text: str, limit: int = 60) -> str:
    """Text quoted in an error stays one readable line however long the filter was."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _proto_pred(name: str) -> Pred:
    if name == "http":
        return lambda r: "http" in r.fields
    if name == "udp":
        return lambda r: r.proto in ("UDP", "DNS", "QUIC") and r.fields.get("tcp_seq") is None
    if name == "tcp":
        return lambda r: r.proto == "TCP"
    if name == "icmp":
        return lambda r: r.proto.startswith("ICMP")
    upper = name.upper()
    return lambda r: r.proto == upper or (upper == "DNS" and "dns_id" in r.fields)


def _host(endpoint: str) -> str:
    host = endpoint.rsplit(":", 1)[0] if endpoint.count(":") == 1 or endpoint.startswith("[") \
        else endpoint
    return host.strip("[]")


# -- output ---------------------------------------------------------------------------------------

WIDTHS = (6, 8, 42, 6, 40)  #: #, time, source → destination, proto, summary; then the state
GAP = 2  #: spaces between columns
#: The width when stdout is not a terminal (a file, a pipe, a test): one stable layout, whatever
#: terminal the command was started from.
PIPED_WIDTH = 120
#: From this width on the state is a last column beside the row; below it, the state goes on
#: lines of its own under the row, indented by STATE_INDENT.
BESIDE_FROM = 160
STATE_INDENT = 8
MIN_WIDTH = 60  #: narrower is laid out as if this wide


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each cell of the annotated table goes, for one width."""

    widths: tuple[int, ...]  #: the row's columns: #, time, source → destination, proto, summary
    state: int | None  #: the state's wrap width; None: nothing is wrapped (--wide)
    beside: bool  #: the state as a last column; False: on its own lines under the row


def table_width() -> int:
    """On a terminal, its width (shutil: $COLUMNS first, then the terminal's size). Not on a
    terminal (a file, a pipe, a test), PIPED_WIDTH whatever the environment says, so what a
    script or a test reads never depends on where it was started (pytest-xdist sets COLUMNS)."""
    if sys.stdout is not None and sys.stdout.isatty():
        return shutil.get_terminal_size((PIPED_WIDTH, 24)).columns
    return PIPED_WIDTH


def layout(width: int | None = None, wide: bool = False) -> Layout:
    """The layout for `width` columns (default: table_width()); `wide`: one line per packet."""
    if wide:
        return Layout(WIDTHS, None, beside=True)
    width = max(MIN_WIDTH, table_width() if width is None else width)
    row = sum(WIDTHS) + GAP * (len(WIDTHS) - 1)
    if width >= BESIDE_FROM:
        return Layout(WIDTHS, width - row - GAP, beside=True)
    fixed = WIDTHS[0] + WIDTHS[1] + WIDTHS[3] + GAP * (len(WIDTHS) - 1)
    addr = min(WIDTHS[2], max(18, (width - fixed) // 2))
    return Layout((WIDTHS[0], WIDTHS[1], addr, WIDTHS[3], width - fixed - addr),
                  width - STATE_INDENT, beside=False)


def _wrap(text: str, width: int | None) -> list[str]:
    """Greedy wrap at spaces (textwrap.wrap, without its cost: this runs for every row)."""
    if width is None:
        return [text] if text else []
    lines = []
    while len(text) > width:
        cut = text.rfind(" ", 0, width + 1)
        if cut <= 0:
            cut = width
        lines.append(text[:cut])
        text = text[cut:].lstrip(" ")
    if text:
        lines.append(text)
    return lines


def header(lay: Layout | None = None) -> str:
    lay = lay or layout()
    cols = ("#", "time", "source → destination", "proto", "summary")
    names = "  ".join(c.ljust(w) for c, w in zip(cols, lay.widths, strict=True))
    rules = ["-" * w for w in lay.widths]
    if lay.beside:
        return (names + "  where state lives\n"
                + "  ".join([*rules, "-" * (lay.state or len("where state lives"))]))
    return (names.rstrip() + "\n" + " " * STATE_INDENT + "where state lives (under each packet)\n"
            + "  ".join(rules))


def format_row(row: Row, lay: Layout | None = None) -> str:
    """One row at fixed widths, long cells wrapped onto continuation lines (no look-ahead)."""
    lay = lay or layout()
    w = lay.widths
    wrap = None if lay.state is None else w  # --wide: no cell is wrapped
    cells = [[str(row.number)], [f"{row.time:.3f}"],
             _wrap(f"{row.src} → {row.dst}", wrap and wrap[2]) or [""], [row.proto],
             _wrap(row.summary, wrap and wrap[4]) or [""]]
    state = _wrap(row.where(), lay.state)
    if lay.beside:
        cells.append(state or [""])
    height = max(len(c) for c in cells)
    lines = []
    for i in range(height):
        parts = [(c[i] if i < len(c) else "").ljust(n) for c, n in zip(cells, w, strict=False)]
        if lay.beside:
            parts.append(cells[5][i] if i < len(cells[5]) else "")
        lines.append("  ".join(parts).rstrip())
    if not lay.beside:
        lines.extend(" " * STATE_INDENT + line for line in state)
    return "\n".join(lines)


def row_json(row: Row) -> str:
    """The stable JSON form of a row (documented in the README)."""
    return json.dumps({"number": row.number, "time": round(row.time, 6), "src": row.src,
                       "dst": row.dst, "proto": row.proto, "summary": row.summary,
                       "action": row.action.value, "holders": [h.value for h in row.holders],
                       "state": row.state, "flow": row.fields.get("flow_number"),
                       "fact": row.fact.kind.value, "refs": list(row.fact.refs),
                       "also": [k.value for k in row.fact.also],
                       "fields": {k: v for k, v in row.fields.items() if k != "flow_number"}},
                      ensure_ascii=False)


# -- flows ----------------------------------------------------------------------------------------


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
        self._numbers: dict[str, int] = {}
        self._next = 0
        self.limit = limit

    def number_of(self, row: Row) -> int:
        number = self._numbers.pop(row.flow, None)
        if number is None:
            self._next += 1
            number = self._next
            if len(self._numbers) >= self.limit:
                del self._numbers[next(iter(self._numbers))]
        self._numbers[row.flow] = number
        return number

    def add(self, row: Row) -> None:
        pass

    @property
    def count(self) -> int:
        return self._next


class FlowTable:
    """One summary per conversation, in order of first packet; numbers them for --flow N."""

    def __init__(self) -> None:
        self.flows: dict[str, Flow] = {}
        self._tcp_by_number: dict[int, TcpFlow] = {}

    @property
    def count(self) -> int:
        return len(self.flows)

    def number_of(self, row: Row) -> int:
        flow = self.flows.get(row.flow)
        if flow is None:
            kind, _, rest = row.flow.partition(" ")
            flow = Flow(len(self.flows) + 1, row.flow, kind, f"{row.src} → {row.dst}")
            # "tcp 3" is connection 3; segments whose TCP header was cut by the capture's snap
            # length have no connection: their key is the addresses ("tcp a↔b").
            if kind == "tcp" and rest.isdigit():
                flow.tcp_number = int(rest)
            self.flows[row.flow] = flow
        return flow.number

    def add(self, row: Row) -> None:
        flow = self.flows[row.flow]
        flow.packets += 1
        if row.fact.kind is Kind.NOT_DECODED:
            flow.undecoded += 1
            flow.undecoded_why = flow.undecoded_why or str(row.fact.values.get("error", ""))
        direction = f"{row.src} → {row.dst}"
        flow.bytes_each_way[direction] = flow.bytes_each_way.get(direction, 0) + \
            (row.fields.get("length") or 0)
        path = " ↔ ".join(sorted((row.src, row.dst)))
        if path not in flow.paths:
            flow.paths.append(path)
        dcid = row.fields.get("quic_dcid")
        if dcid and dcid not in flow.cids:
            flow.cids.append(dcid)
        if row.shows(Kind.QUIC_MIGRATION):
            flow.migrations.append(row.number)
        if row.shows(Kind.QUIC_RELAYED):
            flow.relayed.append(row.number)
        if row.shows(Kind.DNS_RELAYED) or row.shows(Kind.DNS_RELAY_ANSWER):
            flow.relayed.append(row.number)
        elif "dns_id" in row.fields:
            qid = row.fields["dns_id"]
            if not row.fields.get("dns_response"):
                flow.queries[qid] = row.time
            elif qid in flow.queries and row.action is Action.ENDS:
                flow.latencies_ms.append((row.time - flow.queries.pop(qid)) * 1000)
            elif qid in flow.queries and row.shows(Kind.DNS_TO_CLOSED_SOCKET):
                del flow.queries[qid]
                flow.late.append(f"{qid:#06x}")
            elif row.action is Action.MISSING:
                flow.unmatched.append(f"{qid:#06x}")

    def describe(self, flow: Flow, annotator: Annotator) -> str:
        if flow.kind == "tcp" and flow.tcp_number is not None:
            if len(self._tcp_by_number) != len(annotator.tcp.flows):  # index once, not per flow
                self._tcp_by_number = {f.number: f for f in annotator.tcp.flows.values()}
            return _describe_tcp(self._tcp_by_number.get(flow.tcp_number))
        if flow.kind == "dns" and flow.relayed and not flow.queries and not flow.latencies_ms:
            return (f"a middlebox's leg: {len(flow.relayed)} relayed queries and answers "
                    f"(#{flow.relayed[0]}…); the clients' entries are in their own flows")
        if flow.kind == "dns":
            answered = len(flow.latencies_ms)
            parts = [f"{answered} answered"]
            if flow.latencies_ms:
                parts[0] += f" (median {statistics.median(flow.latencies_ms):.0f} ms)"
            if flow.queries:
                parts.append(f"{len(flow.queries)} unanswered: "
                             + ", ".join(f"{q:#06x}" for q in list(flow.queries)[:5]))
            if flow.late:
                parts.append("answered after the client closed its socket: "
                             + ", ".join(flow.late[:5]))
            if flow.unmatched:
                parts.append("answers matched to no query (forged?): "
                             + ", ".join(flow.unmatched[:5]))
            return "; ".join(parts)
        if flow.kind == "quic":
            return _describe_quic(flow)
        sizes = ", ".join(f"{d}: {b} B" for d, b in flow.bytes_each_way.items())
        if flow.undecoded:
            return (f"{flow.undecoded} of {flow.packets} packets not decoded "
                    f"({flow.undecoded_why}): no state rebuilt from them; {sizes}")
        return sizes


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
    moves = tcp.transitions
    handshake = any(t.new.value == "SYN_SENT" for t in moves)
    fins = [t for t in moves if t.event.name == "SEND_FIN"]
    rst = any(t.event.name in ("SEND_RST", "RECV_RST") for t in moves)
    parts = ["handshake seen" if handshake else "the SYN/ACK without its SYN"]
    if fins:
        parts.append(f"{fins[0].role.value} closed first")
    if rst:
        parts.append("reset")
    tw = [ep for ep in (tcp.client, tcp.server) if ep.state.value == "TIME_WAIT"]
    if tw:
        parts.append(f"{tw[0].role.value} ends in TIME_WAIT")
    parts.append(f"final: client {tcp.client.state.value}, server {tcp.server.state.value}")
    return "; ".join(parts)


# -- the command ----------------------------------------------------------------------------------


@dataclass
class Options:
    filter: str | None = None
    limit: int | None = None
    json: bool = False
    flows: bool = False
    flow: int | None = None
    detail: int | None = None
    dns_ports: frozenset[int] = DNS_PORTS
    write_annotated: str | None = None  #: pcapng to write, each packet's note as its comment
    secrets: str | None = None  #: a TLS key log to embed in that pcapng
    wide: bool = False  #: one line per packet, nothing wrapped
    width: int | None = None  #: the table's width (default: see `table_width`)


@dataclass
class Tally:
    """What the packet view read, selected and printed (for the lines said after the table)."""

    read: int = 0  #: packets read from the file
    matched: int = 0  #: of those, selected by --filter / --flow
    shown: int = 0  #: of those, printed (--limit cuts the rest)


def pairs(path: str | os.PathLike[str], annotator: Annotator) -> Iterator[tuple[Row, object]]:
    """Annotated packets; on a bad file, every readable row first, then the PcapError."""
    error = None
    try:
        for rec in read_pcap(path):
            yield from annotator.feed_pairs(decode(rec.data, rec.linktype, rec.time,
                                                   rec.orig_len))
    except PcapError as exc:
        error = exc
    yield from annotator.finish_pairs()
    if error is not None:
        raise error


def run(path: str | os.PathLike[str], opts: Options, out: Out,
        tally: Tally | None = None) -> Tally:
    """Print what was asked for and return what the packet view read, matched and showed (also
    kept in `tally` as it goes, for a caller that wants the counts when this raises). Raises
    PcapError (after printing what could be read), FilterError or FileError."""
    tally = Tally() if tally is None else tally
    if opts.detail is not None:
        out(detail(path, opts.detail))
        return tally
    if opts.write_annotated:
        _write_annotated(path, opts, out)
        return tally
    pred = compile_filter(opts.filter) if opts.filter else None
    lay = None if opts.json else layout(opts.width, opts.wide)
    annotator = Annotator(opts.dns_ports, max_flows=0 if opts.flows else MAX_TRACKED)
    table: FlowTable | FlowNumbers = FlowTable() if opts.flows else FlowNumbers()
    try:
        for row, _ in pairs(path, annotator):
            tally.read += 1
            number = table.number_of(row)
            row.fields["flow_number"] = number
            table.add(row)
            if opts.flows or (opts.flow is not None and number != opts.flow):
                continue
            if pred is not None and not pred(row):
                continue
            tally.matched += 1
            if opts.limit is not None and tally.shown >= opts.limit:
                continue
            if lay is not None and not tally.shown:
                out(header(lay))
            out(row_json(row) if lay is None else format_row(row, lay))
            tally.shown += 1
    finally:
        if opts.flows:
            _print_flows(table, annotator, opts, out)
    if not opts.flows and opts.flow is not None and opts.flow > table.count:
        raise FilterError(f"there is no flow {opts.flow}: this capture has "
                          f"{table.count} (see --flows)")
    return tally


def _write_annotated(path: str | os.PathLike[str], opts: Options, out: Out) -> None:
    secrets = None
    if opts.secrets:
        try:
            with open(opts.secrets, "rb") as f:
                secrets = f.read()
        except OSError as exc:
            raise FileError(f"cannot read the key log {opts.secrets}: "
                            f"{exc.strerror or exc}") from None
    try:
        n = write_annotated(path, opts.write_annotated, secrets, opts.dns_ports)
    except OSError as exc:  # the capture's own errors are PcapError; this is the target
        raise FileError(f"cannot write {opts.write_annotated}: {exc.strerror or exc}") from None
    out(f"wrote {n} packets with their notes as comments to {opts.write_annotated}"
        + (" (with the TLS secrets embedded)" if secrets else "")
        + f"; see them with: tshark -r {opts.write_annotated} -T fields -e frame.comment")


def _print_flows(table: FlowTable, annotator: Annotator, opts: Options, out: Out) -> None:
    flows = list(table.flows.values())
    if opts.json:
        for f in flows:
            out(json.dumps({"flow": f.number, "kind": f.kind, "key": f.key,
                            "packets": f.packets, "paths": f.paths, "cids": f.cids,
                            "state": table.describe(f, annotator)}, ensure_ascii=False))
        return
    from tabulate import tabulate

    described = [(f.number, f.kind, f.first, f.packets, table.describe(f, annotator))
                 for f in flows]
    width = _flows_state_width(described, opts)
    rows = [(*cells, "\n".join(_wrap(state, width))) for *cells, state in described]
    out(tabulate(rows, headers=FLOW_HEADERS))
    out(f"{len(flows)} conversations; `protolab inspect FILE --flow N` for one as a timeline")


FLOW_HEADERS = ("flow", "kind", "first packet", "packets",
                "state (reconstructed from the packets)")


def _flows_state_width(rows: list[tuple], opts: Options) -> int | None:
    """What is left of the table's width for the state column (at least 30); None: --wide."""
    if opts.wide:
        return None
    used = sum(max([len(h), *(len(str(r[i])) for r in rows)]) + GAP
               for i, h in enumerate(FLOW_HEADERS[:-1]))
    return max(30, max(MIN_WIDTH, opts.width or table_width()) - used)


def write_annotated(path: str | os.PathLike[str], target: str | os.PathLike[str],
                    secrets: bytes | None = None,
                    dns_ports: frozenset[int] = DNS_PORTS, made_by: str = "") -> int:
    """Copy a capture to pcapng with each packet's "where state lives" note as its comment.

    The section comment names the capture, what made it (`made_by`, e.g. a demo) and how the
    notes were made."""
    from collections import deque

    from protolab.wire.pcap import write_pcapng

    annotator = Annotator(dns_ports)
    pending: deque = deque()
    error: PcapError | None = None
    # A file that cannot be opened at all must not replace the target with an empty pcapng.
    next(iter(read_pcap(path)), None)

    def commented() -> Iterator[tuple[object, str]]:
        nonlocal error
        try:
            for rec in read_pcap(path):
                pending.append(rec)
                for row, _ in annotator.feed_pairs(decode(rec.data, rec.linktype, rec.time,
                                                          rec.orig_len)):
                    yield pending.popleft(), row.where()
        except PcapError as exc:
            error = exc
        for row, _ in annotator.finish_pairs():
            yield pending.popleft(), row.where()

    name = os.path.basename(os.fspath(path))
    origin = f"captured by {made_by} on loopback" if made_by else "a capture"
    count = write_pcapng(target, commented(),
                         f"protolab {__version__}: {name}, {origin}, annotated by protolab "
                         f"(as `protolab inspect --write-annotated`); each packet's comment says "
                         f"where the state for it lives",
                         secrets=secrets)
    if error is not None:
        raise error
    return count


def detail(path: str | os.PathLike[str], number: int) -> str:
    """scapy's full dissection of packet `number` (1-based)."""
    for n, rec in enumerate(read_pcap(path), 1):
        if n == number:
            import scapy.layers.all  # noqa: F401 - registers every layer for dissection
            from scapy.config import conf

            cls = conf.l2types.num2layer.get(rec.linktype, conf.raw_layer)
            try:
                return cls(rec.data).show(dump=True)
            except Exception as exc:  # noqa: BLE001 - any of scapy's dissectors, on any bytes
                raise PcapError(f"{path}: scapy cannot dissect packet {number} (link type "
                                f"{rec.linktype}, {len(rec.data)} bytes): "
                                f"{_qualified(exc)}: {shorten(str(exc), 100)}; tshark may: "
                                f"tshark -r {path} -V -Y frame.number=={number}") from None
    raise FilterError(f"there is no packet {number} in this capture")


def _qualified(exc: BaseException) -> str:
    """`struct.error`, not a bare `error`."""
    module = type(exc).__module__
    return type(exc).__name__ if module == "builtins" else f"{module}.{type(exc).__name__}"


def format_rows(rows: Iterable[Row], lay: Layout | None = None) -> str:
    """The annotation table as the demos print it (same layout as `inspect`): fitted to the
    terminal, or PIPED_WIDTH when not printing to one (see `layout`)."""
    lay = lay or layout()
    return "\n".join([header(lay), *(format_row(r, lay) for r in rows)])


__all__ = ["FileError", "FilterError", "Layout", "Options", "PcapError", "Tally",
           "compile_filter", "format_row", "format_rows", "layout", "run"]
