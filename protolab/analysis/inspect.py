"""`protolab inspect`: annotate any capture, streaming, with flows and state timelines.

Where state lives: in the annotator (protolab.analysis.annotate), which rebuilds from the packets
what each endpoint must be holding; this module only runs the command: it selects (the filter
language, `protolab.analysis.filter`), aggregates (`protolab.analysis.flows`) and prints
(`protolab.analysis.table`), or writes the annotated pcapng (`protolab.analysis.export`). Memory
stays flat: rows are printed as they leave the annotator's small window, and `--flows` keeps one
summary per conversation, not the packets.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from protolab.analysis.annotate import Annotator
from protolab.analysis.export import export_annotated
from protolab.analysis.facts import Row
from protolab.analysis.filter import FilterError, Pred, compile_filter, shorten
from protolab.analysis.flows import MAX_TRACKED, FlowNumbers, FlowTable, print_flows
from protolab.analysis.inspect_options import Options, Tally
from protolab.analysis.table import (
    Layout,
    format_row,
    header,
    layout,
    row_formatter,
    row_json,
    row_json_numbered,
)
from protolab.wire.packets import read_decoded
from protolab.wire.pcap import PcapError, read_pcap

Out = Callable[[str], None]


def pairs(path: str | os.PathLike[str], annotator: Annotator) -> Iterator[tuple[Row, object]]:
    """Annotated packets; on a bad file, every readable row first, then the PcapError."""
    for batch in batches(path, annotator):
        yield from batch


#: annotated packets handed on at once by `batches` (measured: 32 to 256 alike, 1024 slower —
#: rows kept longer cost the cyclic collector more)
BATCH = 32


def batches(path: str | os.PathLike[str],
            annotator: Annotator) -> Iterator[list[tuple[Row, object]]]:
    """`pairs`, BATCH at a time (one generator step per row less, for `select`)."""
    error, batch = None, []
    try:
        for d in read_decoded(path):
            batch += annotator.feed_pairs(d)
            if len(batch) >= BATCH:
                yield batch
                batch = []
    except PcapError as exc:
        error = exc
    yield batch + annotator.finish_pairs()
    if error is not None:
        raise error


def run(path: str | os.PathLike[str], opts: Options, out: Out,
        tally: Tally | None = None) -> Tally:
    """Print what was asked for and return what the packet view read, matched and showed (also
    kept in `tally` as it goes, for a caller that wants the counts when this raises). Raises
    PcapError (after printing what could be read), FilterError, FileError or TooWide."""
    tally = Tally() if tally is None else tally
    if opts.detail is not None:
        out(detail(path, opts.detail))
        return tally
    if opts.write_annotated:
        export_annotated(path, opts.write_annotated, opts.secrets, opts.dns_ports, out)
        return tally
    pred = compile_filter(opts.filter) if opts.filter else None
    if opts.ladder or opts.mermaid or opts.html:
        from protolab.analysis.inspect_ladder import draw

        return draw(path, opts, pred, out, tally)
    with fewer_collections():
        return _packets(path, opts, pred, out, tally)


#: the cyclic collector's first threshold while the rows stream (Python's default: a pass per 700
#: allocations). A row, its fact and its packet hold no reference cycle (tests/test_inspect.py
#: checks that a run leaves no cyclic garbage), so the passes freed nothing; but each went over
#: the annotator's tables (up to 50,000 TCP connections): 5% of a 1,000,000-packet run's CPU.
GC_THRESHOLD = 100_000


@contextmanager
def fewer_collections() -> Iterator[None]:
    """The collector's passes GC_THRESHOLD allocations apart, as they were after."""
    old = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


def _packets(path: str | os.PathLike[str], opts: Options, pred: Pred | None, out: Out,
             tally: Tally) -> Tally:
    """`run` for the packets' views: the table, --json, --flows."""
    annotator = Annotator(opts.dns_ports, max_flows=0 if opts.flows else MAX_TRACKED)
    if opts.flows:  # one row per conversation, after the last packet: none of the packets'
        flows = FlowTable()
        try:
            count_flows(path, annotator, flows, tally)
        finally:
            print_flows(flows, annotator, out, as_json=opts.json, width=opts.width,
                        wide=opts.wide)
        return tally
    lay = None if opts.json else layout(opts.width, opts.wide)
    if opts.flow is None and pred is None:  # (most runs: no choosing)
        print_every(path, lay, opts.limit, annotator, out, tally)
        return tally
    numbers = FlowNumbers()
    for row, chosen in select(path, opts, pred, annotator, numbers, tally):
        if not chosen:
            continue
        if lay is not None and tally.shown == 1:
            out(header(lay))
        out(row_json(row) if lay is None else format_row(row, lay))
    check_flow(opts, numbers.count)
    return tally


def count_flows(path: str | os.PathLike[str], annotator: Annotator, flows: FlowTable,
                tally: Tally) -> None:
    """`--flows`: every row counted into its conversation's summary (`FlowTable.take`), none
    printed (`select` would choose none: --flow, --filter and --limit choose rows to print)."""
    take = flows.take
    for batch in batches(path, annotator):
        tally.read += len(batch)
        for row, _ in batch:
            take(row)


def print_every(path: str | os.PathLike[str], lay: Layout | None, limit: int | None,
                annotator: Annotator, out: Out, tally: Tally) -> None:
    """`run` when every row is chosen (no --flows, --flow or --filter): the table (`lay`) or
    the JSON lines (None) of the first `limit` rows, each formatted by one function made
    for the layout; every row counted in `tally`, batch by batch. The table
    needs no flow numbers (only --json prints them, and --flow chooses by them)."""
    text_of = row_formatter(lay) if lay is not None else _numbered_json(FlowNumbers())
    many = _many(out)
    for batch in batches(path, annotator):
        tally.read += len(batch)
        tally.matched += len(batch)
        room = len(batch) if limit is None else min(len(batch), limit - tally.shown)
        if room <= 0:
            continue
        if lay is not None and tally.shown == 0:
            out(header(lay))
        many([text_of(row) for row, _ in (batch[:room] if room < len(batch) else batch)])
        tally.shown += room


def _many(out: Out) -> Callable[[list[str]], None]:
    """`out` for a list of lines: its own `many` where it has one (cli.Lines: one call per
    batch of rows, not one per row), else `out` of each."""
    many = getattr(out, "many", None)
    if many is not None:
        return many

    def each(lines: list[str]) -> None:
        for line in lines:
            out(line)

    return each


def _numbered_json(numbers: FlowNumbers) -> Callable[[Row], str]:
    """`row_json` of a row numbered by conversation, as `select` numbers it."""
    number_of = numbers.number_of
    return lambda row: row_json_numbered(row, number_of(row))


def select(path: str | os.PathLike[str], opts: Options, pred: Pred | None,
           annotator: Annotator, numbers: FlowNumbers,
           tally: Tally) -> Iterator[tuple[Row, bool]]:
    """Every annotated row, numbered by conversation (`flow_number`), and whether --flow,
    --filter and --limit choose it; counted in `tally` as they go (a chosen row is `shown`).
    (--flows chooses no row: `count_flows`.)"""
    number_of, limit = numbers.number_of, opts.limit
    every = opts.flow is None and pred is None
    for batch in batches(path, annotator):
        for row, _ in batch:
            tally.read += 1
            number = number_of(row)
            row.fields["flow_number"] = number
            chosen = every or (opts.flow in (None, number) and (pred is None or pred(row)))
            if chosen:
                tally.matched += 1
                chosen = limit is None or tally.shown < limit
                tally.shown += chosen
            yield row, chosen


def check_flow(opts: Options, count: int) -> None:
    """--flow N of a capture with fewer conversations is an error, not an empty answer."""
    if not opts.flows and opts.flow is not None and opts.flow > count:
        raise FilterError(f"there is no flow {opts.flow}: this capture has {count} (see --flows)")


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
