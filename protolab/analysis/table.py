"""The annotated table: one row per packet with "where state lives", fitted to the terminal.

From BESIDE_FROM (160) columns the note is a last column beside the row, below that it goes on
lines of its own under the row; not on a terminal the width is always PIPED_WIDTH (120); `--wide`
prints one line per packet, nothing wrapped. `row_json` is the stable JSON form of a row.

No `from __future__ import annotations` here: NamedTuple would compile each field's annotation
kept as a string to check it (typing.ForwardRef), at every start-up of `inspect`.
"""

import json
import shutil
import sys
from collections.abc import Callable, Iterable
from enum import Enum
from functools import cache, lru_cache, partial
from typing import TYPE_CHECKING, NamedTuple

from protolab.analysis.fact_kinds import Action, Holder, Kind

if TYPE_CHECKING:
    from protolab.analysis.facts import Row

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


class Layout(NamedTuple):
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


def wrap(text: str, width: int | None) -> list[str]:
    """Greedy wrap at spaces (textwrap.wrap, without its cost: this runs for every row)."""
    if width is None or len(text) <= width:  # (most texts: one line)
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


def format_row(row: "Row", lay: Layout | None = None) -> str:
    """One row at fixed widths, long cells wrapped onto continuation lines (no look-ahead)."""
    return row_formatter(lay or layout())(row)


#: sentences wrapped, remembered per layout (a capture says the same few again and again)
STATES_KEPT = 4096


@cache
def row_formatter(lay: Layout) -> Callable[["Row"], str]:
    """`format_row` for one layout (`inspect` formats every row through one), what the layout
    decides worked out once: the line's %-format, and a memo of the sentences too wide for
    their column, wrapped (the same sentence comes again and again: a handshake's, an ACK's;
    measured: 3 rows in 4 of the benchmark)."""
    line = _line_format(lay.widths)
    if lay.state is None:  # --wide: nothing wrapped
        return partial(_wide_row, line)
    if lay.beside:
        return partial(_beside_row, lay, line, lru_cache(STATES_KEPT)(partial(wrap,
                                                                           width=lay.state)))
    return _under_formatter(lay)


def _under_formatter(lay: Layout) -> Callable[["Row"], str]:
    """Rows with their sentence on lines of its own under them (narrower than BESIDE_FROM, and
    not on a terminal): the row's cells, each on one line as a rule, then the sentence. The
    time is written as text, the last one's kept (`_time_text`)."""
    # (facts, imported here: the compiled path reads the layout from this module, not facts)
    from protolab.analysis.facts import ACTION_PREFIX, render

    route_width, summary_width, width = lay.widths[2], lay.widths[4], lay.state
    assert width is not None
    below = lru_cache(STATES_KEPT)(partial(_state_below, width=width))
    cells, continued = _cells_format(lay.widths), lru_cache(STATES_KEPT)(
        partial(_continued_below, lay.widths))

    low, high, time_text = 1.0, 0.0, ""  # the last time's text, and the times it serves

    def format_under(row: "Row") -> str:
        nonlocal low, high, time_text
        if not low < row.time < high:
            low, high, time_text = _time_text(row.time)
        route, summary = _cells(row)
        state = ACTION_PREFIX[row.action] + render(row.fact)  # (Row.where, without its call)
        if len(route) > route_width or len(summary) > summary_width:
            first_route, first_summary, more = continued(route, summary)
            text = (cells % (row.number, time_text, first_route, row.proto,
                             first_summary)).rstrip() + more
        else:  # (most rows: every cell fits on one line)
            text = (cells % (row.number, time_text, route, row.proto, summary)).rstrip()
        if len(state) > width:
            return text + below(state)
        return f"{text}{_NEXT_STATE_LINE}{state}" if state else text

    return format_under


#: seconds a time is kept clear of the boundaries of the interval of times whose text is the
#: same (`_time_text`), half a millisecond away: the interval's ends are computed with errors
#: far below it for any time under REUSED_BELOW seconds (31 years: a double's error there is
#: ~1e-7 s)
MARGIN = 1e-6
REUSED_BELOW = 1e9


def _time_text(time: float) -> tuple[float, float, str]:
    """A row's time as the table writes it (f"{time:.3f}"), and the times between the two
    bounds (exclusive) that are sure to be written the same: rows come in time order, many in
    the same millisecond, and formatting a float was a fifth of the cost of the row's line."""
    text = f"{time:.3f}"
    shown = float(text)
    # none around 0 ("-0.000" is a time below it), nor for NaN: an empty interval
    half = 0.0005 - MARGIN if 0 < abs(shown) < REUSED_BELOW else 0.0
    return shown - half, shown + half, text


def _state_below(state: str, width: int) -> str:
    """A sentence's lines under its row, each after a line break and the indent."""
    return _NEXT_STATE_LINE + _NEXT_STATE_LINE.join(wrap(state, width))


def _cells(row: "Row") -> tuple[str, str]:
    """The row's source → destination and its summary (after where it was seen, if said)."""
    point = row.fields.get("interface")  # a capture at several points: where it was seen
    return f"{row.src} → {row.dst}", f"@{point} {row.summary}" if point else row.summary


def _wide_row(line: str, row: "Row") -> str:
    """--wide: one line per packet, the sentence last, nothing wrapped."""
    route, summary = _cells(row)
    return f"{line % (row.number, row.time, route, row.proto, summary)}  {row.where()}".rstrip()


def _beside_row(lay: Layout, line: str, wrapped: Callable[[str], list[str]], row: "Row") -> str:
    """From BESIDE_FROM columns: the sentence is the last column, wrapped to its width."""
    route, summary = _cells(row)
    state = wrapped(row.where())
    if len(route) > lay.widths[2] or len(summary) > lay.widths[4] or len(state) > 1:
        lines = _cell_lines(row, lay.widths, route, summary, len(state))
        return "\n".join([f"{cells}  {state[i] if i < len(state) else ''}".rstrip()
                          for i, cells in enumerate(lines)])
    return f"{line % (row.number, row.time, route, row.proto, summary)}  " \
           f"{state[0] if state else ''}".rstrip()


_INDENT = " " * STATE_INDENT
_NEXT_STATE_LINE = "\n" + _INDENT  #: between the lines of a state under its row


@cache
def _line_format(widths: tuple[int, ...]) -> str:
    """A row's cells on one line, each padded to its width (never cut), as one %-format."""
    n, time, route, proto, summary = widths
    return f"%-{n}s  %-{time}.3f  %-{route}s  %-{proto}s  %-{summary}s"


@cache
def _cells_format(widths: tuple[int, ...]) -> str:
    """`_line_format` for cells that are text already (a wrapped row's lines)."""
    return "  ".join(f"%-{n}s" for n in widths)


def _cell_lines(row: "Row", widths: tuple[int, ...], route: str, summary: str,
                height: int = 1) -> list[str]:
    """A row whose route or summary is wider than its column (or whose sentence beside it takes
    `height` lines): each column's lines side by side, each cell padded to its width."""
    first_route, first_summary, more = _continued(widths, route, summary, height)
    first = _cells_format(widths) % (row.number, f"{row.time:.3f}", first_route, row.proto,
                                     first_summary)
    return [first, *more]


def _continued(widths: tuple[int, ...], route: str, summary: str,
               height: int = 1) -> tuple[str, str, list[str]]:
    """`_cell_lines` but the row's own: its route's and summary's first lines, and the lines
    after the first (padded)."""
    cells = _cells_format(widths)
    routes, summaries = wrap(route, widths[2]) or [""], wrap(summary, widths[4]) or [""]
    more = [cells % ("", "", routes[i] if i < len(routes) else "", "",
                     summaries[i] if i < len(summaries) else "")
            for i in range(1, max(len(routes), len(summaries), height))]
    return routes[0], summaries[0], more


def _continued_below(widths: tuple[int, ...], route: str, summary: str) -> tuple[str, str, str]:
    """`_continued` for a row with its sentence under it: the lines after the first as text,
    each after a line break (a row's cells then need only its first line made: the same long
    route or summary comes again and again, a QUIC Initial's, an IPv6 address pair's)."""
    first_route, first_summary, more = _continued(widths, route, summary)
    return first_route, first_summary, "".join(["\n" + line.rstrip() for line in more])


#: json.dumps(..., ensure_ascii=False), without making an encoder per row (nor checking for
#: cycles: row_json builds a fresh tree of plain values)
_JSON = json.JSONEncoder(ensure_ascii=False, check_circular=False)  # a fresh dict of plain values


def row_json(row: "Row") -> str:
    """The stable JSON form of a row (documented in the README): the same text as
    json.dumps(..., ensure_ascii=False) of the dict {"number": ..., "fields": {...}}, written
    key by key (its shape is fixed; the encoder's set-up per call cost more than the row)."""
    fields = row.fields.copy()
    flow = fields.pop("flow_number", None)
    return row_json_numbered(row, flow, fields)


def row_json_numbered(row: "Row", flow: int | None, fields: dict | None = None) -> str:
    """`row_json` of a row numbered `flow` whose `fields` (default: its own) hold no
    "flow_number": what `inspect` prints, without a copy of the fields per row."""
    fact = row.fact
    refs = ", ".join(map(repr, fact.refs)) if fact.refs else ""  # (most facts: none)
    return (f'{{"number": {row.number!r}, "time": {round(row.time, 6)!r}, '
            f'"src": {_string(row.src)}, "dst": {_string(row.dst)}, '
            f'"proto": {_string(row.proto)}, "summary": {_string(row.summary)}, '
            f'"action": {_JSON_TEXT[row.action]}, "holders": {_texts(row.holders)}, '
            f'"state": {_string(row.state)}, "flow": {"null" if flow is None else repr(flow)}, '
            f'"fact": {_JSON_TEXT[fact.kind]}, "refs": [{refs}], '
            f'"also": {_texts(fact.also)}, '
            f'"fields": {_fields_json(row.fields if fields is None else fields)}}}')


_string = json.encoder.encode_basestring  #: a str as JSON text, as ensure_ascii=False writes it

#: the C encoder `_JSON.encode` makes again on every call (json.encoder's iterencode, with
#: _JSON's settings: no markers as check_circular=False, ensure_ascii=False's string encoder),
#: made once; None where json has no C part
_ENCODER = json.encoder.c_make_encoder and json.encoder.c_make_encoder(
    None, _JSON.default, _string, None, ": ", ", ", False, False, True)


def _fields_json(fields: dict) -> str:
    """`_JSON.encode(fields)`, by the encoder made once."""
    return "".join(_ENCODER(fields, 0)) if _ENCODER is not None else _JSON.encode(fields)


@cache
def _texts(members: tuple[Enum, ...]) -> str:
    """A JSON list of the members' texts (the few tuples there are, made once each)."""
    return f"[{', '.join(_JSON_TEXT[m] for m in members)}]"


#: each Action's, Holder's and Kind's text, and as JSON (Enum's `.value` is a Python call)
_TEXT: dict[Enum, str] = {member: member.value for enum in (Action, Holder, Kind)
                          for member in enum}
_JSON_TEXT: dict[Enum, str] = {member: _string(text) for member, text in _TEXT.items()}


def format_rows(rows: Iterable["Row"], lay: Layout | None = None) -> str:
    """The annotation table as the demos print it (same layout as `inspect`): fitted to the
    terminal, or PIPED_WIDTH when not printing to one (see `layout`)."""
    lay = lay or layout()
    return "\n".join([header(lay), *(format_row(r, lay) for r in rows)])
